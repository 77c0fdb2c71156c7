"""The coverage guarantee of a scored table: every input row appears exactly once in the output.

Checked with DuckDB straight from the files (independent of the scoring code): the rows per gene
of the input and of the output are equal, and no (gene_id, position) occurs in the output more
often than in the input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ensemble_assets.core.data.contract import ParquetDataset
from ensemble_assets.core.data.read_errors import read_errors
from ensemble_assets.core.data.sql import duckdb_connect
from ensemble_assets.core.data.streaming import parquet_scan

SHOWN = 10   # genes named per kind of problem in a description


@dataclass(frozen=True)
class Coverage:
    input_rows: int
    output_rows: int
    genes: int
    count_mismatches: list[tuple[str, int, int]]      # (gene, input rows, output rows), worst first
    duplicates: list[tuple[str, int, int, int]]       # (gene, position, output rows, input rows)

    @property
    def missing_genes(self) -> list[str]:
        return [g for g, _, n_out in self.count_mismatches if n_out == 0]

    @property
    def passed(self) -> bool:
        return not self.count_mismatches and not self.duplicates

    def description(self) -> str:
        if self.passed:
            return (f"every input row appears exactly once: {self.output_rows:,} rows of {self.genes:,} genes, "
                    "rows per gene equal to the input's, no duplicated (gene_id, position)")
        parts = []
        missing = self.missing_genes
        if missing:
            parts.append(f"{len(missing)} gene(s) missing from the output: {', '.join(missing[:SHOWN])}")
        wrong = [m for m in self.count_mismatches if m[2] != 0]
        if wrong:
            parts.append(f"{len(wrong)} gene(s) with a different row count (input → output): "
                         + ", ".join(f"{g} {i} → {o}" for g, i, o in wrong[:SHOWN]))
        if self.duplicates:
            genes = sorted({d[0] for d in self.duplicates})
            parts.append(f"{len(self.duplicates)} duplicated (gene_id, position) in {len(genes)} gene(s): "
                         + ", ".join(f"{g}:{p} ×{o}" for g, p, o, _ in self.duplicates[:SHOWN]))
        return f"input {self.input_rows:,} rows, output {self.output_rows:,}; " + "; ".join(parts)


def check_coverage(ds: ParquetDataset, output: str | Path, threads: int = 2, memory_limit: str = "512MB") -> Coverage:
    """Compare ``output`` (a scored-positions Parquet file) with the input dataset ``ds``."""
    con = duckdb_connect(threads=threads, memory_limit=memory_limit)
    params = {"files": ds.file_strings, "out": str(output)}
    inp = parquet_scan(ds)
    out = "read_parquet($out)"
    try:
        with read_errors(ds, ["gene_id", "position"]):
            counts = con.execute(
                f"WITH i AS (SELECT gene_id, count(*) n FROM {inp} GROUP BY gene_id), "
                f"o AS (SELECT gene_id, count(*) n FROM {out} GROUP BY gene_id) "
                "SELECT coalesce(i.gene_id, o.gene_id), coalesce(i.n, 0), coalesce(o.n, 0) "
                "FROM i FULL OUTER JOIN o ON i.gene_id = o.gene_id", params).fetchall()
            dups = con.execute(
                f"WITH d AS (SELECT gene_id, position, count(*) n FROM {out} GROUP BY ALL HAVING count(*) > 1), "
                f"i AS (SELECT gene_id, position, count(*) n FROM {inp} "
                "WHERE (gene_id, position) IN (SELECT (gene_id, position) FROM d) GROUP BY ALL) "
                "SELECT d.gene_id, d.position, d.n, coalesce(i.n, 0) FROM d LEFT JOIN i "
                "ON d.gene_id = i.gene_id AND d.position = i.position WHERE d.n > coalesce(i.n, 0) "
                "ORDER BY d.gene_id, d.position", params).fetchall()
    finally:
        con.close()
    mismatches = sorted(((g, int(i), int(o)) for g, i, o in counts if i != o),
                        key=lambda m: (m[2] != 0, -abs(m[1] - m[2]), m[0]))
    return Coverage(input_rows=sum(int(i) for _, i, _ in counts), output_rows=sum(int(o) for _, _, o in counts),
                    genes=sum(1 for _, i, _ in counts if i), count_mismatches=mismatches,
                    duplicates=[(g, int(p), int(o), int(i)) for g, p, o, i in dups])
