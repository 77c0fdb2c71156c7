"""Dynamic partitions: the gene subsets of the training plan (keys ``s<NN>-<hash>``) and the scoring targets."""

import dagster as dg

gene_subsets = dg.DynamicPartitionsDefinition(name="gene_subsets")

# the scoring targets (config ``scoring.targets`` and ``<data root>/targets/*``), one dynamic
# partition each, keyed by the target's name; registered by scoring_targets_sensor
scoring_targets = dg.DynamicPartitionsDefinition(name="scoring_targets")
