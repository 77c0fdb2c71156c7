"""End to end on a live Dagster instance: ``dagster dev`` (webserver + daemon) on 127.0.0.1 with a
temporary DAGSTER_HOME and data root, driven over GraphQL as the UI drives it, and the UI itself
checked in headless Chromium. Screenshots and the server log are kept under data/e2e/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ensemble_assets.backfill import launch_backfill, partition_statuses, wait_for_backfill
from ensemble_assets.core import artifacts
from ensemble_assets.defs.resources import run_config_for
from ensemble_assets_tests.conftest import REPO, make_config
from ensemble_assets_tests.e2e.live import (
    DagsterDev,
    chromium_binary,
    group_members,
    rendered_text,
    screenshot,
    wait_until,
)
from ensemble_assets_tests.faults import gene_in_one_subset, write_infinite_rows

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "data" / "e2e"
ASSETS = ("gene_inventory", "feature_screening", "training_plan", "instance_model", "consolidated_model")


@pytest.fixture(scope="module")
def live(tiny_dataset, tmp_path_factory):
    """dagster dev on a free port, its own DAGSTER_HOME (the repository's dagster.yaml, storage
    moved) and data root (a copy of the tiny dataset, fast settings, 2 partitions). Its whole
    process group is stopped in teardown, pass or fail, and the test checks that none survives."""
    tmp = tmp_path_factory.mktemp("live")
    dataset = Path(shutil.copytree(tiny_dataset, tmp / "dataset"))
    cfg = make_config(tmp / "root", dataset, genes_per_instance=25)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dev = DagsterDev(tmp / "home", tmp / "root", ARTIFACTS / "dagster_dev.log")
    state: dict = {"profile": tmp / "chromium"}
    try:
        dev.start()
        yield cfg, dev, state
    finally:
        dev.stop()
        left = group_members(dev.pgid) if dev.pgid else []
        assert not left, f"processes of dagster dev still alive after stop: {left}"


def statuses(dev: DagsterDev) -> dict[str, list[str]]:
    return partition_statuses(dev.url)


def settled(dev: DagsterDev, keys: list[str]):
    """The partition statuses once every key is materialized or failed and nothing is running."""
    st = statuses(dev)
    done = set(st["materialized"]) | set(st["failed"])
    return st if done >= set(keys) and not st["in_progress"] else None


def metadata(event: dict) -> dict:
    out = {}
    for e in event["metadataEntries"]:
        out[e["label"]] = next((e[k] for k in ("floatValue", "intValue", "text", "jsonString") if k in e), None)
    return out


def run_tags(dev: DagsterDev, run_id: str) -> dict[str, str]:
    res = dev.query("query R($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }",
                    {"id": run_id})["runOrError"]
    return {t["key"]: t["value"] for t in res["tags"]}


def tick_messages(dev: DagsterDev, sensor: str) -> list[str]:
    return [e["message"] for t in dev.sensor_ticks(sensor) for e in (t["logEvents"] or {}).get("events", [])]


def test_plan_sensor_automation_failure_and_backfill_on_a_live_instance(live):
    cfg, dev, state = live
    browser = chromium_binary()

    # 1. launch the plan over GraphQL; the plan registers the partitions, the sensor trains them
    run_id = dev.launch_job("plan_job", run_config_for(cfg))   # the settings, as the launchpad sends them
    assert dev.wait_run(run_id, timeout=300) == "SUCCESS"
    plan = artifacts.load_plan(cfg)
    keys = sorted(s["key"] for s in plan["subsets"])
    assert len(keys) == 2
    st = wait_until("the sensor's runs to train every partition", lambda: settled(dev, keys), timeout=420, poll=3)
    assert sorted(st["materialized"]) == keys and st["failed"] == []
    mats = dev.materializations("instance_model", limit=50)
    for k in keys:
        (mat,) = [m for m in mats if m["partition"] == k]
        tags = run_tags(dev, mat["runId"])
        assert tags.get("dagster/sensor_name") == "plan_partitions_sensor", tags
        meta = metadata(mat)
        assert meta["gene_subset"] == k and meta["genes"] > 0 and meta["rows"] > 0
        assert 0 < meta["oof_macro_f1"] <= 1 and meta["peak_rss_MB"] > 0

    # 2. consolidation follows by automation, after the last partition and not before
    (first,) = wait_until("consolidated_model to materialize by automation",
                          lambda: dev.materializations("consolidated_model"), timeout=240, poll=3)
    trained_at = max(float(m["timestamp"]) for m in dev.materializations("instance_model", limit=50))
    assert float(first["timestamp"]) > trained_at
    assert run_tags(dev, first["runId"]).get("dagster/sensor_name") == "ensemble_automation_sensor"
    assert metadata(first)["gene_coverage"] == 1.0 and metadata(first)["instances"] == 2

    # 3. a real input fault in one subset: +inf in a feature of a gene only that subset trains on
    failing, other = keys
    features, _ = artifacts.load_features(cfg)
    column = "donor_score" if "donor_score" in features else features[0]
    bad_file = write_infinite_rows(cfg.dataset_path, gene_in_one_subset(plan, failing), column)
    # an operator re-materializes both partitions from the UI (a partition backfill)
    backfill_id = launch_backfill(dev.url, [failing, other], title="re-train both partitions")
    assert wait_for_backfill(dev.url, backfill_id, timeout=420) == "COMPLETED_FAILED"
    finished = time.time()
    st = statuses(dev)
    assert st["failed"] == [failing] and other in st["materialized"]
    # the failure sensor names the partition and the reason
    wait_until("partition_failure_sensor to log the failed partition",
               lambda: any(failing in m and "infinite" in m and column in m
                           for m in tick_messages(dev, "partition_failure_sensor")), timeout=120, poll=3)
    # the automation sensor evaluated after the failure, and did not consolidate (a plain eager()
    # would have: the other partition updated and none is *missing*)
    wait_until("an automation tick after the failed backfill",
               lambda: any(float(t["timestamp"]) > finished + 1
                           for t in dev.sensor_ticks("ensemble_automation_sensor", 5)), timeout=120, poll=3)
    assert len(dev.materializations("consolidated_model")) == 1
    if browser:
        text = rendered_text(f"{dev.url}/assets/instance_model?view=partitions", state["profile"])
        screenshot(f"{dev.url}/assets/instance_model?view=partitions", ARTIFACTS / "partitions_failed.png",
                   state["profile"])
        assert "Failed (1)" in text and failing in text, text[:2000]

    # 4. fix the input, backfill the failed partition from the CLI; consolidation follows
    bad_file.unlink()
    r = subprocess.run([sys.executable, "-m", "ensemble_assets.cli", "backfill", "--failed", "--url", dev.url],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.search(r"backfill (\S+): 1 failed partition\(s\) of instance_model: (\S+)", r.stdout)
    assert m and m.group(2) == failing, r.stdout
    assert wait_for_backfill(dev.url, m.group(1), timeout=420) == "COMPLETED_SUCCESS"
    st = statuses(dev)
    assert sorted(st["materialized"]) == keys and st["failed"] == []
    consolidated = wait_until("consolidated_model to materialize again by automation",
                              lambda: (ms := dev.materializations("consolidated_model")) and len(ms) == 2 and ms,
                              timeout=240, poll=3)
    retrained = max(float(x["timestamp"]) for x in dev.materializations("instance_model", limit=50)
                    if x["partition"] == failing)
    assert float(consolidated[0]["timestamp"]) > retrained
    assert metadata(consolidated[0])["gene_coverage"] == 1.0
    state["done"] = True


def test_the_ui_renders_the_asset_graph_and_the_partitions_of_instance_model(live):
    cfg, dev, state = live
    if not chromium_binary():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    if not state.get("done"):
        pytest.skip("the live flow did not complete (see the test above)")
    profile = state["profile"]
    lineage = f"{dev.url}/assets/gene_inventory?view=lineage&lineageScope=downstream&lineageDepth=5"
    text = rendered_text(lineage, profile)
    assert all(name in text for name in ASSETS), text[:2000]
    shot = screenshot(lineage, ARTIFACTS / "asset_graph.png", profile)
    groups = rendered_text(f"{dev.url}/asset-groups", profile)
    assert all(g in groups for g in ("dataset", "plan", "training", "ensemble")), groups[:2000]
    page = f"{dev.url}/assets/instance_model?view=partitions"
    text = rendered_text(page, profile)
    keys = sorted(s["key"] for s in artifacts.load_plan(cfg)["subsets"])
    assert f"{len(keys)} Partitions" in text and f"Materialized ({len(keys)})" in text and "Failed (0)" in text, text[:2000]
    assert all(k in text for k in keys)
    shot2 = screenshot(page, ARTIFACTS / "instance_model_partitions.png", profile)
    assert shot.stat().st_size > 10_000 and shot2.stat().st_size > 10_000
