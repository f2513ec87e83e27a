"""Continuous queries in a running server: results in the lake and the API, exactly once."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest

from loglake.config.ready import READY_QUERIES
from serving import Server, request
from waiting import wait_for

CONFIG = """
[streams.web]
format = "combined"
buffer_seconds = 0.2

[syslog]
udp = ""
tcp = ""

[queries.status_per_minute]
stream = "web"
window = "tumbling 1m"
sql = "SELECT status, count(*) AS hits, sum(bytes) AS bytes FROM stream GROUP BY status"
lateness = "2s"
allowed_lateness = "30s"
idle_timeout = "3s"
"""

T0 = datetime(2024, 3, 1, 10, 0, 0)


def line(ts: datetime, status: int, nbytes: int, n: int) -> bytes:
    stamp = ts.strftime("%d/%b/%Y:%H:%M:%S +0000")
    return f'10.0.0.{n % 7} - - [{stamp}] "GET /q/{n} HTTP/1.1" {status} {nbytes} "-" "x"'.encode()


def post(srv: Server, lines: list[bytes]) -> None:
    status, body, _ = request(
        "POST",
        f"{srv.url}/v1/streams/web/records",
        b"\n".join(lines) + b"\n",
        {"Content-Type": "text/plain"},
    )
    assert status == 200, body


def batch_expectation(srv: Server, before: datetime) -> list[tuple]:
    rows = srv.query(
        "SELECT strftime(date_trunc('minute', ts), '%Y-%m-%dT%H:%M:%S') AS m, status, "
        "count(*) AS hits, sum(bytes)::BIGINT AS bytes FROM logs.access "
        f"WHERE ts < TIMESTAMP '{before:%Y-%m-%d %H:%M:%S}' GROUP BY ALL ORDER BY ALL"
    )
    return [(r["m"], r["status"], r["hits"], r["bytes"]) for r in rows]


def final_results(srv: Server) -> list[tuple]:
    rows = srv.query(
        "SELECT strftime(window_start, '%Y-%m-%dT%H:%M:%S') AS m, status, hits, bytes "
        "FROM analytics.status_per_minute "
        "QUALIFY revision = max(revision) OVER (PARTITION BY window_start) ORDER BY ALL"
    )
    return [(r["m"], r["status"], r["hits"], r["bytes"]) for r in rows]


def results(srv: Server) -> list[dict]:
    status, body, _ = request("GET", f"{srv.url}/v1/queries/status_per_minute/results")
    assert status == 200, body
    return body["rows"]


@pytest.mark.slow
def test_windows_in_the_lake_equal_batch_sql_and_survive_sigkill(tmp_path: Path) -> None:
    srv = Server.started(tmp_path / "lake", CONFIG)
    try:
        n = 0
        # Minutes 10:00 and 10:01, a little out of order; 10:02:05 closes both (watermark 10:02:03).
        batch1 = []
        for s in range(0, 120, 3):
            batch1.append(line(T0 + timedelta(seconds=s), 200 if s % 4 else 404, s, n))
            n += 1
        post(srv, batch1[10:] + batch1[:10])
        post(srv, [line(T0 + timedelta(seconds=125), 500, 7, n)])
        n += 1
        wait_for(lambda: len(results(srv)) >= 4, "both minutes' windows")
        assert {r["window_start"] for r in results(srv)} == {
            "2024-03-01T10:00:00",
            "2024-03-01T10:01:00",
        }
        # 10:01:50 arrives late, within the allowed 30 s after its window closed: a correction.
        post(srv, [line(T0 + timedelta(seconds=110), 500, 1000, n)])
        n += 1
        wait_for(lambda: any(r["revision"] == 1 for r in results(srv)), "the correction")
        # 10:00:30 arrives after 10:00 is final (10:01 + 30 s < watermark): counted, not used.
        post(srv, [line(T0 + timedelta(seconds=30), 500, 5, n)])
        n += 1
        wait_for(
            lambda: request("GET", f"{srv.url}/v1/queries")[1]["queries"][0]["too_late"] == 1,
            "the too-late record counted",
        )
        listing = request("GET", f"{srv.url}/v1/queries")[1]["queries"]
        assert listing[0]["name"] == "status_per_minute"
        assert (listing[0]["windows"], listing[0]["corrections"]) == (2, 1)
        expected = batch_expectation(srv, T0 + timedelta(minutes=2))
        too_late = ("2024-03-01T10:00:00", 500, 1, 5)
        assert final_results(srv) == [r for r in expected if r != too_late]

        # SIGKILL, more records, restart: every window once per revision, still equal to batch.
        srv.stop(signal.SIGKILL)
        srv.start()
        post(srv, [line(T0 + timedelta(seconds=190 + s), 200, 1, n + s) for s in range(20)])
        wait_for(
            lambda: any(
                r["m"] == "2024-03-01T10:02:00" for r in [{"m": x[0]} for x in final_results(srv)]
            ),
            "the 10:02 window after the restart",
        )
        dup = srv.query(
            "SELECT window_start, status, revision, count(*) AS c "
            "FROM analytics.status_per_minute GROUP BY ALL HAVING count(*) > 1"
        )
        assert dup == []
        expected = batch_expectation(srv, T0 + timedelta(minutes=3))
        assert final_results(srv) == [r for r in expected if r != too_late]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        metrics = opener.open(f"{srv.url}/metrics", timeout=10).read().decode()
        assert 'loglake_query_windows_total{query="status_per_minute"}' in metrics
    finally:
        srv.stop(signal.SIGKILL)


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_alert_fires_after_two_windows_and_resolves_with_a_webhook(tmp_path: Path) -> None:
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Hook.received = []
    srv = Server.started(
        tmp_path / "lake",
        CONFIG
        + f"""
[alerts.errors_high]
query = "status_per_minute"
when = "status >= 500 AND hits >= 3"
for = 2
cooldown = "0s"
webhook = "http://127.0.0.1:{hook.server_address[1]}/hook"
severity = "critical"
""",
    )
    home = srv.home
    try:
        n = 0
        # Errors in minutes 0, 1 and 2 (3 each), none in minute 3: pending at 10:00, firing at
        # 10:01, still firing (no repeat) at 10:02, resolved at 10:03.
        for minute, errors in ((0, 3), (1, 4), (2, 3), (3, 0), (4, 0)):
            lines = [
                line(
                    T0 + timedelta(minutes=minute, seconds=s), 500 if s < errors else 200, 1, n + s
                )
                for s in range(10)
            ]
            n += 10
            post(srv, lines)
        post(srv, [line(T0 + timedelta(minutes=6), 200, 1, n)])  # closes 10:00 ... 10:05
        # Notifications of one webhook go out in window order: once the resolution (10:03) has
        # arrived, a repeated firing at 10:02 would have arrived before it.
        wait_for(lambda: any(r["state"] == "resolved" for r in _Hook.received), "the resolution")
        states = [(r["state"], r["window_start"]) for r in _Hook.received]
        assert states == [("firing", "2024-03-01T10:01:00"), ("resolved", "2024-03-01T10:03:00")]
        firing = _Hook.received[0]
        assert firing["alert"] == "errors_high" and firing["severity"] == "critical"
        assert firing["rows"] == [
            {
                "window_start": "2024-03-01T10:01:00",
                "window_end": "2024-03-01T10:02:00",
                "status": 500,
                "hits": 4,
                "bytes": 4,
            }
        ]
        listing = request("GET", f"{srv.url}/v1/alerts")[1]["alerts"]
        assert listing[0]["state"] == "inactive"
        assert (listing[0]["fired"], listing[0]["resolved"]) == (1, 1)
        log_text = (home / "server.log").read_text()
        assert '"msg": "alert errors_high firing' in log_text
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        # prometheus-client sorts labels and prints values as floats.
        sent = 'loglake_alert_webhook_notifications_total{outcome="sent",stream="web"} 2.0\n'
        failed = 'loglake_alert_webhook_notifications_total{outcome="failed",stream="web"} 0.0\n'
        # Counted once the webhook has answered, which may be a moment after it received it.
        wait_for(
            lambda: (
                sent in (text := opener.open(f"{srv.url}/metrics", timeout=10).read().decode())
                and failed in text
            ),
            "both notifications counted as sent",
        )
    finally:
        srv.stop(signal.SIGKILL)
        hook.shutdown()


@pytest.mark.slow
def test_ready_made_queries_equal_batch_sql(tmp_path: Path, shared_data: Path) -> None:
    sample = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:3000]
    lines = []
    for i, raw in enumerate(sample):  # real lines, restamped over 10:00:00 - 10:02:30
        stamp = (T0 + timedelta(milliseconds=50 * i)).strftime("%d/%b/%Y:%H:%M:%S +0000")
        head, _, rest = raw.partition(b"[")
        lines.append(head + b"[" + stamp.encode() + b"]" + rest.partition(b"]")[2])
    srv = Server.started(
        tmp_path / "lake",
        '[streams.web]\nformat = "combined"\nbuffer_seconds = 0.2\nready_queries = true\n\n'
        '[syslog]\nudp = ""\ntcp = ""\n',
    )
    try:
        for i in range(0, len(lines), 500):
            post(srv, lines[i : i + 500])
        post(srv, [line(T0 + timedelta(minutes=2, seconds=20), 200, 1, 0)])  # closes 10:01
        names = sorted(q["name"] for q in request("GET", f"{srv.url}/v1/queries")[1]["queries"])
        assert names == sorted(f"web_{n}" for n in READY_QUERIES)
        wait_for(lambda: all(len(results_of(srv, n)) > 0 for n in names), "every query's window")
        lo, hi = "2024-03-01 10:00:00", "2024-03-01 10:01:00"
        for name, (sql, _) in READY_QUERIES.items():
            want = srv.query(
                f"WITH stream AS (SELECT * FROM logs.access WHERE ts >= TIMESTAMP '{lo}' "
                f"AND ts < TIMESTAMP '{hi}') SELECT * FROM ({sql}) AS r"
            )
            got = srv.query(
                f"SELECT * EXCLUDE (window_start, window_end, revision, retracted, emitted_at"
                f"{', anomaly_score, is_anomaly' if name == 'requests' else ''}) "
                f"FROM analytics.web_{name} WHERE window_start = TIMESTAMP '{lo}'"
            )
            key = json.dumps
            assert sorted(map(key, got)) == sorted(map(key, want)), name
    finally:
        srv.stop(signal.SIGKILL)


def results_of(srv: Server, name: str) -> list[dict]:
    status, body, _ = request("GET", f"{srv.url}/v1/queries/{name}/results")
    assert status == 200, body
    return body["rows"]


def test_results_are_pushed_to_event_stream_subscribers(tmp_path: Path) -> None:
    import http.client

    srv = Server.started(tmp_path / "lake", CONFIG)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", "/v1/queries/status_per_minute/events")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type", "").startswith("text/event-stream")
        assert resp.readline().startswith(b": subscribed")
        post(srv, [line(T0 + timedelta(seconds=s), 200, 10, s) for s in range(0, 60, 6)])
        post(srv, [line(T0 + timedelta(seconds=70), 200, 10, 99)])  # closes 10:00
        events = []
        while len(events) < 1:
            text = resp.readline()
            if text.startswith(b"data: "):
                events.append(json.loads(text[6:]))
        assert events[0]["window_start"] == "2024-03-01T10:00:00"
        assert (events[0]["status"], events[0]["hits"], events[0]["bytes"]) == (200, 10, 100)
        conn.close()
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.slow
def test_queries_created_through_the_api_run_and_persist(tmp_path: Path) -> None:
    srv = Server.started(tmp_path / "lake", CONFIG)
    url = f"{srv.url}/v1/queries/bytes_per_minute"
    settings = {
        "stream": "web",
        "window": "tumbling 1m",
        "sql": "SELECT sum(bytes) AS bytes FROM stream",
        "lateness": "0s",
    }
    try:

        def put(body: object) -> tuple[int, dict]:
            status, reply, _ = request(
                "PUT", url, json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            return status, reply

        assert put(settings)[0] == 201
        assert put(settings)[0] == 200  # the same again: nothing to do
        assert put({**settings, "window": "tumbling 5m"})[0] == 409
        status, reply = put({**settings, "window": "tumbling"})
        assert status == 400 and "window" in reply["error"]["message"]
        assert put({**settings, "stream": "nope"})[0] == 404
        assert put({**settings, "sql": "DELETE FROM stream"})[0] == 400
        assert put(None)[0] == 400  # an empty body (JSON null) is not a set of settings
        status, reply, _ = request("PUT", url, b"{not json", {"Content-Type": "application/json"})
        assert status == 400 and "JSON object" in reply["error"]["message"]
        status, reply, _ = request("PUT", url, b'{"sql": "\xff\xfe"}', {})  # invalid UTF-8
        assert status == 400 and "JSON object" in reply["error"]["message"]
        huge = json.dumps({**settings, "sql": "SELECT 1" + " " * (9 << 20)}).encode()
        assert request("PUT", url, huge, {})[0] == 413  # over server.max_body_bytes (8 MiB)
        status, reply = put({k: v for k, v in settings.items() if k != "sql"})
        assert status == 400 and "sql is missing" in reply["error"]["message"]
        post(srv, [line(T0 + timedelta(seconds=s), 200, 10, s) for s in range(0, 60, 5)])
        post(srv, [line(T0 + timedelta(seconds=61), 200, 1, 99)])
        wait_for(
            lambda: len(results_of(srv, "bytes_per_minute")) == 1, "the created query's window"
        )
        assert results_of(srv, "bytes_per_minute")[0]["bytes"] == 120
        srv.stop()
        srv.start()  # created queries come back after a restart
        names = {q["name"] for q in request("GET", f"{srv.url}/v1/queries")[1]["queries"]}
        assert names == {"status_per_minute", "bytes_per_minute"}
        assert request("DELETE", f"{srv.url}/v1/queries/status_per_minute")[0] == 400  # in file
        assert request("DELETE", url)[0] == 200
        assert request("DELETE", url)[0] == 404
        names = {q["name"] for q in request("GET", f"{srv.url}/v1/queries")[1]["queries"]}
        assert names == {"status_per_minute"}
        rows = srv.query("SELECT bytes FROM analytics.bytes_per_minute")  # results stay
        assert rows == [{"bytes": 120}]
    finally:
        srv.stop(signal.SIGKILL)


def test_latest_window_results_as_prometheus_gauges(tmp_path: Path) -> None:
    srv = Server.started(
        tmp_path / "lake", CONFIG + 'prometheus = true\nprometheus_labels = ["status"]\n'
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        post(
            srv, [line(T0 + timedelta(seconds=s), 200 if s % 10 else 404, 3, s) for s in range(60)]
        )
        post(srv, [line(T0 + timedelta(seconds=65), 200, 1, 99)])
        want = {
            'loglake_query_result{column="hits",query="status_per_minute",status="200"}': 54,
            'loglake_query_result{column="bytes",query="status_per_minute",status="200"}': 162,
            'loglake_query_result{column="hits",query="status_per_minute",status="404"}': 6,
            'loglake_query_result{column="bytes",query="status_per_minute",status="404"}': 18,
        }

        def samples() -> dict[str, float]:
            text = opener.open(f"{srv.url}/metrics", timeout=10).read().decode()
            return {
                ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
                for ln in text.splitlines()
                if ln.startswith("loglake_query_result{")
            }

        wait_for(lambda: len(results_of(srv, "status_per_minute")) == 2, "the window's results")
        # The gauges are set right after the results are published: wait for them too.
        wait_for(lambda: samples() != {}, "the result gauges")
        assert samples() == want
    finally:
        srv.stop(signal.SIGKILL)


def test_a_query_failing_on_a_window_does_not_stop_delivery_or_other_queries(
    tmp_path: Path,
) -> None:
    srv = Server.started(
        tmp_path / "lake",
        CONFIG
        + """
[queries.fragile]
stream = "web"
window = "tumbling 1m"
sql = "SELECT count(*) AS hits, max(CASE WHEN status = 500 THEN error('boom') END) AS x FROM stream"
lateness = "2s"
""",
    )
    try:
        post(srv, [line(T0 + timedelta(seconds=s), 200, 1, s) for s in range(0, 60, 10)])
        post(
            srv,
            [
                line(T0 + timedelta(seconds=60 + s), 500 if s == 30 else 200, 1, s)
                for s in range(0, 60, 10)
            ],
        )
        post(srv, [line(T0 + timedelta(seconds=125), 200, 1, 99)])  # closes 10:00 and 10:01
        wait_for(
            lambda: len({r["window_start"] for r in results_of(srv, "status_per_minute")}) == 2,
            "both windows of status_per_minute",
        )
        wait_for(lambda: len(results_of(srv, "fragile")) == 1, "the window of fragile")
        listing = {q["name"]: q for q in request("GET", f"{srv.url}/v1/queries")[1]["queries"]}
        fragile = listing["fragile"]
        assert (fragile["windows"], fragile["failed_windows"]) == (2, 1)
        assert "2024-03-01T10:01:00" in fragile["errors"][0] and "boom" in fragile["errors"][0]
        assert [(r["window_start"], r["hits"]) for r in results_of(srv, "fragile")] == [
            ("2024-03-01T10:00:00", 6)
        ]
        # The stream's delivery went on: every record is in the lake, no delivery error.
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 13)
        log_text = (srv.home / "server.log").read_text()
        assert "delivery failed" not in log_text
        assert "no result for the window at 2024-03-01T10:01:00" in log_text
    finally:
        srv.stop(signal.SIGKILL)
