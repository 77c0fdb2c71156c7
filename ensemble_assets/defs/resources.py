"""The platform's settings as a Dagster resource: every setting is resource config with its default
in code (the settings dataclasses of core/), shown in the UI's launchpad and in each run's config,
overridable per run. ``ensemble-assets train`` passes its settings the same way, so its runs show
them too. The assets downstream of the plan use the settings the plan recorded
(``artifacts.planned_config``): an instance launched from the UI trains exactly what the plan
planned, whoever made the plan."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import replace
from typing import Any, Union

import dagster as dg
from pydantic import Field, create_model

from ensemble_assets.core.artifacts import planned_config
from ensemble_assets.core.config import DATA_ROOT_ENV, PlatformConfig, default_data_root

RESOURCE_KEY = "ensemble"
SETTING_GROUPS = ("screening", "plan", "training", "evaluation", "promotion", "scoring")


def _config_type(hint: Any) -> Any:
    """The config type of a settings field: tuples become lists, ``(name, value)`` pairs a map."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return typing.Optional[_config_type(inner[0])]
    if origin is tuple:
        item = args[0]
        if typing.get_origin(item) is tuple:          # (name, value) pairs, e.g. estimator_params
            return dict[str, Any]
        return list[_config_type(item)]
    return hint


def _config_value(value: Any) -> Any:
    """A settings value as plain JSON-able config: tuples as lists (pairs as a map), recursively."""
    if isinstance(value, dict):
        return {k: _config_value(v) for k, v in value.items()}
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            return {k: _config_value(v) for k, v in value}
        return [_config_value(v) for v in value]
    return value


def _settings_config(group: str) -> type[dg.Config]:
    """A Config class mirroring one settings dataclass, its defaults those of ``PlatformConfig()``."""
    default = getattr(PlatformConfig(), group)
    hints = typing.get_type_hints(type(default))
    fields = {}
    for f in dataclasses.fields(default):
        value = _config_value(getattr(default, f.name))
        if group == "training" and f.name == "estimator_params":
            value = dict(value or {})
        fields[f.name] = (_config_type(hints[f.name]), Field(default=value))
    return create_model(f"{type(default).__name__}Config", __base__=dg.Config, **fields)


ScreeningConfig = _settings_config("screening")
PlanConfig = _settings_config("plan")
TrainingConfig = _settings_config("training")
EvaluationConfig = _settings_config("evaluation")
PromotionConfig = _settings_config("promotion")
ScoringConfig = _settings_config("scoring")


class EnsembleResource(dg.ConfigurableResource):
    """Where the data lives and how to screen, plan, train and evaluate. DuckDB connections are
    in-memory, one per step."""

    data_root: str = Field(default="", description=f"inputs and artifacts; empty: ${DATA_ROOT_ENV}, else ./data")
    dataset: str = Field(default="", description="Parquet dataset directory; empty: the demo dataset (generated)")
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)

    def config(self) -> PlatformConfig:
        """The settings of this run (the plan chain: inventory, screening, plan)."""
        return PlatformConfig.from_dict({
            "data_root": self.data_root or str(default_data_root()), "dataset": self.dataset,
            **{g: getattr(self, g).model_dump() for g in SETTING_GROUPS}})

    def planned_config(self) -> PlatformConfig:
        """The settings the current plan was made with (every step after the plan); where the data
        lies (``dataset``) is this run's when it names one: a moved dataset keeps its plan."""
        planned = planned_config(self.config())
        return replace(planned, dataset=self.dataset) if self.dataset else planned

    @staticmethod
    def values_of(cfg: PlatformConfig) -> dict[str, Any]:
        """``cfg`` as this resource's config (the run config the CLI passes)."""
        d = cfg.to_dict()
        return {"data_root": d["data_root"], "dataset": d["dataset"],
                **{g: {k: _config_value(v) for k, v in d[g].items()} for g in SETTING_GROUPS}}

    @classmethod
    def for_config(cls, cfg: PlatformConfig) -> "EnsembleResource":
        return cls(**cls.values_of(cfg))


def run_config_for(cfg: PlatformConfig) -> dict[str, Any]:
    """The run config that gives a run ``cfg``'s settings (shown on the run's page in the UI)."""
    return {"resources": {RESOURCE_KEY: {"config": EnsembleResource.values_of(cfg)}}}
