"""A snapshot of the asset graph: every asset's key, group, partitioning, dependencies and code
version, and every check with its asset and whether it blocks. A change to the graph shows up
here as a diff to review; regenerate the snapshot deliberately with
``ENSEMBLE_ASSETS_UPDATE_SNAPSHOT=1 make test``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ensemble_assets.definitions import defs

SNAPSHOT = Path(__file__).with_name("asset_graph.json")


def graph_snapshot() -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        part = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": (getattr(part, "name", None) or type(part).__name__) if part is not None else None,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "code_version": node.code_version,
        }
    checks = {}
    for check in defs.asset_checks or []:
        for spec in check.check_specs:
            checks[f"{spec.asset_key.to_user_string()}:{spec.name}"] = {"blocking": bool(spec.blocking)}
    return {"assets": assets, "checks": dict(sorted(checks.items())),
            "jobs": sorted(j.name for j in defs.jobs or []),
            "schedules": sorted(s.name for s in defs.schedules or []),
            "sensors": sorted(s.name for s in defs.sensors or [])}


def test_asset_graph_matches_snapshot():
    now = graph_snapshot()
    if os.environ.get("ENSEMBLE_ASSETS_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert now == expected, ("the asset graph differs from ensemble_assets_tests/structure/asset_graph.json; "
                             "review the change, then regenerate it with ENSEMBLE_ASSETS_UPDATE_SNAPSHOT=1")


def test_snapshot_names_the_whole_pipeline():
    assets = json.loads(SNAPSHOT.read_text())["assets"]
    assert assets["instance_model"]["partitions"] == "gene_subsets"
    assert assets["consolidated_model"]["deps"] == ["instance_model"]
    assert {"gene_inventory", "feature_screening", "training_plan", "holdout_metrics", "ensemble_shap"} <= set(assets)
