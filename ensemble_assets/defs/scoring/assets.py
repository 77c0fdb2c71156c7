"""scored_positions: each scoring target (a dynamic partition) streamed through the current model
version; re-scored when a new version is promoted (core/scoring/)."""


from typing import Any

import dagster as dg

from ensemble_assets.core import stages
from ensemble_assets.core.data.contract import DatasetError
from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.model.ensemble import ModelError
from ensemble_assets.core.scoring.target_metrics import HEADLINE
from ensemble_assets.core.scoring.targets import scored_paths
from ensemble_assets.defs.metadata import OWNERS, md_table
from ensemble_assets.defs.models.assets import model_promotion
from ensemble_assets.defs.partitions import scoring_targets
from ensemble_assets.defs.resources import EnsembleResource

GROUP = "scoring"

# A target is scored when its partition appears (a new target), when the current model version
# changes (model_promotion's data version is the current version id: a refused candidate leaves
# it, and the scores, unchanged) and when this asset's code version changes; never while
# model_promotion is missing or running, nor twice at once.
SCORE_NEW_TARGETS_AND_NEW_VERSIONS = (
    (
        dg.AutomationCondition.newly_missing()
        | dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
        .with_label("current model version changed")
        | dg.AutomationCondition.code_version_changed()
    ).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("new target, new current model version, or new code")


def _float(v: Any) -> Any:
    return dg.MetadataValue.float(float(v)) if isinstance(v, (int, float)) else "n/a"


@dg.asset(
    group_name=GROUP, kinds={"xgboost", "duckdb", "parquet"}, owners=OWNERS, code_version="1",
    partitions_def=scoring_targets, deps=[model_promotion], automation_condition=SCORE_NEW_TARGETS_AND_NEW_VERSIONS,
    description="Every row of a scoring target (a Parquet file, directory or dataset registered in the configuration "
                "or under <data root>/targets/) scored with the current model version: streamed in whole-gene "
                "batches reading only the columns the model needs; p_neither/p_donor/p_acceptor, the splice call at "
                "the model's stored operating point and its type, the base scores and the base call at 0.5, the "
                "model version. Labelled targets also get metrics on the genes the model did not train on. "
                "Re-scored when a new model version is promoted.",
)
def scored_positions(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.config()
    target = context.partition_key
    try:
        s = stages.run_scoring(cfg, target, context.log.info)
    except (DatasetError, ModelError, FileNotFoundError) as exc:   # bad input or no model: retrying cannot help
        raise dg.Failure(description=f"scoring target {target}: {exc}", allow_retries=False) from exc
    meta: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(scored_paths(cfg, target)["positions"])),
        "input": dg.MetadataValue.path(s["input"]), "input_fingerprint": s["input_fingerprint"],
        "model_version": s["model_version"], "model_dir": dg.MetadataValue.path(s["model_dir"]),
        "splice_threshold": _float(s["threshold"]), "threshold_source": s["threshold_source"],
        "dagster/row_count": s["rows"], "rows": s["rows"], "genes": s["genes"],
        "genes_assembled_across_files": s["scattered_genes"],
        **{f"calls_{c}": s["calls"][c] for c in CLASSES},
        **({f"base_calls_{c}": s["base_calls"][c] for c in CLASSES} if s["base_calls"] else {}),
        "rows_per_s": _float(s["rows_per_s"]), "seconds": _float(s["seconds"]),
        "peak_rss_MB": _float(round(s["peak_rss_bytes"] / 2**20, 1)),
        "columns_read": len(s["columns_read"]),
        "gene_context": ("not read by the model" if s["gene_context"] is None
                         else s["gene_context"]["warning"] or f"exact: {s['gene_context']['reason']}"),
    }
    m = s.get("metrics")
    if m is not None:
        meta.update({"metrics_scope": m["scope"], "metrics_note": m["note"], "metrics_genes": m["genes"],
                     "metrics_genes_excluded_trained_on": m["genes_excluded_trained_on"]})
        if m["table"]:
            meta["metrics"] = md_table(m["table"], HEADLINE)
            meta["metrics_path"] = dg.MetadataValue.path(str(scored_paths(cfg, target)["metrics"]))
            stored = next(r for r in m["table"] if r["model"] == "model" and r["splice_threshold"] == s["threshold"])
            meta["splice_f1_at_stored_threshold"] = _float(stored.get("splice_f1"))
            meta["base_splice_f1_at_0.5"] = _float(stored.get("base_splice_f1"))
    # lineage: the scored table is a function of the target's files and the model version
    return dg.MaterializeResult(metadata=meta,
                                data_version=dg.DataVersion(f"{s['model_version']}-{s['input_fingerprint']}"))
