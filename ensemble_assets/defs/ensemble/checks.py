"""Checks of the consolidated model: 100% gene coverage and gene-disjoint folds in every instance."""

from __future__ import annotations

import dagster as dg

from ensemble_assets.core import artifacts
from ensemble_assets.core.evaluation.holdout import ensemble_members
from ensemble_assets.core.evaluation.integrity import fold_violations
from ensemble_assets.core.io import read_json
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.metadata import per_key_result
from ensemble_assets.defs.resources import EnsembleResource


@dg.asset_check(asset=consolidated_model, blocking=True,
                description="The consolidated model covers 100% of the plan's training genes.")
def consolidated_gene_coverage(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    m = read_json(artifacts.paths(ensemble.planned_config())["consolidated"] / "manifest.json")
    return dg.AssetCheckResult(
        passed=m["gene_coverage"] >= 1.0,
        description=f"coverage {m['gene_coverage']:.1%}; missing partitions: {', '.join(m['missing_partitions']) or 'none'}",
        metadata={"gene_coverage": float(m["gene_coverage"])})


@dg.asset_check(asset=consolidated_model, blocking=True,
                description="Inside every instance of the consolidated model, each gene is in exactly one CV "
                            "fold: out-of-fold rows of a gene come from one fold (its own), and no gene is used "
                            "for early stopping of the fold it is evaluated in.")
def instance_folds_are_gene_disjoint(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    members = ensemble_members(artifacts.paths(ensemble.planned_config())["consolidated"])
    problems = {m["partition_key"]: " | ".join(fold_violations(m["dir"])) for m in members}
    return per_key_result(problems, f"{len(members)} instance(s): every gene in exactly one fold",
                           {"instances": len(members)}, "instances_with_violations")


ensemble_checks = [consolidated_gene_coverage, instance_folds_are_gene_disjoint]
