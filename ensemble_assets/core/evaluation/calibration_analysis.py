"""Calibration analysis of one-vs-rest class probabilities: reliability bins, expected
calibration error (uniform and quantile bins), Brier score and log loss, raw vs calibrated.

scikit-learn has no ECE; ``reliability_bins`` is the one binning function, and the ECE is
computed from its bins, so the reliability diagram and the number always agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ensemble_assets.core.data.schema import CLASSES

STRATEGIES = ("uniform", "quantile")
EPS = 1e-7


def reliability_bins(y: np.ndarray, p: np.ndarray, n_bins: int = 15, strategy: str = "uniform") -> dict[str, np.ndarray]:
    """Bin the predicted probabilities ``p`` of the binary target ``y``.

    ``uniform``: ``n_bins`` equal-width bins on [0, 1] (p = 1 falls in the last bin).
    ``quantile``: edges at the quantiles of ``p``, so bins hold about the same number of rows;
    duplicate edges (many equal probabilities) are merged, giving fewer bins.
    Returns the non-empty bins: lower/upper edge, count, mean predicted probability and the
    observed fraction of positives."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y has {len(y)} values, p has {len(p)}")
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins} must be at least 1")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))) if len(p) else np.array([0.0, 1.0])
        if len(edges) == 1:
            edges = np.array([edges[0], edges[0]])
    else:
        raise ValueError(f"unknown binning strategy {strategy!r} ({', '.join(STRATEGIES)})")
    # bin b holds edges[b] <= p < edges[b+1]; the last bin is closed on the right
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    nb = len(edges) - 1
    count = np.bincount(idx, minlength=nb)
    sum_p = np.bincount(idx, weights=p, minlength=nb)
    sum_y = np.bincount(idx, weights=y, minlength=nb)
    keep = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = sum_p / count
        frac = sum_y / count
    return {"lower": edges[:-1][keep], "upper": edges[1:][keep], "count": count[keep],
            "mean_predicted": mean_p[keep], "fraction_positive": frac[keep]}


def ece_from_bins(bins: dict[str, np.ndarray]) -> float | None:
    n = bins["count"].sum()
    if not n:
        return None
    return float(np.sum(bins["count"] / n * np.abs(bins["mean_predicted"] - bins["fraction_positive"])))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 15, strategy: str = "uniform") -> float | None:
    """ECE = Σ_bins (rows in bin / rows) · |mean predicted probability − fraction positive|."""
    return ece_from_bins(reliability_bins(y, p, n_bins, strategy))


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((np.asarray(p, dtype=np.float64) - y) ** 2))


def binary_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration_report(y: np.ndarray, kinds: dict[str, np.ndarray],
                       n_bins: int = 15) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per class (one-vs-rest) and per kind of probability (e.g. ``calibrated`` and ``raw``, the
    boosters' uncalibrated outputs, or ``base`` scores): ECE with uniform and quantile bins,
    Brier score and log loss; plus the reliability bins of both strategies.

    ``kinds``: name → n×3 (neither, donor, acceptor) probabilities of the rows labelled ``y``.
    Returns (summary rows, bin rows)."""
    y = np.asarray(y, dtype=np.int64)
    summary, bin_rows = [], []
    for kind, proba in kinds.items():
        for c, cname in enumerate(CLASSES):
            yc, pc = (y == c), np.asarray(proba[:, c], dtype=np.float64)
            row: dict[str, Any] = {"class": cname, "kind": kind, "rows": int(len(y)), "positives": int(yc.sum())}
            for strategy in STRATEGIES:
                bins = reliability_bins(yc, pc, n_bins, strategy)
                row[f"ece_{strategy}"] = ece_from_bins(bins)
                for b in range(len(bins["count"])):
                    bin_rows.append({"class": cname, "kind": kind, "strategy": strategy, "bin": b,
                                     **{k: float(v[b]) if k != "count" else int(v[b]) for k, v in bins.items()}})
            row["brier"] = brier_score(yc, pc)
            row["log_loss"] = binary_log_loss(yc, pc)
            summary.append(row)
    return summary, bin_rows
