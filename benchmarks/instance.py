"""Benchmarks (scripts, not tests): ``python -m benchmarks.instance <command>``.

Every figure is a ratio whose two sides are measured in the same run, on the machine named in the
result. Results go to ``<root>/results/<command>.json`` (root: ``data/bench``, outside git), and
``report`` (run after each command) renders them all into ``BENCHMARKS.md``.

    data       the reference-shape demo dataset (9,280 genes × ~400 rows, 1,167 columns), generated
               once and reused; its gene inventory, feature manifest and training plan
    instance   one instance of the plan: peak RSS vs its measured quantized matrix, wall time vs
               its raw xgboost.train calls (the instance runs in a fresh process)
    scaling    matrix size, load time, seconds per boosting round and peak RSS from 1k genes to all
               9,280 (one model on every gene), each point in a fresh process; table + plot
    inference  a consolidated model: merged booster vs per-instance calls vs a single booster with
               the same trees (row·trees/s); model size and load time
    gpu        the whole 9,280-gene ensemble end to end on one machine (``--device cuda``): generate,
               plan, train every instance (in parallel processes), consolidate, score holdout genes
    report     render BENCHMARKS.md from the results

Core only: no Dagster import, and DuckDB only where the inventory/screening is computed (``data``);
``gpu`` runs without DuckDB from the inventory and feature manifest that ``data`` wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.report import load_result, render, report_paths
from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.artifacts import planned_config
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.data.contract import label_codes, open_dataset
from ensemble_assets.core.evaluation.metrics import evaluate
from ensemble_assets.core.io import read_json, write_json
from ensemble_assets.core.model.ensemble import align_features, consolidate, load_model
from ensemble_assets.core.model.merged_booster import merge_boosters
from ensemble_assets.core.planning.plan import GIB, MemoryGuardError, PlanSettings, check_instance_memory, matrix_bytes
from ensemble_assets.core.planning.scaling import measure_matrix
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets.core.training.settings import TrainingSettings
from ensemble_assets.datasets.demo import DemoSpec, write_demo_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]   # benchmarks run from a checkout
DEFAULT_ROOT = REPO_ROOT / "data" / "bench"
REFERENCE = DemoSpec(n_genes=9280, rows_per_gene=400)


# --------------------------------------------------------------------------- shared helpers


def machine() -> dict[str, Any]:
    import psutil
    import xgboost as xgb

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
            "available_gib": round(psutil.virtual_memory().available / GIB, 1),
            "python": platform.python_version(), "xgboost": xgb.__version__}
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if gpu.returncode == 0 and gpu.stdout.strip():
            info["gpu"] = gpu.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def bench_config(root: Path, spec: DemoSpec, device: str = "cpu", nthread: int = 2,
                 genes_per_instance: int = 1500, **training: Any) -> PlatformConfig:
    return PlatformConfig(
        data_root=str(root), dataset=str(root / "reference"),
        plan=replace(PlanSettings(), genes_per_instance=genes_per_instance),
        training=replace(TrainingSettings(), nthread=nthread, device=device, **training))


def spec_of(args: argparse.Namespace) -> DemoSpec:
    return DemoSpec(n_genes=args.genes_total, rows_per_gene=args.rows_per_gene)


def save_result(root: Path, name: str, result: dict[str, Any]) -> Path:
    result = {"command": "python -m benchmarks.instance " + " ".join(sys.argv[1:]),
              "machine": machine(), "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **result}
    path = write_json(root / "results" / f"{name}.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "points"}, indent=1, default=str)[:4000])
    return path


def _child(args: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run ``python -m benchmarks.instance <args>`` in a fresh process; its last stdout line is JSON."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.instance", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode != 0:
        raise RuntimeError(f"bench {' '.join(args[:1])} failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- data


def prepare(root: Path, spec: DemoSpec, workers: int, nthread: int = 2) -> dict[str, Any]:
    """Generate the dataset once (reused when present) and its inventory, features and plan."""
    import pyarrow.parquet as pq

    cfg = bench_config(root, spec, nthread=nthread)
    out: dict[str, Any] = {"spec": asdict(spec)}
    master = Path(cfg.dataset) / "master"
    if not master.is_dir():
        t = time.perf_counter()
        summary = write_demo_dataset(cfg.dataset, spec, workers=workers)
        out["generation_seconds"] = round(time.perf_counter() - t, 1)
        out["generation_workers"] = workers
        out["pred_type_counts"] = summary["pred_type_counts"]
    files = sorted(master.glob("*.parquet"))
    out["rows"] = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    out["files"] = len(files)
    out["disk_bytes"] = sum(f.stat().st_size for f in files)
    paths = artifacts.paths(cfg)
    if not paths["inventory"].is_file():
        t = time.perf_counter()
        stages.run_inventory(cfg)
        out["inventory_seconds"] = round(time.perf_counter() - t, 1)
    if not paths["manifest"].is_file():
        t = time.perf_counter()
        stages.run_screening(cfg)
        out["screening_seconds"] = round(time.perf_counter() - t, 1)
    plan = stages.run_plan(cfg)
    inv = pq.read_table(paths["inventory"])
    cols = set(inv.schema.names)
    out["label_counts"] = {c: int(sum(inv.column(f"n_{c}").to_pylist())) for c in ("neither", "donor", "acceptor")}
    if {"n_tp", "n_fp", "n_fn", "n_tn"} <= cols:
        out["pred_type_counts"] = {t.upper(): int(sum(inv.column(f"n_{t}").to_pylist())) for t in ("tp", "fp", "fn", "tn")}
    out["columns"] = len(pq.read_schema(files[0]).names)
    out["features"] = len(artifacts.load_features(cfg)[0])
    out["plan"] = {"strategy": plan["strategy"], "instances": len(plan["subsets"]),
                   "genes_per_instance": plan["genes_per_instance"], "holdout_genes": len(plan["holdout_genes"]),
                   "rows_per_instance": [s["n_rows"] for s in plan["subsets"]]}
    return out


def cmd_data(args: argparse.Namespace) -> int:
    save_result(args.root, "data", prepare(args.root, spec_of(args), args.workers, args.threads))
    return cmd_report(args)


# --------------------------------------------------------------------------- one instance


def _instance_child(args: argparse.Namespace) -> int:
    """(fresh process) memory guard + train_instance; prints wall time, manifest figures, peak RSS."""
    req = read_json(Path(args.request))
    settings = TrainingSettings(**req["settings"])
    t = time.perf_counter()
    guard = None
    if settings.device == "cpu":
        guard = check_instance_memory(req["n_rows"], len(req["genes"]), len(req["features"]), label="the instance")
    m = train_instance(open_dataset(req["dataset"]), req["genes"], req["features"], req["fill"], settings,
                       req["out_dir"], req.get("key", "bench"), log=lambda s: print(s, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t
    print(json.dumps({"wall_seconds": round(wall, 3), "timings": m["timings"], "peak_rss_bytes": m["peak_rss_bytes"],
                      "n_rows": m["n_rows"], "n_genes": m["n_genes"], "n_features": m["n_features"],
                      "n_estimators": m["n_estimators"], "best_iterations": m["best_iterations"],
                      "oof_macro_f1": m["metrics"]["oof"]["macro_f1"], "guard": guard}))
    return 0


def run_instance_fresh(root: Path, name: str, dataset: str, genes: list[str], features: list[str],
                       fill: dict[str, float], settings: TrainingSettings, n_rows: int, out_dir: Path,
                       key: str) -> dict[str, Any]:
    req = write_json(root / "requests" / f"{name}.json", {
        "dataset": dataset, "genes": genes, "features": features, "fill": fill, "settings": asdict(settings),
        "n_rows": n_rows, "out_dir": str(out_dir), "key": key})
    return _child(["_instance", "--request", str(req)])


def cmd_instance(args: argparse.Namespace) -> int:
    spec = spec_of(args)
    prepare(args.root, spec, args.workers, args.threads)
    cfg = bench_config(args.root, spec, nthread=args.threads, n_estimators=args.n_estimators)
    plan = artifacts.load_plan(cfg)
    subset = plan["subsets"][args.index]
    genes = subset["genes"][:args.genes] if args.genes else subset["genes"]
    features, fill = artifacts.load_features(cfg)
    inv = {g: n for g, n in zip(*_inventory_rows(cfg))}
    n_rows = sum(inv[g] for g in genes)
    print(f"instance: {len(genes)} genes, {n_rows} rows × {len(features)} features", file=sys.stderr)
    matrix = measure_matrix(cfg.dataset, genes, features, fill, cfg.training)
    key = f"bench-{len(genes)}g"
    run = run_instance_fresh(args.root, "instance", cfg.dataset, genes, features, fill, cfg.training, n_rows,
                             cfg.artifacts / "instances" / key, key)
    mat = matrix["matrix_bytes_measured"]
    budget = 1.3 * mat + 0.5 * GIB
    t = run["timings"]
    result = {
        "genes": len(genes), "rows": n_rows, "features": len(features), "settings": asdict(cfg.training),
        "matrix": matrix, "instance": run, "instance_dir": str(cfg.artifacts / "instances" / key),
        "peak_rss_bytes": run["peak_rss_bytes"], "matrix_bytes": mat,
        "peak_rss_over_matrix": round(run["peak_rss_bytes"] / mat, 3),
        "peak_rss_budget_bytes": int(budget), "peak_rss_within_budget": run["peak_rss_bytes"] <= budget,
        "estimate_over_measured": round(matrix_bytes(n_rows, len(features))
                                        / (mat + matrix["side_array_bytes"]), 3),
        "wall_over_xgboost_train": round(run["wall_seconds"] / t["xgboost_train_seconds"], 3),
        "total_over_xgboost_train": round(t["total_seconds"] / t["xgboost_train_seconds"], 3),
    }
    save_result(args.root, "instance", result)
    return cmd_report(args)


def cmd_load_peak(args: argparse.Namespace) -> int:
    """The loading peak of the plan's instance (fresh process per batch size): where an
    instance's peak RSS is reached (before the first tree), for each streamed batch size."""
    spec = spec_of(args)
    prepare(args.root, spec, args.workers, args.threads)
    cfg = bench_config(args.root, spec, nthread=args.threads)
    subset = artifacts.load_plan(cfg)["subsets"][args.index]
    features, fill = artifacts.load_features(cfg)
    runs = []
    for rows in (int(b) for b in args.batch_rows.split(",")):
        m = measure_matrix(cfg.dataset, subset["genes"], features, fill, replace(cfg.training, batch_rows=rows))
        budget = 1.3 * m["matrix_bytes_measured"] + 0.5 * GIB
        runs.append({"batch_rows": rows, **m, "budget_bytes": int(budget),
                     "peak_over_budget": round(m["peak_rss_after_load_bytes"] / budget, 3)})
        print(f"batch {rows}: peak {m['peak_rss_after_load_bytes'] / GIB:.2f} GiB, budget {budget / GIB:.2f} GiB",
              file=sys.stderr, flush=True)
    save_result(args.root, "load_peak", {"genes": len(subset["genes"]), "runs": runs})
    return cmd_report(args)


def _inventory_rows(cfg: PlatformConfig) -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq

    inv = pq.read_table(artifacts.paths(cfg)["inventory"], columns=["gene_id", "n_rows"])
    return inv.column("gene_id").to_pylist(), inv.column("n_rows").to_pylist()


# --------------------------------------------------------------------------- scaling


def cmd_scaling(args: argparse.Namespace) -> int:
    import numpy as np

    spec = spec_of(args)
    prepare(args.root, spec, args.workers, args.threads)
    cfg = bench_config(args.root, spec, nthread=args.threads)
    genes_all, rows_all = _inventory_rows(cfg)
    rows_of = dict(zip(genes_all, rows_all))
    order = np.random.default_rng(cfg.plan.seed).permutation(np.asarray(sorted(genes_all), dtype=object)).tolist()
    features, fill = artifacts.load_features(cfg)
    points = []
    for n in sorted({min(int(p), len(order)) for p in args.points.split(",")}):
        genes = sorted(order[:n])
        n_rows = sum(rows_of[g] for g in genes)
        point: dict[str, Any] = {"genes": n, "rows": n_rows}
        try:
            point["guard"] = check_instance_memory(n_rows, n, len(features), label=f"{n} genes")
        except MemoryGuardError as exc:
            point["refused"] = str(exc)
            points.append(point)
            print(f"{n} genes: refused by the memory guard", file=sys.stderr)
            continue
        print(f"{n} genes, {n_rows} rows ...", file=sys.stderr, flush=True)
        point.update(measure_matrix(cfg.dataset, genes, features, fill, cfg.training, rounds=args.rounds))
        points.append(point)
    result = {"rounds": args.rounds, "settings": asdict(cfg.training), "features": len(features), "points": points,
              "scope": "each point: a fresh process builds the QuantileDMatrix of the first N genes of a seeded "
                       "shuffle through the training data path, then trains `rounds` boosting rounds of one "
                       "one-vs-rest class on every row (no CV folds); peak RSS is that process's maximum"}
    _plot_scaling(points, report_paths(args.root)[1])
    save_result(args.root, "scaling", result)
    return cmd_report(args)


def _plot_scaling(points: list[dict[str, Any]], plot: Path) -> None:
    pts = [p for p in points if "matrix_bytes_measured" in p]
    if not pts:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["genes"] for p in pts]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(x, [p["peak_rss_bytes"] / GIB for p in pts], "o-", label="peak RSS")
    a.plot(x, [p["matrix_bytes_measured"] / GIB for p in pts], "s-", label="quantized matrix (measured)")
    a.plot(x, [p["matrix_bytes_estimated"] / GIB for p in pts], "--", label="matrix (plan's estimate)")
    a.axhline(12, color="grey", lw=0.8, ls=":", label="12 GB budget")
    a.set_xlabel("genes in the model")
    a.set_ylabel("GiB")
    a.legend()
    b.plot(x, [p["load_seconds"] for p in pts], "o-", label="matrix build (s)")
    b.plot(x, [p["seconds_per_round"] * 100 for p in pts], "s-", label="100 boosting rounds (s)")
    b.set_xlabel("genes in the model")
    b.set_ylabel("seconds")
    b.legend()
    fig.suptitle("Time and memory from 1k genes to all genes (~400 rows/gene, ~1,140 features)")
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- inference


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def cmd_inference(args: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = Path(args.model) if args.model else None
    out = args.root / "inference_model"
    if source is not None and (source / "manifest.json").is_file() and read_json(source / "manifest.json")["kind"] == "ensemble":
        mf = read_json(source / "manifest.json")
        dirs = {m["partition_key"]: source / m["path"] for m in mf["members"]}
        dataset = mf.get("dataset")
    else:
        inst = source or args.root / "artifacts" / "instances"
        dirs = {d.name: d for d in sorted(inst.iterdir()) if (d / "manifest.json").is_file()}
        dataset = str(bench_config(args.root, spec_of(args)).dataset)
    if not dirs:
        raise SystemExit("no instances to consolidate: run `bench instance` first or pass --model")
    consolidate(dirs, out, extra={"dataset": dataset})
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    model_files = [f for f in out.rglob("*") if f.suffix in (".ubj", ".json")]
    t = time.perf_counter()
    model = load_model(out)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    for m in model.members:
        m.boosters  # noqa: B018 — the per-instance path's boosters, read for the comparison
    member_load_s = time.perf_counter() - t
    ds = open_dataset(dataset)
    table = pa.concat_tables(pq.read_table(f) for f in ds.files[:max(1, args.files)]).slice(0, args.rows)
    X = align_features(table, model.features, model.fill)
    n = len(X)
    for b in [model.merged] + [b for m in model.members for b in m.boosters]:
        b.set_param({"nthread": args.threads})
    trees = sum(b.num_boosted_rounds() for m in model.members for b in m.boosters)
    pairs = [(b, m.features) for m in model.members for b in m.boosters]
    single = merge_boosters(pairs, model.features, one_output=True)
    single.set_param({"nthread": args.threads})
    assert np.abs(model.predict_proba(X) - model.predict_proba_per_instance(X)).max() <= 1e-6
    s_single = _timed(lambda: single.inplace_predict(X))
    s_merged = _timed(lambda: model.predict_proba(X))
    s_per = _timed(lambda: model.predict_proba_per_instance(X))
    s_table = _timed(lambda: model.predict_proba(table), repeat=2)
    rate = lambda s: n * trees / s  # noqa: E731
    result = {
        "model_source": str(source) if source else str(args.root / "artifacts" / "instances"),
        "instances": model.total_instances, "trees": trees, "features": len(model.features), "rows": n,
        "threads": args.threads, "model_dir_bytes": size,
        "model_files_bytes": sum(f.stat().st_size for f in model_files),
        "merged_booster_bytes": (out / "merged_booster.ubj").stat().st_size,
        "load_seconds": round(load_s, 3), "member_boosters_load_seconds": round(member_load_s, 3),
        "single_booster_row_trees_per_s": rate(s_single), "merged_row_trees_per_s": rate(s_merged),
        "per_instance_row_trees_per_s": rate(s_per), "arrow_table_row_trees_per_s": rate(s_table),
        "merged_over_single": round(s_single / s_merged, 3),
        "per_instance_over_single": round(s_single / s_per, 3),
        "arrow_table_over_single": round(s_single / s_table, 3),
        "seconds": {"single": s_single, "merged": s_merged, "per_instance": s_per, "arrow_table": s_table},
    }
    save_result(args.root, "inference", result)
    return cmd_report(args)


# --------------------------------------------------------------------------- the whole ensemble (GPU)


def _plan_instance_child(args: argparse.Namespace) -> int:
    """(fresh process) one partition of the plan, as the instance_model asset runs it."""
    cfg = planned_config(PlatformConfig(data_root=str(args.root)))
    t = time.perf_counter()
    m = stages.run_instance(cfg, args.key, log=lambda s: print(f"[{args.key}] {s}", file=sys.stderr, flush=True))
    print(json.dumps({"key": args.key, "wall_seconds": round(time.perf_counter() - t, 3), "timings": m["timings"],
                      "n_rows": m["n_rows"], "n_genes": m["n_genes"], "n_estimators": m["n_estimators"],
                      "peak_rss_bytes": m["peak_rss_bytes"], "oof_macro_f1": m["metrics"]["oof"]["macro_f1"]}))
    return 0


def cmd_gpu(args: argparse.Namespace) -> int:
    """Generate → plan → every instance (``--parallel`` processes) → consolidate → holdout score.
    The inventory and feature manifest come from ``--artifacts`` (written by ``data`` for the same
    spec, where DuckDB is installed); the generated rows are checked against that inventory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    t_start = time.perf_counter()
    spec = spec_of(args)
    root = args.root
    nthread = max(1, (os.cpu_count() or 2) // args.parallel)
    cfg = bench_config(root, spec, device=args.device, nthread=nthread, genes_per_instance=args.genes_per_instance)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not (Path(cfg.dataset) / "master").is_dir():
        write_demo_dataset(cfg.dataset, spec, workers=args.workers)
    timings["generate_dataset"] = time.perf_counter() - t
    t = time.perf_counter()
    paths = artifacts.paths(cfg)
    paths["inventory"].parent.mkdir(parents=True, exist_ok=True)
    for name in ("inventory", "profile", "manifest"):
        shutil.copy2(Path(args.artifacts) / paths[name].name, paths[name])
    ds = open_dataset(cfg.dataset)
    counts = pc.value_counts(pa.concat_tables(pq.read_table(f, columns=["gene_id"]) for f in ds.files)
                             .column("gene_id").combine_chunks())
    got = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
    inv = pq.read_table(paths["inventory"], columns=["gene_id", "n_rows"])
    want = dict(zip(inv.column("gene_id").to_pylist(), inv.column("n_rows").to_pylist()))
    inventory_matches = got == want
    if not inventory_matches:  # train anyway (the plan needs only genes and rough sizes) and say so
        print(f"WARNING: the generated dataset does not match the carried inventory ({len(got)} vs {len(want)} "
              f"genes, {sum(got.values())} vs {sum(want.values())} rows)", file=sys.stderr, flush=True)
    plan = stages.run_plan(cfg)
    timings["check_and_plan"] = time.perf_counter() - t
    keys = [s["key"] for s in plan["subsets"]]
    print(f"plan: {len(keys)} instances of ≤{plan['genes_per_instance']} genes, device {args.device}, "
          f"{args.parallel} at a time × {nthread} threads", file=sys.stderr, flush=True)
    t = time.perf_counter()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    pending, running, results, failures = list(keys), {}, [], []

    def progress(final: bool = False) -> dict[str, Any]:
        r = {"device": args.device, "parallel": args.parallel, "threads_per_instance": nthread,
             "spec": asdict(spec), "rows": int(sum(got.values())), "inventory_matches": inventory_matches,
             "instances": len(keys), "instances_done": len(results), "complete": final,
             "elapsed_seconds": round(time.perf_counter() - t_start, 1),
             "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
             "per_instance": sorted(results, key=lambda x: x["key"])}
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "gpu_progress.json").write_text(json.dumps(r, indent=1))
        return r

    while pending or running:
        if args.deadline and time.perf_counter() - t_start > args.deadline:
            for proc, log in running.values():
                proc.kill()
                log.close()
            progress()
            raise SystemExit(f"deadline of {args.deadline}s reached with {len(results)}/{len(keys)} instances done")
        while pending and len(running) < args.parallel:
            key = pending.pop(0)
            log = open(root / f"instance-{key}.log", "w")
            running[key] = (subprocess.Popen([sys.executable, "-m", "benchmarks.instance", "_plan-instance",
                                              "--root", str(root), "--key", key],
                                             stdout=subprocess.PIPE, stderr=log, text=True, env=env), log)
        time.sleep(0.5)
        for key, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            out = proc.stdout.read() if proc.stdout else ""
            log.close()
            del running[key]
            if proc.returncode == 0:
                results.append(json.loads(out.strip().splitlines()[-1]))
                print(f"  done {key} at {time.perf_counter() - t_start:.0f}s", file=sys.stderr, flush=True)
                progress()
            else:
                failures.append(key)
                print(f"  FAILED {key}: {(root / f'instance-{key}.log').read_text()[-1500:]}", file=sys.stderr)
    timings["train_instances"] = time.perf_counter() - t
    if failures:
        raise SystemExit(f"{len(failures)} instance(s) failed: {failures}")
    t = time.perf_counter()
    manifest = stages.run_consolidation(cfg)
    timings["consolidate"] = time.perf_counter() - t
    t_model = time.perf_counter() - t_start
    # holdout genes: no instance trained on them
    t = time.perf_counter()
    model = load_model(paths["consolidated"])
    features, fill = artifacts.load_features(cfg)
    hold = plan["holdout_genes"][:args.holdout_genes] if args.holdout_genes else plan["holdout_genes"]
    rows = pads.dataset(ds.file_strings, schema=ds.schema, format="parquet").to_table(
        filter=pc.field("gene_id").isin(pa.array(hold, pa.string())), use_threads=True)
    y = label_codes(rows.column("splice_type")).astype(np.int64)
    base = np.column_stack([rows.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                            for c in ("neither_score", "donor_score", "acceptor_score")])
    if model.merged is not None:
        model.merged.set_param({"nthread": os.cpu_count() or 1})
    proba = model.predict_proba(rows)
    gene_idx = np.unique(np.asarray(rows.column("gene_id").to_pylist(), dtype=object), return_inverse=True)[1]
    holdout = evaluate(y, proba, gene_idx, base)
    timings["holdout_predict"] = time.perf_counter() - t
    result = {
        "device": args.device, "parallel": args.parallel, "threads_per_instance": nthread,
        "spec": asdict(spec), "rows": int(sum(got.values())), "features": len(features),
        "inventory_matches": inventory_matches,
        "instances": len(keys), "genes_per_instance": plan["genes_per_instance"],
        "holdout_genes": len(plan["holdout_genes"]),
        "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        "end_to_end_seconds": round(time.perf_counter() - t_start, 1),
        "generate_to_consolidated_seconds": round(t_model, 1),
        "plan_to_consolidated_seconds": round(t_model - timings["generate_dataset"], 1),
        "per_instance": sorted(results, key=lambda r: r["key"]),
        "total_trees": sum(sum(r["n_estimators"].values()) for r in results),
        "merged_booster": bool(manifest.get("merged_booster")),
        "holdout_metrics": {"scope": f"{len(hold)} holdout genes ({len(y)} rows) no instance trained on",
                            **{k: holdout[k] for k in ("macro_f1", "splice_f1", "base_splice_f1", "macro_ap")
                               if k in holdout}},
    }
    save_result(root, "gpu", result)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "results" / "gpu.json", Path(args.out) / "gpu.json")
    return 0


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    sc = load_result(args.root, "scaling")
    if sc:
        _plot_scaling(sc["points"], report_paths(args.root)[1])
    text = render(args.root)
    md = report_paths(args.root)[0]
    md.write_text(text + "\n")
    print(f"wrote {md}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- entry point


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.instance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="bench data root (outside git)")
        sp.add_argument("--genes-total", type=int, default=REFERENCE.n_genes, help="genes in the dataset")
        sp.add_argument("--rows-per-gene", type=int, default=REFERENCE.rows_per_gene)
        sp.add_argument("--workers", type=int, default=2, help="processes generating the dataset")
        sp.add_argument("--threads", type=int, default=2, help="XGBoost/DuckDB threads")
        return sp

    common(sub.add_parser("data", help="generate the dataset once; inventory, features, plan")).set_defaults(func=cmd_data)
    s = common(sub.add_parser("instance", help="one instance: peak RSS vs matrix, wall vs xgboost.train"))
    s.add_argument("--index", type=int, default=0, help="which subset of the plan")
    s.add_argument("--genes", type=int, default=0, help="only the first N genes of that subset (0: all)")
    s.add_argument("--n-estimators", type=int, default=TrainingSettings.n_estimators)
    s.set_defaults(func=cmd_instance)
    s = common(sub.add_parser("load-peak", help="the instance's loading peak for several batch sizes"))
    s.add_argument("--index", type=int, default=0)
    s.add_argument("--batch-rows", default="32768,8192")
    s.set_defaults(func=cmd_load_peak)
    s = common(sub.add_parser("scaling", help="matrix, time and memory from 1k genes to all genes"))
    s.add_argument("--points", default="1000,3000,9280")
    s.add_argument("--rounds", type=int, default=10)
    s.set_defaults(func=cmd_scaling)
    s = common(sub.add_parser("inference", help="merged booster vs per-instance vs single booster"))
    s.add_argument("--model", help="a consolidated model or a folder of instance directories "
                                   "(default: the instances under <root>/artifacts/instances)")
    s.add_argument("--rows", type=int, default=20_000)
    s.add_argument("--files", type=int, default=2, help="dataset files the rows are read from")
    s.set_defaults(func=cmd_inference)
    s = common(sub.add_parser("gpu", help="the whole ensemble end to end (device cpu or cuda)"))
    s.add_argument("--device", default="cuda")
    s.add_argument("--artifacts", required=True, help="folder with gene_inventory.parquet, dataset_profile.json, "
                                                        "feature_manifest.parquet written by `data` for this spec")
    s.add_argument("--parallel", type=int, default=4, help="instance processes at a time")
    s.add_argument("--genes-per-instance", type=int, default=1500)
    s.add_argument("--holdout-genes", type=int, default=0, help="holdout genes scored at the end (0: all)")
    s.add_argument("--out", help="also copy the result JSON (and progress while it runs) here")
    s.add_argument("--deadline", type=float, default=0, help="stop (keeping the progress) after this many seconds")
    s.set_defaults(func=cmd_gpu)
    common(sub.add_parser("report", help="render BENCHMARKS.md")).set_defaults(func=cmd_report)
    s = sub.add_parser("_instance")
    s.add_argument("--request", required=True)
    s.set_defaults(func=_instance_child)
    s = sub.add_parser("_plan-instance")
    s.add_argument("--root", type=Path, required=True)
    s.add_argument("--key", required=True)
    s.set_defaults(func=_plan_instance_child)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if hasattr(args, "root"):
        args.root = Path(args.root).resolve()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
