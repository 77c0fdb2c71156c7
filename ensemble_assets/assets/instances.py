"""instance_model: one complete meta-model per gene subset (dynamic partition)."""


import dagster as dg

from ..core import pipeline
from ..partitions import gene_subsets
from ..resources import EnsembleResource
from ._meta import OWNERS, md_table, metric_meta
from .plan import training_plan

INSTANCE_CODE_VERSION = "1"


@dg.asset(
    group_name="training", kinds={"xgboost", "scikitlearn", "parquet"}, owners=OWNERS, code_version=INSTANCE_CODE_VERSION,
    partitions_def=gene_subsets, deps=[training_plan],
    description="A complete meta-model on one gene subset: gene-aware stratified CV, a model of the configured "
                "instance kind (three one-vs-rest XGBoost boosters by default; one multi:softprob booster; or a "
                "scikit-learn HistGradientBoosting / MLP classifier on a bounded gene sample) with early stopping "
                "on validation genes, per-class calibration fitted on out-of-fold predictions, out-of-fold "
                "metrics, learning curves and the final model. The kind is part of the partition key.",
)
def instance_model(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.config()
    key = context.partition_key
    m = pipeline.run_instance(cfg, key, context.log.info)
    folds = [{"fold": f["fold"], "genes": f["genes"], "rows": f["rows"], "macro_f1": f["macro_f1"],
              "splice_f1": f["splice_f1"], "base_splice_f1": f.get("base_splice_f1")} for f in m["metrics"]["folds"]]
    return dg.MaterializeResult(metadata={
        "gene_subset": key, "model_type": m["model_type"], "genes": m["n_genes"], "rows": m["n_rows"], "features": m["n_features"],
        "model_dir": dg.MetadataValue.path(str(cfg.instance_dir(key))),
        "settings_signature": m["settings_signature"],
        "metrics_scope": m["metrics_scope"],
        **metric_meta(m["metrics"]["oof"], "oof_"),
        ("trees" if m.get("tree_model", True) else "epochs"): dg.MetadataValue.json(m["n_estimators"]),
        "folds": md_table(folds, ["fold", "genes", "rows", "macro_f1", "splice_f1", "base_splice_f1"]),
        "train_seconds": dg.MetadataValue.float(m["timings"]["total_seconds"]),
        **({"xgboost_train_seconds": dg.MetadataValue.float(m["timings"]["xgboost_train_seconds"])}
           if "xgboost_train_seconds" in m["timings"] else {}),
        **({"fit_seconds": dg.MetadataValue.float(m["timings"]["fit_seconds"])} if "fit_seconds" in m["timings"] else {}),
        **({"training_sample": dg.MetadataValue.json(m["training_sample"])} if "training_sample" in m else {}),
        "peak_rss_MB": dg.MetadataValue.float(round(m["peak_rss_bytes"] / 2**20, 1)),
    })
