"""The one streaming row path: a gene subset's rows selected from Parquet (DuckDB, or a pyarrow
scanner where DuckDB is not installed) as Arrow record batches, turned batch by batch into
imputed float32 rows. No pandas or float64 copy of a whole subset is ever made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset, label_codes
from ensemble_assets.core.data.features import CandidateIndex, source_columns, to_feature_matrix
from ensemble_assets.core.data.read_errors import read_errors
from ensemble_assets.core.data.schema import (
    BASE_SCORE_COLUMNS,
    CANDIDATE_MIN_SCORE,
    GENE_COLUMN,
    GENE_CONTEXT_FEATURES,
    GENE_CONTEXT_SOURCES,
    LABEL_COLUMN,
)
from ensemble_assets.core.data.sql import _quote, duckdb_connect


@dataclass
class RowBatch:
    """One batch of a subset: float32 features (imputed) and the row identities beside them."""

    X: np.ndarray          # (n, F) float32, C-order, no NaN
    label: np.ndarray      # (n,) int8 codes 0/1/2
    gene_id: np.ndarray    # (n,) object (str)
    position: np.ndarray   # (n,) int64 (-1 where the dataset has no position column)
    base: np.ndarray       # (n, 3) float32 base-model scores neither/donor/acceptor (NaN if absent)


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


def checked_labels(values: pa.Array | pa.ChunkedArray, source: str) -> np.ndarray:
    """``label_codes`` of a ``splice_type`` column; an unknown label is an error naming it."""
    label = label_codes(values)
    if (label < 0).any():
        bad = pc.unique(values.filter(pa.array(label < 0))).to_pylist()
        raise DatasetError(f"{source}: column '{LABEL_COLUMN}' has unknown label value(s) {bad[:10]}")
    return label


def _batch_to_rows(batch: pa.RecordBatch, features: Sequence[str], fill: Mapping[str, float],
                   source: str, candidates: CandidateIndex | None = None) -> RowBatch:
    names = batch.schema.names
    label = checked_labels(batch.column(LABEL_COLUMN), source)
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


def row_columns(ds: ParquetDataset, features: Sequence[str], ids: Sequence[str] = ("position",),
                label: bool = True) -> list[str]:
    """The columns of ``ds`` a scan for ``features`` reads, and no other: ``gene_id``, the label
    (if ``label``), the ``ids`` and base scores the dataset has, and the columns the features
    are read or computed from (``features.source_columns``) that it has."""
    have = set(ds.columns)
    wanted = [GENE_COLUMN] + ([LABEL_COLUMN] if label else [])
    wanted += [c for c in (*ids, *BASE_SCORE_COLUMNS) if c in have and c not in wanted]
    return wanted + [c for c in source_columns(features) if c in have and c not in wanted]


def parquet_scan(ds: ParquetDataset, *virtual_columns: str) -> str:
    """The SQL source ``read_parquet($files, ...)`` over the dataset's files, with the named virtual
    columns (``filename``, ``file_row_number``). Columns are matched by name across files
    (``union_by_name``) unless every file has the same schema: DuckDB's union of the schemas of
    many wide files costs memory (~200 MB for 90 files of 1,167 columns)."""
    options = ([] if ds.uniform_schema else ["union_by_name=true"]) + [f"{c}=true" for c in virtual_columns]
    return "read_parquet($files" + "".join(f", {o}" for o in options) + ")"


def duckdb_batches(ds: ParquetDataset, sql: str, columns: Sequence[str], batch_rows: int, memory_limit: str,
                   tables: Mapping[str, pa.Table] | None = None, threads: int = 1) -> Iterator[pa.RecordBatch]:
    """Stream the result of ``sql`` (over ``read_parquet($files, ...)``: the dataset's files) as Arrow
    record batches of at most ``batch_rows`` rows, with ``tables`` registered by name. One thread
    by default: then the rows come in the files' order. A read failure, also one that surfaces
    while streaming (a corrupt page), becomes a DatasetError naming the file and column."""
    con = duckdb_connect(threads=threads, memory_limit=memory_limit, preserve_insertion_order=True)
    try:
        for name, table in (tables or {}).items():
            con.register(name, table)
        with read_errors(ds, columns):
            reader = con.sql(sql, params={"files": ds.file_strings}).to_arrow_reader(batch_rows)
        while True:
            with read_errors(ds, columns):
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
            if batch.num_rows:
                yield batch
    finally:
        con.close()


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
    wanted = row_columns(ds, features)
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
        sql = f"SELECT {', '.join(_quote(c) for c in wanted)} FROM read_parquet($files, union_by_name=true)"
        tables = {}
        if gene_table is not None:
            tables["subset_genes"] = gene_table
            sql += f" WHERE {_quote(GENE_COLUMN)} IN (SELECT {_quote(GENE_COLUMN)} FROM subset_genes)"
        for batch in _rebatch(duckdb_batches(ds, sql, wanted, batch_rows, memory_limit, tables), batch_rows):
            yield _batch_to_rows(batch, features, fill, source, candidates)
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
