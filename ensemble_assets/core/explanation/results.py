"""The result data classes of the SHAP analysis: one instance's importances (``InstanceShap``)
and the ensemble aggregate (``EnsembleShap``). Data only, so that the explainers, the
aggregation and the plots can all import them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ensemble_assets.core.data.schema import CLASSES, feature_family


@dataclass
class InstanceShap:
    key: str
    features: list[str]
    mean_abs: np.ndarray                       # (3, F) mean |SHAP| per class
    mean: np.ndarray                           # (3, F) signed mean SHAP per class
    bias: list[float]                          # per class (the expected margin)
    additivity_error: list[float]              # per class, max over rows
    beeswarm: pa.Table                         # class, feature, row, shap, value (top features per class)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.summary["method_id"]

    def importance_table(self) -> pa.Table:
        F = len(self.features)
        cols: dict[str, Any] = {"feature": pa.array(self.features, pa.string()),
                                "family": pa.array([feature_family(f) for f in self.features], pa.string())}
        for c, cname in enumerate(CLASSES):
            cols[f"mean_abs_shap_{cname}"] = self.mean_abs[c]
        for c, cname in enumerate(CLASSES):
            cols[f"mean_shap_{cname}"] = self.mean[c]
        cols["method"] = pa.array([self.method] * F, pa.string())
        cols["scale"] = pa.array([self.summary["scale"]] * F, pa.string())
        return pa.table(cols)


@dataclass
class EnsembleShap:
    keys: list[str]
    weights: np.ndarray            # (I,) normalised
    features: list[str]            # union, sorted by name
    per_instance: np.ndarray       # (I, 3, U) mean |SHAP|, 0 where the instance lacks the feature
    present: np.ndarray            # (I, U) bool
    per_class: np.ndarray          # (3, U) weighted
    ensemble: np.ndarray           # (U,) mean of the classes
    methods: list[str] = field(default_factory=list)   # (I,) the explainer of each instance
