"""The scored-positions table: one output row per input row, with the model's calls at its
operating point and the base model's calls at 0.5, both by the one rule (``SPLICE_RULE``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from ensemble_assets.core.data.schema import CLASSES, GENE_COLUMN
from ensemble_assets.core.model.ensemble import splice_calls

# identity columns copied from the input where it has them (gene_id and position always)
ID_COLUMNS: dict[str, pa.DataType] = {
    GENE_COLUMN: pa.string(), "position": pa.int64(), "chrom": pa.string(), "strand": pa.string(),
    "absolute_position": pa.int64(),
}
REQUIRED_ID_COLUMNS = (GENE_COLUMN, "position")
BASE_COLUMNS = ("donor_score", "acceptor_score", "neither_score")
# the base model's call: donor + acceptor score at 0.5, as the holdout evaluation's "base @0.5"
BASE_CALL_THRESHOLD = 0.5


def output_schema(input_columns: Sequence[str]) -> pa.Schema:
    """The scored-positions schema for an input with ``input_columns``."""
    have = set(input_columns)
    fields = [pa.field(c, t) for c, t in ID_COLUMNS.items() if c in have]
    fields += [pa.field(f"p_{c}", pa.float64()) for c in CLASSES]
    fields += [pa.field("splice_call", pa.bool_()), pa.field("predicted_type", pa.string())]
    base = [c for c in BASE_COLUMNS if c in have]
    fields += [pa.field(c, pa.float64()) for c in base]
    if {"donor_score", "acceptor_score"} <= have:
        fields += [pa.field("base_splice_call", pa.bool_()), pa.field("base_predicted_type", pa.string())]
    fields.append(pa.field("model_version", pa.string()))
    return pa.schema(fields)


def _float(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def scored_table(batch: pa.Table, proba: np.ndarray, threshold: float, model_version: str,
                 schema: pa.Schema) -> pa.Table:
    """The output rows of one input batch: ids, the model's probabilities and call at
    ``threshold``, the base scores and the base call at 0.5, the model version."""
    names = set(schema.names)
    cols: dict[str, pa.Array] = {c: batch.column(c).cast(t) for c, t in ID_COLUMNS.items() if c in names}
    for j, c in enumerate(CLASSES):
        cols[f"p_{c}"] = pa.array(proba[:, j], pa.float64())
    calls = splice_calls(proba, threshold)
    cols["splice_call"] = pa.array(calls["splice_call"], pa.bool_())
    cols["predicted_type"] = pa.array(calls["predicted_type"], pa.string())
    for c in BASE_COLUMNS:
        if c in names:
            cols[c] = batch.column(c).cast(pa.float64())
    if "base_splice_call" in names:
        donor, acceptor = _float(batch, "donor_score"), _float(batch, "acceptor_score")
        unknown = ~np.isfinite(donor + acceptor)   # no base score: no base call (null)
        base = splice_calls(np.column_stack([np.zeros_like(donor), donor, acceptor]), BASE_CALL_THRESHOLD)
        cols["base_splice_call"] = pa.array(base["splice_call"], pa.bool_(), mask=unknown)
        cols["base_predicted_type"] = pa.array(base["predicted_type"], pa.string(), mask=unknown)
    cols["model_version"] = pa.repeat(pa.scalar(model_version, pa.string()), batch.num_rows)
    return pa.table(cols, schema=schema)
