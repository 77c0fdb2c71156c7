"""scored_positions, its coverage check, the scoring-targets sensor and the automation condition
that re-scores on a new model version, with a Dagster test instance on tiny data."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.scoring.score import score_dataset
from ensemble_assets.core.scoring.targets import scored_paths, targets_dir
from ensemble_assets.datasets.demo import write_demo_dataset
from ensemble_assets.defs.models.assets import model_promotion
from ensemble_assets.defs.partitions import scoring_targets
from ensemble_assets.defs.resources import EnsembleResource
from ensemble_assets.defs.scoring.assets import SCORE_NEW_TARGETS_AND_NEW_VERSIONS, scored_positions
from ensemble_assets.defs.scoring.checks import scored_positions_cover_every_input_row
from ensemble_assets.defs.scoring.sensors import scoring_targets_sensor
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import TINY_SPEC, make_config, train_graph


def _register_targets(cfg, instance) -> dg.SensorResult | dg.SkipReason:
    """One tick of scoring_targets_sensor, its partition requests applied as the daemon would."""
    ctx = dg.build_sensor_context(instance=instance, resources={"ensemble": EnsembleResource.for_config(cfg)})
    result = scoring_targets_sensor(ctx)
    if isinstance(result, dg.SensorResult):
        for req in result.dynamic_partitions_requests or []:
            if isinstance(req, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            else:
                for key in req.partition_keys:
                    instance.delete_dynamic_partition(req.partitions_def_name, key)
    return result


@pytest.fixture(scope="module")
def graph(tiny_dataset, tmp_path_factory):
    """A trained, promoted model; targets: a demo dataset of another seed in <data root>/targets/,
    and the training dataset itself registered in the configuration."""
    root = tmp_path_factory.mktemp("scoring_graph")
    cfg = make_config(root, tiny_dataset, genes_per_instance=16)
    cfg = replace(cfg, scoring=replace(cfg.scoring, targets={"training_data": str(tiny_dataset)}))
    write_demo_dataset(targets_dir(cfg) / "other_seed", replace(TINY_SPEC, seed=11, n_genes=20))
    (targets_dir(cfg) / "README.txt").write_text("not a target\n")
    (targets_dir(cfg) / "bad name").mkdir()
    with dg.instance_for_test() as instance:
        train_graph(cfg, instance)
        ok, err = materialize(cfg, instance, [model_promotion])
        assert ok, err
        yield cfg, instance


def test_sensor_registers_the_configured_and_the_folder_targets(graph):
    cfg, instance = graph
    result = _register_targets(cfg, instance)
    assert isinstance(result, dg.SensorResult)
    assert sorted(instance.get_dynamic_partitions(scoring_targets.name)) == ["other_seed", "training_data"]
    assert isinstance(_register_targets(cfg, instance), dg.SkipReason)   # nothing new


def test_scored_positions_of_another_seed_dataset(graph):
    cfg, instance = graph
    _register_targets(cfg, instance)
    ok, err = materialize(cfg, instance, [scored_positions], partition_key="other_seed")
    assert ok, err
    mat = instance.get_latest_materialization_event(scored_positions.key).asset_materialization
    meta = mat.metadata
    out = pq.read_table(scored_paths(cfg, "other_seed")["positions"])
    store = artifacts.model_store(cfg)
    # lineage: the data version is the model version and the target's file fingerprint
    assert mat.tags["dagster/data_version"] == f"{store.current_id()}-{meta['input_fingerprint'].value}"
    assert meta["rows"].value == out.num_rows == sum(
        pq.read_metadata(f).num_rows for f in (targets_dir(cfg) / "other_seed" / "master").glob("*.parquet"))
    assert meta["genes"].value == 20 and meta["model_version"].value == store.current_id()
    assert sum(meta[f"calls_{c}"].value for c in ("neither", "donor", "acceptor")) == out.num_rows
    assert meta["rows_per_s"].value > 0 and meta["peak_rss_MB"].value > 0
    assert set(out["model_version"].to_pylist()) == {store.current_id()}
    # labelled: metrics only on genes the model did not train on (gene ids shared with the training data)
    assert "did not train on" in meta["metrics_scope"].value and "metrics_genes_excluded_trained_on" in meta
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [scored_positions_cover_every_input_row.check_key])
    assert checks[scored_positions_cover_every_input_row.check_key].event.dagster_event.event_specific_data.passed


def test_coverage_check_fails_naming_the_missing_and_duplicated_gene(graph, monkeypatch):
    """A scoring run whose output loses a gene and duplicates a row: the blocking check fails the
    run and names both genes."""
    cfg, instance = graph
    _register_targets(cfg, instance)
    dropped, doubled = [], []

    def broken_scoring(*args, **kwargs):
        result = score_dataset(*args, **kwargs)
        out = pq.read_table(result.output)
        genes = sorted(set(out["gene_id"].to_pylist()))
        dropped.append(genes[1])
        doubled.append(genes[7])
        kept = out.filter(pc.not_equal(out["gene_id"], genes[1]))
        pq.write_table(pa.concat_tables([kept, kept.filter(pc.equal(kept["gene_id"], genes[7])).slice(0, 1)]),
                       result.output)
        return result

    monkeypatch.setattr(stages, "score_dataset", broken_scoring)
    ok, errors = materialize(cfg, instance, [scored_positions], partition_key="training_data")
    assert not ok
    message = next(e for e in errors if e.startswith("check scored_positions_cover_every_input_row failed"))
    assert f"missing from the output: {dropped[0]}" in message
    assert f"duplicated (gene_id, position) in 1 gene(s): {doubled[0]}:" in message
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [scored_positions_cover_every_input_row.check_key])[scored_positions_cover_every_input_row.check_key]
    assert not evaluation.event.dagster_event.event_specific_data.passed


def test_the_condition_scores_new_targets_and_rescores_on_a_new_current_version():
    current = {"id": "v1"}

    @dg.asset(name="model_promotion")
    def promotion() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion(current["id"]))

    @dg.asset(name="scored_positions", deps=[promotion], partitions_def=scoring_targets,
              automation_condition=SCORE_NEW_TARGETS_AND_NEW_VERSIONS)
    def scored() -> None:
        return None

    def tick(instance, cursor):
        r = dg.evaluate_automation_conditions(defs=[promotion, scored], instance=instance, cursor=cursor,
                                              asset_selection=dg.AssetSelection.assets(scored))
        return sorted(r.get_requested_partitions(scored.key)), r.cursor

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(scoring_targets.name, ["a", "b"])
        requested, cursor = tick(instance, None)
        assert requested == []                                   # no model yet: nothing to score
        dg.materialize([promotion], instance=instance)
        requested, cursor = tick(instance, cursor)
        assert requested == ["a", "b"]
        for key in requested:
            dg.materialize([promotion, scored], instance=instance, partition_key=key,
                           selection=dg.AssetSelection.assets(scored))
        requested, cursor = tick(instance, cursor)
        assert requested == []
        dg.materialize([promotion], instance=instance)          # same current version (a refused candidate)
        requested, cursor = tick(instance, cursor)
        assert requested == []
        instance.add_dynamic_partitions(scoring_targets.name, ["c"])   # a new target
        requested, cursor = tick(instance, cursor)
        assert requested == ["c"]
        dg.materialize([promotion, scored], instance=instance, partition_key="c",
                       selection=dg.AssetSelection.assets(scored))
        requested, cursor = tick(instance, cursor)
        assert requested == []
        current["id"] = "v2"                                     # a new version promoted
        dg.materialize([promotion], instance=instance)
        requested, cursor = tick(instance, cursor)
        assert requested == ["a", "b", "c"]
        assert tick(instance, cursor)[0] == []                   # requested once
