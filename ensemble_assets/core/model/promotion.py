"""The promotion gate: a new model version becomes current only if it is not worse than the
current one, measured on genes that neither model trained on (docs/operations.md#model-promotion).

Genes compared: the candidate's holdout genes (no member of the candidate trained on them) minus
every gene any member of the current model trained on. Each model is scored on those rows with
the evaluation code of holdout_metrics (core/evaluation/holdout.py ``predict_rows`` and
``score_model``): splice F1 at the model's **own** stored operating point, splice AP, and the
largest per-class calibrated ECE (uniform bins). The candidate is promoted unless one of them is
worse than the current model's by more than its tolerance.

No common unseen genes (e.g. ``train_all_genes``, or the current model trained on the
candidate's holdout genes): nothing honest to compare on. The candidate is then refused, unless
``allow_without_common_holdout`` is set, in which case it is promoted and the history records
that no comparison was possible. The first model is always promoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ensemble_assets.core.data.contract import ParquetDataset, open_dataset
from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.evaluation.holdout import operating_point, predict_rows, score_model, trained_genes
from ensemble_assets.core.io import read_json
from ensemble_assets.core.model.versions import ModelStore

GATE_ACTOR = "promotion gate"


@dataclass(frozen=True)
class PromotionSettings:
    keep_versions: int = 5                      # versions retained (current and previous never removed)
    max_splice_f1_drop: float = 0.01            # candidate splice F1 may be at most this much lower
    max_splice_ap_drop: float = 0.01            # candidate splice AP may be at most this much lower
    max_ece_increase: float = 0.01              # candidate's largest per-class ECE may be at most this much higher
    allow_without_common_holdout: bool = False  # promote when no gene is unseen by both models

    def validate(self) -> "PromotionSettings":
        if self.keep_versions < 1:
            raise ValueError(f"promotion keep_versions={self.keep_versions} must be at least 1")
        for name in ("max_splice_f1_drop", "max_splice_ap_drop", "max_ece_increase"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"promotion {name}={getattr(self, name)} is outside [0, 1]")
        return self


# metric → (label, tolerance setting, True when higher is better)
GATE_METRICS = {
    "splice_f1": ("splice F1 at own operating point", "max_splice_f1_drop", True),
    "splice_ap": ("splice AP", "max_splice_ap_drop", True),
    "max_ece": ("max per-class ECE (calibrated, uniform bins)", "max_ece_increase", False),
}


@dataclass
class PromotionDecision:
    candidate: str
    current: str | None                    # the current version before the decision
    promoted: bool
    reason: str
    comparison: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        if self.candidate == self.current:
            return "unchanged"
        return "promoted" if self.promoted else "refused"


def model_threshold(model_dir: Path) -> tuple[float, str]:
    """The model's stored splice threshold, or (a model consolidated before operating points
    were stored) the same value computed from its out-of-fold rows; with where it came from."""
    op = read_json(model_dir / "manifest.json").get("operating_point")
    if op:
        return float(op["splice_threshold"]), "stored operating point"
    return float(operating_point(model_dir)["splice_threshold"]), "computed from its out-of-fold rows (none stored)"


def score_on_genes(model_dir: Path, ds: ParquetDataset, genes: list[str], ece_bins: int,
                   scope: str) -> dict[str, Any]:
    """Splice F1 at the model's own threshold, splice AP and max per-class ECE on ``genes``."""
    threshold, source = model_threshold(model_dir)
    rows = predict_rows(model_dir, ds, genes)["consolidated"]
    m = score_model("model", "consolidated", rows, threshold, None, scope, ece_bins)
    eces = [m.get(f"ece_uniform_{c}") for c in CLASSES]
    return {"splice_f1": m["splice_f1"], "splice_ap": m["splice_ap"],
            "max_ece": max((e for e in eces if e is not None), default=None),
            "splice_threshold": threshold, "threshold_source": source, "rows": len(rows)}


def unseen_by_both(candidate_dir: Path, current_dir: Path) -> list[str]:
    """The candidate's holdout genes that no member of either model trained on."""
    holdout = set(read_json(candidate_dir / "manifest.json").get("holdout_genes", []))
    return sorted(holdout - trained_genes(candidate_dir) - trained_genes(current_dir))


def compare(candidate_dir: Path, current_dir: Path, settings: PromotionSettings, ece_bins: int = 15,
            open_ds: Callable[[str], ParquetDataset] = open_dataset) -> dict[str, Any]:
    """Candidate vs current on the genes neither trained on; one row per gate metric."""
    genes = unseen_by_both(candidate_dir, current_dir)
    cand_manifest = read_json(candidate_dir / "manifest.json")
    scope = (f"{len(genes)} genes neither model trained on (the candidate's holdout genes minus every gene a "
             "member of the current model trained on)")
    out: dict[str, Any] = {"genes": len(genes), "scope": scope, "dataset": cand_manifest.get("dataset")}
    if not genes:
        return out
    ds = open_ds(cand_manifest["dataset"])
    cand = score_on_genes(candidate_dir, ds, genes, ece_bins, scope)
    cur = score_on_genes(current_dir, ds, genes, ece_bins, scope)
    checks = []
    for metric, (label, tol_name, higher_better) in GATE_METRICS.items():
        c, p, tol = cand[metric], cur[metric], getattr(settings, tol_name)
        if c is None or p is None:
            ok = c is not None or p is None
            worse = None
        else:
            worse = (p - c) if higher_better else (c - p)
            ok = worse <= tol + 1e-12
        checks.append({"metric": metric, "label": label, "candidate": c, "current": p, "worse_by": worse,
                       "tolerance": tol, "setting": f"promotion.{tol_name}", "ok": ok})
    out.update({"rows": cand["rows"], "candidate": cand, "current": cur, "checks": checks})
    return out


def decide(store: ModelStore, candidate_id: str, settings: PromotionSettings, ece_bins: int = 15,
           actor: str = GATE_ACTOR, open_ds: Callable[[str], ParquetDataset] = open_dataset) -> PromotionDecision:
    """Compare ``candidate_id`` with the current version, promote it or record the refusal."""
    current = store.current_id()
    cand_dir = store.version_dir(candidate_id)
    if current is None:
        reason = "first model: no current version to compare with"
        store.promote(candidate_id, reason, actor, gate="first model")
        return PromotionDecision(candidate_id, None, True, reason)
    if current == candidate_id:
        return PromotionDecision(candidate_id, current, True,
                                 f"{candidate_id} is already the current version (same content id): nothing to decide")
    comparison = compare(cand_dir, store.version_dir(current), settings, ece_bins, open_ds)
    if not comparison["genes"]:
        why = (f"no genes that neither model trained on: the candidate has "
               f"{len(read_json(cand_dir / 'manifest.json').get('holdout_genes', []))} holdout genes, "
               f"and the current version {current} trained on all of them (or there are none)")
        if settings.allow_without_common_holdout:
            reason = f"{why}; promoted without comparison (promotion.allow_without_common_holdout)"
            return _record(store, candidate_id, current, True, reason, actor, comparison, "no common unseen genes")
        reason = (f"{why}; refused: set promotion.allow_without_common_holdout to promote without a comparison, "
                  f"or promote by hand (ensemble-assets models promote {candidate_id} --reason ...)")
        return _record(store, candidate_id, current, False, reason, actor, comparison, "no common unseen genes")
    failed = [c for c in comparison["checks"] if not c["ok"]]
    figures = "; ".join(f"{c['label']} {_fmt(c['candidate'])} vs {_fmt(c['current'])}" for c in comparison["checks"])
    if failed:
        reason = (f"refused: worse than current {current} beyond tolerance on {comparison['genes']} genes neither "
                  "trained on: " + "; ".join(
                      f"{c['label']} {_fmt(c['candidate'])} vs {_fmt(c['current'])} (worse by {_fmt(c['worse_by'])} > "
                      f"{c['setting']} {c['tolerance']})" for c in failed))
        return _record(store, candidate_id, current, False, reason, actor, comparison, "worse than current")
    reason = (f"not worse than {current} beyond tolerance on {comparison['genes']} genes neither trained on "
              f"(candidate vs current: {figures})")
    return _record(store, candidate_id, current, True, reason, actor, comparison, "passed")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def comparison_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparison as side-by-side table rows (metric, candidate, current, worse by, tolerance, ok)."""
    rows = [{"metric": c["label"], "candidate": c["candidate"], "current": c["current"], "worse by": c["worse_by"],
             "tolerance": c["tolerance"], "ok": "yes" if c["ok"] else "NO"} for c in comparison.get("checks", [])]
    if comparison.get("candidate"):
        rows.append({"metric": "splice threshold (own, out-of-fold)",
                     "candidate": comparison["candidate"]["splice_threshold"],
                     "current": comparison["current"]["splice_threshold"]})
    return rows


def _record(store: ModelStore, candidate_id: str, current: str | None, promote: bool, reason: str, actor: str,
            comparison: dict[str, Any], gate: str) -> PromotionDecision:
    """Promote or refuse the candidate in the store's history, and the decision that says so."""
    (store.promote if promote else store.refuse)(candidate_id, reason, actor, comparison=comparison, gate=gate)
    return PromotionDecision(candidate_id, current, promote, reason, comparison)
