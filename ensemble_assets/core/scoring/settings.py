"""Scoring settings (the ``scoring`` group of the run config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ensemble_assets.core.io import safe_component

DEFAULT_BATCH_ROWS = 32_768
DEFAULT_MEMORY_LIMIT = "512MB"   # DuckDB's share while scoring; it spills to disk beyond it


@dataclass(frozen=True)
class ScoringSettings:
    # name → path (a Parquet file, a directory of them, or a dataset with master/): the scoring
    # targets registered by configuration, besides the entries of <data root>/targets/
    targets: Mapping[str, str] = field(default_factory=dict)
    batch_rows: int = DEFAULT_BATCH_ROWS       # rows per batch (whole genes: a batch may hold more)
    memory_limit: str = DEFAULT_MEMORY_LIMIT

    def validate(self) -> "ScoringSettings":
        if not isinstance(self.targets, Mapping):
            raise ValueError(f"scoring targets must be an object of name → path, got {type(self.targets).__name__}")
        for name, path in self.targets.items():
            try:
                safe_component(name)
            except ValueError as exc:
                raise ValueError(f"scoring target name {name!r}: {exc}") from exc
            if not isinstance(path, str) or not path:
                raise ValueError(f"scoring target {name!r}: the path must be a non-empty string")
        if self.batch_rows < 1:
            raise ValueError(f"scoring batch_rows={self.batch_rows} must be at least 1")
        return self
