"""Shared fixtures: small generated datasets and fast settings. Nothing here needs ../shared,
except ``atha_chr1``, which skips (with the reason) where the real dataset is absent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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


def make_config(root: Path, dataset: Path, genes_per_instance: int = 20, **plan) -> PlatformConfig:
    cfg = PlatformConfig(
        data_root=str(root), dataset=str(dataset),
        plan=replace(PlanSettings(), genes_per_instance=genes_per_instance, **plan),
        training=FAST_TRAINING,
    )
    cfg.save()
    return cfg


@pytest.fixture
def atha_chr1() -> Path:
    if not (ATHA / "master").is_dir():
        pytest.skip(f"real dataset not present at {ATHA} (it ships beside the repository in CI only)")
    return ATHA
