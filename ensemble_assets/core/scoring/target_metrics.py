"""Metrics of a labelled scoring target: the metric set of holdout_metrics (``score_model``),
base vs meta, on the target's genes the model did not train on.

Rows of the table: the base model at 0.5 (its call in the scored table), the model at its stored
operating point (its call in the scored table), and both at the threshold that is best on the
target itself — labelled so: a threshold tuned on the rows it is reported on is optimistic."""

from __future__ import annotations

from typing import Any

import numpy as np

from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.evaluation.holdout import ScoredRows, choose_threshold, score_model
from ensemble_assets.core.scoring.calls import BASE_CALL_THRESHOLD
from ensemble_assets.core.scoring.score import LabelledRows

STORED = "stored operating point of the model (chosen on out-of-fold predictions of its training genes)"
BASE_CALL = "0.5 (the base model's call)"
ON_TARGET = "chosen on the target itself (F1-optimal on these rows: optimistic)"
HEADLINE = ["model", "threshold_source", "splice_threshold", "splice_f1", "splice_fp", "splice_fn",
            "splice_ap", "macro_f1", "f1_donor", "f1_acceptor", "topk_splice", "errors"]


def _rows(labelled: LabelledRows, keep_gene: np.ndarray) -> ScoredRows:
    code = np.concatenate(labelled.gene_code)
    keep = keep_gene[code]
    return ScoredRows(gene_id=code[keep], position=np.zeros(int(keep.sum()), dtype=np.int64),
                      label=np.concatenate(labelled.label)[keep].astype(np.int64),
                      base=np.concatenate(labelled.base)[keep].astype(np.float64),
                      proba=np.concatenate(labelled.proba)[keep].astype(np.float64))


def target_metrics(labelled: LabelledRows, trained: set[str], threshold: float, n_bins: int = 15) -> dict[str, Any]:
    """The metric table of a labelled target (see the module docstring) on the genes not in
    ``trained`` (the genes the model trained on, by gene id)."""
    genes = np.asarray(labelled.genes, dtype=object)
    keep_gene = np.asarray([g not in trained for g in labelled.genes], dtype=bool)
    excluded = int((~keep_gene).sum())
    scope = "target genes the model did not train on"
    out: dict[str, Any] = {
        "scope": scope, "genes": int(keep_gene.sum()), "genes_excluded_trained_on": excluded,
        "excluded_examples": sorted(genes[~keep_gene].tolist())[:10], "table": [],
        "note": (f"metrics on the target's {int(keep_gene.sum())} genes the model did not train on (by gene id); "
                 f"{excluded} gene(s) the model trained on are left out. " if excluded else
                 f"metrics on all {int(keep_gene.sum())} genes of the target; the model trained on none of them. ")
                + "Thresholds: the model's stored operating point and the base call at 0.5; the rows marked "
                  "'chosen on the target itself' use the F1-optimal threshold of these very rows (optimistic).",
    }
    if not keep_gene.any():
        out["rows"] = 0
        out["note"] = (f"no metrics: the model trained on every one of the target's {excluded} genes "
                       "(metrics are only computed on genes a model did not train on)")
        return out
    rows = _rows(labelled, keep_gene)
    out["rows"] = len(rows)
    table = []
    has_base = bool(np.isfinite(rows.base).all())
    best = choose_threshold(rows.y_splice, rows.p_splice)
    if has_base:
        base_rows = rows.with_proba(rows.base / np.clip(rows.base.sum(axis=1, keepdims=True), 1e-12, None))
        base_best = choose_threshold(rows.y_splice, rows.base_splice)
        table.append(("base", base_rows, BASE_CALL_THRESHOLD, BASE_CALL, "base_scores"))
        table.append(("base", base_rows, base_best, ON_TARGET, "base_scores"))
    table.append(("model", rows, threshold, STORED, "calibrated"))
    table.append(("model", rows, best, ON_TARGET, "calibrated"))
    for name, r, thr, source, kind in table:
        # base_splice_* columns of every row: the base call at 0.5 on the same rows (score_model)
        m = score_model(name, "base" if name == "base" else "model", r, thr, None, scope, n_bins, proba_kind=kind)
        m.pop("_calibration")
        m.pop("_bins")
        out["table"].append({**m, "threshold_source": source})
    out["thresholds"] = {"stored": float(threshold), "base_call": BASE_CALL_THRESHOLD,
                         "model_chosen_on_target": float(best),
                         **({"base_chosen_on_target": float(base_best)} if has_base else {})}
    out["class_counts"] = {c: int((rows.label == j).sum()) for j, c in enumerate(CLASSES)}
    return out
