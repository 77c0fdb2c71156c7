"""The input dataset: Parquet discovery, the union schema and the one streaming row path.

Rows reach XGBoost through exactly one path: the subset's rows are selected from Parquet
(DuckDB where it is installed, otherwise a pyarrow dataset scanner, e.g. on a GPU box) as
Arrow record batches, imputed and converted batch by batch to float32, and fed to an
``xgboost.DataIter``. No pandas or float64 copy of a whole subset is ever made.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schema import (BASE_SCORE_COLUMNS, CANDIDATE_MIN_SCORE, GENE_COLUMN, GENE_CONTEXT_FEATURES, GENE_CONTEXT_SOURCES,
                     GENE_POSITION_FEATURES, GENE_POSITION_SOURCES, LABEL_CODES, LABEL_COLUMN, NEITHER_ALIASES,
                     REQUIRED_COLUMNS, is_contract_numeric)


class DatasetError(ValueError):
    """Bad input. The message names the file, column, gene or count at fault."""


@dataclass(frozen=True)
class ParquetDataset:
    root: Path
    files: tuple[Path, ...]
    schema: pa.Schema                      # union of all files' columns (first-seen order)
    rows_per_file: tuple[int, ...]
    columns_per_file: tuple[frozenset[str], ...] = field(repr=False)

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


def open_dataset(path: str | Path) -> ParquetDataset:
    """Resolve ``path`` (a directory of Parquet files, the MetaSpliceAI ``<dataset>/master``
    layout, or one Parquet file) and validate every file's schema against the contract."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"dataset path {root} does not exist")
    if root.is_file():
        files = [root]
    else:
        base = root / "master" if (root / "master").is_dir() else root
        files = sorted(p for p in base.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise DatasetError(f"no Parquet files (*.parquet) in {base}")
    types: dict[str, pa.DataType] = {}
    rows, cols = [], []
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
            schema = pq.read_schema(f)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DatasetError(f"{f}: not a readable Parquet file ({exc})") from exc
        for col in REQUIRED_COLUMNS:
            if col not in schema.names:
                raise DatasetError(f"{f}: missing required column '{col}'")
        dup = sorted({n for n in schema.names if schema.names.count(n) > 1})
        if dup:
            raise DatasetError(f"{f}: column name(s) {dup} occur more than once")
        _check_contract_types(f, schema)
        for name, typ in zip(schema.names, schema.types):
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
        cols.append(frozenset(schema.names))
    union = pa.schema([(n, t) for n, t in types.items()])
    return ParquetDataset(root, tuple(files), union, tuple(rows), tuple(cols))


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


@dataclass
class RowBatch:
    """One batch of a subset: float32 features (imputed) and the row identities beside them."""

    X: np.ndarray          # (n, F) float32, C-order, no NaN
    label: np.ndarray      # (n,) int8 codes 0/1/2
    gene_id: np.ndarray    # (n,) object (str)
    position: np.ndarray   # (n,) int64 (-1 where the dataset has no position column)
    base: np.ndarray       # (n, 3) float32 base-model scores neither/donor/acceptor (NaN if absent)


def numeric_column(table: pa.Table | pa.RecordBatch, name: str, source: str) -> np.ndarray:
    """One numeric column as float64 (null → NaN); a non-numeric column is an error naming it."""
    col = table.column(name)
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type):
        col = pc.cast(col, pa.float64())
    if not (pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
        raise DatasetError(f"{source}: column '{name}' is {col.type}, expected a number")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def gene_position_features(position: np.ndarray, gene_length: np.ndarray) -> dict[str, np.ndarray]:
    """``schema.GENE_POSITION_FEATURES`` of rows: nucleotides from the gene's 5' end and to its
    3' end, and the fraction of the gene before the position (transcript orientation; NaN where
    ``position`` or a positive ``gene_length`` is missing)."""
    pos = np.asarray(position, dtype=np.float64)
    length = np.asarray(gene_length, dtype=np.float64)
    length = np.where(length > 0, length, np.nan)
    return {"gene_offset_5p": pos, "gene_offset_3p": length - 1 - pos, "gene_relative_position": pos / length}


_EMPTY = np.empty(0, dtype=np.float64)


@dataclass(frozen=True)
class CandidateIndex:
    """Per gene, the sorted positions whose donor (acceptor) score reaches ``CANDIDATE_MIN_SCORE``:
    what the gene-context features measure distances to. Built from complete genes only (every
    candidate position of a gene must be among the rows it is built from)."""

    donor: Mapping[str, np.ndarray]
    acceptor: Mapping[str, np.ndarray]

    @classmethod
    def from_table(cls, table: pa.Table | pa.RecordBatch, source: str = "input") -> "CandidateIndex":
        gene = np.asarray(table.column(GENE_COLUMN).to_numpy(zero_copy_only=False), dtype=object)
        pos = numeric_column(table, "position", source)
        tracks = {}
        for track in ("donor", "acceptor"):
            keep = np.nan_to_num(numeric_column(table, f"{track}_score", source), nan=-1.0) >= CANDIDATE_MIN_SCORE
            keep &= np.isfinite(pos)
            g, p = gene[keep], pos[keep]
            order = np.argsort(g, kind="stable")
            genes, starts = np.unique(g[order], return_index=True)
            tracks[track] = {str(k): np.sort(v) for k, v in zip(genes, np.split(p[order], starts[1:]))}
        return cls(tracks["donor"], tracks["acceptor"])


def gene_context_features(index: CandidateIndex, gene_id: np.ndarray, position: np.ndarray,
                          gene_length: np.ndarray) -> dict[str, np.ndarray]:
    """``schema.GENE_CONTEXT_FEATURES`` of rows: nucleotides to the nearest other candidate donor /
    acceptor of the row's gene upstream and downstream; the gene's length where there is none
    (NaN where ``position`` or a positive ``gene_length`` is missing)."""
    pos = np.asarray(position, dtype=np.float64)
    none = np.asarray(gene_length, dtype=np.float64)
    none = np.where(none > 0, none, np.nan)
    out = {f: np.full(len(pos), np.nan) for f in GENE_CONTEXT_FEATURES}
    genes, inverse = np.unique(np.asarray(gene_id, dtype=object), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    for g, rows in zip(genes, np.split(order, np.cumsum(np.bincount(inverse, minlength=len(genes)))[:-1])):
        p, missing, known = pos[rows], none[rows], np.isfinite(pos[rows])
        for track in ("donor", "acceptor"):
            c = getattr(index, track).get(str(g), _EMPTY)
            i = np.searchsorted(c, p, "left")    # c[i - 1] < p
            j = np.searchsorted(c, p, "right")   # c[j] > p
            up = p - c[np.maximum(i - 1, 0)] if len(c) else missing
            down = c[np.minimum(j, len(c) - 1)] - p if len(c) else missing
            out[f"nearest_{track}_upstream"][rows] = np.where(known, np.where(i > 0, up, missing), np.nan)
            out[f"nearest_{track}_downstream"][rows] = np.where(known, np.where(j < len(c), down, missing), np.nan)
    return out


_COMPUTED = ((GENE_POSITION_FEATURES, GENE_POSITION_SOURCES), (GENE_CONTEXT_FEATURES, GENE_CONTEXT_SOURCES))


def source_columns(features: Sequence[str]) -> list[str]:
    """The dataset columns that ``features`` are read or computed from."""
    out = [f for f in features if f not in GENE_POSITION_FEATURES and f not in GENE_CONTEXT_FEATURES]
    for computed, sources in _COMPUTED:
        if any(f in computed for f in features):
            out += [c for c in sources if c not in out]
    return out


def to_feature_matrix(table: pa.Table | pa.RecordBatch, features: Sequence[str],
                      fill: Mapping[str, float], source: str = "input",
                      candidates: CandidateIndex | None = None) -> np.ndarray:
    """Arrow columns → float32 matrix, by name. Null and NaN take the column's fill value;
    a column absent from ``table`` is all fill (k-mers: 0). Infinite values are an error.
    ``schema.GENE_POSITION_FEATURES`` are computed from ``position`` and ``gene_length``,
    ``schema.GENE_CONTEXT_FEATURES`` from ``candidates`` (default: the candidates among the
    table's own rows, so the table must then hold its genes whole)."""
    n = table.num_rows
    X = np.empty((n, len(features)), dtype=np.float32)
    names = set(table.schema.names)
    computed: dict[str, np.ndarray] = {}
    wanted = {f for f in features if f not in names}
    if wanted & set(GENE_POSITION_FEATURES) and set(GENE_POSITION_SOURCES) <= names:
        computed.update(gene_position_features(*(numeric_column(table, c, source) for c in GENE_POSITION_SOURCES)))
    if wanted & set(GENE_CONTEXT_FEATURES) and set(GENE_CONTEXT_SOURCES) <= names:
        computed.update(gene_context_features(
            candidates if candidates is not None else CandidateIndex.from_table(table, source),
            np.asarray(table.column(GENE_COLUMN).to_numpy(zero_copy_only=False), dtype=object),
            numeric_column(table, "position", source), numeric_column(table, "gene_length", source)))
    for j, name in enumerate(features):
        if name in names:
            v = numeric_column(table, name, source)
        elif name in computed:
            v = computed[name]
        else:
            X[:, j] = fill[name]
            continue
        bad = ~np.isfinite(v)
        if bad.any():
            if np.isinf(v).any():
                raise DatasetError(
                    f"{source}: column '{name}' has {int(np.isinf(v).sum())} infinite value(s)"
                )
            v = np.where(bad, fill[name], v)
        X[:, j] = v
    return X


def _read_candidates(ds: ParquetDataset, gene_table: pa.Table | None, source: str) -> CandidateIndex:
    """The candidate index of the subset's genes, from their candidate rows only (one small scan)."""
    import pyarrow.dataset as pads

    cols = ["gene_id", "position", "donor_score", "acceptor_score"]
    flt = (pc.field("donor_score") >= CANDIDATE_MIN_SCORE) | (pc.field("acceptor_score") >= CANDIDATE_MIN_SCORE)
    if gene_table is not None:
        flt &= pc.field(GENE_COLUMN).isin(gene_table.column(0))
    with read_errors(ds, cols):
        t = pads.dataset(ds.file_strings, schema=ds.schema, format="parquet").to_table(columns=cols, filter=flt)
    return CandidateIndex.from_table(t, source)


def _batch_to_rows(batch: pa.RecordBatch, features: Sequence[str], fill: Mapping[str, float],
                   source: str, candidates: CandidateIndex | None = None) -> RowBatch:
    names = batch.schema.names
    label = label_codes(batch.column(LABEL_COLUMN))
    if (label < 0).any():
        bad = pc.unique(batch.column(LABEL_COLUMN).filter(pa.array(label < 0))).to_pylist()
        raise DatasetError(f"{source}: column '{LABEL_COLUMN}' has unknown label value(s) {bad[:10]}")
    n = batch.num_rows
    base = np.full((n, 3), np.nan, dtype=np.float32)
    for j, col in enumerate(("neither_score", "donor_score", "acceptor_score")):
        if col in names:
            base[:, j] = np.asarray(batch.column(col).to_numpy(zero_copy_only=False), dtype=np.float32)
    pos = (np.asarray(pc.cast(batch.column("position"), pa.int64()).fill_null(-1).to_numpy())
           if "position" in names else np.full(n, -1, dtype=np.int64))
    return RowBatch(
        X=to_feature_matrix(batch, features, fill, source, candidates),
        label=label,
        gene_id=np.asarray(batch.column(GENE_COLUMN).to_numpy(zero_copy_only=False), dtype=object),
        position=pos,
        base=base,
    )


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream into batches of exactly ``size`` rows (the last one shorter): the same
    rows in the same order always give the same batches, which XGBoost's multi-pass iterator needs."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for b in batches:
        if not b.num_rows:
            continue
        pending.append(b)
        held += b.num_rows
        while held >= size:
            t = pa.Table.from_batches(pending)
            yield t.slice(0, size).combine_chunks().to_batches()[0]
            rest = t.slice(size).combine_chunks()
            pending = rest.to_batches() if rest.num_rows else []
            held -= size
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _quote(name: str) -> str:
    """A SQL identifier for any column name (quotes doubled): column names come from the input
    files and are never trusted. Values never go into SQL text at all: they are parameters or
    registered Arrow tables."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_connect(threads: int = 2, memory_limit: str = "2GB", **config: Any):
    """An in-memory DuckDB connection that spills into a directory of its own and counts NaN right.

    DuckDB's default spill directory is ``.tmp`` in the working directory, shared by every
    process started there (two instance runs in parallel would spill into, and on close remove,
    the same directory). Here each connection gets a fresh path under the system temp directory,
    which DuckDB creates only if it spills and removes on close."""
    import duckdb

    spill = Path(tempfile.gettempdir()) / f"ensemble_assets-duckdb-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    con = duckdb.connect(config={"threads": threads, "memory_limit": memory_limit,
                                 "temp_directory": str(spill), **config})
    con.execute("SET enable_progress_bar = false")  # no progress bars in run logs
    # DuckDB 2.0.1 folds isnan(x) to false when a Parquet column's min/max statistics (which
    # leave NaN out) exist, so NaN counts came out 0; without this optimizer they are right.
    con.execute("SET disabled_optimizers = 'statistics_propagation'")
    return con


def _is_read_error(exc: BaseException) -> bool:
    try:
        import duckdb

        if isinstance(exc, duckdb.Error):
            return True
    except ImportError:
        pass
    return isinstance(exc, (pa.ArrowException, OSError))


def locate_read_error(ds: ParquetDataset, columns: Sequence[str] | None, exc: BaseException) -> DatasetError:
    """Turn a failed scan into a DatasetError naming the file and column that cannot be decoded.

    DuckDB's errors for a corrupt page do not say which file it was in; each file's columns are
    re-read with pyarrow (only on this error path) to find it."""
    for f, cols in zip(ds.files, ds.columns_per_file):
        try:
            pf = pq.ParquetFile(f)
        except Exception as err:  # noqa: BLE001 - any failure here is the answer
            return DatasetError(f"{f}: not a readable Parquet file ({err})")
        wanted = [c for c in (columns if columns is not None else ds.columns) if c in cols]
        for c in wanted:
            try:
                pf.read(columns=[c], use_threads=False)
            except Exception as err:  # noqa: BLE001
                return DatasetError(f"{f}: column '{c}' cannot be read; the file is corrupt ({err})")
    return DatasetError(f"dataset {ds.root}: reading {len(ds.files)} Parquet file(s) failed ({exc})")


@contextmanager
def read_errors(ds: ParquetDataset, columns: Sequence[str] | None = None) -> Iterator[None]:
    """Re-raise read failures of a scan over ``ds`` as a DatasetError naming the file and column."""
    try:
        yield
    except DatasetError:
        raise
    except Exception as exc:
        if not _is_read_error(exc):
            raise
        raise locate_read_error(ds, columns, exc) from exc


def iter_subset_batches(
    ds: ParquetDataset,
    genes: Sequence[str] | None,
    features: Sequence[str],
    fill: Mapping[str, float],
    batch_rows: int = 32_768,
    memory_limit: str = "1GB",
    engine: str = "auto",
) -> Iterator[RowBatch]:
    """Stream the rows of ``genes`` (all genes if None) as imputed float32 batches.

    Row order is the files' order and identical on every pass, which XGBoost's multi-pass
    iterator relies on: DuckDB runs single-threaded here, because its parallel streaming result
    does not keep the scan order (seen: labels misaligned with rows under CPU contention).
    """
    present = [c for c in source_columns(features) if c in set(ds.columns)]
    wanted = [GENE_COLUMN, LABEL_COLUMN]
    wanted += [c for c in ("position", *BASE_SCORE_COLUMNS) if c in ds.columns and c not in wanted]
    wanted += [c for c in present if c not in wanted]
    source = f"dataset {ds.root}"
    if engine == "auto":
        try:
            import duckdb  # noqa: F401
            engine = "duckdb"
        except ImportError:
            engine = "pyarrow"
    gene_table = pa.table({GENE_COLUMN: pa.array(sorted(set(genes)), pa.string())}) if genes is not None else None
    candidates = (_read_candidates(ds, gene_table, source)
                  if set(features) & set(GENE_CONTEXT_FEATURES) and set(GENE_CONTEXT_SOURCES) <= set(ds.columns)
                  else None)
    if engine == "duckdb":
        con = duckdb_connect(threads=1, memory_limit=memory_limit, preserve_insertion_order=True)
        try:
            sql = f"SELECT {', '.join(_quote(c) for c in wanted)} FROM read_parquet($files, union_by_name=true)"
            if gene_table is not None:
                con.register("subset_genes", gene_table)
                sql += f" WHERE {_quote(GENE_COLUMN)} IN (SELECT {_quote(GENE_COLUMN)} FROM subset_genes)"
            with read_errors(ds, wanted):
                reader = con.sql(sql, params={"files": ds.file_strings}).to_arrow_reader(batch_rows)
            batches = _rebatch(reader, batch_rows)
            while True:
                with read_errors(ds, wanted):  # a corrupt page surfaces while streaming
                    batch = next(batches, None)
                if batch is None:
                    break
                yield _batch_to_rows(batch, features, fill, source, candidates)
        finally:
            con.close()
    elif engine == "pyarrow":
        import pyarrow.dataset as pads

        dset = pads.dataset(ds.file_strings, schema=ds.schema, format="parquet")
        flt = pc.field(GENE_COLUMN).isin(gene_table.column(0)) if gene_table is not None else None
        # no readahead: one file's row group decoded at a time bounds the memory of a scan
        batches = _rebatch(dset.to_batches(columns=wanted, filter=flt, batch_size=batch_rows, use_threads=False,
                                           batch_readahead=1, fragment_readahead=1), batch_rows)
        while True:
            with read_errors(ds, wanted):
                batch = next(batches, None)
            if batch is None:
                break
            yield _batch_to_rows(batch, features, fill, source, candidates)
    else:
        raise ValueError(f"unknown engine {engine!r} (auto, duckdb, pyarrow)")
