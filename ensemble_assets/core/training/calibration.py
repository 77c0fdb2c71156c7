"""Per-class probability calibration, fitted on out-of-fold predictions only, stored as JSON."""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-7


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str = "isotonic") -> dict[str, Any]:
    """Fit one binary calibrator on out-of-fold probabilities ``raw`` and 0/1 targets ``y``."""
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        z = _logit(raw).reshape(-1, 1)
        lr = LogisticRegression(C=1e6).fit(z, y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    if method == "none":
        return {"method": "none"}
    raise ValueError(f"unknown calibration method {method!r} (isotonic, platt, none)")


def apply_calibrator(cal: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    m = cal["method"]
    if m == "isotonic":
        return np.interp(raw, np.asarray(cal["x"]), np.asarray(cal["y"]))
    if m == "platt":
        return 1.0 / (1.0 + np.exp(-(cal["a"] * _logit(raw) + cal["b"])))
    if m == "none":
        return raw
    raise ValueError(f"unknown calibration method {m!r}")


def calibrate_proba(calibrators: list[dict[str, Any]], raw: np.ndarray) -> np.ndarray:
    """Calibrate each one-vs-rest column of ``raw`` (n×3) and renormalise rows to sum to 1."""
    p = np.column_stack([apply_calibrator(c, raw[:, j]) for j, c in enumerate(calibrators)])
    p = np.clip(p, EPS, None)
    return p / p.sum(axis=1, keepdims=True)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))
