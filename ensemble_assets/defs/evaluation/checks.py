"""Checks of the holdout metrics: calibration within bound, meta-model beats the base model."""

from __future__ import annotations

import dagster as dg

from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.evaluation.reports import load_holdout_metrics
from ensemble_assets.defs.evaluation.assets import holdout_metrics
from ensemble_assets.defs.resources import EnsembleResource


@dg.asset_check(asset=holdout_metrics, blocking=False,
                description="The consolidated model's calibrated per-class ECE (uniform bins) on genes it "
                            "never trained on is within evaluation.ece_bound (default 0.01).")
def calibrated_ece_within_bound(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    cfg = ensemble.planned_config()
    ev = load_holdout_metrics(cfg)
    bound = cfg.evaluation.ece_bound
    rows = {r["model"]: r for r in ev["table"]}
    ece = {c: rows["consolidated"].get(f"ece_uniform_{c}") for c in CLASSES}
    over = {c: v for c, v in ece.items() if v is not None and v > bound}
    instances_over = sorted(f"{m} {c} {r[f'ece_uniform_{c}']:.4f}" for m, r in rows.items()
                            if r["kind"] == "instance" for c in CLASSES if (r.get(f"ece_uniform_{c}") or 0) > bound)
    return dg.AssetCheckResult(
        passed=not over, severity=dg.AssetCheckSeverity.WARN,
        description=(f"consolidated calibrated ECE above {bound} on {ev['scope']} genes: "
                     + ", ".join(f"{c} {v:.4f}" for c, v in over.items())) if over
        else f"consolidated calibrated ECE ≤ {bound} for every class on {ev['scope']} genes ("
             + ", ".join(f"{c} {v:.4f}" for c, v in ece.items() if v is not None) + ")",
        metadata={"bound": bound, **{f"ece_{c}": float(v) for c, v in ece.items() if v is not None},
                  "instances_above_bound": dg.MetadataValue.json(instances_over)})


@dg.asset_check(asset=holdout_metrics, blocking=False,
                description="The consolidated meta-model beats the base model's splice F1 on genes it never "
                            "trained on, at 0.5 and at the base model's own out-of-fold-chosen threshold.")
def meta_beats_base_on_holdout_f1(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    ev = load_holdout_metrics(ensemble.planned_config())
    rows = {r["model"]: r for r in ev["table"]}
    cons = rows["consolidated"]
    base_05 = cons.get("base_splice_f1")
    base_thr = cons.get("base_splice_f1_at_oof_threshold")
    if base_05 is None:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   description="the dataset has no base-model scores: nothing to compare")
    best_base = max(v for v in (base_05, base_thr) if v is not None)
    meta = cons.get("splice_f1") or 0.0
    losers = sorted(f"{m} {r['splice_f1']:.4f}" for m, r in rows.items()
                    if r["kind"] == "instance" and (r.get("splice_f1") or 0.0) <= best_base)
    return dg.AssetCheckResult(
        passed=meta > best_base, severity=dg.AssetCheckSeverity.WARN,
        description=(f"consolidated splice F1 {meta:.4f} vs base {base_05:.4f} at 0.5"
                     + (f", {base_thr:.4f} at its out-of-fold threshold" if base_thr is not None else "")
                     + f" on {ev['genes']} {ev['scope']} genes"
                     + (f"; instances not beating the base: {', '.join(losers)}" if losers else "")),
        metadata={"consolidated_splice_f1": float(meta), "base_splice_f1_at_0.5": float(base_05),
                  "base_splice_f1_at_oof_threshold": float(base_thr) if base_thr is not None else "n/a",
                  "instances_not_beating_base": dg.MetadataValue.json(losers)})


evaluation_checks = [calibrated_ece_within_bound, meta_beats_base_on_holdout_f1]
