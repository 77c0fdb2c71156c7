"""``ensemble-assets backfill`` against a recording stand-in for the webserver's GraphQL endpoint
(the live webserver is exercised by the e2e tests): which partitions it asks for, and what it says."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ensemble_assets.cli import main

STATUSES = {"materializedPartitions": ["s00-aaaa0000"], "failedPartitions": ["s01-bbbb1111", "s03-dddd3333"],
            "unmaterializedPartitions": ["s01-bbbb1111", "s02-cccc2222", "s03-dddd3333", "s04-eeee4444"],
            "materializingPartitions": ["s03-dddd3333", "s04-eeee4444"]}


@pytest.fixture
def webserver():
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(body)
            if "launchPartitionBackfill" in body["query"]:
                data = {"launchPartitionBackfill": {"__typename": "LaunchBackfillSuccess", "backfillId": "abcdefgh"}}
            else:
                data = {"assetNodeOrError": {"__typename": "AssetNode", "assetPartitionStatuses": {
                    "__typename": "DefaultPartitionStatuses", **STATUSES}}}
            out = json.dumps({"data": data}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def launched(requests):
    (mutation,) = [r for r in requests if "launchPartitionBackfill" in r["query"]]
    return mutation["variables"]["params"]


@pytest.mark.parametrize("flags, expected", [
    (["--failed"], ["s01-bbbb1111"]),                                 # s03 failed but is running again
    (["--missing"], ["s02-cccc2222"]),                                # never materialized, not failed/running
    (["--failed", "--missing"], ["s01-bbbb1111", "s02-cccc2222"]),
])
def test_backfill_launches_exactly_the_asked_partitions_and_reports_the_id(webserver, capsys, flags, expected):
    url, requests = webserver
    assert main(["backfill", *flags, "--url", url]) == 0
    params = launched(requests)
    assert params["partitionNames"] == expected
    assert params["assetSelection"] == [{"path": ["instance_model"]}]
    out = capsys.readouterr().out
    assert f"backfill abcdefgh: {len(expected)}" in out and ", ".join(expected) in out


def test_backfill_needs_a_choice_and_a_reachable_webserver(capsys):
    assert main(["backfill", "--url", "http://127.0.0.1:9"]) == 2
    assert "--failed and/or --missing" in capsys.readouterr().err
    assert main(["backfill", "--failed", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the Dagster webserver" in capsys.readouterr().err
