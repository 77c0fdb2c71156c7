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

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset
from ensemble_assets.core.data.schema import (
    CLASSES,
    GENE_LABEL_COUNT_COLUMNS,
    ID_COLUMNS,
    LABEL_CHOSEN_TRACK_COLUMNS,
    LEAKAGE_COLUMNS,
    NON_FEATURE_BY_DEFAULT,
    is_coordinate,
)
from ensemble_assets.core.evaluation.metrics import evaluate
from ensemble_assets.core.io import atomic_directory, sha256_file, sha256_text, write_json, write_parquet
from ensemble_assets.core.planning.capacity import peak_rss_bytes
from ensemble_assets.core.training.calibration import calibrate_proba, fit_calibrator
from ensemble_assets.core.training.folds import CURVE_COLUMNS, fold_splits, new_curves
from ensemble_assets.core.training.kinds import get_kind
from ensemble_assets.core.training.settings import (
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    OOF_SCOPE,
    TrainingSettings,
    require_device,
)

# train_instance's progress lines (rows loaded, each fold and class, the final model) go to its
# ``log`` callable (the asset's: the run's log in the UI) and to this Python logger, which prints
# nothing unless a caller gives it a handler (``ensemble-assets train`` does)
PROGRESS_LOGGER = "ensemble_assets.progress"


def refuse_identifier_features(features: Sequence[str]) -> None:
    """Identifiers, absolute coordinates and label-leaking columns never enter any kind's feature
    matrix (screening excludes them; this is the guard at the training boundary)."""
    bad = [f for f in features if f in (*ID_COLUMNS, *LEAKAGE_COLUMNS, *NON_FEATURE_BY_DEFAULT,
                                        *GENE_LABEL_COUNT_COLUMNS, *LABEL_CHOSEN_TRACK_COLUMNS) or is_coordinate(f)]
    if bad:
        raise DatasetError(f"identifier, coordinate or label-leaking column(s) passed as features: {', '.join(bad)}; "
                           "they never enter a model (see feature_screening)")


def train_instance(ds: ParquetDataset, genes: Sequence[str], features: Sequence[str], fill: Mapping[str, float],
                   settings: TrainingSettings, out_dir: str | Path, partition_key: str = "single",
                   log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Train one complete instance of ``settings.instance_kind`` and write it atomically to
    ``out_dir``; return its manifest. Progress goes to ``log`` and to ``PROGRESS_LOGGER``."""
    log = _with_progress_logger(log)
    settings.validate()
    require_device(settings)
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
        log(f"fold {split.k + 1}/{settings.n_folds}: learning from {len(split.train)} rows, early stopping on "
            f"{len(val_genes[split.k])} genes ({len(split.val)} rows), predicting {len(split.oof)} rows of "
            f"{int((fold_of_gene == split.k).sum())} genes")
        fit = kind.fit_fold(data, split, settings, log)
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
    log(f"final model on all {n} rows: " + ", ".join(f"{name} {r} {kind.round_unit}" for name, r in rounds.items())
        + " (the folds' mean best)")
    t = time.perf_counter()
    final = kind.fit_final(data, rounds, settings)
    fit_seconds += time.perf_counter() - t
    log(f"final model fitted in {time.perf_counter() - t:.1f}s")

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


def _with_progress_logger(log: Callable[[str], None]) -> Callable[[str], None]:
    progress = logging.getLogger(PROGRESS_LOGGER)

    def both(message: str) -> None:
        log(message)
        progress.info(message)
    return both


def _with_iterations(curves: dict[str, list]) -> dict[str, list]:
    """Fill the iteration column: the row number within each (class, fold) run."""
    it_col: list[int] = []
    last = None
    for cl, fo in zip(curves["class"], curves["fold"]):
        it_col.append(0 if (cl, fo) != last else it_col[-1] + 1)
        last = (cl, fo)
    return {**curves, "iteration": it_col}
