"""instance_model: one complete meta-model per gene subset (dynamic partition)."""


from dataclasses import replace

import dagster as dg

from ensemble_assets.core import stages
from ensemble_assets.core.data.contract import DatasetError
from ensemble_assets.core.planning.plan import PlanError
from ensemble_assets.defs.concurrency import INSTANCE_TRAINING_POOL, SEQUENTIAL_RUN_TAG, instance_threads
from ensemble_assets.defs.metadata import OWNERS, md_table, metric_meta
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.planning.assets import training_plan
from ensemble_assets.defs.resources import EnsembleResource

INSTANCE_CODE_VERSION = "1"
# transient failures (a killed worker process, a file system hiccup) are retried; bad input is not:
# it raises dg.Failure(allow_retries=False) and waits for a fix and a backfill of failed partitions
INSTANCE_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=20, backoff=dg.Backoff.EXPONENTIAL,
                                       jitter=dg.Jitter.PLUS_MINUS)


@dg.asset(
    group_name="training", kinds={"xgboost", "scikitlearn", "parquet"}, owners=OWNERS, code_version=INSTANCE_CODE_VERSION,
    partitions_def=gene_subsets, deps=[training_plan],
    pool=INSTANCE_TRAINING_POOL, retry_policy=INSTANCE_RETRY_POLICY,
    description="A complete meta-model on one gene subset: gene-aware stratified CV, a model of the configured "
                "instance kind (three one-vs-rest XGBoost boosters by default; one multi:softprob booster; or a "
                "scikit-learn HistGradientBoosting / MLP classifier on a bounded gene sample) with early stopping "
                "on validation genes, per-class calibration fitted on out-of-fold predictions, out-of-fold "
                "metrics, learning curves and the final model. The kind is part of the partition key.",
)
def instance_model(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    key = context.partition_key
    threads, limit = instance_threads(context.instance, cfg.training.nthread,
                                      sequential=context.run.tags.get(SEQUENTIAL_RUN_TAG) == "true")
    cfg = replace(cfg, training=replace(cfg.training, nthread=threads))
    context.log.info(f"pool {INSTANCE_TRAINING_POOL}: up to {limit} parallel instance(s); "
                     f"training with {threads} XGBoost thread(s)")
    try:
        m = stages.run_instance(cfg, key, context.log.info)
    except (DatasetError, PlanError) as exc:  # bad input or plan: retrying cannot help
        raise dg.Failure(description=f"partition {key}: {exc}", allow_retries=False) from exc
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
        "xgboost_threads": threads,
    })
