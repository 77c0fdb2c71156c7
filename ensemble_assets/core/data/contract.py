"""The input dataset: Parquet discovery, the union schema and the one streaming row path.

Rows reach XGBoost through exactly one path: the subset's rows are selected from Parquet
(DuckDB where it is installed, otherwise a pyarrow dataset scanner, e.g. on a GPU box) as
Arrow record batches, imputed and converted batch by batch to float32, and fed to an
``xgboost.DataIter``. No pandas or float64 copy of a whole subset is ever made.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ensemble_assets.core.data.schema import (
    GENE_COLUMN,
    LABEL_CODES,
    NEITHER_ALIASES,
    REQUIRED_COLUMNS,
    is_contract_numeric,
)


class DatasetError(ValueError):
    """Bad input. The message names the file, column, gene or count at fault."""


@dataclass(frozen=True)
class ParquetDataset:
    root: Path
    files: tuple[Path, ...]
    schema: pa.Schema                      # union of all files' columns (first-seen order)
    rows_per_file: tuple[int, ...]
    columns_per_file: tuple[frozenset[str], ...] = field(repr=False)
    uniform_schema: bool = False           # every file has the same columns, in the same order, of the same types

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    @property
    def file_strings(self) -> list[str]:
        return [str(f) for f in self.files]

    def files_missing(self, column: str) -> list[Path]:
        return [f for f, cols in zip(self.files, self.columns_per_file) if column not in cols]


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _is_string(t: pa.DataType) -> bool:
    """string, large_string, string_view, or a dictionary of strings (pandas categoricals)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _check_contract_types(f: Path, schema: pa.Schema) -> None:
    """Types the data contract fixes: ids are strings, every numeric family is a number."""
    gt = schema.field(GENE_COLUMN).type
    if not (_is_string(gt) or pa.types.is_null(gt)):
        raise DatasetError(f"{f}: column '{GENE_COLUMN}' has type {gt}; gene ids must be strings")
    for name, typ in zip(schema.names, schema.types):
        if is_contract_numeric(name) and not (_is_numeric(typ) or pa.types.is_null(typ)):
            raise DatasetError(f"{f}: column '{name}' has type {typ}; the data contract requires a number")


def parquet_files(root: Path) -> list[Path]:
    """The dataset's Parquet files, sorted by name: ``root`` itself if it is a file, else the
    ``*.parquet`` files (not hidden ones) of ``root/master`` if that is a directory, else of ``root``."""
    if root.is_file():
        return [root]
    base = root / "master" if (root / "master").is_dir() else root
    return sorted(p for p in base.glob("*.parquet") if not p.name.startswith("."))


def open_dataset(path: str | Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> ParquetDataset:
    """Resolve ``path`` (a directory of Parquet files, the MetaSpliceAI ``<dataset>/master``
    layout, or one Parquet file; other files such as ``gene_manifest.csv`` are ignored) and
    validate every file's schema against the contract. ``required``: the columns every file must
    have (training needs the label; scoring a target only ``gene_id`` and ``position``)."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"dataset path {root} does not exist")
    files = parquet_files(root)
    if not files:
        raise DatasetError(f"no Parquet files (*.parquet) in {root / 'master' if (root / 'master').is_dir() else root}")
    types: dict[str, pa.DataType] = {}
    rows, cols = [], []
    first: pa.Schema | None = None
    uniform = True
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
            schema = pq.read_schema(f)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DatasetError(f"{f}: not a readable Parquet file ({exc})") from exc
        names = schema.names   # a new list on every access: read once (1,167 columns × files)
        for col in required:
            if col not in names:
                raise DatasetError(f"{f}: missing required column '{col}'")
        dup = sorted(n for n, k in Counter(names).items() if k > 1)
        if dup:
            raise DatasetError(f"{f}: column name(s) {dup} occur more than once")
        _check_contract_types(f, schema)
        for name, typ in zip(names, schema.types):
            if _is_string(typ):
                typ = pa.string()  # string / large_string / dictionary<string> are one type here
            prev = types.get(name)
            if prev is None or pa.types.is_null(prev):
                types[name] = typ
            elif prev != typ:
                if _is_numeric(prev) and _is_numeric(typ):
                    types[name] = pa.float64()
                elif not pa.types.is_null(typ):
                    raise DatasetError(
                        f"{f}: column '{name}' has type {typ}, other files have {prev}"
                    )
        rows.append(meta.num_rows)
        cols.append(frozenset(names))
        first = first or schema
        uniform = uniform and schema.equals(first, check_metadata=False)
    union = pa.schema([(n, t) for n, t in types.items()])
    return ParquetDataset(root, tuple(files), union, tuple(rows), tuple(cols), uniform)


def label_codes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Encode ``splice_type`` strings: null/""/"0"/"neither" → 0, donor → 1, acceptor → 2, else -1.

    Only these spellings are accepted: numeric encodings are never guessed."""
    s = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(values, pa.string())))
    keys = pa.array([*NEITHER_ALIASES, *LABEL_CODES], pa.string())
    codes = np.array([0] * len(NEITHER_ALIASES) + list(LABEL_CODES.values()), dtype=np.int8)
    idx = pc.index_in(s, value_set=keys)
    found = np.asarray(pc.is_valid(idx).to_numpy(zero_copy_only=False), dtype=bool)
    out = np.full(len(s), -1, dtype=np.int8)
    out[found] = codes[np.asarray(idx.drop_null().to_numpy(), dtype=np.int64)]
    out[np.asarray(pc.is_null(s).to_numpy(zero_copy_only=False), dtype=bool)] = 0
    return out

