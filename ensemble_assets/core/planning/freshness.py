"""Whether the training plan is up to date with its inputs, without recomputing it.

The plan is a deterministic function of the dataset's files and the platform settings (docs/architecture.md#partition-keys;
memory sizing aside), so a fingerprint of those — file names, sizes, modification times and the
settings — tells a scheduled retraining whether inventory, screening and plan need recomputing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from ensemble_assets.core.data.declaration import declaration_path


def plan_inputs_fingerprint(dataset: str | Path, settings: Mapping[str, Any]) -> str:
    """A cheap fingerprint of what the plan is computed from: every Parquet file of the dataset and
    its declaration (name, size, modification time) and the platform settings. Equal fingerprints mean that
    recomputing inventory, screening and plan would give the same plan (on a machine whose memory
    still fits the planned instances)."""

    root = Path(dataset).expanduser()
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    if not root.exists():
        h.update(b"\0missing")
        return h.hexdigest()[:16]
    base = root / "master" if (root / "master").is_dir() else root
    files = [base] if base.is_file() else sorted(p for p in base.glob("*.parquet") if not p.name.startswith("."))
    declaration = declaration_path(root)  # its row selection decides the gene-context default
    for f in files + ([declaration] if declaration.is_file() else []):
        st = f.stat()
        h.update(f"\0{f.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
