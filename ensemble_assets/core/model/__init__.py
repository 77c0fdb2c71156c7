"""The model: loading any model directory (an instance of any kind, or an ensemble) behind one
estimator interface, and consolidating instances into one model."""

from ensemble_assets.core.model.ensemble import SPLICE_RULE, ModelError, consolidate, load_model, splice_calls
from ensemble_assets.core.model.versions import ModelStore, VersionError

__all__ = ["SPLICE_RULE", "ModelError", "ModelStore", "VersionError", "consolidate", "load_model", "splice_calls"]
