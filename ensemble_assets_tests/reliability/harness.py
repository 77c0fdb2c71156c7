"""Run the asset graph's steps in order on a data root, and check what a failure left behind.

``run_graph`` calls the same core functions the Dagster assets call (``core.pipeline``), in the
graph's order, and stops at the first step that raises: that step is where a bad input is
reported. ``assert_intact`` then shows that the failing step and everything after it left their
earlier artifacts byte-identical, and that every model on disk still loads and predicts as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.model.ensemble import load_model
from ensemble_assets_tests.conftest import make_config

from .faults import tree_digest

STEPS = ("gene_inventory", "feature_screening", "training_plan", "instance_model", "consolidated_model")
# the files each step writes, relative to <data_root>/artifacts
ARTIFACTS = {
    "gene_inventory": ("gene_inventory.parquet", "dataset_profile.json"),
    "feature_screening": ("feature_manifest.parquet",),
    "training_plan": ("training_plan.json", "training_plan.parquet", "training_plan_sizing.json"),
    "instance_model": ("instances/",),
    "consolidated_model": ("consolidated_model/", "models/"),
}


def case_config(root: Path, dataset: Path, plan: dict[str, Any] | None = None,
                training: dict[str, Any] | None = None) -> PlatformConfig:
    """The configuration of one test case: the suite's one config builder with this harness's defaults."""
    return make_config(root, dataset, training=training, **{"genes_per_instance": 40, **(plan or {})})


def run_graph(cfg: PlatformConfig, until: str = "consolidated_model") -> tuple[str | None, str | None]:
    """Run the steps up to ``until``; return (first failing step, its message) or (None, None)."""
    steps = {
        "gene_inventory": lambda: stages.run_inventory(cfg),
        "feature_screening": lambda: stages.run_screening(cfg),
        "training_plan": lambda: stages.run_plan(cfg),
        "instance_model": lambda: [stages.run_instance(cfg, s["key"]) for s in artifacts.load_plan(cfg)["subsets"]],
        "consolidated_model": lambda: stages.run_consolidation(cfg),
    }
    for name in STEPS:
        try:
            steps[name]()
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            return name, str(exc)
        if name == until:
            break
    return None, None


def artifacts_of(steps: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(p for s in steps for p in ARTIFACTS[s])


def downstream_of(step: str) -> tuple[str, ...]:
    return STEPS[STEPS.index(step):]


def model_predictions(root: Path, table) -> dict[str, np.ndarray]:
    """Predictions of the consolidated model and of every instance model under ``root``."""
    art = Path(root) / "artifacts"
    out = {"consolidated_model": load_model(art / "consolidated_model").predict_proba(table)}
    for d in sorted((art / "instances").iterdir()):
        if not d.name.startswith("."):
            out[f"instances/{d.name}"] = load_model(d).predict_proba(table)
    return out


def assert_intact(root: Path, before: dict[str, str], failed: str, rows, predictions: dict[str, np.ndarray]) -> None:
    """The failing step and every step after it left their artifacts exactly as they were, no
    temporary file is left, and every model still loads and predicts exactly as before."""
    art = Path(root) / "artifacts"
    kept = artifacts_of(downstream_of(failed))
    after = tree_digest(art)
    changed = sorted(p for p in set(before) | set(after)
                     if p.startswith(kept) and before.get(p) != after.get(p))
    assert not changed, f"{failed} failed but changed its or later artifacts: {changed}"
    leftovers = [p for p in after if any(part.startswith(".") for part in p.split("/"))]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    now = model_predictions(root, rows)
    assert now.keys() == predictions.keys()
    for name, p in predictions.items():
        assert np.array_equal(now[name], p), f"{name} predicts differently after the failure"


def dagster_home(path: Path) -> Path:
    """A fresh DAGSTER_HOME (default SQLite storage under it; telemetry off)."""
    path.mkdir(parents=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


def dataset_rows(dataset: Path, n: int = 300):
    return pq.read_table(sorted((Path(dataset) / "master").glob("*.parquet"))[0]).slice(0, n)
