"""Real input faults for failure-path tests: corrupt rows that only one gene subset reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

CORRUPT_FILE = "zz_corrupt_rows.parquet"


def gene_in_one_subset(plan: dict[str, Any], key: str) -> str:
    """A gene of subset ``key`` that no other subset trains on (overlap genes are in two)."""
    others = set().union(*[set(s["genes"]) for s in plan["subsets"] if s["key"] != key])
    for s in plan["subsets"]:
        if s["key"] == key:
            only = sorted(set(s["genes"]) - others)
            if only:
                return only[0]
    raise AssertionError(f"subset {key} has no gene of its own")


def write_infinite_rows(dataset: Path, gene: str, column: str, rows: int = 3) -> Path:
    """An extra Parquet file in the dataset with ``rows`` positions of ``gene`` whose ``column``
    (a model feature) is +inf — an input error (docs/architecture.md#data-contract) that only this gene's subset reads.
    Its types match the demo files (union schema unchanged); positions are new (no duplicates)."""
    master = dataset / "master" if (dataset / "master").is_dir() else dataset
    ref = pq.read_schema(next(iter(sorted(master.glob("*.parquet")))))
    table = pa.table({
        "gene_id": pa.array([gene] * rows, ref.field("gene_id").type),
        "splice_type": pa.array(["neither"] * rows, ref.field("splice_type").type),
        "position": pa.array([10_000_000 + i for i in range(rows)], ref.field("position").type),
        column: pa.array([float("inf")] * rows, ref.field(column).type),
    })
    out = master / CORRUPT_FILE
    pq.write_table(table, out)
    return out
