"""Alert webhooks against real local HTTP receivers: retried with back-off, then given up; every
value type of a result row encoded; no error, hanging or trickling webhook stops the notifier."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import Any, ClassVar

import duckdb
import polars as pl
import pytest

from loglake.analytics.alerts import Alert, AlertSpec, Notifier, json_value
from loglake.errors import ConfigError

NOTE = {
    "alert": "errors_high",
    "state": "firing",
    "severity": "critical",
    "query": "status_per_minute",
    "window_start": "2024-03-01T10:01:00",
    "rows": [{"status": 500, "hits": 4}],
}


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers the first ``failures`` POSTs with 503, later ones with 200; notes every attempt."""

    failures: ClassVar[int] = 0
    attempts: ClassVar[list[tuple[float, dict]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Flaky.attempts.append((time.monotonic(), body))
        status = 503 if len(_Flaky.attempts) <= _Flaky.failures else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Flaky.attempts = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


def wait_until(check, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_failing_webhook_is_retried_with_back_off_until_it_answers(receiver: str) -> None:
    _Flaky.failures = 2
    notifier = Notifier(retries=5, first_delay=0.5)
    try:
        notifier.send(receiver, NOTE)
        wait_until(lambda: notifier.sent == 1)
        assert len(_Flaky.attempts) == 3
        assert all(body == NOTE for _, body in _Flaky.attempts)  # the same body every time
        times = [t for t, _ in _Flaky.attempts]
        first_gap, second_gap = times[1] - times[0], times[2] - times[1]
        assert first_gap >= 0.5 and second_gap >= 1.0  # 0.5 s, then doubled
        assert notifier.failed == 0
    finally:
        notifier.close()


def test_a_webhook_that_never_answers_is_given_up_and_logged(
    receiver: str, caplog: pytest.LogCaptureFixture
) -> None:
    _Flaky.failures = 100
    notifier = Notifier(retries=3, first_delay=0.1)
    try:
        with caplog.at_level(logging.INFO, logger="loglake.analytics.alerts"):
            notifier.send(receiver, NOTE)
            notifier.send(receiver, {**NOTE, "state": "resolved"})
            wait_until(lambda: notifier.failed == 2)
        assert len(_Flaky.attempts) == 6  # 3 attempts each, then given up
        assert [b["state"] for _, b in _Flaky.attempts] == ["firing"] * 3 + ["resolved"] * 3
        assert notifier.sent == 0
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2
        assert "webhook" in errors[0] and "failed 3 times" in errors[0] and "503" in errors[0]
        # The notification itself is in the log whatever the webhook does.
        assert any("alert errors_high firing" in r.getMessage() for r in caplog.records)
    finally:
        notifier.close()


def test_a_refused_connection_counts_as_a_failed_attempt() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = Notifier(retries=2, first_delay=0.05)
    try:
        notifier.send(f"http://127.0.0.1:{port}/hook", NOTE)
        wait_until(lambda: notifier.failed == 1)
        assert notifier.sent == 0
    finally:
        notifier.close()


# -- a scripted receiver: per path, what to answer ------------------------------------------------


class _Receiver:
    """A real HTTP/1.1 receiver on 127.0.0.1 whose answers are scripted per path.

    ``script[path]`` lists the answers to the coming requests to ``path`` (then ``ok``): ``ok``
    (200), a status code (``"400"``), ``garbage`` (a line that is not HTTP), ``hang`` (no answer
    until ``release`` is set) or ``drip`` (a status line, then one header byte every 0.1 s, forever).
    ``requests`` holds ``(path, decoded JSON body)`` of every request, ``headers`` their headers
    (lower-case names), ``hanging`` how many are held.
    """

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.requests: list[tuple[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.hanging = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                receiver._serve(self)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str) -> list[Any]:
        with self._lock:
            return [body for p, body in self.requests if p == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, handler: socketserver.StreamRequestHandler) -> None:
        request_line = handler.rfile.readline()
        headers = {}
        while (line := handler.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = handler.rfile.read(int(headers.get("content-length", "0")))
        path = request_line.split()[1].decode()
        with self._lock:
            self.requests.append((path, json.loads(body)))
            self.headers.append(headers)
            steps = self.script.get(path, [])
            action = steps.pop(0) if steps else "ok"
        out = handler.wfile
        if action == "ok":
            out.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        elif action.isdigit():
            out.write(
                b"HTTP/1.1 %s Nope\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
                b"bad_payload\r\n" % action.encode()
            )
        elif action == "garbage":
            out.write(b"this is not HTTP\r\n\r\n")
        elif action == "hang":
            with self._lock:
                self.hanging += 1
            self.release.wait(60)
        elif action == "drip":
            out.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            deadline = time.monotonic() + 60
            with contextlib.suppress(OSError):
                while not self.release.is_set() and time.monotonic() < deadline:
                    out.write(b"x")
                    time.sleep(0.1)


@pytest.fixture
def scripted() -> Iterator[_Receiver]:
    receiver = _Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


def _result_row() -> pl.DataFrame:
    """One window's result row as DuckDB hands it over: a value of every type worth naming."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sql = r"""
        SELECT TIMESTAMP '2024-03-01 10:01:00' AS window_start,
               TIMESTAMP '2024-03-01 10:02:00' AS window_end,
               0 AS revision, false AS retracted,
               DATE '2024-03-01' AS day,
               TIMESTAMP '2024-03-01 10:01:02.5' AS first_seen,
               TIMESTAMPTZ '2024-03-01 10:01:02+02' AS first_seen_tz,
               TIME '10:11:12.345' AS at,
               12.34::DECIMAL(10, 2) AS ratio,
               (SELECT sum(x) FROM (VALUES (4611686018427387904), (4611686018427387903)) t(x))
                   AS huge,
               '\x00\xFF'::BLOB AS raw,
               [500, 503] AS statuses,
               {'path': '/x', 'days': [DATE '2024-01-01'], 'n': 2.5::DECIMAL(4, 1)} AS detail,
               MAP {'GET': 3} AS by_method,
               'nan'::DOUBLE AS not_a_number,
               '-inf'::DOUBLE AS minus_infinity,
               NULL AS nothing
    """
    row = pl.DataFrame(pl.from_arrow(con.sql(sql).arrow()))
    con.close()
    return row.with_columns(took=pl.lit(timedelta(minutes=90)))


EXPECTED_ROW = {
    "window_start": "2024-03-01T10:01:00",
    "window_end": "2024-03-01T10:02:00",
    "day": "2024-03-01",
    "first_seen": "2024-03-01T10:01:02.500000",
    "first_seen_tz": "2024-03-01T08:01:02+00:00",
    "at": "10:11:12.345000",
    "ratio": 12.34,
    "huge": 9223372036854775807,  # sum() of integers: HUGEINT, exact
    "raw": "AP8=",  # base64 of 00 FF
    "statuses": [500, 503],
    "detail": {"path": "/x", "days": ["2024-01-01"], "n": 2.5},
    "by_method": {"GET": 3},
    "not_a_number": None,
    "minus_infinity": None,
    "nothing": None,
    "took": 5400.0,
}


# -- value types ----------------------------------------------------------------------------------


def test_every_value_type_of_a_result_row_reaches_the_webhook(scripted: _Receiver) -> None:
    """Finding 14: a DATE in a result row killed the notifier thread; nothing was sent again."""
    row = _result_row().drop("revision", "retracted").row(0, named=True)
    notifier = Notifier(retries=1)
    try:
        notifier.send(f"{scripted.url}/hook", {**NOTE, "rows": [row]})
        notifier.send(f"{scripted.url}/hook", {**NOTE, "state": "resolved", "rows": []})
        wait_until(lambda: notifier.sent == 2)
        first, second = scripted.bodies("/hook")
        assert first["rows"] == [EXPECTED_ROW]
        assert second["state"] == "resolved"
        assert (notifier.failed, notifier.dropped, notifier.errors) == (0, 0, 0)
    finally:
        notifier.close()


def test_an_alert_on_a_row_with_dates_notifies_its_webhook(scripted: _Receiver) -> None:
    """The whole path: a rule over a result row holding every type, evaluated, then POSTed."""
    alert = Alert(AlertSpec(name="types", query="q", when="day = DATE '2024-03-01'"))
    # Without the duration: the rule's SQL gets its rows through DuckDB, whose INTERVAL polars
    # cannot read back.
    (note,) = alert.evaluate(_result_row().drop("took"), time.time())
    assert alert.status.state == "firing"
    notifier = Notifier(retries=1)
    try:
        notifier.send(f"{scripted.url}/hook", note)
        wait_until(lambda: notifier.sent == 1)
    finally:
        notifier.close()
    (body,) = scripted.bodies("/hook")
    assert body["window_start"] == "2024-03-01T10:01:00"
    (row,) = body["rows"]
    assert row["day"] == "2024-03-01" and row["first_seen_tz"] == "2024-03-01T08:01:02+00:00"
    assert row["statuses"] == [500, 503] and row["detail"]["days"] == ["2024-01-01"]
    assert row["huge"] == 9223372036854775807 and row["ratio"] == 12.34
    assert row["not_a_number"] is None and row["raw"] == "AP8="


def test_json_value() -> None:
    assert json_value(date(2024, 3, 1)) == "2024-03-01"
    assert json_value(datetime(2024, 3, 1, 10, 1, tzinfo=UTC)) == "2024-03-01T10:01:00+00:00"
    assert json_value(dt_time(10, 11, 12)) == "10:11:12"
    assert json_value(timedelta(milliseconds=1500)) == 1.5
    assert json_value(Decimal("12.30")) == 12.3 and json_value(Decimal("1E+3")) == 1000
    assert json_value(Decimal("NaN")) is None and json_value(float("inf")) is None
    assert json_value(b"\x00\xff") == "AP8="
    assert json_value({date(2024, 1, 1): [1, (2, 3)], 5: None}) == {
        "2024-01-01": [1, [2, 3]],
        "5": None,
    }
    assert json_value(pl.Series([1, 2])) == [1, 2]
    assert json_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"


# -- a notifier that cannot die unnoticed ---------------------------------------------------------


class _Unprintable:
    """A value no encoder can turn into text: ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("cannot print me")


def test_an_unexpected_error_is_counted_and_the_next_notification_goes_out(
    scripted: _Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(retries=2, first_delay=0.05)
    hook = f"{scripted.url}/hook"
    try:
        with caplog.at_level(logging.INFO, logger="loglake.alerts"):
            notifier.send(hook, {**NOTE, "rows": [{"value": _Unprintable()}]})
            notifier.send(hook, {**NOTE, "state": "resolved"})
            wait_until(lambda: notifier.sent == 1)
        assert notifier.errors == 1 and notifier.failed == 0
        assert [b["state"] for b in scripted.bodies("/hook")] == ["resolved"]
        assert notifier.alive
        (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "alert errors_high" in error.getMessage() and "cannot print me" in error.getMessage()
        assert error.exc_info is not None  # with the traceback
    finally:
        notifier.close()


def test_an_answer_that_is_not_http_is_a_failed_attempt_and_the_next_goes_out(
    scripted: _Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """``garbage`` made http.client raise BadStatusLine, which killed the thread before."""
    scripted.script["/hook"] = ["garbage", "garbage"]
    notifier = Notifier(retries=2, first_delay=0.05)
    try:
        with caplog.at_level(logging.INFO, logger="loglake.alerts"):
            notifier.send(f"{scripted.url}/hook", NOTE)
            notifier.send(f"{scripted.url}/hook", {**NOTE, "state": "resolved"})
            wait_until(lambda: notifier.sent == 1)
        assert (notifier.failed, notifier.errors) == (1, 0)
        assert [b["state"] for b in scripted.bodies("/hook")] == ["firing", "firing", "resolved"]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "failed 2 times: not an HTTP answer" in errors[0]
    finally:
        notifier.close()


def test_alive_until_closed_and_nothing_is_queued_after(scripted: _Receiver) -> None:
    notifier = Notifier(retries=1)
    assert notifier.alive  # no webhook used yet
    notifier.send(f"{scripted.url}/hook", NOTE)
    wait_until(lambda: notifier.sent == 1)
    assert notifier.alive
    notifier.close()
    assert not notifier.alive
    notifier.send(f"{scripted.url}/hook", NOTE)
    assert notifier.dropped == 1 and notifier.sent == 1


def test_webhook_threads_run_under_the_supervisor(scripted: _Receiver) -> None:
    from loglake.supervise import Supervisor, supervised

    supervisor = Supervisor()
    notifier = Notifier(retries=1, spawn=supervised(supervisor, restart=False))
    notifier.send(f"{scripted.url}/a", NOTE)
    notifier.send(f"{scripted.url}/b", NOTE)
    wait_until(lambda: notifier.sent == 2)
    workers = supervisor.workers()
    # One thread per webhook, each watched (crashes counted, a dead one shown on /readyz).
    assert len(workers) == 2 and all(w.name.startswith("loglake-notify-") for w in workers)
    assert all(w.running for w in workers) and supervisor.dead() == []
    notifier.close()
    wait_until(lambda: all(w.finished for w in workers))
    assert supervisor.dead() == []  # a normal stop is not a death


# -- which answers are retried, and how long one may take -----------------------------------------


@pytest.mark.parametrize(("status", "attempts"), [("400", 1), ("404", 1), ("408", 3), ("429", 3)])
def test_4xx_answers_are_not_retried_except_408_and_429(
    scripted: _Receiver, caplog: pytest.LogCaptureFixture, status: str, attempts: int
) -> None:
    scripted.script["/hook"] = [status] * attempts
    notifier = Notifier(retries=3, first_delay=0.05)
    try:
        with caplog.at_level(logging.INFO, logger="loglake.alerts"):
            notifier.send(f"{scripted.url}/hook", NOTE)
            wait_until(lambda: notifier.failed == 1)
            notifier.send(f"{scripted.url}/hook", {**NOTE, "state": "resolved"})
            wait_until(lambda: notifier.sent == 1)  # what follows is still sent
        states = [b["state"] for b in scripted.bodies("/hook")]
        assert states == ["firing"] * attempts + ["resolved"]
        (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert f"HTTP {status}: bad_payload" in error
        assert ("not retried" in error) == (attempts == 1)
    finally:
        notifier.close()


def test_a_hanging_webhook_does_not_hold_up_another(scripted: _Receiver) -> None:
    scripted.script["/dead"] = ["hang"] * 10
    notifier = Notifier(retries=5, timeout=60)
    try:
        for _ in range(3):
            notifier.send(f"{scripted.url}/dead", NOTE)
        wait_until(lambda: scripted.hanging == 1)
        notifier.send(f"{scripted.url}/live", NOTE)
        wait_until(lambda: notifier.sent == 1)
        # Delivered while the dead webhook still holds its first notification.
        assert scripted.hanging == 1 and notifier.failed == 0
        assert scripted.bodies("/live") == [NOTE]
    finally:
        scripted.release.set()
        notifier.close(timeout=30)  # each waiting notification gets its last attempt, then ends


def test_an_attempt_is_bounded_in_total_when_the_answer_trickles(
    scripted: _Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver sending one byte every 0.1 s never trips a per-read timeout; the total one ends it."""
    scripted.script["/slow"] = ["drip"]
    notifier = Notifier(retries=1, timeout=1.0)
    try:
        with caplog.at_level(logging.INFO, logger="loglake.alerts"):
            notifier.send(f"{scripted.url}/slow", NOTE)
            wait_until(lambda: notifier.failed == 1)
        (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert "no answer within 1 s" in error
    finally:
        notifier.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "http"),
        ("http://example.com:99999/hook", "port"),
        ("http://example.com/a hook", "spaces"),
        ("http:///hook", "no host"),
    ],
)
def test_webhook_urls_are_checked_with_the_rule(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AlertSpec(name="a", query="q", when="true", webhook=url)


def test_user_info_in_the_url_is_basic_auth_and_not_logged(
    scripted: _Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.script["/auth"] = ["401"]
    host = scripted.url.removeprefix("http://")
    notifier = Notifier(retries=3)
    try:
        with caplog.at_level(logging.INFO, logger="loglake.alerts"):
            notifier.send(f"http://alerts:s3cret@{host}/auth", NOTE)
            wait_until(lambda: notifier.failed == 1)
    finally:
        notifier.close()
    (headers,) = scripted.headers  # a 401 is not retried either
    assert headers["authorization"] == "Basic YWxlcnRzOnMzY3JldA=="  # alerts:s3cret
    assert headers["content-type"] == "application/json"
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"http://alerts:***@{host}/auth" in error and "s3cret" not in caplog.text
