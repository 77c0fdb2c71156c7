"""Training settings of an instance, the model format and the XGBoost parameters they give."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from ensemble_assets.core.io import sha256_text

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


def require_device(settings: TrainingSettings) -> None:
    """An XGBoost kind asked for a CUDA device must find one: XGBoost would otherwise train on the
    CPU with only a warning, and the manifest would say cuda. A ValueError says why not."""
    if not settings.device.startswith("cuda") or not settings.instance_kind.startswith("xgboost"):
        return
    import json
    import warnings

    import numpy as np
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        raise ValueError(f"device={settings.device!r}: this XGBoost build has no CUDA support; use --device cpu")
    with warnings.catch_warnings():   # the fallback's own warning: the error below says it
        warnings.simplefilter("ignore")
        probe = xgb.train({"device": settings.device, "tree_method": "hist", "nthread": 1},
                          xgb.DMatrix(np.zeros((2, 1)), label=[0.0, 1.0]), 1)
    used = json.loads(probe.save_config())["learner"]["generic_param"]["device"]
    if not used.startswith("cuda"):
        raise ValueError(f"device={settings.device!r}: XGBoost sees no CUDA GPU on this machine and would train on "
                         f"the CPU ({used}); use --device cpu")
