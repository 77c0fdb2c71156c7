"""Wiring only: assets, checks, jobs, schedules, sensors, executor and resources of the code location."""

import dagster as dg

from .assets import consolidated_model, feature_screening, gene_inventory, instance_model, training_plan
from .assets import evaluation_assets
from .assets.shap import ensemble_shap, instance_shap
from .checks import all_checks
from .executors import ensemble_executor
from .jobs import all_jobs
from .resources import EnsembleResource
from .schedules import all_schedules
from .sensors import all_sensors

all_assets = [gene_inventory, feature_screening, training_plan, instance_model, consolidated_model]
all_assets += evaluation_assets
all_assets += [instance_shap, ensemble_shap]

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=all_jobs,
    schedules=all_schedules,
    sensors=all_sensors,
    executor=ensemble_executor,
    resources={"ensemble": EnsembleResource()},
)
