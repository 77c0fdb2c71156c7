"""Shared fixtures: small generated datasets, fast settings, the suite's one config builder, its one
runner of the whole graph and the graph trained once per session. Nothing here needs ../shared,
except ``atha_chr1``, which skips (with the reason) where the real dataset is absent."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pytest

from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.planning.plan import PlanSettings
from ensemble_assets.core.training.settings import TrainingSettings
from ensemble_assets.datasets.demo import DemoSpec, write_demo_dataset

REPO = Path(__file__).resolve().parents[1]
ATHA = REPO.parent / "shared" / "data" / "atha_chr1"

TINY_SPEC = DemoSpec(n_genes=48, rows_per_gene=30, kmer_sizes=(2, 3), genes_per_file=16, seed=3)
# 60 files of 2 genes (~6k rows): DuckDB scans the files on several threads and combines their
# partial aggregates in whatever order the threads finish (the tests of reproducible keys)
PARALLEL_SPEC = DemoSpec(n_genes=120, rows_per_gene=30, kmer_sizes=(2,), genes_per_file=2, seed=5)
FAST_TRAINING = TrainingSettings(n_folds=3, n_estimators=25, early_stopping_rounds=5, nthread=1,
                                 max_depth=4, batch_rows=512)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """48 demo genes, ~1,400 rows, 2- and 3-mers (written once per session; read-only)."""
    out = tmp_path_factory.mktemp("tiny") / "demo"
    write_demo_dataset(out, TINY_SPEC)
    return out


@pytest.fixture(scope="session")
def parallel_dataset(tmp_path_factory) -> Path:
    """120 demo genes in 60 Parquet files (``PARALLEL_SPEC``; written once per session; read-only)."""
    out = tmp_path_factory.mktemp("parallel") / "demo"
    write_demo_dataset(out, PARALLEL_SPEC)
    return out


def make_config(root: Path, dataset: Path, genes_per_instance: int = 20, training: dict | None = None,
                **plan) -> PlatformConfig:
    """The suite's one config builder: small instances and fast training on ``dataset``."""
    return PlatformConfig(
        data_root=str(root), dataset=str(dataset),
        plan=replace(PlanSettings(), genes_per_instance=genes_per_instance, **plan),
        training=replace(FAST_TRAINING, **(training or {})),
    )


@pytest.fixture
def atha_chr1() -> Path:
    if not (ATHA / "master").is_dir():
        pytest.skip(f"real dataset not present at {ATHA} (it ships beside the repository in CI only)")
    return ATHA


def train_graph(cfg: PlatformConfig, instance: dg.DagsterInstance) -> list[str]:
    """The suite's one runner of the whole graph: inventory, screening and plan, every partition of
    the plan, then the consolidated model, each asserted to succeed. Returns the partition keys."""
    from ensemble_assets.defs.dataset.assets import feature_screening, gene_inventory
    from ensemble_assets.defs.ensemble.assets import consolidated_model
    from ensemble_assets.defs.partitions import gene_subsets
    from ensemble_assets.defs.planning.assets import training_plan
    from ensemble_assets.defs.training.assets import instance_model
    from ensemble_assets.runs import materialize

    ok, err = materialize(cfg, instance, [gene_inventory, feature_screening, training_plan], log=lambda m: None)
    assert ok, err
    keys = sorted(instance.get_dynamic_partitions(gene_subsets.name))
    for k in keys:
        ok, err = materialize(cfg, instance, [instance_model], partition_key=k, log=lambda m: None)
        assert ok, err
    ok, err = materialize(cfg, instance, [consolidated_model], log=lambda m: None)
    assert ok, err
    return keys


@dataclass
class TrainedGraph:
    cfg: PlatformConfig
    instance: dg.DagsterInstance
    keys: list[str]


@pytest.fixture(scope="session")
def trained_graph(tiny_dataset, tmp_path_factory) -> TrainedGraph:
    """The whole graph trained once per session on the tiny dataset (instances of 16 genes), with the
    evaluation assets materialized, in its own Dagster test instance. Tests only read it and add
    materializations; a test that damages or changes files copies the data root first."""
    from ensemble_assets.defs.evaluation.assets import evaluation_assets
    from ensemble_assets.runs import materialize

    cfg = make_config(tmp_path_factory.mktemp("trained_graph") / "root", tiny_dataset, genes_per_instance=16)
    with dg.instance_for_test() as instance:
        keys = train_graph(cfg, instance)
        ok, err = materialize(cfg, instance, evaluation_assets, log=lambda m: None)
        assert ok, err
        yield TrainedGraph(cfg, instance, keys)


# `make test` runs the suite on several workers (pytest-xdist). A module is one unit of work (its
# module fixtures are built once), the modules that share the session's trained graph are one unit
# (it is trained once), and the longest units start first: the live instance's flow alone is about
# a third of the suite (make test keeps this order: --no-loadscope-reorder).
TRAINED_GRAPH_MODULES = ("ensemble_assets_tests/dagster/test_evaluation_assets.py",
                         "ensemble_assets_tests/dagster/test_shap_assets.py",
                         "ensemble_assets_tests/reliability/test_bad_input.py")
LONGEST_FIRST = tuple(f"ensemble_assets_tests/{m}.py" for m in (   # by measured time, longest first
    "e2e/test_live_instance", "dagster/test_graph", "dagster/test_evaluation_assets", "dagster/test_shap_assets",
    "reliability/test_bad_input", "dagster/test_instance_kinds_graph", "reliability/test_crash_safety",
    "dagster/test_operations", "e2e/test_dask_executor"))


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)   # stable: the order within a module is kept


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:   # plain pytest, one process
    pass
else:
    class _ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "trained_graph" if module in TRAINED_GRAPH_MODULES else module

    def pytest_xdist_make_scheduler(config, log):
        return _ModuleScheduling(config, log)
