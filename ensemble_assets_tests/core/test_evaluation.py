"""Evaluation honesty on constructed predictions: thresholds come from out-of-fold rows only,
holdout genes that were trained on are refused, top-k counts negatives, overlap pooling."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score

from ensemble_assets.core.data.contract import DatasetError
from ensemble_assets.core.evaluation import holdout as evaluation
from ensemble_assets.core.evaluation.holdout import (
    OUT_OF_FOLD,
    ScoredRows,
    choose_threshold,
    crossfit_thresholds,
    evaluate_models,
    gene_groups,
    pool_oof,
)
from ensemble_assets.core.evaluation.metrics import evaluate, topk_accuracy


def _rows(genes, label, p_splice, seed=0, fold=None):
    """Rows with a given splice probability (split evenly donor/acceptor) and base scores."""
    rng = np.random.default_rng(seed)
    label = np.asarray(label)
    p_splice = np.asarray(p_splice, dtype=np.float64)
    proba = np.column_stack([1 - p_splice, p_splice / 2, p_splice / 2])
    b = np.clip(p_splice + rng.normal(0, 0.2, len(label)), 0.01, 0.99)
    base = np.column_stack([1 - b, b / 2, b / 2])
    return ScoredRows(gene_id=np.asarray(genes, dtype=object), position=np.arange(len(label)), label=label,
                      base=base, proba=proba, raw=proba.copy(), group=None if fold is None else np.asarray(fold))


def _separable(n, lo_neg, hi_neg, lo_pos, hi_pos, seed, prefix, offset=0.0):
    """Half positives (donor) with splice probability in [lo_pos, hi_pos], half negatives in
    [lo_neg, hi_neg]; every probability unique (``offset`` keeps two sets of rows apart)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, dtype=np.int64), np.zeros(n - n // 2, dtype=np.int64)]
    p = np.r_[rng.uniform(lo_pos, hi_pos, n // 2), rng.uniform(lo_neg, hi_neg, n - n // 2)] + offset
    genes = [f"{prefix}{i // 10:03d}" for i in range(n)]
    return genes, y, p


@pytest.fixture
def one_member(tmp_path, monkeypatch):
    """A consolidated model of one member whose out-of-fold and holdout predictions are given."""
    def install(oof: ScoredRows, holdout: ScoredRows, trained_genes):
        pq.write_table(pa.table({"gene_id": sorted(set(trained_genes)), "fold": [0] * len(set(trained_genes))}),
                       tmp_path / "folds.parquet")
        monkeypatch.setattr(evaluation, "ensemble_members",
                            lambda d: [{"partition_key": "s00-test", "weight": 1.0, "dir": tmp_path}])
        monkeypatch.setattr(evaluation, "read_oof", lambda d: oof)
        monkeypatch.setattr(evaluation, "predict_rows",
                            lambda d, ds, genes, batch_rows: {"s00-test": holdout, "consolidated": holdout})
        return tmp_path
    return install


def test_holdout_thresholds_are_chosen_on_out_of_fold_rows_never_on_holdout_rows(one_member, monkeypatch):
    # out-of-fold: positives 0.25-0.45, negatives 0-0.3 → best threshold ≈ 0.3
    g_oof, y_oof, p_oof = _separable(400, 0.0, 0.3, 0.25, 0.45, 1, "T")
    # holdout: positives 0.65-0.9, negatives 0.3-0.7 → its own best threshold ≈ 0.65; 0.3 flags every row
    g_ho, y_ho, p_ho = _separable(200, 0.3, 0.7, 0.65, 0.9, 2, "H", offset=1e-9)
    oof, holdout = _rows(g_oof, y_oof, p_oof), _rows(g_ho, y_ho, p_ho)
    model_dir = one_member(oof, holdout, g_oof)
    seen: list[np.ndarray] = []
    real = evaluation.choose_threshold
    monkeypatch.setattr(evaluation, "choose_threshold", lambda y, s: seen.append(np.asarray(s)) or real(y, s))

    ev = evaluate_models(model_dir, object(), sorted(set(g_ho)))
    assert ev.scope == "holdout"
    cons = next(r for r in ev.table if r["model"] == "consolidated")
    oof_thr = real(y_oof > 0, p_oof)
    assert cons["splice_threshold"] == pytest.approx(oof_thr) and oof_thr < 0.35
    assert cons["splice_f1"] == pytest.approx(f1_score(y_ho > 0, p_ho >= oof_thr))
    # had the threshold been fitted on the holdout rows, F1 would be far higher
    assert f1_score(y_ho > 0, p_ho >= real(y_ho > 0, p_ho)) > cons["splice_f1"] + 0.1
    # no call ever saw a holdout score
    holdout_scores = set(np.round(p_ho, 12)) | set(np.round(holdout.base_splice, 12))
    assert seen and all(not (set(np.round(s, 12)) & holdout_scores) for s in seen)
    # the base model's threshold also comes from the out-of-fold rows
    base = next(r for r in ev.table if r["model"] == "base")
    assert base["splice_threshold"] == pytest.approx(real(y_oof > 0, oof.base_splice))
    assert cons["base_splice_threshold"] == 0.5


def test_holdout_genes_that_were_trained_on_are_refused(one_member):
    g, y, p = _separable(100, 0, 0.5, 0.5, 1, 3, "G")
    rows = _rows(g, y, p)
    model_dir = one_member(rows, rows, g)
    with pytest.raises(DatasetError, match="G000"):
        evaluate_models(model_dir, object(), ["G000"])


def test_without_holdout_genes_figures_are_out_of_fold_with_cross_fitted_thresholds(one_member):
    ga, ya, pa_ = _separable(200, 0.55, 0.75, 0.7, 0.95, 4, "A")
    gb, yb, pb = _separable(200, 0.0, 0.25, 0.2, 0.5, 5, "B", offset=1e-9)
    fold = np.r_[np.zeros(200, dtype=np.int64), np.ones(200, dtype=np.int64)]
    oof = _rows(ga + gb, np.r_[ya, yb], np.r_[pa_, pb], fold=fold)
    model_dir = one_member(oof, oof, ga + gb)
    ev = evaluate_models(model_dir, None, [])
    assert ev.scope == OUT_OF_FOLD and "out-of-fold" in ev.scope_note
    inst = next(r for r in ev.table if r["model"] == "s00-test")
    thr = crossfit_thresholds(oof.y_splice, oof.p_splice, fold)
    # group A is thresholded with B's value and vice versa — never with its own
    assert thr[:200] == pytest.approx(choose_threshold(yb > 0, pb))
    assert thr[200:] == pytest.approx(choose_threshold(ya > 0, pa_))
    assert thr[0] != pytest.approx(choose_threshold(ya > 0, pa_))
    assert inst["splice_f1"] == pytest.approx(f1_score(oof.y_splice, oof.p_splice >= thr))
    in_sample = f1_score(oof.y_splice, oof.p_splice >= choose_threshold(oof.y_splice, oof.p_splice))
    assert inst["splice_f1"] < in_sample - 0.05


def test_choose_threshold_maximises_f1_on_the_rows_given():
    y = np.array([0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    t = choose_threshold(y, s)
    assert t in (0.3, 0.8)
    best = max(f1_score(y, s >= v) for v in s)
    assert f1_score(y, s >= t) == pytest.approx(best)
    assert choose_threshold(np.zeros(4), np.linspace(0, 1, 4)) == 0.5  # no positives: the default


def test_topk_counts_negatives():
    # gene a: 2 sites; a negative outranks one of them → 1 hit of k=2
    # gene b: 1 site, ranked first → 1 hit of k=1; gene c: no site → k=0, adds nothing
    gene = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    score = np.array([0.9, 0.5, 0.7, 0.1, 0.6, 0.2, 0.99, 0.98])
    assert topk_accuracy(gene, y, score) == pytest.approx(2 / 3)
    # gene order in the arrays does not matter
    perm = np.random.default_rng(0).permutation(len(gene))
    assert topk_accuracy(gene[perm], y[perm], score[perm]) == pytest.approx(2 / 3)
    proba = np.column_stack([1 - score, score, np.zeros_like(score)])
    assert evaluate(y, proba, gene)["topk_donor"] == pytest.approx(2 / 3)


def test_pool_oof_averages_overlap_genes_with_member_weights():
    a = _rows(["g1", "g1", "g2"], [1, 0, 0], [0.8, 0.2, 0.1])
    b = _rows(["g2", "g3", "g1", "g1"], [0, 1, 1, 0], [0.3, 0.9, 0.4, 0.6])
    a.position, b.position = np.array([10, 11, 20]), np.array([20, 30, 10, 11])
    b.base = a.base[[2, 0, 0, 1]]  # same rows, same base scores
    pooled = pool_oof([(0.75, a), (0.25, b)])
    got = {(g, i): p for g, i, p in zip(pooled.gene_id, pooled.position, pooled.p_splice)}
    assert len(pooled) == 4
    # g1 rows: 0.75·0.8 + 0.25·0.4 and 0.75·0.2 + 0.25·0.6; g2: 0.75·0.1 + 0.25·0.3; g3 only in b
    assert sorted(np.round(pooled.p_splice, 6)) == sorted(np.round([0.7, 0.3, 0.15, 0.9], 6))
    assert got[("g3", 30)] == pytest.approx(0.9)
    assert got[("g1", 10)] == pytest.approx(0.7) and got[("g1", 11)] == pytest.approx(0.3)
    assert np.allclose(pooled.proba.sum(axis=1), 1.0)
    bad = _rows(["g1", "g1"], [0, 0], [0.5, 0.5])  # g1's first row labelled differently
    bad.position = np.array([10, 11])
    with pytest.raises(DatasetError, match="g1"):
        pool_oof([(0.5, a), (0.5, bad)])


def test_gene_groups_keep_each_gene_in_one_group():
    genes = np.array([f"g{i % 17}" for i in range(200)], dtype=object)
    grp = gene_groups(genes, 5, seed=1)
    assert set(grp.tolist()) == set(range(5))
    for g in set(genes.tolist()):
        assert len(set(grp[genes == g].tolist())) == 1


def _unnormalised_base(n, seed, prefix):
    """Rows whose base scores do not sum to exactly 1 (like atha_chr1's, but ±2%), with many
    splice scores close together, so renormalising them would move rows across a threshold."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    splice = np.clip(0.5 + 0.12 * (y - 0.5) + rng.normal(0, 0.1, n), 0.01, 0.98)
    total = 1 + rng.uniform(-0.02, 0.02, n)
    base = np.column_stack([total - splice, splice / 2, splice / 2])
    genes = np.asarray([f"{prefix}{i // 10:03d}" for i in range(n)], dtype=object)
    return ScoredRows(gene_id=genes, position=np.arange(n), label=y, base=base,
                      proba=np.column_stack([1 - splice, splice / 2, splice / 2]), raw=None)


def test_the_base_row_and_the_base_columns_agree_at_the_same_threshold(one_member):
    """The base row's splice F1 and every row's base_splice_f1_at_oof_threshold are one figure: both
    threshold the base model's donor + acceptor as the dataset holds it (not renormalised)."""
    oof, holdout = _unnormalised_base(3000, 7, "T"), _unnormalised_base(3000, 8, "H")
    model_dir = one_member(oof, holdout, oof.gene_id)
    ev = evaluate_models(model_dir, object(), sorted(set(holdout.gene_id)))
    base = next(r for r in ev.table if r["model"] == "base")
    cons = next(r for r in ev.table if r["model"] == "consolidated")
    thr = choose_threshold(oof.y_splice, oof.base_splice)
    assert base["splice_threshold"] == cons["base_splice_threshold_oof"] == pytest.approx(thr)
    assert base["splice_f1"] == cons["base_splice_f1_at_oof_threshold"] == base["base_splice_f1_at_oof_threshold"]
    assert base["splice_f1"] == pytest.approx(f1_score(holdout.y_splice, holdout.base_splice >= thr))
    assert base["splice_f1_at_0.5"] == base["base_splice_f1"] == cons["base_splice_f1"]  # the base @0.5 row
    # the renormalised scores would have given another figure: the test tells the two apart
    renormalised = (holdout.base[:, 1] + holdout.base[:, 2]) / holdout.base.sum(axis=1)
    assert f1_score(holdout.y_splice, renormalised >= thr) != pytest.approx(base["splice_f1"], abs=1e-6)


def test_declared_rows_figures_count_only_the_rows_selected_without_labels(one_member):
    """Below the declared minimum score a dataset holds rows because of their labels; the declared_*
    figures leave those rows out and keep the headline's out-of-fold thresholds."""
    g_oof, y_oof, p_oof = _separable(400, 0.0, 0.5, 0.3, 0.9, 11, "T")
    g_ho, y_ho, p_ho = _separable(400, 0.0, 0.5, 0.3, 0.9, 12, "H", offset=1e-9)
    oof, holdout = _rows(g_oof, y_oof, p_oof), _rows(g_ho, y_ho, p_ho)
    # every row scores >= 0.02 but half the holdout sites, which are rows only because they are sites
    holdout.base[:, 1:] = np.maximum(holdout.base[:, 1:], 0.03)
    low = np.flatnonzero(y_ho > 0)[::2]
    holdout.base[low] = [0.99, 0.004, 0.006]
    model_dir = one_member(oof, holdout, g_oof)
    ev = evaluate_models(model_dir, object(), sorted(set(g_ho)), declared_min_score=0.02)
    cons = next(r for r in ev.table if r["model"] == "consolidated")
    base = next(r for r in ev.table if r["model"] == "base")
    keep = np.maximum(holdout.base[:, 1], holdout.base[:, 2]) >= 0.02
    assert cons["declared_rows"] == int(keep.sum()) == len(y_ho) - len(low)
    assert cons["sites_below_declared"] == len(low) and cons["declared_sites"] == int((y_ho[keep] > 0).sum())
    thr, base_thr = cons["splice_threshold"], base["splice_threshold"]
    assert cons["declared_splice_f1"] == pytest.approx(f1_score(y_ho[keep] > 0, p_ho[keep] >= thr))
    assert cons["declared_splice_f1"] != pytest.approx(cons["splice_f1"])   # other rows, another figure
    assert cons["declared_base_splice_f1"] == base["declared_splice_f1"] == pytest.approx(
        f1_score(y_ho[keep] > 0, holdout.base_splice[keep] >= base_thr))
    assert f"{len(low):,} of {int((y_ho > 0).sum()):,} sites" in ev.declared_rows_note and "≥ 0.02" in ev.declared_rows_note
    # without a declared minimum there are no declared figures, and the note says why
    ev = evaluate_models(model_dir, object(), sorted(set(g_ho)))
    assert all("declared_splice_f1" not in r for r in ev.table) and "does not declare" in ev.declared_rows_note


def test_out_of_fold_figures_of_several_overlapping_instances(tiny_dataset, tmp_path):
    """train_all_genes with several instances: each instance's rows are not the pooled rows, so the
    base model's cross-fitted thresholds reach them by gene (this used to fail on mismatched shapes)."""
    from ensemble_assets.core import stages
    from ensemble_assets.core.artifacts import paths
    from ensemble_assets_tests.conftest import make_config

    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=20, train_all_genes=True)
    stages.run_inventory(cfg)
    stages.run_screening(cfg)
    subsets = stages.run_plan(cfg)["subsets"]
    assert len(subsets) >= 2
    for s in subsets:
        stages.run_instance(cfg, s["key"])
    stages.run_consolidation(cfg)
    ev = evaluate_models(paths(cfg)["consolidated"], None, [], declared_min_score=0.02)
    pooled = ev.scored["consolidated"]
    base = next(r for r in ev.table if r["model"] == "base")
    # the base model's threshold of each gene, as the pooled rows carry it (one per gene group)
    groups = gene_groups(pooled.gene_id, 5, 42)
    per_gene = {}
    for g in np.unique(groups):
        thr = choose_threshold(pooled.y_splice[groups != g], pooled.base_splice[groups != g])
        per_gene.update({gene: thr for gene in pooled.gene_id[groups == g]})
    assert base["splice_f1"] == pytest.approx(
        f1_score(pooled.y_splice, pooled.base_splice >= np.array([per_gene[g] for g in pooled.gene_id])))
    for s in subsets:
        rows, row = ev.scored[s["key"]], next(r for r in ev.table if r["model"] == s["key"])
        assert len(rows) < len(pooled)
        thr = np.array([per_gene[g] for g in rows.gene_id])
        assert row["base_splice_f1_at_oof_threshold"] == pytest.approx(f1_score(rows.y_splice, rows.base_splice >= thr))
        keep = np.maximum(rows.base[:, 1], rows.base[:, 2]) >= 0.02
        assert row["declared_base_splice_f1"] == pytest.approx(
            f1_score(rows.y_splice[keep], rows.base_splice[keep] >= thr[keep]))


@pytest.mark.parametrize("boosters", [("neither", "donor", "acceptor"), ("multiclass",)])
def test_learning_curves_have_one_panel_per_booster_of_the_kind(tmp_path, boosters):
    """One-vs-rest kinds plot a panel per class; multi-class kinds their one model (no empty panels)."""
    import warnings

    from matplotlib import image

    from ensemble_assets.core.evaluation import plots

    it = np.tile(np.arange(5), 2 * len(boosters))
    curves = {"s00-a": {"class": np.repeat(boosters, 10), "iteration": it,
                        "val_logloss": np.linspace(0.5, 0.2, len(it)), "train_logloss": np.linspace(0.4, 0.1, len(it))}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # an empty panel's legend warns
        path = plots.learning_curves(curves, tmp_path / "lc.png")
    width = image.imread(path).shape[1]
    assert (width > 1000) == (len(boosters) == 3)   # three panels side by side, or one
