"""The model a scoring run uses: a version of the store (an id, ``current``, ``previous``) or a
model directory, with the version id written beside every scored row and the splice threshold
of its stored operating point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_assets.core.io import read_json, sha256_file
from ensemble_assets.core.model.ensemble import ModelError, load_model
from ensemble_assets.core.model.versions import VERSION_FILE, ModelStore, content_id


@dataclass(frozen=True)
class ScoringModel:
    model: Any
    path: Path
    version: str
    threshold: float
    threshold_source: str


def model_version(path: Path, manifest: dict[str, Any]) -> str:
    """The version id of a model directory: a store version's own id; a consolidated model's
    content id (the id the store gives it); an instance: ``instance-`` and its manifest's hash."""
    if (path / VERSION_FILE).is_file():
        return str(read_json(path / VERSION_FILE)["id"])
    if manifest.get("kind") == "ensemble":
        return content_id(path)
    return f"instance-{sha256_file(path / 'manifest.json')[:16]}"


def resolve_scoring_model(ref: str | Path, store: ModelStore | None = None,
                          threshold: float | None = None) -> ScoringModel:
    """Load ``ref`` (with ``store``: a version id, ``current``, ``previous`` or a directory;
    without: a directory). The splice threshold is the model's stored operating point unless
    ``threshold`` is given; a model without one (an instance) needs ``threshold``."""
    model = load_model(ref, store=store)
    if threshold is not None:
        source = "given explicitly"
    elif model.operating_point:
        threshold = float(model.operating_point["splice_threshold"])
        source = f"the model's operating point ({model.operating_point.get('chosen_on', 'stored')})"
    else:
        raise ModelError(f"model {model.path} stores no operating point (only consolidated models do): "
                         "give the splice threshold explicitly")
    if not 0.0 < threshold <= 1.0:
        raise ModelError(f"splice threshold {threshold} is outside (0, 1]")
    return ScoringModel(model, Path(model.path), model_version(Path(model.path), model.manifest), threshold, source)
