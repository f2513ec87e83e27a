"""Two ``loglake serve`` nodes with one config: streams on a real nats-server, the catalog on a
real PostgreSQL, one warehouse. Clients post to both nodes; both deliver the stream, and every
commit is fenced on the stream's offset in the table, so the records land once whichever node
commits them; one node is SIGKILLed while clients go on, and nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import loglake
from natsserver import nats_servers
from postgres import postgres_server
from serving import Server, request

BY_STATUS = "SELECT status, count(*) AS n, sum(bytes) AS b FROM logs.access GROUP BY 1 ORDER BY 1"


def _post(srv: Server, lines: list[bytes]) -> int:
    status, body, _ = request(
        "POST", f"{srv.url}/v1/streams/web/records", b"\n".join(lines) + b"\n"
    )
    assert status == 200, body
    return int(body["accepted"])


@pytest.mark.slow  # about 40 s: nats-server, PostgreSQL, two nodes, a SIGKILL
def test_two_nodes_deliver_one_stream_exactly_once(tmp_path: Path, shared_data: Path) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:8000]
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
"""
        a = Server.started(tmp_path / "a", config)
        b = Server.started(tmp_path / "b", config)
        try:
            acked = 0
            for n, i in enumerate(range(0, 4000, 250)):
                acked += _post(a if n % 2 else b, lines[i : i + 250])
            a.stop(signal.SIGKILL)  # mid-stream: some of its commits done, some not
            for i in range(4000, 8000, 250):
                acked += _post(b, lines[i : i + 250])
            assert acked == 8000
            b.wait_rows("SELECT count(*) AS n FROM logs.access", 8000, timeout=240)
            got = b.query("SELECT count(*) AS n, count(DISTINCT line) AS d FROM logs.access")
            assert got == [{"n": 8000, "d": 8000}]
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
            assert [tuple(r.values()) for r in b.query(BY_STATUS)] == [tuple(r) for r in want]
            # Node A back: it resumes from the lake, and writes nothing twice.
            a.start()
            _post(a, lines[:1])
            b.wait_rows("SELECT count(*) AS n FROM logs.access", 8001, timeout=240)
        finally:
            for srv in (a, b):
                if srv.proc is not None:
                    srv.stop(signal.SIGKILL)
