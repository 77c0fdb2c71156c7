"""A live ``dagster dev`` (webserver + daemon) for end-to-end tests, driven over GraphQL.

The process group it starts is always stopped by ``stop()`` (SIGTERM, then SIGKILL), which the
fixtures call in their teardown whether the test passed or not.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from ensemble_assets.backfill import graphql

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_instance_yaml(home: Path) -> Path:
    """The repository's dagster.yaml (queue, pools, retries, monitoring, telemetry off) with its
    storage moved under ``home``: the live tests run the committed instance configuration."""
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    cfg["storage"] = {"sqlite": {"base_dir": str(home / "storage")}}
    cfg["local_artifact_storage"]["config"]["base_dir"] = str(home)
    cfg["compute_logs"]["config"]["base_dir"] = str(home / "logs")
    cfg["telemetry"] = {"enabled": False}
    home.mkdir(parents=True, exist_ok=True)
    out = home / "dagster.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def wait_until(what: str, check: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the server may still be starting
            last_exc = exc
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat="], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return [int(r[0]) for r in rows if len(r) >= 3 and int(r[1]) == pgid and not r[2].startswith("Z")]


class DagsterDev:
    def __init__(self, home: Path, data_root: Path, log_path: Path):
        self.home, self.data_root, self.log_path = home, data_root, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.location: str | None = None
        self.repository: str | None = None

    @property
    def env(self) -> dict[str, str]:
        # the weekly retraining schedule stays on, its tick moved half a day away: a tick during the
        # test would train partitions beside the sensor's runs (its own tests are in test_operations)
        later = time.gmtime(time.time() + 12 * 3600)
        cron = f"{later.tm_min} {later.tm_hour} * * {(later.tm_wday + 1) % 7}"
        return {**os.environ, "DAGSTER_HOME": str(self.home), "ENSEMBLE_ASSETS_DATA": str(self.data_root),
                "PYTHONPATH": str(REPO), "DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1",
                "ENSEMBLE_ASSETS_RETRAIN_CRON": cron}

    def start(self, timeout: float = 240) -> "DagsterDev":
        write_instance_yaml(self.home)
        self._log = open(self.log_path, "wb")
        cmd = [str(Path(sys.executable).with_name("dagster")), "dev", "-m", "ensemble_assets.definitions",
               "-h", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_until("the webserver and the code location", self._loaded, timeout, poll=2)
        return self

    def _loaded(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {self.proc.returncode}; see {self.log_path}")
        data = self.query("{ repositoriesOrError { __typename ... on RepositoryConnection "
                          "{ nodes { name location { name } } } } }")
        nodes = data["repositoriesOrError"].get("nodes") or []
        if nodes:
            self.repository, self.location = nodes[0]["name"], nodes[0]["location"]["name"]
            return True
        return False

    def stop(self) -> None:
        """Stop the whole process group (webserver, daemon, code server, run workers)."""
        if self.proc is None:
            return
        pgid = self.pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        if group_members(pgid):
            os.killpg(pgid, signal.SIGTERM)   # dagster dev shuts its children down on SIGTERM
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                self.proc.poll()
                if not group_members(pgid):
                    break
                time.sleep(0.5)
            if group_members(pgid):           # whatever did not stop in time
                os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()
        self.proc = None

    # -- GraphQL ------------------------------------------------------------------------------------
    def query(self, q: str, variables: dict | None = None) -> dict:
        return graphql(self.url, q, variables, timeout=60)

    def selector(self, **extra: str) -> dict[str, str]:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository, **extra}

    def launch_job(self, job: str, run_config: dict | None = None) -> str:
        res = self.query(
            """mutation Launch($p: ExecutionParams!) { launchRun(executionParams: $p) {
                 __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }""",
            {"p": {"selector": self.selector(jobName=job), "runConfigData": run_config or {}}})["launchRun"]
        assert res["__typename"] == "LaunchRunSuccess", res
        return res["run"]["runId"]

    def run_status(self, run_id: str) -> str:
        res = self.query("query R($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }",
                         {"id": run_id})["runOrError"]
        return res["status"]

    def wait_run(self, run_id: str, timeout: float = 300) -> str:
        return wait_until(f"run {run_id} to finish",
                          lambda: (s := self.run_status(run_id)) in ("SUCCESS", "FAILURE", "CANCELED") and s, timeout)

    def materializations(self, asset: str, limit: int = 20) -> list[dict]:
        res = self.query(
            """query M($k: AssetKeyInput!, $n: Int) { assetNodeOrError(assetKey: $k) { __typename
                 ... on AssetNode { assetMaterializations(limit: $n) { runId timestamp partition
                   metadataEntries { label __typename
                     ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intValue }
                     ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString } } } } } }""",
            {"k": {"path": [asset]}, "n": limit})["assetNodeOrError"]
        return res["assetMaterializations"]

    def sensor_ticks(self, sensor: str, limit: int = 25) -> list[dict]:
        res = self.query(
            """query S($s: SensorSelector!, $n: Int) { sensorOrError(sensorSelector: $s) { __typename
                 ... on Sensor { sensorState { status ticks(limit: $n) { id status timestamp endTimestamp
                   skipReason error { message } logEvents { events { message level } } } } } } }""",
            {"s": self.selector(sensorName=sensor), "n": limit})["sensorOrError"]
        assert res["__typename"] == "Sensor", res
        return res["sensorState"]["ticks"]

    def get(self, path: str) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read().decode()


# -- headless Chromium -------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000"]


def chromium_binary() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], profile: Path, timeout: float) -> str:
    """Run Chromium in its own process group; the whole group is killed if it outlives ``timeout``."""
    cmd = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return out
    finally:
        if group_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rendered_text(url: str, profile: Path, screenshot: Path | None = None, budget_ms: int = 20000,
                  timeout: float = 120) -> str:
    """The page's text after the single-page app rendered it (``--dump-dom`` after a virtual-time
    budget), scripts and styles removed; with ``screenshot``, the same rendering saved as a PNG
    there (one Chromium run for both)."""
    import re

    args = [f"--virtual-time-budget={budget_ms}", "--dump-dom"]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)   # what is there afterwards is this rendering
        args.append(f"--screenshot={screenshot}")
    html = _chromium([*args, url], profile, timeout)
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))
