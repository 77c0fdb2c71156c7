"""Whole-gene batches: a dataset streamed on the one data path (DuckDB → Arrow record batches)
so that every batch holds complete genes. Gene-level features (the gene-context features look
at every candidate of the row's gene) are then exact batch by batch, whatever the input size.

A first pass reads ``gene_id`` alone (with each row's file and row number) and finds, per gene,
its row count and whether its rows are contiguous in the files' order. Contiguous genes (the
usual layout: a gene's rows together in one file) stream in the files' order and are cut at
gene boundaries. The rows of a gene that is split across files, or interleaved with another
gene inside a file, are assembled by DuckDB (a second scan of those genes only, ordered by gene;
DuckDB sorts within its memory limit and spills beyond it). Every gene is emitted exactly once
with exactly the rows the first pass counted, or the scan fails naming the gene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset
from ensemble_assets.core.data.read_errors import read_errors
from ensemble_assets.core.data.schema import GENE_COLUMN
from ensemble_assets.core.data.sql import _quote, duckdb_connect
from ensemble_assets.core.data.streaming import duckdb_batches, parquet_scan

_GENE = _quote(GENE_COLUMN)


@dataclass(frozen=True)
class GeneLayout:
    """Where each gene's rows are: row counts per gene and the genes whose rows are not one
    contiguous run in the files' order (split across files or interleaved)."""

    counts: dict[str, int]
    scattered: frozenset[str]

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def genes(self) -> int:
        return len(self.counts)


def gene_layout(ds: ParquetDataset, threads: int = 2, memory_limit: str = "512MB") -> GeneLayout:
    """One scan of ``gene_id``: rows per gene and the genes that are not contiguous. Rows without
    a gene id are refused, naming the file."""
    con = duckdb_connect(threads=threads, memory_limit=memory_limit)
    try:
        src = parquet_scan(ds, "filename", "file_row_number")
        with read_errors(ds, [GENE_COLUMN]):
            nulls = con.execute(f"SELECT filename, count(*) FROM {src} WHERE {_GENE} IS NULL GROUP BY ALL "
                                "ORDER BY filename", {"files": ds.file_strings}).fetchall()
            if nulls:
                raise DatasetError("rows without a gene id: " + ", ".join(f"{f}: {n}" for f, n in nulls))
            rows = con.execute(
                f"SELECT {_GENE}, count(*), count(DISTINCT filename) > 1 "
                "OR max(file_row_number) - min(file_row_number) + 1 <> count(*) "
                f"FROM {src} GROUP BY {_GENE}", {"files": ds.file_strings}).fetchall()
    finally:
        con.close()
    if not rows:
        raise DatasetError(f"dataset {ds.root} has no rows")
    return GeneLayout({g: int(n) for g, n, _ in rows}, frozenset(g for g, _, split in rows if split))


def _cut_at_gene_boundaries(batches: Iterator[pa.RecordBatch], batch_rows: int) -> Iterator[pa.Table]:
    """Tables of ≥ ``batch_rows`` rows (the last one shorter) cut where the gene changes; the
    rows of each gene must be contiguous in ``batches``. A gene longer than ``batch_rows`` is one
    table of its own size."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for b in batches:
        pending.append(b)
        held += b.num_rows
        if held < batch_rows:
            continue
        last = np.asarray(b.column(GENE_COLUMN).to_numpy(zero_copy_only=False), dtype=object)
        other = np.flatnonzero(last != last[-1])
        if not len(other):   # the newest batch is one gene's rows: where did that gene start?
            table = pa.Table.from_batches(pending)
            genes = np.asarray(table.column(GENE_COLUMN).to_numpy(), dtype=object)
            other = np.flatnonzero(genes != genes[-1])
            if not len(other):
                continue
            cut = int(other[-1]) + 1
        else:
            cut = held - b.num_rows + int(other[-1]) + 1
            table = pa.Table.from_batches(pending)
        yield table.slice(0, cut)
        rest = table.slice(cut)
        pending = rest.to_batches() if rest.num_rows else []
        held = rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


class _GeneLedger:
    """Every gene emitted once, with the row count the first pass found (else an error naming it)."""

    def __init__(self, layout: GeneLayout, source: str):
        self.expected = layout.counts
        self.seen: set[str] = set()
        self.source = source

    def check(self, table: pa.Table) -> pa.Table:
        counts = pc.value_counts(table.column(GENE_COLUMN)).to_pylist()
        for entry in counts:
            g, n = entry["values"], entry["counts"]
            if g in self.seen:
                raise DatasetError(f"{self.source}: gene {g} came back after its rows were complete; "
                                   "the files changed while they were read")
            if n != self.expected.get(g):
                raise DatasetError(f"{self.source}: gene {g} has {n} row(s) in its batch, the first pass "
                                   f"counted {self.expected.get(g, 0)}; the files changed while they were read")
            self.seen.add(g)
        return table


def iter_gene_batches(ds: ParquetDataset, columns: Sequence[str], batch_rows: int = 32_768,
                      memory_limit: str = "512MB", layout: GeneLayout | None = None,
                      on_layout: Callable[[GeneLayout], None] | None = None) -> Iterator[pa.Table]:
    """Stream ``columns`` of ``ds`` (and no other column) as tables of whole genes of about
    ``batch_rows`` rows: contiguous genes in the files' order first, then the scattered genes,
    assembled and ordered by gene. ``on_layout`` receives the first pass's layout."""
    layout = layout or gene_layout(ds, memory_limit=memory_limit)
    if on_layout is not None:
        on_layout(layout)
    ledger = _GeneLedger(layout, f"dataset {ds.root}")
    cols = [GENE_COLUMN, *(c for c in columns if c != GENE_COLUMN)]
    select = ", ".join(_quote(c) for c in cols)
    stream = duckdb_batches(ds, f"SELECT {select} FROM {parquet_scan(ds)}", cols, batch_rows, memory_limit)
    if layout.scattered:
        scattered = pa.array(sorted(layout.scattered), pa.string())
        stream = (b.filter(pc.invert(pc.is_in(b.column(GENE_COLUMN), value_set=scattered))) for b in stream)
        stream = (b for b in stream if b.num_rows)
    for table in _cut_at_gene_boundaries(stream, batch_rows):
        yield ledger.check(table)
    if layout.scattered:
        genes = pa.table({GENE_COLUMN: pa.array(sorted(layout.scattered), pa.string())})
        sql = (f"SELECT {select} FROM {parquet_scan(ds, 'filename', 'file_row_number')} "
               f"WHERE {_GENE} IN (SELECT {_GENE} FROM scattered_genes) ORDER BY {_GENE}, filename, file_row_number")
        ordered = duckdb_batches(ds, sql, cols, batch_rows, memory_limit, {"scattered_genes": genes})
        for table in _cut_at_gene_boundaries(ordered, batch_rows):
            yield ledger.check(table)
    missing = sorted(set(layout.counts) - ledger.seen)
    if missing:
        raise DatasetError(f"dataset {ds.root}: {len(missing)} gene(s) were not read back: {', '.join(missing[:10])}")
