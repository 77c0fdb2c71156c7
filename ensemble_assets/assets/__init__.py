from .consolidation import consolidated_model
from .dataset import feature_screening, gene_inventory
from .instances import instance_model
from .plan import training_plan

__all__ = ["gene_inventory", "feature_screening", "training_plan", "instance_model", "consolidated_model"]
