"""instance_shap and ensemble_shap materialized with a Dagster test instance on tiny data."""

import json

import dagster as dg
import pytest

from ensemble_assets.core.stages import shap_paths
from ensemble_assets.definitions import defs
from ensemble_assets.defs.explanation.assets import ensemble_shap, instance_shap
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import make_config

SMALL = {"sample_rows": 150, "nthread": 1, "top_n": 8}


def test_shap_assets_are_in_the_graph_downstream_of_the_models():
    graph = defs.get_repository_def().asset_graph
    assert {k.to_user_string() for k in graph.get(ensemble_shap.key).parent_keys} == {"consolidated_model",
                                                                                       "instance_shap"}
    assert {k.to_user_string() for k in graph.get(instance_shap.key).parent_keys} == {"instance_model"}
    assert instance_shap.partitions_def is not None and ensemble_shap.partitions_def is None


@pytest.fixture(scope="module")
def trained(trained_graph):
    return trained_graph.cfg, trained_graph.instance, trained_graph.keys


def test_instance_and_ensemble_shap_materialize_with_plots(trained):
    cfg, instance, keys = trained
    assert len(keys) >= 2
    for k in keys:
        ok, err = materialize(cfg, instance, [instance_shap], partition_key=k,
                              run_config={"ops": {"instance_shap": {"config": SMALL}}})
        assert ok, err
    assert instance.get_materialized_partitions(instance_shap.key) == set(keys)
    meta = instance.get_latest_materialization_event(instance_shap.key).asset_materialization.metadata
    assert meta["rows"].value == 150 and 0 <= meta["max_additivity_error"].value <= 1e-3

    ok, err = materialize(cfg, instance, [ensemble_shap], run_config={"ops": {"ensemble_shap": {"config": SMALL}}})
    assert ok, err
    meta = instance.get_latest_materialization_event(ensemble_shap.key).asset_materialization.metadata
    assert sorted(meta["instances_reused"].value) == sorted(keys)  # computed by instance_shap, not twice
    assert meta["instances_computed"].value == []
    assert meta["models"].value == 3 * len(keys)
    for name in ("plot_top_features", "plot_per_class_top_features", "plot_beeswarm_donor",
                 "plot_beeswarm_acceptor", "plot_feature_type_share", "plot_instance_agreement"):
        assert meta[name].value.startswith("![") and "(data:image/png;base64,iVBOR" in meta[name].value, name
    assert "spearman_mean" in meta["instance_agreement"].value
    out = shap_paths(cfg)["ensemble"]
    summary = json.loads((out / "shap_analysis_summary.json").read_text())
    consolidated = json.loads((cfg.artifacts / "consolidated_model" / "manifest.json").read_text())
    assert summary["instance_weights"] == pytest.approx({m["partition_key"]: m["weight"]
                                                         for m in consolidated["members"]})
    assert (out / "shap_importance_incremental.csv").is_file()


def test_ensemble_shap_fails_with_a_clear_message_without_a_consolidated_model(tiny_dataset, tmp_path):
    cfg = make_config(tmp_path, tiny_dataset)
    with dg.instance_for_test() as instance:
        ok, errors = materialize(cfg, instance, [ensemble_shap])
        assert not ok and errors[0].startswith("ensemble_shap") and "materialize consolidated_model first" in errors[0]
