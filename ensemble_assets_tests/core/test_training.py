"""Instance training on small generated data: folds, out-of-fold honesty, calibration, models."""

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.screening import feature_columns, screen_features
from ensemble_assets.core.model.ensemble import ModelError, load_model
from ensemble_assets.core.training import folds as folds_mod
from ensemble_assets.core.training import loop as training_mod
from ensemble_assets.core.training.folds import assign_folds
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets.core.training.settings import require_device
from ensemble_assets_tests.conftest import FAST_TRAINING


def test_assign_folds_puts_each_gene_in_exactly_one_fold():
    rng = np.random.default_rng(1)
    counts = np.column_stack([rng.integers(5, 50, 200), rng.integers(0, 4, 200), rng.integers(0, 4, 200)])
    fold = assign_folds(counts, 5, seed=3)
    assert fold.shape == (200,) and set(fold.tolist()) == set(range(5))
    assert (assign_folds(counts, 5, seed=3) == fold).all()
    sizes = np.bincount(fold)
    assert sizes.min() >= 30  # balanced
    with pytest.raises(ValueError, match="n_folds=5"):
        assign_folds(counts[:3], 5, seed=0)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    ds = open_dataset(tiny_dataset)
    inv, _ = build_gene_inventory(ds, threads=1)
    genes = inv.column("gene_id").to_pylist()
    features, fill = feature_columns(screen_features(ds, genes))
    out = tmp_path_factory.mktemp("inst") / "s00"
    manifest = train_instance(ds, genes[:30], features, fill, FAST_TRAINING, out, "s00")
    return ds, genes, features, fill, out, manifest


def test_instance_folds_are_gene_disjoint_and_oof_covers_every_row(trained):
    ds, genes, features, fill, out, manifest = trained
    folds = pq.read_table(out / "folds.parquet").to_pydict()
    assert sorted(folds["gene_id"]) == sorted(genes[:30])
    assert len(set(folds["gene_id"])) == len(folds["gene_id"])  # one fold per gene
    oof = pq.read_table(out / "oof_predictions.parquet")
    assert oof.num_rows == manifest["n_rows"]
    by_gene = {}
    for g, f in zip(oof.column("gene_id").to_pylist(), oof.column("fold").to_pylist()):
        by_gene.setdefault(g, set()).add(f)
    assert all(len(v) == 1 for v in by_gene.values())
    p = np.column_stack([oof.column(f"p_{c}").to_numpy() for c in ("neither", "donor", "acceptor")])
    assert np.allclose(p.sum(axis=1), 1.0)
    assert manifest["metrics"]["oof"]["rows"] == manifest["n_rows"]
    assert "out-of-fold" in manifest["metrics_scope"]


def test_model_files_load_and_predict_rows_summing_to_one(trained):
    ds, genes, features, fill, out, manifest = trained
    model = load_model(out)
    table = pq.read_table(ds.files[0])
    p = model.predict_proba(table)
    assert p.shape == (table.num_rows, 3) and np.allclose(p.sum(axis=1), 1.0)
    assert list(model.classes_) == ["neither", "donor", "acceptor"]
    assert model.total_instances == 1 and model.n_features_in_ == len(features)
    assert set(model.predict(table)) <= {"neither", "donor", "acceptor"}


def test_alignment_is_by_name(trained):
    ds, genes, features, fill, out, manifest = trained
    model = load_model(out)
    table = pq.read_table(ds.files[0]).slice(0, 200)
    ref = model.predict_proba(table)
    shuffled = table.select(list(reversed(table.schema.names)))
    assert np.allclose(model.predict_proba(shuffled), ref)
    kmer = next(f for f in features if f.startswith("3mer_"))
    zeroed = table.set_column(table.schema.get_field_index(kmer), kmer, pa.array(np.zeros(table.num_rows)))
    assert np.allclose(model.predict_proba(zeroed.drop_columns([kmer])), model.predict_proba(zeroed))
    with pytest.raises(ModelError, match="donor_score"):
        model.predict_proba(table.drop_columns(["donor_score"]))


def test_calibrators_are_fitted_on_out_of_fold_predictions_only(tiny_dataset, tmp_path, monkeypatch):
    """Labels are random, and a unique per-row feature lets a model memorise its training rows:
    in-sample predictions would then separate the classes, out-of-fold ones cannot. The
    calibrators must see exactly the out-of-fold predictions."""
    ds = open_dataset(tiny_dataset)
    rng = np.random.default_rng(0)
    src = pq.read_table(ds.files[0])
    n = src.num_rows
    labels = rng.choice(["neither", "donor"], size=n, p=[0.7, 0.3])
    t = pa.table({"gene_id": src.column("gene_id"), "position": src.column("position"),
                  "splice_type": labels, "row_code": rng.permutation(n).astype(float),
                  "noise": rng.normal(size=n)})
    (tmp_path / "d").mkdir()
    pq.write_table(t, tmp_path / "d" / "x.parquet")
    d = open_dataset(tmp_path / "d")
    seen = []
    real_fit = training_mod.fit_calibrator
    monkeypatch.setattr(training_mod, "fit_calibrator",
                        lambda raw, y, method: seen.append(np.asarray(raw).copy()) or real_fit(raw, y, method))
    genes = sorted(set(t.column("gene_id").to_pylist()))
    settings = FAST_TRAINING.__class__(**{**FAST_TRAINING.__dict__, "n_estimators": 60, "early_stopping_rounds": 60,
                                          "max_depth": 8, "min_child_weight": 0.0, "colsample_bytree": 1.0})
    m = train_instance(d, genes, ["row_code", "noise"], {"row_code": 0.0, "noise": 0.0}, settings, tmp_path / "m")
    oof = pq.read_table(tmp_path / "m" / "oof_predictions.parquet")
    raw_donor = oof.column("raw_donor").to_numpy()
    assert any(np.array_equal(s, raw_donor) for s in seen)  # the final donor calibrator's input
    y = np.asarray(oof.column("label").to_numpy()) == 1
    from sklearn.metrics import roc_auc_score

    assert abs(roc_auc_score(y, raw_donor) - 0.5) < 0.1  # out-of-fold: no memorised signal
    model = load_model(tmp_path / "m")
    insample = model.boosters[1].inplace_predict(np.column_stack(
        [t.column("row_code").to_numpy(), t.column("noise").to_numpy()]).astype(np.float32))
    y_rows = labels == "donor"
    assert roc_auc_score(y_rows, insample) > 0.75  # the same model in-sample does memorise
    assert m["metrics"]["oof"]["ap_donor"] < 0.45


def test_tampered_model_is_refused(trained, tmp_path):
    import shutil

    *_, out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "booster_donor.ubj", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelError, match="booster_donor.ubj"):
        load_model(copy)
    (copy / "booster_donor.ubj").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(copy)


def test_an_instance_reports_its_progress_fold_by_fold(trained, tmp_path, monkeypatch):
    """Progress through ``log``: rows loaded, each fold (k/n) and class with its best iteration and
    validation log loss, the final model; lines within a fit every PROGRESS_EVERY_ROUNDS rounds
    only once PROGRESS_MIN_SECONDS have passed (0 here), so a quick fit is one line per class."""
    ds, genes, features, fill, _, _ = trained
    settings = replace(FAST_TRAINING, n_estimators=60, early_stopping_rounds=60)  # runs all 60 rounds
    lines: list[str] = []
    manifest = train_instance(ds, genes[:24], features, fill, settings, tmp_path / "quiet", "s01", lines.append)
    assert any(line.startswith(f"{manifest['model_type']}: loaded {manifest['n_rows']} rows") for line in lines)
    n = settings.n_folds
    for k in range(1, n + 1):
        assert sum(line.startswith(f"fold {k}/{n}: learning from") for line in lines) == 1
        for c in ("neither", "donor", "acceptor"):
            done = [line for line in lines if line.startswith(f"fold {k}/{n} {c}: best round ")]
            assert len(done) == 1 and "of 60 (reached the maximum 60)" in done[0] and "val log loss 0." in done[0]
    assert not any(": round " in line for line in lines)           # quick fits: no in-fit lines
    assert any(line.startswith(f"final model on all {manifest['n_rows']} rows: neither ") for line in lines)
    assert len(lines) <= 4 + n * 4 + 3

    monkeypatch.setattr(folds_mod, "PROGRESS_MIN_SECONDS", 0.0)
    lines.clear()
    train_instance(ds, genes[:24], features, fill, settings, tmp_path / "chatty", "s01", lines.append)
    during = [line for line in lines if line.startswith(f"fold 2/{n} donor: round ")]
    assert [line.split(",")[0] for line in during] == [f"fold 2/{n} donor: round 25", f"fold 2/{n} donor: round 50"]


def _gpu_visible() -> bool:
    import json
    import warnings

    import xgboost as xgb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = xgb.train({"device": "cuda", "tree_method": "hist"}, xgb.DMatrix(np.zeros((2, 1)), label=[0.0, 1.0]), 1)
    return json.loads(b.save_config())["learner"]["generic_param"]["device"].startswith("cuda")


def test_cuda_without_a_visible_gpu_is_refused_before_anything_is_written(tiny_dataset, tmp_path, capsys):
    """XGBoost would fall back to the CPU with a warning, and the manifest would say cuda."""
    from ensemble_assets import cli

    if _gpu_visible():
        pytest.skip("a CUDA GPU is visible: device cuda is honoured here")
    cuda = replace(FAST_TRAINING, device="cuda")
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        train_instance(open_dataset(tiny_dataset), [], ["donor_score"], {"donor_score": 0.0}, cuda, tmp_path / "i")
    assert not (tmp_path / "i").exists()
    assert cli.main(["train", "--data-root", str(tmp_path / "root"), "--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "root").exists()
    # other kinds do not use XGBoost's device; cpu is never probed
    require_device(replace(cuda, instance_kind="sklearn:MLPClassifier"))
    require_device(FAST_TRAINING)
