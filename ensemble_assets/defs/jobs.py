"""Jobs: the plan, the instances (one run per partition), and the consolidation."""

import dagster as dg

plan_job = dg.define_asset_job(
    "plan_job", selection=dg.AssetSelection.groups("dataset", "plan"),
    description="Inventory, screening and plan; registers the gene-subset partitions.")
instance_training_job = dg.define_asset_job(
    "instance_training_job", selection=dg.AssetSelection.groups("training"),
    description="Train instance_model partitions (one run per gene subset).")
consolidation_job = dg.define_asset_job(
    "consolidation_job", selection=dg.AssetSelection.groups("ensemble", "models"),
    description="Consolidate every instance of the current plan into one model (a new version), then decide "
                "whether it becomes the current model.")

evaluation_job = dg.define_asset_job(
    "evaluation_job", selection=dg.AssetSelection.groups("evaluation"),
    description="Holdout metrics, calibration analysis, plots and reports of the consolidated model.")

retraining_job = dg.define_asset_job(
    "retraining_job", selection=dg.AssetSelection.groups("dataset", "plan", "training"),
    description="Scheduled retraining: recompute inventory, screening and plan when their inputs changed, "
                "else train the partitions that are missing, failed or stale (one run each).")

scoring_job = dg.define_asset_job(
    "scoring_job", selection=dg.AssetSelection.groups("scoring"),
    description="Score scoring_targets partitions with the current model version (one run per target).")

all_jobs = [plan_job, instance_training_job, consolidation_job, evaluation_job, retraining_job, scoring_job]
