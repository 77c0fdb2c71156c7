"""The pipeline steps, one function per asset, on plain paths: the Dagster assets call these,
and so can a notebook, a benchmark or a GPU box without Dagster."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from .config import PlatformConfig
from .dataset import DatasetError, ParquetDataset, open_dataset
from .io import read_json, sha256_text, write_json, write_parquet
from .planning import check_instance_memory, make_plan, plan_table, subset_for_key
from .screening import feature_columns, screen_features
from .training import train_instance

Log = Callable[[str], None]
# machine-dependent plan facts, written beside the plan (training_plan_sizing.json)
PLAN_SIZING_FIELDS = ("memory_budget_bytes", "genes_fitting_memory")


def _quiet(_: str) -> None:
    pass


class CoverageError(RuntimeError):
    """The consolidated model was asked for while partitions of the plan are missing."""


def paths(cfg: PlatformConfig) -> dict[str, Path]:
    a = cfg.artifacts
    return {
        "inventory": a / "gene_inventory.parquet", "profile": a / "dataset_profile.json",
        "manifest": a / "feature_manifest.parquet", "plan": a / "training_plan.json",
        "plan_table": a / "training_plan.parquet", "consolidated": a / "consolidated_model",
        "plan_sizing": a / "training_plan_sizing.json",
    }


def ensure_dataset(cfg: PlatformConfig, log: Log = _quiet) -> ParquetDataset:
    """Open the configured dataset; the demo dataset is generated on first use."""
    if not cfg.dataset and not (cfg.demo_dir / "master").is_dir():
        from .demo_data import write_demo_dataset

        log(f"generating the demo dataset in {cfg.demo_dir}")
        write_demo_dataset(cfg.demo_dir)
    return open_dataset(cfg.dataset_path)


def run_inventory(cfg: PlatformConfig, log: Log = _quiet) -> tuple[pa.Table, dict[str, Any]]:
    from .inventory import build_gene_inventory

    ds = ensure_dataset(cfg, log)
    inventory, profile = build_gene_inventory(ds, threads=cfg.training.nthread or 2)
    profile["dataset"] = str(ds.root)
    p = paths(cfg)
    write_parquet(p["inventory"], inventory)
    write_json(p["profile"], profile)
    return inventory, profile


def run_screening(cfg: PlatformConfig, log: Log = _quiet) -> pa.Table:
    ds = open_dataset(cfg.dataset_path)
    genes = pq.read_table(paths(cfg)["inventory"], columns=["gene_id"]).column(0).to_pylist()
    manifest = screen_features(ds, genes, cfg.screening, threads=cfg.training.nthread or 2)
    write_parquet(paths(cfg)["manifest"], manifest)
    return manifest


def load_features(cfg: PlatformConfig) -> tuple[list[str], dict[str, float]]:
    return feature_columns(pq.read_table(paths(cfg)["manifest"]))


def model_signature(features: list[str], fill: dict[str, float], cfg: PlatformConfig) -> str:
    body = "\n".join(f"{f}={fill[f]!r}" for f in features) + "\n" + cfg.training.signature()
    return sha256_text(body)[:16]


def run_plan(cfg: PlatformConfig, log: Log = _quiet) -> dict[str, Any]:
    cfg.plan.validate()
    cfg.training.validate()  # the plan is the first step that depends on the training settings
    p = paths(cfg)
    inventory = pq.read_table(p["inventory"])
    features, fill = load_features(cfg)
    plan = make_plan(inventory, len(features), cfg.plan, model_signature(features, fill, cfg),
                     min_genes_per_instance=cfg.training.n_folds)
    plan["dataset"] = str(cfg.dataset_path.resolve())
    # The measured memory budget (psutil's available memory × memory_fraction) changes from one
    # run to the next; it is kept beside the plan, so that the plan file is a function of the
    # dataset, the settings and the seed alone (byte-identical when they are). When the budget
    # does change the subsets, the plan's sizing_note says so.
    sizing = {k: plan[k] for k in PLAN_SIZING_FIELDS}
    write_json(p["plan"], {k: v for k, v in plan.items() if k not in PLAN_SIZING_FIELDS})
    write_json(p["plan_sizing"], sizing)
    write_parquet(p["plan_table"], plan_table(plan))
    return plan


def load_plan(cfg: PlatformConfig) -> dict[str, Any]:
    """The plan, with the sizing facts it was made under (when they were recorded)."""
    p = paths(cfg)["plan"]
    if not p.is_file():
        raise FileNotFoundError(f"no training plan at {p}: materialize training_plan first")
    plan = read_json(p)
    sizing = paths(cfg)["plan_sizing"]
    if sizing.is_file():
        plan = {**read_json(sizing), **plan}
    return plan


def run_instance(cfg: PlatformConfig, key: str, log: Log = _quiet) -> dict[str, Any]:
    plan = load_plan(cfg)
    subset = subset_for_key(plan, key)
    features, fill = load_features(cfg)
    if cfg.training.device == "cpu":  # on a GPU the matrix lives in device memory
        figures = check_instance_memory(subset["n_rows"], subset["n_genes"], len(features),
                                        label=f"instance {key}")
        log(f"memory guard: needs ≈ {figures['estimated_peak_bytes'] / 2**30:.2f} GiB of "
            f"{figures['available_bytes'] / 2**30:.2f} GiB available")
    ds = open_dataset(plan["dataset"])
    return train_instance(ds, subset["genes"], features, fill, cfg.training, cfg.instance_dir(key), key, log)


def instance_manifest(cfg: PlatformConfig, key: str) -> dict[str, Any] | None:
    f = cfg.instance_dir(key) / "manifest.json"
    return read_json(f) if f.is_file() else None


def run_consolidation(cfg: PlatformConfig, materialized: Iterable[str] | None = None,
                      allow_partial: bool = False, log: Log = _quiet) -> dict[str, Any]:
    """Consolidate every instance of the current plan. ``materialized``: the partition keys the
    orchestrator reports as materialized (None: trust the files)."""
    from .model import consolidate

    plan = load_plan(cfg)
    keys = [s["key"] for s in plan["subsets"]]
    done = set(materialized) if materialized is not None else set(keys)
    present = [k for k in keys if k in done and (cfg.instance_dir(k) / "manifest.json").is_file()]
    missing = [k for k in keys if k not in present]
    covered = set().union(*[set(s["genes"]) for s in plan["subsets"] if s["key"] in present]) if present else set()
    coverage = len(covered) / max(plan["n_training_genes"], 1)
    if missing and not allow_partial:
        raise CoverageError(
            f"gene coverage is {coverage:.1%}: {len(missing)} of {len(keys)} instance_model partitions are not "
            f"materialized: {', '.join(missing)}. Materialize them (or backfill failed partitions), "
            "or allow a partial ensemble explicitly.")
    if not present:
        raise CoverageError("no instance_model partition of the current plan is materialized")
    manifest = consolidate({k: cfg.instance_dir(k) for k in present}, paths(cfg)["consolidated"],
                           plan["holdout_genes"],
                           extra={"gene_coverage": coverage, "missing_partitions": missing,
                                  "plan_strategy": plan["strategy"], "dataset": plan["dataset"]})
    log(f"consolidated {len(present)} instance(s), gene coverage {coverage:.1%}")
    return manifest


__all__ = ["CoverageError", "DatasetError", "ensure_dataset", "run_inventory", "run_screening", "run_plan",
           "run_instance", "run_consolidation", "load_plan", "paths", "instance_manifest"]
