"""Faulty datasets, each derived from the tiny demo dataset by one small edit.

Every builder writes a complete dataset directory (``<out>/master/*.parquet``) and returns it,
so each bad-input test reads its own data and nothing else.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

Edit = Callable[[int, pa.Table], "pa.Table | None"]

# gene ids that must stay data: quotes, commas, spaces, slashes, path traversal, unicode, SQL
HOSTILE_GENE_IDS = ["it's", 'say "hi"', "a,b;c", "two words", "../../escape", "dir/sub\\leaf", "Δ-gène_ß",
                    "基因-1", "x'); DROP TABLE genes; --", "$files", "  padded  ", "NULL", "%s{0}", "*",
                    ".hidden", "con"]
# column names that must stay identifiers
HOSTILE_COLUMNS = ["x'; DROP TABLE t; --", 'a"b', "Δscore", "select", "col with space", "$files", "a.b"]


def master_files(dataset: Path) -> list[Path]:
    return sorted((Path(dataset) / "master").glob("*.parquet"))


def derive(src: Path, out: Path, edit: Edit | None = None) -> Path:
    """Copy the Parquet files of ``src`` into ``out/master``, passing file ``i``'s table through
    ``edit(i, table)`` (returning None drops the file)."""
    master = Path(out) / "master"
    master.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(master_files(src)):
        table = pq.read_table(f)
        table = edit(i, table) if edit else table
        if table is not None:
            pq.write_table(table, master / f.name)
    return Path(out)


def only(index: int, fn: Callable[[pa.Table], pa.Table]) -> Edit:
    """An edit applied to file ``index`` alone."""
    return lambda i, t: fn(t) if i == index else t


def set_column(t: pa.Table, name: str, values) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if name in t.schema.names:
        return t.set_column(t.schema.get_field_index(name), name, arr)
    return t.append_column(name, arr)


def with_values(t: pa.Table, name: str, rows: slice | np.ndarray, value: float) -> pa.Table:
    """Column ``name`` with ``value`` in ``rows`` (a float column)."""
    v = np.asarray(pc.cast(t.column(name), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64).copy()
    v[rows] = value
    return set_column(t, name, pa.array(v))


def as_text(t: pa.Table, name: str) -> pa.Table:
    return set_column(t, name, pc.cast(t.column(name), pa.string()))


def relabel(t: pa.Table, rows: slice | np.ndarray, value) -> pa.Table:
    labels = np.asarray(t.column("splice_type").to_pylist(), dtype=object)
    labels[rows] = value
    return set_column(t, "splice_type", pa.array(labels.tolist(), pa.string()))


def rename_genes(t: pa.Table, mapping: dict[str, str]) -> pa.Table:
    ids = [mapping.get(g, g) for g in t.column("gene_id").to_pylist()]
    return set_column(t, "gene_id", pa.array(ids, pa.string()))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupt_column_chunk(path: Path, column: str, nbytes: int = 40) -> None:
    """Overwrite the first bytes of ``column``'s chunk (its page header): the footer stays valid,
    so the file opens, but the column cannot be decoded."""
    md = pq.read_metadata(path)
    rg = md.row_group(0)
    j = [rg.column(k).path_in_schema for k in range(rg.num_columns)].index(column)
    chunk = rg.column(j)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    for k in range(start, start + nbytes):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def tree_digest(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path → SHA-256 of every file under ``root`` (``exclude``: path prefixes)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(exclude):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
