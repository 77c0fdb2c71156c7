"""model_promotion: the consolidated model (a new version) becomes current only if it is not
worse than the current version on genes neither trained on (core/model/promotion.py)."""


import dagster as dg

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.model.promotion import comparison_rows
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.metadata import OWNERS, md_table
from ensemble_assets.defs.resources import EnsembleResource

GROUP = "models"


@dg.asset(
    group_name=GROUP, kinds={"json"}, owners=OWNERS, code_version="1", deps=[consolidated_model],
    description="Decides whether the consolidated model (a new immutable version under artifacts/models) "
                "becomes the current model. It is compared with the current version on genes neither model "
                "trained on: splice F1 at each model's own out-of-fold threshold, splice AP and the largest "
                "per-class ECE; it is promoted unless one is worse beyond its promotion tolerance. No genes in "
                "common: refused unless promotion.allow_without_common_holdout. The first model is promoted. "
                "The decision and its reason are in the metadata and in artifacts/models/history.json.",
)
def model_promotion(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    d = stages.run_model_promotion(cfg, log=context.log.info)
    store = artifacts.model_store(cfg)
    c = d.comparison
    meta = {
        "decision": d.outcome, "reason": d.reason, "candidate": d.candidate,
        "previous_current": d.current or "none", "current": store.current_id() or "none",
        "common_unseen_genes": c.get("genes", "n/a"),
        "comparison_scope": c.get("scope", "no comparison (first model or already current)"),
        "store": dg.MetadataValue.path(str(store.root)),
    }
    if c.get("checks"):
        meta["candidate_vs_current"] = md_table(comparison_rows(c), ["metric", "candidate", "current", "worse by",
                                                                     "tolerance", "ok"])
    meta["versions"] = md_table([{**v, **{k: v["metrics"].get(k) for k in ("splice_threshold", "splice_f1",
                                                                          "splice_ap", "max_ece")}}
                                 for v in store.versions()],
                                ["id", "created", "status", "splice_threshold", "splice_f1", "splice_ap", "max_ece"])
    # the data version is the current version id: it changes only when the current model does,
    # which re-scores every scoring target (scored_positions' automation condition)
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(store.current_id() or "none"))
