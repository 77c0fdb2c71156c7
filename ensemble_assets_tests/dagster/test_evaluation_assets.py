"""The evaluation assets and checks, materialized with a Dagster test instance on tiny data."""

import json
import shutil

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import artifacts
from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.evaluation import reports
from ensemble_assets.core.evaluation.holdout import predict_rows
from ensemble_assets.core.model.ensemble import load_model
from ensemble_assets.definitions import defs
from ensemble_assets.defs.ensemble.checks import instance_folds_are_gene_disjoint
from ensemble_assets.defs.evaluation.assets import evaluation_assets
from ensemble_assets.defs.evaluation.checks import calibrated_ece_within_bound, meta_beats_base_on_holdout_f1
from ensemble_assets.defs.planning.checks import holdout_genes_never_trained
from ensemble_assets.defs.resources import EnsembleResource
from ensemble_assets.defs.training.assets import instance_model
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import make_config
from ensemble_assets_tests.dagster.test_graph import PLAN

NEW_CHECKS = {"instance_folds_are_gene_disjoint", "no_single_feature_separates_classes",
              "calibrated_ece_within_bound", "meta_beats_base_on_holdout_f1"}


@pytest.fixture(scope="module")
def evaluated(trained_graph):
    """The session's trained graph: its evaluation assets' metadata and its latest check results."""
    cfg, instance, keys = trained_graph.cfg, trained_graph.instance, trained_graph.keys
    meta = {a.key.to_user_string(): instance.get_latest_materialization_event(a.key).asset_materialization.metadata
            for a in evaluation_assets}
    check_keys = list(defs.get_repository_def().asset_graph.asset_check_keys)
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    checks = {k.name: r.event.dagster_event.event_specific_data for k, r in latest.items()
              if r.event is not None and r.event.dagster_event is not None}
    return cfg, keys, meta, checks


def test_evaluation_assets_materialize_with_tables_plots_and_checks(evaluated):
    cfg, keys, meta, checks = evaluated
    rp = reports.report_paths(cfg)
    plan = artifacts.load_plan(cfg)
    hm = meta["holdout_metrics"]
    assert hm["scope"].value == "holdout" and hm["genes"].value == len(plan["holdout_genes"])
    for name in ("roc_pr_curves", "reliability_diagram", "learning_curves", "instance_comparison"):
        m = hm.get(name) or meta["instance_performance"].get(name)
        assert m is not None and "data:image/png;base64,iVBOR" in m.value and ".png`" in m.value
    assert "consolidated" in hm["side_by_side"].value and "base @0.5" in hm["side_by_side"].value
    # the demo data declares every position scoring >= 0.02: the figures on those rows alone, counted in DuckDB
    ev = reports.load_holdout_metrics(cfg)
    declared_sites, below = duckdb.connect().execute(
        "SELECT count(*) FILTER (label > 0 AND greatest(base_donor, base_acceptor) >= 0.02), "
        "count(*) FILTER (label > 0 AND greatest(base_donor, base_acceptor) < 0.02) FROM read_parquet($f)",
        {"f": str(rp["predictions"])}).fetchone()
    cons = next(r for r in ev["table"] if r["model"] == "consolidated")
    assert (cons["declared_sites"], cons["sites_below_declared"]) == (declared_sites, below) and below > 0
    assert hm["declared_rows_splice_f1"].value == pytest.approx(cons["declared_splice_f1"])
    assert hm["sites_below_declared_rows"].value == below and "≥ 0.02" in hm["declared_rows"].value
    # the tables are Parquet, queryable with DuckDB
    con = duckdb.connect()
    models = con.execute("SELECT model, kind, scope, genes FROM read_parquet($f) ORDER BY model",
                         {"f": str(rp["metrics"])}).fetchall()
    assert {m[0] for m in models} == {"base", "consolidated", *keys}
    assert all(m[2] == "holdout" and m[3] == len(plan["holdout_genes"]) for m in models)
    cov = con.execute("SELECT role, count(*), min(n_instances), bool_and(in_consolidated_model) "
                      "FROM read_parquet($f) GROUP BY role ORDER BY role", {"f": str(rp["coverage"])}).fetchall()
    assert cov == [("holdout", len(plan["holdout_genes"]), 0, False), ("train", plan["n_training_genes"], 1, True)]
    perf = pq.read_table(rp["performance"]).to_pylist()
    assert sorted(r["partition_key"] for r in perf) == sorted(keys)
    assert all(r["peak_rss_mb"] > 0 and r["eval_scope"] == "holdout" for r in perf)
    assert sum(r["weight"] for r in perf) == pytest.approx(1.0)
    calib = pq.read_table(rp["calibration"]).to_pylist()
    assert {(r["model"], r["kind"]) for r in calib if r["model"] == "consolidated"} == {
        ("consolidated", "calibrated"), ("consolidated", "raw")}
    summary = json.loads(rp["summary"].read_text())
    assert summary["gene_coverage"]["coverage"] == 1.0 and summary["evaluation"]["scope"] == "holdout"
    md = meta["consolidation_summary"]["training_summary"].value
    assert "# Training summary" in md and "holdout genes" in md
    assert NEW_CHECKS <= set(checks)
    assert checks["instance_folds_are_gene_disjoint"].passed
    assert checks["no_single_feature_separates_classes"].passed


def test_holdout_predictions_match_the_consolidated_model(evaluated, tiny_dataset):
    cfg, keys, meta, checks = evaluated
    plan = artifacts.load_plan(cfg)
    model_dir = artifacts.paths(cfg)["consolidated"]
    scored = predict_rows(model_dir, open_dataset(tiny_dataset), plan["holdout_genes"])
    table = pa.concat_tables([pq.read_table(f) for f in sorted((tiny_dataset / "master").glob("*.parquet"))])
    table = table.filter(pa.compute.is_in(table.column("gene_id"), pa.array(plan["holdout_genes"])))
    assert len(scored["consolidated"]) == table.num_rows
    assert np.allclose(scored["consolidated"].proba, load_model(model_dir).predict_proba(table), atol=1e-6)
    assert set(scored) == {"consolidated", *keys}


def _copy_root(cfg, tmp_path, **evaluation):
    """A copy of the data root's artifacts whose plan records changed evaluation settings (the
    steps after the plan use the plan's settings)."""
    shutil.copytree(cfg.root / "artifacts", tmp_path / "artifacts",
                    ignore=shutil.ignore_patterns("*.png", "holdout_predictions.parquet"))
    plan_file = tmp_path / "artifacts" / "training_plan.json"
    plan = json.loads(plan_file.read_text())
    plan["config"]["evaluation"] = {**plan["config"]["evaluation"], **evaluation}
    plan_file.write_text(json.dumps(plan))
    return EnsembleResource(data_root=str(tmp_path))


def test_fold_check_fails_and_names_the_gene_when_a_gene_is_in_two_folds(evaluated, tmp_path):
    cfg, keys, *_ = evaluated
    res = _copy_root(cfg, tmp_path)
    assert instance_folds_are_gene_disjoint(ensemble=res).passed
    f = tmp_path / "artifacts" / "consolidated_model" / "instances" / keys[0] / "oof_predictions.parquet"
    t = pq.read_table(f)
    gene = t.column("gene_id")[0].as_py()
    fold = t.column("fold").to_numpy().copy()
    rows = np.flatnonzero(np.asarray(t.column("gene_id").to_pylist(), dtype=object) == gene)
    fold[rows[-1]] = (fold[rows[-1]] + 1) % cfg.training.n_folds  # one row of the gene in another fold
    pq.write_table(t.set_column(t.schema.get_field_index("fold"), "fold", pa.array(fold)), f)
    r = instance_folds_are_gene_disjoint(ensemble=res)
    assert not r.passed and keys[0] in r.description and gene in r.description


def test_holdout_check_fails_and_names_the_subset_and_gene_when_a_holdout_gene_is_trained(evaluated, tmp_path):
    cfg, keys, *_ = evaluated
    res = _copy_root(cfg, tmp_path)
    ok = holdout_genes_never_trained(ensemble=res)
    assert ok.passed and ok.metadata["leaking_subsets"].value == 0
    f = tmp_path / "artifacts" / "training_plan.json"
    plan = json.loads(f.read_text())
    gene = plan["holdout_genes"][0]
    plan["subsets"][1]["genes"].append(gene)
    f.write_text(json.dumps(plan))
    r = holdout_genes_never_trained(ensemble=res)
    assert not r.passed and r.metadata["leaking_subsets"].value == 1
    assert r.description == f"{plan['subsets'][1]['key']}: {gene}"


def test_ece_check_warns_above_the_bound_with_the_numbers(evaluated, tmp_path):
    cfg, *_ = evaluated
    strict = calibrated_ece_within_bound(ensemble=_copy_root(cfg, tmp_path / "a", ece_bound=1e-6))
    assert not strict.passed and strict.severity == dg.AssetCheckSeverity.WARN
    ev = reports.load_holdout_metrics(cfg)
    cons = next(r for r in ev["table"] if r["model"] == "consolidated")
    assert f"donor {cons['ece_uniform_donor']:.4f}" in strict.description
    assert calibrated_ece_within_bound(ensemble=_copy_root(cfg, tmp_path / "b", ece_bound=1.0)).passed


@pytest.mark.parametrize("meta_f1, passed", [(0.61, False), (0.9, True)])
def test_meta_beats_base_check_compares_holdout_f1(evaluated, tmp_path, meta_f1, passed):
    cfg, *_ = evaluated
    res = _copy_root(cfg, tmp_path)
    f = reports.report_paths(res.config())["metrics_json"]
    ev = json.loads(f.read_text())
    for r in ev["table"]:
        r.update({"base_splice_f1": 0.6, "base_splice_f1_at_oof_threshold": 0.7})
        if r["model"] == "consolidated":
            r["splice_f1"] = meta_f1
    f.write_text(json.dumps(ev))
    r = meta_beats_base_on_holdout_f1(ensemble=res)
    assert r.passed is passed and f"{meta_f1:.4f}" in r.description and "0.7000" in r.description


def test_re_included_structural_columns_fail_the_separation_check_and_stop_the_plan(tiny_dataset, tmp_path):
    from dataclasses import replace

    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=16)
    cfg = replace(cfg, screening=replace(cfg.screening, include_structural=True))
    with dg.instance_for_test() as instance:
        ok, errors = materialize(cfg, instance, PLAN)
        assert not ok
        msg = " ".join(errors)
        assert "no_single_feature_separates_classes" in msg and "num_exons" in msg and "AUC 1.0000" in msg
        assert instance.get_latest_materialization_event(dg.AssetKey("training_plan")) is None


def test_train_all_genes_reports_out_of_fold_figures_labelled_so(tiny_dataset, tmp_path):
    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=500, train_all_genes=True)
    with dg.instance_for_test() as instance:
        ok, err = materialize(cfg, instance, PLAN)
        assert ok, err
        (key,) = instance.get_dynamic_partitions("gene_subsets")
        assert materialize(cfg, instance, [instance_model], partition_key=key)[0]
        from ensemble_assets.defs.ensemble.assets import consolidated_model

        assert materialize(cfg, instance, [consolidated_model])[0]
        ok, err = materialize(cfg, instance, evaluation_assets)
        assert ok, err
        ev = reports.load_holdout_metrics(cfg)
        assert ev["scope"] == "out-of-fold" and "no holdout genes" in ev["scope_note"]
        assert ev["genes"] == artifacts.load_plan(cfg)["n_training_genes"]
        m = instance.get_latest_materialization_event(dg.AssetKey("holdout_metrics")).asset_materialization.metadata
        assert m["scope"].value == "out-of-fold"
        assert "out-of-fold rows" in reports.report_paths(cfg)["summary_md"].read_text()
