import numpy as np
import pyarrow as pa
import pytest

from ensemble_assets.cli import build_config, parser
from ensemble_assets.core.config import DEMO_GENES_PER_INSTANCE
from ensemble_assets.core.planning.plan import PlanError, PlanSettings, describe_holdout, make_plan, subset_key


def inventory(n_genes: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = rng.integers(10, 60, n_genes)
    donors = rng.integers(0, 5, n_genes)
    return pa.table({"gene_id": [f"G{i:05d}" for i in range(n_genes)], "n_rows": rows,
                     "n_donor": donors, "n_acceptor": donors})


BIG = dict(memory_budget_bytes=8 * 2**30)


def test_plan_covers_every_training_gene_and_no_holdout_gene():
    plan = make_plan(inventory(1000), 100, PlanSettings(genes_per_instance=150, instance_overlap=0.2, **BIG))
    assert plan["strategy"] == "multi" and len(plan["subsets"]) > 1
    covered = set().union(*[set(s["genes"]) for s in plan["subsets"]])
    held = set(plan["holdout_genes"])
    assert len(held) == 100
    assert covered | held == {f"G{i:05d}" for i in range(1000)}
    assert not covered & held
    assert plan["coverage"] == 1.0
    for s in plan["subsets"]:
        assert s["n_genes"] <= 150


def test_overlap_fraction_is_respected():
    plan = make_plan(inventory(2000), 100, PlanSettings(genes_per_instance=400, instance_overlap=0.1, **BIG))
    sizes = [s["n_genes"] for s in plan["subsets"]]
    total = sum(sizes)
    assert total == pytest.approx(plan["n_training_genes"] / 0.9, rel=0.02)


def test_single_instance_when_it_fits():
    plan = make_plan(inventory(50), 100, PlanSettings(genes_per_instance=1500, **BIG))
    assert plan["strategy"] == "single"
    assert len(plan["subsets"]) == 1 and plan["subsets"][0]["n_genes"] == 45


def test_plan_is_deterministic_and_keys_are_stable():
    s = PlanSettings(genes_per_instance=120, **BIG)
    a = make_plan(inventory(600), 100, s, "sig")
    b = make_plan(inventory(600), 100, s, "sig")
    assert a == b
    assert [x["key"] for x in a["subsets"]] == [x["key"] for x in b["subsets"]]
    assert all(x["key"].startswith(f"s{x['index']:02d}-") and len(x["key"]) == 12 for x in a["subsets"])


def test_changing_one_subset_changes_only_its_key():
    genes = [[f"G{i:03d}" for i in range(k * 10, k * 10 + 10)] for k in range(4)]
    keys = [subset_key(i, g) for i, g in enumerate(genes)]
    genes[2] = genes[2][:-1] + ["OTHER"]
    keys2 = [subset_key(i, g) for i, g in enumerate(genes)]
    assert [k1 == k2 for k1, k2 in zip(keys, keys2)] == [True, True, False, True]
    assert subset_key(0, ["b", "a"]) == subset_key(0, ["a", "b"])  # order-free
    assert subset_key(0, ["a", "b"], "sig1") != subset_key(0, ["a", "b"], "sig2")


def test_max_instances_enforced_and_memory_sizing():
    plan = make_plan(inventory(1000), 100, PlanSettings(genes_per_instance=100, max_instances=3, **BIG))
    assert len(plan["subsets"]) == 3
    assert set().union(*[set(s["genes"]) for s in plan["subsets"]]) | set(plan["holdout_genes"]) == \
        {f"G{i:05d}" for i in range(1000)}
    # a budget that fits ~40 genes lowers genes_per_instance and says so
    tight = int(0.5 * 2**30 + 40 * 1.3 * 35 * (100 * 2.15 + 64))
    plan = make_plan(inventory(400), 100, PlanSettings(genes_per_instance=300, max_instances=50, memory_budget_bytes=tight))
    assert plan["genes_per_instance"] < 300 and "memory" in plan["sizing_note"]
    assert max(s["n_genes"] for s in plan["subsets"]) <= plan["genes_per_instance"]


@pytest.mark.parametrize("kw, msg", [
    (dict(instance_overlap=0.7), "instance_overlap=0.7"),
    (dict(holdout_fraction=0.99), "leaves"),
    (dict(genes_per_instance=30, max_instances=1, memory_budget_bytes=int(0.5 * 2**30 + 3e5)), "max_instances"),
])
def test_bad_settings_are_rejected_with_the_number(kw, msg):
    kw = {"memory_budget_bytes": 8 * 2**30, **kw}
    with pytest.raises(PlanError, match=msg):
        make_plan(inventory(100), 100, PlanSettings(**kw))


def with_chromosomes(inv: pa.Table, n_chrom: int = 4) -> pa.Table:
    chrom = [f"chr{i % n_chrom + 1}" for i in range(inv.num_rows)]
    return inv.append_column("chrom", pa.array(chrom)).append_column("n_chroms", pa.array([1] * inv.num_rows))


def test_holdout_chromosomes_hold_out_exactly_their_genes_and_train_on_the_others():
    inv = with_chromosomes(inventory(400))
    chrom_of = dict(zip(inv.column("gene_id").to_pylist(), inv.column("chrom").to_pylist()))
    plan = make_plan(inv, 100, PlanSettings(genes_per_instance=60, holdout_chromosomes=("chr2", "chr4"), **BIG))
    assert plan["holdout_genes"] == sorted(g for g, c in chrom_of.items() if c in ("chr2", "chr4"))
    trained = set().union(*[set(s["genes"]) for s in plan["subsets"]])
    assert trained == {g for g, c in chrom_of.items() if c in ("chr1", "chr3")}   # every other gene, no holdout gene
    assert plan["holdout"]["by"] == "chromosomes" and plan["holdout"]["chromosomes"] == ["chr2", "chr4"]
    assert describe_holdout(plan) == "chromosomes chr2, chr4 (200 genes: every gene on them)"
    # the fraction is replaced, not added
    assert make_plan(inv, 100, PlanSettings(genes_per_instance=60, holdout_chromosomes=("chr2",), holdout_fraction=0.5,
                                            **BIG))["holdout_genes"] == sorted(g for g, c in chrom_of.items() if c == "chr2")
    random = make_plan(inv, 100, PlanSettings(genes_per_instance=60, **BIG))
    assert random["holdout"]["by"] == "genes" and describe_holdout(random).startswith("40 random genes")


@pytest.mark.parametrize("settings, inv, msg", [
    (dict(holdout_chromosomes=("chr9", "chrX", "chr1")), with_chromosomes(inventory(100)),
     r"unknown chromosome\(s\) chr9, chrX; the dataset's chromosomes are chr1, chr2, chr3, chr4"),
    (dict(holdout_chromosomes=("chr1",)), inventory(100), "no 'chrom' column"),
    (dict(holdout_chromosomes=("chr1",), train_all_genes=True), with_chromosomes(inventory(100)), "contradict"),
    (dict(holdout_chromosomes=("chr1", "chr1")), with_chromosomes(inventory(100)), "twice"),
    (dict(holdout_chromosomes=("chr1",)), with_chromosomes(inventory(100), n_chrom=1), "leaves 0 training gene"),
])
def test_bad_chromosome_holdouts_are_refused_naming_what_is_wrong(settings, inv, msg):
    with pytest.raises(PlanError, match=msg):
        make_plan(inv, 100, PlanSettings(genes_per_instance=30, **settings, **BIG))


def test_a_chromosome_holdout_refuses_genes_without_or_with_several_chromosomes():
    inv = with_chromosomes(inventory(100))
    split = inv.set_column(inv.schema.get_field_index("n_chroms"), "n_chroms", pa.array([2] + [1] * 99))
    with pytest.raises(PlanError, match="several chromosomes, e.g. G00000"):
        make_plan(split, 100, PlanSettings(genes_per_instance=30, holdout_chromosomes=("chr2",), **BIG))
    nameless = inv.set_column(inv.schema.get_field_index("chrom"), "chrom",
                              pa.array([None] + inv.column("chrom").to_pylist()[1:], pa.string()))
    with pytest.raises(PlanError, match="1 gene.*no 'chrom' value, e.g. G00000"):
        make_plan(nameless, 100, PlanSettings(genes_per_instance=30, holdout_chromosomes=("chr2",), **BIG))


def _without_sizing(plan: dict) -> dict:
    """The plan less the budget figures (and the settings, whose budgets differ here on purpose)."""
    return {k: v for k, v in plan.items() if k not in ("memory_budget_bytes", "genes_fitting_memory", "settings")}


def test_default_is_one_instance_of_every_training_gene_when_they_fit():
    a = make_plan(inventory(2000), 100, PlanSettings(**BIG))
    assert PlanSettings().genes_per_instance is None
    assert a["strategy"] == "single" and len(a["subsets"]) == 1
    assert a["subsets"][0]["n_genes"] == a["n_training_genes"] == 1800 == a["genes_per_instance"]
    # the plan does not move with the memory free at planning time, as long as the genes fit
    b = make_plan(inventory(2000), 100, PlanSettings(memory_budget_bytes=3 * 2**30))
    assert _without_sizing(a) == _without_sizing(b)


def test_default_splits_only_where_memory_requires_and_an_explicit_value_wins():
    per_gene = 1.3 * 35 * (100 * 2.15 + 64)   # inventory rows average ~35
    budget = lambda genes: int(0.5 * 2**30 + genes * per_gene)
    a = make_plan(inventory(400), 100, PlanSettings(memory_budget_bytes=budget(150)))
    assert a["strategy"] == "multi" and len(a["subsets"]) == 3
    assert all(s["n_genes"] <= a["genes_fitting_memory"] for s in a["subsets"])
    assert a["genes_per_instance"] == max(s["n_genes"] for s in a["subsets"])
    assert "do not fit one instance's memory budget" in a["sizing_note"]
    # a slightly different budget that needs as many instances gives the same subsets and plan
    b = make_plan(inventory(400), 100, PlanSettings(memory_budget_bytes=budget(155)))
    assert _without_sizing(a) == _without_sizing(b)
    explicit = make_plan(inventory(400), 100, PlanSettings(genes_per_instance=50, memory_budget_bytes=budget(150)))
    assert len(explicit["subsets"]) == 8 and explicit["genes_per_instance"] == 50


def test_cli_sizes_instances_by_memory_for_a_dataset_and_keeps_the_demo_small(tmp_path):
    train = lambda *a: build_config(parser().parse_args(["train", "--data-root", str(tmp_path), *a]))
    cfg = train("--dataset", str(tmp_path))
    assert cfg.plan.genes_per_instance is None
    # None survives the run config, which the runs (and the plan that records it) carry
    from ensemble_assets.defs.resources import EnsembleResource
    assert EnsembleResource.for_config(cfg).config().plan.genes_per_instance is None
    assert train().plan.genes_per_instance == DEMO_GENES_PER_INSTANCE
    assert train("--dataset", str(tmp_path), "--genes-per-instance", "3600").plan.genes_per_instance == 3600


def test_cli_kmer_sizes_none_given_default_and_empty(tmp_path):
    train = lambda *a: build_config(parser().parse_args(["train", "--data-root", str(tmp_path), *a]))
    assert train().screening.kmer_sizes is None                       # the default: sizes up to 3
    assert train("--kmer-sizes", "3", "5").screening.kmer_sizes == (3, 5)
    assert train("--kmer-sizes").screening.kmer_sizes == ()           # the flag alone: no k-mers
