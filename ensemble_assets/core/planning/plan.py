"""The training plan: memory sizing, holdout genes and overlapping, content-addressed gene subsets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ensemble_assets.core.io import sha256_text

GIB = 1024 ** 3
# measured with XGBoost 3.4 (docs/benchmarks.md): a streamed QuantileDMatrix, 256 bins, no NaN
BYTES_PER_CELL = 2.15
# per row beside the matrix: label, weight, gene index, base scores, out-of-fold predictions
BYTES_PER_ROW_OVERHEAD = 64


class PlanError(ValueError):
    """A plan that cannot be made from these settings; the message says which number is at fault."""


@dataclass(frozen=True)
class PlanSettings:
    # None (the default): as many genes as fit one instance's memory budget — on a dataset that
    # fits, one instance of every training gene. On validation genes of atha_chr1 larger instances
    # scored higher (1 > 2 > 4 instances; docs/results.md#why-the-defaults-are-what-they-are), so
    # the default splits the genes only where memory requires it. An explicit value wins (it is
    # still lowered to what fits).
    genes_per_instance: int | None = None
    instance_overlap: float = 0.1
    max_instances: int = 10
    holdout_fraction: float = 0.1
    # hold out every gene of these chromosomes instead of a random holdout_fraction of the genes
    holdout_chromosomes: tuple[str, ...] = ()
    train_all_genes: bool = False
    sample_genes: int | None = None        # whole genes, seeded; None = all
    seed: int = 42
    memory_fraction: float = 0.6           # of psutil's available memory
    memory_budget_bytes: int | None = None  # overrides memory_fraction × available

    def validate(self) -> None:
        if not 0.0 <= self.instance_overlap <= 0.5:
            raise PlanError(f"instance_overlap={self.instance_overlap} is outside [0, 0.5]")
        if self.genes_per_instance is not None and self.genes_per_instance < 2:
            raise PlanError(f"genes_per_instance={self.genes_per_instance} must be at least 2")
        if self.max_instances < 1:
            raise PlanError(f"max_instances={self.max_instances} must be at least 1")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise PlanError(f"holdout_fraction={self.holdout_fraction} is outside [0, 1)")
        if self.sample_genes is not None and self.sample_genes < 2:
            raise PlanError(f"sample_genes={self.sample_genes} must be at least 2")
        chroms = self.holdout_chromosomes
        if not isinstance(chroms, tuple) or not all(isinstance(c, str) and c.strip() for c in chroms):
            raise PlanError(f"holdout_chromosomes={chroms!r} must be chromosome names (non-empty strings)")
        if len(set(chroms)) != len(chroms):
            raise PlanError(f"holdout_chromosomes={list(chroms)} names a chromosome twice")
        if chroms and self.train_all_genes:
            raise PlanError(f"holdout_chromosomes={list(chroms)} and train_all_genes contradict each other: "
                            "choose one")


def subset_key(index: int, genes: list[str], model_signature: str = "") -> str:
    """Content-addressed partition key: ``s<index>-<8 hex>`` of the sorted gene list and the
    model signature (features and training settings), so a key names exactly one model."""
    return f"s{index:02d}-{sha256_text(chr(10).join(sorted(genes)) + chr(10) + '#' + model_signature)[:8]}"


def matrix_bytes(rows: int, n_features: int) -> int:
    """Estimated size of the instance's quantized matrix plus its per-row side arrays."""
    return int(rows * (n_features * BYTES_PER_CELL + BYTES_PER_ROW_OVERHEAD))


def instance_memory_bytes(rows: int, n_features: int) -> int:
    """Peak-RSS budget of one instance (docs/benchmarks.md): 1.3 × matrix + 0.5 GB."""
    return int(1.3 * matrix_bytes(rows, n_features) + 0.5 * GIB)


def available_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def genes_fitting_memory(budget_bytes: float, rows_per_gene: float, n_features: int) -> int:
    """How many genes of ``rows_per_gene`` rows fit one instance's peak-RSS budget (docs/benchmarks.md)."""
    per_gene = 1.3 * rows_per_gene * (n_features * BYTES_PER_CELL + BYTES_PER_ROW_OVERHEAD)
    return int((budget_bytes - 0.5 * GIB) // per_gene) if budget_bytes > 0.5 * GIB and per_gene > 0 else 0


class MemoryGuardError(PlanError):
    """An instance would not fit the memory available now; the message says what would."""


def check_instance_memory(n_rows: int, n_genes: int, n_features: int, available_bytes: int | None = None,
                          label: str = "this instance") -> dict[str, Any]:
    """The memory guard, run before an instance loads any data: its estimated peak RSS
    (1.3 × the quantized matrix, from the measured bytes per cell, + 0.5 GB) must fit the memory
    available now (psutil), or it fails fast — with how many genes per instance would fit —
    instead of being OOM-killed halfway. Returns the figures it compared."""
    available = available_memory_bytes() if available_bytes is None else int(available_bytes)
    need = instance_memory_bytes(n_rows, n_features)
    rows_per_gene = n_rows / max(n_genes, 1)
    fit = genes_fitting_memory(available, rows_per_gene, n_features)
    figures = {"estimated_matrix_bytes": matrix_bytes(n_rows, n_features), "estimated_peak_bytes": need,
               "available_bytes": available, "genes_fitting": fit}
    if need > available:
        advice = (f"about {fit} genes per instance would fit: re-plan with genes_per_instance={fit} "
                  "(--genes-per-instance), or free memory" if fit >= 2 else
                  "not even 2 genes per instance would fit: free memory first")
        raise MemoryGuardError(
            f"{label} would need ≈ {need / GIB:.2f} GiB (quantized matrix ≈ {figures['estimated_matrix_bytes'] / GIB:.2f} "
            f"GiB for {n_rows:,} rows of {n_genes:,} genes × {n_features} features, ×1.3 + 0.5 GiB) but only "
            f"{available / GIB:.2f} GiB is available; {advice}. Nothing was loaded.")
    return figures


def make_plan(inventory: pa.Table, n_features: int, settings: PlanSettings = PlanSettings(),
              model_signature: str = "", min_genes_per_instance: int = 2) -> dict[str, Any]:
    """Deterministic plan from the gene inventory: same inventory, settings and memory budget →
    same plan. ``min_genes_per_instance``: the fewest genes an instance can be trained on (its
    number of gene folds); a plan with a smaller subset is refused here, before any training."""
    settings.validate()
    min_genes = max(2, int(min_genes_per_instance))
    inv = inventory.select(["gene_id", "n_rows", "n_donor", "n_acceptor"]).to_pydict()
    order = np.argsort(np.asarray(inv["gene_id"], dtype=object))
    genes = [inv["gene_id"][i] for i in order]
    rows = {inv["gene_id"][i]: int(inv["n_rows"][i]) for i in order}
    has_site = {inv["gene_id"][i]: (inv["n_donor"][i] + inv["n_acceptor"][i]) > 0 for i in order}
    if len(genes) < 2:
        raise PlanError(f"the dataset has {len(genes)} gene(s); at least 2 are needed")
    rng = np.random.default_rng(settings.seed)
    if settings.sample_genes is not None and settings.sample_genes < len(genes):
        genes = sorted(rng.choice(np.asarray(genes, dtype=object), settings.sample_genes, replace=False).tolist())

    holdout: list[str] = []
    if settings.holdout_chromosomes:  # every gene of the named chromosomes
        holdout = chromosome_holdout(inventory, genes, settings.holdout_chromosomes)
    elif not settings.train_all_genes and settings.holdout_fraction > 0:
        # the same fraction of genes with and without sites, seeded
        for stratum in (True, False):
            members = [g for g in genes if has_site[g] == stratum]
            n = int(round(len(members) * settings.holdout_fraction))
            if n:
                holdout += rng.permutation(np.asarray(members, dtype=object))[:n].tolist()
    holdout = sorted(holdout)
    held = set(holdout)
    train = [g for g in genes if g not in held]
    holdout_info = describe_holdout_settings(settings, len(holdout))
    if len(train) < min_genes:
        setting = (f"holdout_chromosomes={list(settings.holdout_chromosomes)}" if settings.holdout_chromosomes
                   else f"holdout_fraction={settings.holdout_fraction}")
        raise PlanError(
            f"{setting} leaves {len(train)} training gene(s) of {len(genes)} ({len(holdout)} holdout); "
            f"at least {min_genes} are needed (one per gene fold)")

    total_rows = sum(rows[g] for g in train)
    rows_per_gene = total_rows / len(train)
    budget = settings.memory_budget_bytes or int(available_memory_bytes() * settings.memory_fraction)
    fit = genes_fitting_memory(budget, rows_per_gene, n_features)
    if fit < 2:
        raise PlanError(
            f"memory budget {budget / GIB:.2f} GiB fits {fit} gene(s) per instance "
            f"({rows_per_gene:.0f} rows/gene × {n_features} features); free memory or sample genes")
    memory_sized = settings.genes_per_instance is None
    gpi = fit if memory_sized else min(settings.genes_per_instance, fit)
    sizing_note = "" if memory_sized or gpi == settings.genes_per_instance else (
        f"genes_per_instance lowered from {settings.genes_per_instance} to {gpi} to fit the memory budget")

    if len(train) <= gpi:
        strategy, cores, overlap = "single", [list(train)], 0.0
    else:
        strategy, overlap = "multi", settings.instance_overlap
        core = max(1, int(math.floor(gpi * (1 - overlap))))
        n_inst = math.ceil(len(train) / core)
        if n_inst > settings.max_instances:
            n_inst = settings.max_instances
            need = math.ceil(math.ceil(len(train) / n_inst) / (1 - overlap))
            if need > fit:
                raise PlanError(
                    f"{len(train)} training genes need instances of {need} genes with max_instances="
                    f"{settings.max_instances}, but only {fit} genes fit in memory; raise max_instances "
                    f"to {math.ceil(len(train) / math.floor(fit * (1 - overlap)))} or sample genes")
            gpi = need
            sizing_note = (sizing_note + "; " if sizing_note else "") + (
                f"genes_per_instance raised to {gpi} by max_instances={settings.max_instances}")
        shuffled = rng.permutation(np.asarray(train, dtype=object)).tolist()
        cores = [c.tolist() for c in np.array_split(np.asarray(shuffled, dtype=object), n_inst)]
        if memory_sized:
            # the subsets depend on the number of instances only; the note leaves out the
            # budget's figure, which moves with the memory free at planning time
            sizing_note = (f"{n_inst} instances: the {len(train)} training genes do not fit one "
                           "instance's memory budget") + ("; " + sizing_note if sizing_note else "")

    subsets = []
    for i, core_genes in enumerate(cores):
        extra: list[str] = []
        if strategy == "multi" and overlap > 0:
            n_extra = min(int(round(len(core_genes) * overlap / (1 - overlap))), len(train) - len(core_genes))
            following = [g for c in cores[i + 1:] + cores[:i] for g in c]
            extra = following[:n_extra]
        members = sorted(core_genes + extra)
        n_rows = sum(rows[g] for g in members)
        subsets.append({
            "key": subset_key(i, members, model_signature), "index": i, "genes": members, "n_genes": len(members),
            "n_rows": n_rows, "estimated_matrix_bytes": matrix_bytes(n_rows, n_features),
            "estimated_peak_bytes": instance_memory_bytes(n_rows, n_features),
        })
    small = [s for s in subsets if s["n_genes"] < min_genes]
    if small:
        raise PlanError(
            f"{len(subsets)} instances of {len(train)} training genes leave {len(small)} instance(s) with fewer "
            f"genes than the {min_genes} gene folds they need (e.g. {small[0]['key']}: {small[0]['n_genes']} "
            f"gene(s)); raise genes_per_instance (now {gpi}) or lower n_folds")
    siteless = [s["key"] for s in subsets if not any(has_site[g] for g in s["genes"])]
    if siteless:
        raise PlanError(f"{len(siteless)} instance(s) would train on genes without a single donor or acceptor "
                        f"row: {', '.join(siteless[:10])}; raise genes_per_instance")
    if memory_sized:  # the size the subsets got (fit itself moves with the memory free now)
        gpi = max(s["n_genes"] for s in subsets)
    covered = set().union(*[s["genes"] for s in subsets])
    assert covered == set(train), "plan does not cover every training gene"  # invariant, not input
    return {
        "strategy": strategy,
        "settings": asdict(settings),
        "model_signature": model_signature,
        "n_features": n_features,
        "n_genes": len(genes),
        "n_training_genes": len(train),
        "holdout_genes": holdout,
        "holdout": holdout_info,
        "genes_per_instance": gpi,
        "instance_overlap": overlap,
        "rows_per_gene": round(rows_per_gene, 2),
        "memory_budget_bytes": budget,
        "genes_fitting_memory": fit,
        "sizing_note": sizing_note,
        "coverage": len(covered) / len(train),
        "subsets": subsets,
    }


def chromosome_holdout(inventory: pa.Table, genes: list[str], chromosomes: tuple[str, ...]) -> list[str]:
    """The genes (of ``genes``) on ``chromosomes``, from the inventory's ``chrom``. Refused, naming
    what is at fault: no ``chrom`` column, unknown chromosome names (listing the known ones), genes
    without a chromosome or with rows on several."""
    names = inventory.schema.names
    if "chrom" not in names:
        raise PlanError(f"holdout_chromosomes={list(chromosomes)}: the dataset has no 'chrom' column, so its "
                        "genes' chromosomes are unknown; use holdout_fraction instead")
    inv = inventory.to_pydict()
    chrom_of = dict(zip(inv["gene_id"], inv["chrom"]))
    known = sorted({c for c in inv["chrom"] if c is not None})
    unknown = [c for c in chromosomes if c not in known]
    if unknown:
        raise PlanError(f"holdout_chromosomes: unknown chromosome(s) {', '.join(unknown)}; the dataset's "
                        f"chromosomes are {', '.join(known[:50])}" + (" …" if len(known) > 50 else ""))
    nameless = sorted(g for g in genes if chrom_of.get(g) is None)
    if nameless:
        raise PlanError(f"holdout_chromosomes: {len(nameless)} gene(s) have no 'chrom' value, e.g. "
                        f"{', '.join(nameless[:5])}; every gene's chromosome must be known to hold chromosomes out")
    if "n_chroms" in names:
        n_chroms = dict(zip(inv["gene_id"], inv["n_chroms"]))
        split = sorted(g for g in genes if (n_chroms.get(g) or 0) > 1)
        if split:
            raise PlanError(f"holdout_chromosomes: {len(split)} gene(s) have rows on several chromosomes, e.g. "
                            f"{', '.join(split[:5])}; a gene must lie on one chromosome to be held out with it")
    wanted = set(chromosomes)
    return [g for g in genes if chrom_of[g] in wanted]


def describe_holdout_settings(settings: PlanSettings, n_holdout: int) -> dict[str, Any]:
    """What is held out, for the plan and every report: ``by`` (chromosomes | genes | none),
    ``chromosomes`` and a one-line ``description``."""
    if settings.holdout_chromosomes:
        chroms = list(settings.holdout_chromosomes)
        every = "every sampled gene" if settings.sample_genes is not None else "every gene"
        return {"by": "chromosomes", "chromosomes": chroms,
                "description": f"chromosome{'s' if len(chroms) > 1 else ''} {', '.join(chroms)} "
                               f"({n_holdout} genes: {every} on {'them' if len(chroms) > 1 else 'it'})"}
    if n_holdout:
        return {"by": "genes", "chromosomes": [],
                "description": f"{n_holdout} random genes (holdout_fraction={settings.holdout_fraction}, "
                               f"seed {settings.seed})"}
    return {"by": "none", "chromosomes": [], "description": "nothing (train_all_genes or holdout_fraction=0)"}


def describe_holdout(plan: dict[str, Any]) -> str:
    """What the plan holds out, in one line (plans written before chromosome holdouts: genes)."""
    if "holdout" in plan:
        return plan["holdout"]["description"]
    n = len(plan.get("holdout_genes", []))
    return f"{n} random genes" if n else "nothing (train_all_genes or holdout_fraction=0)"


def plan_table(plan: dict[str, Any]) -> pa.Table:
    """Long table (partition_key, gene_id, role) of the plan: role = train | holdout."""
    keys, genes, roles = [], [], []
    for s in plan["subsets"]:
        keys += [s["key"]] * len(s["genes"])
        genes += s["genes"]
        roles += ["train"] * len(s["genes"])
    keys += [""] * len(plan["holdout_genes"])
    genes += plan["holdout_genes"]
    roles += ["holdout"] * len(plan["holdout_genes"])
    return pa.table({"partition_key": keys, "gene_id": genes, "role": roles})


def subset_for_key(plan: dict[str, Any], key: str) -> dict[str, Any]:
    for s in plan["subsets"]:
        if s["key"] == key:
            return s
    raise PlanError(f"partition {key!r} is not in the current training plan "
                    f"(keys: {', '.join(s['key'] for s in plan['subsets'])})")
