"""training_plan: sizing, holdout genes, overlapping gene subsets and their partitions."""


import dagster as dg

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.planning.freshness import plan_inputs_fingerprint
from ensemble_assets.core.planning.plan import describe_holdout
from ensemble_assets.defs.concurrency import INSTANCE_TRAINING_POOL, apply_training_capacity
from ensemble_assets.defs.dataset.assets import feature_screening, gene_inventory
from ensemble_assets.defs.metadata import OWNERS, md_table
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.resources import EnsembleResource

FINGERPRINT_METADATA = "inputs_fingerprint"
DATASET_METADATA = "dataset"


@dg.asset(
    group_name="plan", kinds={"python", "json"}, owners=OWNERS, code_version="2", deps=[feature_screening],
    description="Strategy (single model or overlapping gene subsets sized from available memory), the "
                "global holdout genes no instance trains on (random genes, or every gene of the "
                "holdout_chromosomes), and one content-addressed dynamic partition "
                "of instance_model per subset. Unchanged subsets keep their keys (and checkpoints); "
                "stale keys are removed.",
)
def training_plan(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.config()
    plan = stages.run_plan(cfg, context.log.info)
    keys = [s["key"] for s in plan["subsets"]]
    existing = set(context.instance.get_dynamic_partitions(gene_subsets.name))
    new = [k for k in keys if k not in existing]
    stale = sorted(existing - set(keys))
    if new:
        context.instance.add_dynamic_partitions(gene_subsets.name, new)
    for k in stale:
        context.instance.delete_dynamic_partition(gene_subsets.name, k)
    context.log.info(f"plan: {len(keys)} subset(s); {len(new)} new partition(s), {len(stale)} stale removed")
    capacity = apply_training_capacity(context.instance, plan)
    context.log.info(f"concurrency pool {INSTANCE_TRAINING_POOL}: {capacity.reason}")
    rows = [{"partition": s["key"], "genes": s["n_genes"], "rows": s["n_rows"],
             "matrix_MB": round(s["estimated_matrix_bytes"] / 2**20, 1),
             "peak_MB": round(s["estimated_peak_bytes"] / 2**20, 1)} for s in plan["subsets"]]
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(artifacts.paths(cfg)["plan"])),
        "strategy": plan["strategy"], "instances": len(keys), "genes": plan["n_genes"],
        "training_genes": plan["n_training_genes"], "holdout_genes": len(plan["holdout_genes"]),
        "holdout": describe_holdout(plan), "holdout_by": plan["holdout"]["by"],
        "holdout_chromosomes": dg.MetadataValue.json(plan["holdout"]["chromosomes"]),
        "genes_per_instance": plan["genes_per_instance"], "instance_overlap": plan["instance_overlap"],
        "coverage": dg.MetadataValue.float(plan["coverage"]),
        "memory_budget_GB": dg.MetadataValue.float(round(plan["memory_budget_bytes"] / 2**30, 2)),
        "sizing_note": plan["sizing_note"] or "none",
        "new_partitions": dg.MetadataValue.json(new), "removed_partitions": dg.MetadataValue.json(stale),
        "plan": md_table(rows, ["partition", "genes", "rows", "matrix_MB", "peak_MB"]),
        FINGERPRINT_METADATA: plan_fingerprint(cfg),
        DATASET_METADATA: dg.MetadataValue.path(plan["dataset"]),
        "parallel_instances": capacity.parallel_instances,
        "xgboost_threads_per_instance": capacity.threads_per_instance,
        "capacity": f"pool {INSTANCE_TRAINING_POOL}: {capacity.reason}",
    })


PLAN_ASSETS = (gene_inventory, feature_screening, training_plan)


def plan_fingerprint(cfg: PlatformConfig) -> str:
    """Fingerprint of the plan's inputs: the dataset's content, the settings (not where the data
    lies) and the plan assets' code versions (``core.planning.freshness``)."""
    code = {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in PLAN_ASSETS}
    return plan_inputs_fingerprint(cfg.dataset_path, {"config": cfg.settings_dict(), "code_versions": code})


def _latest_plan_metadata(instance: dg.DagsterInstance, name: str) -> str | None:
    ev = instance.get_latest_materialization_event(training_plan.key)
    mat = ev.asset_materialization if ev else None
    value = mat.metadata.get(name) if mat else None
    return getattr(value, "value", value)


def materialized_plan_fingerprint(instance: dg.DagsterInstance) -> str | None:
    """The fingerprint recorded by the latest training_plan materialization (None: never)."""
    return _latest_plan_metadata(instance, FINGERPRINT_METADATA)


def plan_out_of_date(cfg: PlatformConfig, instance: dg.DagsterInstance) -> tuple[str, str] | None:
    """(reason, details) when the plan must be recomputed, None when it is current. Reasons: "no
    plan yet"; "plan inputs changed" (``plan_fingerprint``); "dataset moved" — the same content
    now lies elsewhere, and the plan's runs read the path it recorded, so it is remade there with
    the same partition keys (nothing retrains)."""
    recorded = materialized_plan_fingerprint(instance)
    if recorded is None:
        return "no plan yet", "training_plan was never materialized"
    current = plan_fingerprint(cfg)
    if current != recorded:
        return "plan inputs changed", f"fingerprint {recorded} → {current}"
    dataset, here = _latest_plan_metadata(instance, DATASET_METADATA), str(cfg.dataset_path.resolve())
    if dataset is not None and dataset != here:
        return "dataset moved", f"from {dataset} to {here}; same content, so the same partition keys"
    return None
