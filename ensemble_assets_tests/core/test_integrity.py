"""Integrity audits: gene-disjoint folds and single features that separate the classes."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.screening import ScreeningSettings, feature_columns, screen_features
from ensemble_assets.core.evaluation.integrity import fold_violations, separating_features, single_feature_auc


def _instance_dir(tmp_path, folds, oof_genes, oof_folds, early_stopping=None):
    d = tmp_path / "inst"
    d.mkdir(exist_ok=True)
    genes = list(folds)
    pq.write_table(pa.table({"gene_id": genes, "fold": list(folds.values()),
                             "early_stopping_in_folds": early_stopping or [""] * len(genes)}), d / "folds.parquet")
    pq.write_table(pa.table({"gene_id": oof_genes, "fold": pa.array(oof_folds, pa.int16())}),
                   d / "oof_predictions.parquet")
    return d


def test_clean_instance_has_no_fold_violation(tmp_path):
    d = _instance_dir(tmp_path, {"a": 0, "b": 1, "c": 2}, ["a", "a", "b", "c"], [0, 0, 1, 2], ["1", "2", "0"])
    assert fold_violations(d) == []


def test_gene_in_two_folds_is_named(tmp_path):
    d = _instance_dir(tmp_path, {"a": 0, "b": 1, "c": 2}, ["a", "a", "b", "c"], [0, 1, 1, 2])
    problems = fold_violations(d)
    assert len(problems) == 1 and "a (folds [0, 1])" in problems[0]


def test_gene_listed_twice_moved_or_used_for_its_own_early_stopping_is_named(tmp_path):
    d = _instance_dir(tmp_path, {"a": 0, "b": 1}, ["a", "b"], [0, 1], ["", "1"])
    assert any("early stopping" in p and "b" in p for p in fold_violations(d))
    d = _instance_dir(tmp_path, {"a": 0, "b": 1}, ["a", "b"], [0, 0])
    assert any("other than their own" in p and "b" in p for p in fold_violations(d))
    pq.write_table(pa.table({"gene_id": ["a", "a", "b"], "fold": [0, 1, 1]}), d / "folds.parquet")
    assert any("more than once" in p and "a" in p for p in fold_violations(d))


def test_single_feature_auc_matches_sklearn_in_either_direction():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    X = np.column_stack([rng.normal(size=500) + y, -(rng.normal(size=500) + 2 * y), rng.integers(0, 3, 500),
                         np.ones(500)]).astype(np.float32)
    got = single_feature_auc(X, y, chunk=3)
    for j in range(3):
        a = roc_auc_score(y, X[:, j])
        assert got[j] == pytest.approx(max(a, 1 - a))
    assert got[3] == pytest.approx(0.5)  # constant column: no separation


def test_structural_leak_columns_are_caught_when_re_included(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    genes = build_gene_inventory(ds, threads=1)[0].column("gene_id").to_pylist()
    leaky, fill = feature_columns(screen_features(ds, genes, ScreeningSettings(include_structural=True), threads=1))
    offenders, info = separating_features(ds, genes, leaky, fill, 0.99)
    names = {o["feature"] for o in offenders}
    # the correlation screen lets these through; alone they separate splice sites perfectly
    assert {"num_exons", "total_exon_length"} <= names
    assert all(o["auc"] >= 0.99 for o in offenders)
    clean, fill = feature_columns(screen_features(ds, genes, ScreeningSettings(), threads=1))
    offenders, info = separating_features(ds, genes, clean, fill, 0.99)
    assert offenders == [] and info["max_auc"] < 0.99 and info["rows"] > 0


@pytest.mark.realdata
def test_atha_structural_leak_columns_are_caught_and_real_features_are_not(atha_chr1):
    """On the real Arabidopsis chromosome, the back-filled structural columns separate splice
    sites alone (this is how a model reaches F1 1.00); the base scores do not."""
    ds = open_dataset(atha_chr1)
    genes = sorted(set(pq.read_table(ds.files[0], columns=["gene_id"]).column(0).to_pylist()))[:80]
    leaks = ["num_exons", "avg_exon_length", "median_exon_length", "total_exon_length", "total_intron_length",
             "distance_to_start", "distance_to_end", "has_tx_info", "missing_transcript_feats"]
    real = ["donor_score", "acceptor_score", "splice_probability", "gc_content", "3mer_GTA", "gene_length"]
    offenders, info = separating_features(ds, genes, leaks + real, {f: 0.0 for f in leaks + real}, 0.99)
    flagged = {o["feature"] for o in offenders}
    assert set(leaks) <= flagged and not (set(real) & flagged)
    assert info["genes"] == 80
