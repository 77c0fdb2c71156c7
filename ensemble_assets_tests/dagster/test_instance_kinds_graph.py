from ensemble_assets.core.planning.plan import subset_for_key

"""Every instance kind trains and is explained through the asset graph; the kind is part of the
partition key."""

from dataclasses import replace

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import artifacts
from ensemble_assets.core.model.ensemble import load_model
from ensemble_assets.core.stages import shap_paths
from ensemble_assets.core.evaluation.reports import report_paths
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.evaluation.assets import evaluation_assets
from ensemble_assets.defs.explanation.assets import ensemble_shap, instance_shap
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.training.assets import instance_model
from ensemble_assets.defs.training.retraining import partitions_to_train
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import make_config, train_graph
from ensemble_assets_tests.core.test_instance_kinds import SHAP_METHOD, kind_settings
from ensemble_assets_tests.dagster.test_graph import PLAN


def kind_config(tmp_path, dataset, kind, **plan):
    cfg = make_config(tmp_path, dataset, **plan)
    cfg = replace(cfg, training=kind_settings(kind))
    return cfg


@pytest.mark.parametrize("kind", ["xgboost_softprob", "sklearn:HistGradientBoostingClassifier",
                                  "sklearn:MLPClassifier"])
def test_each_kind_trains_through_the_graph(tiny_dataset, tmp_path, kind):
    cfg = kind_config(tmp_path, tiny_dataset, kind, genes_per_instance=24)
    with dg.instance_for_test() as instance:
        keys = train_graph(cfg, instance)
        assert len(keys) >= 2
        for k in keys:
            m = artifacts.instance_manifest(cfg, k)
            assert m["model_type"] == kind and m["settings"]["instance_kind"] == kind
            rec = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=instance_model.key, asset_partitions=[k]), limit=1).records[0]
            assert rec.asset_materialization.metadata["model_type"].value == kind
        model = load_model(artifacts.paths(cfg)["consolidated"])
        assert model.total_instances == len(keys)
        assert {m.model_type for m in model.members} == {kind}
        table = pq.read_table(next((tiny_dataset / "master").glob("*.parquet")))
        assert np.allclose(model.predict_proba(table).sum(axis=1), 1.0)
        ev = instance.get_latest_materialization_event(consolidated_model.key)
        assert ev.asset_materialization.metadata["model_types"].value == [kind]
        # SHAP of every instance and of the ensemble, with the kind's method recorded
        shap = {"sample_rows": 120, "agnostic_rows": 8, "agnostic_background": 3, "nthread": 1}
        for k in keys:
            ok, err = materialize(cfg, instance, [instance_shap], partition_key=k,
                                  run_config={"ops": {"instance_shap": {"config": shap}}})
            assert ok, err
        ok, err = materialize(cfg, instance, [ensemble_shap], run_config={"ops": {"ensemble_shap": {"config": shap}}})
        assert ok, err
        meta = instance.get_latest_materialization_event(ensemble_shap.key).asset_materialization.metadata
        assert meta["instance_methods"].value.keys() == set(keys)
        table = pq.read_table(shap_paths(cfg)["ensemble"] / "instance_importance.parquet")
        assert set(table.column("method").to_pylist()) == {SHAP_METHOD[kind]}
        assert meta["instances_computed"].value == []   # the instance_shap results were reused
        # the evaluation reports read each kind's manifest: its rounds per booster and its fitting time
        ok, err = materialize(cfg, instance, evaluation_assets)
        assert ok, err
        perf = pq.read_table(report_paths(cfg)["performance"]).to_pylist()
        assert sorted(r["partition_key"] for r in perf) == sorted(keys)
        for r in perf:
            rounds = artifacts.instance_manifest(cfg, r["partition_key"])["n_estimators"]
            assert {k: r[f"n_estimators_{k}"] for k in rounds} == rounds and r["fit_seconds"] > 0
            assert (r["xgboost_train_seconds"] is not None) == kind.startswith("xgboost")


def test_changing_the_instance_kind_changes_every_partition_key(tiny_dataset, tmp_path):
    cfg = kind_config(tmp_path, tiny_dataset, "xgboost_ovr", genes_per_instance=24)
    with dg.instance_for_test() as instance:
        ok, err = materialize(cfg, instance, PLAN)
        assert ok, err
        keys = instance.get_dynamic_partitions(gene_subsets.name)
        ok, err = materialize(cfg, instance, [instance_model], partition_key=keys[0])
        assert ok, err
        assert partitions_to_train(instance, keys) == keys[1:]
        cfg2 = kind_config(tmp_path, tiny_dataset, "xgboost_softprob", genes_per_instance=24)
        ok, err = materialize(cfg2, instance, PLAN)
        assert ok, err
        new_keys = instance.get_dynamic_partitions(gene_subsets.name)
        assert len(new_keys) == len(keys) and set(new_keys).isdisjoint(keys)
        assert sorted(partitions_to_train(instance, new_keys)) == sorted(new_keys)   # retrains
        plan = artifacts.load_plan(cfg2)
        # the same genes, other keys: only the kind changed
        assert sorted(tuple(s["genes"]) for s in plan["subsets"]) == sorted(
            tuple(subset_for_key(plan, k)["genes"]) for k in new_keys)
