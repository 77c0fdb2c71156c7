"""The merged booster (core/merged_booster.py): one XGBoost call for the whole ensemble, with the
same numbers as the per-instance calibrated weighted average."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.data.screening import feature_columns, screen_features
from ensemble_assets.core.model import ensemble as model_mod
from ensemble_assets.core.model.ensemble import consolidate, load_model
from ensemble_assets.core.model.merged_booster import MergeError, merge_boosters
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets_tests.conftest import FAST_TRAINING


@pytest.fixture(scope="module")
def ensemble(tiny_dataset, tmp_path_factory):
    """Two instances on overlapping gene subsets; the second one sees its features in another
    order and without two of them, so merging must renumber split features by name."""
    ds = open_dataset(tiny_dataset)
    inv, _ = build_gene_inventory(ds, threads=1)
    genes = inv.column("gene_id").to_pylist()
    features, fill = feature_columns(screen_features(ds, genes))
    root = tmp_path_factory.mktemp("ens")
    second = [f for f in reversed(features) if f not in ("donor_score", features[-1])]
    train_instance(ds, genes[:28], features, fill, FAST_TRAINING, root / "s00-a", "s00-a")
    train_instance(ds, genes[20:], second, fill, FAST_TRAINING, root / "s01-b", "s01-b")
    manifest = consolidate({"s00-a": root / "s00-a", "s01-b": root / "s01-b"}, root / "ens")
    table = pq.read_table(ds.files[0])
    return root / "ens", manifest, table


def test_consolidation_writes_a_merged_booster_with_every_tree(ensemble):
    path, manifest, _ = ensemble
    info = manifest["merged_booster"]
    assert info is not None, manifest["merged_booster_note"]
    assert (path / info["file"]).is_file() and info["file"] in manifest["files"]
    members = [load_model(path / m["path"]) for m in manifest["members"]]
    assert info["n_trees"] == sum(b.num_boosted_rounds() for m in members for b in m.boosters)
    assert info["columns"] == [[m["partition_key"], c] for m in manifest["members"] for c in CLASSES]


def test_merged_columns_are_each_members_booster_output_bit_for_bit(ensemble):
    path, manifest, table = ensemble
    model = load_model(path)
    assert model.merged is not None
    raw = model.merged.inplace_predict(model_mod.align_features(table, model.features, model.fill))
    for i, member in enumerate(model.members):
        Xm = model_mod.align_features(table, member.features, member.fill)
        assert np.array_equal(raw[:, 3 * i:3 * i + 3], np.column_stack([b.inplace_predict(Xm) for b in member.boosters]))


def test_merged_prediction_equals_the_per_instance_calibrated_average(ensemble):
    path, _, table = ensemble
    model = load_model(path)
    fast, reference = model.predict_proba(table), model.predict_proba_per_instance(table)
    assert fast.shape == (table.num_rows, 3)
    assert np.abs(fast - reference).max() <= 1e-6
    assert np.allclose(fast.sum(axis=1), 1.0)
    # positional arrays too, with missing values imputed as the table path imputes them
    X = model_mod.align_features(table, model.features, model.fill).astype(np.float64)
    X[::7, model.features.index("acceptor_score")] = np.nan
    X[::5, 0] = np.nan
    assert np.abs(model.predict_proba(X) - model.predict_proba_per_instance(X)).max() <= 1e-6
    # and the answer is not a trivial one: the members disagree, the average is in between
    m0 = model.members[0].predict_proba(table)
    m1 = model.members[1].predict_proba(table)
    assert np.abs(m0 - m1).max() > 1e-3


def test_without_a_merged_booster_prediction_falls_back_to_per_instance(ensemble):
    path, _, table = ensemble
    model = load_model(path)
    model.merged = None
    assert np.array_equal(model.predict_proba(table), model.predict_proba_per_instance(table))


def test_boosters_that_cannot_be_merged_exactly_are_refused():
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    names = ["a", "b", "c", "d"]
    soft = xgb.train({"objective": "multi:softprob", "num_class": 3, "nthread": 1},
                     xgb.DMatrix(X, y, feature_names=names), 2)
    with pytest.raises(MergeError, match="binary:logistic"):
        merge_boosters([(soft, names)], names)
    binary = xgb.train({"objective": "binary:logistic", "nthread": 1},
                       xgb.DMatrix(X, (y == 1).astype(np.float32), feature_names=names), 2)
    with pytest.raises(MergeError, match="outside"):
        merge_boosters([(binary, names)], names[:3])
