"""Scheduled retraining (weekly by default; ``ENSEMBLE_ASSETS_RETRAIN_CRON`` changes the cron).

Each tick either recomputes the plan or trains what the current plan lacks, never both at once
(a partition run must not read a plan that is being rewritten); it does nothing on an instance
that has never planned (there are no settings to retrain with yet) or while a plan is being made:

- the plan's inputs changed since the last ``training_plan`` materialization (the dataset's
  content, settings, plan code versions — see ``core.planning.freshness``), or the same dataset
  now lies elsewhere → one run of inventory, screening and plan; ``plan_partitions_sensor`` then
  trains the new plan's missing partitions (none, where only the path changed);
- otherwise → one run per partition that is missing, failed or stale; partitions with an
  unchanged gene subset, settings and code are not retrained. Consolidation and everything
  downstream follow by automation (``automation.py``).
"""

from __future__ import annotations

import os

import dagster as dg

from ensemble_assets.defs.jobs import plan_job, retraining_job
from ensemble_assets.defs.planning.assets import PLAN_ASSETS, plan_out_of_date, training_plan
from ensemble_assets.defs.resources import EnsembleResource, run_config_for
from ensemble_assets.defs.training.retraining import (
    REASON_TAG,
    TRIGGER_TAG,
    partition_run_requests,
    partitions_needing_training,
)

RETRAIN_CRON_ENV = "ENSEMBLE_ASSETS_RETRAIN_CRON"
DEFAULT_RETRAIN_CRON = "0 3 * * 1"   # Mondays 03:00


@dg.schedule(
    name="weekly_retraining", job=retraining_job,
    cron_schedule=os.environ.get(RETRAIN_CRON_ENV, DEFAULT_RETRAIN_CRON), execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Recompute the plan when its inputs changed; otherwise train only the instance_model "
                "partitions that are missing, failed or stale. Consolidation follows automatically.",
)
def weekly_retraining(context: dg.ScheduleEvaluationContext, ensemble: EnsembleResource):
    tick = context.scheduled_execution_time.isoformat()
    if context.instance.get_latest_materialization_event(training_plan.key) is None:
        return dg.SkipReason("no training_plan materialized on this instance yet: nothing to retrain "
                             "(train first: ensemble-assets train, or plan_job in the UI)")
    planning = _runs_making_the_plan(context.instance)
    if planning:
        return dg.SkipReason(f"a plan is being made (run {', '.join(planning)}): retraining waits for the next tick")
    cfg = ensemble.planned_config()   # retrain with the settings of the current plan
    stale = plan_out_of_date(cfg, context.instance)
    if stale is not None:
        why, details = stale
        context.log.info(f"{why} ({details}): recomputing inventory, screening, plan")
        return dg.RunRequest(run_key=f"plan:{tick}", asset_selection=[a.key for a in PLAN_ASSETS],
                             run_config=run_config_for(cfg), tags={REASON_TAG: why, TRIGGER_TAG: "weekly_retraining"})
    todo = partitions_needing_training(context.instance)
    if not todo:
        return dg.SkipReason("the plan is current and every instance_model partition is materialized "
                             "with its current gene subset, settings and code: nothing to retrain")
    context.log.info("training " + ", ".join(f"{k} ({r})" for k, r in todo))
    return partition_run_requests(todo, f"train:{tick}", "weekly_retraining", asset_selection=True)


def _runs_making_the_plan(instance: dg.DagsterInstance) -> list[str]:
    active = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED]))
    return [r.run_id for r in active if r.job_name == plan_job.name or training_plan.key in (r.asset_selection or ())]


all_schedules = [weekly_retraining]
