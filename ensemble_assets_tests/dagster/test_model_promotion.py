"""model_promotion in the asset graph: the first model is promoted; a retrain with a deliberately
worse configuration is refused and leaves the current version byte-identical; the CLI lists,
promotes and rolls back, each action recorded with who and why."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg

from ensemble_assets.cli import main
from ensemble_assets.core.artifacts import model_store
from ensemble_assets.definitions import defs
from ensemble_assets.defs.models.assets import model_promotion
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import make_config, train_graph
from ensemble_assets_tests.core.test_model_versions import tree_hashes


def promote(cfg, instance) -> dict:
    ok, err = materialize(cfg, instance, [model_promotion])
    assert ok, err
    return instance.get_latest_materialization_event(model_promotion.key).asset_materialization.metadata


def check_results(instance) -> dict:
    keys = [k for k in defs.get_repository_def().asset_graph.asset_check_keys
            if k.asset_key == model_promotion.key]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return {k.name: r.event.dagster_event.event_specific_data for k, r in latest.items()}


def test_a_worse_retrain_is_refused_and_the_current_model_stays_byte_identical(tiny_dataset, tmp_path, capsys):
    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=16, holdout_fraction=0.25)
    store = model_store(cfg)
    with dg.instance_for_test() as instance:
        train_graph(cfg, instance)
        meta = promote(cfg, instance)
        first = store.current_id()
        assert meta["decision"].value == "promoted" and meta["current"].value == first
        assert "first model" in meta["reason"].value
        before = tree_hashes(store.current_dir())

        worse = replace(cfg, training=replace(cfg.training, n_estimators=1, max_depth=1))
        train_graph(worse, instance)
        meta = promote(worse, instance)
        candidate = meta["candidate"].value
        assert candidate != first and meta["decision"].value == "refused"
        assert "worse than current" in meta["reason"].value and "beyond tolerance" in meta["reason"].value
        table = meta["candidate_vs_current"].value
        assert "| candidate | current |" in table and "NO" in table
        assert meta["common_unseen_genes"].value > 0
        assert store.current_id() == first
        assert tree_hashes(store.current_dir()) == before
        checks = check_results(instance)
        assert checks["current_model_loads"].passed
        assert not checks["candidate_was_promoted"].passed
        assert checks["candidate_was_promoted"].severity == dg.AssetCheckSeverity.WARN
        assert "worse than current" in checks["candidate_was_promoted"].description

    root = ["--data-root", str(tmp_path)]
    capsys.readouterr()
    assert main(["models", "list", *root]) == 0
    listing = capsys.readouterr().out
    assert f"{first}" in listing and f"{candidate}" in listing
    assert {line.split()[0]: line.split()[2] for line in listing.splitlines()[2:]} == {
        first: "current", candidate: "refused"}
    assert main(["models", "promote", candidate, "--reason", "try it anyway", "--actor", "alice", *root]) == 0
    assert store.current_id() == candidate and store.previous_id() == first
    assert main(["models", "rollback", "--reason", "worse, as the gate said", *root]) == 0
    assert store.current_id() == first and tree_hashes(store.current_dir()) == before
    events = [(e["action"], e["version"], e["actor"], e["reason"]) for e in store.history()]
    assert events[-2] == ("promote", candidate, "alice", "try it anyway")
    assert events[-1][:2] == ("rollback", first) and events[-1][3] == "worse, as the gate said"
    assert main(["models", "promote", "0000000000000000", "--reason", "x", *root]) == 2
    assert "'0000000000000000'" in capsys.readouterr().err
