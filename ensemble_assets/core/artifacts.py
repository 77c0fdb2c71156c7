"""Where the platform's artifacts live under the data root, and how to read them back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.data.screening import feature_columns
from ensemble_assets.core.io import read_json
from ensemble_assets.core.model.versions import ModelStore


def paths(cfg: PlatformConfig) -> dict[str, Path]:
    a = cfg.artifacts
    return {
        "inventory": a / "gene_inventory.parquet", "profile": a / "dataset_profile.json",
        "manifest": a / "feature_manifest.parquet", "plan": a / "training_plan.json",
        "plan_table": a / "training_plan.parquet", "consolidated": a / "consolidated_model",
        "plan_sizing": a / "training_plan_sizing.json", "models": a / "models",
    }


def model_store(cfg: PlatformConfig) -> ModelStore:
    """The model versions (``<artifacts>/models``) with the configured retention."""
    return ModelStore(paths(cfg)["models"], keep=cfg.promotion.keep_versions)


def load_features(cfg: PlatformConfig) -> tuple[list[str], dict[str, float]]:
    return feature_columns(pq.read_table(paths(cfg)["manifest"]))


def load_plan(cfg: PlatformConfig) -> dict[str, Any]:
    """The plan, with the sizing facts it was made under (when they were recorded)."""
    p = paths(cfg)["plan"]
    if not p.is_file():
        raise FileNotFoundError(f"no training plan at {p}: materialize training_plan first")
    plan = read_json(p)
    sizing = paths(cfg)["plan_sizing"]
    if sizing.is_file():
        plan = {**read_json(sizing), **plan}
    return plan


def instance_manifest(cfg: PlatformConfig, key: str) -> dict[str, Any] | None:
    f = cfg.instance_dir(key) / "manifest.json"
    return read_json(f) if f.is_file() else None


def planned_config(cfg: PlatformConfig) -> PlatformConfig:
    """The settings the current plan was made with (``training_plan.json`` records them), at
    ``cfg``'s data root; ``cfg`` itself while no plan records any. Every step after the plan uses
    these, so a partition launched from the UI trains exactly what the plan planned."""
    p = paths(cfg)["plan"]
    recorded = read_json(p).get("config") if p.is_file() else None
    if not recorded:
        return cfg
    return replace(PlatformConfig.from_dict(recorded), data_root=cfg.data_root)
