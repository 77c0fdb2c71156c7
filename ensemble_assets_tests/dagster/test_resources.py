"""The settings as Dagster resource config: every setting of PlatformConfig is resource config with
its default from code, a run's config round-trips to the same settings, and the steps after the
plan use the plan's recorded settings."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import dagster as dg

from ensemble_assets.core.artifacts import planned_config
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.definitions import defs
from ensemble_assets.defs.resources import SETTING_GROUPS, EnsembleResource, run_config_for
from ensemble_assets_tests.conftest import make_config


def test_every_settings_group_is_resource_config_with_the_code_defaults():
    groups = {f.name for f in dataclasses.fields(PlatformConfig)} - {"data_root", "dataset"}
    assert set(SETTING_GROUPS) == groups
    assert EnsembleResource(data_root="/d").config() == PlatformConfig(data_root="/d")


def test_run_config_round_trips_every_setting(tmp_path):
    cfg = make_config(tmp_path, tmp_path / "data", genes_per_instance=7, holdout_fraction=0.2)
    cfg = replace(cfg, screening=replace(cfg.screening, exclude=("a", "b"), kmer_sizes=(3,)),
                  training=replace(cfg.training, instance_kind="sklearn:MLPClassifier",
                                   estimator_params={"hidden_layer_sizes": [8], "alpha": 0.01}))
    shown = run_config_for(cfg)["resources"]["ensemble"]["config"]
    json.dumps(shown)                                   # plain JSON: what the UI shows and sends
    assert EnsembleResource(**json.loads(json.dumps(shown))).config() == cfg
    assert dg.validate_run_config(defs.resolve_job_def("plan_job"), run_config_for(cfg))


def test_steps_after_the_plan_use_the_plans_settings(tmp_path):
    planned = make_config(tmp_path, tmp_path / "data", genes_per_instance=7)
    plan_file = planned.artifacts / "training_plan.json"
    plan_file.parent.mkdir(parents=True)
    plan_file.write_text(json.dumps({"config": {k: v for k, v in planned.to_dict().items() if k != "data_root"}}))
    default = EnsembleResource(data_root=str(tmp_path))
    assert default.config().plan.genes_per_instance != 7          # the run's own settings: code defaults
    assert default.planned_config() == planned                    # after the plan: the plan's settings
    assert planned_config(PlatformConfig(data_root=str(tmp_path / "elsewhere"))).plan.genes_per_instance != 7
