"""Gene inventory and dataset profile: DuckDB SQL over the input Parquet (DESIGN §3)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .dataset import DatasetError, ParquetDataset, _quote
from .schema import GENE_COLUMN, LABEL_COLUMN, LABEL_CODES, NEITHER_ALIASES

# SQL twin of dataset.label_codes (same spellings; -1 = unknown)
_ST = f"lower(trim(CAST({_quote(LABEL_COLUMN)} AS VARCHAR)))"
LABEL_SQL = (
    f"CASE WHEN {_ST} IS NULL OR {_ST} IN ({', '.join(repr(a) for a in NEITHER_ALIASES)}) THEN 0 "
    + " ".join(f"WHEN {_ST} = '{k}' THEN {v}" for k, v in LABEL_CODES.items() if v)
    + " ELSE -1 END"
)


def connect(threads: int = 2, memory_limit: str = "2GB"):
    import duckdb

    return duckdb.connect(config={"threads": threads, "memory_limit": memory_limit})


def _source(ds: ParquetDataset) -> str:
    return "read_parquet($files, union_by_name=true, filename=true)"


def build_gene_inventory(ds: ParquetDataset, threads: int = 2) -> tuple[pa.Table, dict[str, Any]]:
    """One row per gene (rows, class counts, base-model outcome counts, length, source file)
    and the dataset profile. Raises DatasetError for null gene ids or unknown labels."""
    con = connect(threads)
    p = {"files": ds.file_strings}
    g = _quote(GENE_COLUMN)
    try:
        bad = con.sql(
            f"SELECT filename, count(*) FROM {_source(ds)} WHERE {g} IS NULL OR trim(CAST({g} AS VARCHAR)) = '' "
            "GROUP BY filename ORDER BY filename", params=p).fetchall()
        if bad:
            where = ", ".join(f"{f}: {n}" for f, n in bad)
            raise DatasetError(f"column '{GENE_COLUMN}' has null or empty values ({where} rows)")
        unknown = con.sql(
            f"SELECT CAST({_quote(LABEL_COLUMN)} AS VARCHAR) AS v, count(*), min(filename) FROM {_source(ds)} "
            f"WHERE ({LABEL_SQL}) < 0 GROUP BY v ORDER BY v", params=p).fetchall()
        if unknown:
            desc = "; ".join(f"{v!r}: {n} rows (first in {f})" for v, n, f in unknown[:10])
            raise DatasetError(
                f"column '{LABEL_COLUMN}' has unknown label value(s) — {desc}; "
                "expected donor, acceptor, neither (null, '' and '0' mean neither)")
        cols = set(ds.columns)
        extra = []
        if "pred_type" in cols:
            extra += [f"count_if(upper(pred_type) = '{t}') AS n_{t.lower()}" for t in ("TP", "FP", "FN", "TN")]
        if "gene_length" in cols:
            extra.append("max(gene_length) AS gene_length")
        if "chrom" in cols:
            extra.append("min(CAST(chrom AS VARCHAR)) AS chrom")
        if "position" in cols:
            extra.append("count(*) - count(DISTINCT position) AS duplicate_positions")
        sql = (
            f"SELECT CAST({g} AS VARCHAR) AS gene_id, count(*) AS n_rows, "
            f"count_if(label = 0) AS n_neither, count_if(label = 1) AS n_donor, count_if(label = 2) AS n_acceptor, "
            + "".join(e + ", " for e in extra)
            + "min(filename) AS source_file, count(DISTINCT filename) AS n_files "
            f"FROM (SELECT *, {LABEL_SQL} AS label FROM {_source(ds)}) GROUP BY 1 ORDER BY 1"
        )
        inventory = con.sql(sql, params=p).to_arrow_table()
    finally:
        con.close()
    # normalise integer widths (DuckDB returns int64 for counts)
    total_rows = int(sum(ds.rows_per_file))
    pf_bytes = 0
    for f in ds.files:
        md = pq.ParquetFile(f).metadata
        pf_bytes += sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    profile = {
        "rows": total_rows,
        "genes": inventory.num_rows,
        "files": len(ds.files),
        "columns": len(ds.columns),
        "uncompressed_bytes_per_row": round(pf_bytes / max(total_rows, 1), 1),
        "disk_bytes": int(sum(f.stat().st_size for f in ds.files)),
        "label_counts": {k: int(pa.compute.sum(inventory.column(f"n_{k}")).as_py() or 0) for k in LABEL_CODES},
        "files_missing_columns": {
            c: [f.name for f in ds.files_missing(c)] for c in ds.columns if ds.files_missing(c)
        } if len(ds.files) > 1 else {},
    }
    if "duplicate_positions" in inventory.schema.names:
        profile["duplicate_positions"] = int(pa.compute.sum(inventory.column("duplicate_positions")).as_py() or 0)
    if total_rows == 0:
        raise DatasetError(f"dataset {ds.root} has no rows")
    return inventory, profile
