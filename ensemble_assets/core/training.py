"""One instance: gene-aware CV, three one-vs-rest XGBoost boosters, calibration, metrics.

One quantized matrix per instance serves every fold and class: the rows are streamed once per
XGBoost pass from Parquet into a ``QuantileDMatrix``; folds are expressed as zero weights on
the genes a fold model must not learn from, and early stopping reads the log loss of the
fold's validation genes from XGBoost's own prediction cache (no second matrix, no re-predict).

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
from .schema import CLASSES

MODEL_FORMAT = "ensemble_assets.model"
MODEL_FORMAT_VERSION = 1
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

    def signature(self) -> str:
        """Hash of everything that changes the trained model (not threads, batch size, device or
        the pass cache: they change how fast, not what is trained)."""
        d = asdict(self)
        for k in ("nthread", "batch_rows", "device", "pass_cache"):
            d.pop(k)
        return sha256_text(repr(sorted(d.items())))[:12]


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
    if not it.parts["label"]:
        raise DatasetError(f"no rows in {ds.root} for the {len(gene_arr)} genes of this subset")
    cat = {k: np.concatenate(v) for k, v in it.parts.items()}
    missing = np.setdiff1d(np.arange(len(gene_arr)), np.unique(cat["gene_idx"]))
    if len(missing):
        raise DatasetError(f"{len(missing)} gene(s) of the subset have no rows in {ds.root}, e.g. "
                           f"{', '.join(map(str, gene_arr[missing[:5]]))}")
    return SubsetData(dm, cat["label"], cat["gene_idx"], cat["position"], cat["base"], gene_arr, it.parquet_passes)


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def peak_rss_bytes() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def train_instance(ds: ParquetDataset, genes: Sequence[str], features: Sequence[str], fill: Mapping[str, float],
                   settings: TrainingSettings, out_dir: str | Path, partition_key: str = "single",
                   log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Train one complete instance and write it atomically to ``out_dir``; return its manifest."""
    import xgboost as xgb

    t0 = time.perf_counter()
    data = load_subset(ds, genes, features, fill, settings)
    t_load = time.perf_counter() - t0
    n, n_genes = len(data.label), len(data.genes)
    log(f"loaded {n} rows of {n_genes} genes × {len(features)} features in {t_load:.1f}s")
    counts = np.zeros((n_genes, 3), dtype=np.int64)
    np.add.at(counts, (data.gene_idx, data.label.astype(np.int64)), 1)
    fold_of_gene = assign_folds(counts, settings.n_folds, settings.seed)
    fold = fold_of_gene[data.gene_idx]
    rng = np.random.default_rng(settings.seed)
    val_genes: list[np.ndarray] = []
    for k in range(settings.n_folds):
        train_genes = np.flatnonzero(fold_of_gene != k)
        n_val = max(1, int(round(len(train_genes) * settings.validation_fraction)))
        val_genes.append(np.sort(rng.choice(train_genes, size=n_val, replace=False)))
    params = xgb_params(settings)
    raw_oof = np.zeros((n, 3), dtype=np.float64)
    curves: dict[str, list] = {"class": [], "fold": [], "train_logloss": [], "val_logloss": []}
    best_iters: dict[str, list[int]] = {c: [] for c in CLASSES}
    boosters: dict[str, Any] = {}
    xgb_seconds = 0.0
    dm = data.dmatrix
    for c, cname in enumerate(CLASSES):
        y = (data.label == c).astype(np.float32)
        dm.set_label(y)
        for k in range(settings.n_folds):
            is_val = np.isin(data.gene_idx, val_genes[k])
            is_oof = fold == k
            is_train = ~is_oof & ~is_val
            val_idx, train_idx, oof_idx = np.flatnonzero(is_val), np.flatnonzero(is_train), np.flatnonzero(is_oof)
            dm.set_weight(is_train.astype(np.float32))
            yv, yt = y[val_idx], y[train_idx]
            state = {"best": np.inf, "pred": None}

            def metric(predt: np.ndarray, _dm: Any) -> tuple[str, float]:
                vl = _logloss(predt[val_idx], yv)
                curves["class"].append(cname)
                curves["fold"].append(k)
                curves["train_logloss"].append(_logloss(predt[train_idx], yt))
                curves["val_logloss"].append(vl)
                if vl < state["best"]:
                    state["best"], state["pred"] = vl, predt[oof_idx].copy()
                return "val_logloss", vl

            t = time.perf_counter()
            bst = xgb.train(params, dm, num_boost_round=settings.n_estimators, evals=[(dm, "subset")],
                            custom_metric=metric, early_stopping_rounds=settings.early_stopping_rounds,
                            verbose_eval=False)
            xgb_seconds += time.perf_counter() - t
            best_iters[cname].append(int(bst.best_iteration))
            raw_oof[oof_idx, c] = state["pred"]
        n_final = max(1, int(round(float(np.mean(np.asarray(best_iters[cname]) + 1)))))
        dm.set_weight(np.ones(n, dtype=np.float32))
        t = time.perf_counter()
        boosters[cname] = xgb.train(params, dm, num_boost_round=n_final)
        xgb_seconds += time.perf_counter() - t
        log(f"{cname}: best iterations per fold {best_iters[cname]}, final model {n_final} trees")
    # iteration numbers per (class, fold) curve
    it_col, last = [], None
    for cl, fo in zip(curves["class"], curves["fold"]):
        it_col.append(0 if (cl, fo) != last else it_col[-1] + 1)
        last = (cl, fo)
    curves["iteration"] = it_col

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
        files = {}
        for cname, bst in boosters.items():
            name = f"booster_{cname}.ubj"
            bst.save_model(str(tmp / name))
            files[name] = sha256_file(tmp / name)
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
        write_parquet(tmp / "learning_curves.parquet", pa.table(curves))
        for name in ("oof_predictions.parquet", "folds.parquet", "learning_curves.parquet"):
            files[name] = sha256_file(tmp / name)
        manifest = {
            "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "kind": "instance",
            "model_type": "xgboost_ovr", "classes": list(CLASSES), "partition_key": partition_key,
            "feature_names": list(features), "fill_values": {f: float(fill[f]) for f in features},
            "boosters": {c: f"booster_{c}.ubj" for c in CLASSES},
            "calibrators": calibrators, "calibration": settings.calibration,
            "n_estimators": {c: boosters[c].num_boosted_rounds() for c in CLASSES},
            "best_iterations": best_iters, "params": xgb_params(settings), "settings": asdict(settings),
            "settings_signature": settings.signature(),
            "gene_subset_hash": sha256_text("\n".join(data.genes.tolist())),
            "n_genes": n_genes, "n_rows": n, "n_features": len(features),
            "metrics_scope": OOF_SCOPE,
            "metrics": {"oof": oof_metrics, "oof_uncalibrated": oof_raw_metrics, "folds": fold_metrics},
            "timings": {"load_seconds": round(t_load, 3), "xgboost_train_seconds": round(xgb_seconds, 3),
                        "total_seconds": round(elapsed, 3), "parquet_passes": data.parquet_passes},
            "peak_rss_bytes": peak_rss_bytes(),
            "files": files,
        }
        write_json(tmp / "manifest.json", manifest)
    log(f"instance {partition_key}: out-of-fold macro F1 {oof_metrics['macro_f1']:.4f} in {elapsed:.1f}s")
    return manifest
