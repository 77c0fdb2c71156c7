"""Asset checks: the plan's invariants, verified on the materialized artifacts."""


import dagster as dg

from .assets import consolidated_model, training_plan
from .core import pipeline
from .resources import EnsembleResource


def _per_key_result(problems: dict[str, str], ok: str, metadata: dict, count_name: str) -> dg.AssetCheckResult:
    """A check over keys (subsets, instances): fails naming each key with its problems (non-empty
    text), else passes with ``ok``; ``count_name`` in the metadata counts the failing keys."""
    bad = {k: v for k, v in problems.items() if v}
    return dg.AssetCheckResult(
        passed=not bad,
        description="; ".join(f"{k}: {v}" for k, v in bad.items()) if bad else ok,
        metadata={**metadata, count_name: len(bad)})


@dg.asset_check(asset=training_plan, blocking=True,
                description="Every non-holdout gene is in at least one gene subset (coverage 100%).")
def plan_covers_every_training_gene(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    cfg = ensemble.config()
    plan = pipeline.load_plan(cfg)
    import pyarrow.parquet as pq

    genes = set(pq.read_table(pipeline.paths(cfg)["inventory"], columns=["gene_id"]).column(0).to_pylist())
    if plan["settings"].get("sample_genes"):
        genes = set().union(*[set(s["genes"]) for s in plan["subsets"]]) | set(plan["holdout_genes"])
    covered = set().union(*[set(s["genes"]) for s in plan["subsets"]])
    uncovered = sorted(genes - covered - set(plan["holdout_genes"]))
    return dg.AssetCheckResult(
        passed=not uncovered,
        description=f"{len(uncovered)} training gene(s) in no subset: {', '.join(uncovered[:20])}" if uncovered
        else f"all {len(covered)} training genes covered",
        metadata={"uncovered": len(uncovered), "covered": len(covered)})


@dg.asset_check(asset=training_plan, blocking=True,
                description="No holdout gene is in any instance's training genes.")
def holdout_genes_never_trained(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    plan = pipeline.load_plan(ensemble.config())
    held = set(plan["holdout_genes"])
    leaks = {s["key"]: ", ".join(sorted(held & set(s["genes"]))[:10]) for s in plan["subsets"]}
    return _per_key_result(leaks, f"{len(held)} holdout genes, none in a training subset",
                           {"holdout_genes": len(held)}, "leaking_subsets")


@dg.asset_check(asset=consolidated_model, blocking=True,
                description="The consolidated model covers 100% of the plan's training genes.")
def consolidated_gene_coverage(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    from .core.io import read_json

    m = read_json(pipeline.paths(ensemble.config())["consolidated"] / "manifest.json")
    return dg.AssetCheckResult(
        passed=m["gene_coverage"] >= 1.0,
        description=f"coverage {m['gene_coverage']:.1%}; missing partitions: {', '.join(m['missing_partitions']) or 'none'}",
        metadata={"gene_coverage": float(m["gene_coverage"])})


all_checks = [plan_covers_every_training_gene, holdout_genes_never_trained, consolidated_gene_coverage]


# --------------------------------------------------------------------------- evaluation checks (issue 3)

from .assets import feature_screening, holdout_metrics  # noqa: E402


@dg.asset_check(asset=consolidated_model, blocking=True,
                description="Inside every instance of the consolidated model, each gene is in exactly one CV "
                            "fold: out-of-fold rows of a gene come from one fold (its own), and no gene is used "
                            "for early stopping of the fold it is evaluated in.")
def instance_folds_are_gene_disjoint(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    from .core.evaluation import ensemble_members
    from .core.integrity import fold_violations

    members = ensemble_members(pipeline.paths(ensemble.config())["consolidated"])
    problems = {m["partition_key"]: " | ".join(fold_violations(m["dir"])) for m in members}
    return _per_key_result(problems, f"{len(members)} instance(s): every gene in exactly one fold",
                           {"instances": len(members)}, "instances_with_violations")


@dg.asset_check(asset=feature_screening, blocking=True,
                description="No single model feature nearly separates the classes on its own (one-vs-rest "
                            "ROC-AUC ≥ evaluation.separation_auc, default 0.99, on a seeded gene sample): the "
                            "signature of label leakage such as back-filled structural columns.")
def no_single_feature_separates_classes(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    import numpy as np
    import pyarrow.parquet as pq

    from .core.dataset import open_dataset
    from .core.integrity import separating_features

    cfg = ensemble.config()
    s = cfg.evaluation
    features, fill = pipeline.load_features(cfg)
    genes = sorted(pq.read_table(pipeline.paths(cfg)["inventory"], columns=["gene_id"]).column(0).to_pylist())
    if len(genes) > s.separation_sample_genes:
        genes = sorted(np.random.default_rng(s.seed).choice(genes, s.separation_sample_genes, replace=False).tolist())
    offenders, info = separating_features(open_dataset(cfg.dataset_path), genes, features, fill,
                                          s.separation_auc, cfg.training.batch_rows)
    return dg.AssetCheckResult(
        passed=not offenders,
        description=(f"{len(offenders)} feature(s) alone separate the classes (ROC-AUC ≥ {s.separation_auc} on "
                     f"{info['genes']} genes): " + ", ".join(f"{o['feature']} ({o['target']} AUC {o['auc']:.4f})"
                                                             for o in offenders[:20])
                     + ". Exclude them (likely label leakage).") if offenders
        else f"no feature reaches ROC-AUC {s.separation_auc}; best {info['max_auc_feature']} "
             f"{(info['max_auc'] or 0):.4f} on {info['genes']} genes",
        metadata={"features_checked": len(features), "sample_genes": info["genes"], "sample_rows": info["rows"],
                  "max_auc": float(info["max_auc"] or 0.0), "max_auc_feature": str(info["max_auc_feature"]),
                  "offenders": dg.MetadataValue.json(offenders[:50])})


@dg.asset_check(asset=holdout_metrics, blocking=False,
                description="The consolidated model's calibrated per-class ECE (uniform bins) on genes it "
                            "never trained on is within evaluation.ece_bound (default 0.01).")
def calibrated_ece_within_bound(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    from .core.reports import load_holdout_metrics
    from .core.schema import CLASSES

    cfg = ensemble.config()
    ev = load_holdout_metrics(cfg)
    bound = cfg.evaluation.ece_bound
    rows = {r["model"]: r for r in ev["table"]}
    ece = {c: rows["consolidated"].get(f"ece_uniform_{c}") for c in CLASSES}
    over = {c: v for c, v in ece.items() if v is not None and v > bound}
    instances_over = sorted(f"{m} {c} {r[f'ece_uniform_{c}']:.4f}" for m, r in rows.items()
                            if r["kind"] == "instance" for c in CLASSES if (r.get(f"ece_uniform_{c}") or 0) > bound)
    return dg.AssetCheckResult(
        passed=not over, severity=dg.AssetCheckSeverity.WARN,
        description=(f"consolidated calibrated ECE above {bound} on {ev['scope']} genes: "
                     + ", ".join(f"{c} {v:.4f}" for c, v in over.items())) if over
        else f"consolidated calibrated ECE ≤ {bound} for every class on {ev['scope']} genes ("
             + ", ".join(f"{c} {v:.4f}" for c, v in ece.items() if v is not None) + ")",
        metadata={"bound": bound, **{f"ece_{c}": float(v) for c, v in ece.items() if v is not None},
                  "instances_above_bound": dg.MetadataValue.json(instances_over)})


@dg.asset_check(asset=holdout_metrics, blocking=False,
                description="The consolidated meta-model beats the base model's splice F1 on genes it never "
                            "trained on, at 0.5 and at the base model's own out-of-fold-chosen threshold.")
def meta_beats_base_on_holdout_f1(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    from .core.reports import load_holdout_metrics

    ev = load_holdout_metrics(ensemble.config())
    rows = {r["model"]: r for r in ev["table"]}
    cons = rows["consolidated"]
    base_05 = cons.get("base_splice_f1")
    base_thr = cons.get("base_splice_f1_at_oof_threshold")
    if base_05 is None:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   description="the dataset has no base-model scores: nothing to compare")
    best_base = max(v for v in (base_05, base_thr) if v is not None)
    meta = cons.get("splice_f1") or 0.0
    losers = sorted(f"{m} {r['splice_f1']:.4f}" for m, r in rows.items()
                    if r["kind"] == "instance" and (r.get("splice_f1") or 0.0) <= best_base)
    return dg.AssetCheckResult(
        passed=meta > best_base, severity=dg.AssetCheckSeverity.WARN,
        description=(f"consolidated splice F1 {meta:.4f} vs base {base_05:.4f} at 0.5"
                     + (f", {base_thr:.4f} at its out-of-fold threshold" if base_thr is not None else "")
                     + f" on {ev['genes']} {ev['scope']} genes"
                     + (f"; instances not beating the base: {', '.join(losers)}" if losers else "")),
        metadata={"consolidated_splice_f1": float(meta), "base_splice_f1_at_0.5": float(base_05),
                  "base_splice_f1_at_oof_threshold": float(base_thr) if base_thr is not None else "n/a",
                  "instances_not_beating_base": dg.MetadataValue.json(losers)})


evaluation_checks = [instance_folds_are_gene_disjoint, no_single_feature_separates_classes,
                     calibrated_ece_within_bound, meta_beats_base_on_holdout_f1]
all_checks += evaluation_checks
