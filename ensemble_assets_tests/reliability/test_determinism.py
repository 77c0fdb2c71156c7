"""Determinism: the same dataset, configuration and seed give byte-identical plans and identical
models and predictions; XGBoost's thread count and the streaming batch size do not matter.

What could vary, and how it is controlled (README, "Reliability and security"):
- row order: DuckDB streams single-threaded with insertion order kept, and the XGBoost data
  iterator refuses a pass whose rows come in another order;
- XGBoost ``hist`` on CPU: seeded (``seed``, column sampling), no run-to-run or thread-count
  variation found (below: 1 thread with 512-row batches vs 2 threads with 100-row batches give
  byte-identical boosters; also seen on 200k rows × 8 features, 1 vs 2 threads, 512 vs 32,768);
- the memory budget measured from psutil: kept in ``training_plan_sizing.json`` beside the plan,
  so the plan file itself depends only on the data, the settings and the seed;
- timings and peak RSS in instance manifests: reported, never part of a model's identity;
- feature screening's means (the fill values) and label correlations, which enter the partition
  keys: DuckDB adds partial aggregates of parallel threads in any order, so they are made from
  exact integer sums (``core/data/exact_stats.py``) — below, on 60 files scanned by 2 and 4
  threads and on the same rows in another order and other row groups, bit-identical.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble_assets.core import artifacts
from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.screening import feature_columns, screen_features
from ensemble_assets.core.io import read_json, sha256_file
from ensemble_assets.core.model.ensemble import load_model
from ensemble_assets.core.training.loop import train_instance
from ensemble_assets_tests.conftest import FAST_TRAINING

from .harness import case_config, dataset_rows, run_graph


def test_same_dataset_settings_and_seed_give_byte_identical_plans(tiny_dataset, tmp_path):
    a = case_config(tmp_path / "a", tiny_dataset, plan={"genes_per_instance": 16})
    b = case_config(tmp_path / "b", tiny_dataset, plan={"genes_per_instance": 16})
    assert run_graph(a, until="training_plan") == (None, None)
    assert run_graph(b, until="training_plan") == (None, None)
    for name in ("gene_inventory.parquet", "feature_manifest.parquet", "training_plan.json", "training_plan.parquet"):
        assert (tmp_path / "a" / "artifacts" / name).read_bytes() == (tmp_path / "b" / "artifacts" / name).read_bytes(), name
    plan = read_json(tmp_path / "a" / "artifacts" / "training_plan.json")
    assert "memory_budget_bytes" not in plan and len(plan["subsets"]) >= 3
    assert read_json(tmp_path / "a" / "artifacts" / "training_plan_sizing.json")["memory_budget_bytes"] > 0
    assert artifacts.load_plan(a)["memory_budget_bytes"] > 0   # still there for whoever reads the plan
    c = case_config(tmp_path / "c", tiny_dataset, plan={"genes_per_instance": 16, "seed": 7})
    assert run_graph(c, until="training_plan") == (None, None)
    assert [s["genes"] for s in artifacts.load_plan(c)["subsets"]] != [s["genes"] for s in plan["subsets"]]


def test_same_settings_give_identical_models_whatever_the_threads_and_batches(tiny_dataset, tmp_path):
    ds = open_dataset(tiny_dataset)
    inv, _ = build_gene_inventory(ds, threads=1)
    genes = inv.column("gene_id").to_pylist()[:30]
    features, fill = feature_columns(screen_features(ds, inv.column("gene_id").to_pylist()))
    runs = {
        "1 thread, 512-row batches": replace(FAST_TRAINING, nthread=1, batch_rows=512),
        "2 threads, 100-row batches": replace(FAST_TRAINING, nthread=2, batch_rows=100),
        "another seed": replace(FAST_TRAINING, nthread=1, batch_rows=512, seed=43),
    }
    digests, preds = {}, {}
    rows = dataset_rows(tiny_dataset, 800)
    for name, settings in runs.items():
        out = tmp_path / name.replace(" ", "_").replace(",", "")
        train_instance(ds, genes, features, fill, settings, out, "s00")
        digests[name] = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.name != "manifest.json"}
        preds[name] = load_model(out).predict_proba(rows)
        oof = pq.read_table(out / "oof_predictions.parquet")
        assert oof.num_rows > 0
    same = [n for n in runs if n != "another seed"]
    for name in same[1:]:
        assert digests[name] == digests[same[0]], name
        assert np.array_equal(preds[name], preds[same[0]]), name
    # the comparison can tell models apart: the seed does change them
    assert digests["another seed"]["booster_donor.ubj"] != digests[same[0]]["booster_donor.ubj"]
    assert not np.array_equal(preds["another seed"], preds[same[0]])


def test_screening_statistics_are_bit_identical_whatever_the_threads_and_the_row_order(parallel_dataset, tmp_path):
    ds = open_dataset(parallel_dataset)
    assert len(ds.files) >= 30   # many row groups: DuckDB combines per-thread partial aggregates
    genes = build_gene_inventory(ds, threads=2)[0].column("gene_id").to_pylist()
    runs = [screen_features(ds, genes, threads=t) for t in (2, 2, 4, 4)]
    # the same rows in one file, in reverse order, in row groups of 500 rows
    reordered = tmp_path / "reordered"
    reordered.mkdir()
    shutil.copy(parallel_dataset / "dataset.json", reordered / "dataset.json")   # the same declaration
    table = pa.concat_tables([pq.read_table(f) for f in ds.files], promote_options="default")
    pq.write_table(table.take(np.arange(table.num_rows)[::-1]), reordered / "all.parquet", row_group_size=500)
    runs.append(screen_features(open_dataset(reordered), genes, threads=4))
    ref = runs[0].to_pydict()
    for other in runs[1:]:
        other = other.to_pydict()
        for stat in ("fill_value", "mean", "label_corr", "min", "max", "non_null", "is_feature", "reason"):
            assert other[stat] == ref[stat], stat   # == on floats: the same bits
    features, fill = feature_columns(runs[0])
    assert len(features) > 20 and sum(v != 0.0 for v in fill.values()) > 10
    # and they are the means: the exact mean of the values, to 2^-62 of their largest magnitude
    # (the fixed-point step) and half a unit in the last place (the one rounding to float)
    for name in ("donor_score", "acceptor_score"):
        v = table.column(name).to_numpy(zero_copy_only=False)
        v = v[np.isfinite(v)]
        exact = Fraction(sum(Fraction(x) for x in v.tolist()), len(v))
        tolerance = Fraction(float(np.abs(v).max())) * Fraction(2) ** -62 + Fraction(math.ulp(fill[name])) / 2
        assert abs(Fraction(fill[name]) - exact) <= tolerance, name
