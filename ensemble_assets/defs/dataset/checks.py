"""Checks of the feature manifest: no single feature separates the classes (label leakage)."""

from __future__ import annotations

import dagster as dg

from ensemble_assets.core import artifacts
from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.evaluation.integrity import separating_features
from ensemble_assets.defs.dataset.assets import feature_screening
from ensemble_assets.defs.resources import EnsembleResource


@dg.asset_check(asset=feature_screening, blocking=True,
                description="No single model feature nearly separates the classes on its own (one-vs-rest "
                            "ROC-AUC ≥ evaluation.separation_auc, default 0.99, on a seeded gene sample): the "
                            "signature of label leakage such as back-filled structural columns.")
def no_single_feature_separates_classes(ensemble: EnsembleResource) -> dg.AssetCheckResult:
    import numpy as np
    import pyarrow.parquet as pq

    cfg = ensemble.config()
    s = cfg.evaluation
    features, fill = artifacts.load_features(cfg)
    genes = sorted(pq.read_table(artifacts.paths(cfg)["inventory"], columns=["gene_id"]).column(0).to_pylist())
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


dataset_checks = [no_single_feature_separates_classes]
