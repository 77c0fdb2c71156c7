
"""Evaluation and reports on genes the evaluated models never trained on: holdout_metrics,
gene_coverage_report, instance_performance and consolidation_summary."""


from typing import Any

import dagster as dg

from ensemble_assets.core import stages
from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.evaluation import reports
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.metadata import OWNERS, md_image, md_table
from ensemble_assets.defs.planning.assets import training_plan
from ensemble_assets.defs.resources import EnsembleResource

GROUP = "evaluation"


def _float(v: Any) -> Any:
    return dg.MetadataValue.float(float(v)) if isinstance(v, (int, float)) else "n/a"


@dg.asset(
    group_name=GROUP, kinds={"xgboost", "parquet"}, owners=OWNERS, code_version="2", deps=[consolidated_model],
    description="Base model, every instance and the consolidated model side by side on the plan's holdout genes "
                "(no instance trained on them; `holdout` names what was held out: chromosomes or genes): 3-class macro F1, per-class F1 and AP, macro AP, gene-level top-k, "
                "splice vs not-splice F1/FP/FN/ΔFP/ΔFN/ROC-AUC/AP, and per-class calibration (ECE uniform and "
                "quantile bins, Brier, log loss; raw vs calibrated). Splice thresholds are chosen on out-of-fold "
                "predictions, never on the rows they are reported on. Without holdout genes (train_all_genes) "
                "the figures are out-of-fold and labelled so. Plots: ROC/PR base vs meta, reliability diagrams.",
)
def holdout_metrics(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    s = stages.run_holdout_metrics(cfg, context.log.info)
    rp = reports.report_paths(cfg)
    cons = next(r for r in s["table"] if r["model"] == "consolidated")
    return dg.MaterializeResult(metadata={
        "scope": s["scope"], "scope_note": s["scope_note"], "holdout": s["holdout"], "genes": s["genes"],
        "rows": s["rows"],
        "path": dg.MetadataValue.path(str(rp["metrics"])),
        "calibration_table": dg.MetadataValue.path(str(rp["calibration"])),
        "predictions": dg.MetadataValue.path(str(rp["predictions"])),
        "dagster/row_count": len(s["table"]),
        "consolidated_splice_f1": _float(cons.get("splice_f1")),
        "consolidated_splice_ap": _float(cons.get("splice_ap")),
        "base_splice_f1_at_0.5": _float(cons.get("base_splice_f1")),
        "errors_vs_base_at_0.5": _float(cons.get("errors_vs_base")),
        **{f"consolidated_ece_{c}": _float(cons.get(f"ece_uniform_{c}")) for c in CLASSES},
        "declared_rows": reports.declared_rows_line(s),
        "declared_rows_splice_f1": _float(cons.get("declared_splice_f1")),
        "declared_rows_base_splice_f1": _float(cons.get("declared_base_splice_f1")),
        "sites_below_declared_rows": cons.get("sites_below_declared", "n/a"),
        "thresholds_chosen_out_of_fold": dg.MetadataValue.json(s["thresholds"]),
        "side_by_side": dg.MetadataValue.md(reports.format_table(s["headline"], markdown=True,
                                                                 columns=reports.HEADLINE_COLUMNS)),
        "roc_pr_curves": md_image(rp["plot_roc_pr"], "ROC and PR curves, base vs consolidated"),
        "reliability_diagram": md_image(rp["plot_reliability"], "reliability diagram, consolidated model"),
        "reliability_instances": md_image(rp["plot_reliability_instances"], "reliability diagram per instance"),
    })


@dg.asset(
    group_name=GROUP, kinds={"duckdb", "parquet"}, owners=OWNERS, code_version="1",
    deps=[consolidated_model, training_plan],
    description="Every gene of the inventory: its role (train / holdout / not in the plan), which instances "
                "trained on it, whether the consolidated model holds one of them; coverage of training genes.",
)
def gene_coverage_report(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    s = stages.run_gene_coverage_report(cfg, context.log.info)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(reports.report_paths(cfg)["coverage"])),
        "dagster/row_count": s["genes"], "coverage": dg.MetadataValue.float(s["coverage"]),
        "training_genes": s["training_genes"], "covered_training_genes": s["covered_training_genes"],
        "holdout_genes": s["holdout_genes"], "not_in_plan": s["not_in_plan"],
        "genes_in_two_or_more_instances": s["genes_in_two_or_more_instances"],
        "uncovered_genes": dg.MetadataValue.json(s["uncovered_genes"]),
    })


@dg.asset(
    group_name=GROUP, kinds={"parquet"}, owners=OWNERS, code_version="1", deps=[holdout_metrics],
    description="One row per instance: genes, rows, trees, out-of-fold metrics (its own genes), evaluation "
                "metrics (holdout genes, or out-of-fold without a holdout), ensemble weight, train time and "
                "peak memory. Plots: learning curves per instance, instance comparison.",
)
def instance_performance(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    s = stages.run_instance_performance(cfg, context.log.info)
    rows = s["rows"]
    meta: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(reports.report_paths(cfg)["performance"])),
        "dagster/row_count": len(rows), "eval_scope": s["scope"], "eval_holdout": s["holdout"] or "n/a",
        "instances": md_table(rows, ["partition_key", "genes", "rows", "weight", "oof_splice_f1", "eval_splice_f1",
                                     "eval_splice_ap", "eval_max_ece", "train_seconds", "peak_rss_mb"]),
    }
    if "plot_learning_curves" in s["plots"]:
        meta["learning_curves"] = md_image(s["plots"]["plot_learning_curves"], "learning curves per instance")
    meta["instance_comparison"] = md_image(s["plots"]["plot_instances"], "instance comparison")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    group_name=GROUP, kinds={"json"}, owners=OWNERS, code_version="1",
    deps=[holdout_metrics, instance_performance, gene_coverage_report],
    description="The consolidation as JSON (members, weights, coverage, base vs consolidated on genes never "
                "trained on) and a human-readable training summary (Markdown).",
)
def consolidation_summary(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.planned_config()
    s = stages.run_consolidation_summary(cfg, context.log.info)
    rp = reports.report_paths(cfg)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(rp["summary"])),
        "markdown_path": dg.MetadataValue.path(str(rp["summary_md"])),
        "instances": s["instances"], "gene_coverage": dg.MetadataValue.float(s["gene_coverage"]["coverage"]),
        "eval_scope": s["evaluation"]["scope"], "holdout": s["holdout"],
        "training_summary": dg.MetadataValue.md(s["markdown"]),
    })


evaluation_assets = [holdout_metrics, gene_coverage_report, instance_performance, consolidation_summary]
