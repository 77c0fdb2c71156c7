"""Instance kinds on small generated data: one training path and one artifact format for every
kind, identifiers never in any kind's feature matrix, exact persistence without pickle, the
bounded gene sample, the kind in the partition identity, format versions, mixed ensembles."""

import json
import shutil
from dataclasses import asdict, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import stages
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.data.contract import DatasetError, label_codes, open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.schema import CLASSES, ID_COLUMNS, LEAKAGE_COLUMNS
from ensemble_assets.core.data.screening import feature_columns, screen_features
from ensemble_assets.core.io import sha256_text
from ensemble_assets.core.model.ensemble import ModelError, consolidate, load_model
from ensemble_assets.core.training.folds import assign_folds
from ensemble_assets.core.training.kinds import DenseSample, load_dense_sample, sample_whole_genes
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets.core.training.settings import (
    DEFAULT_INSTANCE_KIND,
    INSTANCE_KINDS,
    MODEL_FORMAT_VERSION,
    TrainingSettings,
)
from ensemble_assets.core.training.sklearn_export import (
    ADAPTERS,
    MLPPredictor,
    TreeEnsemblePredictor,
    export_hgb,
    export_mlp,
)
from ensemble_assets_tests.conftest import FAST_TRAINING

KINDS = list(INSTANCE_KINDS)
HGB, MLP = "sklearn:HistGradientBoostingClassifier", "sklearn:MLPClassifier"
FAST_SKLEARN = {HGB: {"max_iter": 25, "max_leaf_nodes": 8}, MLP: {"hidden_layer_sizes": [16], "max_iter": 30,
                                                                    "n_iter_no_change": 4}}
N_GENES = 30


def kind_settings(kind: str, **kw) -> TrainingSettings:
    return replace(FAST_TRAINING, **{"instance_kind": kind, "estimator_params": FAST_SKLEARN.get(kind, {}), **kw})


def _dirname(kind: str) -> str:
    return kind.replace(":", "_")


@pytest.fixture(scope="module")
def source(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    inv, _ = build_gene_inventory(ds, threads=1)
    genes = inv.column("gene_id").to_pylist()
    features, fill = feature_columns(screen_features(ds, genes))
    return ds, genes[:N_GENES], features, fill


@pytest.fixture(scope="module")
def trained(source, tmp_path_factory):
    """One instance of every kind on the same 30 genes (sklearn kinds: complete sample)."""
    ds, genes, features, fill = source
    root = tmp_path_factory.mktemp("kinds")
    out = {}
    for kind in KINDS:
        d = root / _dirname(kind)
        out[kind] = (d, train_instance(ds, genes, features, fill, kind_settings(kind), d, f"s-{_dirname(kind)}"))
    return out


@pytest.fixture(scope="module")
def expected_rows(source) -> pa.Table:
    """Every row of the instance's genes read straight from Parquet, with the gene fold that
    ``assign_folds`` gives the genes' class counts: what every kind's artifacts must show."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    ds, genes, _, _ = source
    t = pads.dataset(ds.file_strings, schema=ds.schema, format="parquet").to_table(
        columns=["gene_id", "position", "splice_type"], filter=pc.field("gene_id").isin(genes))
    label = label_codes(t.column("splice_type"))
    gene_arr = np.asarray(sorted(genes), dtype=object)
    gene_idx = np.searchsorted(gene_arr, np.asarray(t.column("gene_id").to_pylist(), dtype=object))
    counts = np.zeros((len(gene_arr), 3), dtype=np.int64)
    np.add.at(counts, (gene_idx, label), 1)
    fold = assign_folds(counts, FAST_TRAINING.n_folds, FAST_TRAINING.seed)
    rows = pa.table({"gene_id": t.column("gene_id"), "position": t.column("position").cast(pa.int64()),
                     "label": pa.array(label.astype(np.int64)), "fold": pa.array(fold[gene_idx].astype(np.int64))})
    return rows.sort_by([("gene_id", "ascending"), ("position", "ascending")])


def _normalized(t: pa.Table, columns: list[str]) -> pa.Table:
    t = t.select(columns)
    t = pa.table({c: t.column(c).cast(pa.int64()) if c != "gene_id" else t.column(c).cast(pa.string()) for c in columns})
    return t.sort_by([(c, "ascending") for c in columns[:2]])


def _proba(oof: pa.Table, prefix: str) -> np.ndarray:
    return np.column_stack([oof.column(f"{prefix}_{c}").to_numpy() for c in CLASSES])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_the_same_artifacts_on_the_same_gene_folds(trained, source, expected_rows, kind):
    ds, genes, features, fill = source
    d, manifest = trained[kind]
    ref_dir, ref = trained[DEFAULT_INSTANCE_KIND]
    assert manifest["model_type"] == kind and manifest["format_version"] == MODEL_FORMAT_VERSION
    # the gene → fold table is assign_folds of the genes' class counts, computed here from Parquet
    folds = _normalized(pq.read_table(d / "folds.parquet"), ["gene_id", "fold"])
    expected_folds = _normalized(expected_rows.group_by(["gene_id", "fold"]).aggregate([]), ["gene_id", "fold"])
    assert folds.equals(expected_folds)
    # every row of the instance exactly once, with its label and its gene's fold
    oof, ref_oof = pq.read_table(d / "oof_predictions.parquet"), pq.read_table(ref_dir / "oof_predictions.parquet")
    assert oof.schema.equals(ref_oof.schema) and oof.num_rows == manifest["n_rows"] == expected_rows.num_rows
    assert _normalized(oof, ["gene_id", "position", "label", "fold"]).equals(expected_rows)
    raw, cal = _proba(oof, "raw"), _proba(oof, "p")
    assert np.isfinite(raw).all() and ((raw >= 0) & (raw <= 1)).all()
    assert np.allclose(cal.sum(axis=1), 1.0)
    if kind != "xgboost_ovr":   # one multi-class model: raw probabilities already sum to 1
        assert np.allclose(raw.sum(axis=1), 1.0, atol=1e-5)
    assert set(manifest["metrics"]["oof"]) == set(ref["metrics"]["oof"])
    assert len(manifest["metrics"]["folds"]) == FAST_TRAINING.n_folds
    assert manifest["metrics"]["oof"]["macro_f1"] > 0.5     # learns something on the demo data
    curves = pq.read_table(d / "learning_curves.parquet")
    assert curves.column_names == pq.read_table(ref_dir / "learning_curves.parquet").column_names
    assert curves.num_rows > 0 and set(curves.column("fold").to_pylist()) == set(range(FAST_TRAINING.n_folds))
    model = load_model(d)
    table = pq.read_table(ds.files[0])
    p = model.predict_proba(table)
    assert p.shape == (table.num_rows, 3) and np.allclose(p.sum(axis=1), 1.0)
    assert list(model.classes_) == list(CLASSES) and model.total_instances == 1
    assert list(model.feature_names_in_) == model.get_feature_names() == features
    assert list(model.predict(table)) == list(model.classes_[p.argmax(axis=1)])


@pytest.mark.parametrize("kind", KINDS)
def test_identifiers_never_enter_the_feature_matrix(trained, source, kind):
    ds, genes, features, fill = source
    d, manifest = trained[kind]
    forbidden = set(ID_COLUMNS) | set(LEAKAGE_COLUMNS)
    assert not forbidden & set(manifest["feature_names"])
    model = load_model(d)
    # the persisted model itself has exactly the manifest's columns
    if kind.startswith("xgboost"):
        for b in model.boosters:
            assert b.feature_names == features and b.num_features() == len(features)
    else:
        with np.load(d / manifest["estimator_file"], allow_pickle=False) as z:
            n_in = int(z["n_features"]) if "n_features" in z.files else z["coef_0"].shape[0]
        assert n_in == len(features)
    # identifier values do not change a single prediction (``position`` is not scrambled: it is
    # an identifier as a column, but the gene-position features are computed from it; gene ids are
    # renamed, not scrambled: the gene-context features read which rows belong to one gene)
    assert "gene_offset_5p" in features
    table = pq.read_table(ds.files[0])
    rng = np.random.default_rng(0)
    scrambled = table.set_column(table.schema.get_field_index("gene_id"), "gene_id",
                                 pa.array([f"renamed-{g}" for g in table.column("gene_id").to_pylist()]))
    for col in ("transcript_id", "absolute_position", "window_start", "chrom", "gene_start", "gene_end", "tx_start"):
        if col in table.schema.names:
            i = table.schema.get_field_index(col)
            scrambled = scrambled.set_column(i, col, table.column(col).take(rng.permutation(table.num_rows)))
    assert np.array_equal(model.predict_proba(scrambled), model.predict_proba(table))
    # and the training boundary refuses them
    with pytest.raises(DatasetError, match="position"):
        train_instance(ds, genes, [*features, "position"], {**fill, "position": 0.0}, kind_settings(kind),
                       d.parent / "refused", "x")


def _rename_identifiers(src_dir, out_dir):
    """The same rows with other identifier values: gene ids renamed (order kept, so the same
    folds), transcript ids replaced. Positions stay: the gene-position features are computed
    from them (``test_screening``)."""
    out_dir.mkdir(parents=True)
    for f in sorted((src_dir / "master").glob("*.parquet")):
        t = pq.read_table(f)
        t = t.set_column(t.schema.get_field_index("gene_id"), "gene_id",
                         pa.array(["ZZ" + g for g in t.column("gene_id").to_pylist()]))
        if "transcript_id" in t.schema.names:
            t = t.set_column(t.schema.get_field_index("transcript_id"), "transcript_id",
                             pa.array([f"T{i}" for i in range(t.num_rows)]))
        pq.write_table(t, out_dir / f.name)
    return open_dataset(out_dir)


@pytest.mark.parametrize("kind", KINDS)
def test_training_does_not_depend_on_identifier_values(trained, source, tiny_dataset, tmp_path, kind):
    ds, genes, features, fill = source
    d, _ = trained[kind]
    renamed = _rename_identifiers(tiny_dataset, tmp_path / "renamed")
    train_instance(renamed, ["ZZ" + g for g in genes], features, fill, kind_settings(kind), tmp_path / "m")
    a, b = pq.read_table(d / "oof_predictions.parquet"), pq.read_table(tmp_path / "m" / "oof_predictions.parquet")
    assert np.array_equal(_proba(a, "raw"), _proba(b, "raw"))


def test_sklearn_exports_reproduce_the_live_estimators_after_reload(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):   # OpenMP threads on a busy machine only spin
        _check_sklearn_exports(tmp_path, HistGradientBoostingClassifier, MLPClassifier, make_pipeline, StandardScaler)


def _check_sklearn_exports(tmp_path, HistGradientBoostingClassifier, MLPClassifier, make_pipeline, StandardScaler):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 9)).astype(np.float32)
    X[:, 4] *= 1000
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    X_nan = X.copy()
    X_nan[rng.random(X.shape) < 0.05] = np.nan
    hgb = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X_nan, y)
    mlp = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(12, 6), max_iter=15, random_state=0))
    with pytest.warns(Warning):   # not converged in 15 epochs: fine for the test
        mlp.fit(X, y)
    X_new = rng.normal(size=(500, 9)).astype(np.float32)
    X_new[rng.random(X_new.shape) < 0.05] = np.nan
    for name, arrays, live, Xt in (("hgb", export_hgb(hgb), hgb, X_new),
                                   ("mlp", export_mlp(mlp), mlp, np.nan_to_num(X_new))):
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as z:
            loaded = {k: z[k] for k in z.files}
        assert all(v.dtype != object for v in loaded.values())
        pred = (TreeEnsemblePredictor if name == "hgb" else MLPPredictor)(loaded)
        assert np.abs(pred.raw_proba(Xt) - live.predict_proba(Xt)).max() < 1e-6, name
    # cut at an iteration = scikit-learn's staged prediction at that iteration
    staged = list(hgb.staged_predict_proba(X_new))
    assert np.abs(TreeEnsemblePredictor(export_hgb(hgb, 7)).raw_proba(X_new) - staged[6]).max() < 1e-6


def test_sample_whole_genes_is_bounded_seeded_and_whole():
    rows = np.array([5, 40, 7, 12, 30, 9, 3, 22])
    assert list(sample_whole_genes(rows, 1000, seed=1)) == list(range(8))
    s = sample_whole_genes(rows, 50, seed=1)
    assert rows[s].sum() <= 50 and len(s) >= 1 and list(s) == sorted(s)
    assert list(sample_whole_genes(rows, 50, seed=1)) == list(s)
    assert any(list(sample_whole_genes(rows, 50, seed=k)) != list(s) for k in range(2, 8))
    assert len(sample_whole_genes(rows, 1, seed=0)) == 1   # a gene bigger than the cap: one gene


def test_sklearn_kind_trains_on_a_bounded_gene_sample_and_predicts_every_row_out_of_fold(source, tmp_path):
    ds, genes, features, fill = source
    settings = kind_settings(HGB, max_sample_rows=700)
    data = load_dense_sample(ds, genes, features, fill, settings)
    assert isinstance(data, DenseSample) and not data.complete
    assert len(data.X) <= 700 and data.X.dtype == np.float32
    in_sample = np.isin(data.gene_idx, data.sample_genes)   # every row of a sampled gene, no other
    assert np.array_equal(np.flatnonzero(in_sample), data.sample_rows)
    m = train_instance(ds, genes, features, fill, settings, tmp_path / "m")
    assert m["training_sample"]["rows"] == len(data.X) and m["training_sample"]["genes"] == len(data.sample_genes)
    assert m["training_sample"]["complete"] is False
    oof = pq.read_table(tmp_path / "m" / "oof_predictions.parquet")
    assert oof.num_rows == len(data.label) > 700
    raw = _proba(oof, "raw")
    assert np.isfinite(raw).all() and np.allclose(raw.sum(axis=1), 1.0)
    # rows outside the sample are predicted by their fold's model: not all alike
    outside = ~np.isin(oof.column("gene_id").to_numpy(zero_copy_only=False), data.genes[data.sample_genes])
    assert outside.any() and np.unique(raw[outside].round(6), axis=0).shape[0] > 3
    # early stopping used sampled genes only, and folds.parquet says which
    folds = pq.read_table(tmp_path / "m" / "folds.parquet").to_pydict()
    sampled = set(data.genes[data.sample_genes].tolist())
    assert all(g in sampled for g, es in zip(folds["gene_id"], folds["early_stopping_in_folds"]) if es)


def test_instance_kind_is_part_of_the_partition_identity(source):
    ds, genes, features, fill = source
    base = TrainingSettings()
    # the default kind keeps the signature (and partition keys) of format version 1
    legacy = asdict(base)
    for k in ("nthread", "batch_rows", "device", "pass_cache", "instance_kind", "estimator_params", "max_sample_rows"):
        legacy.pop(k)
    assert base.signature() == sha256_text(repr(sorted(legacy.items())))[:12]
    sigs = {k: replace(base, instance_kind=k).signature() for k in KINDS}
    assert len(set(sigs.values())) == len(KINDS)
    mlp = replace(base, instance_kind=MLP)
    assert replace(mlp, estimator_params={"alpha": 0.1}).signature() != mlp.signature()
    assert replace(mlp, max_sample_rows=10).signature() != mlp.signature()
    assert replace(base, max_sample_rows=10).signature() == base.signature()   # no sample for XGBoost
    # a JSON object and its round-tripped pairs are the same settings
    a = replace(mlp, estimator_params={"hidden_layer_sizes": [8, 4], "alpha": 0.1})
    b = replace(mlp, estimator_params=[["alpha", 0.1], ["hidden_layer_sizes", [8, 4]]])
    assert a == b and a.signature() == b.signature() and hash(a) == hash(b)
    cfg = PlatformConfig(training=base)
    keys = {stages.model_signature(features, fill, replace(cfg, training=replace(base, instance_kind=k))) for k in KINDS}
    assert len(keys) == len(KINDS)
    with pytest.raises(ValueError, match="xgboost_softprob"):
        TrainingSettings(instance_kind="tabnet")
    with pytest.raises(ValueError, match="scikit-learn kinds only"):
        TrainingSettings(instance_kind="xgboost_softprob", estimator_params={"alpha": 1})


def test_run_config_and_cli_carry_the_kind(tmp_path):
    from ensemble_assets.cli import build_config, parser
    from ensemble_assets.defs.resources import EnsembleResource

    cfg = PlatformConfig(data_root=str(tmp_path), training=replace(
        TrainingSettings(), instance_kind=MLP, estimator_params={"hidden_layer_sizes": [8]}))
    shown = EnsembleResource.values_of(cfg)   # the run config a Dagster run shows
    assert shown["training"]["estimator_params"] == {"hidden_layer_sizes": [8]}
    assert shown["training"]["instance_kind"] == MLP
    assert EnsembleResource(**json.loads(json.dumps(shown))).config().training == cfg.training
    args = parser().parse_args(["train", "--instance-kind", HGB, "--estimator-params", '{"max_leaf_nodes": 15}',
                                "--max-sample-rows", "5000"])
    t = build_config(args).training
    assert (t.instance_kind, t.estimator_kwargs, t.max_sample_rows) == (HGB, {"max_leaf_nodes": 15}, 5000)
    assert build_config(parser().parse_args(["train"])).training.instance_kind == DEFAULT_INSTANCE_KIND
    with pytest.raises(ValueError, match="--estimator-params"):
        build_config(parser().parse_args(["train", "--instance-kind", HGB, "--estimator-params", "[1]"]))


def test_estimator_params_are_checked_against_the_estimator():
    with pytest.raises(ValueError, match="max_leafs"):
        ADAPTERS["HistGradientBoostingClassifier"].effective_params(kind_settings(HGB, estimator_params={"max_leafs": 3}))
    with pytest.raises(ValueError, match="early_stopping"):
        ADAPTERS["MLPClassifier"].effective_params(kind_settings(MLP, estimator_params={"early_stopping": True}))
    p = ADAPTERS["MLPClassifier"].effective_params(kind_settings(MLP, estimator_params={"alpha": 0.5}))
    assert p["alpha"] == 0.5 and p["random_state"] == FAST_TRAINING.seed


def _rewrite_manifest(d, **changes):
    m = json.loads((d / "manifest.json").read_text())
    m.update(changes)
    (d / "manifest.json").write_text(json.dumps(m))
    return m


def test_format_version_1_is_read_and_other_versions_are_refused_clearly(trained, source, tmp_path):
    ds, *_ = source
    table = pq.read_table(ds.files[0])
    d, _ = trained["xgboost_ovr"]
    v1 = tmp_path / "v1"
    shutil.copytree(d, v1)
    m = json.loads((v1 / "manifest.json").read_text())
    for k in ("tree_model",):   # fields version 1 did not write
        m.pop(k)
    m["format_version"] = 1
    (v1 / "manifest.json").write_text(json.dumps(m))
    assert np.array_equal(load_model(v1).predict_proba(table), load_model(d).predict_proba(table))
    no_type = tmp_path / "v1_no_type"
    shutil.copytree(v1, no_type)
    m.pop("model_type")
    (no_type / "manifest.json").write_text(json.dumps(m))
    assert load_model(no_type).model_type == "xgboost_ovr"
    sp = tmp_path / "v1_softprob"
    shutil.copytree(trained["xgboost_softprob"][0], sp)
    _rewrite_manifest(sp, format_version=1)
    with pytest.raises(ModelError, match="version 1 has no model type 'xgboost_softprob'"):
        load_model(sp)
    _rewrite_manifest(sp, format_version=MODEL_FORMAT_VERSION + 1)
    with pytest.raises(ModelError, match="newer release"):
        load_model(sp)
    _rewrite_manifest(sp, format_version=0)
    with pytest.raises(ModelError, match="retrain"):
        load_model(sp)
    _rewrite_manifest(sp, format_version=MODEL_FORMAT_VERSION, model_type="sklearn:TabNetClassifier")
    with pytest.raises(ModelError, match="not known to this release"):
        load_model(sp)
    # an ensemble of version-1 and version-2 members loads too
    ens = consolidate({"a": v1, "b": trained[MLP][0]}, tmp_path / "ens")
    assert sorted(ens["model_types"]) == ["sklearn:MLPClassifier", "xgboost_ovr"]
    assert load_model(tmp_path / "ens").total_instances == 2


@pytest.mark.parametrize("kind", [HGB, MLP])
def test_altered_estimator_arrays_are_refused(trained, tmp_path, kind):
    d, manifest = trained[kind]
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    with open(copy / manifest["estimator_file"], "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelError, match=manifest["estimator_file"]):
        load_model(copy)


def test_mixed_ensemble_predict_proba_is_the_weighted_average_of_its_members(trained, source, tmp_path):
    ds, *_ = source
    dirs = {_dirname(k): d for k, (d, _) in trained.items()}
    manifest = consolidate(dirs, tmp_path / "ensemble")
    assert manifest["model_types"] == sorted(KINDS)
    ens = load_model(tmp_path / "ensemble")
    assert ens.total_instances == len(KINDS)
    table = pq.read_table(ds.files[0])
    w = {m["partition_key"]: m["weight"] for m in manifest["members"]}
    assert abs(sum(w.values()) - 1.0) < 1e-12 and len(set(np.round(list(w.values()), 12))) > 1
    expected = sum(w[key] * load_model(d).predict_proba(table) for key, d in dirs.items())
    got = ens.predict_proba(table)
    assert np.allclose(got, expected, rtol=0, atol=1e-12)
    assert np.allclose(got.sum(axis=1), 1.0)
    assert list(ens.predict(table)) == list(ens.classes_[expected.argmax(axis=1)])
    # members are genuinely different models
    members = [load_model(d).predict_proba(table) for d in dirs.values()]
    assert all(not np.allclose(members[0], p) for p in members[1:])


SHAP_METHOD = {"xgboost_ovr": "treeshap_xgboost", "xgboost_softprob": "treeshap_xgboost", HGB: "treeshap_trees",
               MLP: "permutation"}


def test_exported_hgb_trees_give_the_estimators_own_tree_shap_values():
    import shap
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] + 0.3 * X[:, 2] > 0.5)
    est = HistGradientBoostingClassifier(max_iter=12, max_leaf_nodes=6, random_state=0).fit(X, y)
    pred = TreeEnsemblePredictor(export_hgb(est))
    direct = np.asarray(shap.TreeExplainer(est, model_output="raw").shap_values(X[:40]))
    direct = direct if direct.shape == (40, 5, 3) else np.moveaxis(direct, 0, -1)
    raw = est._raw_predict(X[:40])
    for c in range(3):
        ex = shap.TreeExplainer(pred.shap_trees(c), feature_perturbation="tree_path_dependent")
        phi = ex.shap_values(X[:40])
        assert np.allclose(phi, direct[:, :, c], atol=1e-9)
        assert np.allclose(phi.sum(axis=1) + float(np.ravel(ex.expected_value)[0]), raw[:, c], atol=1e-9)


def test_every_kind_is_explained_and_the_mixed_ensemble_records_each_method(trained, source, tmp_path):
    """Exact TreeSHAP for the tree kinds, bounded permutation SHAP for the MLP; every result is
    additive on its rows and names its method in the summary and the tables."""
    from ensemble_assets.core.explanation.settings import ShapSettings
    from ensemble_assets.core.explanation.shap_analysis import compute_ensemble_shap
    from ensemble_assets.core.io import read_json

    ds, *_ = source
    dirs = {_dirname(k): d for k, (d, _) in trained.items()}
    consolidate(dirs, tmp_path / "ensemble")
    settings = ShapSettings(sample_rows=150, agnostic_rows=12, agnostic_background=4, nthread=1)
    s = compute_ensemble_shap(tmp_path / "ensemble", tmp_path / "shap", settings, dataset=ds.root, plots=False)
    for kind in KINDS:
        out = tmp_path / "instance_shap" / _dirname(kind)
        summary = read_json(out / "summary.json")
        assert summary["model_type"] == kind and summary["method_id"] == SHAP_METHOD[kind]
        assert summary["rows"] == (12 if kind == MLP else 150) and summary["sample_rows"] == 150
        assert 0 <= summary["max_additivity_error"] <= 1e-3
        assert ("permutation" in summary["method"]) == (kind == MLP)
        imp = pq.read_table(out / "importance.parquet")
        assert set(imp.column("method").to_pylist()) == {SHAP_METHOD[kind]}
        top = max(imp.column(f"mean_abs_shap_{c}").to_numpy().max() for c in CLASSES)
        assert top > 0
    t = pq.read_table(tmp_path / "shap" / "instance_importance.parquet")
    assert dict(zip(t.column("partition_key").to_pylist(), t.column("method").to_pylist())) == {
        _dirname(k): SHAP_METHOD[k] for k in KINDS}
    assert s["method"].startswith("mixed") and set(s["instance_methods"]) == set(dirs)
    assert s["n_models"] == 3 + 1 + 1 + 1 and s["n_outputs"] == 3 * len(KINDS)
    assert len(s["scale"]) == 2   # log-odds of one-vs-rest boosters, softmax margin of the others
