"""Alert webhooks against a real local HTTP receiver that fails: retried with back-off, then given up."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest

from loglake.analytics.alerts import Notifier

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
