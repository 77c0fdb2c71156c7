from .consolidation import consolidated_model
from .dataset import feature_screening, gene_inventory
from .evaluation import (consolidation_summary, evaluation_assets, gene_coverage_report, holdout_metrics,
                         instance_performance)
from .instances import instance_model
from .plan import training_plan

__all__ = ["gene_inventory", "feature_screening", "training_plan", "instance_model", "consolidated_model",
           "holdout_metrics", "gene_coverage_report", "instance_performance", "consolidation_summary",
           "evaluation_assets"]
