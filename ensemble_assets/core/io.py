"""Atomic artifact writes and content hashes (docs/architecture.md#atomic-writes).

Every artifact is written to a temporary path in its destination directory and moved into
place with ``os.replace``, so a reader never sees a half-written file or model directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


def _owner_tag() -> str:
    """``<host>-<pid>`` of this process, as it appears in the names of its temporary paths."""
    host = "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove what writers of ``path`` that died (SIGKILL, out of memory, power loss) left beside it.

    Temporary paths are named ``.<name>.<host>-<pid>.<random>.tmp`` (and ``.old`` for the previous
    version of a directory being replaced); only those of this host whose process no longer runs
    are touched, so a live writer in another process is never disturbed. If ``path`` itself is
    missing and a dead writer's ``.old`` is there (killed between its two renames), that complete
    previous version is put back. Returns the paths removed or restored."""
    path = Path(path)
    prefix = f".{path.name}."
    host = _owner_tag().rsplit("-", 1)[0]
    done: list[Path] = []
    try:
        entries = sorted(path.parent.iterdir())
    except FileNotFoundError:
        return done
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith((".tmp", ".old")):
            continue
        owner, _, rand = name[len(prefix):-4].partition(".")
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or not rand or "." in rand or _process_alive(int(pid)):
            continue
        if name.endswith(".old") and not path.exists():
            os.replace(entry, path)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(entry)
    return done


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success move it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``.

    The old directory (if any) is renamed aside first and removed only after the new one is in
    place, so at every instant ``path`` is either the complete old or the complete new version
    (or, for the instant between the two renames, absent: never partial). Leftovers of writers
    that were killed are removed first (``remove_stale_temporaries``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = path.parent / f".{path.name}.{_owner_tag()}.{uuid.uuid4().hex[:8]}.old"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(path: str | Path, table: pa.Table) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def safe_component(name: str) -> str:
    """A partition key or gene id as one path component that cannot leave its directory."""
    if not name or name in (".", "..") or any(ch not in _SAFE for ch in name) or name.startswith("."):
        raise ValueError(f"{name!r} is not a safe path component (letters, digits, '-', '_', '.')")
    return name
