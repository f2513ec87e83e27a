"""`loglake maintain` (retention, compaction, snapshot expiry, orphan removal) run again and again
in another process while `loglake serve` delivers a stream into the same table: every record ends
up in the lake exactly once, delivery never fails (a commit that lost the race to maintenance is
retried on the refreshed table), and queries meanwhile only ever see whole commits."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loglake.config import load_config
from loglake.query.engine import Connection
from serving import Server, request

LINE = '10.0.{a}.{b} - - [{ts}] "GET /p/{n} HTTP/1.1" 200 {n} "-" "agent-{b}"'
SEND_DEADLINE_S = 600  # a loaded machine runs `loglake maintain` slowly: keep streaming meanwhile
BATCH = 200

# Frequent commits and a short grace period, so expiry and orphan removal have work while the
# stream delivers; grace_s stays far above how long a commit (and its retries) takes.
CONFIG = """
[streams.web]
format = "combined"
buffer_seconds = 0.3

[maintenance]
interval_s = 0
grace_s = 10
keep_snapshots = 2
"""


def _line(n: int) -> bytes:
    """Record ``n``: a unique path, in one of three hour partitions written in turn (compaction
    then finds small files in each)."""
    at = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(hours=n % 3, seconds=n // 3)
    ts = at.strftime("%d/%b/%Y:%H:%M:%S +0000")
    return LINE.format(a=n % 7, b=n % 251, ts=ts, n=n).encode()


def _metric(text: str, name: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    ]
    return sum(values)


@pytest.mark.slow
def test_stream_commits_survive_maintenance_in_another_process(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    server = Server.started(home, CONFIG)
    stop = threading.Event()
    errors: list[str] = []
    maintained: list[str] = []
    counts: list[tuple[int, int]] = []
    refused: list[str] = []

    def merged() -> bool:
        return any(re.search(r"merge [1-9]", out) for out in maintained)

    def send() -> int:
        """Records sent: batches until two maintenance runs ended, one of them merging files,
        while the stream delivered."""
        sent = BATCH
        deadline = time.monotonic() + SEND_DEADLINE_S
        while time.monotonic() < deadline and not errors:
            if len(maintained) + len(refused) >= 2 and merged() and sent >= 2_000:
                break
            body = [_line(n) for n in range(sent, sent + BATCH)]
            status, reply, _ = request(
                "POST", f"{server.url}/v1/streams/web/records", b"\n".join(body)
            )
            if status != 200 or reply["accepted"] != len(body):
                errors.append(f"send: {status} {reply}")
            sent += len(body)
            time.sleep(0.1)
        return sent

    def maintain() -> None:
        while not stop.is_set():
            done = subprocess.run(
                [sys.executable, "-m", "loglake.cli", "maintain", "logs.access"],
                env=server.env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode == 0:
                maintained.append(done.stdout)
            elif "run it again" in done.stderr:
                # A clean refusal (the server's own compaction replaced files this run planned
                # to merge) is allowed, not a crash.
                refused.append(done.stderr)
            else:
                errors.append(f"maintain: {done.returncode} {done.stderr[-2000:]}")

    def query() -> None:
        # A connection of its own: the main thread polls through the server's meanwhile.
        with Connection(load_config(home=home, environ={})) as lake:
            while not stop.is_set():
                try:
                    n_d = lake.rows(
                        "SELECT count(*) AS n, count(DISTINCT path) AS d FROM logs.access"
                    )[1]
                    n, d = next(iter(n_d))
                except Exception as exc:  # e.g. a plan listing a file maintenance removed
                    errors.append(f"query: {exc}")
                    return
                counts.append((int(n), int(d)))
                time.sleep(0.2)

    try:
        status, _, _ = request(
            "POST",
            f"{server.url}/v1/streams/web/records",
            b"\n".join(_line(n) for n in range(BATCH)),
        )
        assert status == 200
        server.wait_rows("SELECT count(*) AS n FROM logs.access", BATCH)  # the table exists
        workers = [threading.Thread(target=f) for f in (maintain, query)]
        for w in workers:
            w.start()
        total = send()
        during = len(maintained) + len(refused)
        merged_during = merged()
        server.wait_rows("SELECT count(*) AS n FROM logs.access", total, timeout=120)
        # At least one maintenance ran while records were still arriving or being committed.
        deadline = time.monotonic() + 60
        while not maintained and not errors and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        for w in workers:
            w.join(150)
        assert not errors, errors
        assert during >= 2, maintained
        assert merged_during, maintained
        rows = server.query("SELECT count(*) AS n, count(DISTINCT path) AS d FROM logs.access")
        assert rows == [{"n": total, "d": total}]
        # Every answer seen meanwhile was whole: no row twice, never fewer rows than before.
        assert counts and all(n == d for n, d in counts), counts
        assert [n for n, _ in counts] == sorted(n for n, _ in counts)
        status, text, _ = _get_text(f"{server.url}/metrics")
        assert status == 200
        assert _metric(text, "loglake_consumer_failures_total") == 0
        assert _metric(text, "loglake_stream_records_delivered_total") == total
        log = (home / "server.log").read_text()
        assert "delivery failed" not in log, log[-5000:]
    finally:
        stop.set()
        server.stop()


def _get_text(url: str) -> tuple[int, str, None]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url), timeout=30) as resp:
        return resp.status, resp.read().decode(), None
