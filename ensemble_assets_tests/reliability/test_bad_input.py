"""Bad input: each kind gets its own small faulty dataset (derived from the tiny demo dataset).

Every kind is either rejected at the earliest step of the asset graph that can see it, with a
message naming the file, column, gene or count at fault, or handled, and then the test proves
the result. A rejection leaves the failing step's earlier artifacts, everything after it, and
every model on disk exactly as they were (``harness.assert_intact``).

The graph's steps run through ``core.pipeline`` (what each asset calls); ``test_dagster.py``
repeats representative kinds through Dagster itself.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.artifacts import planned_config
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.screening import feature_columns, screen_features
from ensemble_assets.core.data.streaming import iter_subset_batches
from ensemble_assets.core.model.ensemble import ModelError, load_model, model_problem
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets_tests.conftest import FAST_TRAINING

from . import faults as F
from .harness import assert_intact, case_config, dataset_rows, model_predictions, run_graph


@pytest.fixture(scope="module")
def trained(trained_graph, tiny_dataset):
    """The session's data root with the whole graph trained on the good tiny dataset (tests that
    damage it copy it first), its rows and the consolidated model's predictions of them."""
    root = trained_graph.cfg.root
    assert len(artifacts.load_plan(trained_graph.cfg)["subsets"]) >= 2
    rows = dataset_rows(tiny_dataset)
    return root, rows, model_predictions(root, rows)


@dataclass
class Case:
    kind: str
    build: Callable[[Path, Path], Path]          # (good dataset, output dir) → faulty dataset dir
    step: str                                    # the earliest step that must reject it
    says: list[str]                              # what the message must name
    plan: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


def edit(fn: F.Edit) -> Callable[[Path, Path], Path]:
    return lambda src, out: F.derive(src, out, fn)


def _null_ids(t: pa.Table) -> pa.Table:
    ids = t.column("gene_id").to_pylist()
    ids[0:3] = [None] * 3
    ids[3:5] = ["", "   "]
    return F.set_column(t, "gene_id", pa.array(ids, pa.string()))


def _numeric_labels(t: pa.Table) -> pa.Table:
    codes = {"neither": 0, "donor": 1, "acceptor": 2}
    return F.set_column(t, "splice_type", pa.array([codes[v] for v in t.column("splice_type").to_pylist()]))


def _gene_ids_as_numbers(t: pa.Table) -> pa.Table:
    return F.set_column(t, "gene_id", pa.array([int(g[4:]) for g in t.column("gene_id").to_pylist()]))


def _empty_dir(src: Path, out: Path) -> Path:
    (out / "master").mkdir(parents=True)
    return out


def _truncated(src: Path, out: Path) -> Path:
    F.derive(src, out)
    F.truncate(out / "master" / "batch_00002.parquet")
    return out


def _not_parquet(src: Path, out: Path) -> Path:
    F.derive(src, out)
    (out / "master" / "batch_00002.parquet").write_text("gene_id,splice_type\nG1,donor\n")
    return out


def _corrupt(column: str) -> Callable[[Path, Path], Path]:
    def build(src: Path, out: Path) -> Path:
        F.derive(src, out)
        F.corrupt_column_chunk(out / "master" / "batch_00002.parquet", column)
        return out
    return build


def _duplicated_column(t: pa.Table) -> pa.Table:
    return pa.Table.from_arrays([*t.columns, t.column("gc_content")], names=[*t.column_names, "gc_content"])


REJECTED = [
    Case("missing splice_type column", edit(F.only(1, lambda t: t.drop_columns(["splice_type"]))),
         "gene_inventory", ["batch_00002.parquet", "missing required column 'splice_type'"]),
    Case("missing gene_id column", edit(F.only(2, lambda t: t.drop_columns(["gene_id"]))),
         "gene_inventory", ["batch_00003.parquet", "missing required column 'gene_id'"]),
    Case("unknown label values", edit(F.only(1, lambda t: F.relabel(t, slice(0, 3), "maybe"))),
         "gene_inventory", ["'splice_type'", "'maybe': 3 rows", "batch_00002.parquet"]),
    Case("labels encoded as numbers", edit(lambda i, t: _numeric_labels(t)),
         "gene_inventory", ["'splice_type'", "'1': 323 rows", "'2': 323 rows", "batch_00001.parquet"]),
    Case("null and empty gene ids", edit(F.only(0, _null_ids)),
         "gene_inventory", ["'gene_id'", "null or empty", "batch_00001.parquet: 5 rows"]),
    Case("gene ids with control characters", edit(F.only(2, lambda t: F.rename_genes(t, {"DEMO000040": "DEMO\n40"}))),
         "gene_inventory", ["'gene_id'", "control character", "'DEMO\\n40'", "batch_00003.parquet"]),
    Case("gene ids stored as integers", edit(lambda i, t: _gene_ids_as_numbers(t)),
         "gene_inventory", ["batch_00001.parquet", "'gene_id'", "int64", "must be strings"]),
    Case("text in a numeric column of one file", edit(F.only(1, lambda t: F.as_text(t, "donor_score"))),
         "gene_inventory", ["batch_00002.parquet", "'donor_score'", "type string", "requires a number"]),
    Case("a numeric column stored as text in every file", edit(lambda i, t: F.as_text(t, "gc_content")),
         "gene_inventory", ["batch_00001.parquet", "'gc_content'", "type string"]),
    Case("the same column twice in one file", edit(F.only(2, _duplicated_column)),
         "gene_inventory", ["batch_00003.parquet", "['gc_content']", "more than once"]),
    Case("empty directory", _empty_dir, "gene_inventory", ["no Parquet files", "master"]),
    Case("dataset path that does not exist", lambda src, out: out / "nowhere",
         "gene_inventory", ["nowhere", "does not exist"]),
    Case("only zero-row files", edit(lambda i, t: t.slice(0, 0)),
         "gene_inventory", ["has no rows", "3 file(s), all empty"]),
    Case("truncated Parquet file", _truncated, "gene_inventory", ["batch_00002.parquet", "not a readable Parquet file"]),
    Case("a text file named .parquet", _not_parquet, "gene_inventory",
         ["batch_00002.parquet", "not a readable Parquet file"]),
    Case("corrupt page in the gene_id column", _corrupt("gene_id"),
         "gene_inventory", ["batch_00002.parquet", "column 'gene_id'", "corrupt"]),
    Case("duplicated (gene_id, position) rows", edit(F.only(0, lambda t: pa.concat_tables([t, t.slice(0, 5)]))),
         "gene_inventory", ["5 (gene_id, position) pair(s)", "5 extra row(s) in 1 gene(s)",
                            "gene 'DEMO000001' position 159 ×2", "batch_00001.parquet"]),
    Case("one class only", edit(lambda i, t: F.relabel(t, slice(None), "neither")),
         "gene_inventory", ["'splice_type'", "single class", "neither=2510", "donor=0", "acceptor=0"]),
    Case("+inf in a feature", edit(F.only(1, lambda t: F.with_values(t, "gc_content", slice(0, 3), np.inf))),
         "feature_screening", ["'gc_content'", "3 infinite value(s)", "batch_00002.parquet"]),
    Case("-inf in a k-mer count", edit(F.only(2, lambda t: F.with_values(t, "3mer_AAA", slice(5, 7), -np.inf))),
         "feature_screening", ["'3mer_AAA'", "2 infinite value(s)", "batch_00003.parquet"]),
    Case("corrupt page in a feature column", _corrupt("gc_content"),
         "feature_screening", ["batch_00002.parquet", "column 'gc_content'", "corrupt"]),
    Case("instance overlap above 0.5", edit(None), "training_plan", ["instance_overlap=0.7", "[0, 0.5]"],
         plan={"instance_overlap": 0.7}),
    Case("negative instance overlap", edit(None), "training_plan", ["instance_overlap=-0.1", "[0, 0.5]"],
         plan={"instance_overlap": -0.1}),
    Case("holdout fraction leaving no training genes", edit(None), "training_plan",
         ["holdout_fraction=0.98", "leaves 1 training gene(s) of 48", "47 holdout"], plan={"holdout_fraction": 0.98}),
    Case("more instances than genes can fill", edit(None), "training_plan",
         ["44 instances of 44 training genes", "fewer genes than the 3 gene folds", ": 1 gene(s)", "genes_per_instance"],
         plan={"genes_per_instance": 2, "max_instances": 1000}),
    Case("fewer than two gene folds", edit(None), "training_plan", ["n_folds=1", "at least 2"], training={"n_folds": 1}),
]


@pytest.mark.parametrize("case", REJECTED, ids=[c.kind for c in REJECTED])
def test_bad_input_is_rejected_at_the_earliest_step_and_harms_nothing(case, trained, tiny_dataset, tmp_path):
    trained_root, rows, predictions = trained
    root = F.copy_tree(trained_root, tmp_path / "root")
    before = F.tree_digest(root / "artifacts")
    cfg = case_config(root, case.build(tiny_dataset, tmp_path / "bad"), case.plan, case.training)
    step, message = run_graph(cfg)
    assert step == case.step, f"{case.kind}: expected {case.step} to refuse it, got {step}: {message}"
    missing = [s for s in case.says if s not in message]
    assert not missing, f"message does not name {missing}: {message}"
    assert_intact(root, before, step, rows, predictions)


# ---------------------------------------------------------------- handled, with the result proven

def _stream(dataset: Path, genes=None):
    """Features, fill values and the imputed float32 rows exactly as XGBoost receives them."""
    ds = open_dataset(dataset)
    inv, profile = build_gene_inventory(ds, threads=1)
    manifest = screen_features(ds, inv.column("gene_id").to_pylist())
    features, fill = feature_columns(manifest)
    batches = list(iter_subset_batches(ds, genes, features, fill, batch_rows=4096))
    X = np.concatenate([b.X for b in batches])
    gene = np.concatenate([b.gene_id for b in batches])
    pos = np.concatenate([b.position for b in batches])
    return ds, inv, profile, manifest, features, fill, X, gene, pos


def _manifest_row(manifest: pa.Table, column: str) -> dict:
    return next(r for r in manifest.to_pylist() if r["column"] == column)


def test_nan_and_null_features_are_imputed_with_the_column_mean(tiny_dataset, tmp_path):
    def holes(i, t):
        if i != 1:
            return t
        t = F.with_values(t, "gc_content", slice(0, 4), np.nan)
        return F.set_column(t, "donor_score", pa.array([None] * 3 + t.column("donor_score").to_pylist()[3:],
                                                        pa.float64()))

    data = F.derive(tiny_dataset, tmp_path / "d", holes)
    ds, inv, profile, manifest, features, fill, X, gene, pos = _stream(data)
    good = np.concatenate([pq.read_table(f, columns=["gc_content"]).column(0).to_numpy()
                           for f in F.master_files(data)])
    assert _manifest_row(manifest, "gc_content")["nan_count"] == 4
    assert fill["gc_content"] == pytest.approx(np.nanmean(good))        # the mean of the finite values
    assert not np.isnan(X).any()
    head = pq.read_table(F.master_files(data)[1], columns=["gene_id", "position"]).slice(0, 4).to_pylist()
    keys = [(r["gene_id"], r["position"]) for r in head]
    for column, rows in (("gc_content", keys), ("donor_score", keys[:3])):
        at = np.array([(g, p) in set(rows) for g, p in zip(gene, pos)])
        assert at.sum() == len(rows)
        np.testing.assert_array_equal(X[at, features.index(column)], np.float32(fill[column]))
        assert (X[~at, features.index(column)] != np.float32(fill[column])).mean() > 0.9


def test_kmer_columns_differing_between_files_count_as_zero(tiny_dataset, tmp_path):
    dropped = ["3mer_AAA", "3mer_ACG", "2mer_GT"]
    data = F.derive(tiny_dataset, tmp_path / "d", F.only(1, lambda t: t.drop_columns(dropped)))
    ds, inv, profile, manifest, features, fill, X, gene, pos = _stream(data)
    assert all(c in features and fill[c] == 0.0 for c in dropped)
    assert profile["files_missing_columns"] == {c: ["batch_00002.parquet"] for c in dropped}
    in_file2 = np.isin(gene, pq.read_table(F.master_files(data)[1], columns=["gene_id"]).column(0).to_numpy())
    for c in dropped:
        assert (X[in_file2, features.index(c)] == 0).all()
        assert (X[~in_file2, features.index(c)] > 0).any()  # the other files keep their counts


def test_a_non_kmer_feature_missing_from_a_file_takes_its_fill_value(tiny_dataset, tmp_path):
    data = F.derive(tiny_dataset, tmp_path / "d", F.only(2, lambda t: t.drop_columns(["sequence_complexity"])))
    ds, inv, profile, manifest, features, fill, X, gene, pos = _stream(data)
    other = np.concatenate([pq.read_table(f, columns=["sequence_complexity"]).column(0).to_numpy()
                            for f in F.master_files(data)[:2]])
    assert fill["sequence_complexity"] == pytest.approx(other.mean())
    assert profile["files_missing_columns"] == {"sequence_complexity": ["batch_00003.parquet"]}
    in_file3 = np.isin(gene, pq.read_table(F.master_files(data)[2], columns=["gene_id"]).column(0).to_numpy())
    assert in_file3.sum() > 0
    np.testing.assert_array_equal(X[in_file3, features.index("sequence_complexity")],
                                  np.float32(fill["sequence_complexity"]))


def test_a_column_that_is_all_null_in_the_first_file_stays_a_feature(tiny_dataset, tmp_path):
    """A file where a column is entirely null has Arrow type null; the column's type comes from
    the other files (it used to be typed null, hence 'non-numeric', and dropped)."""
    data = F.derive(tiny_dataset, tmp_path / "d", F.only(0, lambda t: F.set_column(t, "gc_content", pa.nulls(t.num_rows))))
    ds, inv, profile, manifest, features, fill, X, gene, pos = _stream(data)
    assert ds.schema.field("gc_content").type == pa.float64()
    assert "gc_content" in features
    in_file1 = np.isin(gene, pq.read_table(F.master_files(data)[0], columns=["gene_id"]).column(0).to_numpy())
    np.testing.assert_array_equal(X[in_file1, features.index("gc_content")], np.float32(fill["gc_content"]))


def test_a_zero_row_file_among_others_changes_nothing(tiny_dataset, tmp_path):
    with_empty = F.derive(tiny_dataset, tmp_path / "a", lambda i, t: t.slice(0, 0) if i == 1 else t)
    without = F.derive(tiny_dataset, tmp_path / "b", lambda i, t: None if i == 1 else t)
    inv_a, prof_a = build_gene_inventory(open_dataset(with_empty), threads=1)
    inv_b, prof_b = build_gene_inventory(open_dataset(without), threads=1)
    assert inv_a.drop_columns(["source_file"]).equals(inv_b.drop_columns(["source_file"]))
    assert prof_a["rows"] == prof_b["rows"] == 2510 - pq.read_metadata(F.master_files(tiny_dataset)[1]).num_rows
    assert prof_a["files"] == 3 and prof_b["files"] == 2


def test_label_spellings_are_normalised_and_string_types_may_differ_between_files(tiny_dataset, tmp_path):
    """'Donor', ' ACCEPTOR ', '', '0' and null are labels of the contract; string, large_string
    and dictionary-encoded string columns are one type."""
    spell = {"donor": "Donor", "acceptor": " ACCEPTOR ", "neither": None}

    def variants(i, t):
        labels = [spell[v] if k % 2 else v for k, v in enumerate(t.column("splice_type").to_pylist())]
        labels = [("0" if k % 5 == 0 else "") if v is None and k % 3 == 0 else v for k, v in enumerate(labels)]
        t = F.set_column(t, "splice_type", pa.array(labels, pa.string()))
        if i == 1:
            t = F.set_column(t, "gene_id", t.column("gene_id").cast(pa.large_string()))
        if i == 2:
            t = F.set_column(t, "gene_id", t.column("gene_id").dictionary_encode())
        return t

    data = F.derive(tiny_dataset, tmp_path / "d", variants)
    inv, profile = build_gene_inventory(open_dataset(data), threads=1)
    ref, ref_profile = build_gene_inventory(open_dataset(tiny_dataset), threads=1)
    assert profile["label_counts"] == ref_profile["label_counts"] == {"neither": 1864, "donor": 323, "acceptor": 323}
    assert inv.drop_columns(["source_file"]).equals(ref.drop_columns(["source_file"]))


def test_input_columns_named_like_computed_ones_do_not_shadow_them(tiny_dataset, tmp_path):
    """The SQL computes a label code and a file name per row; a dataset's own ``label``,
    ``filename`` or ``v`` columns must not be mistaken for them."""
    data = F.derive(tiny_dataset, tmp_path / "d", lambda i, t: F.set_column(F.set_column(F.set_column(
        t, "label", np.full(t.num_rows, 7.0)), "filename", ["x"] * t.num_rows), "v", np.arange(t.num_rows) * 1.0))
    ds = open_dataset(data)
    inv, profile = build_gene_inventory(ds, threads=1)
    assert profile["label_counts"] == {"neither": 1864, "donor": 323, "acceptor": 323}
    assert set(inv.column("source_file").to_pylist()) == {str(f) for f in ds.files}
    manifest = screen_features(ds, inv.column("gene_id").to_pylist())
    ref = screen_features(open_dataset(tiny_dataset), inv.column("gene_id").to_pylist())
    assert _manifest_row(manifest, "donor_score")["label_corr"] == pytest.approx(_manifest_row(ref, "donor_score")["label_corr"])
    assert _manifest_row(manifest, "label")["reason"] == "constant"
    assert _manifest_row(manifest, "filename")["reason"].startswith("non-numeric")


def test_inf_in_a_column_that_is_not_a_feature_is_ignored(tiny_dataset, tmp_path):
    data = F.derive(tiny_dataset, tmp_path / "d", F.only(0, lambda t: F.with_values(t, "num_exons", slice(0, 3), np.inf)))
    ds = open_dataset(data)
    inv, _ = build_gene_inventory(ds, threads=1)
    manifest = screen_features(ds, inv.column("gene_id").to_pylist())
    assert _manifest_row(manifest, "num_exons")["reason"].startswith("structural leakage")


def test_a_single_row_gene_is_trained_and_predicted_out_of_fold(tiny_dataset, tmp_path):
    lone = "LONE0001"

    def add_lone(i, t):
        if i:
            return t
        return pa.concat_tables([t, F.rename_genes(t.slice(0, 1), {t.column("gene_id")[0].as_py(): lone}).cast(t.schema)])

    data = F.derive(tiny_dataset, tmp_path / "d", add_lone)
    ds = open_dataset(data)
    inv, _ = build_gene_inventory(ds, threads=1)
    row = next(r for r in inv.to_pylist() if r["gene_id"] == lone)
    assert row["n_rows"] == 1
    genes = inv.column("gene_id").to_pylist()
    features, fill = feature_columns(screen_features(ds, genes))
    subset = [lone, *[g for g in genes if g != lone][:20]]
    train_instance(ds, subset, features, fill, FAST_TRAINING, tmp_path / "m", "s00")
    folds = pq.read_table(tmp_path / "m" / "folds.parquet").to_pylist()
    assert sum(r["gene_id"] == lone for r in folds) == 1
    oof = pq.read_table(tmp_path / "m" / "oof_predictions.parquet").to_pylist()
    mine = [r for r in oof if r["gene_id"] == lone]
    assert len(mine) == 1 and abs(mine[0]["p_neither"] + mine[0]["p_donor"] + mine[0]["p_acceptor"] - 1) < 1e-9
    assert load_model(tmp_path / "m").predict_proba(pq.read_table(F.master_files(data)[0]).slice(0, 5)).shape == (5, 3)


def test_max_instances_above_what_the_genes_need_is_an_upper_bound(tiny_dataset, tmp_path):
    cfg = case_config(tmp_path / "root", tiny_dataset, plan={"genes_per_instance": 16, "max_instances": 1000})
    assert run_graph(cfg, until="training_plan") == (None, None)
    plan = artifacts.load_plan(cfg)
    assert 2 <= len(plan["subsets"]) <= 4 and plan["coverage"] == 1.0
    assert all(s["n_genes"] >= 3 for s in plan["subsets"])


# ---------------------------------------------------------------- model directories

@pytest.mark.parametrize("damage", ["missing", "altered", "truncated"])
def test_a_damaged_booster_is_refused_by_name_and_the_ensemble_is_kept(damage, trained, tmp_path):
    trained_root, rows, predictions = trained
    root = F.copy_tree(trained_root, tmp_path / "root")
    cfg = planned_config(PlatformConfig(data_root=str(root)))
    inst = cfg.instance_dir(artifacts.load_plan(cfg)["subsets"][1]["key"])
    booster = inst / "booster_acceptor.ubj"
    if damage == "missing":
        booster.unlink()
    elif damage == "altered":
        data = bytearray(booster.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit
        booster.write_bytes(bytes(data))
    else:
        F.truncate(booster, 0.9)
    with pytest.raises(ModelError, match=f"{inst}: file booster_acceptor.ubj"):
        load_model(inst)
    assert "booster_acceptor.ubj" in model_problem(inst)
    consolidated = root / "artifacts" / "consolidated_model"
    before = F.tree_digest(consolidated)
    with pytest.raises(ModelError, match="booster_acceptor.ubj"):
        stages.run_consolidation(cfg)
    # the consolidated model holds its own verified copies: untouched, still predicting as before
    assert F.tree_digest(consolidated) == before
    assert np.array_equal(load_model(consolidated).predict_proba(rows), predictions["consolidated_model"])
    other = cfg.instance_dir(artifacts.load_plan(cfg)["subsets"][0]["key"])
    assert np.array_equal(load_model(other).predict_proba(rows), predictions[f"instances/{other.name}"])


def _manifest_of(model_dir: Path) -> dict:
    return json.loads((model_dir / "manifest.json").read_text())


@pytest.mark.parametrize("tamper, says", [
    (lambda m: m["boosters"].__setitem__("donor", "../../booster_donor.ubj"), "not a file inside the model"),
    (lambda m: m["files"].__setitem__("/etc/hostname", "0" * 64), "not a file inside the model"),
    (lambda m: m.pop("files"), "lists no file checksums"),
    (lambda m: m["files"].pop("booster_neither.ubj"), "booster_neither.ubj without a checksum"),
], ids=["booster path escapes", "absolute file", "no checksums", "unlisted booster"])
def test_a_manifest_cannot_point_outside_its_model_or_skip_verification(tamper, says, trained, tmp_path):
    trained_root, rows, _ = trained
    cfg = planned_config(PlatformConfig(data_root=str(trained_root)))
    inst = F.copy_tree(cfg.instance_dir(artifacts.load_plan(cfg)["subsets"][0]["key"]), tmp_path / "inst")
    shutil.copy(inst / "booster_donor.ubj", tmp_path / "booster_donor.ubj")  # a well-formed file outside
    m = _manifest_of(inst)
    tamper(m)
    (inst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match=re.escape(says)):
        load_model(inst)


@pytest.mark.parametrize("damage, says", [
    (lambda p: F.truncate(p, 0.5), "is not valid JSON"),
    (lambda p: p.write_text("[1, 2]"), "a JSON object is expected"),
    (lambda p: p.unlink(), "no manifest.json"),
], ids=["truncated manifest", "manifest not an object", "manifest missing"])
def test_a_damaged_manifest_is_refused(damage, says, trained, tmp_path):
    trained_root, _, _ = trained
    ens = F.copy_tree(trained_root / "artifacts" / "consolidated_model", tmp_path / "ens")
    damage(ens / "manifest.json")
    with pytest.raises(ModelError, match=re.escape(says)):
        load_model(ens)


def test_prediction_input_with_infinite_or_missing_features_is_refused_by_column(trained):
    trained_root, rows, _ = trained
    model = load_model(trained_root / "artifacts" / "consolidated_model")
    bad = F.with_values(rows, "donor_score", slice(0, 2), np.inf)
    with pytest.raises(ModelError, match="'donor_score' has 2 infinite"):
        model.predict_proba(bad)
    with pytest.raises(ModelError, match="gc_content"):
        model.predict_proba(rows.drop_columns(["gc_content"]))
