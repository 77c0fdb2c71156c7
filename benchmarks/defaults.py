"""Choose the platform's defaults on validation genes (a benchmark script, not a test).

    python -m benchmarks.defaults list
    python -m benchmarks.defaults run --dataset $DATA --candidate one_k3 [--threads 2]
    python -m benchmarks.defaults report            # → data/defaults_experiment/defaults.md, .json

Every candidate configuration (instance size, k-mer families, feature families, boosting settings)
is trained and scored on the **training genes of the plan only**:

1. ``prepare`` (run once, on the first ``run``): the gene inventory and the feature manifest of the
   dataset (``stages.run_inventory`` / ``run_screening``, every feature family on), and the plan's
   holdout genes (``plan.make_plan`` with the default plan settings and seed — the same holdout as
   ``ensemble-assets train``). The holdout genes are set aside and never read again here.
2. The remaining training genes are split, seeded and by gene (stratified by whether a gene has a
   site, like the holdout), into **fit genes** (80%) and **validation genes** (20%).
3. ``run`` trains the candidate on the fit genes exactly as the platform does
   (``training.loop.train_instance`` per gene subset of ``make_plan`` on the fit genes,
   ``model.consolidate``) and scores the consolidated model on the validation genes with
   ``evaluation.holdout.evaluate_models``: splice F1 at the threshold chosen on the fit genes'
   out-of-fold predictions, splice AP, FP + FN relative to the base model at 0.5, per-class ECE.
   It also runs the single-feature leakage audit (``integrity.separating_features``, the audit of
   the ``no_single_feature_separates_classes`` check) on a seeded sample of training genes, and
   records wall and CPU time and peak RSS. Run one candidate per process, one at a time: the
   timings and the peak RSS are then the candidate's own.
4. ``report`` collects every finished candidate into a Markdown table and a JSON file.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ensemble_assets.core.artifacts import paths
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.schema import (
    GENE_CONTEXT_ALL_CANDIDATE_FEATURES,
    GENE_CONTEXT_DISTANCE_FEATURES,
    GENE_CONTEXT_LOCAL_FEATURES,
    GENE_CONTEXT_SCORE_FEATURES,
    GENE_CONTEXT_STRONG_FEATURES,
    feature_family,
    is_kmer,
)
from ensemble_assets.core.data.screening import ScreeningSettings, feature_columns
from ensemble_assets.core.evaluation.holdout import EvaluationSettings, evaluate_models
from ensemble_assets.core.evaluation.integrity import separating_features
from ensemble_assets.core.io import read_json, write_json
from ensemble_assets.core.model.ensemble import consolidate
from ensemble_assets.core.planning.capacity import peak_rss_bytes
from ensemble_assets.core.planning.plan import PlanSettings, make_plan
from ensemble_assets.core.stages import run_inventory, run_screening
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets.core.training.settings import TrainingSettings

DEFAULT_OUT = Path("data") / "defaults_experiment"
VALIDATION_FRACTION = 0.2
SCOPE = ("validation genes: 20% of the plan's training genes (seeded, by gene), held out of the fit; "
         "the plan's holdout genes are never read. Splice threshold chosen on the fit genes' out-of-fold "
         "predictions, then applied unchanged to the validation rows.")


@dataclass(frozen=True)
class Candidate:
    description: str
    instances: int = 1                          # gene subsets of the fit genes (make_plan, 10% overlap)
    kmer_sizes: tuple[int, ...] | None = (3,)   # None: every size present; (): no k-mers
    # gene-context groups kept: distance (to the nearest candidates ≥ 0.1), score (theirs), every
    # (nearest and second-nearest of every candidate ≥ 0.02), strong (nearest ≥ 0.3, ≥ 0.6),
    # local (highest other candidate score within ±10 / 50 / 200 nt); (): none
    gene_context: tuple[str, ...] = ("distance",)
    training: dict[str, Any] = field(default_factory=dict)         # TrainingSettings overrides
    fit_sample: int | None = None   # train on this many of the fit genes (seeded) to bound the run time


GC_DISTANCE = ("distance",)
GC_ALL = ("distance", "score")
GC_WIDE = ("distance", "score", "every", "strong", "local")
CANDIDATES: dict[str, Candidate] = {
    # gene context: none, the distances to the nearest candidates, + those candidates' base scores
    "one_k3_nogc": Candidate("1 instance of all fit genes, 3-mers, no gene context", gene_context=()),
    "one_k3": Candidate("1 instance of all fit genes, 3-mers, gene-context distances", gene_context=GC_DISTANCE),
    "one_k3_ctx": Candidate("1 instance of all fit genes, 3-mers, gene-context distances + the nearest "
                            "candidates' base scores", gene_context=GC_ALL),
    "one_k3_wide": Candidate("1 instance, 3-mers, gene context of every candidate ≥ 0.02: nearest and "
                             "second-nearest, nearest strong (≥ 0.3, ≥ 0.6), highest score within ±10/50/200 nt",
                             gene_context=GC_WIDE),
    "one_k0_wide": Candidate("1 instance, no k-mers, the wide gene context", kmer_sizes=(), gene_context=GC_WIDE),
    # instance size and k-mer families, on top of the full gene context
    "two_k3_ctx": Candidate("2 instances of half the fit genes (+10% overlap), 3-mers, full gene context",
                            instances=2, gene_context=GC_ALL),
    "one_k0_ctx": Candidate("1 instance, no k-mers, full gene context", kmer_sizes=(), gene_context=GC_ALL),
    # the 5-mers multiply the features by ten: compared with the 3-mers on the same 1,500 fit genes
    "small_k3_ctx": Candidate("1 instance of 1,500 sampled fit genes, 3-mers, full gene context",
                              fit_sample=1500, gene_context=GC_ALL),
    "small_k35_ctx": Candidate("1 instance of the same 1,500 fit genes, 3- and 5-mers, full gene context",
                               kmer_sizes=None, fit_sample=1500, gene_context=GC_ALL),
    # boosting settings
    "one_k3_ctx_deep": Candidate("1 instance, 3-mers, full gene context; depth 8, learning rate 0.05, ≤ 800 rounds",
                                 gene_context=GC_ALL,
                                 training={"max_depth": 8, "learning_rate": 0.05, "n_estimators": 800}),
}


# --------------------------------------------------------------------------- preparation


def prep_config(out: Path, dataset: str, threads: int) -> PlatformConfig:
    """Inventory and manifest of the dataset with every feature family and k-mer size on (the
    candidates select from it)."""
    sizes = tuple(sorted({int(c.split("mer_")[0]) for c in open_dataset(dataset).columns if is_kmer(c)}))
    return PlatformConfig(data_root=str(out / "prep"), dataset=str(Path(dataset).resolve()),
                          screening=ScreeningSettings(gene_context=True, kmer_sizes=sizes),
                          training=replace(TrainingSettings(), nthread=threads))


def split_genes(genes: list[str], has_site: dict[str, bool], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(fit, validation): ``fraction`` of the genes with and of those without a site, seeded."""
    rng = np.random.default_rng([seed, 1])
    validation: list[str] = []
    for stratum in (True, False):
        members = sorted(g for g in genes if has_site[g] == stratum)
        validation += rng.permutation(np.asarray(members, dtype=object))[:int(round(len(members) * fraction))].tolist()
    held = set(validation)
    return sorted(g for g in genes if g not in held), sorted(validation)


def prepare(out: Path, dataset: str, threads: int, seed: int) -> dict[str, Any]:
    split_path = out / "split.json"
    if split_path.is_file():
        split = read_json(split_path)
        if Path(split["dataset"]) != Path(dataset).resolve():
            raise SystemExit(f"{out} was prepared for {split['dataset']}, not {dataset}: use another --out")
        cfg = prep_config(out, dataset, threads)
        if not paths(cfg)["manifest"].is_file():   # re-screened (new computed features); same split
            run_screening(cfg, print)
        return split
    cfg = prep_config(out, dataset, threads)
    t0 = time.perf_counter()
    inventory, _ = run_inventory(cfg, print)
    manifest = run_screening(cfg, print)
    features, _ = feature_columns(manifest)
    # the same holdout as `ensemble-assets train` (the holdout depends on the genes, the seed and
    # holdout_fraction only, not on instance sizes or features)
    plan = make_plan(inventory, len(features), PlanSettings(seed=seed, genes_per_instance=10**9))
    inv = inventory.to_pydict()
    has_site = {g: (d + a) > 0 for g, d, a in zip(inv["gene_id"], inv["n_donor"], inv["n_acceptor"])}
    held = set(plan["holdout_genes"])
    training = sorted(g for g in inv["gene_id"] if g not in held)
    fit, validation = split_genes(training, has_site, VALIDATION_FRACTION, seed)
    split = {"dataset": str(Path(dataset).resolve()), "seed": seed, "validation_fraction": VALIDATION_FRACTION,
             "holdout_genes": len(held), "training_genes": len(training), "fit": fit, "validation": validation,
             "prepare_seconds": round(time.perf_counter() - t0, 1)}
    write_json(split_path, split)
    print(f"prepared: {len(training)} training genes → {len(fit)} fit, {len(validation)} validation; "
          f"{len(held)} holdout genes set aside")
    return split


# --------------------------------------------------------------------------- one candidate


def candidate_features(out: Path, c: Candidate) -> tuple[list[str], dict[str, float]]:
    features, fill = feature_columns(pq.read_table(out / "prep" / "artifacts" / "feature_manifest.parquet"))
    groups = {"distance": GENE_CONTEXT_DISTANCE_FEATURES, "score": GENE_CONTEXT_SCORE_FEATURES,
              "every": GENE_CONTEXT_ALL_CANDIDATE_FEATURES, "strong": GENE_CONTEXT_STRONG_FEATURES,
              "local": GENE_CONTEXT_LOCAL_FEATURES}
    context = {f for g in c.gene_context for f in groups[g]}
    missing = sorted(context - set(features))
    if missing:
        raise SystemExit(f"the prepared feature manifest lacks {', '.join(missing)}: delete "
                         f"{out / 'prep' / 'artifacts' / 'feature_manifest.parquet'} and run again")

    def keep(f: str) -> bool:
        if is_kmer(f):
            return c.kmer_sizes is None or int(f.split("mer_")[0]) in c.kmer_sizes
        return f in context if feature_family(f) == "gene_context" else True

    features = [f for f in features if keep(f)]
    return features, {f: fill[f] for f in features}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_candidate(out: Path, name: str, dataset: str, threads: int, seed: int) -> dict[str, Any]:
    c = CANDIDATES[name]
    split = prepare(out, dataset, threads, seed)
    ds = open_dataset(split["dataset"])
    features, fill = candidate_features(out, c)
    settings = replace(TrainingSettings(), nthread=threads, seed=seed, **c.training)
    cdir = out / name
    inventory = pq.read_table(paths(prep_config(out, dataset, threads))["inventory"])
    fit_genes = split["fit"]
    if c.fit_sample is not None and c.fit_sample < len(fit_genes):
        fit_genes = sorted(np.random.default_rng([seed, 2]).choice(fit_genes, c.fit_sample, replace=False).tolist())
    fit_inv = inventory.filter(pc.is_in(inventory.column("gene_id"), value_set=pa.array(fit_genes, pa.string())))
    # the platform's own subsetting of the fit genes: 1 instance of all, or k overlapping subsets
    plan_settings = PlanSettings(train_all_genes=True, seed=seed, memory_budget_bytes=64 * 2**30,
                                 genes_per_instance=len(fit_genes) if c.instances == 1 else 2,
                                 max_instances=c.instances)
    plan = make_plan(fit_inv, len(features), plan_settings, min_genes_per_instance=settings.n_folds)
    print(f"{name}: {c.description}; {len(features)} features, {len(plan['subsets'])} instance(s) of "
          f"{', '.join(str(s['n_genes']) for s in plan['subsets'])} fit genes", flush=True)

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    dirs = {}
    rounds: dict[str, list[int]] = {}
    for s in plan["subsets"]:
        d = cdir / "instances" / s["key"]
        m = train_instance(ds, s["genes"], features, fill, settings, d, s["key"],
                           log=lambda msg: print("  " + msg, flush=True))
        dirs[s["key"]] = d
        for cls, n in m["n_estimators"].items():
            rounds.setdefault(cls, []).append(int(n))
    consolidate(dirs, cdir / "consolidated_model", split["validation"])
    train_wall, train_cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0

    t1 = time.perf_counter()
    ev = evaluate_models(cdir / "consolidated_model", ds, split["validation"], EvaluationSettings())
    by_model = {r["model"]: r for r in ev.table}
    eval_wall = time.perf_counter() - t1

    es = EvaluationSettings()
    training_genes = sorted(split["fit"] + split["validation"])
    sample = sorted(np.random.default_rng(es.seed).choice(
        training_genes, min(es.separation_sample_genes, len(training_genes)), replace=False).tolist())
    offenders, info = separating_features(ds, sample, features, fill, es.separation_auc, settings.batch_rows)

    def pick(r: dict[str, Any]) -> dict[str, Any]:
        keys = ("splice_f1", "splice_ap", "splice_roc_auc", "splice_threshold", "splice_fp", "splice_fn",
                "errors_vs_base", "errors_at_0.5_vs_base", "macro_f1", "macro_ap", "topk_splice",
                "base_splice_f1_at_oof_threshold")
        out_ = {k: r.get(k) for k in keys}
        out_["ece_max"] = max(r.get(f"ece_uniform_{k}") or 0.0 for k in ("neither", "donor", "acceptor"))
        return out_

    result = {
        "candidate": name, **asdict(c), "command": " ".join(sys.argv), "scope": SCOPE,
        "n_features": len(features), "instances": len(plan["subsets"]),
        "genes_per_instance": [s["n_genes"] for s in plan["subsets"]],
        "rows_per_instance": [s["n_rows"] for s in plan["subsets"]],
        "fit_genes": len(fit_genes), "validation_genes": ev.genes, "validation_rows": ev.rows,
        "threads": threads, "settings_signature": settings.signature(), "final_rounds": rounds,
        "train_wall_seconds": round(train_wall, 1), "train_cpu_seconds": round(train_cpu, 1),
        "evaluate_wall_seconds": round(eval_wall, 1), "peak_rss_bytes": peak_rss_bytes(),
        "validation": pick(by_model["consolidated"]), "base": pick(by_model["base"]),
        "leakage_check": {"sample_genes": info["genes"], "sample_rows": info["rows"], "min_auc": es.separation_auc,
                          "max_auc": info["max_auc"], "max_auc_feature": info["max_auc_feature"],
                          "offenders": offenders, "passed": not offenders},
    }
    write_json(cdir / "result.json", result)
    v = result["validation"]
    print(f"{name}: validation splice F1 {v['splice_f1']:.4f}, AP {v['splice_ap']:.4f}, FP+FN "
          f"{v['errors_vs_base']:.3f}× base, ECE {v['ece_max']:.4f}; trained in {train_wall / 60:.1f} min; "
          f"leakage check {'passed' if not offenders else 'FAILED'} (max AUC {info['max_auc']:.4f} "
          f"{info['max_auc_feature']})", flush=True)
    return result


# --------------------------------------------------------------------------- report


def report(out: Path) -> Path:
    results = [read_json(p) for p in sorted(out.glob("*/result.json"))]
    if not results:
        raise SystemExit(f"no finished candidate under {out}: run one first")
    results.sort(key=lambda r: list(CANDIDATES).index(r["candidate"]) if r["candidate"] in CANDIDATES else 99)
    split = read_json(out / "split.json")
    base = results[0]["base"]
    lines = [
        "# Defaults experiment: candidates scored on validation genes", "",
        f"Dataset: `{Path(split['dataset']).name}`. {split['training_genes']} training genes → "
        f"{len(split['fit'])} fit genes and {len(split['validation'])} validation genes "
        f"({results[0]['validation_rows']:,} rows); {split['holdout_genes']} holdout genes never read.", "",
        f"Scope: {SCOPE}", "",
        "| candidate | features | instances × fit genes | splice F1 | splice AP | FP+FN vs base @0.5 | max ECE "
        "| threshold | train wall (CPU) | peak RSS | leakage check |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| base model (SpliceAI scores) at its out-of-fold threshold | – | – "
        f"| {base['base_splice_f1_at_oof_threshold']:.4f} | {base['splice_ap']:.4f} | {base['errors_vs_base']:.3f} "
        f"| {base['ece_max']:.4f} | {base['splice_threshold']:.3f} | – | – | – |",
    ]
    for r in results:
        v, lc = r["validation"], r["leakage_check"]
        gpi = "/".join(str(g) for g in r["genes_per_instance"])
        lines.append(
            f"| `{r['candidate']}`: {CANDIDATES[r['candidate']].description if r['candidate'] in CANDIDATES else r['description']} | {r['n_features']} | {r['instances']} × {gpi} "
            f"| {v['splice_f1']:.4f} | {v['splice_ap']:.4f} | {v['errors_vs_base']:.3f} | {v['ece_max']:.4f} "
            f"| {v['splice_threshold']:.3f} | {r['train_wall_seconds'] / 60:.1f} min ({r['train_cpu_seconds'] / 60:.1f}) "
            f"| {r['peak_rss_bytes'] / 2**30:.2f} GiB "
            f"| {'pass' if lc['passed'] else 'FAIL'} (max AUC {lc['max_auc']:.3f}) |")
    lines += ["", f"Threads: {results[0]['threads']}. Leakage check: no single feature may reach one-vs-rest "
              f"ROC-AUC ≥ {results[0]['leakage_check']['min_auc']} on {results[0]['leakage_check']['sample_genes']} "
              "seeded training genes. Commands: the `command` of each entry in defaults.json."]
    md = out / "defaults.md"
    md.write_text("\n".join(lines) + "\n")
    write_json(out / "defaults.json", {"scope": SCOPE, "split": {k: v for k, v in split.items()
                                                                  if k not in ("fit", "validation")},
                                       "candidates": results})
    print(md.read_text())
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.defaults", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the candidate configurations")
    r = sub.add_parser("run", help="train one candidate on the fit genes, score it on the validation genes")
    r.add_argument("--dataset", required=True)
    r.add_argument("--candidate", required=True, choices=list(CANDIDATES))
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--out", default=str(DEFAULT_OUT))
    rep = sub.add_parser("report", help="the Markdown table and JSON of every finished candidate")
    rep.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    if args.command == "list":
        for name, c in CANDIDATES.items():
            print(f"{name:<16}{c.description}")
    elif args.command == "run":
        run_candidate(Path(args.out), args.candidate, args.dataset, args.threads, args.seed)
        report(Path(args.out))
    else:
        report(Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
