"""The evaluation and report steps on plain paths (one function per asset, like ``pipeline``):
holdout metrics with calibration analysis and plots, the gene coverage report, instance
performance and the consolidation summary. Tables are Parquet (zstd) under
``<artifacts>/evaluation/``, queryable with DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from ensemble_assets.core.artifacts import load_plan, paths
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.evaluation import plots
from ensemble_assets.core.evaluation.holdout import (
    HOLDOUT,
    Evaluation,
)
from ensemble_assets.core.io import read_json

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


def declared_rows_line(summary: dict[str, Any]) -> str:
    """The consolidated and base splice F1 on the declared rows, with what those rows are."""
    cons = next((r for r in summary["table"] if r["model"] == "consolidated"), {})
    if cons.get("declared_splice_f1") is None:
        return summary.get("declared_rows_note") or ""
    base = cons.get("declared_base_splice_f1")
    return (f"splice F1 on the declared rows: consolidated {cons['declared_splice_f1']:.4f}"
            + (f", base {base:.4f}" if base is not None else "") + f" (the same thresholds) — {summary['declared_rows_note']}")


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
        f"**Held out** {s.get('holdout') or ev.get('holdout') or 'genes'}.", "",
        f"**Gene coverage** {cov['coverage']:.1%} of training genes ({cov['covered_training_genes']}/"
        f"{cov['training_genes']}); {cov['genes_in_two_or_more_instances']} genes in two or more instances (overlap)."
        + (f" Missing partitions: {', '.join(s['missing_partitions'])}." if s["missing_partitions"] else ""), "",
        f"**Consolidated model** `{s['model_dir']}`: {s['features_union']} features, weights: {s['weighting']}. "
        f"Total training time {s['total_train_seconds']:.0f} s, max peak RSS {s['max_peak_rss_mb']} MB.", "",
        f"## Base vs meta on {scope_word} ({ev['genes']} genes, {ev['rows']} rows; held out: "
        f"{ev.get('holdout') or 'genes'})", "",
        f"_{ev['scope_note']}_", "",
        format_table(ev["headline"], markdown=True, columns=HEADLINE_COLUMNS), "",
        *([declared, ""] if (declared := declared_rows_line(ev)) else []),
        "## Instances", "", format_table(inst, markdown=True),
    ]
    return "\n".join(lines)
