"""Which partitions need training, and in-process materialization against a Dagster instance.

Used by the CLI (and by schedules/sensors): the materialization state is the checkpoint, so a
partition is trained only when it has no successful materialization with the current code version.
"""

from __future__ import annotations

from typing import Callable, Sequence

import dagster as dg

from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.definitions import defs
from ensemble_assets.defs.concurrency import SEQUENTIAL_RUN_TAG
from ensemble_assets.defs.resources import RESOURCE_KEY, EnsembleResource, run_config_for


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    msgs = []
    for ev in result.all_events:
        if ev.is_step_failure and ev.step_failure_data and ev.step_failure_data.error:
            err = ev.step_failure_data.error
            while err.cause is not None and err.message.startswith("dagster._core.errors"):
                err = err.cause
            desc = (ev.step_failure_data.user_failure_data.description
                    if ev.step_failure_data.user_failure_data else None)
            msgs.append(f"{ev.step_key}: {desc or err.message.strip()}")
    for ev in result.all_events:  # a failed blocking check says why (offending genes / numbers)
        data = ev.event_specific_data if ev.event_type_value == "ASSET_CHECK_EVALUATION" else None
        if data is not None and not data.passed and data.severity == dg.AssetCheckSeverity.ERROR:
            msgs.append(f"check {data.check_name} failed: {data.description or ''}")
    return msgs


def materialize(cfg: PlatformConfig, instance: dg.DagsterInstance, selection: Sequence[dg.AssetsDefinition],
                partition_key: str | None = None, run_config: dict | None = None,
                log: Callable[[str], None] = print) -> tuple[bool, list[str]]:
    assets = list(defs.assets or [])
    checks = list(defs.asset_checks or [])
    result = dg.materialize(
        [*assets, *checks], instance=instance, partition_key=partition_key, raise_on_error=False,
        resources={RESOURCE_KEY: EnsembleResource()},
        selection=dg.AssetSelection.assets(*selection) | dg.AssetSelection.checks_for_assets(*selection),
        # the settings travel as run config, so the run's page in the UI shows them
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}, **run_config_for(cfg),
                    **(run_config or {})},
        tags={SEQUENTIAL_RUN_TAG: "true"},  # one partition at a time: each may use every core
    )
    return result.success, failure_messages(result)
