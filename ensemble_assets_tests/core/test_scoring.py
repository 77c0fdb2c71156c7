"""Scoring new data (core/scoring/): whole-gene streaming, the scored-positions table, the
coverage check, labelled-target metrics and ``ensemble-assets predict``, on a tiny model trained
with gene-context features (gene-level features that are only exact on whole genes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ensemble_assets import cli
from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.data.contract import DatasetError
from ensemble_assets.core.data.gene_batches import gene_layout, iter_gene_batches
from ensemble_assets.core.data.schema import CLASSES, GENE_CONTEXT_FEATURES
from ensemble_assets.core.evaluation import reports
from ensemble_assets.core.evaluation.metrics import binary_splice_metrics
from ensemble_assets.core.io import read_json
from ensemble_assets.core.model.ensemble import ModelError, splice_calls
from ensemble_assets.core.scoring.coverage import check_coverage
from ensemble_assets.core.scoring.model_ref import resolve_scoring_model
from ensemble_assets.core.scoring.score import gene_context_check, open_target, score_dataset
from ensemble_assets.core.scoring.targets import scored_paths
from ensemble_assets_tests.conftest import make_config


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A consolidated, promoted model with gene-context features, and its holdout evaluation."""
    root = tmp_path_factory.mktemp("scoring")
    cfg = make_config(root, tiny_dataset, genes_per_instance=16)
    cfg = replace(cfg, screening=replace(cfg.screening, gene_context=True))
    stages.run_inventory(cfg)
    stages.run_screening(cfg)
    for s in stages.run_plan(cfg)["subsets"]:
        stages.run_instance(cfg, s["key"])
    stages.run_consolidation(cfg)
    assert stages.run_model_promotion(cfg).outcome == "promoted"
    stages.run_holdout_metrics(cfg)
    sm = resolve_scoring_model("current", artifacts.model_store(cfg))
    assert set(GENE_CONTEXT_FEATURES) <= set(sm.model.get_feature_names())
    return cfg, sm


def _master_table(dataset: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted((dataset / "master").glob("*.parquet"))],
                            promote_options="permissive")


def _by_key(t: pa.Table) -> pa.Table:
    return t.sort_by([("gene_id", "ascending"), ("position", "ascending")])


def test_scored_table_has_every_row_once_with_the_models_probabilities_and_calls(trained, tiny_dataset, tmp_path):
    cfg, sm = trained
    seen = []
    r = score_dataset(sm.model, sm.threshold, tiny_dataset, tmp_path / "out.parquet", sm.version,
                      batch_rows=200, progress=seen.append)
    full = _master_table(tiny_dataset)
    out = pq.read_table(r.output)
    assert out.num_rows == r.rows == full.num_rows and r.genes == len(pc.unique(full["gene_id"]))
    assert out.schema.names == [
        "gene_id", "position", "chrom", "strand", "absolute_position", "p_neither", "p_donor", "p_acceptor",
        "splice_call", "predicted_type", "donor_score", "acceptor_score", "neither_score", "base_splice_call",
        "base_predicted_type", "model_version"]
    assert set(out["model_version"].to_pylist()) == {sm.version}
    # the whole table at once (every gene complete) gives the same probabilities as whole-gene batches
    ref = full.append_column("p", pa.array(list(sm.model.predict_proba(full)), pa.list_(pa.float64())))
    ref, out = _by_key(ref), _by_key(out)
    proba = np.column_stack([out[f"p_{c}"].to_numpy() for c in CLASSES])
    np.testing.assert_allclose(proba, np.stack(ref["p"].to_numpy(zero_copy_only=False)), rtol=0, atol=1e-12)
    calls = splice_calls(proba, sm.threshold)
    assert out["splice_call"].to_pylist() == calls["splice_call"].tolist()
    assert out["predicted_type"].to_pylist() == calls["predicted_type"].tolist()
    base = np.column_stack([np.zeros(out.num_rows), out["donor_score"].to_numpy(), out["acceptor_score"].to_numpy()])
    assert out["base_predicted_type"].to_pylist() == splice_calls(base, 0.5)["predicted_type"].tolist()
    assert r.calls == {c: out["predicted_type"].to_pylist().count(c) for c in CLASSES}
    # progress: rows so far of the total, a rate and an ETA; batches of whole genes, ~200 rows each
    assert [p.rows for p in seen] == sorted(p.rows for p in seen) and seen[-1].rows == full.num_rows
    assert len(seen) > 3 and all(p.total_rows == full.num_rows and p.rows_per_s > 0 for p in seen)
    assert seen[-1].eta_s == 0 and "rows/s" in seen[0].line() and "ETA" in seen[0].line()


def test_batches_hold_whole_genes(tiny_dataset):
    ds = open_target(tiny_dataset)
    counts = gene_layout(ds).counts
    seen = set()
    for batch in iter_gene_batches(ds, ["gene_id", "position"], batch_rows=50):
        genes, n = np.unique(batch["gene_id"].to_numpy(zero_copy_only=False), return_counts=True)
        assert all(counts[g] == k for g, k in zip(genes, n)) and not seen & set(genes)
        seen |= set(genes)
    assert seen == set(counts)


def test_a_gene_split_across_files_is_assembled(trained, tiny_dataset, tmp_path):
    """Rows of two genes spread over two new files (one also interleaved with another gene in a
    file): those genes are assembled by DuckDB and scored exactly as in the original layout."""
    cfg, sm = trained
    full = _master_table(tiny_dataset)
    genes = sorted(set(full["gene_id"].to_pylist()))
    split_a, split_b = genes[3], genes[20]
    moved = pc.is_in(full["gene_id"], pa.array([split_a, split_b]))
    rest, moving = full.filter(pc.invert(moved)), full.filter(moved)
    odd = pa.array(np.arange(moving.num_rows) % 2 == 1)
    (tmp_path / "split").mkdir()
    pq.write_table(rest, tmp_path / "split" / "a.parquet")
    pq.write_table(moving.filter(odd), tmp_path / "split" / "b.parquet")      # split_a and split_b interleaved
    pq.write_table(moving.filter(pc.invert(odd)), tmp_path / "split" / "c.parquet")
    (tmp_path / "split" / "gene_manifest.csv").write_text("not,a,parquet\n")  # ignored
    assert gene_layout(open_target(tmp_path / "split")).scattered == {split_a, split_b}
    r = score_dataset(sm.model, sm.threshold, tmp_path / "split", tmp_path / "split.parquet", sm.version, batch_rows=64)
    ref = score_dataset(sm.model, sm.threshold, tiny_dataset, tmp_path / "ref.parquet", sm.version)
    assert r.scattered_genes == 2 and r.rows == ref.rows
    a, b = _by_key(pq.read_table(r.output)), _by_key(pq.read_table(ref.output))
    assert a["gene_id"].equals(b["gene_id"]) and a["position"].equals(b["position"])
    np.testing.assert_allclose(a["p_donor"].to_numpy(), b["p_donor"].to_numpy(), rtol=0, atol=1e-12)
    assert check_coverage(open_target(tmp_path / "split"), r.output).passed


def _corrupt_column(path: Path, column: str) -> None:
    """Overwrite the bytes of ``column``'s data in every row group of an uncompressed file."""
    meta = pq.ParquetFile(path).metadata
    j = meta.schema.names.index(column)
    with open(path, "r+b") as fh:
        for rg in range(meta.num_row_groups):
            cc = meta.row_group(rg).column(j)
            start = cc.dictionary_page_offset or cc.data_page_offset
            fh.seek(start)
            fh.write(b"\xff" * cc.total_compressed_size)


def test_only_the_columns_the_model_needs_are_read(trained, tiny_dataset, tmp_path):
    """A large column the model does not use is unreadable in every file: scoring never reads it."""
    cfg, sm = trained
    (tmp_path / "wide").mkdir()
    for f in sorted((tiny_dataset / "master").glob("*.parquet")):
        t = pq.read_table(f)
        t = t.append_column("unused_blob", pa.array(["x" * 20_000] * t.num_rows))
        pq.write_table(t, tmp_path / "wide" / f.name, compression="none", use_dictionary=False)
        _corrupt_column(tmp_path / "wide" / f.name, "unused_blob")
        with pytest.raises(Exception):
            pq.read_table(tmp_path / "wide" / f.name, columns=["unused_blob"])
    r = score_dataset(sm.model, sm.threshold, tmp_path / "wide", tmp_path / "out.parquet", sm.version)
    assert r.rows == _master_table(tiny_dataset).num_rows
    assert "unused_blob" not in r.columns_read and "sequence" not in r.columns_read
    needed = {"gene_id", "position", "splice_type", "donor_score", "acceptor_score", "gene_length"}
    assert needed <= set(r.columns_read) <= set(sm.model.get_feature_names()) | needed | {
        "chrom", "strand", "absolute_position", "neither_score"}


def test_coverage_check_names_missing_and_duplicated_genes(trained, tiny_dataset, tmp_path):
    cfg, sm = trained
    r = score_dataset(sm.model, sm.threshold, tiny_dataset, tmp_path / "out.parquet", sm.version)
    ds = open_target(tiny_dataset)
    assert check_coverage(ds, r.output).passed
    out = pq.read_table(r.output)
    genes = sorted(set(out["gene_id"].to_pylist()))
    missing = out.filter(pc.not_equal(out["gene_id"], genes[5]))
    pq.write_table(missing, tmp_path / "missing.parquet")
    cov = check_coverage(ds, tmp_path / "missing.parquet")
    assert not cov.passed and cov.missing_genes == [genes[5]] and genes[5] in cov.description()
    dup_row = out.filter(pc.equal(out["gene_id"], genes[9])).slice(2, 1)
    pq.write_table(pa.concat_tables([out, dup_row]), tmp_path / "dup.parquet")
    cov = check_coverage(ds, tmp_path / "dup.parquet")
    pos = dup_row["position"][0].as_py()
    assert not cov.passed and cov.duplicates == [(genes[9], pos, 2, 1)]
    assert f"{genes[9]}:{pos}" in cov.description() and f"{genes[9]} " in cov.description()


def test_predict_calls_on_holdout_rows_are_the_calls_behind_the_holdout_f1(trained, tiny_dataset, tmp_path, capsys):
    cfg, sm = trained
    ev = reports.load_holdout_metrics(cfg)
    assert ev["scope"] == "holdout"
    threshold = sm.model.operating_point["splice_threshold"]
    assert threshold == ev["thresholds"]["consolidated"] == sm.threshold
    out = tmp_path / "pred.parquet"
    assert cli.main(["predict", "--data-root", cfg.data_root, "--input", str(tiny_dataset),
                     "--output", str(out)]) == 0
    assert "ETA" in capsys.readouterr().err
    pred = pq.read_table(out)
    holdout = set(artifacts.load_plan(cfg)["holdout_genes"])
    pred = _by_key(pred.filter(pc.is_in(pred["gene_id"], pa.array(sorted(holdout)))))
    behind = _by_key(pq.read_table(reports.report_paths(cfg)["predictions"]))
    assert pred["position"].equals(behind["position"]) and pred["gene_id"].equals(behind["gene_id"])
    p_splice = behind["p_donor"].to_numpy() + behind["p_acceptor"].to_numpy()
    assert pred["splice_call"].to_pylist() == (p_splice >= threshold).tolist()
    label = np.asarray(behind["label"].to_numpy())
    f1 = binary_splice_metrics(label > 0, pred["splice_call"].to_numpy(zero_copy_only=False).astype(float), 0.5)["f1"]
    reported = next(r for r in ev["table"] if r["model"] == "consolidated")["splice_f1"]
    assert f1 == pytest.approx(reported, abs=1e-12)


def test_labelled_target_metrics_leave_out_trained_genes_and_label_the_threshold(trained):
    cfg, sm = trained
    cfg = replace(cfg, scoring=replace(cfg.scoring, targets={"self": cfg.dataset}))
    s = stages.run_scoring(cfg, "self")
    assert s["model_version"] == sm.version == artifacts.model_store(cfg).current_id()
    m = s["metrics"]
    holdout = artifacts.load_plan(cfg)["holdout_genes"]
    assert m["genes"] == len(holdout) and m["genes_excluded_trained_on"] == s["genes"] - len(holdout)
    sources = [(r["model"], r["threshold_source"]) for r in m["table"]]
    assert [src for _, src in sources].count("chosen on the target itself (F1-optimal on these rows: optimistic)") == 2
    stored = next(r for r in m["table"] if r["model"] == "model" and r["splice_threshold"] == sm.threshold)
    reported = next(r for r in reports.load_holdout_metrics(cfg)["table"] if r["model"] == "consolidated")
    for k in ("splice_f1", "splice_ap", "macro_f1", "base_splice_f1"):
        assert stored[k] == pytest.approx(reported[k], abs=1e-9), k
    best = next(r for r in m["table"] if r["model"] == "model" and r is not stored)
    assert best["splice_f1"] >= stored["splice_f1"]
    assert pq.read_table(scored_paths(cfg, "self")["metrics"]).num_rows == 4
    assert read_json(scored_paths(cfg, "self")["summary"])["metrics"]["scope"] == "target genes the model did not train on"


def test_unlabelled_target_and_bad_targets(trained, tiny_dataset, tmp_path):
    cfg, sm = trained
    f = sorted((tiny_dataset / "master").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(f).drop_columns(["splice_type"]), tmp_path / "unlabelled.parquet")
    r = score_dataset(sm.model, sm.threshold, tmp_path / "unlabelled.parquet", tmp_path / "o.parquet", sm.version,
                      collect_labels=True)
    assert not r.labelled and r.labelled_rows is None and r.rows == pq.read_metadata(f).num_rows
    pq.write_table(pq.read_table(f).drop_columns(["gene_length"]), tmp_path / "no_length.parquet")
    with pytest.raises(DatasetError, match="gene_length"):
        score_dataset(sm.model, sm.threshold, tmp_path / "no_length.parquet", tmp_path / "o2.parquet", sm.version)
    t = pq.read_table(f)
    gene = pc.if_else(pc.equal(t["gene_id"], t["gene_id"][0]), pa.scalar(None, pa.string()), t["gene_id"])
    pq.write_table(t.set_column(t.schema.get_field_index("gene_id"), "gene_id", gene), tmp_path / "null_gene.parquet")
    with pytest.raises(DatasetError, match="null_gene.parquet"):
        score_dataset(sm.model, sm.threshold, tmp_path / "null_gene.parquet", tmp_path / "o3.parquet", sm.version)
    assert not (tmp_path / "o2.parquet").exists() and not (tmp_path / "o3.parquet").exists()
    instance = next((sm.path / "instances").iterdir())
    with pytest.raises(ModelError, match="operating point"):
        resolve_scoring_model(instance)
    assert resolve_scoring_model(instance, threshold=0.4).version.startswith("instance-")


def test_a_target_that_does_not_declare_the_candidate_rows_is_scored_with_a_warning(trained, tiny_dataset, tmp_path,
                                                                                      capsys):
    """The gene-context features are exact only where every candidate is a row: scoring reads the
    target's declaration and says when it does not guarantee them (the rows are scored anyway)."""
    cfg, sm = trained
    declared = score_dataset(sm.model, sm.threshold, tiny_dataset, tmp_path / "a.parquet", sm.version)
    assert declared.gene_context.candidates_declared and declared.gene_context.warning is None
    assert str(tiny_dataset / "dataset.json") in declared.summary()["gene_context"]["reason"]
    # the same rows without a declaration, then with one that guarantees only positions scoring >= 0.1
    bare = tmp_path / "bare"
    (bare / "master").mkdir(parents=True)
    for f in (tiny_dataset / "master").glob("*.parquet"):
        (bare / "master" / f.name).write_bytes(f.read_bytes())
    undeclared = score_dataset(sm.model, sm.threshold, bare, tmp_path / "b.parquet", sm.version)
    assert not undeclared.gene_context.candidates_declared
    assert "has no dataset.json" in undeclared.gene_context.warning
    assert "gene-context features" in undeclared.summary()["gene_context"]["warning"]
    assert pq.read_table(tmp_path / "b.parquet").equals(pq.read_table(tmp_path / "a.parquet"))   # scored alike
    (bare / "dataset.json").write_text('{"row_selection": {"every_position_with_max_score_at_least": 0.1}}')
    coarse = score_dataset(sm.model, sm.threshold, bare, tmp_path / "c.parquet", sm.version)
    assert not coarse.gene_context.candidates_declared and "≥ 0.1 as a row" in coarse.gene_context.warning
    assert cli.main(["predict", "--data-root", cfg.data_root, "--input", str(bare), "--output",
                     str(tmp_path / "d.parquet"), "--quiet"]) == 0
    assert "warning: the model reads gene-context features" in capsys.readouterr().err
    s = stages.run_scoring(replace(cfg, scoring=replace(cfg.scoring, targets={"bare": str(bare)})), "bare")
    assert s["gene_context"]["candidates_declared"] is False and "≥ 0.1" in s["gene_context"]["reason"]
    assert read_json(scored_paths(cfg, "bare")["summary"])["gene_context"] == s["gene_context"]
    # a model without gene-context features has nothing to check
    plain = [f for f in sm.model.get_feature_names() if f not in GENE_CONTEXT_FEATURES]
    assert gene_context_check(open_target(bare), plain) is None


def test_predict_help_describes_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    text = capsys.readouterr().out
    predict = cli.parser()._subparsers._group_actions[0].choices["predict"]
    for action in predict._actions:
        assert action.help, f"predict {action.option_strings} has no help"
        assert all(flag in text for flag in action.option_strings)
    assert "current" in text and "whole-gene" in text


def test_a_failed_scoring_run_leaves_the_previous_output(trained, tiny_dataset, tmp_path):
    cfg, sm = trained
    out = tmp_path / "scored.parquet"
    score_dataset(sm.model, sm.threshold, tiny_dataset, out, sm.version)
    before = out.read_bytes()
    (tmp_path / "bad").mkdir()
    files = sorted((tiny_dataset / "master").glob("*.parquet"))
    for f in files[:-1]:
        pq.write_table(pq.read_table(f), tmp_path / "bad" / f.name)
    t = pq.read_table(files[-1])
    i = t.schema.get_field_index("splice_type")
    bad = pc.if_else(pc.equal(pa.array(np.arange(t.num_rows)), t.num_rows - 1), pa.scalar("exon"), t["splice_type"])
    pq.write_table(t.set_column(i, "splice_type", bad), tmp_path / "bad" / files[-1].name)
    with pytest.raises(DatasetError, match="exon"):
        score_dataset(sm.model, sm.threshold, tmp_path / "bad", out, sm.version, batch_rows=100)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
