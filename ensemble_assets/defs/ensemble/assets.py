"""consolidated_model: every instance of the plan, one model with one interface."""


import dagster as dg

from ensemble_assets.core import artifacts, stages
from ensemble_assets.defs.automation import ALL_PARTITIONS_MATERIALIZED
from ensemble_assets.defs.metadata import OWNERS, md_table
from ensemble_assets.defs.resources import EnsembleResource
from ensemble_assets.defs.training.assets import instance_model


class ConsolidationConfig(dg.Config):
    allow_partial: bool = False   # consolidate although partitions are missing (coverage < 100%)


@dg.asset(
    group_name="ensemble", kinds={"xgboost", "json"}, owners=OWNERS, code_version="1", deps=[instance_model],
    automation_condition=ALL_PARTITIONS_MATERIALIZED,
    description="All instances of the current plan (of any instance kind: the calibrated probabilities are "
                "averaged), weighted by out-of-fold macro F1 and aligned by feature "
                "name, behind one predict_proba/predict interface. Refuses to build while gene coverage is "
                "below 100% (naming the missing partitions) unless allow_partial is set.",
)
def consolidated_model(context: dg.AssetExecutionContext, ensemble: EnsembleResource,
                       config: ConsolidationConfig) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    done = context.instance.get_materialized_partitions(instance_model.key)
    try:
        m = stages.run_consolidation(cfg, done, config.allow_partial, context.log.info)
    except stages.CoverageError as exc:
        raise dg.Failure(description=str(exc)) from exc
    return dg.MaterializeResult(metadata={
        "model_dir": dg.MetadataValue.path(str(artifacts.paths(cfg)["consolidated"])),
        "instances": len(m["members"]), "gene_coverage": dg.MetadataValue.float(m["gene_coverage"]),
        "missing_partitions": dg.MetadataValue.json(m["missing_partitions"]),
        "holdout_genes": len(m["holdout_genes"]), "features_union": m["n_features_union"],
        "weighting": m["weighting"],
        "model_types": dg.MetadataValue.json(m.get("model_types", [])),
        "members": md_table(m["members"], ["partition_key", "model_type", "oof_macro_f1", "weight"]),
        "merged_booster": m.get("merged_booster_note", ""),
    })
