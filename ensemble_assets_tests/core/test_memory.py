"""Memory sizing: the plan's matrix estimate against a measured quantized matrix, and the memory
guard that refuses an instance before it loads anything."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ensemble_assets.core import stages
from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.screening import ScreeningSettings, feature_columns, screen_features
from ensemble_assets.core.planning import plan as planning
from ensemble_assets.core.planning.plan import GIB, MemoryGuardError, check_instance_memory, instance_memory_bytes
from ensemble_assets.core.planning.scaling import measure_matrix
from ensemble_assets.datasets.demo import DemoSpec, write_demo_dataset
from ensemble_assets_tests.conftest import FAST_TRAINING, make_config

# the reference column set (3- and 5-mers: ~1,140 features), at a few hundred rows per gene
WIDE_SPEC = DemoSpec(n_genes=36, rows_per_gene=400, genes_per_file=12, seed=5)


@pytest.fixture(scope="module")
def wide_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("wide") / "demo"
    write_demo_dataset(out, WIDE_SPEC)
    return out


def test_matrix_estimate_is_within_25_percent_of_the_measured_quantized_matrix(wide_dataset):
    ds = open_dataset(wide_dataset)
    inventory, _ = build_gene_inventory(ds, threads=1)
    genes = inventory.column("gene_id").to_pylist()
    features, fill = feature_columns(screen_features(ds, genes, ScreeningSettings(kmer_sizes=(3, 5)), threads=1))
    assert len(features) > 1000
    m = measure_matrix(wide_dataset, genes, features, fill, replace(FAST_TRAINING, batch_rows=4096), timeout=300)
    assert m["rows"] == sum(inventory.column("n_rows").to_pylist()) and m["features"] == len(features)
    assert m["matrix_bytes_measured"] > 10 * 2**20            # a real matrix, well above the noise
    measured = m["matrix_bytes_measured"] + m["side_array_bytes"]
    estimate = planning.matrix_bytes(m["rows"], m["features"])
    assert m["matrix_plus_side_bytes_estimated"] == estimate
    assert abs(estimate - measured) <= 0.25 * measured, m
    assert m["parquet_passes"] == 1                            # the later passes replayed the pass cache


def test_guard_refuses_an_instance_that_cannot_fit_and_says_what_would():
    rows, genes, features = 600_000, 1500, 1139
    need = instance_memory_bytes(rows, features)
    with pytest.raises(MemoryGuardError) as err:
        check_instance_memory(rows, genes, features, available_bytes=2 * GIB, label="instance s00-x")
    msg = str(err.value)
    fit = planning.genes_fitting_memory(2 * GIB, rows / genes, features)
    assert 2 <= fit < genes
    assert "instance s00-x" in msg and f"genes_per_instance={fit}" in msg and "2.00 GiB" in msg
    # an instance of `fit` genes does fit the same memory, one of fit + 1 genes... may not
    assert instance_memory_bytes(fit * rows // genes, features) <= 2 * GIB
    figures = check_instance_memory(rows, genes, features, available_bytes=need + 1)
    assert figures["estimated_peak_bytes"] == need and figures["genes_fitting"] >= genes


def test_run_instance_fails_fast_before_loading_when_memory_is_short(tiny_dataset, tmp_path, monkeypatch):
    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=20)
    stages.run_inventory(cfg)
    stages.run_screening(cfg)
    plan = stages.run_plan(cfg)
    key = plan["subsets"][0]["key"]
    monkeypatch.setattr(planning, "available_memory_bytes", lambda: int(0.4 * GIB))
    monkeypatch.setattr(stages, "open_dataset", lambda *a, **k: pytest.fail("data was opened"))
    with pytest.raises(MemoryGuardError, match=f"instance {key}.*0.40 GiB is available"):
        stages.run_instance(cfg, key)
    assert not cfg.instance_dir(key).exists()
    monkeypatch.undo()
    assert stages.run_instance(cfg, key)["n_genes"] == plan["subsets"][0]["n_genes"]
