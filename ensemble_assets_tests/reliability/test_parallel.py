"""Parallel safety: two instance partitions trained at the same time, by two Dagster runs in two
processes sharing one persistent instance and one data root, give exactly the artifacts of a
sequential run, and no file is written by both processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import dagster as dg

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.io import read_json
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.training.assets import instance_model
from ensemble_assets_tests.conftest import REPO

from . import faults as F
from .harness import case_config, dagster_home, run_graph

# differ from run to run by nature: wall time and the process's peak memory
UNSTABLE_MANIFEST_KEYS = ("timings", "peak_rss_bytes")


def _stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in UNSTABLE_MANIFEST_KEYS}


def test_two_partitions_trained_concurrently_equal_a_sequential_run(tiny_dataset, tmp_path):
    home, root, seq = dagster_home(tmp_path / "home"), tmp_path / "root", tmp_path / "sequential"
    cfg = case_config(root, tiny_dataset)
    assert run_graph(cfg, until="training_plan") == (None, None)
    keys = [s["key"] for s in artifacts.load_plan(cfg)["subsets"]]
    assert len(keys) == 2
    with dg.DagsterInstance.from_config(str(home)) as instance:  # what training_plan registers
        instance.add_dynamic_partitions(gene_subsets.name, keys)

    # the sequential reference: the same plan, both partitions one after the other, one process
    shutil.copytree(root, seq)
    seq_cfg = case_config(seq, tiny_dataset)
    for k in keys:
        stages.run_instance(seq_cfg, k)

    env = {"DAGSTER_HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
           "HOME": os.environ.get("HOME", "/tmp")}
    procs = [subprocess.Popen([sys.executable, "-m", "ensemble_assets_tests.reliability.worker", "materialize",
                               "--data-root", str(root), "--partition", k, "--barrier", str(tmp_path / "barrier"),
                               "--report", str(tmp_path / f"report-{k}.json")],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in keys]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    reports = [json.loads((tmp_path / f"report-{k}.json").read_text()) for k in keys]

    # they did run at the same time
    assert max(r["start"] for r in reports) < min(r["end"] for r in reports)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(instance_model.key) == set(keys)

    # exactly the sequential artifacts: boosters and tables byte for byte, manifests equal
    for k in keys:
        par, ref = root / "artifacts" / "instances" / k, seq / "artifacts" / "instances" / k
        data = lambda d: {p: h for p, h in F.tree_digest(d).items() if p != "manifest.json"}  # noqa: E731
        assert data(par) == data(ref) and len(data(par)) == 6
        assert _stable(read_json(par / "manifest.json")) == _stable(read_json(ref / "manifest.json"))

    # each process wrote only its own partition's directory (and its own temporaries beside it).
    # Both make sure the common parent exists: mkdir(exist_ok=True) is atomic and idempotent (one
    # creates it, the other finds it), which is not writing a shared file.
    common_parents = {"artifacts", "artifacts/instances"}
    written = {r["partition"]: {p for e, p in r["writes"] if not (e == "os.mkdir" and p in common_parents)}
               for r in reports}
    for k, paths in written.items():
        assert paths, f"no write recorded for {k}"
        for p in paths:
            parts = p.split("/")
            assert parts[:2] == ["artifacts", "instances"] and (
                parts[2] == k or parts[2].startswith(f".{k}.")), f"{k} wrote {p}"
    assert written[keys[0]].isdisjoint(written[keys[1]])
    assert not [p for p in (root / "artifacts" / "instances").iterdir() if p.name.startswith(".")]
