"""The gene subsets of the training plan, one dynamic partition each (keys ``s<NN>-<hash>``)."""

import dagster as dg

gene_subsets = dg.DynamicPartitionsDefinition(name="gene_subsets")
