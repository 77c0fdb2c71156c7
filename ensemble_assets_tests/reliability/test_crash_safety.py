"""Crash safety: a training run killed with SIGKILL loses nothing and leaves nothing half-done.

``ensemble-assets train`` runs in its own process group with a temporary DAGSTER_HOME; the test
watches the Dagster event log and kills the whole group the moment the second partition has
loaded its rows (so XGBoost is training). Then: (a) nothing of the killed partition reads back
as a model, (b) running ``train`` again trains only the partition that was not materialized, and
(c) the consolidated model equals, booster for booster and prediction for prediction, the one an
uninterrupted run makes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.artifacts import planned_config
from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.io import _owner_tag, atomic_directory, read_json, remove_stale_temporaries, sha256_file
from ensemble_assets.core.model.ensemble import ModelError, load_model, model_problem
from ensemble_assets_tests.conftest import REPO

from . import faults as F
from .harness import case_config, dagster_home, dataset_rows, run_graph

# SHAP is not what is killed or compared here (its own tests: dagster/test_shap_assets.py)
TRAIN = ["train", "--genes-per-instance", "30", "--n-folds", "3", "--n-estimators", "25", "--threads", "1", "--skip-shap"]


def _env(home: Path) -> dict[str, str]:
    return {"DAGSTER_HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1", "HOME": os.environ.get("HOME", "/tmp")}


def _cli(args: list[str], home: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ensemble_assets.cli", *args], cwd=REPO, env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _partition_run_logs(instance: dg.DagsterInstance, key: str) -> list[str]:
    msgs = []
    for rec in instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/partition": key})):
        msgs += [e.user_message for e in instance.all_logs(rec.dagster_run.run_id) if not e.is_dagster_event]
    return msgs


def _boosters(model_dir: Path) -> dict[str, str]:
    return {p.relative_to(model_dir).as_posix(): sha256_file(p) for p in sorted(model_dir.rglob("*.ubj"))}


def test_sigkill_mid_training_loses_nothing_and_resumes_to_the_same_model(tiny_dataset, tmp_path):
    home, root = dagster_home(tmp_path / "home"), tmp_path / "root"
    args = [*TRAIN, "--dataset", str(tiny_dataset), "--data-root", str(root)]
    proc = _cli(args, home, start_new_session=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not (root / "artifacts" / "training_plan.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "".join(out)[-3000:]
            time.sleep(0.05)
        keys = [s["key"] for s in read_json(root / "artifacts" / "training_plan.json")["subsets"]]
        assert len(keys) == 2
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # kill the moment the second partition has its rows loaded: XGBoost is training it
            while not any("loaded " in m and " rows of " in m for m in _partition_run_logs(instance, keys[1])):
                assert proc.poll() is None and time.monotonic() < deadline, "".join(out)[-3000:]
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
            logs = _partition_run_logs(instance, keys[1])
            assert not any("out-of-fold macro F1" in m for m in logs), "the partition finished before the kill"
            assert instance.get_materialized_partitions(dg.AssetKey("instance_model")) == {keys[0]}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    # (a) nothing of the killed partition reads back as complete
    cfg = planned_config(PlatformConfig(data_root=str(root)))
    killed = cfg.instance_dir(keys[1])
    assert artifacts.instance_manifest(cfg, keys[1]) is None
    assert model_problem(killed) is not None
    with pytest.raises(ModelError):
        load_model(killed)
    with pytest.raises(stages.CoverageError, match=keys[1]):
        stages.run_consolidation(cfg)
    assert not (root / "artifacts" / "consolidated_model").exists()
    first = cfg.instance_dir(keys[0])
    first_state = (F.tree_digest(first), first.stat().st_ino)

    # (b) the second run trains only the partition that was not materialized
    rerun = _cli(args, home)
    stdout, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stdout[-3000:]
    trained = [ln.split("partition ")[1].split()[0] for ln in stdout.splitlines() if "training instance_model" in ln]
    assert trained == [keys[1]], stdout[-3000:]
    assert (F.tree_digest(first), first.stat().st_ino) == first_state
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("instance_model")) == set(keys)
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("instance_model"), asset_partitions=[keys[0]]), limit=10).records
        assert len(recs) == 1  # materialized once, before the kill

    # (c) the same model as an uninterrupted run of the same configuration
    ref_cfg = replace(planned_config(PlatformConfig(data_root=str(root))), data_root=str(tmp_path / "ref"))
    assert run_graph(ref_cfg) == (None, None)
    resumed, reference = root / "artifacts" / "consolidated_model", tmp_path / "ref" / "artifacts" / "consolidated_model"
    assert (root / "artifacts" / "training_plan.json").read_bytes() == (
        tmp_path / "ref" / "artifacts" / "training_plan.json").read_bytes()
    assert _boosters(resumed) == _boosters(reference) and len(_boosters(resumed)) == 6 + 1  # 2 instances × 3 boosters + merged_booster.ubj
    rows = dataset_rows(tiny_dataset, 2000)
    m1, m2 = load_model(resumed), load_model(reference)
    assert [m["weight"] for m in m1.manifest["members"]] == [m["weight"] for m in m2.manifest["members"]]
    assert np.array_equal(m1.predict_proba(rows), m2.predict_proba(rows))


def test_a_writer_killed_mid_write_leaves_a_temporary_that_is_never_read_and_is_cleaned(tiny_dataset, tmp_path):
    """SIGKILL after the first booster is in the temporary model directory: a partial directory
    stays on disk under a hidden temporary name, no reader takes it for a model, and the next
    write of that model removes it."""
    root = tmp_path / "root"
    cfg = case_config(root, tiny_dataset)
    assert run_graph(cfg, until="training_plan") == (None, None)
    key = artifacts.load_plan(cfg)["subsets"][0]["key"]
    r = subprocess.run([sys.executable, "-m", "ensemble_assets_tests.reliability.worker", "die-while-writing",
                        "--data-root", str(root), "--partition", key], cwd=REPO, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    instances = root / "artifacts" / "instances"
    leftovers = [p for p in instances.iterdir() if p.name.startswith(f".{key}.")]
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp")
    partial = sorted(p.name for p in leftovers[0].iterdir())
    assert any(n.startswith("booster_") for n in partial) and "manifest.json" not in partial
    assert not cfg.instance_dir(key).exists()
    assert artifacts.instance_manifest(cfg, key) is None and model_problem(cfg.instance_dir(key)) is not None
    with pytest.raises(stages.CoverageError, match=key):
        stages.run_consolidation(cfg)
    stages.run_instance(cfg, key)  # the retry
    assert model_problem(cfg.instance_dir(key)) is None
    assert [p.name for p in instances.iterdir() if p.name.startswith(".")] == []


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "model"
    with atomic_directory(target) as d:
        (d / "x").write_text("v1")
    host = _owner_tag().rsplit("-", 1)[0]
    stale_tmp = tmp_path / f".model.{host}-{dead.pid}.abc123.tmp"
    live_tmp = tmp_path / f".model.{host}-{os.getpid()}.def456.tmp"
    foreign = tmp_path / f".model.otherhost-{dead.pid}.ghi789.tmp"
    for p in (stale_tmp, live_tmp, foreign):
        p.mkdir()
        (p / "x").write_text("partial")
    assert remove_stale_temporaries(target) == [stale_tmp]
    assert live_tmp.exists() and foreign.exists()
    # killed between its two renames: the complete old version is put back
    old = tmp_path / f".model.{host}-{dead.pid}.0a1b2c3d.old"
    os.replace(target, old)
    assert remove_stale_temporaries(target) == [old]
    assert (target / "x").read_text() == "v1"
