"""Wiring only: the code location's assets, checks, jobs, schedules, sensors, executor and resources,
loaded from the stage folders of ``defs/`` (dataset → planning → training → ensemble → models /
evaluation / explanation → scoring)."""

import dagster as dg

from ensemble_assets.defs import dataset, ensemble, evaluation, explanation, models, planning, scoring, training
from ensemble_assets.defs.executors import ensemble_executor
from ensemble_assets.defs.jobs import all_jobs
from ensemble_assets.defs.resources import EnsembleResource
from ensemble_assets.defs.scoring.sensors import scoring_sensors
from ensemble_assets.defs.training.schedules import all_schedules
from ensemble_assets.defs.training.sensors import all_sensors

STAGES = (dataset, planning, training, ensemble, models, evaluation, explanation, scoring)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([s.assets for s in STAGES]),
    asset_checks=dg.load_asset_checks_from_modules([s.checks for s in STAGES if hasattr(s, "checks")]),
    jobs=all_jobs,
    schedules=all_schedules,
    sensors=[*all_sensors, *scoring_sensors],
    executor=ensemble_executor,
    resources={"ensemble": EnsembleResource()},
)
