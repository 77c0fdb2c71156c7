"""The settings of the SHAP analysis and the texts recorded with its results (methods, scales,
sample scope). The lowest module of ``explanation``: everything else imports it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ensemble_assets.core.io import sha256_text

SHAP_FORMAT_VERSION = 3                # 3: permutation SHAP by shap.PermutationExplainer
METHODS = {
    "treeshap_xgboost": "exact TreeSHAP (XGBoost Booster.predict(pred_contribs=True), tree-path-dependent)",
    "treeshap_trees": "exact TreeSHAP (shap's tree-path-dependent algorithm on the exported trees, node counts "
                      "as cover)",
    "permutation": "model-agnostic permutation SHAP (interventional, shap.PermutationExplainer), bounded: {rows} "
                   "sampled rows, {permutations} random feature order(s) and reverse(s) per row, {background} "
                   "background rows from the same sample",
}
SCALES = {"ovr": "log-odds (the margin of each one-vs-rest booster)",
          "softmax": "softmax margin (each class's input to the softmax of the multi-class model)"}
SAMPLE_SCOPE = ("a seeded sample of each instance's out-of-fold rows (its own genes, each predicted "
                "out-of-fold during CV); the explained boosters are the instance's final ones, fitted on "
                "all of its genes. Importances describe what the models use, not how well they predict.")
AGGREGATION = ("per class: sum over instances of w_i * mean|SHAP|_(i,class), w = the consolidated model's "
               "instance weights normalised to sum to 1 (no extra 1/N); ensemble importance: the mean of "
               "the three classes; features matched by name, a feature absent from an instance counts 0 for it")


@dataclass(frozen=True)
class ShapSettings:
    sample_rows: int = 2000            # out-of-fold rows explained per instance
    seed: int = 42
    chunk_rows: int = 500              # rows per pred_contribs call (bounds memory)
    max_additivity_error: float = 1e-3
    top_n: int = 20                    # features shown in tables and plots
    beeswarm_features: int = 20        # features per class kept for the beeswarm plots
    nthread: int = 0                   # 0 → all cores
    batch_rows: int = 8192             # rows per streamed batch when reading the sample
    # the model-agnostic explainer (non-tree kinds), bounded: rows × permutations × (2F + 1) × background
    agnostic_rows: int = 100           # rows of the sample explained
    agnostic_background: int = 10      # background rows (from the same sample)
    agnostic_permutations: int = 1     # random feature orders per row (each with its reverse)

    def signature(self) -> str:
        """Hash of everything that changes the per-instance numbers (not threads or chunking)."""
        return sha256_text(repr((SHAP_FORMAT_VERSION, self.sample_rows, self.seed, self.beeswarm_features,
                                 self.agnostic_rows, self.agnostic_background,
                                 self.agnostic_permutations)))[:12]

    @property
    def threads(self) -> int:
        return self.nthread or os.cpu_count() or 1
