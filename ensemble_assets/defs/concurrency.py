"""The ``instance_training`` concurrency pool: its limit follows the plan, threads follow the limit.

Every ``instance_model`` partition run holds one slot of the pool. When the plan materializes it
sets the pool's limit to the number of instances whose estimated peak memory fits the budget
(``core.capacity.training_capacity``); each instance run then trains with
``⌊cores / limit⌋`` XGBoost threads, so parallel instances × threads ≤ cores. With
``concurrency.pools.granularity: run`` (dagster.yaml) a run that finds no free slot waits in the
queue instead of starting a process. ``ensemble-assets train`` trains in-process, one partition
after another, so its runs (tagged ``ensemble_assets/sequential``) use every core.
"""

from __future__ import annotations

import dagster as dg

from ensemble_assets.core.planning.capacity import TrainingCapacity, threads_for, training_capacity

INSTANCE_TRAINING_POOL = "instance_training"
# set on the in-process runs of `ensemble-assets train`, which trains one partition after another
SEQUENTIAL_RUN_TAG = "ensemble_assets/sequential"


def apply_training_capacity(instance: dg.DagsterInstance, plan: dict) -> TrainingCapacity:
    """Set the pool's limit from the plan; return the capacity (for the plan's metadata)."""
    cap = training_capacity(plan)
    try:
        instance.event_log_storage.set_concurrency_slots(INSTANCE_TRAINING_POOL, cap.parallel_instances)
    except NotImplementedError:  # a storage without global concurrency: nothing to limit
        pass
    return cap


def pool_limit(instance: dg.DagsterInstance) -> int:
    """The pool's current limit: as set by the plan (or by an operator in the UI), else the
    instance's default pool limit, else 1."""
    try:
        slots = instance.event_log_storage.get_concurrency_info(INSTANCE_TRAINING_POOL).slot_count
    except NotImplementedError:  # storages without global concurrency
        slots = 0
    if slots and slots > 0:
        return int(slots)
    return int(instance.global_op_concurrency_default_limit or 1)


def instance_threads(instance: dg.DagsterInstance, configured: int = 0, sequential: bool = False) -> tuple[int, int]:
    """(XGBoost threads for one instance run, the number of instances that may run beside it).
    Runs from the queue share the cores with up to ``pool_limit`` others; a sequential in-process
    run (``ensemble-assets train``) trains alone and may use them all."""
    limit = 1 if sequential else pool_limit(instance)
    return threads_for(limit, configured), limit
