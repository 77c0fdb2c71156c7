"""Benchmark of scoring new data (core/scoring/): end to end from Parquet vs the merged booster's
own ``inplace_predict`` on the same rows, peak memory, and an input 10× larger.

    python -m benchmarks.scoring --model $RUN/artifacts/models/<version> \\
        --input ../shared/data/atha_chr1 --out $BENCH --scale 10

1. ``score``: ``score_dataset`` over ``--input`` in a fresh process (its own peak RSS, VmHWM):
   opening the files, the gene layout pass, whole-gene batches from Parquet, features, one
   merged-booster call per batch, calibration, calls and the Parquet output (model loading is
   reported apart). Rate: rows × trees / seconds.
2. ``yardstick``: in this process, the same rows as one float32 matrix (built on the same path,
   not timed), then ``merged.inplace_predict`` on it alone: rows × trees / seconds (best of 2).
   Steps 1 and 2 alternate ``--repeat`` times; the best of each is reported, with every time.
   The ratio is also given in CPU seconds (every thread of the process: ``time.process_time``),
   which a busy machine disturbs less than wall time.
3. ``scaled``: ``--scale`` copies of every input file with renamed gene ids (``<gene>~r<k>``),
   all columns kept, written under ``--out``; scored in a fresh process; its peak RSS vs step 1's.

Results: ``<out>/results/scoring.json``. Both sides of each ratio are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def _child_score(model: str, source: str, output: str, batch_rows: int) -> dict[str, Any]:
    """(fresh process) score ``source``; prints one JSON line."""
    from ensemble_assets.core.planning.capacity import peak_rss_bytes
    from ensemble_assets.core.scoring.model_ref import resolve_scoring_model
    from ensemble_assets.core.scoring.score import score_dataset

    t = time.perf_counter()
    sm = resolve_scoring_model(model)
    load_s = time.perf_counter() - t
    cpu = time.process_time()   # every thread of this process: the reader's and XGBoost's
    r = score_dataset(sm.model, sm.threshold, source, output, sm.version, batch_rows=batch_rows)
    cpu = time.process_time() - cpu
    trees = int(sm.model.manifest["merged_booster"]["n_trees"]) if sm.model.manifest.get("merged_booster") else None
    return {"rows": r.rows, "genes": r.genes, "seconds": r.seconds, "cpu_seconds": cpu, "model_load_seconds": load_s,
            "rows_per_s": r.rows_per_s, "trees": trees, "columns_read": len(r.columns_read),
            "scattered_genes": r.scattered_genes, "calls": r.calls,
            "peak_rss_bytes": peak_rss_bytes(),   # VmHWM: ru_maxrss would include the parent's RSS at fork
            "output_bytes": Path(output).stat().st_size}


def _run_child(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scoring", "_child", *args],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"scoring child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _yardstick(model_dir: str, source: str, batch_rows: int, repeat: int = 2) -> dict[str, Any]:
    """The merged booster alone on the same rows, as one float32 matrix (built untimed)."""
    import numpy as np

    from ensemble_assets.core.data.gene_batches import iter_gene_batches
    from ensemble_assets.core.model.ensemble import align_features
    from ensemble_assets.core.scoring.model_ref import resolve_scoring_model
    from ensemble_assets.core.scoring.score import open_target, scoring_columns

    model = resolve_scoring_model(model_dir).model
    if model.merged is None:
        raise SystemExit(f"{model_dir} has no merged booster")
    ds = open_target(source)
    parts = [align_features(b, model.features, model.fill)
             for b in iter_gene_batches(ds, scoring_columns(ds, model.features), batch_rows)]
    X = np.ascontiguousarray(np.concatenate(parts))
    del parts
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        model.merged.inplace_predict(X)
        best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    trees = model.merged.num_boosted_rounds()
    return {"rows": len(X), "features": X.shape[1], "trees": trees, "seconds": best, "cpu_seconds": best_cpu,
            "row_trees_per_s": len(X) * trees / best}


def _replicate(source: str, out: Path, copies: int) -> dict[str, Any]:
    """``copies`` copies of every Parquet file of ``source``, gene ids renamed per copy."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ensemble_assets.core.data.contract import open_dataset

    ds = open_dataset(source, required=("gene_id",))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t = time.perf_counter()
    rows = 0
    for k in range(copies):
        for f in ds.files:
            pf = pq.ParquetFile(f)
            with pq.ParquetWriter(out / f"r{k:02d}_{f.name}", pf.schema_arrow, compression="zstd") as w:
                for rg in range(pf.num_row_groups):
                    t_rg = pf.read_row_group(rg)
                    i = t_rg.schema.get_field_index("gene_id")
                    genes = pc.binary_join_element_wise(t_rg.column(i).cast(pa.string()), f"r{k}", "~")
                    w.write_table(t_rg.set_column(i, t_rg.schema.field(i).with_type(pa.string()), genes))
                    rows += t_rg.num_rows
    return {"copies": copies, "files": copies * len(ds.files), "rows": rows,
            "bytes": sum(p.stat().st_size for p in out.iterdir()), "write_seconds": time.perf_counter() - t}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_child":
        model, source, output, batch_rows = argv[1:5]
        print(json.dumps(_child_score(model, source, output, int(batch_rows))))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.scoring", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a consolidated model or version directory (with a merged booster)")
    p.add_argument("--input", required=True, help="the dataset to score")
    p.add_argument("--out", required=True, help="working and result directory")
    p.add_argument("--scale", type=int, default=10, help="copies of the input for the larger run (0: skip)")
    p.add_argument("--batch-rows", type=int, default=32_768)
    p.add_argument("--repeat", type=int, default=2, help="end-to-end runs and yardstick runs, alternated; best of each")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import psutil
    import xgboost as xgb

    result: dict[str, Any] = {
        "command": "python -m benchmarks.scoring " + " ".join(argv),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "xgboost": xgb.__version__, "python": sys.version.split()[0],
                    "load_average_at_start": os.getloadavg()},
        "batch_rows": args.batch_rows}
    runs, sticks = [], []
    for i in range(args.repeat):   # alternated, best of each: the machine is shared
        print(f"[{i + 1}/{args.repeat}] scoring end to end (fresh process) ...", flush=True)
        runs.append(_run_child([args.model, args.input, str(out / "scored.parquet"), str(args.batch_rows)]))
        print(json.dumps(runs[-1]), flush=True)
        print(f"[{i + 1}/{args.repeat}] merged booster alone on the same rows ...", flush=True)
        sticks.append(_yardstick(args.model, args.input, args.batch_rows))
        print(json.dumps(sticks[-1]), flush=True)
    result["score"] = min(runs, key=lambda r: r["seconds"])
    result["yardstick"] = min(sticks, key=lambda r: r["seconds"])
    result["score_seconds_all"] = [round(r["seconds"], 2) for r in runs]
    result["yardstick_seconds_all"] = [round(r["seconds"], 2) for r in sticks]
    s, y = result["score"], result["yardstick"]
    assert s["rows"] == y["rows"] and s["trees"] == y["trees"], (s, y)
    result["score"]["row_trees_per_s"] = s["rows"] * s["trees"] / s["seconds"]
    result["end_to_end_over_inplace_predict"] = round(result["score"]["row_trees_per_s"] / y["row_trees_per_s"], 3)
    # the same ratio in CPU seconds (all threads), steadier than wall time on a shared machine
    result["score_cpu_seconds_all"] = [round(r["cpu_seconds"], 2) for r in runs]
    result["yardstick_cpu_seconds_all"] = [round(r["cpu_seconds"], 2) for r in sticks]
    result["end_to_end_over_inplace_predict_cpu"] = round(min(r["cpu_seconds"] for r in sticks)
                                                          / min(r["cpu_seconds"] for r in runs), 3)
    if args.scale:
        print(f"{args.scale}× input ...", flush=True)
        big = out / f"input_x{args.scale}"
        result["scaled_input"] = _replicate(args.input, big, args.scale)
        result["scaled"] = _run_child([args.model, str(big), str(out / f"scored_x{args.scale}.parquet"),
                                       str(args.batch_rows)])
        result["scaled"]["row_trees_per_s"] = (result["scaled"]["rows"] * result["scaled"]["trees"]
                                               / result["scaled"]["seconds"])
        result["scaled_peak_over_peak"] = round(result["scaled"]["peak_rss_bytes"] / s["peak_rss_bytes"], 3)
        shutil.rmtree(big)
    result["load_average_at_end"] = os.getloadavg()
    (out / "results").mkdir(exist_ok=True)
    (out / "results" / "scoring.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("score", "yardstick", "scaled")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
