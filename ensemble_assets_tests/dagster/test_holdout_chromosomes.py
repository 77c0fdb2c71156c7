"""A chromosome holdout through the Dagster graph: the plan holds out exactly the genes of the named
chromosomes, instances train on the others, every report names what was held out; the dataset's
declaration is shown by gene_inventory and decides the gene-context default of feature_screening."""

import csv

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import artifacts
from ensemble_assets.core.evaluation import reports
from ensemble_assets.defs.dataset.assets import feature_screening, gene_inventory
from ensemble_assets.defs.evaluation.assets import (
    consolidation_summary,
    evaluation_assets,
    holdout_metrics,
    instance_performance,
)
from ensemble_assets.defs.planning.assets import training_plan
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import make_config, train_graph
from ensemble_assets_tests.dagster.test_graph import PLAN


def _meta(instance, asset) -> dict:
    ev = instance.get_latest_materialization_event(asset.key)
    return {k: getattr(v, "value", v) for k, v in ev.asset_materialization.metadata.items()}


@pytest.fixture(scope="module")
def held_out_chr2(tiny_dataset, tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("chr2"), tiny_dataset, genes_per_instance=16,
                      holdout_chromosomes=("chr2",))
    with dg.instance_for_test() as instance:
        keys = train_graph(cfg, instance)
        ok, err = materialize(cfg, instance, evaluation_assets)
        assert ok, err
        meta = {a: _meta(instance, a) for a in (gene_inventory, feature_screening, training_plan, holdout_metrics,
                                                 instance_performance, consolidation_summary)}
        logs = [e.user_message for run in instance.get_runs() for e in instance.all_logs(run.run_id)
                if run.tags.get("dagster/partition") == keys[0]]
        yield cfg, keys, meta, logs


def test_the_plan_holds_out_exactly_the_genes_of_the_named_chromosome(held_out_chr2, tiny_dataset):
    cfg, keys, meta, _ = held_out_chr2
    with open(tiny_dataset / "master" / "gene_manifest.csv", newline="") as fh:   # the generator's own record
        chrom_of = {r["gene_id"]: r["chrom"] for r in csv.DictReader(fh)}
    plan = artifacts.load_plan(cfg)
    assert plan["holdout_genes"] == sorted(g for g, c in chrom_of.items() if c == "chr2") and plan["holdout_genes"]
    trained = set().union(*[set(s["genes"]) for s in plan["subsets"]])
    assert trained == {g for g, c in chrom_of.items() if c != "chr2"}
    for k in keys:   # what each instance actually trained on
        folds = pq.read_table(cfg.instance_dir(k) / "folds.parquet", columns=["gene_id"]).column(0).to_pylist()
        assert {chrom_of[g] for g in folds} <= {"chr1", "chr3"}
    inv = pq.read_table(artifacts.paths(cfg)["inventory"], columns=["gene_id", "chrom"]).to_pydict()
    assert dict(zip(inv["gene_id"], inv["chrom"])) == chrom_of   # the inventory carries each gene's chromosome


def test_every_report_names_the_held_out_chromosome(held_out_chr2):
    cfg, _, meta, _ = held_out_chr2
    named = "chromosome chr2 (16 genes: every gene on it)"
    tp = meta[training_plan]
    assert tp["holdout"] == named and tp["holdout_by"] == "chromosomes" and tp["holdout_chromosomes"] == ["chr2"]
    hm = meta[holdout_metrics]
    assert hm["holdout"] == named and named in hm["scope_note"] and hm["genes"] == 16
    rows = pq.read_table(reports.report_paths(cfg)["metrics"], columns=["model", "holdout"]).to_pylist()
    assert rows and all(r["holdout"] == named for r in rows)
    assert meta[instance_performance]["eval_holdout"] == named
    assert meta[consolidation_summary]["holdout"] == named
    md = meta[consolidation_summary]["training_summary"]
    assert f"**Held out** {named}." in md and f"held out: {named})" in md


def test_gene_inventory_shows_the_declaration_and_screening_follows_it(held_out_chr2):
    _, _, meta, _ = held_out_chr2
    gi = meta[gene_inventory]
    assert gi["species"] == "none: synthetic sequences" and gi["chromosomes"] == "chr1, chr2, chr3"
    assert gi["base_model"].startswith("a simulated SpliceAI-like predictor")
    assert gi["row_selection"].startswith("every position with max(donor_score, acceptor_score) ≥ 0.02")
    assert gi["genes_per_chromosome"] == {"chr1": 16, "chr2": 16, "chr3": 16}
    assert str(gi["declaration"]).endswith("dataset.json")
    fs = meta[feature_screening]
    assert fs["gene_context"].startswith("gene context on: ") and "≥ 0.02" in fs["gene_context"]


def test_the_instance_progress_reaches_the_run_log(held_out_chr2):
    *_, logs = held_out_chr2
    for start in ("xgboost_ovr: loaded ", "fold 1/3: learning from ", "fold 2/3 donor: best round ",
                  "final model on all "):
        assert any(m.startswith(start) for m in logs), start


def test_an_unknown_chromosome_fails_the_plan_naming_it_and_the_known_ones(tiny_dataset, tmp_path):
    cfg = make_config(tmp_path, tiny_dataset, holdout_chromosomes=("chrX",))
    with dg.instance_for_test() as instance:
        ok, errors = materialize(cfg, instance, PLAN)
        assert not ok and instance.get_latest_materialization_event(training_plan.key) is None
        assert any("training_plan" in e and "chrX" in e and "chr1, chr2, chr3" in e for e in errors), errors
        assert not instance.get_dynamic_partitions("gene_subsets")   # no partition registered
