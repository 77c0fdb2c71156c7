"""scoring_targets_sensor: keeps the scoring_targets partitions equal to the registered targets
(configuration ``scoring.targets`` and ``<data root>/targets/*``); a new partition is then scored
by scored_positions' automation condition."""

from __future__ import annotations

import dagster as dg

from ensemble_assets.core.scoring.targets import discover_targets
from ensemble_assets.defs.partitions import scoring_targets
from ensemble_assets.defs.resources import EnsembleResource


@dg.sensor(
    name="scoring_targets_sensor", default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
    description="Registers one scoring_targets partition per scoring target (configuration scoring.targets, and each "
                "dataset directory or <name>.parquet under <data root>/targets/) and removes those of targets that are "
                "gone; scored_positions then scores the new ones.",
)
def scoring_targets_sensor(context: dg.SensorEvaluationContext, ensemble: EnsembleResource):
    reg = discover_targets(ensemble.config())
    for problem in reg.problems:
        context.log.warning(problem)
    existing = set(context.instance.get_dynamic_partitions(scoring_targets.name))
    new = sorted(set(reg.targets) - existing)
    gone = sorted(existing - set(reg.targets))
    if not new and not gone:
        return dg.SkipReason(f"{len(existing)} scoring target(s), none added or removed")
    context.log.info(f"scoring targets: added {', '.join(new) or 'none'}; removed {', '.join(gone) or 'none'}")
    requests = ([scoring_targets.build_add_request(new)] if new else []) + (
        [scoring_targets.build_delete_request(gone)] if gone else [])
    return dg.SensorResult(dynamic_partitions_requests=requests)


scoring_sensors = [scoring_targets_sensor]
