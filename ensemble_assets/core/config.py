"""The platform configuration: where the data is and how to screen, plan and train.

The defaults are in code (the settings dataclasses); a Dagster run gets its settings as resource
config (``defs/resources.py``), ``ensemble-assets train`` from its flags. The plan records the
settings it was made with, and every later step uses those (``artifacts.planned_config``).
Without settings the defaults train on the demo dataset under the data root.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ensemble_assets.core.data.screening import ScreeningSettings
from ensemble_assets.core.evaluation.holdout import EvaluationSettings
from ensemble_assets.core.io import safe_component
from ensemble_assets.core.model.promotion import PromotionSettings
from ensemble_assets.core.planning.plan import PlanSettings
from ensemble_assets.core.scoring.settings import ScoringSettings
from ensemble_assets.core.training.settings import TrainingSettings

DATA_ROOT_ENV = "ENSEMBLE_ASSETS_DATA"
DEFAULT_DATA_ROOT = "data"   # relative to the directory a command runs in
# where the data lies, not what it is: never part of a fingerprint or a partition key
LOCATION_FIELDS = ("data_root", "dataset")
# a demo-sized default: the demo's ~240 genes then make several instances
DEMO_GENES_PER_INSTANCE = 100


def default_data_root() -> Path:
    """``$ENSEMBLE_ASSETS_DATA``, else ``./data`` in the current directory (absolute)."""
    return Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).resolve()


@dataclass(frozen=True)
class PlatformConfig:
    data_root: str = field(default_factory=lambda: str(default_data_root()))
    dataset: str = ""     # empty → the demo dataset under <data_root>/demo (generated if absent)
    screening: ScreeningSettings = ScreeningSettings()
    plan: PlanSettings = PlanSettings(genes_per_instance=DEMO_GENES_PER_INSTANCE)
    training: TrainingSettings = TrainingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    promotion: PromotionSettings = PromotionSettings()
    scoring: ScoringSettings = ScoringSettings()

    @property
    def root(self) -> Path:
        return Path(self.data_root)

    @property
    def demo_dir(self) -> Path:
        return self.root / "demo"

    @property
    def dataset_path(self) -> Path:
        return Path(self.dataset) if self.dataset else self.demo_dir

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def instance_dir(self, key: str) -> Path:
        return self.artifacts / "instances" / safe_component(key)

    def validate(self) -> "PlatformConfig":
        """Refuse settings that cannot make a plan or train (ValueError naming the setting), before
        anything is read or written."""
        self.plan.validate()
        self.training.validate()
        self.promotion.validate()
        self.scoring.validate()
        if not 0 < self.screening.correlation_threshold <= 1:
            raise ValueError(f"correlation_threshold={self.screening.correlation_threshold} is outside (0, 1]")
        if self.screening.sample_genes < 1:
            raise ValueError(f"screening sample_genes={self.screening.sample_genes} must be at least 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["training"]["estimator_params"] = dict(self.training.estimator_params)  # a JSON object
        return d

    def settings_dict(self) -> dict[str, Any]:
        """``to_dict`` without where the data lies (``LOCATION_FIELDS``): what a plan made from
        these settings depends on, the same after the data root or the dataset moves."""
        return {k: v for k, v in self.to_dict().items() if k not in LOCATION_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PlatformConfig":
        def build(klass, values):
            names = {f.name for f in fields(klass)}
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"unknown {klass.__name__} setting(s): {', '.join(sorted(unknown))}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            return klass(**values)

        d = dict(d)
        return cls(
            data_root=d.get("data_root", str(default_data_root())), dataset=d.get("dataset", ""),
            screening=build(ScreeningSettings, d.get("screening", {})),
            plan=build(PlanSettings, d.get("plan", {})),
            training=build(TrainingSettings, d.get("training", {})),
            evaluation=build(EvaluationSettings, d.get("evaluation", {})),
            promotion=build(PromotionSettings, d.get("promotion", {})),
            scoring=build(ScoringSettings, d.get("scoring", {})),
        )
