"""Backfill failed / missing ``instance_model`` partitions on a running Dagster instance.

``ensemble-assets backfill --failed`` asks the webserver's GraphQL API (``dagster dev`` or
``dagster-webserver``; the daemon must run too) for the partitions' statuses and launches one
partition backfill of the ones asked for — exactly what the UI does from the asset's partition
page (status filter → Failed → Materialize). The backfill daemon then launches one run per
partition; consolidation follows automatically once every partition is materialized.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:3000"
URL_ENV = "ENSEMBLE_ASSETS_DAGSTER_URL"
ASSET = "instance_model"

PARTITION_STATUS_QUERY = """
query PartitionStatuses($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions
        }
      }
    }
    ... on Error { message }
  }
}
"""

LAUNCH_BACKFILL_MUTATION = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

BACKFILL_STATUS_QUERY = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions partitionNames }
    ... on Error { message }
  }
}
"""


class DagsterAPIError(RuntimeError):
    """The Dagster webserver could not be reached or refused the request (message says which)."""


def default_url() -> str:
    return os.environ.get(URL_ENV, DEFAULT_URL)


def graphql(url: str, query: str, variables: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
    endpoint = url.rstrip("/") + "/graphql"
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(endpoint, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise DagsterAPIError(f"{endpoint}: HTTP {exc.code}: {exc.read()[:500].decode(errors='replace')}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DagsterAPIError(f"cannot reach the Dagster webserver at {endpoint} ({exc}); start it with "
                              f"`make ui` or pass --url") from exc
    if payload.get("errors"):
        raise DagsterAPIError(f"{endpoint}: {'; '.join(e.get('message', str(e)) for e in payload['errors'])}")
    return payload["data"]


def partition_statuses(url: str, asset: str = ASSET) -> dict[str, list[str]]:
    """materialized / failed / missing (never materialized, not failed, not running) / in_progress."""
    node = graphql(url, PARTITION_STATUS_QUERY, {"assetKey": {"path": [asset]}})["assetNodeOrError"]
    if node["__typename"] != "AssetNode":
        raise DagsterAPIError(f"asset {asset}: {node.get('message', node['__typename'])}")
    st = node["assetPartitionStatuses"]
    if st["__typename"] != "DefaultPartitionStatuses":
        raise DagsterAPIError(f"asset {asset} has {st['__typename']}, expected dynamic partitions")
    failed, running = set(st["failedPartitions"]), set(st["materializingPartitions"])
    return {
        "materialized": sorted(st["materializedPartitions"]),
        "failed": sorted(failed - running),
        "missing": sorted(set(st["unmaterializedPartitions"]) - failed - running),
        "in_progress": sorted(running),
    }


def launch_backfill(url: str, partitions: list[str], asset: str = ASSET, title: str | None = None) -> str:
    params = {"assetSelection": [{"path": [asset]}], "partitionNames": partitions,
              "tags": [{"key": "ensemble_assets/trigger", "value": "cli backfill"}]}
    if title:
        params["title"] = title
    res = graphql(url, LAUNCH_BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
    if res["__typename"] != "LaunchBackfillSuccess":
        raise DagsterAPIError(f"backfill refused ({res['__typename']}): {res.get('message', '')}")
    return res["backfillId"]


def backfill_status(url: str, backfill_id: str) -> dict[str, Any]:
    res = graphql(url, BACKFILL_STATUS_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
    if res["__typename"] != "PartitionBackfill":
        raise DagsterAPIError(f"backfill {backfill_id}: {res.get('message', res['__typename'])}")
    return res


def wait_for_backfill(url: str, backfill_id: str, timeout: float = 3600, poll: float = 3.0) -> str:
    """Poll until the backfill leaves REQUESTED (all its runs done); return its final status."""
    deadline = time.monotonic() + timeout
    while True:
        status = backfill_status(url, backfill_id)["status"]
        if status not in ("REQUESTED", "CANCELING", "FAILING"):
            return status
        if time.monotonic() > deadline:
            raise DagsterAPIError(f"backfill {backfill_id} still {status} after {timeout:.0f}s")
        time.sleep(poll)


def select_partitions(statuses: dict[str, list[str]], failed: bool, missing: bool) -> list[str]:
    return sorted((set(statuses["failed"]) if failed else set()) | (set(statuses["missing"]) if missing else set()))
