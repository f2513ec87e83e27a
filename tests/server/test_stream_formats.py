"""Formats of streams in a real ``loglake serve``: RFC 3164 stamps (no year, no zone) are read in
``ingest.syslog_timezone`` as batch ingest reads them, and ``format = "auto"`` detects formats per
group of lines, so a batch mixing access and syslog lines keeps every line in the right table."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from serving import Server, free_port, request
from waiting import wait_for

ZONE = "Asia/Kolkata"  # UTC+05:30 all year: a stamp read as UTC is 5.5 hours off
LOGGER = shutil.which("logger")


def _post(server: Server, stream: str, lines: list[str]) -> None:
    body = ("\n".join(lines) + "\n").encode()
    status, reply, _ = request("POST", f"{server.url}/v1/streams/{stream}/records", body)
    assert status == 200, reply


def _count(server: Server, sql: str) -> int:
    try:
        return int(server.query(sql)[0]["n"])
    except Exception:  # the table is not there yet
        return 0


def _bsd(at: datetime) -> str:
    """An RFC 3164 stamp (``Nov  3 21:50:19``) of ``at``'s wall time."""
    return f"{at:%b} {at.day:2d} {at:%H:%M:%S}"


def test_streams_read_rfc3164_stamps_in_the_syslog_timezone(tmp_path: Path) -> None:
    port = free_port()
    config = (
        f'[ingest]\nsyslog_timezone = "{ZONE}"\n\n'
        f'[syslog]\nudp = "127.0.0.1:{port}"\ntcp = ""\n\n'
        '[streams.sys]\nformat = "syslog"\ntable = "logs.sys"\nbuffer_seconds = 0.2\n\n'
        "[streams.any]\nbuffer_seconds = 0.2\n"
    )
    # Two days ago, so the year RFC 3164 leaves out is this one in any zone.
    when = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    local = when.astimezone(ZoneInfo(ZONE))
    lines = [f"{_bsd(local)} web1 sshd[42]: Accepted publickey for u{i}" for i in range(3)]
    want = when.strftime("%Y-%m-%d %H:%M:%S")
    server = Server.started(tmp_path / "home", config)
    try:
        _post(server, "sys", lines)
        _post(server, "any", lines)
        for table in ("logs.sys", "logs.any"):
            sql = f"SELECT count(*) AS n FROM {table}"
            wait_for(lambda sql=sql: _count(server, sql) == 3, f"the rows of {table}")
            got = server.query(
                f"SELECT DISTINCT strftime(ts, '%Y-%m-%d %H:%M:%S') AS ts, host, app FROM {table}"
            )
            assert got == [{"ts": want, "host": "web1", "app": "sshd"}], table

        if LOGGER is not None:  # a real client: util-linux logger, stamping in its local zone
            sent = datetime.now(UTC)
            where = ["--udp", "-n", "127.0.0.1", "-P", str(port)]
            subprocess.run(
                [LOGGER, *where, "--rfc3164", "-t", "zoned", "hello from Kolkata"],
                env={**os.environ, "TZ": ZONE},
                check=True,
                timeout=10,
            )
            sql = "SELECT count(*) AS n FROM logs.syslog WHERE app = 'zoned'"
            wait_for(lambda: _count(server, sql) == 1, "logger's message")
            (row,) = server.query(
                "SELECT epoch(ts) AS at, message FROM logs.syslog WHERE app = 'zoned'"
            )
            assert row["message"] == "hello from Kolkata"
            assert abs(row["at"] - sent.timestamp()) < 120, (row, sent)
    finally:
        server.stop()


ACCESS = [
    f'10.0.0.{i} - - [17/May/2015:10:05:0{i} +0000] "GET /p{i} HTTP/1.1" 200 {100 * i} "-" "curl/8"'
    for i in range(1, 8)
]
SYSLOG_5424 = [
    f"<34>1 2015-05-17T10:06:0{i}.000Z host{i}.example.com su {1000 + i} ID47 - 'su root' failed {i}"
    for i in range(1, 8)
]


@pytest.mark.slow
def test_an_auto_stream_keeps_each_format_of_a_mixed_batch_in_its_table(tmp_path: Path) -> None:
    config = '[syslog]\nudp = ""\ntcp = ""\n\n[streams.mixed]\nbuffer_seconds = 0.2\n'
    home = tmp_path / "home"
    server = Server.started(home, config)
    counts = {
        "mixed": "SELECT count(*) AS n FROM logs.mixed",
        "syslog": "SELECT count(*) AS n FROM logs.syslog",
        "rejected": "SELECT count(*) AS n FROM logs.rejected WHERE source = 'stream:mixed'",
    }
    try:
        # Mostly access lines: the access formats own the stream's table, syslog lines go to
        # logs.syslog, the one line no format parses to logs.rejected.
        batch = [ACCESS[0], SYSLOG_5424[0], ACCESS[1], ACCESS[2], SYSLOG_5424[1], "garbage !"]
        _post(server, "mixed", [*batch, ACCESS[3]])
        wait_for(
            lambda: (
                [_count(server, counts[k]) for k in ("mixed", "syslog", "rejected")] == [4, 2, 1]
            ),
            "the first batch in three tables",
        )
        server.stop()
        server = Server.started(home, config)
        # Mostly syslog lines now: the stream's table stays the access lines' (its owner is
        # kept in the table's snapshots across the restart).
        _post(server, "mixed", [SYSLOG_5424[2], ACCESS[4], *SYSLOG_5424[3:], ACCESS[5]])
        wait_for(
            lambda: (
                [_count(server, counts[k]) for k in ("mixed", "syslog", "rejected")] == [6, 7, 1]
            ),
            "the second batch",
        )
        assert server.query(
            "SELECT count(DISTINCT line) AS lines, sum(bytes) AS bytes, min(status) AS status "
            "FROM logs.mixed"
        ) == [{"lines": 6, "bytes": 100 * sum(range(1, 7)), "status": 200}]
        assert server.query(
            "SELECT count(DISTINCT line) AS lines, count(DISTINCT host) AS hosts, "
            "min(app) AS app, min(source) AS source FROM logs.syslog"
        ) == [{"lines": 7, "hosts": 7, "app": "su", "source": "stream:mixed"}]
        assert server.query(
            "SELECT text, format, target_table FROM logs.rejected WHERE source = 'stream:mixed'"
        ) == [{"text": "garbage !", "format": "combined", "target_table": "logs.mixed"}]
    finally:
        server.stop()


def _record(i: int) -> str:
    """Record ``i`` of a mixed stream: access lines and RFC 5424 lines in turns of varying
    majority, and now and then a line no format parses."""
    if i % 17 == 0:
        return f"garbage record {i}"
    if (i % 3 != 0) == ((i // 40) % 2 == 0):  # 2 of 3 in even blocks of 40, 1 in odd ones
        stamp = f"17/May/2015:10:{i % 60:02d}:00 +0000"
        return f'10.1.{i % 250}.1 - - [{stamp}] "GET /r{i} HTTP/1.1" 200 {i} "-" "curl/8"'
    return f"<34>1 2015-05-17T10:{i % 60:02d}:00.000Z h{i}.example.com app {i} ID - record {i}"


@pytest.mark.slow
def test_a_mixed_auto_stream_is_delivered_exactly_once_across_a_kill(tmp_path: Path) -> None:
    config = '[syslog]\nudp = ""\ntcp = ""\n\n[streams.mixed]\nbuffer_seconds = 0.2\n'
    home = tmp_path / "home"
    total = 800
    union = (
        "SELECT line FROM logs.mixed UNION ALL SELECT line FROM logs.syslog "
        "UNION ALL SELECT line FROM logs.rejected WHERE source = 'stream:mixed'"
    )
    count = f"SELECT count(*) AS n FROM ({union})"
    server = Server.started(home, config)
    try:
        # The first batch, mostly access lines, makes the access formats the table's owner.
        _post(server, "mixed", [_record(i) for i in range(40)])
        wait_for(lambda: _count(server, count) == 40, "the first batch")
        for start in range(40, 400, 40):
            _post(server, "mixed", [_record(i) for i in range(start, start + 40)])
        wait_for(lambda: _count(server, count) > 40, "a second commit")
        for start in range(400, 600, 40):  # acknowledged, then the server is killed
            _post(server, "mixed", [_record(i) for i in range(start, start + 40)])
        server.stop(signal.SIGKILL)
        server = Server.started(home, config)
        for start in range(600, total, 40):
            _post(server, "mixed", [_record(i) for i in range(start, start + 40)])
        wait_for(lambda: _count(server, count) >= total, "every record delivered")
        lines = [r["line"] for r in server.query(f"SELECT line FROM ({union}) ORDER BY line")]
        assert lines == list(range(total))  # each record once, in one table only
        assert _count(server, "SELECT count(*) AS n FROM logs.rejected") == len(range(0, total, 17))
        mixed = server.query("SELECT count(*) AS n, min(status) AS s FROM logs.mixed")[0]
        assert mixed["s"] == 200
        assert mixed["n"] == sum(_record(i).startswith("10.") for i in range(total))
    finally:
        server.stop()
