"""Gene folds: which genes each fold model learns from, stops early on and predicts."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ensemble_assets.core.data.contract import DatasetError
from ensemble_assets.core.training.settings import TrainingSettings


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


# progress of a fold model's fit: a line every PROGRESS_EVERY_ROUNDS rounds, but only once
# PROGRESS_MIN_SECONDS have passed since the last line (a quick fit says nothing until it ends)
PROGRESS_EVERY_ROUNDS = 25
PROGRESS_MIN_SECONDS = 30.0


class FitProgress:
    """Progress lines of one fold model's fit (``log``): while it runs, rarely (see above); when it
    ends, one line with the best iteration and the validation genes' log loss."""

    def __init__(self, log: Callable[[str], None], split: FoldSplit, n_folds: int, name: str, unit: str = "rounds"):
        self.log, self.unit = log, unit
        self.label = f"fold {split.k + 1}/{n_folds} {name}"
        self.t0 = self.last = time.perf_counter()

    def round(self, iteration: int, val_loss: float, best_loss: float) -> None:
        if (iteration + 1) % PROGRESS_EVERY_ROUNDS:
            return
        now = time.perf_counter()
        if now - self.last >= PROGRESS_MIN_SECONDS:
            self.last = now
            self.log(f"{self.label}: {self.unit[:-1]} {iteration + 1}, val log loss {val_loss:.5f} "
                     f"(best {best_loss:.5f}), {now - self.t0:.0f}s")

    def done(self, best_iteration: int, best_loss: float, iterations: int, max_iterations: int) -> None:
        state = "early-stopped" if iterations < max_iterations else f"reached the maximum {max_iterations}"
        self.log(f"{self.label}: best {self.unit[:-1]} {best_iteration + 1} of {iterations} ({state}), "
                 f"val log loss {best_loss:.5f}, {time.perf_counter() - self.t0:.1f}s")
