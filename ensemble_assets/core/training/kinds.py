"""Instance kinds: the per-kind half of instance training and loading.

``training.train_instance`` is the one code path (gene folds, early-stopping genes, out-of-fold
predictions, cross-fitted calibration, metrics, artifacts). A kind contributes only:

- ``load``: its training matrix and the side arrays of every row of the instance
  (label, gene index, position, base scores);
- ``fit_fold``: one fold model, early-stopped on the fold's validation genes, and its raw
  out-of-fold probabilities (n×3);
- ``fit_final``: the final model with the rounds/epochs chosen by the folds;
- ``save`` / ``load_predictor``: its files (no pickle) and a predictor with ``raw_proba``.

Kinds (``training.INSTANCE_KINDS``; the manifest's ``model_type``):

- ``xgboost_ovr``: three one-vs-rest ``binary:logistic`` boosters (the default).
- ``xgboost_softprob``: one ``multi:softprob`` booster, ``num_class=3``; the same quantized
  matrix, the same zero-weight folds, early stopping on the validation genes' multi-class log
  loss read from the prediction cache.
- ``sklearn:HistGradientBoostingClassifier`` and ``sklearn:MLPClassifier`` (StandardScaler →
  MLP): a dense float32 matrix of a bounded, gene-aware sample of the instance (whole genes,
  seeded, at most ``max_sample_rows`` rows); early stopping on the sample's validation genes;
  out-of-fold predictions for every row of the instance (rows outside the sample are streamed
  from Parquet and predicted by their fold's model). Persisted as plain arrays in ``.npz``
  (``allow_pickle=False``) and predicted by an exact numpy re-implementation
  (``sklearn_export.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset
from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.data.streaming import iter_subset_batches
from ensemble_assets.core.evaluation.metrics import binary_log_loss, multiclass_log_loss
from ensemble_assets.core.training import sklearn_export
from ensemble_assets.core.training.folds import FitProgress, FoldFit, FoldSplit, new_curves
from ensemble_assets.core.training.matrix import gather_rows, load_subset
from ensemble_assets.core.training.settings import INSTANCE_KINDS, TrainingSettings, xgb_params

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass

MULTICLASS = "multiclass"   # the output name of single multi-class models (best_iterations, curves)
TRAIN_CURVE_ROWS = 10_000   # training rows on which the scikit-learn kinds' train log loss is computed


class ModelLoadError(ValueError):
    """Model files that do not form a predictor of their declared kind."""


class InstanceKind:
    model_type: str = ""
    tree_model: bool = True
    round_unit: str = "trees"

    def load(self, ds: ParquetDataset, genes: Sequence[str], features: Sequence[str], fill: Mapping[str, float],
             settings: TrainingSettings, log: Log) -> Any:
        raise NotImplementedError

    def fit_fold(self, data: Any, split: FoldSplit, settings: TrainingSettings, log: Log = _quiet) -> FoldFit:
        """One fold model; its progress (rounds, best iteration, validation log loss) goes to ``log``."""
        raise NotImplementedError

    def finish_oof(self, data: Any, fold: np.ndarray, fold_models: list[Any], raw_oof: np.ndarray,
                   settings: TrainingSettings) -> None:
        """Fill the out-of-fold rows ``fit_fold`` left as NaN (default: none are)."""

    def fit_final(self, data: Any, rounds: dict[str, int], settings: TrainingSettings) -> Any:
        raise NotImplementedError

    def save(self, model: Any, directory: Path, settings: TrainingSettings) -> dict[str, Any]:
        """Write the model's files into ``directory``; return the manifest fields, with the
        written file names under ``model_files`` (checksummed by the caller)."""
        raise NotImplementedError

    def load_predictor(self, path: Path, manifest: dict[str, Any]) -> Any:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# XGBoost kinds: one QuantileDMatrix, zero-weight folds, early stopping from the prediction cache


def _boost_early_stopped(params: dict[str, Any], dm: Any, split: FoldSplit, y: np.ndarray,
                         loss: Callable[[np.ndarray, np.ndarray], float], settings: TrainingSettings,
                         name: str, curves: dict[str, list], log: Log = _quiet) -> tuple[Any, np.ndarray]:
    """``xgb.train`` on the fold's training rows (weights), stopping on the validation genes'
    ``loss`` read from the prediction cache; returns the booster and the out-of-fold rows'
    predictions at the best iteration. Progress goes to ``log`` (``FitProgress``)."""
    import xgboost as xgb

    yv, yt = y[split.val], y[split.train]
    state: dict[str, Any] = {"best": np.inf, "pred": None, "rounds": 0}
    progress = FitProgress(log, split, settings.n_folds, name)

    def metric(predt: np.ndarray, _dm: Any) -> tuple[str, float]:
        vl = loss(predt[split.val], yv)
        curves["class"].append(name)
        curves["fold"].append(split.k)
        curves["train_logloss"].append(loss(predt[split.train], yt))
        curves["val_logloss"].append(vl)
        if vl < state["best"]:
            state["best"], state["pred"] = vl, predt[split.oof].copy()
        progress.round(state["rounds"], vl, state["best"])
        state["rounds"] += 1
        return "val_logloss", vl

    bst = xgb.train(params, dm, num_boost_round=settings.n_estimators, evals=[(dm, "subset")],
                    custom_metric=metric, early_stopping_rounds=settings.early_stopping_rounds,
                    verbose_eval=False)
    progress.done(int(bst.best_iteration), float(state["best"]), state["rounds"], settings.n_estimators)
    return bst, state["pred"]


def _load_booster(path: Path) -> Any:
    import xgboost as xgb

    b = xgb.Booster()
    try:
        b.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        raise ModelLoadError(f"{path}: not a readable XGBoost model ({str(exc).splitlines()[0]})") from exc
    return b


class OneVsRestPredictor:
    def __init__(self, boosters: list[Any]):
        self.boosters = boosters

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([b.inplace_predict(X) for b in self.boosters]).astype(np.float64)


class SoftprobPredictor:
    def __init__(self, booster: Any):
        self.booster = booster
        self.boosters = [booster]

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        p = np.asarray(self.booster.inplace_predict(X), dtype=np.float64).reshape(len(X), 3)
        return p


class XGBoostOneVsRest(InstanceKind):
    model_type = "xgboost_ovr"

    def load(self, ds, genes, features, fill, settings, log):
        return load_subset(ds, genes, features, fill, settings)

    def fit_fold(self, data, split, settings, log=_quiet):
        params = xgb_params(settings)
        curves = new_curves()
        out = np.empty((len(split.oof), 3), dtype=np.float64)
        best: dict[str, int] = {}
        data.dmatrix.set_weight(split.train_weight())
        for c, cname in enumerate(CLASSES):
            y = (data.label == c).astype(np.float32)
            data.dmatrix.set_label(y)
            bst, pred = _boost_early_stopped(params, data.dmatrix, split, y, binary_log_loss, settings, cname, curves,
                                             log)
            out[:, c] = pred
            best[cname] = int(bst.best_iteration)
        return FoldFit(out, best, curves)

    def fit_final(self, data, rounds, settings):
        import xgboost as xgb

        params = xgb_params(settings)
        dm = data.dmatrix
        dm.set_weight(np.ones(len(data.label), dtype=np.float32))
        boosters = {}
        for c, cname in enumerate(CLASSES):
            dm.set_label((data.label == c).astype(np.float32))
            boosters[cname] = xgb.train(params, dm, num_boost_round=rounds[cname])
        return boosters

    def save(self, boosters, directory, settings):
        files = []
        for cname, bst in boosters.items():
            name = f"booster_{cname}.ubj"
            bst.save_model(str(directory / name))
            files.append(name)
        return {"boosters": {c: f"booster_{c}.ubj" for c in CLASSES},
                "n_estimators": {c: boosters[c].num_boosted_rounds() for c in CLASSES},
                "params": xgb_params(settings), "model_files": files}

    def load_predictor(self, path, manifest):
        boosters = manifest.get("boosters") or {}
        if set(boosters) != set(CLASSES):
            raise ModelLoadError(f"{path}: an xgboost_ovr manifest needs one booster per class "
                                 f"{list(CLASSES)}, found {sorted(boosters)}")
        return OneVsRestPredictor([_load_booster(path / boosters[c]) for c in CLASSES])


def softprob_params(settings: TrainingSettings) -> dict[str, Any]:
    return {**xgb_params(settings), "objective": "multi:softprob", "num_class": 3}


class XGBoostSoftprob(InstanceKind):
    model_type = "xgboost_softprob"
    booster_file = "booster_softprob.ubj"

    def load(self, ds, genes, features, fill, settings, log):
        data = load_subset(ds, genes, features, fill, settings)
        data.dmatrix.set_label(data.label.astype(np.float32))
        return data

    def fit_fold(self, data, split, settings, log=_quiet):
        curves = new_curves()
        data.dmatrix.set_weight(split.train_weight())
        y = data.label.astype(np.int64)
        bst, pred = _boost_early_stopped(softprob_params(settings), data.dmatrix, split, y, multiclass_log_loss,
                                         settings, MULTICLASS, curves, log)
        return FoldFit(np.asarray(pred, dtype=np.float64).reshape(len(split.oof), 3),
                       {MULTICLASS: int(bst.best_iteration)}, curves)

    def fit_final(self, data, rounds, settings):
        import xgboost as xgb

        data.dmatrix.set_weight(np.ones(len(data.label), dtype=np.float32))
        return xgb.train(softprob_params(settings), data.dmatrix, num_boost_round=rounds[MULTICLASS])

    def save(self, booster, directory, settings):
        booster.save_model(str(directory / self.booster_file))
        return {"booster": self.booster_file, "n_estimators": {MULTICLASS: booster.num_boosted_rounds()},
                "params": softprob_params(settings), "model_files": [self.booster_file]}

    def load_predictor(self, path, manifest):
        if not manifest.get("booster"):
            raise ModelLoadError(f"{path}: an xgboost_softprob manifest needs 'booster' (the model file)")
        return SoftprobPredictor(_load_booster(path / manifest["booster"]))


# ---------------------------------------------------------------------------------------------
# scikit-learn kinds: a bounded, gene-aware dense sample


@dataclass
class DenseSample:
    """Side arrays of every row of the instance; features of the sampled genes' rows only."""

    label: np.ndarray
    gene_idx: np.ndarray
    position: np.ndarray
    base: np.ndarray
    genes: np.ndarray            # sorted gene ids; gene_idx indexes this
    X: np.ndarray                # float32 (rows of the sample) × features
    sample_rows: np.ndarray      # instance row of each row of X
    row_in_sample: np.ndarray    # per instance row: its row in X, or -1
    sample_genes: np.ndarray     # sorted gene indices of the sample
    source: tuple[ParquetDataset, list[str], dict[str, float]]

    @property
    def complete(self) -> bool:
        return len(self.sample_genes) == len(self.genes)

    @property
    def y(self) -> np.ndarray:
        """Labels of the rows of X."""
        return self.label[self.sample_rows].astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {"genes": int(len(self.sample_genes)), "rows": int(len(self.sample_rows)),
                "instance_genes": int(len(self.genes)), "instance_rows": int(len(self.label)),
                "complete": bool(self.complete)}


def sample_whole_genes(rows_per_gene: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of whole genes holding at most ``max_rows`` rows
    (all genes when they fit; at least one gene)."""
    rows_per_gene = np.asarray(rows_per_gene, dtype=np.int64)
    if rows_per_gene.sum() <= max_rows:
        return np.arange(len(rows_per_gene))
    order = np.random.default_rng(seed).permutation(len(rows_per_gene))
    take = order[np.cumsum(rows_per_gene[order]) <= max_rows]
    return np.sort(take if len(take) else order[:1])


def load_dense_sample(ds: ParquetDataset, genes: Sequence[str], features: Sequence[str], fill: Mapping[str, float],
                      settings: TrainingSettings, log: Log = lambda m: None) -> DenseSample:
    """Pass 1 streams the side arrays of every row (no features); pass 2 the features of the
    sampled genes' rows into one float32 matrix. Rows keep the stream order of pass 1."""
    gene_arr = np.asarray(sorted(set(genes)), dtype=object)
    parts: dict[str, list[np.ndarray]] = {"label": [], "gene_idx": [], "position": [], "base": []}
    for b in iter_subset_batches(ds, gene_arr.tolist(), [], {}, settings.batch_rows):
        parts["label"].append(b.label)
        parts["gene_idx"].append(np.searchsorted(gene_arr, b.gene_id).astype(np.int32))
        parts["position"].append(b.position)
        parts["base"].append(b.base)
    cat = gather_rows(parts, gene_arr, ds)
    rows_per_gene = np.bincount(cat["gene_idx"], minlength=len(gene_arr))
    chosen = sample_whole_genes(rows_per_gene, settings.max_sample_rows, settings.seed)
    in_sample = np.isin(cat["gene_idx"], chosen)
    sample_rows = np.flatnonzero(in_sample)
    row_in_sample = np.full(len(in_sample), -1, dtype=np.int64)
    row_in_sample[sample_rows] = np.arange(len(sample_rows))
    X = np.empty((len(sample_rows), len(features)), dtype=np.float32)
    pos = 0
    for b in iter_subset_batches(ds, gene_arr[chosen].tolist(), features, fill, settings.batch_rows):
        expect = sample_rows[pos:pos + len(b.label)]
        if not (len(expect) == len(b.label) and np.array_equal(np.searchsorted(gene_arr, b.gene_id), cat["gene_idx"][expect])
                and np.array_equal(b.position, cat["position"][expect])):
            raise RuntimeError(f"row order of the sampled genes differs from the full pass (at row {pos})")
        X[pos:pos + len(b.label)] = b.X
        pos += len(b.label)
    if pos != len(sample_rows):
        raise RuntimeError(f"the sampled genes streamed {pos} rows, expected {len(sample_rows)}")
    log(f"training sample: {len(chosen)} of {len(gene_arr)} genes, {len(sample_rows)} of {len(in_sample)} rows "
        f"(max_sample_rows={settings.max_sample_rows})")
    return DenseSample(cat["label"], cat["gene_idx"], cat["position"], cat["base"], gene_arr, X, sample_rows,
                       row_in_sample, chosen, (ds, list(features), dict(fill)))


def _threads(settings: TrainingSettings):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=settings.nthread or None)


class SklearnKind(InstanceKind):
    """A scikit-learn multi-class estimator on the bounded gene sample; the estimator specifics
    (defaults, early-stopped fit, export to arrays, predictor) live in ``sklearn_export``."""

    round_unit = "iterations"

    def __init__(self, estimator: str):
        self.adapter = sklearn_export.ADAPTERS[estimator]
        self.model_type = f"sklearn:{estimator}"
        self.tree_model = self.adapter.tree_model
        self.round_unit = self.adapter.round_unit

    def load(self, ds, genes, features, fill, settings, log):
        return load_dense_sample(ds, genes, features, fill, settings, log)

    def fit_fold(self, data: DenseSample, split, settings, log=_quiet):
        rs = data.row_in_sample
        train, val = rs[split.train], rs[split.val]
        train, val = train[train >= 0], val[val >= 0]
        if not len(val):
            # none of the fold's early-stopping genes is in the sample: hold back a seeded share of
            # the sampled training genes instead (recorded in folds.parquet)
            sampled = np.unique(data.gene_idx[data.sample_rows[train]])
            n_val = max(1, int(round(len(sampled) * settings.validation_fraction)))
            if len(sampled) <= n_val:
                raise DatasetError(f"fold {split.k}: the training sample holds {len(sampled)} training gene(s), too few "
                                   f"to hold back early-stopping genes (max_sample_rows={settings.max_sample_rows})")
            held = np.random.default_rng(settings.seed + 1000 + split.k).choice(sampled, n_val, replace=False)
            is_held = np.isin(data.gene_idx[data.sample_rows[train]], held)
            train, val = train[~is_held], train[is_held]
        val_genes = np.unique(data.gene_idx[data.sample_rows[val]])
        y_sample = data.y
        missing = sorted(set(range(3)) - set(np.unique(y_sample[train]).tolist()))
        if missing:
            raise DatasetError(f"fold {split.k}: the training sample has no row of class(es) "
                               f"{', '.join(CLASSES[c] for c in missing)}; a multi-class model needs all three")
        rng = np.random.default_rng(settings.seed + split.k)
        curve_rows = train if len(train) <= TRAIN_CURVE_ROWS else np.sort(rng.choice(train, TRAIN_CURVE_ROWS, replace=False))
        progress = FitProgress(log, split, settings.n_folds, MULTICLASS, self.round_unit)
        with _threads(settings):
            arrays, best, train_curve, val_curve = self.adapter.fit_early_stopped(
                data.X[train], y_sample[train], data.X[val], y_sample[val], data.X[curve_rows], y_sample[curve_rows],
                settings)
        progress.done(int(best), float(val_curve[int(best)]) if len(val_curve) else float("nan"), len(val_curve),
                      int(self.adapter.effective_params(settings).get("max_iter", len(val_curve))))
        predictor = self.adapter.predictor(arrays)
        oof = np.full((len(split.oof), 3), np.nan, dtype=np.float64)
        here = rs[split.oof] >= 0
        if here.any():
            oof[here] = predictor.raw_proba(data.X[rs[split.oof][here]])
        curves = new_curves()
        curves["class"] = [MULTICLASS] * len(val_curve)
        curves["fold"] = [split.k] * len(val_curve)
        curves["train_logloss"] = [float(v) for v in train_curve]
        curves["val_logloss"] = [float(v) for v in val_curve]
        return FoldFit(oof, {MULTICLASS: int(best)}, curves, model=predictor, val_genes=val_genes)

    def finish_oof(self, data: DenseSample, fold, fold_models, raw_oof, settings):
        """Rows outside the sample: stream their genes once, each row predicted by its fold's model."""
        if data.complete:
            return
        ds, features, fill = data.source
        rest = np.setdiff1d(np.arange(len(data.genes)), data.sample_genes)
        todo = np.flatnonzero(data.row_in_sample < 0)
        pos = 0
        for b in iter_subset_batches(ds, data.genes[rest].tolist(), features, fill, settings.batch_rows):
            rows = todo[pos:pos + len(b.label)]
            if not (len(rows) == len(b.label) and np.array_equal(np.searchsorted(data.genes, b.gene_id), data.gene_idx[rows])
                    and np.array_equal(b.position, data.position[rows])):
                raise RuntimeError(f"row order of the genes outside the sample differs from the full pass (at row {pos})")
            f = fold[rows]
            for k in np.unique(f):
                m = f == k
                raw_oof[rows[m]] = fold_models[int(k)].raw_proba(b.X[m])
            pos += len(b.label)
        if pos != len(todo):
            raise RuntimeError(f"the genes outside the sample streamed {pos} rows, expected {len(todo)}")

    def fit_final(self, data: DenseSample, rounds, settings):
        with _threads(settings):
            arrays = self.adapter.fit_rounds(data.X, data.y, rounds[MULTICLASS], settings)
        return arrays, data.describe()

    def save(self, final, directory, settings):
        arrays, sample = final
        name = "estimator.npz"
        np.savez(directory / name, **arrays)
        return {"estimator": self.adapter.name, "estimator_file": name,
                "n_estimators": {self.adapter.round_unit: int(self.adapter.rounds_of(arrays))},
                "training_sample": {**sample, "max_sample_rows": settings.max_sample_rows,
                                    "sampling": "whole genes, seeded shuffle, until max_sample_rows"},
                "params": self.adapter.effective_params(settings), "model_files": [name]}

    def load_predictor(self, path, manifest):
        f = path / manifest.get("estimator_file", "estimator.npz")
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{f}: not a readable array file ({exc})") from exc
        return self.adapter.predictor(arrays)


_XGB_KINDS: dict[str, InstanceKind] = {"xgboost_ovr": XGBoostOneVsRest(), "xgboost_softprob": XGBoostSoftprob()}


def get_kind(model_type: str) -> InstanceKind:
    """The kind that trains and loads ``model_type`` (an entry of ``training.INSTANCE_KINDS``)."""
    if model_type in _XGB_KINDS:
        return _XGB_KINDS[model_type]
    if model_type in INSTANCE_KINDS and model_type.startswith("sklearn:"):
        return SklearnKind(model_type.split(":", 1)[1])
    raise ModelLoadError(f"model type {model_type!r} is not known to this release (known: {', '.join(INSTANCE_KINDS)})")
