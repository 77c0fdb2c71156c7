"""The evaluation and report steps on plain paths (one function per asset, like ``pipeline``):
holdout metrics with calibration analysis and plots, the gene coverage report, instance
performance and the consolidation summary. Tables are Parquet (zstd) under
``<artifacts>/evaluation/``, queryable with DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import plots
from .config import PlatformConfig
from .dataset import open_dataset
from .evaluation import HOLDOUT, Evaluation, ensemble_members, evaluate_models, table_to_arrow
from .io import atomic_path, read_json, write_json, write_parquet
from .pipeline import load_plan, paths
from .schema import CLASSES

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def report_paths(cfg: PlatformConfig) -> dict[str, Path]:
    e = cfg.artifacts / "evaluation"
    return {
        "dir": e, "metrics": e / "holdout_metrics.parquet", "metrics_json": e / "holdout_metrics.json",
        "calibration": e / "calibration.parquet", "bins": e / "reliability_bins.parquet",
        "predictions": e / "holdout_predictions.parquet",
        "coverage": e / "gene_coverage_report.parquet", "performance": e / "instance_performance.parquet",
        "summary": e / "consolidation_summary.json", "summary_md": e / "training_summary.md",
        "plot_roc_pr": e / "plots" / "roc_pr_base_vs_meta.png",
        "plot_reliability": e / "plots" / "reliability_consolidated.png",
        "plot_reliability_instances": e / "plots" / "reliability_instances.png",
        "plot_learning_curves": e / "plots" / "learning_curves.png",
        "plot_instances": e / "plots" / "instance_comparison.png",
    }


def _consolidated(cfg: PlatformConfig) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    model_dir = paths(cfg)["consolidated"]
    if not (model_dir / "manifest.json").is_file():
        raise FileNotFoundError(f"no consolidated model at {model_dir}: materialize consolidated_model first")
    plan = load_plan(cfg)
    manifest = read_json(model_dir / "manifest.json")
    if sorted(manifest.get("holdout_genes", [])) != sorted(plan["holdout_genes"]):
        raise ValueError(f"the consolidated model at {model_dir} was built for another plan (its holdout genes "
                         "differ from training_plan's): materialize consolidated_model again")
    return model_dir, manifest, plan


# --------------------------------------------------------------------------- holdout_metrics

HEADLINE = [("splice_f1", "splice F1 (OOF thr)"), ("splice_f1_at_0.5", "splice F1 @0.5"), ("splice_ap", "splice AP"),
            ("splice_roc_auc", "ROC-AUC"), ("splice_fp", "FP"), ("splice_fn", "FN"),
            ("errors_vs_base", "FP+FN / base@0.5"), ("errors_at_0.5_vs_base", "FP+FN@0.5 / base@0.5"),
            ("macro_f1", "macro F1"), ("macro_ap", "macro AP"),
            ("topk_splice", "top-k"), ("ece_uniform_neither", "ECE neither"), ("ece_uniform_donor", "ECE donor"),
            ("ece_uniform_acceptor", "ECE acceptor")]


def headline_rows(table: list[dict[str, Any]], models: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The side-by-side rows (base, instances, consolidated) reduced to the headline columns,
    plus the base model at 0.5 as its own row for reference."""
    out = []
    for r in table:
        if models is not None and r["model"] not in models:
            continue
        row = {"model": r["model"], "threshold": r.get("splice_threshold")}
        row.update({label: r.get(k) for k, label in HEADLINE})
        if r["model"] == "base":
            at05 = {"model": "base @0.5", "threshold": 0.5, "splice F1 (OOF thr)": r.get("base_splice_f1"),
                    "splice F1 @0.5": r.get("base_splice_f1"), "splice AP": r.get("splice_ap"),
                    "ROC-AUC": r.get("splice_roc_auc"), "FP": r.get("base_splice_fp"), "FN": r.get("base_splice_fn"),
                    "FP+FN / base@0.5": 1.0, "FP+FN@0.5 / base@0.5": 1.0}
            out.append(at05)
        out.append(row)
    return out


HEADLINE_COLUMNS = ["model", "threshold", *(label for _, label in HEADLINE)]


def format_table(rows: list[dict[str, Any]], markdown: bool = False, columns: list[str] | None = None) -> str:
    """Rows as an aligned text table or a Markdown table (columns: given order, else the first row's)."""
    if not rows:
        return ""
    cols = columns or list(rows[0])

    def fmt(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    if markdown:
        return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                         + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols)] + [line(c) for c in cells]) + "\n"


def run_holdout_metrics(cfg: PlatformConfig, log: Log = _quiet) -> dict[str, Any]:
    """Evaluate base, instances and consolidated model side by side; write the tables and plots."""
    model_dir, manifest, plan = _consolidated(cfg)
    rp = report_paths(cfg)
    ds = open_dataset(plan["dataset"]) if plan["holdout_genes"] else None
    log(f"evaluating {len(manifest['members'])} instance(s) and the consolidated model on "
        f"{len(plan['holdout_genes']) or 'no'} holdout genes")
    ev = evaluate_models(model_dir, ds, plan["holdout_genes"], cfg.evaluation)
    write_parquet(rp["metrics"], table_to_arrow(ev.table))
    write_parquet(rp["calibration"], table_to_arrow(ev.calibration))
    write_parquet(rp["bins"], table_to_arrow(ev.bins))
    ref = ev.scored["consolidated"]
    pred = {"gene_id": pa.array(ref.gene_id.tolist(), pa.string()), "position": ref.position, "label": ref.label}
    pred.update({f"base_{c}": ref.base[:, j] for j, c in enumerate(CLASSES)})
    for name, rows in ev.scored.items():
        if name == "base" or len(rows) != len(ref):
            continue
        tag = "" if name == "consolidated" else f"{name}_"
        pred.update({f"p_{tag}{c}": rows.proba[:, j] for j, c in enumerate(CLASSES)})
        if rows.raw is not None and name == "consolidated":
            pred.update({f"raw_{c}": rows.raw[:, j] for j, c in enumerate(CLASSES)})
    write_parquet(rp["predictions"], pa.table(pred))
    _evaluation_plots(ev, rp)
    summary = {"scope": ev.scope, "scope_note": ev.scope_note, "genes": ev.genes, "rows": ev.rows,
               "thresholds": ev.thresholds, "ece_bins": cfg.evaluation.ece_bins,
               "table": ev.table, "headline": headline_rows(ev.table),
               "files": {k: str(rp[k]) for k in ("metrics", "calibration", "bins", "predictions")},
               "plots": {k: str(rp[k]) for k in ("plot_roc_pr", "plot_reliability", "plot_reliability_instances")}}
    write_json(rp["metrics_json"], summary)
    return summary


def _evaluation_plots(ev: Evaluation, rp: dict[str, Path]) -> None:
    ref = ev.scored["consolidated"]
    scope = f"{ev.scope}: {ev.genes} genes, {ev.rows} rows the evaluated models never trained on"
    models = {"base": ev.scored["base"].proba} if "base" in ev.scored else {}
    models["consolidated"] = ref.proba
    plots.roc_pr_curves(ref.label, models, rp["plot_roc_pr"], scope)
    ece = {(c["class"], c["kind"]): c["ece_uniform"] for c in ev.calibration if c["model"] == "consolidated"}
    bins = [b for b in ev.bins if b["model"] == "consolidated"]
    bins += [b for b in ev.bins if b["model"] == "base"]
    ece.update({(c["class"], c["kind"]): c["ece_uniform"] for c in ev.calibration if c["model"] == "base"})
    plots.reliability_diagram(bins, rp["plot_reliability"], "consolidated model — " + scope, ece)
    inst = [{**b, "kind": b["model"]} for b in ev.bins if b["kind"] == "calibrated" and b["model"] not in ("base",)]
    inst_ece = {(c["class"], c["model"]): c["ece_uniform"] for c in ev.calibration if c["kind"] == "calibrated"
                and c["model"] != "base"}
    plots.reliability_diagram(inst, rp["plot_reliability_instances"],
                              "calibrated probabilities of each instance — " + scope, inst_ece)


def load_holdout_metrics(cfg: PlatformConfig) -> dict[str, Any]:
    f = report_paths(cfg)["metrics_json"]
    if not f.is_file():
        raise FileNotFoundError(f"no holdout metrics at {f}: materialize holdout_metrics first")
    return read_json(f)


# --------------------------------------------------------------------------- gene_coverage_report


def run_gene_coverage_report(cfg: PlatformConfig, log: Log = _quiet) -> dict[str, Any]:
    """Every gene of the inventory: its role in the plan, which instances trained on it, and
    whether the consolidated model holds one of them. Coverage = training genes held / all."""
    model_dir, manifest, plan = _consolidated(cfg)
    inv = pq.read_table(paths(cfg)["inventory"], columns=["gene_id", "n_rows", "n_donor", "n_acceptor"]).to_pydict()
    holdout = set(plan["holdout_genes"])
    members = {m["partition_key"] for m in manifest["members"]}
    by_gene: dict[str, list[str]] = {}
    for s in plan["subsets"]:
        for g in s["genes"]:
            by_gene.setdefault(g, []).append(s["key"])
    roles, instances, held = [], [], []
    for g in inv["gene_id"]:
        keys = sorted(by_gene.get(g, []))
        roles.append("holdout" if g in holdout else "train" if keys else "not_in_plan")
        instances.append(keys)
        held.append(any(k in members for k in keys))
    table = pa.table({
        "gene_id": inv["gene_id"], "role": roles, "n_rows": inv["n_rows"], "n_donor": inv["n_donor"],
        "n_acceptor": inv["n_acceptor"], "instances": pa.array(instances, pa.list_(pa.string())),
        "n_instances": [len(k) for k in instances], "in_consolidated_model": held,
    })
    write_parquet(report_paths(cfg)["coverage"], table)
    return coverage_summary(table)


def coverage_summary(table: pa.Table) -> dict[str, Any]:
    d = table.select(["gene_id", "role", "n_instances", "in_consolidated_model"]).to_pydict()
    train = [i for i, r in enumerate(d["role"]) if r == "train"]
    covered = [i for i in train if d["in_consolidated_model"][i]]
    uncovered = sorted(d["gene_id"][i] for i in train if not d["in_consolidated_model"][i])
    return {
        "genes": len(d["gene_id"]), "training_genes": len(train),
        "holdout_genes": sum(r == "holdout" for r in d["role"]),
        "not_in_plan": sum(r == "not_in_plan" for r in d["role"]),
        "covered_training_genes": len(covered), "coverage": len(covered) / len(train) if train else 0.0,
        "genes_in_two_or_more_instances": sum(d["n_instances"][i] >= 2 for i in train),
        "uncovered_genes": uncovered[:50], "holdout_genes_in_an_instance":
            sorted(g for g, r, n in zip(d["gene_id"], d["role"], d["n_instances"]) if r == "holdout" and n)[:50],
    }


# --------------------------------------------------------------------------- instance_performance


def run_instance_performance(cfg: PlatformConfig, log: Log = _quiet) -> dict[str, Any]:
    """One row per instance: genes, rows, out-of-fold and evaluation metrics, weight, time, memory;
    plus learning curves and the comparison plot."""
    model_dir, manifest, plan = _consolidated(cfg)
    ev = load_holdout_metrics(cfg)
    by_model = {r["model"]: r for r in ev["table"]}
    rp = report_paths(cfg)
    rows, curves, compare = [], {}, []
    for m in ensemble_members(model_dir):
        key = m["partition_key"]
        mf = read_json(Path(m["dir"]) / "manifest.json")
        o, h = mf["metrics"]["oof"], by_model.get(key, {})
        row = {"partition_key": key, "genes": mf["n_genes"], "rows": mf["n_rows"], "features": mf["n_features"],
               "weight": m["weight"], **{f"trees_{c}": mf["n_estimators"][c] for c in CLASSES},
               **{f"oof_{k}": o.get(k) for k in ("macro_f1", "macro_ap", "splice_f1", "splice_ap", "topk_splice",
                                                  "base_splice_f1", "delta_fp", "delta_fn")},
               "eval_scope": ev["scope"], "eval_genes": ev["genes"],
               **{f"eval_{k}": h.get(k) for k in ("macro_f1", "macro_ap", "splice_f1", "splice_ap", "splice_threshold",
                                                   "splice_fp", "splice_fn", "errors_vs_base", "topk_splice")},
               "eval_max_ece": max((h.get(f"ece_uniform_{c}") or 0.0) for c in CLASSES) if h else None,
               "train_seconds": mf["timings"]["total_seconds"],
               "xgboost_train_seconds": mf["timings"]["xgboost_train_seconds"],
               "load_seconds": mf["timings"]["load_seconds"],
               "peak_rss_mb": round(mf["peak_rss_bytes"] / 2**20, 1)}
        rows.append(row)
        compare.append({"model": key, "oof_splice_f1": row["oof_splice_f1"], "eval_splice_f1": row["eval_splice_f1"],
                        "eval_splice_ap": row["eval_splice_ap"], "eval_macro_f1": row["eval_macro_f1"]})
        lc = Path(m["dir"]) / "learning_curves.parquet"
        if lc.is_file():
            t = pq.read_table(lc).to_pydict()
            curves[key] = {k: np.asarray(v) for k, v in t.items()}
    for name in ("consolidated", "base"):
        if name in by_model:
            r = by_model[name]
            compare.append({"model": name, "oof_splice_f1": None, "eval_splice_f1": r.get("splice_f1"),
                            "eval_splice_ap": r.get("splice_ap"), "eval_macro_f1": r.get("macro_f1")})
    write_parquet(rp["performance"], table_to_arrow(rows))
    if curves:
        plots.learning_curves(curves, rp["plot_learning_curves"])
    plots.instance_comparison(compare, rp["plot_instances"],
                              f"instances vs consolidated vs base — evaluation: {ev['scope']} ({ev['genes']} genes); "
                              "out-of-fold: each instance's own genes")
    return {"rows": rows, "comparison": compare, "scope": ev["scope"], "scope_note": ev["scope_note"],
            "plots": {k: str(rp[k]) for k in ("plot_learning_curves", "plot_instances") if rp[k].is_file()}}


# --------------------------------------------------------------------------- consolidation_summary


def run_consolidation_summary(cfg: PlatformConfig, log: Log = _quiet) -> dict[str, Any]:
    """The consolidation as JSON and a human-readable Markdown training summary."""
    model_dir, manifest, plan = _consolidated(cfg)
    rp = report_paths(cfg)
    ev = load_holdout_metrics(cfg)
    cov = coverage_summary(pq.read_table(rp["coverage"]))
    perf = pq.read_table(rp["performance"]).to_pylist()
    cons = next(r for r in ev["table"] if r["model"] == "consolidated")
    base = next((r for r in ev["table"] if r["model"] == "base"), None)
    summary = {
        "model_dir": str(model_dir), "dataset": plan["dataset"], "strategy": plan["strategy"],
        "instances": len(manifest["members"]), "weighting": manifest["weighting"],
        "members": [{k: r[k] for k in ("partition_key", "genes", "rows", "weight", "oof_macro_f1", "oof_splice_f1",
                                       "eval_splice_f1", "train_seconds", "peak_rss_mb")} for r in perf],
        "features_union": manifest["n_features_union"], "gene_coverage": cov,
        "missing_partitions": manifest.get("missing_partitions", []),
        "evaluation": {"scope": ev["scope"], "scope_note": ev["scope_note"], "genes": ev["genes"], "rows": ev["rows"],
                       "thresholds": ev["thresholds"], "headline": ev["headline"]},
        "consolidated_vs_base": {
            "splice_f1": cons.get("splice_f1"), "splice_ap": cons.get("splice_ap"),
            "base_splice_f1_at_0.5": cons.get("base_splice_f1"),
            "base_splice_f1_at_oof_threshold": cons.get("base_splice_f1_at_oof_threshold"),
            "base_splice_ap": base.get("splice_ap") if base else None,
            "errors_vs_base_at_0.5": cons.get("errors_vs_base"), "delta_fp": cons.get("delta_fp"),
            "delta_fn": cons.get("delta_fn"),
            "ece_uniform": {c: cons.get(f"ece_uniform_{c}") for c in CLASSES},
            "ece_quantile": {c: cons.get(f"ece_quantile_{c}") for c in CLASSES},
        },
        "total_train_seconds": round(sum(r["train_seconds"] for r in perf), 1),
        "max_peak_rss_mb": max((r["peak_rss_mb"] for r in perf), default=None),
    }
    write_json(rp["summary"], summary)
    md = training_summary_markdown(summary, perf, ev)
    with atomic_path(rp["summary_md"]) as tmp:
        tmp.write_text(md)
    summary["markdown"] = md
    return summary


def training_summary_markdown(s: dict[str, Any], perf: list[dict[str, Any]], ev: dict[str, Any]) -> str:
    cov = s["gene_coverage"]
    scope_word = "holdout genes" if ev["scope"] == HOLDOUT else "out-of-fold rows"
    inst = [{"instance": r["partition_key"], "genes": r["genes"], "rows": r["rows"], "weight": r["weight"],
             "OOF splice F1": r["oof_splice_f1"], f"{ev['scope']} splice F1": r["eval_splice_f1"],
             f"{ev['scope']} splice AP": r["eval_splice_ap"], "train s": r["train_seconds"],
             "peak MB": r["peak_rss_mb"]} for r in perf]
    lines = [
        "# Training summary", "",
        f"**Dataset** `{s['dataset']}` — {cov['genes']} genes; plan `{s['strategy']}`: {s['instances']} instance(s), "
        f"{cov['training_genes']} training genes, {cov['holdout_genes']} holdout genes"
        + (f", {cov['not_in_plan']} genes not sampled" if cov["not_in_plan"] else "") + ".", "",
        f"**Gene coverage** {cov['coverage']:.1%} of training genes ({cov['covered_training_genes']}/"
        f"{cov['training_genes']}); {cov['genes_in_two_or_more_instances']} genes in two or more instances (overlap)."
        + (f" Missing partitions: {', '.join(s['missing_partitions'])}." if s["missing_partitions"] else ""), "",
        f"**Consolidated model** `{s['model_dir']}`: {s['features_union']} features, weights: {s['weighting']}. "
        f"Total training time {s['total_train_seconds']:.0f} s, max peak RSS {s['max_peak_rss_mb']} MB.", "",
        f"## Base vs meta on {scope_word} ({ev['genes']} genes, {ev['rows']} rows)", "",
        f"_{ev['scope_note']}_", "",
        format_table(ev["headline"], markdown=True, columns=HEADLINE_COLUMNS), "",
        "## Instances", "", format_table(inst, markdown=True),
    ]
    return "\n".join(lines)
