"""Three ``loglake serve`` nodes with one config: streams on a real nats-server, the catalog on a
real PostgreSQL, one warehouse. Every node accepts appends; one node at a time delivers the stream
(it holds the stream's lease, /v1/cluster says which); when that node is SIGKILLed another takes the
lease over and delivers what it left, and every acknowledged record lands once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import loglake
from natsserver import nats_servers
from postgres import postgres_server
from serving import Server, request
from waiting import wait_for

BY_STATUS = "SELECT status, count(*) AS n, sum(bytes) AS b FROM logs.access GROUP BY 1 ORDER BY 1"


def _post(srv: Server, lines: list[bytes]) -> int:
    status, body, _ = request(
        "POST", f"{srv.url}/v1/streams/web/records", b"\n".join(lines) + b"\n"
    )
    assert status == 200, body
    return int(body["accepted"])


def _cluster(srv: Server) -> dict[str, Any]:
    status, body, _ = request("GET", f"{srv.url}/v1/cluster")
    assert status == 200, body
    return dict(body)


def _owner(srv: Server) -> str:
    return str(_cluster(srv)["owners"].get("owner.web"))


def _query_records(srv: Server) -> int:
    """Records the node's continuous query per_status took; -1 when it does not run there."""
    status, body, _ = request("GET", f"{srv.url}/v1/queries")
    assert status == 200, body
    running = {q["name"]: q for q in body["queries"]}
    return int(running["per_status"]["records"]) if "per_status" in running else -1


def _job_runs(srv: Server) -> float:
    """The node's count of scheduled runs of job ``statuses`` (its /metrics)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{srv.url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith('loglake_job_runs_total{job="statuses"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow  # about 40 s: nats-server, PostgreSQL, three nodes, a SIGKILL
def test_three_nodes_one_owner_per_stream_and_failover(tmp_path: Path, shared_data: Path) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:9000]
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    with nats_servers(tmp_path, 1) as nats, postgres_server() as url:
        config = f"""
[catalog]
uri = "{url}"
warehouse = "{warehouse.as_uri()}"

[stream]
backend = "nats"
servers = ["{nats[0].url}"]

[streams.web]
format = "combined"
buffer_seconds = 0.5

# A continuous query of the stream: it runs where the stream is delivered.
[queries.per_status]
stream = "web"
window = "tumbling 1m"
sql = "SELECT status, count(*) AS hits FROM stream GROUP BY status"

# Scheduled on every node's config; run by the one node holding its lease (at once at start:
# it never ran). Its table may not exist yet, so the run may fail: a run is a run.
[jobs.statuses]
sql = "SELECT status, count(*) AS n FROM logs.access GROUP BY 1"
target = "analytics.statuses"
schedule = "every 1h"
"""
        nodes = [Server.started(tmp_path / f"node{i}", config) for i in range(3)]
        try:
            # One owner for the stream, the same in every node's view, and every node listed.
            def settled() -> bool:
                views = [_cluster(n) for n in nodes]
                owners = {v["owners"].get("owner.web") for v in views}
                return len(owners) == 1 and None not in owners and len(views[0]["nodes"]) == 3

            wait_for(settled, "one owner of stream web, seen by all three nodes")
            view = _cluster(nodes[0])
            owner = view["owners"]["owner.web"]
            assert [n["node"] for n in view["nodes"] if "owner.web" in n["owns"]] == [owner]
            names = [_cluster(n)["node"] for n in nodes]
            assert sorted(names) == sorted(n["node"] for n in view["nodes"])
            first = nodes[names.index(owner)]
            job_owner = view["owners"]["job.statuses"]
            wait_for(lambda: _job_runs(nodes[names.index(job_owner)]) == 1, "the job's one run")
            assert [_job_runs(n) for n in nodes].count(0) == 2  # the others never ran it

            # Another protocol on every node: Loki pushes make stream "loki" on each (the same
            # JetStream stream), and one of them delivers it.
            for n, node in enumerate(nodes):
                push = {
                    "streams": [
                        {
                            "stream": {"job": f"node{n}"},
                            "values": [
                                [str(1764700000000000000 + 1000 * n + k), f"entry {k}"]
                                for k in range(3)
                            ],
                        }
                    ]
                }
                status, body, _ = request(
                    "POST",
                    f"{node.url}/loki/api/v1/push",
                    json.dumps(push).encode(),
                    {"Content-Type": "application/json"},
                )
                assert status == 204, body

            acked = 0
            for n, i in enumerate(range(0, 4500, 250)):
                acked += _post(nodes[n % 3], lines[i : i + 250])
            # The query runs on the stream's owner only.
            wait_for(lambda: _query_records(first) > 0, "the owner's query taking records")
            assert [_query_records(n) for n in nodes if n is not first] == [-1, -1]
            first.stop(signal.SIGKILL)  # the owner, mid-stream
            alive = [n for n in nodes if n is not first]
            for n, i in enumerate(range(4500, 9000, 250)):
                acked += _post(alive[n % 2], lines[i : i + 250])
            assert acked == 9000

            # Its lease expires and a live node takes the stream over.
            def taken_over() -> bool:
                now = _cluster(alive[0])["owners"].get("owner.web")
                return now is not None and now != owner

            wait_for(taken_over, "another node owning stream web")
            alive[0].wait_rows("SELECT count(*) AS n FROM logs.access", 9000, timeout=240)
            # ... and so does its query, on the new owner: no window result written twice.
            heir = alive[[_cluster(n)["node"] for n in alive].index(_owner(alive[0]))]
            wait_for(lambda: _query_records(heir) > 0, "the query running on the new owner")
            heir.wait_rows("SELECT least(count(*), 1) AS n FROM analytics.per_status", 1)
            twice = heir.query(
                "SELECT window_start, status, revision, count(*) AS n FROM analytics.per_status "
                "GROUP BY ALL HAVING count(*) > 1"
            )
            assert twice == []
            got = alive[0].query("SELECT count(*) AS n, count(DISTINCT line) AS d FROM logs.access")
            assert got == [{"n": 9000, "d": 9000}]
            alive[0].wait_rows("SELECT count(*) AS n FROM logs.loki", 9, timeout=240)
            loki = alive[0].query("SELECT count(DISTINCT line) AS d FROM logs.loki")
            assert loki == [{"d": 9}]

            # The same rows as one local ingest of the same lines, not only as many.
            local = tmp_path / "local"
            local.mkdir()
            (tmp_path / "in.log").write_bytes(b"\n".join(lines) + b"\n")
            subprocess.run(
                [sys.executable, "-m", "loglake.cli", "ingest", "--no-progress", "in.log"],
                cwd=tmp_path,
                env={**os.environ, "LOGLAKE_HOME": str(local)},
                check=True,
                capture_output=True,
            )
            with loglake.connect(str(local)) as lake:
                want = lake.sql(BY_STATUS).fetchall()
            assert [tuple(r.values()) for r in alive[1].query(BY_STATUS)] == [
                tuple(r) for r in want
            ]

            # The killed node back: it accepts appends, resumes nothing twice.
            first.start()
            _post(first, lines[:1])
            alive[0].wait_rows("SELECT count(*) AS n FROM logs.access", 9001, timeout=240)

            # The job's owner dies (again, if it was the stream's): another node takes its lease
            # over and runs it (it never ran there, so at once).
            job_node = nodes[names.index(job_owner)]
            job_node.stop(signal.SIGKILL)
            others = [n for n in nodes if n is not job_node]
            wait_for(
                lambda: sum(_job_runs(n) for n in others) >= 1,
                "another node running the job after its owner died",
            )
        finally:
            for srv in nodes:
                if srv.proc is not None:
                    srv.stop(signal.SIGKILL)
