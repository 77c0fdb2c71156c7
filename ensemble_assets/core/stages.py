"""The pipeline steps, one function per asset, on plain paths: the Dagster assets call these,
and so can a notebook, a benchmark or a GPU box without Dagster."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble_assets.core.artifacts import load_features, load_plan, model_store, paths
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.data.contract import ParquetDataset, open_dataset
from ensemble_assets.core.data.declaration import (
    GeneContextDecision,
    check_chromosomes,
    declaration_path,
    gene_context_decision,
    read_declaration,
)
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.data.screening import screen_features
from ensemble_assets.core.evaluation import plots
from ensemble_assets.core.evaluation.holdout import (
    ensemble_members,
    evaluate_models,
    operating_point,
    table_to_arrow,
    trained_genes,
)
from ensemble_assets.core.evaluation.reports import (
    _consolidated,
    _evaluation_plots,
    coverage_summary,
    headline_rows,
    load_holdout_metrics,
    report_paths,
    training_summary_markdown,
)
from ensemble_assets.core.explanation.results import InstanceShap
from ensemble_assets.core.explanation.settings import ShapSettings
from ensemble_assets.core.explanation.shap_analysis import compute_ensemble_shap, explain_instances
from ensemble_assets.core.io import atomic_path, read_json, sha256_text, write_json, write_parquet
from ensemble_assets.core.model.ensemble import consolidate, load_model
from ensemble_assets.core.model.promotion import GATE_ACTOR, PromotionDecision, decide
from ensemble_assets.core.planning.freshness import plan_inputs_fingerprint
from ensemble_assets.core.planning.plan import (
    check_instance_memory,
    describe_holdout,
    make_plan,
    plan_table,
    subset_for_key,
)
from ensemble_assets.core.scoring.coverage import Coverage, check_coverage
from ensemble_assets.core.scoring.model_ref import resolve_scoring_model
from ensemble_assets.core.scoring.score import every, open_target, score_dataset
from ensemble_assets.core.scoring.target_metrics import target_metrics
from ensemble_assets.core.scoring.targets import scored_paths, target_path
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets.datasets.demo import write_demo_dataset

Log = Callable[[str], None]
# machine-dependent plan facts, written beside the plan (training_plan_sizing.json)
PLAN_SIZING_FIELDS = ("memory_budget_bytes", "genes_fitting_memory")


def _quiet(_: str) -> None:
    pass


class CoverageError(RuntimeError):
    """The consolidated model was asked for while partitions of the plan are missing."""


def ensure_dataset(cfg: PlatformConfig, log: Log = _quiet) -> ParquetDataset:
    """Open the configured dataset; the demo dataset is generated on first use."""
    if not cfg.dataset and not (cfg.demo_dir / "master").is_dir():
        log(f"generating the demo dataset in {cfg.demo_dir}")
        write_demo_dataset(cfg.demo_dir)
    return open_dataset(cfg.dataset_path)


def run_inventory(cfg: PlatformConfig, log: Log = _quiet) -> tuple[pa.Table, dict[str, Any]]:
    ds = ensure_dataset(cfg, log)
    declaration = read_declaration(ds.root)  # a bad dataset.json fails here, before any scan
    inventory, profile = build_gene_inventory(ds, threads=cfg.training.nthread or 2)
    check_chromosomes(declaration, list(profile.get("genes_per_chromosome", {})))
    profile["dataset"] = str(ds.root)
    profile["declaration"] = declaration.to_dict() if declaration else None
    log(f"declaration: {declaration.path}" if declaration else f"declaration: none ({declaration_path(ds.root)} absent)")
    p = paths(cfg)
    write_parquet(p["inventory"], inventory)
    write_json(p["profile"], profile)
    return inventory, profile


def run_screening(cfg: PlatformConfig, log: Log = _quiet) -> pa.Table:
    ds = open_dataset(cfg.dataset_path)
    genes = pq.read_table(paths(cfg)["inventory"], columns=["gene_id"]).column(0).to_pylist()
    log(gene_context_status(cfg).reason)
    manifest = screen_features(ds, genes, cfg.screening, threads=cfg.training.nthread or 2)
    write_parquet(paths(cfg)["manifest"], manifest)
    return manifest


def gene_context_status(cfg: PlatformConfig) -> GeneContextDecision:
    """Whether screening computes the gene-context features for this dataset and settings, and why."""
    return gene_context_decision(cfg.screening.gene_context, read_declaration(cfg.dataset_path))


def model_signature(features: list[str], fill: dict[str, float], cfg: PlatformConfig) -> str:
    body = "\n".join(f"{f}={fill[f]!r}" for f in features) + "\n" + cfg.training.signature()
    return sha256_text(body)[:16]


def run_plan(cfg: PlatformConfig, log: Log = _quiet) -> dict[str, Any]:
    cfg.plan.validate()
    cfg.training.validate()  # the plan is the first step that depends on the training settings
    p = paths(cfg)
    inventory = pq.read_table(p["inventory"])
    features, fill = load_features(cfg)
    plan = make_plan(inventory, len(features), cfg.plan, model_signature(features, fill, cfg),
                     min_genes_per_instance=cfg.training.n_folds)
    plan["dataset"] = str(cfg.dataset_path.resolve())
    # the settings of every later step (artifacts.planned_config); the data root is where the plan is
    plan["config"] = {k: v for k, v in cfg.to_dict().items() if k != "data_root"}
    # The measured memory budget (psutil's available memory × memory_fraction) changes from one
    # run to the next; it is kept beside the plan, so that the plan file is a function of the
    # dataset, the settings and the seed alone (byte-identical when they are). When the budget
    # does change the subsets, the plan's sizing_note says so.
    sizing = {k: plan[k] for k in PLAN_SIZING_FIELDS}
    write_json(p["plan"], {k: v for k, v in plan.items() if k not in PLAN_SIZING_FIELDS})
    write_json(p["plan_sizing"], sizing)
    write_parquet(p["plan_table"], plan_table(plan))
    return plan


def run_instance(cfg: PlatformConfig, key: str, log: Log = _quiet) -> dict[str, Any]:
    plan = load_plan(cfg)
    subset = subset_for_key(plan, key)
    features, fill = load_features(cfg)
    if cfg.training.device == "cpu":  # on a GPU the matrix lives in device memory
        figures = check_instance_memory(subset["n_rows"], subset["n_genes"], len(features),
                                        label=f"instance {key}")
        log(f"memory guard: needs ≈ {figures['estimated_peak_bytes'] / 2**30:.2f} GiB of "
            f"{figures['available_bytes'] / 2**30:.2f} GiB available")
    ds = open_dataset(plan["dataset"])
    return train_instance(ds, subset["genes"], features, fill, cfg.training, cfg.instance_dir(key), key, log)


def run_consolidation(cfg: PlatformConfig, materialized: Iterable[str] | None = None,
                      allow_partial: bool = False, log: Log = _quiet) -> dict[str, Any]:
    """Consolidate every instance of the current plan. ``materialized``: the partition keys the
    orchestrator reports as materialized (None: trust the files)."""
    plan = load_plan(cfg)
    keys = [s["key"] for s in plan["subsets"]]
    done = set(materialized) if materialized is not None else set(keys)
    present = [k for k in keys if k in done and (cfg.instance_dir(k) / "manifest.json").is_file()]
    missing = [k for k in keys if k not in present]
    covered = set().union(*[set(s["genes"]) for s in plan["subsets"] if s["key"] in present]) if present else set()
    coverage = len(covered) / max(plan["n_training_genes"], 1)
    if missing and not allow_partial:
        raise CoverageError(
            f"gene coverage is {coverage:.1%}: {len(missing)} of {len(keys)} instance_model partitions are not "
            f"materialized: {', '.join(missing)}. Materialize them (or backfill failed partitions), "
            "or allow a partial ensemble explicitly.")
    if not present:
        raise CoverageError("no instance_model partition of the current plan is materialized")
    manifest = consolidate({k: cfg.instance_dir(k) for k in present}, paths(cfg)["consolidated"],
                           plan["holdout_genes"],
                           extra={"gene_coverage": coverage, "missing_partitions": missing,
                                  "plan_strategy": plan["strategy"], "dataset": plan["dataset"]},
                           operating_point=operating_point)
    manifest["version_id"] = model_store(cfg).add(paths(cfg)["consolidated"])
    log(f"consolidated {len(present)} instance(s), gene coverage {coverage:.1%}; model version "
        f"{manifest['version_id']} (a candidate until promoted)")
    return manifest


def run_model_promotion(cfg: PlatformConfig, actor: str = GATE_ACTOR, log: Log = _quiet) -> PromotionDecision:
    """Compare the consolidated model (the candidate version) with the current version and
    promote it or record why not (core/model/promotion.py)."""
    store = model_store(cfg)
    if not (paths(cfg)["consolidated"] / "manifest.json").is_file():
        raise FileNotFoundError(f"no consolidated model at {paths(cfg)['consolidated']}: materialize "
                                "consolidated_model first")
    candidate = store.add(paths(cfg)["consolidated"])   # already there after consolidation: same id
    decision = decide(store, candidate, cfg.promotion, cfg.evaluation.ece_bins, actor)
    log(f"model version {candidate}: {decision.outcome}: {decision.reason}")
    return decision




def run_holdout_metrics(cfg: PlatformConfig, log: Log = _quiet) -> dict[str, Any]:
    """Evaluate base, instances and consolidated model side by side; write the tables and plots."""
    model_dir, manifest, plan = _consolidated(cfg)
    rp = report_paths(cfg)
    ds = open_dataset(plan["dataset"]) if plan["holdout_genes"] else None
    held_out = describe_holdout(plan)
    log(f"evaluating {len(manifest['members'])} instance(s) and the consolidated model on "
        f"{len(plan['holdout_genes']) or 'no'} holdout genes; held out: {held_out}")
    declaration = read_declaration(plan["dataset"])
    ev = evaluate_models(model_dir, ds, plan["holdout_genes"], cfg.evaluation, holdout=held_out,
                         declared_min_score=declaration.min_score_of_every_row if declaration else None)
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
    summary = {"scope": ev.scope, "scope_note": ev.scope_note, "holdout": ev.holdout, "genes": ev.genes, "rows": ev.rows,
               "declared_rows_note": ev.declared_rows_note,
               "thresholds": ev.thresholds, "ece_bins": cfg.evaluation.ece_bins,
               "table": ev.table, "headline": headline_rows(ev.table),
               "files": {k: str(rp[k]) for k in ("metrics", "calibration", "bins", "predictions")},
               "plots": {k: str(rp[k]) for k in ("plot_roc_pr", "plot_reliability", "plot_reliability_instances")}}
    write_json(rp["metrics_json"], summary)
    return summary


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
               # as the manifest records them: per class (xgboost_ovr), "multiclass" (xgboost_softprob), the unit (scikit-learn)
               "weight": m["weight"], **{f"n_estimators_{k}": n for k, n in mf["n_estimators"].items()},
               **{f"oof_{k}": o.get(k) for k in ("macro_f1", "macro_ap", "splice_f1", "splice_ap", "topk_splice",
                                                  "base_splice_f1", "delta_fp", "delta_fn")},
               "eval_scope": ev["scope"], "eval_holdout": ev.get("holdout"), "eval_genes": ev["genes"],
               **{f"eval_{k}": h.get(k) for k in ("macro_f1", "macro_ap", "splice_f1", "splice_ap", "splice_threshold",
                                                   "splice_fp", "splice_fn", "errors_vs_base", "topk_splice")},
               "eval_max_ece": max((h.get(f"ece_uniform_{c}") or 0.0) for c in CLASSES) if h else None,
               "train_seconds": mf["timings"]["total_seconds"],
               "fit_seconds": mf["timings"]["fit_seconds"],   # the learner's own fitting (XGBoost or scikit-learn)
               "xgboost_train_seconds": mf["timings"].get("xgboost_train_seconds"),   # None: not an XGBoost kind
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
                              f"instances vs consolidated vs base — evaluation: {ev['scope']} ({ev['genes']} genes; "
                              f"held out: {ev.get('holdout', 'genes')}); "
                              "out-of-fold: each instance's own genes")
    return {"rows": rows, "comparison": compare, "scope": ev["scope"], "scope_note": ev["scope_note"],
            "holdout": ev.get("holdout"),
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
        "holdout": describe_holdout(plan),
        "evaluation": {"scope": ev["scope"], "scope_note": ev["scope_note"], "holdout": ev.get("holdout"),
                       "genes": ev["genes"], "rows": ev["rows"],
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


def shap_paths(cfg: Any) -> dict[str, Path]:
    return {"instances": cfg.artifacts / "instance_shap", "ensemble": cfg.artifacts / "ensemble_shap"}


def run_instance_shap(cfg: Any, key: str, settings: ShapSettings, recompute: bool = False,
                      log: Log = _quiet) -> InstanceShap:
    """SHAP of one trained instance (``instance_model`` partition ``key``) of the current plan."""
    plan = load_plan(cfg)
    model = load_model(cfg.instance_dir(key))
    ds = open_dataset(plan["dataset"])
    results, _ = explain_instances(ds, {key: model}, settings, shap_paths(cfg)["instances"], recompute, log)
    return results[key]


def run_ensemble_shap(cfg: Any, settings: ShapSettings, recompute: bool = False, log: Log = _quiet) -> dict[str, Any]:
    p = shap_paths(cfg)
    if not (paths(cfg)["consolidated"] / "manifest.json").is_file():
        raise FileNotFoundError(f"no consolidated model at {paths(cfg)['consolidated']}: materialize "
                                "consolidated_model first")
    return compute_ensemble_shap(paths(cfg)["consolidated"], p["ensemble"], settings, cache_dir=p["instances"],
                                 recompute=recompute, log=log)


def run_scoring(cfg: PlatformConfig, target: str, log: Log = _quiet) -> dict[str, Any]:
    """Score the registered target ``target`` with the current model version: the scored
    positions, a summary, and for a labelled target its metrics (core/scoring/)."""
    source = target_path(cfg, target)
    store = model_store(cfg)
    out = scored_paths(cfg, target)
    for attempt in range(3):   # a version promoted while scoring: score again with it
        sm = resolve_scoring_model("current", store)
        log(f"scoring target {target} ({source}) with model version {sm.version} at splice threshold "
            f"{sm.threshold:.4f} ({sm.threshold_source})")
        result = score_dataset(sm.model, sm.threshold, source, out["positions"], sm.version,
                               cfg.scoring.batch_rows, cfg.scoring.memory_limit, collect_labels=True,
                               progress=every(30.0, lambda p: log(f"scoring {target}: {p.line()}")))
        if store.current_id() == sm.version:
            break
        log(f"model version {store.current_id()} became current while scoring with {sm.version}")
    if result.gene_context is not None and result.gene_context.warning:
        log(f"warning: scoring target {target}: {result.gene_context.warning}")
    summary = {"target": target, "input": str(source), "model_dir": str(sm.path),
               "input_fingerprint": plan_inputs_fingerprint(source, {}),   # file names, sizes, mtimes
               "threshold_source": sm.threshold_source, **result.summary()}
    if result.labelled_rows is not None:
        metrics = target_metrics(result.labelled_rows, trained_genes(sm.path), sm.threshold, cfg.evaluation.ece_bins)
        write_parquet(out["metrics"], table_to_arrow(metrics["table"]) if metrics["table"] else pa.table({}))
        summary["metrics"] = metrics
    else:
        out["metrics"].unlink(missing_ok=True)   # an earlier, labelled version of the target
    write_json(out["summary"], summary)
    return summary


def run_scoring_coverage(cfg: PlatformConfig, target: str) -> Coverage:
    """The coverage guarantee of a scored target: its scored positions against the input it was
    scored from (the path recorded in its summary)."""
    out = scored_paths(cfg, target)
    summary = read_json(out["summary"])
    return check_coverage(open_target(summary["input"]), out["positions"], memory_limit=cfg.scoring.memory_limit)
