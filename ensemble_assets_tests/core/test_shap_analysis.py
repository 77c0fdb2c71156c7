"""Ensemble SHAP on small generated data: exact TreeSHAP, additivity, weights, by-name aggregation,
the sampled rows, the legacy CSV."""

import csv
import itertools
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.features import CandidateIndex, to_feature_matrix
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.screening import feature_columns, screen_features
from ensemble_assets.core.explanation.aggregation import (
    LEGACY_COLUMNS,
    LEGACY_CSV,
    aggregate,
    feature_type_table,
    rank_agreement,
)
from ensemble_assets.core.explanation.explainers import (
    AdditivityError,
    additivity_error,
    check_additivity,
    permutation_contributions,
    tree_contributions,
)
from ensemble_assets.core.explanation.results import InstanceShap
from ensemble_assets.core.explanation.sampling import load_samples, occurrence_in_group, request_from_oof
from ensemble_assets.core.explanation.settings import SCALES, ShapSettings
from ensemble_assets.core.explanation.shap_analysis import compute_ensemble_shap
from ensemble_assets.core.io import read_json, write_json
from ensemble_assets.core.model.ensemble import consolidate, load_model
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets_tests.conftest import FAST_TRAINING

# ---------------------------------------------------------------------------------------------
# exact TreeSHAP and additivity on a small model
# ---------------------------------------------------------------------------------------------


def _trees(booster):
    return [json.loads(t) for t in booster.get_dump(with_stats=True, dump_format="json")]


def _expected(node, x, known):
    """E[tree(x) | x_S] with the tree's own cover as the distribution (path-dependent TreeSHAP)."""
    if "leaf" in node:
        return node["leaf"]
    kids = {c["nodeid"]: c for c in node["children"]}
    f = int(node["split"][1:]) if node["split"].startswith("f") and node["split"][1:].isdigit() else node["split"]
    if f in known:
        nxt = node["yes"] if x[f] < node["split_condition"] else node["no"]
        return _expected(kids[nxt], x, known)
    yes, no = kids[node["yes"]], kids[node["no"]]
    return (yes["cover"] * _expected(yes, x, known) + no["cover"] * _expected(no, x, known)) / node["cover"]


def _shapley(v, F):
    """Shapley values of the coalition value function ``v`` by enumerating every coalition (the
    definition, no algorithm); ``v`` may return an array (one value per output)."""
    phi = [0.0] * F
    for j in range(F):
        rest = [k for k in range(F) if k != j]
        for r in range(F):
            for S in itertools.combinations(rest, r):
                w = math.factorial(r) * math.factorial(F - r - 1) / math.factorial(F)
                phi[j] = phi[j] + w * (v(S + (j,)) - v(S))
    return np.asarray(phi)


def _brute_force_shap(booster, x, names, base_margin):
    """Path-dependent Shapley values of a booster (the tree's cover as the distribution)."""
    trees = _trees(booster)
    xs = dict(zip(names, x))

    def v(S):
        return base_margin + sum(_expected(t, xs, {names[j] for j in S}) for t in trees)

    return _shapley(v, len(names)), v(())


@pytest.fixture(scope="module")
def small_model():
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, size=(600, 5)).astype(np.float32)
    X[:, 4] = 2.0  # constant: no tree can split on it
    y = (((X[:, 0] > 1) & (X[:, 1] > 0)) | (X[:, 2] == 3)).astype(np.float32)
    names = ["a", "b", "c", "d", "e"]
    b = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "base_score": 0.3, "eta": 0.3},
                  xgb.DMatrix(X, label=y, feature_names=names), num_boost_round=12)
    return b, X, names


def test_tree_contributions_are_exact_shapley_values_and_additive(small_model):
    booster, X, names = small_model
    contribs, margin = tree_contributions(booster, X, names, chunk_rows=64, nthread=1)
    assert contribs.shape == (len(X), len(names) + 1)
    # additivity: contributions + bias reproduce the margin on every row
    assert check_additivity(contribs, margin, 1e-5, "small model") < 1e-5
    assert np.allclose(margin, booster.predict(__import__("xgboost").DMatrix(X, feature_names=names),
                                               output_margin=True), atol=1e-6)
    # exact (not the Saabas approximation, which is additive too): Shapley values by enumeration
    base_margin = math.log(0.3 / 0.7)
    for i in (0, 7, 123, 599):
        phi, bias = _brute_force_shap(booster, X[i], names, base_margin)
        assert np.allclose(contribs[i, :-1], phi, atol=1e-4), (contribs[i, :-1], phi)
        assert contribs[i, -1] == pytest.approx(bias, abs=1e-4)
    assert (contribs[:, 4] == 0).all()  # the unused feature gets nothing
    whole, _ = tree_contributions(booster, X, names, chunk_rows=10_000, nthread=1)
    assert np.array_equal(whole, contribs)  # chunking changes nothing


def test_additivity_failure_is_an_error_above_the_tolerance(small_model):
    booster, X, names = small_model
    contribs, margin = tree_contributions(booster, X, names, chunk_rows=100, nthread=1)
    broken = contribs.copy()
    broken[5, 2] += 0.01
    with pytest.raises(AdditivityError, match=r"small model.*1e-3|small model.*0.001"):
        check_additivity(broken, margin, 1e-3, "small model")
    assert check_additivity(broken, margin, 0.02, "small model") == pytest.approx(0.01, abs=1e-5)


def test_occurrence_in_group_counts_earlier_rows_with_the_same_keys():
    assert occurrence_in_group(np.array([2, 0, 2, 2, 1, 0])).tolist() == [0, 0, 1, 2, 0, 1]
    assert occurrence_in_group(np.array([1, 1, 1, 1]), np.array([5, 6, 5, 5])).tolist() == [0, 0, 1, 2]


# ---------------------------------------------------------------------------------------------
# aggregation by name, weights, agreement (hand-made per-instance results)
# ---------------------------------------------------------------------------------------------


def _result(key, features, mean_abs):
    m = np.asarray(mean_abs, dtype=float)
    return InstanceShap(key, features, m, m, [0.0] * 3, [0.0] * 3, pa.table({}),
                       {"rows": 10, "method_id": "treeshap_xgboost", "scale": SCALES["ovr"]})


def test_aggregate_matches_features_by_name_and_uses_normalised_weights_without_1_over_n():
    a = _result("A", ["x", "y"], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    b = _result("B", ["z", "x"], [[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])  # other order, z only in B
    agg = aggregate({"A": a, "B": b}, {"A": 3.0, "B": 1.0})
    assert agg.weights.tolist() == [0.75, 0.25]
    assert agg.features == ["x", "y", "z"]
    x, y, z = 0, 1, 2
    assert agg.per_class[:, x].tolist() == pytest.approx([0.75 * 1 + 0.25 * 20, 0.75 * 3 + 0.25 * 40, 0.75 * 5 + 0.25 * 60])
    assert agg.per_class[:, y].tolist() == pytest.approx([0.75 * 2, 0.75 * 4, 0.75 * 6])   # absent in B: 0
    assert agg.per_class[:, z].tolist() == pytest.approx([0.25 * 10, 0.25 * 30, 0.25 * 50])  # absent in A: 0
    assert agg.ensemble == pytest.approx(agg.per_class.mean(axis=0))
    assert agg.present.tolist() == [[True, True, False], [True, False, True]]


def test_rank_agreement_and_feature_type_breakdown():
    feats = ["3mer_AAA", "5mer_GTAAG", "donor_score", "gc_content"]
    a = _result("A", feats, [[1, 2, 3, 4]] * 3)
    b = _result("B", feats, [[2, 4, 6, 8]] * 3)      # same ranking
    c = _result("C", feats, [[4, 3, 2, 1]] * 3)      # reversed ranking
    agg = aggregate({"A": a, "B": b, "C": c}, {"A": 1, "B": 1, "C": 1})
    ag = {(r["scope"], r["instance_a"], r["instance_b"]): r for r in rank_agreement(agg, top_n=2).to_pylist()}
    assert ag[("donor", "A", "B")]["spearman"] == pytest.approx(1.0)
    assert ag[("donor", "A", "C")]["spearman"] == pytest.approx(-1.0)
    assert ag[("ensemble", "A", "B")]["top_n_overlap"] == 1.0 and ag[("ensemble", "A", "C")]["top_n_overlap"] == 0.0
    # agreeing on the top features but not on the tail: spearman_top sees only the top
    d = _result("D", feats, [[2, 1, 3, 4]] * 3)
    ag2 = rank_agreement(aggregate({"A": a, "D": d}, {"A": 1, "D": 1}), top_n=2).to_pylist()[0]
    assert ag2["spearman"] == pytest.approx(0.8) and ag2["spearman_top"] == pytest.approx(1.0)
    types = {r["group"]: r for r in feature_type_table(agg).to_pylist()}
    assert set(types) == {"3-mer", "5-mer", "base_score", "sequence", "k-mer (all)", "non-k-mer (all)"}
    total = agg.ensemble.sum()
    assert types["k-mer (all)"]["share_mean"] == pytest.approx(agg.ensemble[:2].sum() / total)
    assert types["k-mer (all)"]["n_features"] == 2
    assert sum(r["share_donor"] for g, r in types.items() if r["kind"] != "total") == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# a real two-instance ensemble on generated data
# ---------------------------------------------------------------------------------------------

ONLY_IN_B = "donor_score"
SETTINGS = ShapSettings(sample_rows=250, nthread=1, chunk_rows=100, top_n=10)


@pytest.fixture(scope="module")
def ensemble(tiny_dataset, tmp_path_factory):
    """Instance A lacks donor_score and lists its features in reverse order; B has them all.
    The consolidated manifest's weights are set to 4:1 (not normalised) to make them unmistakable."""
    root = tmp_path_factory.mktemp("shap")
    ds = open_dataset(tiny_dataset)
    inv, _ = build_gene_inventory(ds, threads=1)
    genes = inv.column("gene_id").to_pylist()
    features, fill = feature_columns(screen_features(ds, genes))
    assert ONLY_IN_B in features
    feats_a = [f for f in features if f != ONLY_IN_B][::-1]
    train_instance(ds, genes[:26], feats_a, fill, FAST_TRAINING, root / "A", "s00-a")
    train_instance(ds, genes[22:], features, fill, FAST_TRAINING, root / "B", "s01-b")
    consolidate({"s00-a": root / "A", "s01-b": root / "B"}, root / "model", [], extra={"dataset": str(ds.root)})
    mf = read_json(root / "model" / "manifest.json")
    for m in mf["members"]:
        m["weight"] = {"s00-a": 4.0, "s01-b": 1.0}[m["partition_key"]]
    write_json(root / "model" / "manifest.json", mf)
    summary = compute_ensemble_shap(root / "model", root / "out" / "ensemble_shap", SETTINGS)
    return root, ds, summary


def test_weights_are_the_consolidated_models(ensemble):
    root, _, s = ensemble
    assert s["instance_weights"] == pytest.approx({"s00-a": 0.8, "s01-b": 0.2})
    assert s["consolidated_weights"] == {"s00-a": 4.0, "s01-b": 1.0}
    model = load_model(root / "model")
    assert list(model.weights) == pytest.approx(list(s["instance_weights"].values()))
    ens = pq.read_table(root / "out" / "ensemble_shap" / "ensemble_importance.parquet").to_pylist()
    inst = pq.read_table(root / "out" / "ensemble_shap" / "instance_importance.parquet").to_pylist()
    by = {(r["partition_key"], r["feature"]): r for r in inst}
    for r in ens[:30]:
        for c in ("neither", "donor", "acceptor"):
            expect = 0.8 * by[("s00-a", r["feature"])][f"importance_{c}"] + 0.2 * by[("s01-b", r["feature"])][f"importance_{c}"]
            assert r[f"importance_{c}"] == pytest.approx(expect, rel=1e-12)


def test_feature_of_one_instance_only_is_handled_by_name(ensemble):
    root, _, s = ensemble
    out = root / "out"
    a = {r["feature"]: r for r in pq.read_table(out / "instance_shap" / "s00-a" / "importance.parquet").to_pylist()}
    b = {r["feature"]: r for r in pq.read_table(out / "instance_shap" / "s01-b" / "importance.parquet").to_pylist()}
    assert ONLY_IN_B not in a and b[ONLY_IN_B]["mean_abs_shap_donor"] > 0
    ens = {r["feature"]: r for r in pq.read_table(out / "ensemble_shap" / "ensemble_importance.parquet").to_pylist()}
    assert ens[ONLY_IN_B]["n_instances"] == 1
    for c in ("neither", "donor", "acceptor"):
        assert ens[ONLY_IN_B][f"importance_{c}"] == pytest.approx(0.2 * b[ONLY_IN_B][f"mean_abs_shap_{c}"], rel=1e-12)
        # A's features are in reverse order: values still meet their own names
        for f in ("acceptor_score", "neither_score", "gc_content"):
            assert ens[f][f"importance_{c}"] == pytest.approx(
                0.8 * a[f][f"mean_abs_shap_{c}"] + 0.2 * b[f][f"mean_abs_shap_{c}"], rel=1e-12)
    inst = pq.read_table(out / "ensemble_shap" / "instance_importance.parquet").to_pylist()
    row = next(r for r in inst if r["partition_key"] == "s00-a" and r["feature"] == ONLY_IN_B)
    assert row["present"] is False and row["importance_donor"] == 0.0


def test_legacy_csv_has_the_documented_columns(ensemble):
    root, _, s = ensemble
    with open(root / "out" / "ensemble_shap" / LEGACY_CSV, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == LEGACY_COLUMNS == ("feature", "importance_neither", "importance_donor",
                                                "importance_acceptor", "importance_mean", "shap_importance")
    body = rows[1:]
    assert len(body) == s["n_features"] and len({r[0] for r in body}) == len(body)
    vals = np.asarray([[float(v) for v in r[1:]] for r in body])
    assert np.allclose(vals[:, 3], vals[:, :3].mean(axis=1)) and np.array_equal(vals[:, 3], vals[:, 4])
    assert (np.diff(vals[:, 3]) <= 0).all()  # most important first
    assert body[0][0] == s["top_features"]["ensemble"][0]["feature"]


def test_summary_plots_and_additivity_are_reported(ensemble):
    root, _, s = ensemble
    out = root / "out" / "ensemble_shap"
    disk = json.loads((out / "shap_analysis_summary.json").read_text())
    assert disk["n_models"] == 6 and set(disk["top_features"]) == {"ensemble", "neither", "donor", "acceptor"}
    assert 0 <= disk["additivity"]["max_error"] <= 1e-3
    assert disk["rows_per_instance"] == {"s00-a": 250, "s01-b": 250}
    assert disk["best_instance"] == "s00-a"  # the larger weight
    assert {"3-mer", "2-mer"} <= set(disk["feature_type_analysis"]["groups"])
    for rel in disk["plots"].values():
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"top_features", "per_class_top_features", "beeswarm_donor", "beeswarm_acceptor",
            "feature_type_share", "instance_agreement"} <= set(disk["plots"])


def test_unchanged_instances_are_reused_and_a_broken_tolerance_fails(ensemble, tmp_path):
    root, _, _ = ensemble
    again = compute_ensemble_shap(root / "model", root / "out" / "ensemble_shap", SETTINGS, plots=False)
    assert again["instances_computed"] == [] and sorted(again["instances_reused"]) == ["s00-a", "s01-b"]
    strict = ShapSettings(sample_rows=50, nthread=1, max_additivity_error=-1.0)
    with pytest.raises(AdditivityError, match=r"instance s00-a \(xgboost_ovr\), neither output"):
        compute_ensemble_shap(root / "model", tmp_path / "e", strict, cache_dir=tmp_path / "c", plots=False)
    assert not (tmp_path / "e").exists()


def test_sampled_rows_are_the_datasets_rows_and_one_pass_equals_separate_passes(ensemble):
    root, ds, _ = ensemble
    ma, mb = load_model(root / "A"), load_model(root / "B")
    oof_a, oof_b = (pq.read_table(m.path / "oof_predictions.parquet") for m in (ma, mb))
    ra = request_from_oof("a", oof_a, ma.features, ma.fill, 120, seed=5)
    rb = request_from_oof("b", oof_b, mb.features, mb.fill, 120, seed=5)
    assert np.array_equal(ra.oof_row, request_from_oof("a", oof_a, ma.features, ma.fill, 120, seed=5).oof_row)
    assert not np.array_equal(ra.oof_row, request_from_oof("a", oof_a, ma.features, ma.fill, 120, seed=6).oof_row)
    both = load_samples(ds, [ra, rb], batch_rows=97)
    alone = load_samples(ds, [ra], batch_rows=4096)[0]
    assert np.array_equal(both[0].X, alone.X)
    # the same rows read straight from the Parquet files, by (gene, position); the gene-context
    # features take their candidates from the whole genes, not from the sampled rows
    table = pa.concat_tables([pq.read_table(f) for f in ds.files], promote_options="default")
    candidates = CandidateIndex.from_table(table)
    where = {(g, p): i for i, (g, p) in enumerate(zip(table.column("gene_id").to_pylist(),
                                                       table.column("position").to_pylist()))}
    for sample, model in zip(both, (ma, mb)):
        idx = [where[(g, int(p))] for g, p in zip(sample.gene_id, sample.position)]
        direct = to_feature_matrix(table.take(idx), model.features, model.fill, candidates=candidates)
        assert np.array_equal(sample.X, direct)
        assert sample.X.shape == (120, len(model.features))


def _brute_force_interventional(f, x, background):
    """Exact interventional Shapley values of f at x (outputs × features)."""
    def v(S):
        H = background.copy()
        H[:, list(S)] = x[list(S)]
        return f(H).mean(axis=0)

    return _shapley(v, len(x)).T


def test_permutation_shap_is_exact_where_a_permutation_and_its_reverse_cover_every_order():
    rng = np.random.default_rng(3)
    # an additive model: every order gives the same, exact values w_j (x_j − mean background_j)
    W = rng.normal(size=(6, 3))
    linear = lambda X: X @ W + 0.25   # noqa: E731
    X, bg = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    contribs, margin = permutation_contributions(linear, X, bg, 1, rng, max_cells=17)   # chunked model calls
    assert contribs.shape == (4, 3, 7)
    assert np.allclose(contribs[:, :, :6], ((X - bg.mean(axis=0))[:, :, None] * W[None]).transpose(0, 2, 1))
    assert np.allclose(contribs[:, :, 6], linear(bg).mean(axis=0)) and np.allclose(margin, linear(X))
    # an interaction of two features: an order and its reverse are all orders -> exact Shapley values
    inter = lambda X: np.column_stack([X[:, 0] * X[:, 1] + X[:, 0], np.sin(X[:, 1]) * X[:, 0]])   # noqa: E731
    X2, bg2 = rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    c2, m2 = permutation_contributions(inter, X2, bg2, 1, rng)
    for i in range(3):
        assert np.allclose(c2[i, :, :2], _brute_force_interventional(inter, X2[i], bg2))
    # additive by construction: contributions + bias = the output
    assert additivity_error(c2[:, 0, :], m2[:, 0]) < 1e-12 and additivity_error(c2[:, 1, :], m2[:, 1]) < 1e-12


def _rewrite(ds, out, change):
    out.mkdir()
    for f in ds.files:
        pq.write_table(change(pq.read_table(f)), out / f.name)
    return open_dataset(out)


def test_sampled_rows_do_not_depend_on_row_order_and_a_changed_label_is_an_error(ensemble, tmp_path):
    """Rows are identified by (gene, position), not by where they come in the stream: the same
    sample is read from a copy of the dataset whose rows are in reverse order, and a copy in
    which one sampled row's label changed is refused, naming the gene and position."""
    root, ds, _ = ensemble
    mb = load_model(root / "B")
    req = request_from_oof("b", pq.read_table(mb.path / "oof_predictions.parquet"), mb.features, mb.fill, 150, seed=1)
    ref = load_samples(ds, [req])[0]
    flipped = _rewrite(ds, tmp_path / "reversed", lambda t: t.take(np.arange(t.num_rows)[::-1]))
    again = load_samples(flipped, [req])[0]
    assert np.array_equal(again.X, ref.X) and np.array_equal(again.label, ref.label)

    g, p = req.gene_id[0], int(req.position[0])

    def relabel(t):
        hit = np.asarray([(a == g and b == p) for a, b in zip(t.column("gene_id").to_pylist(),
                                                             t.column("position").to_pylist())])
        st = np.asarray(t.column("splice_type").to_pylist(), dtype=object)
        st[hit] = "donor" if req.label[0] != 1 else "acceptor"
        return t.set_column(t.schema.get_field_index("splice_type"), "splice_type", pa.array(st.tolist()))

    changed = _rewrite(ds, tmp_path / "relabelled", relabel)
    with pytest.raises(ValueError, match=f"another label.*gene {g} position {p}"):
        load_samples(changed, [req])
