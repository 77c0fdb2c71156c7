"""Benchmark: wall time of the comprehensive ensemble SHAP (every instance × 3 boosters, exact
TreeSHAP on N out-of-fold rows each), from scratch (no reused per-instance results).

    python -m benchmarks.shap --model $RUN/artifacts/consolidated_model \\
        --out data/shap_bench --threads 2

Reads the model and dataset only; writes everything under ``--out``. ``--model`` may also be one
instance directory (then only that instance is explained).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.explanation.settings import ShapSettings
from ensemble_assets.core.explanation.shap_analysis import compute_ensemble_shap, explain_instances
from ensemble_assets.core.io import read_json, write_json
from ensemble_assets.core.model.ensemble import load_model
from ensemble_assets.core.planning.capacity import peak_rss_bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="consolidated model (or instance) directory")
    p.add_argument("--out", required=True, help="output directory (replaced)")
    p.add_argument("--rows", type=int, default=2000, help="out-of-fold rows per instance")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk-rows", type=int, default=500)
    p.add_argument("--dataset", help="dataset path (default: the one named in the model manifest / plan)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)

    t_import = time.perf_counter()
    import xgboost  # noqa: F401  (imports are not part of the measured time)

    t_import = time.perf_counter() - t_import
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings = ShapSettings(sample_rows=args.rows, nthread=args.threads, chunk_rows=args.chunk_rows)
    model_dir = Path(args.model)
    kind = read_json(model_dir / "manifest.json")["kind"]
    t0 = time.perf_counter()
    if kind == "ensemble":
        s = compute_ensemble_shap(model_dir, out / "ensemble_shap", settings, cache_dir=out / "instance_shap",
                                  dataset=args.dataset, recompute=True, plots=not args.no_plots, log=print)
        wall = time.perf_counter() - t0
        per = {k: read_json(out / "instance_shap" / k / "summary.json") for k in s["instance_weights"]}
    else:
        m = load_model(model_dir)
        ds_path = args.dataset or read_json(model_dir.parents[1] / "training_plan.json")["dataset"]
        res, _ = explain_instances(open_dataset(ds_path), {model_dir.name: m}, settings, out / "instance_shap",
                                   recompute=True, log=print)
        wall = time.perf_counter() - t0
        per = {k: r.summary for k, r in res.items()}
        s = {"timings": {}, "top_features": {}}
    shap_s = sum(sum(v["shap_seconds"].values()) for v in per.values())
    load_s = next(iter(per.values()))["sample_load_seconds"]
    report = {
        "model": str(model_dir), "kind": kind, "instances": len(per), "outputs": 3 * len(per),
        "rows_per_instance": args.rows, "threads": args.threads, "cpu_count": os.cpu_count(),
        "model_size": {k: v["model_size"] for k, v in per.items()},
        "methods": {k: v["method_id"] for k, v in per.items()},
        "features": {k: v["n_features"] for k, v in per.items()},
        "wall_seconds": round(wall, 2),
        "sample_read_seconds": round(load_s, 2),
        "treeshap_seconds": round(shap_s, 2),
        "treeshap_seconds_per_model": {k: v["shap_seconds"] for k, v in per.items()},
        "plots_seconds": s["timings"].get("plots_seconds"),
        "max_additivity_error": max(v["max_additivity_error"] for v in per.values()),
        "peak_rss_MB": round(peak_rss_bytes() / 2**20, 1),
        "xgboost_import_seconds": round(t_import, 2),
        "goal_seconds": 60,
        "top_features": {c: [t["feature"] for t in s["top_features"].get(c, [])[:10]]
                         for c in ("ensemble", "donor", "acceptor", "neither")},
    }
    write_json(out / "bench_shap.json", report)
    print(json.dumps(report, indent=2))
    print(f"\nensemble SHAP: {report['instances']} instance(s) × 3 outputs × {args.rows} rows in "
          f"{report['wall_seconds']:.1f}s wall (read {report['sample_read_seconds']:.1f}s, SHAP "
          f"{report['treeshap_seconds']:.1f}s, plots {report['plots_seconds'] or 0:.1f}s) on {args.threads} "
          f"thread(s); goal ≤ 60 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
