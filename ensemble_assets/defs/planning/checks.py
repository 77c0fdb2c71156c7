"""Checks of the training plan: every training gene covered, no holdout gene trained on."""

from __future__ import annotations

import dagster as dg

from ensemble_assets.core import artifacts
from ensemble_assets.defs.metadata import per_key_result
from ensemble_assets.defs.planning.assets import training_plan
from ensemble_assets.defs.resources import EnsembleResource


@dg.asset_check(asset=training_plan, blocking=True,
                description="Every non-holdout gene is in at least one gene subset (coverage 100%).")
def plan_covers_every_training_gene(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    cfg = ensemble.config()
    plan = artifacts.load_plan(cfg)
    import pyarrow.parquet as pq

    genes = set(pq.read_table(artifacts.paths(cfg)["inventory"], columns=["gene_id"]).column(0).to_pylist())
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
    plan = artifacts.load_plan(ensemble.config())
    held = set(plan["holdout_genes"])
    leaks = {s["key"]: ", ".join(sorted(held & set(s["genes"]))[:10]) for s in plan["subsets"]}
    return per_key_result(leaks, f"{len(held)} holdout genes, none in a training subset",
                           {"holdout_genes": len(held)}, "leaking_subsets")


planning_checks = [plan_covers_every_training_gene, holdout_genes_never_trained]
