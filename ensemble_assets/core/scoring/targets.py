"""Scoring targets: named datasets to score with the current model, registered in the
configuration (``scoring.targets``: name → path) or by placing them in ``<data root>/targets/``
(a dataset directory, or a ``<name>.parquet`` file). Each target's outputs live under
``<artifacts>/scored/<name>/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.io import safe_component

TARGETS_DIR = "targets"
SCORED_DIR = "scored"


@dataclass
class TargetRegistry:
    targets: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)   # entries that are not registered, and why


def targets_dir(cfg: PlatformConfig) -> Path:
    return cfg.root / TARGETS_DIR


def scored_dir(cfg: PlatformConfig, name: str) -> Path:
    return cfg.artifacts / SCORED_DIR / safe_component(name)


def scored_paths(cfg: PlatformConfig, name: str) -> dict[str, Path]:
    d = scored_dir(cfg, name)
    return {"dir": d, "positions": d / "scored_positions.parquet", "summary": d / "scoring_summary.json",
            "metrics": d / "target_metrics.parquet"}


def _folder_entries(folder: Path, problems: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name = entry.name
        elif entry.suffix == ".parquet":
            name = entry.stem
        else:
            continue   # other files (notes, manifests) are not targets
        try:
            found[safe_component(name)] = entry.resolve()
        except ValueError as exc:
            problems.append(f"{entry}: not registered: {exc}")
    return found


def discover_targets(cfg: PlatformConfig) -> TargetRegistry:
    """Every registered target, name → path: the configured ones, then the entries of
    ``<data root>/targets/``. A name configured with another path than the folder's entry keeps
    the configured path (the conflict is reported)."""
    reg = TargetRegistry()
    for name, path in cfg.scoring.targets.items():
        try:
            safe_component(name)
        except ValueError as exc:
            reg.problems.append(f"configured target {name!r}: not registered: {exc}")
            continue
        p = Path(path).expanduser()
        reg.targets[name] = (p if p.is_absolute() else cfg.root / p).resolve()
    for name, path in _folder_entries(targets_dir(cfg), reg.problems).items():
        if name in reg.targets and reg.targets[name] != path:
            reg.problems.append(f"{path}: target {name!r} is configured as {reg.targets[name]}; the configured path is used")
            continue
        reg.targets[name] = path
    return reg


def target_path(cfg: PlatformConfig, name: str) -> Path:
    """The path of the registered target ``name`` (FileNotFoundError naming the known ones)."""
    reg = discover_targets(cfg)
    if name not in reg.targets:
        known = ", ".join(sorted(reg.targets)) or "none"
        raise FileNotFoundError(f"no scoring target {name!r}: not in scoring.targets of the configuration nor in "
                                f"{targets_dir(cfg)} (registered: {known})")
    return reg.targets[name]
