"""Whether the training plan is up to date with its inputs, without recomputing it.

The plan is a deterministic function of the dataset's content and the platform settings
(docs/architecture.md#partition-keys; memory sizing aside), so a fingerprint of those tells a
scheduled retraining whether inventory, screening and plan need recomputing. The dataset is
identified by its content, not by where it lies: a ``touch`` of its files, a move or copy to
another directory or machine keep the fingerprint (and the plan keeps its partition keys).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from ensemble_assets.core.data.contract import parquet_files
from ensemble_assets.core.data.declaration import declaration_path
from ensemble_assets.core.io import sha256_file


def dataset_content_digest(dataset: str | Path) -> str:
    """SHA-256 of the dataset's Parquet files: each file's name within the dataset and the SHA-256
    of its bytes (streamed in 1 MiB blocks), in name order. Neither the dataset's path nor any
    modification time enters it; a renamed, added, removed or rewritten file changes it."""
    root = Path(dataset).expanduser()
    h = hashlib.sha256(b"parquet-content-v1")
    if not root.exists():
        h.update(b"\0missing")
        return h.hexdigest()
    for f in parquet_files(root):
        name = "" if f == root else f.name   # a one-file dataset: its content alone
        h.update(f"\0{name}\0{sha256_file(f)}".encode())
    return h.hexdigest()


def plan_inputs_fingerprint(dataset: str | Path, settings: Mapping[str, Any]) -> str:
    """A fingerprint of what the plan is computed from: the content of every Parquet file of the
    dataset (``dataset_content_digest``) and the settings — which must not hold the dataset's
    path (``PlatformConfig.settings_dict``). Equal fingerprints mean that recomputing inventory,
    screening and plan would give the same plan (on a machine whose memory still fits the planned
    instances). Cost: one streamed read of the dataset's files (about 1 s per 100 MB)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(dataset_content_digest(dataset).encode())
    declaration = declaration_path(Path(dataset).expanduser())  # its row selection decides the gene-context default
    if declaration.is_file():
        h.update(b"\0dataset.json\0" + sha256_file(declaration).encode())
    return h.hexdigest()[:16]
