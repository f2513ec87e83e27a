"""``[stream] backend = "nats"``: the streams' durable logs on a real nats-server with JetStream.

Records are acknowledged once JetStream stored them, delivered to the lake exactly once across
kills of the loglake node (the offset is in the Iceberg commit), trimmed from JetStream once
committed; a publish retried with the same Nats-Msg-Id is stored once; with a 3-node JetStream
cluster and R3 streams, killing a NATS node loses nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from loglake.errors import QueryError
from natsserver import NatsNode, nats_servers
from serving import Server, request
from waiting import wait_for


def _config(nodes: list[NatsNode], replicas: int = 1) -> str:
    servers = ", ".join(f'"{n.url}"' for n in nodes)
    return f"""
[stream]
backend = "nats"
servers = [{servers}]
replicas = {replicas}

[streams.web]
format = "combined"
buffer_seconds = 0.5
"""


def _post(srv: Server, lines: list[bytes]) -> int:
    status, body, _ = request(
        "POST", f"{srv.url}/v1/streams/web/records", b"\n".join(lines) + b"\n"
    )
    assert status == 200, body
    return int(body["accepted"])


def _jetstream(url: str, call: Any) -> Any:
    """Run ``call(js)`` (a coroutine function) with a JetStream context of a new connection."""

    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await call(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def _state(url: str) -> Any:
    async def info(js: Any) -> Any:
        return (await js.stream_info("loglake_web")).state

    return _jetstream(url, info)


def _rows(srv: Server) -> int:
    try:
        return int(srv.query("SELECT count(*) AS n FROM logs.access")[0]["n"])
    except QueryError:
        return 0  # no table yet


@pytest.fixture()
def one_nats(tmp_path: Path) -> Iterator[NatsNode]:
    with nats_servers(tmp_path, 1) as nodes:
        yield nodes[0]


@pytest.mark.slow  # about 10 s: a nats-server, a loglake node, 3,000 records
def test_records_go_through_jetstream_to_the_lake_once(
    tmp_path: Path, one_nats: NatsNode, shared_data: Path
) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:3000]
    srv = Server.started(tmp_path / "lake", _config([one_nats]))
    try:
        acked = sum(_post(srv, lines[i : i + 500]) for i in range(0, 3000, 500))
        assert acked == 3000
        # Acknowledged means stored in JetStream: six appends, six messages (none trimmed before
        # delivery committed them).
        assert _state(one_nats.url).last_seq == 6
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 3000)
        got = srv.query("SELECT count(*) AS n, count(DISTINCT line) AS d FROM logs.access")
        assert got == [{"n": 3000, "d": 3000}]
        # Committed records are purged from JetStream (the last message stays, as the local
        # log keeps its active segment: a purge takes whole messages below the offset).
        wait_for(lambda: _state(one_nats.url).first_seq >= 6, "JetStream trimmed after commit")
        assert not (srv.home / "streams").exists()  # nothing in a local log

        # Another publisher on the subject: a message without loglake's batch header is one
        # record; the same Nats-Msg-Id inside the duplicate window is stored once.
        line = lines[0]

        async def publish_twice(js: Any) -> list[Any]:
            return [
                await js.publish("loglake.web", line, headers={"Nats-Msg-Id": "retry-1"})
                for _ in range(2)
            ]

        acks = _jetstream(one_nats.url, publish_twice)
        assert [a.duplicate for a in acks] == [None, True] or [a.duplicate for a in acks] == [
            False,
            True,
        ]
        assert acks[0].seq == acks[1].seq == 7
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 3001)
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.slow  # about 30 s: three kills and restarts of the loglake node
def test_sigkill_of_the_node_loses_nothing_and_writes_nothing_twice(
    tmp_path: Path, one_nats: NatsNode, shared_data: Path
) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()
    srv = Server.started(tmp_path / "lake", _config([one_nats]))
    try:
        acked = 0
        for round_ in range(3):
            for i in range(0, 3000, 500):
                at = round_ * 3000 + i
                acked += _post(srv, lines[at : at + 500])
            if round_:  # kill at different points: before, around, after a commit
                wait_for(lambda: _rows(srv) > 0, "a first commit")
            srv.stop(signal.SIGKILL)
            srv.start()
        assert acked == 9000
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 9000)
        got = srv.query("SELECT count(*) AS n, count(DISTINCT line) AS d FROM logs.access")
        assert got == [{"n": 9000, "d": 9000}]
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.slow  # about 30 s: a 3-node JetStream cluster, one node killed while clients post
def test_r3_cluster_keeps_every_acknowledged_record_when_a_nats_node_dies(
    tmp_path: Path, shared_data: Path
) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:6000]
    with nats_servers(tmp_path, 3) as nodes:
        srv = Server.started(tmp_path / "lake", _config(nodes, replicas=3))
        try:
            acked = sum(_post(srv, lines[i : i + 500]) for i in range(0, 3000, 500))
            nodes[0].kill()  # a quorum of two keeps accepting and serving the R3 stream
            for i in range(3000, 6000, 500):
                # Retry what a leader election refuses (a 503: nothing of it was stored).
                for _ in range(120):
                    status, body, _ = request(
                        "POST",
                        f"{srv.url}/v1/streams/web/records",
                        b"\n".join(lines[i : i + 500]) + b"\n",
                    )
                    if status == 200:
                        acked += int(body["accepted"])
                        break
                    assert status == 503, body
                    time.sleep(0.5)  # the client's back-off before it retries (Retry-After: 1)
                else:
                    raise AssertionError("the cluster never accepted the append again")
            assert acked == 6000
            srv.wait_rows("SELECT count(*) AS n FROM logs.access", 6000)
            got = srv.query("SELECT count(*) AS n, count(DISTINCT line) AS d FROM logs.access")
            assert got == [{"n": 6000, "d": 6000}]

            async def replicas(js: Any) -> int:
                return int((await js.stream_info("loglake_web")).config.num_replicas)

            assert _jetstream(nodes[1].url, replicas) == 3
        finally:
            srv.stop(signal.SIGKILL)
