"""Compare instance kinds on the same plan and the same holdout genes (a benchmark script, not a test).

Two steps, each its own process (so peak memory is per kind):

    python -m benchmarks.kinds train --plan-root $RUN --out data/bench_kinds \\
        --kind xgboost_softprob --kmer-sizes 3 --threads 2
    python -m benchmarks.kinds report --plan-root $RUN --out data/bench_kinds \\
        [--reference $RUN/artifacts/consolidated_model]

``train`` reads the plan (gene subsets and holdout genes) and the feature manifest of an existing
data root READ-ONLY, trains one instance per subset of the plan with ``training.train_instance``
(optionally fewer k-mer sizes, fewer subsets or a seeded sample of each subset's genes, to bound
the run time), consolidates them with ``model.consolidate``, and records the settings, the wall
time and the peak RSS of the process.

``report`` evaluates every trained kind, the base model and optionally a reference ensemble on
the plan's holdout genes (genes no instance trained on): macro F1 (arg-max), splice F1 at a
threshold chosen on out-of-fold predictions only (the members' ``oof_predictions.parquet``; the
base model's threshold on the base scores of the same training rows), splice AP, macro AP and
the expected calibration error (per class one-vs-rest, 15 equal-width bins, mean of the three
classes), and writes ``comparison.md`` / ``comparison.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ensemble_assets.core.data.contract import label_codes, open_dataset
from ensemble_assets.core.data.schema import is_kmer
from ensemble_assets.core.data.screening import feature_columns
from ensemble_assets.core.evaluation.calibration_analysis import expected_calibration_error
from ensemble_assets.core.evaluation.holdout import choose_threshold
from ensemble_assets.core.evaluation.metrics import evaluate
from ensemble_assets.core.io import read_json, safe_component, write_json
from ensemble_assets.core.model.ensemble import consolidate, load_model
from ensemble_assets.core.planning.capacity import peak_rss_bytes
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets.core.training.settings import INSTANCE_KINDS, TrainingSettings


def _kind_dir(out: Path, kind: str) -> Path:
    return out / safe_component(kind.replace(":", "_"))


def select_features(plan_root: Path, kmer_sizes: list[int] | None) -> tuple[list[str], dict[str, float]]:
    features, fill = feature_columns(pq.read_table(plan_root / "artifacts" / "feature_manifest.parquet"))
    if kmer_sizes is not None:
        features = [f for f in features if not is_kmer(f) or int(f.split("mer_")[0]) in kmer_sizes]
    return features, {f: fill[f] for f in features}


def cmd_train(args: argparse.Namespace) -> int:
    plan_root, out = Path(args.plan_root), Path(args.out)
    plan = read_json(plan_root / "artifacts" / "training_plan.json")
    ds = open_dataset(plan["dataset"])
    features, fill = select_features(plan_root, args.kmer_sizes)
    settings = replace(TrainingSettings(), instance_kind=args.kind, nthread=args.threads,
                       estimator_params=json.loads(args.estimator_params) if args.estimator_params else {},
                       max_sample_rows=args.max_sample_rows, n_estimators=args.n_estimators)
    subsets = plan["subsets"][:args.instances] if args.instances else plan["subsets"]
    kdir = _kind_dir(out, args.kind)
    t0 = time.perf_counter()
    dirs, rng = {}, np.random.default_rng(args.seed)
    for s in subsets:
        genes = sorted(s["genes"])
        if args.genes_per_instance and len(genes) > args.genes_per_instance:
            genes = sorted(rng.choice(genes, args.genes_per_instance, replace=False).tolist())
        d = kdir / "instances" / s["key"]
        m = train_instance(ds, genes, features, fill, settings, d, s["key"], log=lambda msg: print("  " + msg, flush=True))
        print(f"{args.kind} {s['key']}: {m['n_genes']} genes, {m['n_rows']} rows, OOF macro F1 "
              f"{m['metrics']['oof']['macro_f1']:.4f}, {m['timings']['total_seconds']:.0f}s", flush=True)
        dirs[s["key"]] = d
    consolidate(dirs, kdir / "consolidated_model", plan["holdout_genes"])
    write_json(kdir / "run.json", {
        "kind": args.kind, "command": " ".join(sys.argv), "plan_root": str(plan_root), "dataset": plan["dataset"],
        "instances": len(dirs), "genes_per_instance": args.genes_per_instance, "kmer_sizes": args.kmer_sizes,
        "n_features": len(features), "settings": asdict(settings),
        "train_wall_seconds": round(time.perf_counter() - t0, 1), "train_cpu_seconds": round(_cpu_seconds(), 1),
        "peak_rss_bytes": peak_rss_bytes(),
    })
    print(f"{args.kind}: {len(dirs)} instance(s) in {time.perf_counter() - t0:.0f}s, peak RSS "
          f"{peak_rss_bytes() / 2**30:.2f} GiB → {kdir}")
    return 0


def _cpu_seconds() -> float:
    """User + system CPU time of this process (less sensitive than wall time to other jobs)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def macro_ece(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean over the three classes of the one-vs-rest ECE (15 equal-width bins)."""
    return float(np.mean([expected_calibration_error((y == c).astype(np.float64), proba[:, c]) for c in range(3)]))


def oof_rows(model_dir: Path) -> pa.Table:
    m = read_json(model_dir / "manifest.json")
    dirs = [model_dir / mm["path"] for mm in m["members"]] if m["kind"] == "ensemble" else [model_dir]
    return pa.concat_tables([pq.read_table(d / "oof_predictions.parquet") for d in dirs])


def holdout_table(dataset: str, holdout: list[str]) -> pa.Table:
    ds = open_dataset(dataset)
    dset = pads.dataset(ds.file_strings, schema=ds.schema, format="parquet")
    return dset.to_table(filter=pc.field("gene_id").isin(pa.array(sorted(holdout), pa.string())))


def _row(name: str, y: np.ndarray, proba: np.ndarray, gene_idx: np.ndarray, threshold: float,
         train_seconds: float | None, peak: int | None, note: str) -> dict:
    m = evaluate(y, proba, gene_idx, None, threshold=threshold)
    return {"model": name, "macro_f1": m["macro_f1"], "splice_f1": m["splice_f1"], "threshold": threshold,
            "splice_ap": m["splice_ap"], "macro_ap": m["macro_ap"], "f1_donor": m["f1_donor"],
            "f1_acceptor": m["f1_acceptor"], "ece": macro_ece(y, proba),
            "train_minutes": None if train_seconds is None else round(train_seconds / 60, 1),
            "peak_rss_gib": None if peak is None else round(peak / 2**30, 2), "rows": m["rows"], "genes": m["genes"],
            "note": note}


def cmd_report(args: argparse.Namespace) -> int:
    plan_root, out = Path(args.plan_root), Path(args.out)
    plan = read_json(plan_root / "artifacts" / "training_plan.json")
    table = holdout_table(plan["dataset"], plan["holdout_genes"])
    y = label_codes(table.column("splice_type")).astype(np.int64)
    _, gene_idx = np.unique(np.asarray(table.column("gene_id").to_pylist(), dtype=object), return_inverse=True)
    rows = []
    models: list[tuple[str, Path, dict | None]] = []
    if args.reference:
        models.append(("reference", Path(args.reference), None))
    for kind in INSTANCE_KINDS:
        kdir = _kind_dir(out, kind)
        if (kdir / "run.json").is_file():
            models.append((kind, kdir / "consolidated_model", read_json(kdir / "run.json")))
    base_done = False
    for name, mdir, run in models:
        oof = oof_rows(mdir)
        y_oof = np.asarray(oof.column("label").to_numpy()) > 0
        p_oof = oof.column("p_donor").to_numpy() + oof.column("p_acceptor").to_numpy()
        if not base_done:   # base model: its scores, threshold on the same training rows' base scores
            b_oof = oof.column("base_donor").to_numpy() + oof.column("base_acceptor").to_numpy()
            base = np.column_stack([np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
                                    for c in ("neither_score", "donor_score", "acceptor_score")])
            base = np.clip(base, 1e-9, None)
            base /= base.sum(axis=1, keepdims=True)
            rows.append(_row("base model (SpliceAI scores)", y, base, gene_idx, choose_threshold(y_oof, b_oof),
                             None, None, "no training"))
            base_done = True
        model = load_model(mdir)
        t = time.perf_counter()
        proba = model.predict_proba(table)
        predict_s = time.perf_counter() - t
        manifests = [read_json(m.path / "manifest.json") for m in getattr(model, "members", [model])]
        if run is None:
            train_s = sum(m["timings"]["total_seconds"] for m in manifests)
            peak = max(m["peak_rss_bytes"] for m in manifests)
            note = (f"{len(manifests)} × {manifests[0]['model_type']}, {manifests[0]['n_features']} features, "
                    f"{manifests[0]['n_genes']}-gene instances (reference run)")
        else:
            train_s, peak = run["train_wall_seconds"], run["peak_rss_bytes"]
            note = (f"{run['instances']} × {name}, {run['n_features']} features"
                    + (f", k-mers {run['kmer_sizes']}" if run["kmer_sizes"] else "")
                    + (f", ≤{run['genes_per_instance']} genes/instance" if run["genes_per_instance"] else ""))
        label = name if run is not None else f"{manifests[0]['model_type']} (reference)"
        r = _row(label, y, proba, gene_idx, choose_threshold(y_oof, p_oof), train_s, peak, note)
        r["predict_seconds"] = round(predict_s, 1)
        rows.append(r)
        print(f"{label}: macro F1 {r['macro_f1']:.4f}, splice F1 {r['splice_f1']:.4f}, ECE {r['ece']:.4f}", flush=True)
    cols = ["model", "macro_f1", "splice_f1", "threshold", "splice_ap", "macro_ap", "ece", "train_minutes",
            "peak_rss_gib", "note"]

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)

    md = (f"Holdout: {len(plan['holdout_genes'])} genes, {table.num_rows} rows (genes no instance trained on); "
          "thresholds chosen on out-of-fold rows only.\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
          + "".join("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |\n" for r in rows))
    (out / "comparison.md").write_text(md)
    write_json(out / "comparison.json", {"holdout_genes": len(plan["holdout_genes"]), "holdout_rows": table.num_rows,
                                          "rows": rows})
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kinds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--plan-root", required=True, help="data root with artifacts/training_plan.json (read only)")
    t.add_argument("--out", required=True)
    t.add_argument("--kind", required=True, choices=INSTANCE_KINDS)
    t.add_argument("--kmer-sizes", type=lambda s: [int(k) for k in s.split(",")], default=None)
    t.add_argument("--instances", type=int, default=0, help="only the first N subsets of the plan")
    t.add_argument("--genes-per-instance", type=int, default=0, help="seeded sample of each subset's genes")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--n-estimators", type=int, default=TrainingSettings.n_estimators)
    t.add_argument("--estimator-params", default=None)
    t.add_argument("--max-sample-rows", type=int, default=TrainingSettings.max_sample_rows)
    t.add_argument("--seed", type=int, default=42)
    t.set_defaults(func=cmd_train)
    r = sub.add_parser("report")
    r.add_argument("--plan-root", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--reference", default=None, help="an existing ensemble directory to include")
    r.set_defaults(func=cmd_report)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
