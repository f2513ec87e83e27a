"""``loglake serve`` as a real subprocess: native HTTP ingest, durability, exactly-once delivery."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import serving
from loglake.errors import QueryError
from serving import Server
from serving import free_port as _free_port
from waiting import wait_for

CONFIG = """
[streams.web]
format = "combined"
buffer_seconds = 0.5

[streams.events]
format = "json"
buffer_seconds = 0.5
"""


def request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, reply, _ = serving.request(method, url, body, headers)
    return status, reply


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "lake"
    home.mkdir()
    (home / "loglake.toml").write_text(CONFIG)
    srv = Server(home, _free_port())
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop(signal.SIGKILL)


def post_lines(srv: Server, stream: str, lines: list[bytes], kind: str = "text/plain") -> Any:
    status, body = request(
        "POST",
        f"{srv.url}/v1/streams/{stream}/records",
        b"\n".join(lines) + b"\n",
        {"Content-Type": kind},
    )
    assert status == 200, body
    return body


def test_http_ingest_reaches_the_lake(server: Server, shared_data: Path) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()
    acked = 0
    for i in range(0, len(lines), 500):
        reply = post_lines(server, "web", lines[i : i + 500])
        assert reply["rejected"] == [] and reply["first_offset"] == acked
        acked += reply["accepted"]
    assert acked == 10_000
    server.wait_rows("SELECT count(*) AS n FROM logs.access", 10_000)
    got = server.query(
        "SELECT sum(bytes) AS b, count(DISTINCT line) AS d, any_value(source) AS s FROM logs.access"
    )[0]
    text = (shared_data / "apache_combined_10k.log").read_text()
    import re

    assert got == {
        "b": sum(int(x) for x in re.findall(r'" \d{3} (\d+) "', text)),
        "d": 10_000,
        "s": "stream:web",
    }
    status, listing = request("GET", f"{server.url}/v1/streams")
    web = next(s for s in listing["streams"] if s["name"] == "web")
    assert status == 200 and web["next_offset"] == 10_000 and web["table"] == "logs.access"


def test_ndjson_rejects_gzip_and_errors(server: Server) -> None:
    body = b'{"ts": "2024-01-01T00:00:00Z", "msg": "a"}\nnot json\n[1, 2]\n{"msg": "b"}\n'
    status, reply = request(
        "POST",
        f"{server.url}/v1/streams/events/records",
        gzip.compress(body),
        {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
    )
    assert status == 200 and reply["accepted"] == 2
    assert [r["index"] for r in reply["rejected"]] == [1, 2]
    assert reply["rejected"][1]["reason"] == "not a JSON object"
    server.wait_rows('SELECT count(*) AS n FROM "logs"."json"', 2)
    status, reply = request("POST", f"{server.url}/v1/streams/nope/records", b"x\n")
    assert status == 404 and reply["error"]["code"] == "no_such_stream"
    status, reply = request("POST", f"{server.url}/v1/streams/web/records", b"x" * (9 << 20))
    assert status == 413 and "max_body_bytes" in reply["error"]["message"]
    status, reply = request(
        "POST", f"{server.url}/v1/streams/web/records", b"not gzip", {"Content-Encoding": "gzip"}
    )
    assert status == 400 and reply["error"]["code"] == "invalid_request"


def test_create_stream_through_the_api(server: Server) -> None:
    status, reply = request("PUT", f"{server.url}/v1/streams/app.logs-1", b"{}")
    assert status == 201 and reply["table"] == "logs.app_logs_1"
    post_lines(
        server, "app.logs-1", [b'{"ts": 1700000000, "level": "info"}'], "application/x-ndjson"
    )
    server.wait_rows("SELECT count(*) AS n FROM logs.app_logs_1", 1)
    status, reply = request("PUT", f"{server.url}/v1/streams/bad", b'{"format": "nope"}')
    assert status == 400 and "unknown format" in reply["error"]["message"]


@pytest.mark.slow
def test_sigkill_and_restart_deliver_every_acknowledged_record_once(
    server: Server, shared_data: Path
) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()
    acked = 0
    for round_ in range(3):
        for i in range(0, 3000, 500):
            acked += post_lines(server, "web", lines[round_ * 3000 + i : round_ * 3000 + i + 500])[
                "accepted"
            ]
        time.sleep(0.3 * round_)  # kill at different points: before, around, after a commit
        server.stop(signal.SIGKILL)
        server.start()
    assert acked == 9000
    server.wait_rows("SELECT count(*) AS n FROM logs.access", 9000)
    got = server.query("SELECT count(*) AS n, count(DISTINCT line) AS d FROM logs.access")
    assert got == [{"n": 9000, "d": 9000}]


def test_sigterm_flushes_what_was_acknowledged(server: Server, shared_data: Path) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:2000]
    post_lines(server, "web", lines)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status names SIGTERM.
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert server.query("SELECT count(*) AS n FROM logs.access") == [{"n": 2000}]


def test_refuses_non_loopback_without_keys(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "serve", "--host", "0.0.0.0"],
        env={**os.environ, "LOGLAKE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "loopback only" in proc.stderr


def _metric(text: str, name: str, stream: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{stream="{stream}"}} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {stream} missing from /metrics")


def test_metrics_count_received_accepted_delivered(server: Server, shared_data: Path) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:700]
    post_lines(server, "web", lines)
    server.wait_rows("SELECT count(*) AS n FROM logs.access", 700)
    deadline = time.monotonic() + 60
    while True:
        req = urllib.request.Request(f"{server.url}/metrics")
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req) as resp:
            text = resp.read().decode()
        if _metric(text, "loglake_stream_consumer_lag_records", "web") == 0:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert _metric(text, "loglake_stream_records_received_total", "web") == 700
    assert _metric(text, "loglake_stream_records_accepted_total", "web") == 700
    assert _metric(text, "loglake_stream_records_delivered_total", "web") == 700
    assert _metric(text, "loglake_stream_commits_total", "web") >= 1
    assert "# TYPE loglake_stream_buffered_bytes gauge" in text


def test_api_keys_required_when_configured(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    home.mkdir()
    (home / "loglake.toml").write_text(CONFIG + '\n[auth]\napi_keys = ["s3cret"]\n')
    srv = Server(home, _free_port())
    srv.start()  # /readyz needs no key
    try:
        url = f"{srv.url}/v1/streams/web/records"
        status, reply = request("POST", url, b"x\n")
        assert status == 401 and reply["error"]["code"] == "unauthorized"
        status, _ = request("POST", url, b"x\n", {"Authorization": "Bearer wrong"})
        assert status == 401
        status, reply = request("POST", url, b"x\n", {"Authorization": "Bearer s3cret"})
        assert status == 200 and reply["accepted"] == 1
        status, _ = request("GET", f"{srv.url}/metrics")
        assert status == 401
    finally:
        srv.stop(signal.SIGKILL)


def test_full_stream_pushes_back_with_503_and_recovers(tmp_path: Path, shared_data: Path) -> None:
    home = tmp_path / "lake"
    home.mkdir()
    # A 256 KiB log: a few requests fill it; delivery then commits and trims, freeing space.
    (home / "loglake.toml").write_text(
        '[streams.web]\nformat = "combined"\nbuffer_seconds = 2.0\nmax_log_bytes = 262144\n'
    )
    srv = Server(home, _free_port())
    srv.start()
    try:
        lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()
        accepted = 0
        pushed_back = None
        for i in range(0, 10_000, 250):
            status, reply = request(
                "POST", f"{srv.url}/v1/streams/web/records", b"\n".join(lines[i : i + 250])
            )
            if status == 503:
                pushed_back = reply
                break
            assert status == 200
            accepted += reply["accepted"]
        assert pushed_back is not None and pushed_back["error"]["code"] == "stream_full"
        # Once delivery has committed and trimmed, the same request goes through.
        deadline = time.monotonic() + 120
        while True:
            status, reply = request(
                "POST", f"{srv.url}/v1/streams/web/records", b"\n".join(lines[9000:9250])
            )
            if status == 200:
                accepted += reply["accepted"]
                break
            assert status == 503 and time.monotonic() < deadline
            time.sleep(0.5)
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", accepted)
    finally:
        srv.stop(signal.SIGKILL)


def _key(line: str) -> tuple[str, ...]:
    import re
    from datetime import UTC, datetime

    m = re.match(r'^(\S+) \S+ \S+ \[([^\]]+)\] "\S+ (\S+)', line)
    assert m
    ts = datetime.strptime(m.group(2), "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC)
    return (m.group(3).split("?")[0], ts.isoformat(), m.group(1))


@pytest.mark.slow
def test_tail_with_rotation_and_restart_every_line_once(tmp_path: Path, shared_data: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    home = tmp_path / "lake"
    home.mkdir()
    (home / "loglake.toml").write_text(
        CONFIG + f'\n[tail.app]\npaths = ["{logs}/access.log"]\nstream = "web"\n'
        'poll_seconds = 0.1\n\n[syslog]\nudp = ""\ntcp = ""\n'
    )
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines(keepends=True)
    srv = Server(home, _free_port())
    srv.start()
    try:
        live = logs / "access.log"
        with live.open("ab") as fh:
            fh.writelines(lines[:1000])
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 1000)
        # Rotation by rename while running: the old file gets more lines before the rename.
        with live.open("ab") as fh:
            fh.writelines(lines[1000:1500])
        live.rename(logs / "access.log.1")
        with live.open("ab") as fh:
            fh.writelines(lines[1500:2000])
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 2000)
        srv.stop(signal.SIGTERM)
        # While stopped: more lines, then a copytruncate rotation after they were read on restart.
        with live.open("ab") as fh:
            fh.writelines(lines[2000:2500])
        srv.start()
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 2500)
        (logs / "access.log.2").write_bytes(live.read_bytes())
        with live.open("r+b") as fh:
            fh.truncate(0)
        time.sleep(0.5)
        with live.open("ab") as fh:
            fh.writelines(lines[2500:3000])
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 3000)
        text_lines = [ln.rstrip(b"\n").decode() for ln in lines[:3000]]
        got = srv.query(
            "SELECT count(DISTINCT path || ts::VARCHAR || client) AS d FROM logs.access"
        )
        assert got[0]["d"] == len({_key(t) for t in text_lines})
    finally:
        if srv.proc is not None:
            srv.stop(signal.SIGKILL)


def test_logger_over_udp_and_tcp_reaches_logs_syslog(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    home.mkdir()
    udp, tcp = _free_port(), _free_port()
    (home / "loglake.toml").write_text(
        f'[syslog]\nudp = "127.0.0.1:{udp}"\ntcp = "127.0.0.1:{tcp}"\n\n'
        '[streams.syslog]\nformat = "syslog"\ntable = "logs.syslog"\nbuffer_seconds = 0.5\n'
    )
    srv = Server(home, _free_port())
    srv.start()
    try:
        send = [
            ["--udp", "--port", str(udp), "--rfc3164", "-t", "udpapp", "hello over udp"],
            [
                "--tcp",
                "--port",
                str(tcp),
                "--rfc5424",
                "-t",
                "tcpapp",
                "--msgid",
                "ID7",
                "hello over tcp",
            ],
            [
                "--tcp",
                "--port",
                str(tcp),
                "--octet-count",
                "--rfc5424",
                "-t",
                "octapp",
                "-p",
                "auth.crit",
                "octet counted",
            ],
        ]
        for args in send:
            subprocess.run(["logger", "--server", "127.0.0.1", *args], check=True, timeout=30)
        srv.wait_rows("SELECT count(*) AS n FROM logs.syslog", 3)
        rows = srv.query(
            "SELECT app, message, msgid, facility, severity FROM logs.syslog ORDER BY app"
        )
        assert rows == [
            {
                "app": "octapp",
                "message": "octet counted",
                "msgid": None,
                "facility": "auth",
                "severity": "crit",
            },
            {
                "app": "tcpapp",
                "message": "hello over tcp",
                "msgid": "ID7",
                "facility": "user",
                "severity": "notice",
            },
            {
                "app": "udpapp",
                "message": "hello over udp",
                "msgid": None,
                "facility": "user",
                "severity": "notice",
            },
        ]
    finally:
        srv.stop(signal.SIGKILL)


@pytest.fixture()
def stop_later() -> Iterator[list[Server]]:
    """Servers a test started by hand: stopped whatever happens in the test."""
    servers: list[Server] = []
    yield servers
    for srv in servers:
        if srv.proc is not None:
            srv.stop(signal.SIGKILL)


@pytest.mark.slow
def test_kill_while_clients_stream_every_acknowledged_record_exactly_once(
    tmp_path: Path, stop_later: list[Server]
) -> None:
    import random
    import threading

    home = tmp_path / "lake"
    home.mkdir()
    (home / "loglake.toml").write_text(
        '[streams.web]\nformat = "combined"\nbuffer_seconds = 0.3\n\n[syslog]\nudp = ""\ntcp = ""\n'
    )
    srv = Server(home, _free_port())
    srv.start()
    stop_later.append(srv)
    acked: set[int] = set()
    counter = iter(range(10**9))
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            ids = [next(counter) for _ in range(100)]
            body = "\n".join(
                f'10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET /r/{i} HTTP/1.1" 200 1 "-" "c"'
                for i in ids
            ).encode()
            try:
                status, reply = request("POST", f"{srv.url}/v1/streams/web/records", body)
            except (OSError, http.client.HTTPException):
                # Server down, or killed while answering: not acknowledged, try new ids later.
                time.sleep(0.05)
                continue
            if status == 200 and reply["accepted"] == len(ids):
                acked.update(ids)

    rng = random.Random(7)
    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(4):
            # Killed while clients stream into it: once this server acknowledged some records,
            # at a random moment after (however slow the machine, each kill has work to cut).
            since = len(acked)
            wait_for(lambda: len(acked) >= since + 200, "acknowledgements", interval=0.01)  # noqa: B023
            time.sleep(rng.uniform(0.0, 1.0))
            srv.stop(signal.SIGKILL)
            srv.start()
        wait_for(lambda: len(acked) > 1000, "more than 1,000 acknowledged records")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    deadline = time.monotonic() + 120
    missing: object = "the table logs.access was never created"
    while True:  # every acknowledged record arrives; unacknowledged ones may arrive too
        try:
            rows = srv.query("SELECT count(*) AS n, count(DISTINCT path) AS d FROM logs.access")[0]
            assert rows["n"] == rows["d"], f"duplicates: {rows}"
            present = {int(r["path"][3:]) for r in srv.query("SELECT path FROM logs.access")}
            if acked <= present:
                break
            missing = f"{len(acked - present)} acknowledged records missing"
        except QueryError as exc:
            # No commit has created the table yet (the servers lived under a second each).
            missing = f"query failed: {exc}"
        assert time.monotonic() < deadline, missing
        time.sleep(0.5)
    srv.stop(signal.SIGKILL)


def test_empty_body_and_invalid_utf8_lose_nothing(server: Server) -> None:
    reply = post_lines(server, "web", [])
    assert reply["accepted"] == 0 and reply["rejected"] == []
    good = b'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET /\xc3\xa9t\xe9 HTTP/1.1" 200 1 "-" "x"'
    bad = b"\xff\xfe not a log line"
    reply = post_lines(server, "web", [good, bad])
    assert reply["accepted"] == 2
    server.wait_rows("SELECT count(*) AS n FROM logs.access", 1)
    server.wait_rows("SELECT count(*) AS n FROM logs.rejected", 1)
    assert server.query("SELECT path FROM logs.access") == [{"path": "/ét\\xe9"}]
    rows = server.query("SELECT hex(raw) AS h, reason FROM logs.rejected")
    assert bytes.fromhex(rows[0]["h"]) == bad and "does not match" in rows[0]["reason"]


@pytest.mark.slow
def test_frequent_commits_are_compacted_and_rows_stay_exact(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    home.mkdir()
    (home / "loglake.toml").write_text(
        '[streams.web]\nformat = "combined"\nbuffer_seconds = 0.2\n\n[syslog]\nudp = ""\ntcp = ""\n'
    )
    srv = Server(home, _free_port())
    srv.start()
    try:
        sent = 0
        for i in range(26):  # one commit per batch: 26 small files in one hour partition
            stamp = f"01/Jan/2024:10:00:{i:02d} +0000"
            lines = [
                f'10.0.0.1 - - [{stamp}] "GET /c/{i}/{k} HTTP/1.1" 200 1 "-" "x"'.encode()
                for k in range(20)
            ]
            sent += post_lines(srv, "web", lines)["accepted"]
            srv.wait_rows("SELECT count(*) AS n FROM logs.access", sent)
            # Compaction runs beside delivery: every row is counted exactly once meanwhile.
            assert srv.query("SELECT count(*) AS n FROM logs.access") == [{"n": sent}]
        deadline = time.monotonic() + 60
        compacted = 0.0
        while compacted < 20 and time.monotonic() < deadline:  # compaction is asynchronous
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"{srv.url}/metrics"
            ) as resp:
                compacted = _metric(
                    resp.read().decode(), "loglake_stream_compacted_files_total", "web"
                )
            time.sleep(0.2)
        assert compacted >= 20
        got = srv.query("SELECT count(*) AS n, count(DISTINCT path) AS d FROM logs.access")
        assert got == [{"n": sent, "d": sent}]
        listing = subprocess.run(
            [sys.executable, "-m", "loglake.cli", "tables"],
            env=srv.env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = int(re.search(r"logs\.access\s*│\s*[\d,]+\s*│\s*(\d+)", listing).group(1))  # type: ignore[union-attr]
        assert files < 10
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.slow
def test_delivery_retries_after_a_failed_commit_and_delivers_once(tmp_path: Path) -> None:
    """A catalog that refuses commits (locked by another process) stalls delivery, never loses."""
    srv = Server.started(
        tmp_path / "lake",
        '[streams.web]\nformat = "combined"\nbuffer_seconds = 0.2\n\n[syslog]\nudp = ""\ntcp = ""\n',
    )
    home = srv.home

    def lines(first: int, count: int) -> list[bytes]:
        return [
            f'10.0.0.1 - - [01/Jan/2024:10:00:00 +0000] "GET /r/{n} HTTP/1.1" 200 1 "-" "x"'.encode()
            for n in range(first, first + count)
        ]

    try:
        post_lines(srv, "web", lines(0, 50))
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 50)
        catalog = sqlite3.connect(home / "catalog.db", timeout=5)
        catalog.execute("BEGIN EXCLUSIVE")  # every commit now fails with "database is locked"
        try:
            assert post_lines(srv, "web", lines(50, 50))["accepted"] == 50  # acks go on
            deadline = time.monotonic() + 90
            log_text = ""
            while "delivery failed" not in log_text:
                assert time.monotonic() < deadline, log_text
                time.sleep(0.5)
                log_text = (home / "server.log").read_text()
            failure = next(json.loads(x) for x in log_text.splitlines() if "delivery failed" in x)
            # A locked catalog may pass on a retry: a warning, marked transient (errors that a
            # retry cannot fix are logged as errors).
            assert failure["level"] == "warning" and failure["stream"] == "web"
            assert failure["transient"] is True and failure["consumer"] == "lake"
            assert "locked" in failure["reason"]
        finally:
            catalog.rollback()
            catalog.close()
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 100, timeout=90)
        got = srv.query("SELECT count(*) AS n, count(DISTINCT path) AS d FROM logs.access")
        assert got == [{"n": 100, "d": 100}]
        # Counted once committed: the failed attempts do not count the same rows again.
        status, listing = request("GET", f"{srv.url}/v1/streams")
        web = next(s for s in listing["streams"] if s["name"] == "web")
        assert status == 200 and (web["delivered"], web["rejected"]) == (100, 0)
    finally:
        srv.stop(signal.SIGKILL)
