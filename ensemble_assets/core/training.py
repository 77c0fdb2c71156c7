"""One instance: gene-aware CV, a model of the configured kind, calibration, metrics.

``train_instance`` is the one code path for every instance kind (``INSTANCE_KINDS``): it assigns
the gene folds and the early-stopping genes, runs the kind's fold fits, cross-fits the per-class
calibration on the out-of-fold predictions, computes the metrics and writes the artifacts. A
kind (``instance_kinds.py``) only loads its matrix, fits one fold, fits the final model, and
saves/loads its predictor.

For the XGBoost kinds, one quantized matrix per instance serves every fold and class: the rows
are streamed once per XGBoost pass from Parquet into a ``QuantileDMatrix``; folds are expressed
as zero weights on the genes a fold model must not learn from, and early stopping reads the log
loss of the fold's validation genes from XGBoost's own prediction cache (no second matrix, no
re-predict).

XGBoost walks the iterator several times while it builds the matrix (4 passes on CPU in 3.4).
Only the first pass reads Parquet: it spills its float32 batches to an anonymous temporary file
(``TrainingSettings.pass_cache``), and the later passes read them back from there, so the dataset
is scanned and converted once per instance. The spill lives in the page cache or on disk, never in
the process's heap, and is deleted as soon as the matrix is built.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from .calibration import calibrate_proba, fit_calibrator
from .dataset import DatasetError, ParquetDataset, RowBatch, iter_subset_batches
from .io import atomic_directory, sha256_file, sha256_text, write_json, write_parquet
from .metrics import evaluate
from .schema import (CLASSES, GENE_LABEL_COUNT_COLUMNS, ID_COLUMNS, LABEL_CHOSEN_TRACK_COLUMNS, LEAKAGE_COLUMNS,
                     NON_FEATURE_BY_DEFAULT)

MODEL_FORMAT = "ensemble_assets.model"
# 2: instance kinds (``model_type`` other than xgboost_ovr). Version 1 manifests (always
# xgboost_ovr, same fields) are still read: READABLE_FORMAT_VERSIONS.
MODEL_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
DEFAULT_INSTANCE_KIND = "xgboost_ovr"
# the instance kinds (also the manifest's ``model_type``); instance_kinds.get_kind implements them
INSTANCE_KINDS: tuple[str, ...] = (
    "xgboost_ovr",                              # three one-vs-rest binary:logistic boosters
    "xgboost_softprob",                         # one multi:softprob booster, num_class=3
    "sklearn:HistGradientBoostingClassifier",   # bounded gene sample, exported trees
    "sklearn:MLPClassifier",                    # StandardScaler → MLP, bounded gene sample
)
# settings that only exist for non-default kinds: left out of the default kind's signature, so
# the partition keys of xgboost_ovr instances are those of format version 1
_KIND_FIELDS = ("instance_kind", "estimator_params", "max_sample_rows")
OOF_SCOPE = ("out-of-fold: every row is predicted by a fold model that never trained on its gene; "
             "calibrated probabilities are cross-fitted (calibrator of each fold fitted on the other folds)")


@dataclass(frozen=True)
class TrainingSettings:
    n_folds: int = 5
    n_estimators: int = 400            # upper bound on boosting rounds per fold model
    early_stopping_rounds: int = 20
    learning_rate: float = 0.1
    max_depth: int = 6
    max_bin: int = 256
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 0.5
    reg_lambda: float = 1.0
    validation_fraction: float = 0.15  # of each training fold's genes, held back for early stopping
    calibration: str = "isotonic"      # isotonic | platt | none
    seed: int = 42
    nthread: int = 0                   # 0 → all cores
    device: str = "cpu"                # cpu | cuda
    batch_rows: int = 8_192             # rows per streamed batch (its size bounds the loading peak)
    pass_cache: bool = True            # spill the first pass's batches to a temp file (see module doc)
    instance_kind: str = DEFAULT_INSTANCE_KIND   # one of INSTANCE_KINDS
    # scikit-learn kinds: constructor parameters of the estimator (a JSON object; stored as sorted
    # (name, value) pairs), and the row cap of the gene-aware training sample
    estimator_params: tuple[tuple[str, Any], ...] = ()
    max_sample_rows: int = 150_000

    def __post_init__(self) -> None:
        if self.instance_kind not in INSTANCE_KINDS:
            raise ValueError(f"unknown instance_kind {self.instance_kind!r}; known kinds: {', '.join(INSTANCE_KINDS)}")
        params = _canonical_params(self.estimator_params)
        object.__setattr__(self, "estimator_params", params)
        if params and not self.instance_kind.startswith("sklearn:"):
            raise ValueError(f"estimator_params apply to the scikit-learn kinds only, not to {self.instance_kind!r}")
        if self.max_sample_rows < 1:
            raise ValueError(f"max_sample_rows={self.max_sample_rows} must be at least 1")

    @property
    def estimator_kwargs(self) -> dict[str, Any]:
        return dict(self.estimator_params)

    def validate(self) -> None:
        """Refuse settings that cannot train, naming the setting (before any data is read)."""
        checks = [
            (self.n_folds >= 2, f"n_folds={self.n_folds} must be at least 2"),
            (self.n_estimators >= 1, f"n_estimators={self.n_estimators} must be at least 1"),
            (self.early_stopping_rounds >= 1, f"early_stopping_rounds={self.early_stopping_rounds} must be at least 1"),
            (self.learning_rate > 0, f"learning_rate={self.learning_rate} must be positive"),
            (self.max_depth >= 1, f"max_depth={self.max_depth} must be at least 1"),
            (self.max_bin >= 2, f"max_bin={self.max_bin} must be at least 2"),
            (0 < self.subsample <= 1, f"subsample={self.subsample} is outside (0, 1]"),
            (0 < self.colsample_bytree <= 1, f"colsample_bytree={self.colsample_bytree} is outside (0, 1]"),
            (0 < self.validation_fraction < 1, f"validation_fraction={self.validation_fraction} is outside (0, 1)"),
            (self.calibration in ("isotonic", "platt", "none"),
             f"calibration={self.calibration!r} is not one of isotonic, platt, none"),
            (self.nthread >= 0, f"nthread={self.nthread} must be 0 (all cores) or more"),
            (self.batch_rows >= 1, f"batch_rows={self.batch_rows} must be at least 1"),
            (self.device == "cpu" or self.device.startswith("cuda"), f"device={self.device!r} is not cpu or cuda"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def signature(self) -> str:
        """Hash of everything that changes the trained model (not threads, batch size, device or
        the pass cache: they change how fast, not what is trained). The
        instance kind is part of it (a kind's own settings too), so changing it retrains."""
        d = asdict(self)
        for k in ("nthread", "batch_rows", "device", "pass_cache"):
            d.pop(k)
        if self.instance_kind == DEFAULT_INSTANCE_KIND:
            for k in _KIND_FIELDS:
                d.pop(k)
        elif not self.instance_kind.startswith("sklearn:"):
            d.pop("estimator_params")
            d.pop("max_sample_rows")
        return sha256_text(repr(sorted(d.items())))[:12]


def _canonical_params(params: Any) -> tuple[tuple[str, Any], ...]:
    """Estimator parameters as sorted (name, value) pairs, lists as tuples: a JSON object, a
    list of pairs (a JSON round trip) and the pairs themselves all give the same value."""
    def freeze(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return tuple(freeze(x) for x in v)
        if isinstance(v, dict):
            raise ValueError(f"estimator parameter values must be numbers, strings, booleans or lists, not {v!r}")
        return v

    if isinstance(params, dict):
        items = params.items()
    else:
        items = []
        for pair in params or ():
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ValueError(f"estimator_params must be a JSON object of name → value, got the item {pair!r}")
            items.append((pair[0], pair[1]))
    return tuple(sorted((str(k), freeze(v)) for k, v in items))


def xgb_params(s: TrainingSettings) -> dict[str, Any]:
    return {
        "objective": "binary:logistic", "tree_method": "hist", "max_bin": s.max_bin,
        "eta": s.learning_rate, "max_depth": s.max_depth, "min_child_weight": s.min_child_weight,
        "subsample": s.subsample, "colsample_bytree": s.colsample_bytree, "lambda": s.reg_lambda,
        "seed": s.seed, "nthread": s.nthread or os.cpu_count() or 1, "device": s.device,
        "disable_default_eval_metric": 1,
    }


def assign_folds(class_counts: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Gene → fold with ``StratifiedGroupKFold`` (shuffled, seeded), from per-gene class counts
    (genes × 3). The rows are represented by their labels alone, so no data is read."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_genes = len(class_counts)
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds} must be at least 2")
    if n_genes < n_folds:
        raise DatasetError(f"an instance with {n_genes} gene(s) cannot be split into n_folds={n_folds} gene folds")
    counts = np.asarray(class_counts, dtype=np.int64)
    y = np.repeat(np.tile(np.arange(3), n_genes), counts.ravel())
    groups = np.repeat(np.repeat(np.arange(n_genes), 3), counts.ravel())
    fold = np.full(n_genes, -1, dtype=np.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class rarer than n_folds
        cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(cv.split(np.zeros(len(y)), y, groups)):
            fold[np.unique(groups[test])] = k
    if (fold < 0).any() or len(np.unique(fold)) < n_folds:
        raise DatasetError(f"could not form {n_folds} non-empty gene folds from {n_genes} genes")
    return fold


@dataclass
class SubsetData:
    """The instance's quantized matrix and the per-row side arrays gathered on its first pass."""

    dmatrix: Any
    label: np.ndarray
    gene_idx: np.ndarray
    position: np.ndarray
    base: np.ndarray
    genes: np.ndarray    # sorted gene ids; gene_idx indexes this
    parquet_passes: int = 1  # passes that read Parquet (the others replayed the pass cache)


class _PassCache:
    """The float32 batches of one complete pass, in an anonymous temporary file (deleted on close)."""

    def __init__(self, directory: str | None = None):
        self._f = tempfile.TemporaryFile(dir=directory, prefix="ensemble-pass-")
        self.shapes: list[tuple[int, int]] = []
        self.complete = False
        self._read = 0

    def append(self, X: np.ndarray) -> None:
        self._f.write(memoryview(np.ascontiguousarray(X, dtype=np.float32)).cast("B"))
        self.shapes.append(X.shape)

    def discard(self) -> None:
        self._f.seek(0)
        self._f.truncate()
        self.shapes, self.complete = [], False

    def rewind(self) -> None:
        self._f.seek(0)
        self._read = 0

    def next(self) -> np.ndarray | None:
        if self._read >= len(self.shapes):
            return None
        X = np.empty(self.shapes[self._read], dtype=np.float32)
        if self._f.readinto(memoryview(X).cast("B")) != X.nbytes:
            raise RuntimeError("the pass cache file is truncated")
        self._read += 1
        return X

    def close(self) -> None:
        self._f.close()


class _BatchIter:
    """``xgboost.DataIter`` over ``iter_subset_batches``; collects side arrays on pass one and,
    with a ``_PassCache``, replays the later passes from it instead of re-reading Parquet."""

    def __new__(cls, *a, **kw):  # subclass lazily so importing this module needs no xgboost
        import xgboost as xgb

        class Impl(xgb.DataIter):
            def __init__(self, make: Callable[[], Iterator[RowBatch]], genes: np.ndarray, names: list[str],
                         cache: _PassCache | None = None):
                self._make, self._genes, self._it, self._names = make, genes, None, names
                self.first_pass, self._n = True, 0
                self.cache, self._exhausted = cache, False
                self.parquet_passes = 0
                self.parts: dict[str, list[np.ndarray]] = {"label": [], "gene_idx": [], "position": [], "base": []}
                super().__init__(release_data=True)

            def next(self, input_data: Callable) -> bool:
                if self.cache is not None and self.cache.complete:
                    X = self.cache.next()
                    if X is None:
                        return False
                    input_data(data=X, feature_names=self._names)
                    return True
                if self._it is None:
                    self._it = self._make()
                    self.parquet_passes += 1
                b = next(self._it, None)
                if b is None:
                    self._exhausted = True
                    return False
                idx = np.searchsorted(self._genes, b.gene_id).astype(np.int32)
                if self.first_pass:
                    self.parts["label"].append(b.label)
                    self.parts["gene_idx"].append(idx)
                    self.parts["position"].append(b.position)
                    self.parts["base"].append(b.base)
                elif not (self._n < len(self.parts["gene_idx"])
                          and np.array_equal(idx, self.parts["gene_idx"][self._n])
                          and np.array_equal(b.position, self.parts["position"][self._n])):
                    # rows must arrive in the same order on every pass, or labels would misalign
                    raise RuntimeError(f"row order changed between passes over the data (batch {self._n})")
                self._n += 1
                if self.cache is not None:
                    self.cache.append(b.X)
                input_data(data=b.X, feature_names=self._names)
                return True

            def reset(self) -> None:
                if self._it is not None:
                    self.first_pass = False
                    if self.cache is not None:
                        if self._exhausted:
                            self.cache.complete = True
                        else:  # a pass that stopped early: the cache holds part of the rows
                            self.cache.discard()
                if self.cache is not None:
                    self.cache.rewind()
                self._it, self._n, self._exhausted = None, 0, False

        return Impl(*a, **kw)


def gather_rows(parts: Mapping[str, list[np.ndarray]], gene_arr: np.ndarray, ds: ParquetDataset) -> dict[str, np.ndarray]:
    """Concatenate the per-batch side arrays of a subset; every gene must have rows."""
    if not parts["label"]:
        raise DatasetError(f"no rows in {ds.root} for the {len(gene_arr)} genes of this subset")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    missing = np.setdiff1d(np.arange(len(gene_arr)), np.unique(cat["gene_idx"]))
    if len(missing):
        raise DatasetError(f"{len(missing)} gene(s) of the subset have no rows in {ds.root}, e.g. "
                           f"{', '.join(map(str, gene_arr[missing[:5]]))}")
    return cat


def load_subset(ds: ParquetDataset, genes: Sequence[str], features: Sequence[str], fill: Mapping[str, float],
                settings: TrainingSettings, ref: Any = None) -> SubsetData:
    import xgboost as xgb

    gene_arr = np.asarray(sorted(set(genes)), dtype=object)
    cache = _PassCache() if settings.pass_cache else None
    it = _BatchIter(lambda: iter_subset_batches(ds, gene_arr.tolist(), features, fill, settings.batch_rows),
                    gene_arr, list(features), cache)
    try:
        dm = xgb.QuantileDMatrix(it, max_bin=settings.max_bin, nthread=settings.nthread or None, ref=ref)
    finally:
        if cache is not None:
            cache.close()
    cat = gather_rows(it.parts, gene_arr, ds)
    return SubsetData(dm, cat["label"], cat["gene_idx"], cat["position"], cat["base"], gene_arr, it.parquet_passes)


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _mlogloss(p: np.ndarray, y: np.ndarray) -> float:
    """Multi-class log loss of n×3 probabilities ``p`` and integer labels ``y``."""
    p = np.clip(np.asarray(p, dtype=np.float64)[np.arange(len(y)), np.asarray(y, dtype=np.int64)], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def peak_rss_bytes() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass(frozen=True)
class FoldSplit:
    """Row indices of one fold: the fold model learns from ``train``, stops early on ``val``
    (held-back genes of the training fold) and predicts ``oof`` (the fold's genes)."""

    k: int
    train: np.ndarray
    val: np.ndarray
    oof: np.ndarray
    n_rows: int

    def train_weight(self) -> np.ndarray:
        w = np.zeros(self.n_rows, dtype=np.float32)
        w[self.train] = 1.0
        return w


@dataclass
class FoldFit:
    """What a kind returns for one fold. ``oof_raw``: raw n_oof×3 probabilities of the fold's
    rows (NaN rows are filled by the kind's ``finish_oof``); ``best_iteration``: per model
    output (a class for one-vs-rest, ``multiclass`` otherwise), the best round/epoch (0-based);
    ``curves``: learning-curve rows (``CURVE_COLUMNS``; log loss, multi-class for single models)."""

    oof_raw: np.ndarray
    best_iteration: dict[str, int]
    curves: dict[str, list]
    model: Any = None     # the fold model, for kinds that predict some out-of-fold rows later
    val_genes: np.ndarray | None = None   # gene indices early stopping used, if not the split's


CURVE_COLUMNS = ("class", "fold", "train_logloss", "val_logloss")   # + iteration, numbered per run


def new_curves() -> dict[str, list]:
    return {c: [] for c in CURVE_COLUMNS}


def fold_splits(data: Any, settings: TrainingSettings) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[FoldSplit]]:
    """Gene folds (``assign_folds``) and, inside each training fold, the early-stopping genes.
    Returns (fold of each gene, fold of each row, early-stopping genes per fold, splits)."""
    n_genes, n = len(data.genes), len(data.label)
    counts = np.zeros((n_genes, 3), dtype=np.int64)
    np.add.at(counts, (data.gene_idx, data.label.astype(np.int64)), 1)
    fold_of_gene = assign_folds(counts, settings.n_folds, settings.seed)
    fold = fold_of_gene[data.gene_idx]
    rng = np.random.default_rng(settings.seed)
    val_genes: list[np.ndarray] = []
    splits = []
    for k in range(settings.n_folds):
        train_genes = np.flatnonzero(fold_of_gene != k)
        n_val = max(1, int(round(len(train_genes) * settings.validation_fraction)))
        val_genes.append(np.sort(rng.choice(train_genes, size=n_val, replace=False)))
        is_val = np.isin(data.gene_idx, val_genes[k])
        is_oof = fold == k
        splits.append(FoldSplit(k, np.flatnonzero(~is_oof & ~is_val), np.flatnonzero(is_val),
                                np.flatnonzero(is_oof), n))
    return fold_of_gene, fold, val_genes, splits


def refuse_identifier_features(features: Sequence[str]) -> None:
    """Identifiers and label-leaking columns never enter any kind's feature matrix (screening
    excludes them; this is the guard at the training boundary)."""
    bad = [f for f in features if f in (*ID_COLUMNS, *LEAKAGE_COLUMNS, *NON_FEATURE_BY_DEFAULT,
                                        *GENE_LABEL_COUNT_COLUMNS, *LABEL_CHOSEN_TRACK_COLUMNS)]
    if bad:
        raise DatasetError(f"identifier or label-leaking column(s) passed as features: {', '.join(bad)}; "
                           "they never enter a model (see feature_screening)")


def train_instance(ds: ParquetDataset, genes: Sequence[str], features: Sequence[str], fill: Mapping[str, float],
                   settings: TrainingSettings, out_dir: str | Path, partition_key: str = "single",
                   log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Train one complete instance of ``settings.instance_kind`` and write it atomically to
    ``out_dir``; return its manifest."""
    from .instance_kinds import get_kind

    settings.validate()
    refuse_identifier_features(features)
    kind = get_kind(settings.instance_kind)
    t0 = time.perf_counter()
    data = kind.load(ds, genes, features, fill, settings, log)
    t_load = time.perf_counter() - t0
    n, n_genes = len(data.label), len(data.genes)
    log(f"{kind.model_type}: loaded {n} rows of {n_genes} genes × {len(features)} features in {t_load:.1f}s")
    fold_of_gene, fold, val_genes, splits = fold_splits(data, settings)

    raw_oof = np.full((n, 3), np.nan, dtype=np.float64)
    curves = new_curves()
    best_iters: dict[str, list[int]] = {}
    fold_models: list[Any] = []
    fit_seconds = 0.0
    for split in splits:
        t = time.perf_counter()
        fit = kind.fit_fold(data, split, settings)
        fit_seconds += time.perf_counter() - t
        raw_oof[split.oof] = fit.oof_raw
        for name, it in fit.best_iteration.items():
            best_iters.setdefault(name, []).append(int(it))
        for c in CURVE_COLUMNS:
            curves[c].extend(fit.curves[c])
        fold_models.append(fit.model)
        if fit.val_genes is not None:
            val_genes[split.k] = np.sort(np.asarray(fit.val_genes))
    t = time.perf_counter()
    kind.finish_oof(data, fold, fold_models, raw_oof, settings)
    fit_seconds += time.perf_counter() - t
    if np.isnan(raw_oof).any():
        raise RuntimeError(f"{kind.model_type}: {int(np.isnan(raw_oof).any(axis=1).sum())} row(s) got no out-of-fold prediction")
    rounds = {name: max(1, int(round(float(np.mean(np.asarray(its) + 1))))) for name, its in best_iters.items()}
    t = time.perf_counter()
    final = kind.fit_final(data, rounds, settings)
    fit_seconds += time.perf_counter() - t
    for name, its in best_iters.items():
        log(f"{name}: best iterations per fold {its}, final model {rounds[name]} {kind.round_unit}")

    # calibration: final calibrators on all out-of-fold rows; reported numbers cross-fitted
    y_all = data.label.astype(np.int64)
    calibrators = [fit_calibrator(raw_oof[:, c], y_all == c, settings.calibration) for c in range(3)]
    cal_oof = np.zeros_like(raw_oof)
    for k in range(settings.n_folds):
        rest, here = fold != k, fold == k
        cal_k = [fit_calibrator(raw_oof[rest, c], y_all[rest] == c, settings.calibration) for c in range(3)]
        cal_oof[here] = calibrate_proba(cal_k, raw_oof[here])
    raw_norm = np.clip(raw_oof, 1e-7, None) / np.clip(raw_oof, 1e-7, None).sum(axis=1, keepdims=True)
    oof_metrics = evaluate(y_all, cal_oof, data.gene_idx, data.base)
    oof_raw_metrics = evaluate(y_all, raw_norm, data.gene_idx, data.base)
    fold_metrics = []
    for k in range(settings.n_folds):
        m = fold == k
        fm = evaluate(y_all[m], cal_oof[m], data.gene_idx[m], data.base[m])
        fm["fold"] = k
        fold_metrics.append(fm)
    elapsed = time.perf_counter() - t0

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        model_fields = kind.save(final, tmp, settings)
        files = {name: sha256_file(tmp / name) for name in model_fields.pop("model_files")}
        write_parquet(tmp / "oof_predictions.parquet", pa.table({
            "gene_id": pa.array(data.genes[data.gene_idx].tolist(), pa.string()),
            "position": data.position, "label": data.label, "fold": fold.astype(np.int16),
            **{f"raw_{c}": raw_oof[:, j] for j, c in enumerate(CLASSES)},
            **{f"p_{c}": cal_oof[:, j] for j, c in enumerate(CLASSES)},
            **{f"base_{c}": data.base[:, j] for j, c in enumerate(CLASSES)},
        }))
        val_sets = [set(v.tolist()) for v in val_genes]
        write_parquet(tmp / "folds.parquet", pa.table({
            "gene_id": pa.array(data.genes.tolist(), pa.string()), "fold": fold_of_gene,
            "early_stopping_in_folds": [",".join(str(k) for k, vs in enumerate(val_sets) if g in vs)
                                        for g in range(n_genes)],
        }))
        write_parquet(tmp / "learning_curves.parquet", pa.table(_with_iterations(curves)))
        for name in ("oof_predictions.parquet", "folds.parquet", "learning_curves.parquet"):
            files[name] = sha256_file(tmp / name)
        timings = {"load_seconds": round(t_load, 3), "fit_seconds": round(fit_seconds, 3),
                   "total_seconds": round(elapsed, 3)}
        if kind.model_type.startswith("xgboost"):
            timings["xgboost_train_seconds"] = round(fit_seconds, 3)
        if getattr(data, "parquet_passes", None) is not None:
            timings["parquet_passes"] = data.parquet_passes
        manifest = {
            "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "kind": "instance",
            "model_type": kind.model_type, "tree_model": kind.tree_model,
            "classes": list(CLASSES), "partition_key": partition_key,
            "feature_names": list(features), "fill_values": {f: float(fill[f]) for f in features},
            **model_fields,
            "calibrators": calibrators, "calibration": settings.calibration,
            "best_iterations": best_iters, "settings": {**asdict(settings), "estimator_params": settings.estimator_kwargs},
            "settings_signature": settings.signature(),
            "gene_subset_hash": sha256_text("\n".join(data.genes.tolist())),
            "n_genes": n_genes, "n_rows": n, "n_features": len(features),
            "metrics_scope": OOF_SCOPE,
            "metrics": {"oof": oof_metrics, "oof_uncalibrated": oof_raw_metrics, "folds": fold_metrics},
            "timings": timings,
            "peak_rss_bytes": peak_rss_bytes(),
            "files": files,
        }
        write_json(tmp / "manifest.json", manifest)
    log(f"instance {partition_key} ({kind.model_type}): out-of-fold macro F1 {oof_metrics['macro_f1']:.4f} "
        f"in {elapsed:.1f}s")
    return manifest


def _with_iterations(curves: dict[str, list]) -> dict[str, list]:
    """Fill the iteration column: the row number within each (class, fold) run."""
    it_col: list[int] = []
    last = None
    for cl, fo in zip(curves["class"], curves["fold"]):
        it_col.append(0 if (cl, fo) != last else it_col[-1] + 1)
        last = (cl, fo)
    return {**curves, "iteration": it_col}
