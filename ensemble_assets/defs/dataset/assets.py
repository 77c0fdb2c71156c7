"""gene_inventory and feature_screening: DuckDB SQL over the input Parquet."""


import dagster as dg

from ensemble_assets.core import artifacts, stages
from ensemble_assets.defs.metadata import OWNERS, md_table
from ensemble_assets.defs.resources import EnsembleResource


@dg.asset(
    group_name="dataset", kinds={"duckdb", "parquet"}, owners=OWNERS, code_version="2",
    description="One row per gene of the input dataset (rows, class counts, base-model outcome counts, "
                "length, chromosome, source file) and the dataset profile used for sizing; the dataset's "
                "declaration (dataset.json: species, assembly, chromosomes, base model, row selection). "
                "Generates the demo dataset on first use when no dataset is configured.",
)
def gene_inventory(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.config()
    inventory, profile = stages.run_inventory(cfg, context.log.info)
    p = artifacts.paths(cfg)
    return dg.MaterializeResult(metadata={
        "dataset": dg.MetadataValue.path(profile["dataset"]),
        "path": dg.MetadataValue.path(str(p["inventory"])),
        "dagster/row_count": inventory.num_rows,
        "rows": profile["rows"], "genes": profile["genes"], "files": profile["files"],
        "columns": profile["columns"],
        "uncompressed_bytes_per_row": profile["uncompressed_bytes_per_row"],
        "label_counts": dg.MetadataValue.json(profile["label_counts"]),
        "files_missing_columns": len(profile["files_missing_columns"]),
        "genes_per_chromosome": dg.MetadataValue.json(profile.get("genes_per_chromosome", {})),
        **declaration_metadata(profile.get("declaration")),
    })


def declaration_metadata(d: dict | None) -> dict:
    """The dataset's declaration (dataset.json) as gene_inventory metadata."""
    if d is None:
        return {"declaration": "none: no dataset.json beside the data (docs/features.md#the-dataset-declaration)"}
    rs = d.get("row_selection") or {}
    t = rs.get("every_position_with_max_score_at_least")
    selection = "; ".join(([f"every position with {rs['max_score']} ≥ {t:g}"] if t is not None else [])
                          + list(rs.get("also", []))) or "not declared"
    return {"declaration": dg.MetadataValue.path(d["path"]), "species": d["species"] or "not declared",
            "assembly": d["assembly"] or "not declared",
            "chromosomes": ", ".join(d["chromosomes"]) or "not declared",
            "base_model": d["base_model"] or "not declared", "row_selection": selection}


@dg.asset(
    group_name="dataset", kinds={"duckdb", "parquet"}, owners=OWNERS, code_version="2",
    deps=[gene_inventory],
    description="The feature manifest: every column, whether it is a model feature and why not "
                "(metadata, label leakage, structural leakage, constant, label correlation on a gene "
                "sample, user exclusion, absolute coordinate), with the fill value used to impute nulls; and "
                "the computed gene-position and gene-context features (gene context: on when the dataset's "
                "declaration guarantees every candidate row, or when set; the reason is in the metadata).",
)
def feature_screening(context: dg.AssetExecutionContext, ensemble: EnsembleResource) -> dg.MaterializeResult:
    cfg = ensemble.config()
    manifest = stages.run_screening(cfg, context.log.info)
    gene_context = stages.gene_context_status(cfg)
    d = manifest.to_pylist()
    excluded = [r for r in d if not r["is_feature"]]
    reasons: dict[str, int] = {}
    for r in excluded:
        reasons[r["reason"].split(" (")[0]] = reasons.get(r["reason"].split(" (")[0], 0) + 1
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(artifacts.paths(cfg)["manifest"])),
        "features": sum(r["is_feature"] for r in d),
        "excluded": len(excluded),
        "kmer_features": sum(r["is_feature"] and r["family"] == "kmer" for r in d),
        "excluded_by_reason": dg.MetadataValue.json(reasons),
        "gene_context": gene_context.reason,
        "excluded_columns": md_table([r for r in excluded if r["family"] != "kmer"][:60], ["column", "family", "reason"]),
    })
