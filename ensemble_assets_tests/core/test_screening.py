"""Feature screening: label-derived columns and absolute coordinates never become features;
gene-position features are computed from position and gene_length on the one row path, for
training and for model input."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core.data.contract import DatasetError, open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.schema import (
    CANDIDATE_MIN_SCORE,
    GENE_CONTEXT_FEATURES,
    GENE_POSITION_FEATURES,
    LABEL_CHOSEN_TRACK_COLUMNS,
    LEAKAGE_COLUMNS,
    is_coordinate,
)
from ensemble_assets.core.data.screening import (
    COORDINATE_REASON,
    DEFAULT_MAX_KMER_SIZE,
    ScreeningSettings,
    feature_columns,
    screen_features,
)
from ensemble_assets.core.data.streaming import iter_subset_batches
from ensemble_assets.core.model.ensemble import ModelError, align_features
from ensemble_assets.core.training.loop import refuse_identifier_features
from ensemble_assets.datasets.demo import DemoSpec, write_demo_dataset


@pytest.fixture(scope="module")
def screened(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    genes = build_gene_inventory(ds, threads=1)[0].column("gene_id").to_pylist()
    return ds, genes, screen_features(ds, genes, ScreeningSettings(), threads=1)


def test_gene_site_count_and_label_chosen_context_are_never_features(screened):
    ds, _, manifest = screened
    m = {r["column"]: r for r in manifest.to_pylist()}
    present = [c for c in ("n_splice_sites", *LABEL_CHOSEN_TRACK_COLUMNS) if c in ds.columns]
    assert "n_splice_sites" in present and "context_score_m1" in present and "context_max" in present
    for c in present:
        assert not m[c]["is_feature"] and m[c]["reason"].startswith("label leakage"), (c, m[c]["reason"])
    assert "annotated sites" in m["n_splice_sites"]["reason"]
    assert "label's score track" in m["context_score_m1"]["reason"]
    # the per-type tracks they duplicate stay features
    assert m["donor_diff_m1"]["is_feature"] and m["acceptor_diff_p1"]["is_feature"]
    for c in present:
        with pytest.raises(ValueError, match=c):
            refuse_identifier_features(["donor_score", c])


def test_gene_position_features_are_computed_on_the_row_path(screened):
    ds, genes, manifest = screened
    m = {r["column"]: r for r in manifest.to_pylist()}
    for name in GENE_POSITION_FEATURES:
        assert m[name]["is_feature"] and m[name]["family"] == "gene_position", m[name]
    assert 0 <= m["gene_relative_position"]["min"] < m["gene_relative_position"]["max"] < 1
    features, fill = feature_columns(manifest)
    got = {f: [] for f in GENE_POSITION_FEATURES}
    keys = []
    for b in iter_subset_batches(ds, genes[:10], features, fill, batch_rows=97):
        for f in GENE_POSITION_FEATURES:
            got[f].append(b.X[:, features.index(f)])
        keys += list(zip(b.gene_id, b.position))
    t = pa.concat_tables(pq.read_table(f, columns=["gene_id", "position", "gene_length"]) for f in ds.files).to_pandas()
    t = t.set_index(["gene_id", "position"]).loc[keys]
    pos = t.index.get_level_values("position").to_numpy(float)
    length = t["gene_length"].to_numpy(float)
    np.testing.assert_allclose(np.concatenate(got["gene_offset_5p"]), pos)
    np.testing.assert_allclose(np.concatenate(got["gene_offset_3p"]), length - 1 - pos)
    np.testing.assert_allclose(np.concatenate(got["gene_relative_position"]), pos / length, rtol=1e-6)
    assert (pos > 0).any() and ((length - 1 - pos) > 0).any()


def test_model_input_needs_only_the_sources_of_gene_position_features():
    features = ["donor_score", "gene_offset_3p", "gene_relative_position"]
    fill = {f: -1.0 for f in features}
    t = pa.table({"donor_score": [0.9, 0.1], "position": [10, 0], "gene_length": [100, 0]})
    X = align_features(t, features, fill)
    np.testing.assert_allclose(X, [[0.9, 89.0, 0.1], [0.1, -1.0, -1.0]])  # length 0: filled, not inf
    with pytest.raises(ModelError, match="position"):
        align_features(t.drop(["position"]), features, fill)


def test_gene_position_features_can_be_turned_off(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    genes = build_gene_inventory(ds, threads=1)[0].column("gene_id").to_pylist()
    manifest = screen_features(ds, genes, ScreeningSettings(gene_position=False), threads=1)
    assert not set(GENE_POSITION_FEATURES) & set(manifest.column("column").to_pylist())


@pytest.mark.realdata
def test_atha_site_rows_take_their_labels_context_track(atha_chr1):
    """Why the context columns are excluded: on the real dataset a site row's context is its
    label's track even where the other track scores higher, which a negative never does."""
    ds = open_dataset(atha_chr1)
    t = pq.read_table(ds.files[0], columns=["splice_type", "donor_score", "acceptor_score", "context_score_m1",
                                            "donor_diff_m1", "acceptor_diff_m1"]).to_pandas()
    donor_track = t.donor_score - t.donor_diff_m1
    acceptor_track = t.acceptor_score - t.acceptor_diff_m1
    max_rule = np.where(t.donor_score >= t.acceptor_score, donor_track, acceptor_track)
    label_track = np.where(t.splice_type == "acceptor", acceptor_track, donor_track)
    negatives = (t.splice_type == "neither").to_numpy()
    assert np.allclose(t.context_score_m1[~negatives], label_track[~negatives], atol=1e-9, rtol=0)
    assert np.allclose(t.context_score_m1[negatives], max_rule[negatives], atol=1e-9, rtol=0)
    sites_off_rule = (~negatives) & ~np.isclose(t.context_score_m1, max_rule, atol=1e-9, rtol=0)
    assert sites_off_rule.sum() > 0


def test_gene_context_distances_by_hand():
    t = pa.table({"gene_id": ["a", "a", "a", "a", "b", "b"], "position": [0, 5, 10, 20, 3, 7],
                  "gene_length": [30, 30, 30, 30, 9, 9],
                  "donor_score": [0.5, 0.0, 0.2, 0.05, 0.0, 0.0], "acceptor_score": [0.0, 0.3, 0.0, 0.0, 0.0, 0.1]})
    X = align_features(t, list(GENE_CONTEXT_FEATURES), {f: -1.0 for f in GENE_CONTEXT_FEATURES})
    got = dict(zip(GENE_CONTEXT_FEATURES, X.T))
    # candidates: gene a donors {0, 10} (0.05 < 0.1 is not one), acceptors {5}; gene b acceptors {7}
    np.testing.assert_array_equal(got["nearest_donor_upstream"], [30, 5, 10, 10, 9, 9])
    np.testing.assert_array_equal(got["nearest_donor_downstream"], [10, 5, 30, 30, 9, 9])
    np.testing.assert_array_equal(got["nearest_acceptor_upstream"], [30, 30, 5, 15, 9, 9])
    np.testing.assert_array_equal(got["nearest_acceptor_downstream"], [5, 30, 30, 30, 4, 9])
    # the base score of that nearest other candidate, 0 where there is none
    np.testing.assert_allclose(got["nearest_donor_upstream_score"], [0, 0.5, 0.5, 0.2, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(got["nearest_donor_downstream_score"], [0.2, 0.2, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(got["nearest_acceptor_upstream_score"], [0, 0, 0.3, 0.3, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(got["nearest_acceptor_downstream_score"], [0.3, 0, 0, 0, 0.1, 0], rtol=1e-6)


def test_gene_context_second_strong_and_local_features_by_hand():
    """Every candidate (≥ 0.02): nearest and second-nearest; strong candidates (≥ 0.3, ≥ 0.6);
    the highest other candidate score within ±10 / 50 / 200 nt. A position below 0.02 is no
    candidate; a row's own score never counts; another gene's candidates never count."""
    t = pa.table({"gene_id": ["a"] * 6 + ["b", "b"], "position": [0, 8, 30, 60, 250, 400, 3, 7],
                  "gene_length": [500] * 6 + [9, 9],
                  "donor_score": [0.7, 0.01, 0.05, 0.35, 0.02, 0.9, 0.0, 0.0],
                  "acceptor_score": [0.0] * 6 + [0.0, 0.5]})
    X = align_features(t, list(GENE_CONTEXT_FEATURES), {f: -1.0 for f in GENE_CONTEXT_FEATURES})
    got = dict(zip(GENE_CONTEXT_FEATURES, X.T))
    # gene a donor candidates (≥ 0.02): 0 (0.7), 30 (0.05), 60 (0.35), 250 (0.02), 400 (0.9); not 8 (0.01)
    np.testing.assert_array_equal(got["nearest_donor_upstream_min02"], [500, 8, 30, 30, 190, 150, 9, 9])
    np.testing.assert_allclose(got["nearest_donor_upstream_min02_score"], [0, .7, .7, .05, .35, .02, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(got["second_donor_upstream_min02"], [500, 500, 500, 60, 220, 340, 9, 9])
    np.testing.assert_array_equal(got["nearest_donor_downstream_min02"], [30, 22, 30, 190, 150, 500, 9, 9])
    np.testing.assert_array_equal(got["second_donor_downstream_min02"], [60, 52, 220, 340, 500, 500, 9, 9])
    np.testing.assert_array_equal(got["nearest_donor_upstream_min30"], [500, 8, 30, 60, 190, 340, 9, 9])
    np.testing.assert_array_equal(got["nearest_donor_upstream_min60"], [500, 8, 30, 60, 250, 400, 9, 9])
    np.testing.assert_array_equal(got["nearest_donor_downstream_min60"], [400, 392, 370, 340, 150, 500, 9, 9])
    np.testing.assert_allclose(got["donor_max_within_10nt"], [0, .7, 0, 0, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(got["donor_max_within_50nt"], [.05, .7, .7, .05, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(got["donor_max_within_200nt"], [.35, .7, .7, .7, .9, .02, 0, 0], rtol=1e-6)
    # gene b: one acceptor candidate at 7; its own score does not count
    np.testing.assert_allclose(got["acceptor_max_within_10nt"], [0] * 6 + [.5, 0], rtol=1e-6)
    np.testing.assert_array_equal(got["nearest_acceptor_downstream_min30"], [500] * 6 + [4, 9])


def _gene_context_by_brute_force(t: pa.Table) -> dict[str, np.ndarray]:
    """Every gene-context feature by its definition, row by row against every other row."""
    g = np.asarray(t.column("gene_id").to_pylist())
    p = t.column("position").to_numpy().astype(float)
    length = t.column("gene_length").to_numpy().astype(float)
    out = {f: np.zeros(len(p)) for f in GENE_CONTEXT_FEATURES}
    for r in range(len(p)):
        for track in ("donor", "acceptor"):
            s = t.column(f"{track}_score").to_numpy()
            other = (g == g[r]) & (np.arange(len(p)) != r) & (s >= CANDIDATE_MIN_SCORE)
            for suffix, minimum in (("", 0.1), ("_min02", 0.02), ("_min30", 0.3), ("_min60", 0.6)):
                for direction, side in (("upstream", p < p[r]), ("downstream", p > p[r])):
                    c = np.flatnonzero(other & side & (s >= minimum))
                    c = c[np.argsort(np.abs(p[c] - p[r]))]
                    out[f"nearest_{track}_{direction}{suffix}"][r] = abs(p[c[0]] - p[r]) if len(c) else length[r]
                    if suffix in ("", "_min02"):
                        out[f"nearest_{track}_{direction}{suffix}_score"][r] = s[c[0]] if len(c) else 0.0
                    if suffix == "_min02":
                        out[f"second_{track}_{direction}_min02"][r] = abs(p[c[1]] - p[r]) if len(c) > 1 else length[r]
            for w in (10, 50, 200):
                near = other & (np.abs(p - p[r]) <= w)
                out[f"{track}_max_within_{w}nt"][r] = s[near].max() if near.any() else 0.0
    return out


def test_gene_context_features_match_their_definition_on_random_genes():
    rng = np.random.default_rng(11)
    rows = []
    for gene in range(12):
        n, length = int(rng.integers(0, 40)), int(rng.integers(50, 900))
        for position in np.sort(rng.choice(length, size=min(n, length), replace=False)):
            donor, acceptor = rng.choice([0.0, 0.01, 0.02, 0.05, 0.1, 0.3, 0.45, 0.6, 0.95], size=2)
            rows.append((f"g{gene}", int(position), length, donor, acceptor))
    t = pa.table(dict(zip(["gene_id", "position", "gene_length", "donor_score", "acceptor_score"], zip(*rows))))
    t = t.take(rng.permutation(t.num_rows))   # rows of a gene need not be together or sorted
    X = align_features(t, list(GENE_CONTEXT_FEATURES), {f: -1.0 for f in GENE_CONTEXT_FEATURES})
    expected = _gene_context_by_brute_force(t)
    for j, f in enumerate(GENE_CONTEXT_FEATURES):
        np.testing.assert_allclose(X[:, j], expected[f], rtol=1e-6, err_msg=f)
    assert t.num_rows > 150 and all(len(np.unique(expected[f])) > 3 for f in GENE_CONTEXT_FEATURES)


def test_gene_context_depends_only_on_candidate_rows(tiny_dataset):
    """The rows a dataset adds below the candidate score (sites, near-site and random negatives:
    a label-driven sample) never change a row's gene-context features, and the training path
    (candidates read from the dataset) equals the model-input path (candidates from the table)."""
    ds = open_dataset(tiny_dataset)
    genes = build_gene_inventory(ds, threads=1)[0].column("gene_id").to_pylist()
    manifest = screen_features(ds, genes, ScreeningSettings(gene_context=True), threads=1)
    m = {r["column"]: r for r in manifest.to_pylist()}
    assert all(m[f]["is_feature"] and m[f]["family"] == "gene_context" for f in GENE_CONTEXT_FEATURES)
    features = [*GENE_CONTEXT_FEATURES, "donor_score"]
    fill = {f: -1.0 for f in features}
    streamed = np.concatenate([b.X for b in iter_subset_batches(ds, genes[:12], features, fill, batch_rows=61)])
    t = pa.concat_tables(pq.read_table(f) for f in ds.files)
    t = t.filter(pa.compute.is_in(t.column("gene_id"), pa.array(sorted(genes[:12]))))
    full = align_features(t, features, fill)
    np.testing.assert_array_equal(full, streamed)
    is_candidate = np.maximum(t.column("donor_score").to_numpy(), t.column("acceptor_score").to_numpy()) >= CANDIDATE_MIN_SCORE
    rng = np.random.default_rng(0)
    keep = is_candidate | (rng.random(t.num_rows) < 0.3)
    assert (~keep).sum() > 50 and is_candidate.sum() > 20
    thinned = align_features(t.filter(pa.array(keep)), features, fill)
    np.testing.assert_array_equal(thinned, full[keep])
    # dropping candidate rows does change their neighbours' features (the test can fail)
    sparse = keep & (~is_candidate | (np.arange(t.num_rows) % 2 == 0))
    assert not np.array_equal(align_features(t.filter(pa.array(sparse)), features, fill), full[sparse])


def test_no_coordinate_column_is_ever_a_feature(tiny_dataset, tmp_path):
    """Absolute genomic coordinates are excluded with their reason, even with the structural and
    chromosome columns re-included, and even under a name screening has never seen (window_*);
    training refuses them too."""
    ds = open_dataset(tiny_dataset)
    t = pa.concat_tables(pq.read_table(f) for f in ds.files)
    pq.write_table(t.append_column("window_centre", t.column("absolute_position")), tmp_path / "a.parquet")
    ds = open_dataset(tmp_path)
    genes = build_gene_inventory(ds, threads=1)[0].column("gene_id").to_pylist()
    present = [c for c in ds.columns if is_coordinate(c)]
    assert {"gene_start", "gene_end", "tx_start", "tx_end", "absolute_position", "window_start", "window_end",
            "window_centre"} <= set(present)
    for settings in (ScreeningSettings(), ScreeningSettings(include_structural=True, include_chrom=True)):
        m = {r["column"]: r for r in screen_features(ds, genes, settings, threads=1).to_pylist()}
        for c in present:
            assert not m[c]["is_feature"], (c, settings)
            if c not in LEAKAGE_COLUMNS:  # true_position / predicted_position: label leakage first
                assert m[c]["reason"] == COORDINATE_REASON and "meaningless across genomes" in m[c]["reason"]
        assert m["gene_length"]["is_feature"]  # a length is not a coordinate
    for c in present:
        with pytest.raises(ValueError, match=f"coordinate.*{c}"):
            refuse_identifier_features(["donor_score", c])


def test_kmers_up_to_size_3_by_default_and_explicit_sizes_win(tmp_path):
    write_demo_dataset(tmp_path / "k35", DemoSpec(n_genes=6, rows_per_gene=20, genes_per_file=4, kmer_sizes=(3, 5), seed=5))
    ds = open_dataset(tmp_path / "k35")
    genes = build_gene_inventory(ds, threads=1)[0].column("gene_id").to_pylist()

    def kept(settings):
        m = screen_features(ds, genes, settings, threads=1).to_pylist()
        by_size = {k: {r["column"] for r in m if r["family"] == "kmer" and r["column"].startswith(f"{k}mer_")}
                   for k in (3, 5)}
        return {k: {r["column"] for r in m if r["is_feature"]} & cols for k, cols in by_size.items()}, m

    default, m = kept(ScreeningSettings())
    assert ScreeningSettings().kmer_sizes is None and DEFAULT_MAX_KMER_SIZE == 3
    assert default[3]
    assert not default[5]
    assert all("above 3 (the default" in r["reason"] for r in m if r["column"].startswith("5mer_"))
    both, _ = kept(ScreeningSettings(kmer_sizes=(3, 5)))
    assert both[3] == default[3] and len(both[5]) > 0
    only5, _ = kept(ScreeningSettings(kmer_sizes=(5,)))
    assert not only5[3] and only5[5] == both[5]
    none, _ = kept(ScreeningSettings(kmer_sizes=()))
    assert not none[3] and not none[5]
    with pytest.raises(DatasetError, match=r"no 4-mer columns \(its k-mer sizes: 3, 5\)"):
        screen_features(ds, genes, ScreeningSettings(kmer_sizes=(3, 4)), threads=1)


def test_exclusions_name_a_column_or_a_computed_feature(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    genes = build_gene_inventory(ds, threads=1)[0].column("gene_id").to_pylist()
    m = {r["column"]: r for r in screen_features(
        ds, genes, ScreeningSettings(exclude=("donor_score", "gene_relative_position"), gene_context=True),
        threads=1).to_pylist()}
    for name in ("donor_score", "gene_relative_position"):   # a dataset column, a computed feature
        assert not m[name]["is_feature"] and m[name]["reason"] == "user exclusion"
    assert m["acceptor_score"]["is_feature"] and m["gene_offset_5p"]["is_feature"]
    # a typo is an error that names it and the closest names, not a feature silently kept
    with pytest.raises(DatasetError, match=r"'donor_scor' \(did you mean donor_score"):
        screen_features(ds, genes, ScreeningSettings(exclude=("donor_scor",)), threads=1)


def test_gene_context_search_of_all_genes_at_once_equals_gene_by_gene():
    from ensemble_assets.core.data.features import _search

    rng = np.random.default_rng(5)
    per_gene = [np.sort(rng.choice(500, size=k, replace=False)).astype(float) for k in (0, 1, 7, 40, 3)]
    inverse = rng.integers(0, len(per_gene), 2000)
    pos = rng.integers(-5, 510, 2000).astype(float)
    pos[::50] = np.nan
    queries = [(0.0, "left"), (0.0, "right"), (-50.0, "left"), (50.0, "right"), (-600.0, "left"), (600.0, "right")]
    cand, counts = np.concatenate(per_gene), np.array([len(c) for c in per_gene])
    fast, slow = _search(cand, counts, inverse, pos, queries), _search(cand, counts, inverse, pos, queries, by_gene=True)
    known = np.isfinite(pos)   # rows without a position get NaN features whatever the index
    for a, b in zip(fast.at, slow.at):
        np.testing.assert_array_equal(a[known], b[known])
        assert ((a >= fast.start) & (a <= fast.end)).all()   # never into another gene's candidates
    np.testing.assert_array_equal(fast.start, slow.start)
    np.testing.assert_array_equal(fast.end, slow.end)
    first_ge, first_gt = fast.at[0], fast.at[1]
    assert (first_ge > fast.start).any() and (first_ge == fast.start).any() and (first_gt < fast.end).any()
    # positions that are not whole numbers take the gene-by-gene path and agree with it
    halves = _search(cand, counts, inverse, pos + 0.5, queries)
    for a, b in zip(halves.at, _search(cand, counts, inverse, pos + 0.5, queries, by_gene=True).at):
        np.testing.assert_array_equal(a[known], b[known])


def test_an_infinite_base_score_is_an_error_even_where_only_gene_context_reads_it():
    """A candidate's score feeds the gene-context features of the other rows: an infinite one is the
    data-contract error of its column, not a huge score (it overflowed float32 to inf before)."""
    from ensemble_assets.core.data.features import to_feature_matrix

    t = pa.table({"gene_id": ["g"] * 3, "position": [10, 20, 30], "gene_length": [100] * 3,
                  "donor_score": [0.5, float("inf"), 0.01], "acceptor_score": [0.0, 0.0, 0.3]})
    features = [f for f in GENE_CONTEXT_FEATURES if "donor" in f]
    with pytest.raises(DatasetError, match=r"column 'donor_score' has 1 infinite value"):
        to_feature_matrix(t, features, {f: 0.0 for f in features})
    finite = t.set_column(3, "donor_score", pa.array([0.5, 0.9, 0.01]))
    assert np.isfinite(to_feature_matrix(finite, features, {f: 0.0 for f in features})).all()
