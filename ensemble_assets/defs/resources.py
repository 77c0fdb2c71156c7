"""Resources: where the data lives and the platform configuration read from it."""

from __future__ import annotations

import dagster as dg

from ensemble_assets.core.config import PlatformConfig


class EnsembleResource(dg.ConfigurableResource):
    """The data root (inputs, artifacts, ``ensemble_config.json``). Empty: ``$ENSEMBLE_ASSETS_DATA``
    or ``<repo>/data``. The settings themselves come from ``ensemble_config.json`` in that root,
    written by ``ensemble-assets train``; DuckDB connections are in-memory, one per step."""

    data_root: str = ""

    def config(self) -> PlatformConfig:
        return PlatformConfig.load(self.data_root or None)
