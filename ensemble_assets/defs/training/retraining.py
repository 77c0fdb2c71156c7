"""What a retraining has to do: is the plan current, and which partitions need training.

Shared by the schedule (weekly retraining) and the sensor that trains a new plan's partitions.
A partition needs training when it is missing (never materialized), failed (its latest run
failed), or stale (materialized by another ``instance_model`` code version); partitions with an
unchanged gene subset, settings and code are never retrained. Partitions in progress are left to
the run that is training them.
"""

from __future__ import annotations

from typing import Sequence

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.model.ensemble import model_problem
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.training.assets import INSTANCE_CODE_VERSION, instance_model

REASON_TAG = "ensemble_assets/reason"
TRIGGER_TAG = "ensemble_assets/trigger"


def partitions_to_train(instance: dg.DagsterInstance, keys: Sequence[str], force: bool = False,
                        cfg: PlatformConfig | None = None) -> list[str]:
    """Keys of the plan that are missing, failed, or materialized by another code version; with
    ``cfg``, also those whose model directory is gone or fails its checksums (a materialization
    record alone never makes a damaged model count as trained)."""
    if force:
        return list(keys)
    done = instance.get_materialized_partitions(instance_model.key)
    todo = []
    for k in keys:
        if k not in done or (cfg is not None and model_problem(cfg.instance_dir(k)) is not None):
            todo.append(k)
            continue
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=instance_model.key, asset_partitions=[k]), limit=1).records
        mat = recs[0].asset_materialization if recs else None
        if mat is None or (mat.tags or {}).get("dagster/code_version") != INSTANCE_CODE_VERSION:
            todo.append(k)
    return todo


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
