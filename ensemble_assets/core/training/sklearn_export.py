"""scikit-learn estimators without pickle: fit with early stopping on validation genes, export
the fitted model to plain numeric arrays (``.npz``, read back with ``allow_pickle=False``) and
predict with an exact numpy re-implementation of the estimator's ``predict_proba``.

Supported estimators (``ADAPTERS``; the instance kind ``sklearn:<name>``):

- ``HistGradientBoostingClassifier``: the trees of ``_predictors`` as flat node arrays
  (feature, threshold, missing-goes-left, children, leaf value, node count — the cover TreeSHAP
  needs), one tree per class per iteration, plus the baseline raw prediction; prediction is
  baseline + Σ leaf values, softmax. Early stopping uses scikit-learn's own loss-based early
  stopping with ``X_val`` = the fold's validation genes; the model is cut at the best iteration.
- ``MLPClassifier`` with standardized inputs (``Pipeline(StandardScaler, MLPClassifier)``): the
  scaler's ``mean_``/``scale_`` and the layers' ``coefs_``/``intercepts_``; trained epoch by
  epoch (``partial_fit``), keeping the weights of the epoch with the lowest validation-gene log
  loss.

Adding an estimator means adding an adapter with these five methods; an estimator without one is
refused (it could only be persisted by pickling it).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ensemble_assets.core.evaluation.metrics import multiclass_log_loss

CLASS_CODES = np.arange(3)


def _softmax(raw: np.ndarray) -> np.ndarray:
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _Adapter:
    name = ""
    tree_model = False
    round_unit = "iterations"
    managed: tuple[str, ...] = ()   # parameters the platform sets itself

    def estimator_class(self) -> type:
        raise NotImplementedError

    def defaults(self, settings: Any) -> dict[str, Any]:
        raise NotImplementedError

    def effective_params(self, settings: Any) -> dict[str, Any]:
        """Defaults from the training settings, overridden by the configured ``estimator_params``."""
        user = settings.estimator_kwargs
        managed = sorted(set(user) & set(self.managed))
        if managed:
            raise ValueError(f"{self.name}: {', '.join(managed)} are set by the platform (early stopping on "
                             "validation genes, one fit per fold); remove them from estimator_params")
        known = set(inspect.signature(self.estimator_class()).parameters)
        unknown = sorted(set(user) - known)
        if unknown:
            raise ValueError(f"{self.name} has no parameter(s) {', '.join(unknown)}")
        return {**self.defaults(settings), **user}

    def _constructor_params(self, settings: Any) -> dict[str, Any]:
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.effective_params(settings).items()}


# ---------------------------------------------------------------------------------------------
# HistGradientBoostingClassifier


def export_hgb(est: Any, n_iter: int | None = None) -> dict[str, np.ndarray]:
    """The first ``n_iter`` iterations (all if None) of a fitted 3-class
    ``HistGradientBoostingClassifier`` as flat node arrays."""
    if list(est.classes_) != list(CLASS_CODES):
        raise ValueError(f"expected classes {list(CLASS_CODES)}, the estimator has {list(est.classes_)}")
    predictors = est._predictors[:n_iter] if n_iter is not None else est._predictors
    nodes, tree_class = [], []
    for per_class in predictors:
        for c, pred in enumerate(per_class):
            if pred.nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported (the platform passes numeric features only)")
            nodes.append(pred.nodes)
            tree_class.append(c)
    if not nodes:
        raise ValueError("the estimator has no trees")
    allnodes = np.concatenate(nodes)
    sizes = np.asarray([len(n) for n in nodes], dtype=np.int64)
    return {
        "feature": allnodes["feature_idx"].astype(np.int32),
        "threshold": allnodes["num_threshold"].astype(np.float64),
        "missing_left": allnodes["missing_go_to_left"].astype(np.bool_),
        "left": allnodes["left"].astype(np.int32),
        "right": allnodes["right"].astype(np.int32),
        "is_leaf": allnodes["is_leaf"].astype(np.bool_),
        "value": allnodes["value"].astype(np.float64),
        "count": allnodes["count"].astype(np.int64),
        "depth": allnodes["depth"].astype(np.int32),
        "tree_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "tree_class": np.asarray(tree_class, dtype=np.int8),
        "baseline": np.asarray(est._baseline_prediction, dtype=np.float64).ravel(),
        "n_features": np.asarray(est.n_features_in_, dtype=np.int64),
    }


class TreeEnsemblePredictor:
    """``predict_proba`` of exported HistGradientBoosting trees: softmax(baseline + Σ leaves)."""

    CELLS_PER_CHUNK = 4_000_000   # rows × trees traversed at once

    def __init__(self, a: dict[str, np.ndarray]):
        self.arrays = a
        off = a["tree_offsets"]
        tree_of_node = np.repeat(np.arange(len(off) - 1), np.diff(off))
        self.left = a["left"].astype(np.int64) + off[tree_of_node]
        self.right = a["right"].astype(np.int64) + off[tree_of_node]
        self.roots = off[:-1]
        self.feature = a["feature"].astype(np.int64)
        self.threshold, self.missing_left = a["threshold"], a["missing_left"]
        self.is_leaf, self.value = a["is_leaf"], a["value"]
        self.tree_class = a["tree_class"].astype(np.int64)
        self.baseline = a["baseline"]
        self.n_features = int(a["n_features"])
        self.n_iterations = len(self.roots) // 3

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """(rows × trees) leaf value each row reaches in each tree; X float64. All (row, tree)
        paths descend together, and those that reached a leaf drop out of the working set."""
        n, T = len(X), len(self.roots)
        idx = np.tile(self.roots, n)                      # (row r, tree t) at r*T + t
        row_start = np.repeat(np.arange(n, dtype=np.int64) * X.shape[1], T)
        flat = np.ascontiguousarray(X).ravel()
        active = np.arange(n * T)
        while len(active):
            node = idx[active]
            inner = ~self.is_leaf[node]
            active, node = active[inner], node[inner]
            if not len(active):
                break
            x = flat[row_start[active] + self.feature[node]]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            idx[active] = np.where(go_left, self.left[node], self.right[node])
        return self.value[idx].reshape(n, T)

    def raw(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} feature columns, got shape {X.shape}")
        out = np.empty((len(X), 3), dtype=np.float64)
        step = max(1, self.CELLS_PER_CHUNK // max(len(self.roots), 1))
        for s in range(0, len(X), step):
            lv = self.leaf_values(X[s:s + step])
            for c in range(3):
                out[s:s + step, c] = self.baseline[c] + lv[:, self.tree_class == c].sum(axis=1)
        return out

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax(self.raw(X))

    def margin(self, X: np.ndarray) -> np.ndarray:
        """The per-class softmax input (what SHAP explains)."""
        return self.raw(X)

    def shap_trees(self, c: int) -> dict[str, Any]:
        """The trees of class ``c`` in the tree-dictionary form of ``shap.TreeExplainer``
        (children, default child for missing values, split feature / threshold, ``x <= t`` goes
        left, leaf values, node counts as cover), the class's baseline as its offset."""
        a, off = self.arrays, self.arrays["tree_offsets"]
        trees = []
        for t in np.flatnonzero(self.tree_class == c):
            s, e = int(off[t]), int(off[t + 1])
            leaf = a["is_leaf"][s:e]
            left = np.where(leaf, -1, a["left"][s:e]).astype(np.int32)
            right = np.where(leaf, -1, a["right"][s:e]).astype(np.int32)
            trees.append({"children_left": left, "children_right": right,
                          "children_default": np.where(a["missing_left"][s:e], left, right).astype(np.int32),
                          "features": np.where(leaf, -2, a["feature"][s:e]).astype(np.int32),
                          "thresholds": np.where(leaf, 0.0, a["threshold"][s:e]).astype(np.float64),
                          "values": a["value"][s:e].astype(np.float64)[:, None],
                          "node_sample_weight": a["count"][s:e].astype(np.float64)})
        return {"trees": trees, "base_offset": float(self.baseline[c]), "tree_output": "raw_value",
                "input_dtype": np.float64, "internal_dtype": np.float64}


class HistGradientBoostingAdapter(_Adapter):
    name = "HistGradientBoostingClassifier"
    tree_model = True
    round_unit = "iterations"
    managed = ("early_stopping", "validation_fraction", "warm_start", "scoring", "categorical_features")

    def estimator_class(self) -> type:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier

    def defaults(self, settings: Any) -> dict[str, Any]:
        return {"max_iter": settings.n_estimators, "learning_rate": settings.learning_rate,
                "n_iter_no_change": settings.early_stopping_rounds, "random_state": settings.seed}

    def fit_early_stopped(self, Xt, yt, Xv, yv, Xc, yc, settings):
        """Early stopping on the validation genes (scikit-learn's loss-based early stopping with
        ``X_val``); the model is cut at the iteration with the lowest validation log loss.
        Train log loss: scikit-learn's, on all training rows (``Xc`` is not needed)."""
        est = self.estimator_class()(**self._constructor_params(settings), early_stopping=True, scoring="loss")
        est.fit(Xt, yt, X_val=Xv, y_val=yv)
        val = -np.asarray(est.validation_score_, dtype=np.float64)[1:]     # index i: after i+1 iterations
        train = -np.asarray(est.train_score_, dtype=np.float64)[1:]
        best = int(np.argmin(val))
        return export_hgb(est, best + 1), best, train, val

    def fit_rounds(self, X, y, rounds, settings):
        params = {**self._constructor_params(settings), "max_iter": int(rounds)}
        return export_hgb(self.estimator_class()(**params, early_stopping=False).fit(X, y))

    def predictor(self, arrays):
        return TreeEnsemblePredictor(arrays)

    def rounds_of(self, arrays) -> int:
        return len(arrays["tree_class"]) // 3


# ---------------------------------------------------------------------------------------------
# MLPClassifier with standardized inputs


def export_mlp(pipeline: Any, epochs: int = 0) -> dict[str, np.ndarray]:
    """Scaler and layer arrays of a fitted ``Pipeline(StandardScaler, MLPClassifier)``."""
    scaler, mlp = pipeline[0], pipeline[-1]
    if list(mlp.classes_) != list(CLASS_CODES) or mlp.out_activation_ != "softmax":
        raise ValueError(f"expected a 3-class softmax MLP, got classes {list(mlp.classes_)} / {mlp.out_activation_}")
    out = {"scaler_mean": np.asarray(scaler.mean_, dtype=np.float64),
           "scaler_scale": np.asarray(scaler.scale_, dtype=np.float64),
           "activation": np.asarray(mlp.activation), "n_layers": np.asarray(len(mlp.coefs_), dtype=np.int64),
           "epochs": np.asarray(epochs, dtype=np.int64)}
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        out[f"coef_{i}"] = np.asarray(w)
        out[f"intercept_{i}"] = np.asarray(b)
    return out


_ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": lambda x: np.maximum(x, 0, out=x),
    "tanh": lambda x: np.tanh(x, out=x),
    "logistic": lambda x: _expit(x),
}


def _expit(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x, out=x)


class MLPPredictor:
    """``predict_proba`` of an exported standardized MLP, in the estimator's own dtype and
    operation order (scale in place, ``X @ W + b``, activation, softmax)."""

    def __init__(self, a: dict[str, np.ndarray]):
        self.arrays = a
        n = int(a["n_layers"])
        self.coefs = [a[f"coef_{i}"] for i in range(n)]
        self.intercepts = [a[f"intercept_{i}"] for i in range(n)]
        self.dtype = self.coefs[0].dtype
        self.mean = a["scaler_mean"].astype(self.dtype)
        self.scale = a["scaler_scale"].astype(self.dtype)
        self.activation = str(a["activation"])
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown MLP activation {self.activation!r}")
        self.n_features = len(self.mean)

    def margin(self, X: np.ndarray) -> np.ndarray:
        """The output layer before the softmax (per-class logits, what SHAP explains)."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} feature columns, got shape {X.shape}")
        h = np.array(X, dtype=self.dtype, copy=True)
        h -= self.mean
        h /= self.scale
        act = _ACTIVATIONS[self.activation]
        for i, (w, b) in enumerate(zip(self.coefs, self.intercepts)):
            h = h @ w
            h += b
            if i < len(self.coefs) - 1:
                act(h)
        return h

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        h = self.margin(X)
        tmp = h - h.max(axis=1)[:, np.newaxis]
        np.exp(tmp, out=h)
        h /= h.sum(axis=1)[:, np.newaxis]
        return h.astype(np.float64)


class MLPAdapter(_Adapter):
    name = "MLPClassifier"
    tree_model = False
    round_unit = "epochs"
    managed = ("early_stopping", "validation_fraction", "warm_start")

    def estimator_class(self) -> type:
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier

    def defaults(self, settings: Any) -> dict[str, Any]:
        return {"hidden_layer_sizes": (64, 32), "alpha": 1e-4, "batch_size": 256, "learning_rate_init": 1e-3,
                "max_iter": 100, "n_iter_no_change": 10, "random_state": settings.seed}

    def _pipeline(self, settings: Any) -> Any:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        params = self._constructor_params(settings)
        if params.get("solver", "adam") not in ("adam", "sgd"):
            raise ValueError(f"MLPClassifier solver {params['solver']!r}: epoch-wise training with early stopping "
                             "on validation genes needs solver 'adam' or 'sgd'")
        return make_pipeline(StandardScaler(), self.estimator_class()(**params)), params

    def fit_early_stopped(self, Xt, yt, Xv, yv, Xc, yc, settings):
        """One epoch at a time (``partial_fit``); keeps the weights of the epoch with the lowest
        validation-gene log loss; stops after ``n_iter_no_change`` epochs without improvement."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        pipe, params = self._pipeline(settings)
        scaler, mlp = pipe[0], pipe[-1]
        Xt_s = scaler.fit(Xt).transform(Xt)
        Xv_s, Xc_s = scaler.transform(Xv), scaler.transform(Xc)
        best, best_epoch, state = np.inf, -1, None
        train_curve, val_curve = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for epoch in range(int(params["max_iter"])):
                mlp.partial_fit(Xt_s, yt, classes=CLASS_CODES)
                vl = multiclass_log_loss(mlp.predict_proba(Xv_s), yv)
                val_curve.append(vl)
                train_curve.append(multiclass_log_loss(mlp.predict_proba(Xc_s), yc))
                if vl < best:
                    best, best_epoch = vl, epoch
                    state = ([w.copy() for w in mlp.coefs_], [b.copy() for b in mlp.intercepts_])
                elif epoch - best_epoch >= int(params["n_iter_no_change"]):
                    break
        mlp.coefs_, mlp.intercepts_ = state
        return export_mlp(pipe, best_epoch + 1), best_epoch, np.asarray(train_curve), np.asarray(val_curve)

    def fit_pipeline(self, X, y, epochs, settings):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        pipe, _ = self._pipeline(settings)
        Xs = pipe[0].fit(X).transform(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for _ in range(int(epochs)):
                pipe[-1].partial_fit(Xs, y, classes=CLASS_CODES)
        return pipe

    def fit_rounds(self, X, y, rounds, settings):
        return export_mlp(self.fit_pipeline(X, y, rounds, settings), int(rounds))

    def predictor(self, arrays):
        return MLPPredictor(arrays)

    def rounds_of(self, arrays) -> int:
        return int(arrays["epochs"])


ADAPTERS: dict[str, _Adapter] = {a.name: a for a in (HistGradientBoostingAdapter(), MLPAdapter())}
