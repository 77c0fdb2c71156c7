"""Bad input through Dagster itself: hostile gene ids train end to end; representative bad inputs
fail at the earliest asset, with the message in the run's failure, no new materialization of that
asset or any later one, and every earlier artifact and model intact."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from ensemble_assets import cli
from ensemble_assets.core import artifacts
from ensemble_assets.core.artifacts import planned_config
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.model.ensemble import load_model
from ensemble_assets.defs.dataset.assets import feature_screening, gene_inventory
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.planning.assets import training_plan
from ensemble_assets.defs.training.assets import instance_model
from ensemble_assets.defs.training.retraining import partitions_to_train
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import train_graph

from . import faults as F
from .harness import assert_intact, case_config, dataset_rows, model_predictions

PLAN = [gene_inventory, feature_screening, training_plan]
ALL = [*PLAN, instance_model, consolidated_model]

HOSTILE = F.HOSTILE_GENE_IDS




@pytest.fixture(scope="module")
def hostile(tiny_dataset, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    genes = sorted({g for f in F.master_files(tiny_dataset) for g in pq.read_table(f, columns=["gene_id"]).column(0).to_pylist()})
    mapping = dict(zip(genes, HOSTILE))
    data = F.derive(tiny_dataset, base / "data", lambda i, t: F.rename_genes(t, mapping))
    root = base / "root"
    cfg = case_config(root, data)
    with dg.instance_for_test() as instance:
        keys = train_graph(cfg, instance)
        rows = dataset_rows(data)
        yield {"instance": instance, "root": root, "data": data, "keys": keys, "mapping": mapping,
               "rows": rows, "predictions": model_predictions(root, rows)}


def test_hostile_gene_ids_train_end_to_end_and_never_become_paths(hostile):
    root, mapping, keys = hostile["root"], hostile["mapping"], hostile["keys"]
    cfg = planned_config(PlatformConfig(data_root=str(root)))
    inventory_ids = set(pq.read_table(artifacts.paths(cfg)["inventory"]).column("gene_id").to_pylist())
    assert set(HOSTILE) <= inventory_ids and len(inventory_ids) == 48  # every id kept exactly, none merged
    plan = artifacts.load_plan(cfg)
    planned = set(plan["holdout_genes"]).union(*[set(s["genes"]) for s in plan["subsets"]])
    assert planned == inventory_ids
    assert all(re.fullmatch(r"s\d\d-[0-9a-f]{8}", k) for k in keys)       # partition keys are hashes
    trained = set()
    for k in keys:
        trained |= set(pq.read_table(cfg.instance_dir(k) / "folds.parquet").column("gene_id").to_pylist())
    assert trained == planned - set(plan["holdout_genes"]) and set(HOSTILE) & trained
    # no gene id (nor any piece of one between slashes) is a file or directory name, in the data
    # root or above it
    components = {part for p in root.parent.rglob("*") for part in p.relative_to(root.parent).parts}
    for gid in inventory_ids:
        pieces = {gid, *(x for x in re.split(r"[/\\]", gid) if x not in ("", ".", ".."))}
        assert not pieces & components, f"{gid!r} became a path: {pieces & components}"
    p = load_model(artifacts.paths(cfg)["consolidated"]).predict_proba(hostile["rows"])
    assert np.allclose(p.sum(axis=1), 1.0)


def test_dagster_stores_no_pickled_asset_output(hostile):
    """The assets return MaterializeResult: Dagster's default IO manager, which pickles outputs,
    never writes (so never loads) one. Its storage holds run records and logs only."""
    storage = Path(hostile["instance"].root_directory)
    names = {p.name for p in storage.rglob("*")}
    assert not names & {a.key.to_user_string() for a in ALL}
    assert not [p for p in storage.rglob("*") if p.is_file() and p.read_bytes()[:2] in (b"\x80\x04", b"\x80\x05")]


def _latest(instance, asset) -> int | None:
    """Storage id of the asset's latest materialization (any partition)."""
    recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset.key), limit=1).records
    return recs[0].storage_id if recs else None


def _tamper_booster(root: Path, cfg) -> str:
    key = artifacts.load_plan(cfg)["subsets"][0]["key"]
    b = cfg.instance_dir(key) / "booster_donor.ubj"
    data = bytearray(b.read_bytes())
    data[len(data) // 3] ^= 0x10
    b.write_bytes(bytes(data))
    return key


CASES = {
    "missing label column": (lambda src, out: F.derive(src, out, F.only(1, lambda t: t.drop_columns(["splice_type"]))),
                             {}, PLAN, "gene_inventory", ["batch_00002.parquet", "'splice_type'"]),
    "corrupt gene_id page": (lambda src, out: (F.derive(src, out), F.corrupt_column_chunk(
        out / "master" / "batch_00003.parquet", "gene_id"))[0], {}, PLAN, "gene_inventory",
        ["batch_00003.parquet", "column 'gene_id'", "corrupt"]),
    "infinite feature": (lambda src, out: F.derive(src, out, F.only(0, lambda t: F.with_values(
        t, "donor_score", slice(0, 2), np.inf))), {}, PLAN, "feature_screening",
        ["'donor_score'", "2 infinite", "batch_00001.parquet"]),
    "overlap outside [0, 0.5]": (lambda src, out: src, {"instance_overlap": 0.6}, PLAN, "training_plan",
                                 ["instance_overlap=0.6", "[0, 0.5]"]),
    "altered booster file": (None, {}, [consolidated_model], "consolidated_model",
                             ["booster_donor.ubj", "does not match its checksum"]),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_dagster_fails_at_the_earliest_asset_and_keeps_earlier_materializations(kind, hostile, tmp_path):
    build, plan, selection, step, says = CASES[kind]
    instance = hostile["instance"]
    root = F.copy_tree(hostile["root"], tmp_path / "root")
    before = F.tree_digest(root / "artifacts")
    data = build(hostile["data"], tmp_path / "bad") if build else hostile["data"]
    cfg = case_config(root, data, plan)
    if kind == "altered booster file":
        _tamper_booster(root, cfg)
        before = F.tree_digest(root / "artifacts")
    latest = {a.key: _latest(instance, a) for a in ALL}
    partitions = sorted(instance.get_dynamic_partitions(gene_subsets.name))
    ok, errors = materialize(cfg, instance, selection, log=lambda m: None)
    assert not ok and errors
    assert errors[0].startswith(f"{step}:"), errors
    assert all(s in errors[0] for s in says), errors[0]
    later = ALL[[a.key.to_user_string() for a in ALL].index(step):]
    assert {a.key: _latest(instance, a) for a in later} == {a.key: latest[a.key] for a in later}
    earlier = ALL[:[a.key.to_user_string() for a in ALL].index(step)]
    for a in earlier:
        if a in selection:
            assert _latest(instance, a) != latest[a.key]  # upstream steps of this run did materialize
    assert sorted(instance.get_dynamic_partitions(gene_subsets.name)) == partitions
    predictions = dict(hostile["predictions"])
    if kind == "altered booster file":  # the tampered instance itself no longer loads; the rest do
        bad = artifacts.load_plan(cfg)["subsets"][0]["key"]
        (root / "artifacts" / "instances" / bad).rename(tmp_path / "quarantine")
        before = {k: v for k, v in before.items() if not k.startswith(f"instances/{bad}/")}
        del predictions[f"instances/{bad}"]
    assert_intact(root, before, step, hostile["rows"], predictions)


def test_a_materialized_partition_with_a_damaged_model_is_retrained(hostile, tmp_path):
    instance = hostile["instance"]
    root = F.copy_tree(hostile["root"], tmp_path / "root")
    cfg = case_config(root, hostile["data"])
    keys = hostile["keys"]
    assert partitions_to_train(instance, keys, cfg=cfg) == []
    key = _tamper_booster(root, cfg)
    assert partitions_to_train(instance, keys) == []               # the materialization record alone
    assert partitions_to_train(instance, keys, cfg=cfg) == [key]   # the files say otherwise
    ok, errors = materialize(cfg, instance, [instance_model], partition_key=key, log=lambda m: None)
    assert ok, errors
    assert partitions_to_train(instance, keys, cfg=cfg) == []
    assert np.array_equal(load_model(cfg.instance_dir(key)).predict_proba(hostile["rows"]),
                          hostile["predictions"][f"instances/{key}"])


@pytest.mark.parametrize("flag, value, says", [
    ("--instance-overlap", "0.7", "instance_overlap=0.7 is outside [0, 0.5]"),
    ("--holdout-fraction", "1.0", "holdout_fraction=1.0 is outside [0, 1)"),
    ("--n-folds", "1", "n_folds=1 must be at least 2"),
])
def test_cli_refuses_bad_settings_before_reading_or_writing_anything(flag, value, says, tiny_dataset, tmp_path,
                                                                      capsys, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "no-home"))
    code = cli.main(["train", "--dataset", str(tiny_dataset), "--data-root", str(root), flag, value])
    assert code == 2 and says in capsys.readouterr().err
    assert not root.exists() and not (tmp_path / "no-home").exists()   # nothing read, nothing written
