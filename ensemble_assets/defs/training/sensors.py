"""Sensors (all on by default): train a new plan's partitions, report failed partitions, and the
automation sensor that consolidates (``automation.py``)."""

from __future__ import annotations

from typing import Sequence

import dagster as dg

from ensemble_assets.defs.automation import ensemble_automation_sensor
from ensemble_assets.defs.jobs import instance_training_job
from ensemble_assets.defs.planning.assets import training_plan
from ensemble_assets.defs.training.retraining import partition_run_requests, partitions_needing_training


@dg.asset_sensor(
    asset_key=training_plan.key, job=instance_training_job, name="plan_partitions_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=10,
    description="When training_plan materializes (its partitions are registered by the plan itself), "
                "request one run per instance_model partition that is missing, failed or stale.",
)
def plan_partitions_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    todo = partitions_needing_training(context.instance)
    if not todo:
        return dg.SkipReason("every partition of the new plan is already materialized with current code")
    context.log.info(f"plan of run {asset_event.run_id}: training " + ", ".join(f"{k} ({r})" for k, r in todo))
    return partition_run_requests(todo, f"plan-{asset_event.run_id}", "plan_partitions_sensor")


def _root_cause(error) -> str:
    """The user's exception rather than Dagster's wrappers around it."""
    while error is not None and error.cause is not None and error.message.startswith("dagster._core.errors"):
        error = error.cause
    return error.message.strip() if error is not None else ""


def describe_run_failure(run: dg.DagsterRun, step_failures: Sequence[dg.DagsterEvent],
                         failure_event: dg.DagsterEvent | None = None) -> str:
    """One line: which partition (or run) failed, and why."""
    partition = run.tags.get("dagster/partition")
    what = f"instance_model partition {partition}" if partition else f"run of {run.job_name}"
    reasons = []
    for ev in step_failures:
        data = ev.step_failure_data
        desc = data.user_failure_data.description if data and data.user_failure_data else None
        reasons.append(f"{ev.step_key}: {desc or _root_cause(data.error if data else None)}")
    if not reasons and failure_event is not None:
        reasons.append(failure_event.message or "run failed before any step (see the run's logs)")
    return f"{what} failed (run {run.run_id[:8]}, job {run.job_name}): " + "; ".join(reasons)


@dg.run_failure_sensor(
    name="partition_failure_sensor", default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=10,
    description="Logs which instance_model partition (or which run) failed and why; backfill the failed "
                "partitions (UI: partition status filter → Failed → Materialize, or "
                "`ensemble-assets backfill --failed`) once the cause is fixed.",
)
def partition_failure_sensor(context: dg.RunFailureSensorContext):
    context.log.error(describe_run_failure(context.dagster_run, context.get_step_failure_events(),
                                           context.failure_event))


all_sensors = [plan_partitions_sensor, partition_failure_sensor, ensemble_automation_sensor]
