"""Asset checks: the plan's invariants, verified on the materialized artifacts."""


import dagster as dg

from .assets import consolidated_model, training_plan
from .core import pipeline
from .resources import EnsembleResource


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
    leaks = {s["key"]: sorted(held & set(s["genes"])) for s in plan["subsets"]}
    leaks = {k: v for k, v in leaks.items() if v}
    return dg.AssetCheckResult(
        passed=not leaks,
        description="; ".join(f"{k}: {', '.join(v[:10])}" for k, v in leaks.items()) if leaks
        else f"{len(held)} holdout genes, none in a training subset",
        metadata={"holdout_genes": len(held), "leaking_subsets": len(leaks)})


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
