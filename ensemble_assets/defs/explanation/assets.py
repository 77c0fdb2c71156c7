"""instance_shap and ensemble_shap: SHAP importances of every instance (exact TreeSHAP for tree
kinds, bounded permutation SHAP for the others) and of the consolidated model, with tables, the
legacy CSV and plots shown in the UI."""


from typing import Any

import dagster as dg

from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.explanation.explainers import AdditivityError
from ensemble_assets.core.explanation.settings import ShapSettings
from ensemble_assets.core.model.ensemble import ModelError
from ensemble_assets.core.stages import run_ensemble_shap, run_instance_shap, shap_paths
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.metadata import OWNERS, md_image, md_table
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.resources import EnsembleResource
from ensemble_assets.defs.training.assets import instance_model

SHAP_CODE_VERSION = "1"


class ShapConfig(dg.Config):
    sample_rows: int = 2000     # out-of-fold rows explained per instance (seeded sample)
    seed: int = 42
    chunk_rows: int = 500       # rows per TreeSHAP call
    agnostic_rows: int = 100    # non-tree kinds: rows explained by permutation SHAP (of the sample)
    agnostic_background: int = 10   # non-tree kinds: background rows
    agnostic_permutations: int = 1  # non-tree kinds: random feature orders (and reverses) per row
    top_n: int = 20             # features in tables and plots
    nthread: int = 0            # 0: the training setting (0 there: all cores)
    recompute: bool = False     # ignore per-instance results computed for the same boosters and settings


def shap_settings(config: ShapConfig, training_threads: int = 0) -> ShapSettings:
    return ShapSettings(sample_rows=config.sample_rows, seed=config.seed, chunk_rows=config.chunk_rows,
                        top_n=config.top_n, beeswarm_features=max(config.top_n, 20),
                        nthread=config.nthread or training_threads, agnostic_rows=config.agnostic_rows,
                        agnostic_background=config.agnostic_background,
                        agnostic_permutations=config.agnostic_permutations)


def _top_rows(top: dict[str, list[dict[str, Any]]], n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"rank": i + 1}
        for scope in top:
            if i < len(top[scope]):
                row[scope] = f"{top[scope][i]['feature']} ({top[scope][i]['importance']:.3f})"
        rows.append(row)
    return rows


@dg.asset(
    group_name="explanation", kinds={"xgboost", "parquet"}, owners=OWNERS, code_version=SHAP_CODE_VERSION,
    partitions_def=gene_subsets, deps=[instance_model],
    description="SHAP of the instance's three class outputs on a seeded sample of its out-of-fold rows: exact "
                "TreeSHAP for tree kinds (XGBoost pred_contribs; shap's tree algorithm for HistGradientBoosting), "
                "bounded permutation SHAP for the others (MLP); mean |SHAP| per feature and class, additivity "
                "verified on every explained row (fails above 1e-3). Reused by ensemble_shap while the model "
                "files are unchanged.",
)
def instance_shap(context: dg.AssetExecutionContext, ensemble: EnsembleResource,
                  config: ShapConfig) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    key = context.partition_key
    settings = shap_settings(config, cfg.training.nthread)
    try:
        r = run_instance_shap(cfg, key, settings, config.recompute, context.log.info)
    except AdditivityError as exc:
        raise dg.Failure(description=str(exc)) from exc
    s = r.summary
    top = {cname: [{"feature": r.features[j], "importance": float(r.mean_abs[c, j])}
                   for j in (-r.mean_abs[c]).argsort(kind="stable")[:config.top_n]]
           for c, cname in enumerate(CLASSES)}
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(shap_paths(cfg)["instances"] / key)),
        "rows": s["rows"], "genes": s["genes"], "features": s["n_features"],
        "sample_class_counts": dg.MetadataValue.json(s["sample_class_counts"]),
        "model_type": s["model_type"], "model_size": dg.MetadataValue.json(s["model_size"]),
        "max_additivity_error": dg.MetadataValue.float(float(s["max_additivity_error"])),
        "additivity_error": dg.MetadataValue.json(s["additivity_error"]),
        "shap_seconds": dg.MetadataValue.json(s["shap_seconds"]),
        "method": s["method"], "scale": s["scale"], "sample_scope": s["sample_scope"],
        "top_features": md_table(_top_rows(top, config.top_n), ["rank", *CLASSES]),
    })


@dg.asset(
    group_name="explanation", kinds={"xgboost", "parquet"}, owners=OWNERS, code_version=SHAP_CODE_VERSION,
    deps=[consolidated_model, instance_shap],
    description="Comprehensive SHAP of the consolidated model: every instance × 3 class outputs (exact TreeSHAP "
                "for tree kinds, bounded permutation SHAP for the others, the method recorded per instance), "
                "weighted by the consolidated model's normalised instance weights; per-class, ensemble and "
                "per-instance importances, k-mer vs non-k-mer breakdown, rank agreement between instances, "
                "shap_analysis_summary.json, the MetaSpliceAI legacy CSV and plots.",
)
def ensemble_shap(context: dg.AssetExecutionContext, ensemble: EnsembleResource,
                  config: ShapConfig) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    settings = shap_settings(config, cfg.training.nthread)
    try:
        s = run_ensemble_shap(cfg, settings, config.recompute, context.log.info)
    except (AdditivityError, FileNotFoundError, ModelError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    out = shap_paths(cfg)["ensemble"]
    weights = [{"partition_key": k, "weight": w, "rows": s["rows_per_instance"][k],
                "method": s["instance_methods"][k].split(" (")[0],
                "max_additivity_error": f"{max(s['additivity']['per_instance'][k].values()):.2e}"}
               for k, w in s["instance_weights"].items()]
    agree = [{"scope": scope, **v} for scope, v in s["instance_agreement"].items()]
    fta = s["feature_type_analysis"]
    groups = [{"group": g, "features": v["n_features"], "share": v["share_mean"]} for g, v in fta["groups"].items()]
    plots = {f"plot_{name}": md_image(out / rel, name.replace("_", " ")) for name, rel in s["plots"].items()}
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)),
        "summary": dg.MetadataValue.path(str(out / "shap_analysis_summary.json")),
        "legacy_csv": dg.MetadataValue.path(str(out / "shap_importance_incremental.csv")),
        "instances": s["n_instances"], "models": s["n_models"], "features": s["n_features"],
        "instances_computed": dg.MetadataValue.json(s["instances_computed"]),
        "instances_reused": dg.MetadataValue.json(s["instances_reused"]),
        "best_instance": s["best_instance"],
        "max_additivity_error": dg.MetadataValue.float(float(s["additivity"]["max_error"])),
        "kmer_share": dg.MetadataValue.json(fta["kmer_share"]),
        "weights": md_table(weights, ["partition_key", "weight", "method", "rows", "max_additivity_error"]),
        "top_features": md_table(_top_rows(s["top_features"], settings.top_n), ["rank", "ensemble", *CLASSES]),
        "feature_groups": md_table(groups, ["group", "features", "share"]),
        "instance_agreement": md_table(agree, ["scope", "spearman_mean", "spearman_min",
                                               f"spearman_top_{settings.top_n}_mean",
                                               f"top_{settings.top_n}_overlap_mean"]),
        "seconds": dg.MetadataValue.float(float(s["timings"]["total_seconds"])),
        "method": s["method"], "instance_methods": dg.MetadataValue.json(s["instance_methods"]),
        "scale": dg.MetadataValue.json(s["scale"]),
        "aggregation": s["aggregation"], "sample_scope": s["sample_scope"],
        **plots,
    })
