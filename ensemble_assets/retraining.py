"""What a retraining has to do: is the plan current, and which partitions need training.

Shared by the schedule (weekly retraining) and the sensor that trains a new plan's partitions.
A partition needs training when it is missing (never materialized), failed (its latest run
failed), or stale (materialized by another ``instance_model`` code version); partitions with an
unchanged gene subset, settings and code are never retrained. Partitions in progress are left to
the run that is training them.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from .assets import feature_screening, gene_inventory, instance_model, training_plan
from .core.config import PlatformConfig
from .core.freshness import plan_inputs_fingerprint
from .orchestration import partitions_to_train
from .partitions import gene_subsets

PLAN_ASSETS = (gene_inventory, feature_screening, training_plan)
FINGERPRINT_METADATA = "inputs_fingerprint"
REASON_TAG = "ensemble_assets/reason"
TRIGGER_TAG = "ensemble_assets/trigger"


def plan_fingerprint(cfg: PlatformConfig) -> str:
    """Fingerprint of the plan's inputs: dataset files, settings and the plan assets' code versions."""
    code = {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in PLAN_ASSETS}
    return plan_inputs_fingerprint(cfg.dataset_path, {"config": cfg.to_dict(), "code_versions": code})


def materialized_plan_fingerprint(instance: dg.DagsterInstance) -> str | None:
    """The fingerprint recorded by the latest training_plan materialization (None: never)."""
    ev = instance.get_latest_materialization_event(training_plan.key)
    mat = ev.asset_materialization if ev else None
    value = mat.metadata.get(FINGERPRINT_METADATA) if mat else None
    return getattr(value, "value", value)


def partitions_needing_training(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    """(partition key, reason) for every registered partition that is missing, failed or stale,
    in plan order; partitions in progress are excluded."""
    keys = list(instance.get_dynamic_partitions(gene_subsets.name))
    if not keys:
        return []
    todo = set(partitions_to_train(instance, keys))
    status = instance.get_status_by_partition(instance_model.key, keys, gene_subsets) or {}
    done = instance.get_materialized_partitions(instance_model.key)
    out = []
    for k in keys:
        s = status.get(k)
        if s == AssetPartitionStatus.IN_PROGRESS:
            continue
        if s == AssetPartitionStatus.FAILED:
            out.append((k, "failed"))
        elif k in todo:
            out.append((k, "missing" if k not in done else "stale code version"))
    return out


def partition_run_requests(todo: list[tuple[str, str]], run_key_prefix: str, trigger: str,
                           asset_selection: bool = False) -> list[dg.RunRequest]:
    return [dg.RunRequest(run_key=f"{run_key_prefix}:{k}", partition_key=k,
                          asset_selection=[instance_model.key] if asset_selection else None,
                          tags={REASON_TAG: reason, TRIGGER_TAG: trigger})
            for k, reason in todo]
