"""Checks of the model versions: the candidate is a complete version with an operating point
before the gate runs; the current version loads; a refused candidate shows as a warning."""

from __future__ import annotations

import math

import dagster as dg

from ensemble_assets.core import artifacts
from ensemble_assets.core.model.ensemble import model_problem
from ensemble_assets.core.model.versions import content_id
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.models.assets import model_promotion
from ensemble_assets.defs.resources import EnsembleResource


@dg.asset_check(asset=consolidated_model, blocking=True,
                description="The consolidated model is stored as an immutable version under artifacts/models "
                            "(every file matching its checksum) with an operating point: a splice threshold in "
                            "(0, 1] chosen on out-of-fold predictions. Blocks model_promotion otherwise.")
def consolidated_model_is_versioned(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    cfg = ensemble.planned_config()
    store = artifacts.model_store(cfg)
    vid = content_id(artifacts.paths(cfg)["consolidated"])
    if vid not in store.ids():
        return dg.AssetCheckResult(passed=False, description=f"version {vid} is not in {store.root}")
    vdir = store.version_dir(vid)
    problem = model_problem(vdir)
    op = store.version_info(vid).get("summary", {}).get("splice_threshold")
    ok_op = isinstance(op, float) and math.isfinite(op) and 0 < op <= 1
    return dg.AssetCheckResult(
        passed=problem is None and ok_op,
        description=problem or (f"version {vid}: splice threshold {op}" if ok_op
                                else f"version {vid} stores no valid operating point (splice threshold {op!r})"),
        metadata={"version": vid})


@dg.asset_check(asset=model_promotion, blocking=True,
                description="The current model version exists and every one of its files matches its checksum.")
def current_model_loads(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    store = artifacts.model_store(ensemble.planned_config())
    cur = store.current_dir()
    problem = "no version is current" if cur is None else model_problem(cur)
    return dg.AssetCheckResult(passed=problem is None, description=problem or f"current version {cur.name} verified",
                               metadata={"current": store.current_id() or "none"})


@dg.asset_check(asset=model_promotion, blocking=False,
                description="The latest candidate was promoted (a warning, with the gate's reason, when it was refused).")
def candidate_was_promoted(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    store = artifacts.model_store(ensemble.planned_config())
    decisions = [e for e in store.history() if e["action"] in ("promote", "refuse")]
    last = decisions[-1] if decisions else None
    return dg.AssetCheckResult(
        passed=last is None or last["action"] == "promote", severity=dg.AssetCheckSeverity.WARN,
        description=(last["reason"] if last else "no decision recorded yet"),
        metadata={"candidate": (last or {}).get("version") or "none", "current": store.current_id() or "none"})
