"""The demo dataset generator (core/demo_data.py): layout, column contract, labels, base-model
outcome, derived and sequence columns, structural back-fill, determinism and atomic writes."""

from __future__ import annotations

import csv
import hashlib
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core.data import schema
from ensemble_assets.core.data.declaration import read_declaration
from ensemble_assets.datasets import demo as demo_data
from ensemble_assets.datasets.demo import (
    DemoSpec,
    demo_column_names,
    demo_window,
    derive_score_features,
    kmer_columns,
    write_demo_dataset,
)

SPEC = DemoSpec(n_genes=30, rows_per_gene=40, genes_per_file=8, chrom_count=2, seed=11)
SPEC_K23 = DemoSpec(n_genes=6, rows_per_gene=20, genes_per_file=4, kmer_sizes=(2, 3), seed=5)


def _read(master: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in sorted(master.glob("batch_*.parquet")))


def _np(table: pa.Table, name: str) -> np.ndarray:
    return table[name].to_numpy(zero_copy_only=False)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "ds"
    summary = write_demo_dataset(out, SPEC)
    return out / "master", summary


@pytest.fixture(scope="module")
def table(written) -> pa.Table:
    return _read(written[0])


@pytest.fixture(scope="module")
def manifest(written) -> list[dict]:
    with open(written[0] / "gene_manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- layout


def test_layout_files_compression_and_manifest(written, table, manifest):
    master, summary = written
    files = sorted(p.name for p in master.iterdir())
    assert files == [f"batch_{i:05d}.parquet" for i in range(1, 5)] + ["gene_manifest.csv"]
    for f in master.glob("*.parquet"):
        meta = pq.ParquetFile(f).metadata
        for rg in range(meta.num_row_groups):
            codecs = {meta.row_group(rg).column(c).compression for c in range(meta.num_columns)}
            assert codecs == {"ZSTD"}, f"{f.name}: {codecs}"
    assert list(manifest[0]) == list(demo_data.MANIFEST_COLUMNS)
    assert [m["gene_id"] for m in manifest] == [f"DEMO{i:06d}" for i in range(1, 31)]
    assert [int(m["global_index"]) for m in manifest] == list(range(30))
    assert Counter(m["file_name"] for m in manifest) == {
        "batch_00001.parquet": 8, "batch_00002.parquet": 8, "batch_00003.parquet": 8,
        "batch_00004.parquet": 6,
    }
    # manifest site counts match the rows
    labels = Counter(zip(_np(table, "gene_id"), _np(table, "splice_type")))
    for m in manifest:
        assert int(m["donor_sites"]) == labels[(m["gene_id"], "donor")]
        assert int(m["acceptor_sites"]) == labels[(m["gene_id"], "acceptor")]
        assert int(m["total_splice_sites"]) == int(m["donor_sites"]) + int(m["acceptor_sites"])
        assert int(m["gene_length"]) == int(m["end"]) - int(m["start"]) + 1
    # the summary describes what was written
    assert summary["genes"] == 30 and summary["files"] == 4
    assert summary["rows"] == table.num_rows
    assert summary["columns"] == table.num_columns
    assert summary["label_counts"] == dict(Counter(_np(table, "splice_type")))
    pred = Counter(_np(table, "pred_type"))
    assert summary["pred_type_counts"] == {k: pred[k] for k in ("TP", "FP", "FN", "TN")}


def test_genes_never_split_and_rows_sorted(written, manifest):
    master, _ = written
    file_of = {m["gene_id"]: m["file_name"] for m in manifest}
    seen: dict[str, str] = {}
    for f in sorted(master.glob("batch_*.parquet")):
        t = pq.read_table(f, columns=["gene_id", "position", "chrom", "gene_start"])
        genes = _np(t, "gene_id")
        changes = np.flatnonzero(genes[1:] != genes[:-1]) + 1
        blocks = np.split(np.arange(len(genes)), changes)
        assert len(blocks) == len(set(genes)), f"{f.name}: a gene's rows are not contiguous"
        for b in blocks:
            g = genes[b[0]]
            assert g not in seen, f"{g} in both {seen.get(g)} and {f.name}"
            seen[g] = f.name
            assert file_of[g] == f.name
            assert np.all(np.diff(_np(t, "position")[b]) > 0), f"{g}: positions not sorted/unique"
    assert len(seen) == SPEC.n_genes
    # genes in genomic order: by chromosome, then start
    order = [(m["chrom"], int(m["start"])) for m in manifest]
    assert order == sorted(order, key=lambda x: (int(x[0][3:]), x[1]))
    assert {m["chrom"] for m in manifest} == {"chr1", "chr2"}


# --------------------------------------------------------------------------- columns


def test_every_column_family_and_types(table):
    names = table.column_names
    assert names == demo_column_names(SPEC.kmer_sizes)
    expected = (
        set(schema.ID_COLUMNS) | (set(schema.LEAKAGE_COLUMNS) - {"sequence"})
        | set(schema.BASE_SCORE_COLUMNS) | set(schema.CONTEXT_COLUMNS)
        | set(schema.DERIVED_COLUMNS) | set(schema.SEQUENCE_COLUMNS)
        | set(schema.GENE_STRUCTURE_COLUMNS)
    )
    assert expected <= set(names)
    assert "sequence" not in names                      # the window itself is not stored
    assert all(schema.feature_family(n) != "other" for n in names)
    for field in table.schema:
        if field.name in schema.STRING_COLUMNS:
            assert field.type == pa.string(), field
        elif field.name in schema.INT64_COLUMNS:
            assert field.type == pa.int64(), field
        else:
            assert field.type == pa.float64(), field
        assert field.nullable == (field.name in schema.NULLABLE_COLUMNS), field
        if field.name not in schema.NULLABLE_COLUMNS:
            assert table[field.name].null_count == 0, field.name


@pytest.mark.parametrize("spec", [SPEC, SPEC_K23], ids=["k35", "k23"])
def test_kmer_columns_match_configured_sizes(spec, tmp_path):
    if spec is SPEC_K23:
        write_demo_dataset(tmp_path, spec)
        names = pq.read_schema(next((tmp_path / "master").glob("*.parquet"))).names
    else:
        names = demo_column_names(spec.kmer_sizes)
    kmers = [n for n in names if schema.is_kmer(n)]
    by_k = Counter(int(n.split("mer_")[0]) for n in kmers)
    assert by_k == {k: 4**k for k in spec.kmer_sizes}
    for k in spec.kmer_sizes:
        assert [n for n in kmers if n.startswith(f"{k}mer_")] == kmer_columns(k)
        assert all(len(n.split("_")[1]) == k for n in kmers if n.startswith(f"{k}mer_"))
    assert kmer_columns(2)[:5] == ["2mer_AA", "2mer_AC", "2mer_AG", "2mer_AT", "2mer_CA"]


def test_no_nan_or_inf(table):
    for field in table.schema:
        if pa.types.is_floating(field.type):
            values = _np(table, field.name)
            assert np.all(np.isfinite(values)), f"{field.name} has NaN/inf"


# --------------------------------------------------------------------------- labels and scores


def test_labels_are_strings_and_class_mix_is_plausible(table):
    labels = _np(table, "splice_type")
    assert set(labels) == {"donor", "acceptor", "neither"}
    share = Counter(labels)
    assert 0.70 <= share["neither"] / len(labels) <= 0.92
    assert 0.5 <= share["donor"] / share["acceptor"] <= 2.0
    pred = Counter(_np(table, "pred_type"))
    assert set(pred) == {"TP", "FP", "FN", "TN"}
    assert pred["TN"] > pred["TP"] > pred["FN"] > 0 and pred["FP"] > 0


def test_base_scores_are_probabilities_and_score_follows_label(table):
    d, a, n = (_np(table, c) for c in schema.BASE_SCORE_COLUMNS)
    assert np.all((d > 0) & (a > 0) & (n > 0) & (d < 1) & (a < 1) & (n <= 1))
    np.testing.assert_allclose(d + a + n, 1.0, rtol=0, atol=1e-12)
    labels = _np(table, "splice_type")
    expected = np.where(labels == "donor", d, np.where(labels == "acceptor", a, np.maximum(d, a)))
    np.testing.assert_array_equal(_np(table, "score"), expected)


def test_context_scores_are_the_rows_own_track(table):
    labels = _np(table, "splice_type")
    d, a = _np(table, "donor_score"), _np(table, "acceptor_score")
    own_donor = np.where(labels == "neither", d >= a, labels == "donor")
    for ctx, suffix in zip(schema.CONTEXT_COLUMNS, ("m2", "m1", "p1", "p2")):
        from_donor = d - _np(table, f"donor_diff_{suffix}")
        from_acceptor = a - _np(table, f"acceptor_diff_{suffix}")
        expected = np.where(own_donor, from_donor, from_acceptor)
        np.testing.assert_allclose(_np(table, ctx), expected, rtol=0, atol=1e-12)


def test_pred_type_consistent_with_scores_at_half(table):
    labels, pred = _np(table, "splice_type"), _np(table, "pred_type")
    d, a = _np(table, "donor_score"), _np(table, "acceptor_score")
    ctx = np.column_stack([_np(table, c) for c in schema.CONTEXT_COLUMNS])
    site = labels != "neither"
    # sites: TP when their own type reaches 0.5 within ±2 nt (row score or its context)
    reach = np.maximum(_np(table, "score"), ctx.max(axis=1)) >= 0.5
    assert np.all(pred[site] == np.where(reach[site], "TP", "FN"))
    assert np.all(pred[~site] == np.where(np.maximum(d, a)[~site] >= 0.5, "FP", "TN"))
    true_pos = table["true_position"]
    pred_pos = table["predicted_position"]
    assert np.array_equal(true_pos.is_null().to_numpy(zero_copy_only=False), ~site)
    hit = np.isin(pred, ["TP", "FP"])
    assert np.array_equal(pred_pos.is_null().to_numpy(zero_copy_only=False), ~hit)
    absolute = _np(table, "absolute_position")
    assert np.array_equal(true_pos.drop_null().to_numpy(), absolute[site])
    assert np.array_equal(pred_pos.drop_null().to_numpy(), absolute[hit])


def test_derived_columns_follow_their_formulas(table):
    d, a, n = (_np(table, c) for c in schema.BASE_SCORE_COLUMNS)
    eps = demo_data.EPS
    np.testing.assert_allclose(_np(table, "splice_probability"), (d + a) / (d + a + n + eps))
    np.testing.assert_allclose(_np(table, "relative_donor_probability"), d / (d + a + eps))
    np.testing.assert_allclose(_np(table, "donor_acceptor_logodds"), np.log((d + eps) / (a + eps)))
    p = np.column_stack([d, a, n])
    np.testing.assert_allclose(_np(table, "probability_entropy"), -(p * np.log(p)).sum(axis=1),
                               atol=1e-12)
    ctx = np.column_stack([_np(table, c) for c in schema.CONTEXT_COLUMNS])
    np.testing.assert_allclose(_np(table, "context_neighbor_mean"), ctx.mean(axis=1))
    np.testing.assert_allclose(_np(table, "context_max"), ctx.max(axis=1))
    for t, s in (("donor", d), ("acceptor", a)):
        m1, p1 = s - _np(table, f"{t}_diff_m1"), s - _np(table, f"{t}_diff_p1")
        np.testing.assert_allclose(_np(table, f"{t}_second_derivative"), 2 * s - m1 - p1, atol=1e-12)
        peak = _np(table, f"{t}_is_local_peak")
        assert set(np.unique(peak)) <= {0, 1}
        assert np.array_equal(peak, ((s > m1) & (s > p1) & (s > 1e-3)).astype(np.int64))
    # true sites are mostly sharp local peaks of their own track, negatives mostly not
    labels = _np(table, "splice_type")
    assert _np(table, "donor_is_local_peak")[labels == "donor"].mean() > 0.9
    assert _np(table, "donor_is_local_peak")[labels == "neither"].mean() < 0.5


def test_derive_score_features_is_finite_on_extremes():
    tracks = np.array([[0, 0, 0, 0, 0], [1e-12, -0.0, 1, 0, 1e-12], [0.5, 0.5, 0.5, 0.5, 0.5]], float)
    out = derive_score_features(np.array([0.0, 1.0, 0.5]), np.array([0.0, 0.0, 0.5]),
                                np.array([1.0, 0.0, 0.0]), tracks, tracks[::-1], tracks[:, [0, 1, 3, 4]])
    assert list(out) == list(schema.DERIVED_COLUMNS)
    assert all(np.all(np.isfinite(v)) for v in out.values())
    assert np.array_equal(out["donor_is_local_peak"], [0, 1, 0])


# --------------------------------------------------------------------------- sequence columns


def _count(window: str, k: int) -> Counter:
    return Counter(window[i:i + k] for i in range(len(window) - k + 1))


def test_kmer_counts_sum_and_match_regenerated_windows(table):
    for k in SPEC.kmer_sizes:
        cols = kmer_columns(k)
        block = np.column_stack([_np(table, c) for c in cols])
        assert np.all(block >= 0) and np.all(block == np.round(block))
        assert np.all(block.sum(axis=1) == demo_data.WINDOW_LENGTH - k + 1)
    rng = np.random.default_rng(0)
    genes, positions = _np(table, "gene_id"), _np(table, "position")
    labels, strands = _np(table, "splice_type"), _np(table, "strand")
    rows = []
    for label in ("donor", "acceptor", "neither"):
        for strand in ("+", "-"):
            idx = np.flatnonzero((labels == label) & (strands == strand))
            rows += list(rng.choice(idx, size=min(3, len(idx)), replace=False))
    assert len(rows) == 18
    for r in rows:
        window = demo_window(SPEC, genes[r], int(positions[r]))
        assert len(window) == _np(table, "sequence_length")[r] == 501
        for k in SPEC.kmer_sizes:
            counts = _count(window, k)
            got = {c.split("_")[1]: table[c][r].as_py() for c in kmer_columns(k)}
            assert got == {s: float(counts.get(s, 0)) for s in got}, (genes[r], positions[r], k)
        base = Counter(window)
        assert math.isclose(_np(table, "gc_content")[r], (base["G"] + base["C"]) / 501)
        freqs = [base[b] / 501 for b in "ACGT" if base[b]]
        assert math.isclose(_np(table, "sequence_complexity")[r], -sum(f * math.log2(f) for f in freqs))


def test_sites_carry_splice_signals(table):
    """Donor rows are followed by GT (a few GC), acceptor rows preceded by AG; k-mers see the
    acceptor's polypyrimidine tract; the base model misses donors with a weak +3..+6 consensus."""
    genes, positions, labels = _np(table, "gene_id"), _np(table, "position"), _np(table, "splice_type")
    pred = _np(table, "pred_type")
    donor_next, acceptor_prev, consensus = [], [], {"TP": [], "FN": []}
    for r in np.flatnonzero(labels != "neither"):
        w = demo_window(SPEC, genes[r], int(positions[r]))
        if labels[r] == "donor":
            donor_next.append(w[251:253])
            consensus[pred[r]].append(sum(a == b or (i == 0 and a in "AG")
                                          for i, (a, b) in enumerate(zip(w[253:257], "AAGT"))))
        else:
            acceptor_prev.append(w[248:250])
    assert Counter(donor_next)["GT"] / len(donor_next) >= 0.95
    assert set(donor_next) <= {"GT", "GC"}
    assert set(acceptor_prev) == {"AG"}
    assert np.mean(consensus["FN"]) < np.mean(consensus["TP"]) - 0.5
    # 3-mer view of the tract: acceptor windows are richer in TTT/TTC/CTT/TCT than random rows
    ppt = sum(_np(table, f"3mer_{s}") for s in ("TTT", "TTC", "CTT", "TCT"))
    assert ppt[labels == "acceptor"].mean() > ppt[labels == "neither"].mean()


# --------------------------------------------------------------------------- structure


def test_structure_columns_backfilled_for_negatives(table):
    labels = _np(table, "splice_type")
    neg, site = labels == "neither", labels != "neither"
    col = lambda c: _np(table, c)  # noqa: E731
    assert np.all(col("has_tx_info")[neg] == 0) and np.all(col("has_tx_info")[site] == 1)
    assert np.all(col("missing_transcript_feats")[neg] == 1)
    assert np.all(col("missing_transcript_feats")[site] == 0)
    assert np.all(col("has_gene_info") == 1)
    for c in ("num_exons", "avg_exon_length", "median_exon_length", "total_exon_length",
              "total_intron_length"):
        assert np.all(col(c)[neg] == 0), c
        assert np.all(col(c)[site] > 0), c
    assert np.all(col("tx_start")[neg] == col("gene_start")[neg])
    assert np.all(col("tx_end")[neg] == col("gene_end")[neg])
    assert np.all(col("transcript_length")[neg] == col("gene_length")[neg])
    # distance_to_* of negatives: one constant, the maximum over site rows + 500
    assert set(col("distance_to_start")[neg]) == {col("distance_to_start")[site].max() + 500}
    assert set(col("distance_to_end")[neg]) == {col("distance_to_end")[site].max() + 500}
    # site rows: their transcript's structure
    assert np.all(col("num_exons")[site] >= 2)
    span = col("tx_end")[site] - col("tx_start")[site]
    np.testing.assert_array_equal(col("distance_to_start")[site] + col("distance_to_end")[site], span)
    np.testing.assert_array_equal(col("total_exon_length")[site] + col("total_intron_length")[site],
                                  span + 1)
    np.testing.assert_array_equal(col("transcript_length")[site], col("total_exon_length")[site])
    assert np.all((col("tx_start") >= col("gene_start")) & (col("tx_end") <= col("gene_end")))
    tids = _np(table, "transcript_id")
    assert np.all(tids[neg] == "") and all(t.startswith("DEMOT") for t in tids[site])
    # the structural columns alone separate sites from negatives (the leak screening must catch)
    assert np.array_equal(col("has_tx_info") == 1, site)


def test_coordinates_are_strand_aware(table):
    strand, pos = _np(table, "strand"), _np(table, "position")
    absolute, gs, ge = (_np(table, c) for c in ("absolute_position", "gene_start", "gene_end"))
    assert set(strand) == {"+", "-"}
    expected = np.where(strand == "+", gs + pos, ge - pos)
    np.testing.assert_array_equal(absolute, expected)
    np.testing.assert_array_equal(_np(table, "window_start"), absolute - 250)
    np.testing.assert_array_equal(_np(table, "window_end"), absolute + 250)
    np.testing.assert_array_equal(_np(table, "gene_length"), ge - gs + 1)
    assert np.all((pos >= 0) & (pos < _np(table, "gene_length")))


# --------------------------------------------------------------------------- determinism, atomicity


def _digests(master: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(master.iterdir())}


def test_same_spec_gives_byte_identical_files(written, tmp_path):
    again = write_demo_dataset(tmp_path / "again", SPEC)
    assert _digests(Path(again["path"])) == _digests(written[0])
    other = write_demo_dataset(tmp_path / "other", DemoSpec(**{**SPEC.__dict__, "seed": 12}))
    first = "batch_00001.parquet"
    assert _digests(Path(other["path"]))[first] != _digests(written[0])[first]


def test_rewrite_replaces_and_failure_leaves_previous_dataset(tmp_path, monkeypatch):
    small = DemoSpec(n_genes=4, rows_per_gene=15, genes_per_file=2, kmer_sizes=(2,))
    write_demo_dataset(tmp_path, DemoSpec(**{**small.__dict__, "n_genes": 6}))
    assert len(list((tmp_path / "master").glob("*.parquet"))) == 3
    before = _digests(tmp_path / "master")
    calls = {"n": 0}
    real = demo_data._file_table

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_data, "_file_table", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_demo_dataset(tmp_path, small)
    assert _digests(tmp_path / "master") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "master"]   # no temp dir left behind
    monkeypatch.setattr(demo_data, "_file_table", real)
    summary = write_demo_dataset(tmp_path, small)                     # a smaller dataset replaces
    assert summary["files"] == 2
    assert sorted(p.name for p in (tmp_path / "master").iterdir()) == [
        "batch_00001.parquet", "batch_00002.parquet", "gene_manifest.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "master"]


def test_the_declared_row_selection_holds(written, table):
    """dataset.json declares what _select_positions guarantees: every position of a gene whose
    max(donor, acceptor) reaches the declared score is a row (checked on the regenerated tracks of
    every gene, not only the rows written), and the declared chromosomes are the data's."""
    d = read_declaration(written[0].parent)
    assert d.to_dict() == {**demo_data.declaration(SPEC), "path": str(written[0].parent / "dataset.json")}
    threshold = d.row_selection.every_position_with_max_score_at_least
    assert threshold == demo_data.HARD_NEGATIVE_MIN_SCORE <= schema.CANDIDATE_MIN_SCORE
    assert set(_np(table, "chrom")) == set(d.chromosomes) == {"chr1", "chr2"}
    gene, pos = _np(table, "gene_id"), _np(table, "position")
    checked = 0
    for i in range(SPEC.n_genes):
        st = demo_data._gene_structure(SPEC.seed, i)
        seq, decoy_d, decoy_a = demo_data._gene_sequence(st, SPEC.seed)
        donor, acceptor, _ = demo_data._base_model_tracks(st, seq, decoy_d, decoy_a, SPEC.seed)
        smax = np.maximum(donor, acceptor)[2:st.length + 2]   # the tracks start 2 nt before the gene
        must = set(np.flatnonzero(smax >= threshold).tolist())
        rows = set(pos[gene == demo_data.demo_gene_id(i)].tolist())
        assert must <= rows, (i, sorted(must - rows)[:5])
        checked += len(must)
    assert checked > SPEC.n_genes  # the guarantee covers real rows


def test_spec_validation():
    with pytest.raises(ValueError, match="n_genes"):
        DemoSpec(n_genes=0)
    with pytest.raises(ValueError, match="kmer_sizes"):
        DemoSpec(kmer_sizes=(3, 3))
    with pytest.raises(ValueError, match="chrom_count"):
        DemoSpec(chrom_count=0)
    assert DemoSpec(kmer_sizes=(5, 3)).kmer_sizes == (3, 5)
    with pytest.raises(ValueError, match="not a demo gene id"):
        demo_window(SPEC, "AT1G01010", 0)


def test_core_module_needs_only_numpy_and_pyarrow(tmp_path):
    code = (
        "import sys\n"
        "from ensemble_assets.datasets.demo import DemoSpec, write_demo_dataset\n"
        f"write_demo_dataset({str(tmp_path)!r}, DemoSpec(n_genes=2, rows_per_gene=10, kmer_sizes=(2,)))\n"
        "bad = sorted(m for m in ('dagster', 'duckdb', 'pandas') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_derived_formulas_reproduce_atha_chr1(atha_chr1):
    """Our formulas give the real dataset's derived columns from its own scores (for the track
    the row stores as context; the other type's track is not in the data)."""
    f = sorted((atha_chr1 / "master").glob("*.parquet"))[0]
    t = pq.ParquetFile(f).read_row_group(0, columns=[
        "splice_type", *schema.BASE_SCORE_COLUMNS, *schema.CONTEXT_COLUMNS, *schema.DERIVED_COLUMNS,
    ]).slice(0, 5000)
    d, a, n = (_np(t, c) for c in schema.BASE_SCORE_COLUMNS)
    ctx = np.column_stack([_np(t, c) for c in schema.CONTEXT_COLUMNS])
    labels = _np(t, "splice_type")
    own_donor = np.where(labels == "neither", d >= a, labels == "donor")
    s = np.where(own_donor, d, a)
    track = np.column_stack([ctx[:, 0], ctx[:, 1], s, ctx[:, 2], ctx[:, 3]])
    out = derive_score_features(d, a, n, track, track, ctx)
    check = [c for c in schema.DERIVED_COLUMNS if not c.startswith(("donor_", "acceptor_"))
             or c.startswith("donor_acceptor_")]
    check.remove("donor_acceptor_peak_ratio")
    for c in ("type_signal_difference", "signal_strength_ratio"):
        check.remove(c)
    for c in check:
        np.testing.assert_allclose(out[c], _np(t, c), rtol=1e-6, atol=1e-9, err_msg=c)
    for typ, mask in (("donor", own_donor), ("acceptor", ~own_donor)):
        for c in [c for c in schema.DERIVED_COLUMNS
                  if c.startswith(f"{typ}_") and not c.startswith("donor_acceptor_")]:
            np.testing.assert_allclose(out[c][mask], _np(t, c)[mask], rtol=1e-6, atol=1e-9,
                                       err_msg=c)
