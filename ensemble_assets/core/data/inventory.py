"""Gene inventory and dataset profile: DuckDB SQL over the input Parquet (docs/architecture.md#asset-graph)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset
from ensemble_assets.core.data.read_errors import read_errors
from ensemble_assets.core.data.schema import GENE_COLUMN, LABEL_CODES, LABEL_COLUMN, NEITHER_ALIASES
from ensemble_assets.core.data.sql import _quote, duckdb_connect

# SQL twin of dataset.label_codes (same spellings; -1 = unknown)
_ST = f"lower(trim(CAST({_quote(LABEL_COLUMN)} AS VARCHAR)))"
LABEL_SQL = (
    f"CASE WHEN {_ST} IS NULL OR {_ST} IN ({', '.join(repr(a) for a in NEITHER_ALIASES)}) THEN 0 "
    + " ".join(f"WHEN {_ST} = '{k}' THEN {v}" for k, v in LABEL_CODES.items() if v)
    + " ELSE -1 END"
)


def connect(threads: int = 2, memory_limit: str = "2GB"):
    """In-memory DuckDB with a private spill directory (see ``dataset.duckdb_connect``)."""
    return duckdb_connect(threads=threads, memory_limit=memory_limit)


def internal_name(ds: ParquetDataset, base: str) -> str:
    """A column name for a computed value that no input column has (input column names are
    arbitrary: a dataset may well have a ``label`` or ``filename`` column of its own)."""
    taken = set(ds.columns)
    name = f"_ea_{base}"
    while name in taken:
        name = "_" + name
    return name


def _source(ds: ParquetDataset) -> str:
    """All files by name, with each row's file in the column ``internal_name(ds, 'file')``."""
    return f"read_parquet($files, union_by_name=true, filename='{internal_name(ds, 'file')}')"


def build_gene_inventory(ds: ParquetDataset, threads: int = 2) -> tuple[pa.Table, dict[str, Any]]:
    """One row per gene (rows, class counts, base-model outcome counts, length, source file)
    and the dataset profile. Raises DatasetError naming the files, genes and counts at fault for
    an empty dataset, null/empty gene ids, unknown labels, a single class or duplicated
    (gene_id, position) rows."""
    total_rows = int(sum(ds.rows_per_file))
    if total_rows == 0:
        raise DatasetError(f"dataset {ds.root} has no rows ({len(ds.files)} file(s), all empty)")
    read = [c for c in (GENE_COLUMN, LABEL_COLUMN, "pred_type", "gene_length", "chrom", "position") if c in ds.columns]
    con = connect(threads)
    try:
        with read_errors(ds, read):
            inventory = _inventory_queries(con, ds, read)
    finally:
        con.close()
    _check_label_classes(inventory)
    _check_duplicate_positions(ds, inventory, threads)
    return inventory, _profile(ds, inventory, total_rows)


def _inventory_queries(con, ds: ParquetDataset, read: list[str]) -> pa.Table:
    """Null/empty gene ids and unknown labels are rejected (naming files and counts), then one
    row per gene. Only the needed columns are selected, every input column name is quoted and
    computed columns get names no input column has."""
    p = {"files": ds.file_strings}
    g, fcol, lab = _quote(GENE_COLUMN), _quote(internal_name(ds, "file")), _quote(internal_name(ds, "label"))
    gid = f"CAST({g} AS VARCHAR)"
    ctrl = f"regexp_matches({gid}, '[[:cntrl:]]')"
    per_file = con.sql(  # one scan for both checks
        f"SELECT {fcol}, count_if({g} IS NULL OR trim({gid}) = ''), count_if({ctrl}), min(CASE WHEN {ctrl} THEN {gid} END) "
        f"FROM {_source(ds)} GROUP BY 1 ORDER BY 1", params=p).fetchall()
    bad = [(f, n) for f, n, _, _ in per_file if n]
    if bad:
        where = ", ".join(f"{f}: {n}" for f, n in bad)
        raise DatasetError(f"column '{GENE_COLUMN}' has null or empty values ({where} rows)")
    bad = [(f, n, example) for f, _, n, example in per_file if n]
    if bad:
        raise DatasetError(
            f"column '{GENE_COLUMN}' has {sum(n for _, n, _ in bad)} row(s) whose gene id contains a control "
            f"character (newline, tab, ...), e.g. {bad[0][2]!r} in {bad[0][0]}")
    unknown = con.sql(
        f"SELECT CAST({_quote(LABEL_COLUMN)} AS VARCHAR), count(*), min({fcol}) FROM {_source(ds)} "
        f"WHERE ({LABEL_SQL}) < 0 GROUP BY 1 ORDER BY 1", params=p).fetchall()
    if unknown:
        desc = "; ".join(f"{v!r}: {n} rows (first in {f})" for v, n, f in unknown[:10])
        raise DatasetError(
            f"column '{LABEL_COLUMN}' has unknown label value(s) — {desc}; "
            "expected donor, acceptor, neither (null, '' and '0' mean neither)")
    q = {c: _quote(c) for c in read}
    extra = []
    if "pred_type" in q:
        extra += [f"count_if(upper(CAST({q['pred_type']} AS VARCHAR)) = '{t}') AS n_{t.lower()}"
                  for t in ("TP", "FP", "FN", "TN")]
    if "gene_length" in q:
        extra.append(f"max({q['gene_length']}) AS gene_length")
    if "chrom" in q:  # a gene's rows on several chromosomes: n_chroms > 1 (a chromosome holdout refuses it)
        extra.append(f"min(CAST({q['chrom']} AS VARCHAR)) AS chrom")
        extra.append(f"count(DISTINCT CAST({q['chrom']} AS VARCHAR)) AS n_chroms")
    if "position" in q:
        extra.append(f"count({q['position']}) - count(DISTINCT {q['position']}) AS duplicate_positions")
    sql = (
        f"SELECT CAST({g} AS VARCHAR) AS gene_id, count(*) AS n_rows, "
        f"count_if({lab} = 0) AS n_neither, count_if({lab} = 1) AS n_donor, count_if({lab} = 2) AS n_acceptor, "
        + "".join(e + ", " for e in extra)
        + f"min({fcol}) AS source_file, count(DISTINCT {fcol}) AS n_files "
        f"FROM (SELECT {', '.join(q.values())}, {fcol}, {LABEL_SQL} AS {lab} FROM {_source(ds)}) GROUP BY 1 ORDER BY 1"
    )
    return con.sql(sql, params=p).to_arrow_table()


def _check_label_classes(inventory: pa.Table) -> None:
    """A dataset with positions of a single class cannot train a splice-site model."""
    counts = {k: int(pa.compute.sum(inventory.column(f"n_{k}")).as_py() or 0) for k in LABEL_CODES}
    present = [k for k, n in counts.items() if n]
    if len(present) < 2:
        desc = ", ".join(f"{k}={n}" for k, n in counts.items())
        raise DatasetError(
            f"column '{LABEL_COLUMN}' has a single class ({desc} rows in {inventory.num_rows} genes); "
            "training needs positions of at least two of donor, acceptor, neither")


def _check_duplicate_positions(ds: ParquetDataset, inventory: pa.Table, threads: int) -> None:
    """Each position of a gene is one row: duplicated (gene_id, position) rows would be counted
    twice by every fold and metric (and, with different labels, contradict each other)."""
    if "duplicate_positions" not in inventory.schema.names:
        return
    extra_rows = int(pa.compute.sum(inventory.column("duplicate_positions")).as_py() or 0)
    if not extra_rows:
        return
    con = connect(threads)
    g, pos = _quote(GENE_COLUMN), _quote("position")
    fcol, lab = _quote(internal_name(ds, "file")), _quote(internal_name(ds, "label"))
    try:
        with read_errors(ds, [GENE_COLUMN, LABEL_COLUMN, "position"]):
            con.execute(f"CREATE TEMP TABLE dup AS SELECT CAST({g} AS VARCHAR) AS gene, {pos} AS pos, count(*) AS n, "
                        f"count(DISTINCT {lab}) AS labels, string_agg(DISTINCT {fcol}, ', ' ORDER BY {fcol}) AS files "
                        f"FROM (SELECT {g}, {pos}, {fcol}, {LABEL_SQL} AS {lab} FROM {_source(ds)}) "
                        f"WHERE {pos} IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1",
                        {"files": ds.file_strings})
            pairs, conflicting = con.sql("SELECT count(*), count_if(labels > 1) FROM dup").fetchall()[0]
            examples = con.sql("SELECT gene, pos, n, files FROM dup ORDER BY gene, pos LIMIT 5").fetchall()
    finally:
        con.close()
    genes = sum(1 for v in inventory.column("duplicate_positions").to_pylist() if v)
    eg = "; ".join(f"gene {gid!r} position {pos} ×{n} (in {files})" for gid, pos, n, files in examples)
    raise DatasetError(
        f"{pairs} (gene_id, position) pair(s) occur more than once ({extra_rows} extra row(s) in {genes} gene(s)"
        + (f", {conflicting} with conflicting labels" if conflicting else "") + f"), e.g. {eg}; "
        "each position of a gene must be one row: deduplicate the input")


def _profile(ds: ParquetDataset, inventory: pa.Table, total_rows: int) -> dict[str, Any]:
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
    if "chrom" in inventory.schema.names:  # genes per chromosome (the names --holdout-chromosomes takes)
        counts = Counter(inventory.column("chrom").to_pylist())
        profile["genes_per_chromosome"] = {str(c): counts[c] for c in sorted(counts, key=str)}
    if "duplicate_positions" in inventory.schema.names:
        profile["duplicate_positions"] = int(pa.compute.sum(inventory.column("duplicate_positions")).as_py() or 0)
    return profile
