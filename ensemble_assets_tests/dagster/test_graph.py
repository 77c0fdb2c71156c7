"""Layer 2: the asset graph materialized with a Dagster test instance."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import artifacts
from ensemble_assets.core.model.ensemble import load_model
from ensemble_assets.definitions import defs
from ensemble_assets.defs.dataset.assets import feature_screening, gene_inventory
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.planning.assets import plan_fingerprint, plan_out_of_date, training_plan
from ensemble_assets.defs.training.assets import instance_model
from ensemble_assets.defs.training.retraining import partitions_to_train
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import FAST_TRAINING, REPO, make_config, train_graph

PLAN = [gene_inventory, feature_screening, training_plan]




def test_definitions_load():
    repo = defs.get_repository_def()
    names = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"gene_inventory", "feature_screening", "training_plan", "instance_model",
            "consolidated_model"} <= names


@pytest.mark.parametrize("genes_per_instance, expected", [(16, "multi"), (500, "single")])
def test_full_graph(tiny_dataset, tmp_path, genes_per_instance, expected):
    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=genes_per_instance)
    with dg.instance_for_test() as instance:
        keys = train_graph(cfg, instance)
        plan = artifacts.load_plan(cfg)
        assert plan["strategy"] == expected
        assert (len(keys) >= 2) if expected == "multi" else (len(keys) == 1)
        assert sorted(keys) == sorted(s["key"] for s in plan["subsets"])
        assert instance.get_materialized_partitions(instance_model.key) == set(keys)
        model = load_model(artifacts.paths(cfg)["consolidated"])
        assert model.total_instances == len(keys)
        table = pq.read_table(next((tiny_dataset / "master").glob("*.parquet")))
        assert np.allclose(model.predict_proba(table).sum(axis=1), 1.0)
        ev = instance.get_latest_materialization_event(consolidated_model.key)
        assert ev.asset_materialization.metadata["gene_coverage"].value == 1.0


def test_replanning_unchanged_genes_keeps_partitions_and_changed_genes_replace_them(tiny_dataset, tmp_path):
    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=16)
    with dg.instance_for_test() as instance:
        keys = train_graph(cfg, instance)
        ok, _ = materialize(cfg, instance, PLAN)
        assert ok
        assert sorted(instance.get_dynamic_partitions(gene_subsets.name)) == sorted(keys)
        assert partitions_to_train(instance, keys) == []
        assert instance.get_materialized_partitions(instance_model.key) == set(keys)
        # fewer genes → different subsets: new keys registered, stale ones removed
        cfg2 = make_config(tmp_path, tiny_dataset, genes_per_instance=16, sample_genes=40)
        ok, _ = materialize(cfg2, instance, PLAN)
        assert ok
        new_keys = instance.get_dynamic_partitions(gene_subsets.name)
        assert set(new_keys).isdisjoint(keys)
        assert sorted(partitions_to_train(instance, new_keys)) == sorted(new_keys)


def test_replans_of_unchanged_data_keep_every_key_and_retrain_nothing(parallel_dataset, tmp_path):
    """A re-plan after a touch of every file, after a move of the dataset, and after feature
    screening is re-materialized gives the same partition keys and trains nothing: the keys hash
    exact fill values (several DuckDB threads over 60 files) and the dataset is known by content."""
    here = Path(shutil.copytree(parallel_dataset, tmp_path / "here" / "demo"))

    def configure(dataset):   # 2 threads: DuckDB scans in parallel
        cfg = replace(make_config(tmp_path / "root", dataset, genes_per_instance=60),
                      training=replace(FAST_TRAINING, nthread=2))
        return cfg

    cfg = configure(here)
    with dg.instance_for_test() as instance:
        ok, err = materialize(cfg, instance, PLAN)
        assert ok, err
        keys = sorted(instance.get_dynamic_partitions(gene_subsets.name))
        assert len(keys) >= 2
        for k in keys:
            ok, err = materialize(cfg, instance, [instance_model], partition_key=k)
            assert ok, err
        fingerprint, (_, fill) = plan_fingerprint(cfg), artifacts.load_features(cfg)

        def replan_keeps_everything(cfg, assets=PLAN):
            ok, err = materialize(cfg, instance, assets)
            assert ok, err
            assert sorted(instance.get_dynamic_partitions(gene_subsets.name)) == keys
            assert sorted(s["key"] for s in artifacts.load_plan(cfg)["subsets"]) == keys
            assert artifacts.load_features(cfg)[1] == fill   # == on floats: the same bits
            assert partitions_to_train(instance, keys, cfg=cfg) == []
            assert plan_out_of_date(cfg, instance) is None

        for f in (here / "master").glob("*.parquet"):   # a touch of every file
            os.utime(f, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
        assert plan_fingerprint(cfg) == fingerprint and plan_out_of_date(cfg, instance) is None
        replan_keeps_everything(cfg)

        moved = Path(shutil.move(here.parent, tmp_path / "elsewhere")) / "demo"   # another directory
        cfg = configure(moved)
        assert plan_fingerprint(cfg) == fingerprint
        assert plan_out_of_date(cfg, instance)[0] == "dataset moved"   # its runs must read the new path
        replan_keeps_everything(cfg)
        assert artifacts.load_plan(cfg)["dataset"] == str(moved.resolve())

        replan_keeps_everything(cfg, [feature_screening, training_plan])   # screening recomputed alone


def test_consolidation_refuses_while_partitions_are_missing(tiny_dataset, tmp_path):
    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=16)
    with dg.instance_for_test() as instance:
        ok, _ = materialize(cfg, instance, PLAN)
        keys = sorted(instance.get_dynamic_partitions(gene_subsets.name))
        ok, _ = materialize(cfg, instance, [instance_model], partition_key=keys[0])
        assert ok
        ok, errors = materialize(cfg, instance, [consolidated_model])
        assert not ok
        msg = " ".join(errors)
        assert "coverage" in msg and all(k in msg for k in keys[1:]) and keys[0] not in msg.split("materialized:")[-1]
        assert not artifacts.paths(cfg)["consolidated"].exists()


@pytest.mark.parametrize("column", ["splice_type", "gene_id"])
def test_missing_required_column_fails_at_gene_inventory(tiny_dataset, tmp_path, column):
    bad = tmp_path / "bad" / "master"
    bad.mkdir(parents=True)
    for f in sorted((tiny_dataset / "master").glob("*.parquet")):
        pq.write_table(pq.read_table(f).drop_columns([column]), bad / f.name)
    cfg = make_config(tmp_path / "root", bad.parent)
    with dg.instance_for_test() as instance:
        ok, errors = materialize(cfg, instance, PLAN)
        assert not ok
        assert errors and errors[0].startswith("gene_inventory") and f"'{column}'" in errors[0]
        assert instance.get_latest_materialization_event(gene_inventory.key) is None


def test_cli_train_then_predict_round_trip(tiny_dataset, tmp_path):
    env = {"DAGSTER_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "home").mkdir()
    cli = [sys.executable, "-m", "ensemble_assets.cli"]
    # 2 instances, no SHAP (its own tests: test_shap_assets.py): the round trip, not the graph's size
    args = ["train", "--dataset", str(tiny_dataset), "--data-root", str(tmp_path / "root"),
            "--genes-per-instance", "30", "--n-folds", "3", "--n-estimators", "15", "--threads", "1", "--skip-shap"]
    r = subprocess.run(cli + args, capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "out-of-fold" in r.stdout and "trained" in r.stdout
    assert "holdout evaluation, base vs meta — held out: " in r.stdout and "consolidated" in r.stdout  # evaluation
    # each instance's progress, printed under its line (not Dagster's events, not on stderr)
    first = r.stdout.split("[1/")[1].split("\n[2/")[0]
    for line in ("    xgboost_ovr: loaded ", "    fold 1/3: learning from ", "    fold 3/3 acceptor: best round ",
                 "    final model on all "):
        assert line in first, first
    assert "fold 1/3" not in r.stderr and "dagster - INFO" not in r.stdout
    assert first.count("\n") <= 20
    r2 = subprocess.run(cli + args, capture_output=True, text=True, env=env, cwd=REPO)
    assert r2.returncode == 0 and "nothing to retrain" in r2.stdout and "trained 0 instance(s)" in r2.stdout
    src = next((tiny_dataset / "master").glob("*.parquet"))
    out = tmp_path / "pred.parquet"
    r3 = subprocess.run(cli + ["predict", "--model", str(tmp_path / "root" / "artifacts" / "consolidated_model"),
                               "--input", str(src), "--output", str(out)], capture_output=True, text=True, env=env)
    assert r3.returncode == 0, r3.stderr
    pred = pq.read_table(out)
    assert pred.num_rows == pq.read_metadata(src).num_rows
    p = np.column_stack([pred.column(f"p_{c}").to_numpy() for c in ("neither", "donor", "acceptor")])
    assert np.allclose(p.sum(axis=1), 1.0)
    assert set(pred.column("predicted_type").to_pylist()) <= {"neither", "donor", "acceptor"}
    # the CLI's settings are recorded by the plan and shown as each run's config in the Dagster UI
    plan = json.loads((tmp_path / "root" / "artifacts" / "training_plan.json").read_text())
    assert plan["config"]["plan"]["genes_per_instance"] == 30 and len(plan["subsets"]) == 2
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
    shown = [r.run_config["resources"]["ensemble"]["config"] for r in runs]
    assert runs and all(c["plan"]["genes_per_instance"] == 30 and c["dataset"] == str(tiny_dataset.resolve()) for c in shown)


def test_cli_train_exits_nonzero_with_the_failing_assets_message(tiny_dataset, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pq.read_table(next((tiny_dataset / "master").glob("*.parquet"))).drop_columns(["splice_type"]),
                   bad / "a.parquet")
    r = subprocess.run([sys.executable, "-m", "ensemble_assets.cli", "train", "--dataset", str(bad),
                        "--data-root", str(tmp_path / "root")], capture_output=True, text=True,
                       env={"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, cwd=REPO)
    assert r.returncode != 0
    assert "gene_inventory" in r.stderr and "'splice_type'" in r.stderr and "a.parquet" in r.stderr


def test_dagster_definitions_validate():
    r = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate"], cwd=REPO,
                       capture_output=True, text=True, env={"DAGSTER_HOME": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
