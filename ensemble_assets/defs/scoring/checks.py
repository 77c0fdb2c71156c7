"""Coverage guarantee of scored_positions: every input row appears exactly once in the output."""

import warnings

import dagster as dg

from ensemble_assets.core import stages
from ensemble_assets.defs.partitions import scoring_targets
from ensemble_assets.defs.resources import EnsembleResource
from ensemble_assets.defs.scoring.assets import scored_positions


def _coverage(context: dg.AssetCheckExecutionContext, ensemble: EnsembleResource) -> dg.AssetCheckResult:
    cov = stages.run_scoring_coverage(ensemble.config(), context.partition_key)
    return dg.AssetCheckResult(
        passed=cov.passed, description=cov.description(),
        metadata={"input_rows": cov.input_rows, "output_rows": cov.output_rows, "genes": cov.genes,
                  "genes_with_wrong_row_count": len(cov.count_mismatches),
                  "missing_genes": dg.MetadataValue.json(cov.missing_genes[:100]),
                  "duplicated_positions": len(cov.duplicates)})


with warnings.catch_warnings():  # a check partitioned like its asset (one result per target) is a preview feature
    warnings.simplefilter("ignore", dg.PreviewWarning)
    scored_positions_cover_every_input_row = dg.asset_check(
        asset=scored_positions, name="scored_positions_cover_every_input_row", blocking=True,
        partitions_def=scoring_targets,
        description="Every input row of the target appears exactly once in scored_positions: the rows per gene of the "
                    "input and the output are equal (DuckDB over both files) and no (gene_id, position) is "
                    "duplicated. A failure names the missing and duplicated genes.")(_coverage)

scoring_checks = [scored_positions_cover_every_input_row]
