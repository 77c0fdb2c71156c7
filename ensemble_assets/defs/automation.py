"""Declarative automation of the consolidated model and everything downstream of it.

``consolidated_model`` (and every asset below it that declares no condition of its own)
materializes by itself once every ``instance_model`` partition of the current plan is
materialized — and not before: a missing partition, one in progress, or one whose latest run
failed (even if an older materialization exists) holds it back. It then runs once per update of
its dependencies. The sensor that evaluates these conditions is on by default.
"""

from __future__ import annotations

import warnings

import dagster as dg

ALL_PARTITIONS_MATERIALIZED = (
    dg.AutomationCondition.eager()
    & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.execution_failed())
    .with_label("any_deps_failed")
).with_label("every partition of the plan materialized, none failed")

with warnings.catch_warnings():  # default_condition (for downstream assets without one) is a beta parameter
    warnings.simplefilter("ignore", dg.BetaWarning)
    ensemble_automation_sensor = dg.AutomationConditionSensorDefinition(
        "ensemble_automation_sensor",
        target=dg.AssetSelection.assets("consolidated_model").downstream(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        use_user_code_server=True,
        default_condition=ALL_PARTITIONS_MATERIALIZED,
        emit_backfills=False,
        description="Materializes consolidated_model, then everything downstream of it, once every "
                    "instance_model partition of the current plan is materialized (none missing, in "
                    "progress or failed).",
    )
