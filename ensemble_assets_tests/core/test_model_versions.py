"""Model versions: content ids, the current pointer, rollback, retention, load_model by reference,
the stored operating point, and the promotion gate's policy without common unseen genes."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.evaluation.holdout import operating_point
from ensemble_assets.core.io import read_json, sha256_file
from ensemble_assets.core.model import ModelStore, VersionError, consolidate, load_model, splice_calls
from ensemble_assets.core.model.promotion import PromotionSettings, decide
from ensemble_assets.core.model.versions import content_id
from ensemble_assets_tests.conftest import make_config


def tree_hashes(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """One plan of three instances, consolidated, holdout metrics evaluated (no Dagster)."""
    root = tmp_path_factory.mktemp("versions")
    cfg = make_config(root, tiny_dataset, genes_per_instance=16, holdout_fraction=0.2)
    stages.run_inventory(cfg)
    stages.run_screening(cfg)
    plan = stages.run_plan(cfg)
    for s in plan["subsets"]:
        stages.run_instance(cfg, s["key"])
    manifest = stages.run_consolidation(cfg)
    summary = stages.run_holdout_metrics(cfg)
    return cfg, plan, manifest, summary


def variants(cfg, plan, out: Path, n: int) -> list[Path]:
    """``n`` distinct consolidated models: every non-empty subset of the plan's instances."""
    keys = [s["key"] for s in plan["subsets"]]
    subsets = [c for r in range(1, len(keys) + 1) for c in itertools.combinations(keys, r)][:n]
    assert len(subsets) == n, "the plan has too few instances for this many variants"
    dirs = []
    for i, ks in enumerate(subsets):
        d = out / f"variant{i}"
        consolidate({k: cfg.instance_dir(k) for k in ks}, d, plan["holdout_genes"], operating_point=operating_point)
        dirs.append(d)
    return dirs


def test_stored_threshold_is_the_one_holdout_metrics_reports(trained):
    cfg, plan, manifest, summary = trained
    assert summary["scope"] == "holdout"
    op = read_json(artifacts.paths(cfg)["consolidated"] / "manifest.json")["operating_point"]
    assert op["splice_threshold"] == summary["thresholds"]["consolidated"]
    assert op["chosen_on"] == "out-of-fold predictions of the training genes"
    version = artifacts.model_store(cfg).version_dir(manifest["version_id"])
    assert read_json(version / "manifest.json")["operating_point"] == op


def test_predict_calls_apply_the_stored_rule(trained, tiny_dataset):
    cfg, _, manifest, _ = trained
    model = load_model(manifest["version_id"], store=artifacts.model_store(cfg))
    table = pq.read_table(sorted((tiny_dataset / "master").glob("*.parquet"))[0])
    calls = model.predict_calls(table)
    p = model.predict_proba(table)
    thr = model.operating_point["splice_threshold"]
    splice = p[:, 1] + p[:, 2] >= thr
    assert np.array_equal(calls["splice_call"], splice)
    expected = np.where(~splice, "neither", np.where(p[:, 2] > p[:, 1], "acceptor", "donor"))
    assert calls["predicted_type"].tolist() == expected.tolist()
    assert 0 < splice.sum() < len(splice)
    assert splice_calls(np.array([[0.5, 0.25, 0.25]]), 0.5)["predicted_type"].tolist() == ["donor"]
    assert splice_calls(np.array([[0.6, 0.1, 0.3]]), 0.5)["predicted_type"].tolist() == ["neither"]


def test_a_consolidation_is_stored_once_under_its_content_id(trained):
    cfg, _, manifest, _ = trained
    store = artifacts.model_store(cfg)
    vid = manifest["version_id"]
    assert vid == content_id(artifacts.paths(cfg)["consolidated"])
    again = stages.run_consolidation(cfg)   # same members: same id, nothing new stored
    assert again["version_id"] == vid and store.ids() == [vid]
    assert store.versions()[0]["status"] == "candidate"


def test_load_model_accepts_an_id_current_previous_and_a_directory(trained, tmp_path):
    cfg, plan, _, _ = trained
    store = ModelStore(tmp_path / "models")
    a, b = (store.add(d) for d in variants(cfg, plan, tmp_path, 2))
    with pytest.raises(VersionError, match="'current'.*nothing promoted"):
        store.resolve("current")
    store.promote(a, "first", "test")
    store.promote(b, "second", "test")
    assert load_model("current", store=store).path == store.root / b
    assert load_model("previous", store=store).path == store.root / a
    assert load_model(a, store=store).path == store.root / a
    assert load_model(a[:6], store=store).path == store.root / a     # a unique prefix
    assert load_model(cfg.instance_dir(plan["subsets"][0]["key"]), store=store).total_instances == 1
    assert load_model(store.root / a).path == store.root / a          # no store: a directory
    with pytest.raises(VersionError) as err:
        store.resolve("0123456789abcdef")
    assert "'0123456789abcdef'" in str(err.value) and a in str(err.value) and b in str(err.value)


def test_rollback_restores_the_previous_version_and_is_recorded(trained, tmp_path):
    cfg, plan, _, _ = trained
    store = ModelStore(tmp_path / "models")
    a, b, c = (store.add(d) for d in variants(cfg, plan, tmp_path, 3))
    with pytest.raises(VersionError, match="nothing to roll back"):
        store.rollback("test", "nothing promoted")
    for v in (a, b, c):
        store.promote(v, f"promote {v}", "alice")
    before = tree_hashes(store.root / b)
    assert store.rollback("bob", "c misbehaves") == b
    assert (store.current_id(), store.previous_id()) == (b, a)
    assert load_model("current", store=store).path == store.root / b
    assert tree_hashes(store.root / b) == before
    last = store.history()[-1]
    assert (last["action"], last["version"], last["from"], last["actor"], last["reason"]) == (
        "rollback", b, c, "bob", "c misbehaves")
    assert store.rollback("bob", "again") == a and store.previous_id() is None
    with pytest.raises(VersionError, match="only version ever promoted"):
        store.rollback("bob", "once more")
    status = {v["id"]: v["status"] for v in store.versions()}
    assert status == {a: "current", b: "retired", c: "retired"}


def test_retention_never_removes_current_or_previous(trained, tmp_path):
    cfg, plan, _, _ = trained
    store = ModelStore(tmp_path / "models", keep=1)
    v = [store.add(d) for d in variants(cfg, plan, tmp_path, 5)]
    assert store.ids() == [v[-1]]       # nothing promoted: only the newest is kept
    store = ModelStore(tmp_path / "models2", keep=1)
    dirs = variants(cfg, plan, tmp_path / "again", 5)
    first = store.add(dirs[0])
    store.promote(first, "first", "test")
    second = store.add(dirs[1])
    store.promote(second, "second", "test")
    current_files = tree_hashes(store.root / second)
    for d in dirs[2:]:
        store.add(d)
    newest = store.ids()[-1]
    assert set(store.ids()) == {first, second, newest}     # previous, current, and the newest one
    assert tree_hashes(store.root / second) == current_files
    removed = [e["version"] for e in store.history() if e["action"] == "remove"]
    assert len(removed) == 2 and first not in removed and second not in removed
    assert store.rollback("test", "retention kept it") == first


def test_without_common_unseen_genes_the_policy_decides(trained, tmp_path):
    cfg, plan, _, _ = trained
    store = ModelStore(tmp_path / "models")
    current = store.add(variants(cfg, plan, tmp_path, 1)[0])
    store.promote(current, "first", "test")
    # a candidate without holdout genes (as with train_all_genes): no gene is unseen by both models
    keys = [s["key"] for s in plan["subsets"]]
    consolidate({k: cfg.instance_dir(k) for k in keys}, tmp_path / "all", [], operating_point=operating_point)
    candidate = store.add(tmp_path / "all")
    refused = decide(store, candidate, PromotionSettings())
    assert not refused.promoted and refused.outcome == "refused"
    assert "no genes that neither model trained on" in refused.reason and "allow_without_common_holdout" in refused.reason
    assert store.current_id() == current and store.status(candidate) == "refused"
    assert store.history()[-1]["action"] == "refuse" and store.history()[-1]["comparison"]["genes"] == 0
    allowed = decide(store, candidate, PromotionSettings(allow_without_common_holdout=True))
    assert allowed.promoted and store.current_id() == candidate and store.previous_id() == current
    assert "promoted without comparison" in store.history()[-1]["reason"]
