"""The explainers of one instance's three class outputs, and the additivity check.

- tree models get **exact TreeSHAP** (tree-path-dependent, no background sample):
  ``xgboost_ovr`` and ``xgboost_softprob`` through XGBoost's own
  ``Booster.predict(DMatrix, pred_contribs=True)`` in row chunks; scikit-learn's
  HistGradientBoosting through shap's tree algorithm on the exported trees (node counts as cover);
- other models (``sklearn:MLPClassifier``) get a **bounded model-agnostic permutation SHAP**
  (interventional, ``shap.PermutationExplainer``): for each of ``agnostic_rows`` sampled rows,
  ``agnostic_permutations`` random feature orders and their reverses; walking an order, the
  row's values replace those of ``agnostic_background`` background rows (drawn from the same
  sample) one feature at a time and each feature gets the change of the mean model output.
  Cost: at most rows × permutations × (2 × features + 1) × background model evaluations,
  independent of the model.

The explained output is the model's margin: the log-odds of each one-vs-rest booster
(``xgboost_ovr``) or the per-class input of the softmax (multi-class kinds). Additivity (sum of
contributions + bias = the margin) is checked on every explained row by ``check_additivity``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ensemble_assets.core.explanation.sampling import ShapSample
from ensemble_assets.core.explanation.settings import METHODS, ShapSettings
from ensemble_assets.core.training.sklearn_export import TreeEnsemblePredictor


class AdditivityError(RuntimeError):
    """SHAP contributions plus bias do not reproduce the booster's margin within tolerance."""


def tree_contributions(booster: Any, X: np.ndarray, features: Sequence[str] | None = None,
                       chunk_rows: int = 500, nthread: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """XGBoost's exact TreeSHAP contributions and the margins of the same rows, in chunks of
    ``chunk_rows`` rows: (n × (F + 1), n) for a one-output booster (last column the bias), and
    (n × G × (F + 1), n × G) for a booster of G outputs (``multi:softprob``)."""
    import xgboost as xgb

    names = list(features) if features is not None else None
    if names is not None and booster.feature_names is not None and list(booster.feature_names) != names:
        raise ValueError("the booster's feature names differ from the sample's columns")
    booster.set_param({"nthread": int(nthread)})
    n, F = X.shape
    parts, margins = [], []
    for s in range(0, max(n, 1), max(1, chunk_rows)):
        e = min(n, s + max(1, chunk_rows))
        dm = xgb.DMatrix(X[s:e], feature_names=names if booster.feature_names is not None else None,
                         nthread=int(nthread))
        parts.append(np.asarray(booster.predict(dm, pred_contribs=True), dtype=np.float32))
        margins.append(np.asarray(booster.predict(dm, output_margin=True), dtype=np.float64))
    return np.concatenate(parts), np.concatenate(margins)


def permutation_contributions(margin: Callable[[np.ndarray], np.ndarray], X: np.ndarray, background: np.ndarray,
                              permutations: int, rng: np.random.Generator,
                              max_cells: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Model-agnostic (interventional) permutation SHAP of every output of ``margin`` (n × G), by
    ``shap.PermutationExplainer`` over an ``shap.maskers.Independent`` masker of ALL the
    background rows.

    For each row, ``permutations`` random orders of the features that vary (those whose value is
    not ``isclose`` to every background row's: the others get 0), each walked forward and in
    reverse (antithetic): starting from the background rows, the row's values replace theirs one
    feature at a time; a feature's contribution is the change of the background-mean output. The
    explainer's ``max_evals`` is a budget of masked evaluations, one permutation costing
    ``2 k + 1`` of them (k varying features), so each row gets ``max_evals = permutations ×
    (2 k + 1)``: exactly ``permutations`` orders. The orders are drawn from numpy's global
    generator, which the explainer seeds (``seed=``) from ``rng``; the global state is restored
    afterwards. The contributions of one order sum to ``margin(x) − mean margin(background)``
    (telescoping). Model calls get at most ``max_cells`` cells (rows × F) each, in the dtype of
    ``X``. Returns contributions (n × G × (F + 1), last column the bias ``mean
    margin(background)``) and the margins of the rows (n × G)."""
    import shap

    n, F = X.shape
    B = len(background)
    if not B:
        raise ValueError("permutation SHAP needs at least one background row")
    bg = np.asarray(background, dtype=X.dtype)
    step = max(1, max_cells // max(1, F))                # rows per model call

    def model(H: np.ndarray) -> np.ndarray:
        H = np.asarray(H, dtype=X.dtype)
        return np.concatenate([np.asarray(margin(H[s:s + step]), dtype=np.float64).reshape(len(H[s:s + step]), -1)
                               for s in range(0, max(len(H), 1), step)])

    margins = model(X) if n else np.zeros((0, model(bg[:1]).shape[1]))
    G = margins.shape[1]
    contribs = np.zeros((n, G, F + 1), dtype=np.float64)
    masker = shap.maskers.Independent(bg, max_samples=B)
    orders = max(1, permutations)
    state = np.random.get_state()
    try:
        explainer = shap.PermutationExplainer(model, masker, seed=int(rng.integers(2**32)))
        for i in range(n):
            varying = int((~masker.invariants(X[i])).any(axis=0).sum())
            e = explainer(X[i:i + 1], max_evals=orders * (2 * varying + 1), silent=True)
            contribs[i, :, :F] = np.asarray(e.values, dtype=np.float64).reshape(F, G).T
            contribs[i, :, F] = np.asarray(e.base_values, dtype=np.float64).reshape(G)
    finally:
        np.random.set_state(state)
    return contribs, margins


@dataclass
class OutputExplanation:
    """The contributions of one class output on the explained rows of the sample."""
    contribs: np.ndarray       # (m, F + 1), last column the bias
    margin: np.ndarray         # (m,)
    seconds: float


def explainer_of(model: Any) -> tuple[str, str]:
    """(method id, scale id) for an instance model of any kind."""
    if model.model_type in ("xgboost_ovr", "xgboost_softprob"):
        return "treeshap_xgboost", "ovr" if model.model_type == "xgboost_ovr" else "softmax"
    if isinstance(model.predictor, TreeEnsemblePredictor):
        return "treeshap_trees", "softmax"
    if not hasattr(model.predictor, "margin"):
        raise ValueError(f"instance of kind {model.model_type}: its predictor exposes no margin to explain")
    return "permutation", "softmax"


def method_text(method: str, settings: ShapSettings, rows: int) -> str:
    return METHODS[method].format(rows=rows, permutations=settings.agnostic_permutations,
                                  background=settings.agnostic_background)


def explain_outputs(model: Any, sample: ShapSample, settings: ShapSettings,
                    method: str) -> tuple[np.ndarray, list[OutputExplanation]]:
    """The rows explained (indices into the sample) and one explanation per class."""
    X, F = sample.X, len(sample.features)
    n = len(X)
    rows = np.arange(n, dtype=np.int64)
    if method == "treeshap_xgboost" and model.model_type == "xgboost_ovr":
        out = []
        for c in range(3):
            t = time.perf_counter()
            contribs, margin = tree_contributions(model.boosters[c], X, sample.features, settings.chunk_rows,
                                                  settings.threads)
            out.append(OutputExplanation(contribs, margin, time.perf_counter() - t))
        return rows, out
    t = time.perf_counter()
    if method == "treeshap_xgboost":          # one multi:softprob booster: all three outputs at once
        contribs, margin = tree_contributions(model.boosters[0], X, sample.features, settings.chunk_rows,
                                              settings.threads)
        contribs = contribs.reshape(n, 3, F + 1)
        margin = margin.reshape(n, 3)
    elif method == "treeshap_trees":
        import shap

        X64 = X.astype(np.float64)
        margin = model.predictor.margin(X64)
        contribs = np.empty((n, 3, F + 1), dtype=np.float64)
        for c in range(3):
            ex = shap.TreeExplainer(model.predictor.shap_trees(c), feature_perturbation="tree_path_dependent")
            contribs[:, c, :F] = ex.shap_values(X64, check_additivity=False) if n else 0.0
            contribs[:, c, F] = float(np.ravel(ex.expected_value)[0])
    else:
        rng = np.random.default_rng(settings.seed)
        rows = np.sort(rng.choice(n, size=min(n, settings.agnostic_rows), replace=False)).astype(np.int64)
        bg = X[rng.choice(n, size=min(n, settings.agnostic_background), replace=False)]
        contribs, margin = permutation_contributions(model.predictor.margin, X[rows], bg,
                                                     settings.agnostic_permutations, rng)
    seconds = (time.perf_counter() - t) / 3
    return rows, [OutputExplanation(contribs[:, c, :], margin[:, c], seconds) for c in range(3)]


def additivity_error(contribs: np.ndarray, margin: np.ndarray) -> float:
    """Largest |Σ contributions + bias − margin| over the rows (contributions include the bias column)."""
    if not len(margin):
        return 0.0
    return float(np.max(np.abs(contribs.sum(axis=1, dtype=np.float64) - margin)))


def check_additivity(contribs: np.ndarray, margin: np.ndarray, tolerance: float, what: str) -> float:
    err = additivity_error(contribs, margin)
    if not err <= tolerance:
        raise AdditivityError(f"{what}: SHAP contributions + bias differ from the margin by up to {err:.3g} "
                              f"(tolerance {tolerance:g}); the importances would not explain this model")
    return err
