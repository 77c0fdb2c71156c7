"""core/ on a machine without Dagster and without DuckDB (the GPU box): from an inventory and a
feature manifest computed elsewhere, plan → instances → consolidated model → prediction."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from ensemble_assets.core import stages
from ensemble_assets_tests.conftest import REPO, make_config

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["dagster"] = None   # any import of these now raises ImportError
    sys.modules["duckdb"] = None
    from ensemble_assets.core import artifacts, stages
    from ensemble_assets.core.config import PlatformConfig
    from ensemble_assets.core.model.ensemble import load_model
    import pyarrow.parquet as pq
    cfg = PlatformConfig.from_dict(json.loads(sys.argv[1]))
    plan = stages.run_plan(cfg)
    for s in plan["subsets"]:
        stages.run_instance(cfg, s["key"])
    manifest = stages.run_consolidation(cfg)
    model = load_model(artifacts.paths(cfg)["consolidated"])
    table = pq.read_table(sorted((cfg.dataset_path / "master").glob("*.parquet"))[0])
    p = model.predict_proba(table)
    print(json.dumps({"instances": len(plan["subsets"]), "merged": manifest["merged_booster"] is not None,
                      "rows": len(p), "sum_ok": bool(abs(p.sum(axis=1) - 1).max() < 1e-9),
                      "modules": sorted(m for m in ("dagster", "duckdb") if sys.modules.get(m) is not None)}))
""")


def test_plan_train_consolidate_predict_without_dagster_or_duckdb(tiny_dataset, tmp_path):
    cfg = make_config(tmp_path, tiny_dataset, genes_per_instance=24)
    stages.run_inventory(cfg)   # DuckDB here, as on the machine that prepares the run
    stages.run_screening(cfg)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cfg.to_dict())], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["instances"] >= 2 and out["merged"] and out["sum_ok"] and out["rows"] > 0
    assert out["modules"] == []
