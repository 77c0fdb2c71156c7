"""The model: loading any model directory (an instance of any kind, or an ensemble) behind one
estimator interface, and consolidating instances into one model."""

from ensemble_assets.core.model.ensemble import ModelError, consolidate, load_model

__all__ = ["ModelError", "consolidate", "load_model"]
