"""Alerts on continuous query results: rules, states, and webhook notifications with retries.

A rule (``[alerts.NAME]``) is a SQL boolean over a query's result rows (``when``, e.g.
``status >= 500 AND hits > 100``), evaluated once per emitted window, in window order. Like
Prometheus alerting rules it moves through states:

* **inactive** → **pending** when a window has a matching row,
* **pending** → **firing** when ``for`` consecutive windows matched (``for = 1``: at once),
* **firing** → **resolved** (then inactive) at the first window without a match.

Notifications are sent on the transitions to firing and to resolved only (never repeated while an
alert stays firing); a new firing within ``cooldown`` of the previous firing notification is not
notified again (counted as suppressed). Each goes to the server log and, when ``webhook`` is set, as
an HTTP POST of a JSON body (see docs/analytics.md), retried with exponential back-off.
Corrections of windows already evaluated do not change an alert's state.

The :class:`Notifier` sends from one thread per webhook, so that a hanging webhook only delays its
own notifications. Every value a result row can hold is encoded (:func:`json_value`), and an
unexpected error while sending costs one notification, counted in ``errors`` and logged, never the
thread and with it every later notification.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import http.client
import itertools
import json
import logging
import math
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import Any

import polars as pl

from loglake import __version__
from loglake.config.queries import AlertSpec
from loglake.supervise import Spawn, plain_thread

log = logging.getLogger("loglake.alerts")

NOTIFY_QUEUE = 1000  # notifications waiting per webhook at most (newer ones are dropped)
RETRIES = 5  # webhook attempts per notification
RETRY_FIRST_S = 1.0  # back-off before the second attempt, doubling
TIMEOUT_S = 5.0  # one attempt in total: connect, send, the answer's status line and headers
RETRIED_STATUS = frozenset({408, 429})  # 4xx answers worth retrying; other 4xx would fail again
CLOSE_TIMEOUT_S = 2.0  # close() waits this long for queued notifications
_ANSWER_BYTES = 512  # of a refusing answer's body, quoted in the log (e.g. "invalid_payload")


@dataclass
class AlertState:
    """Where one alert stands (JSON-able; checkpointed with its query)."""

    state: str = "inactive"  # inactive | pending | firing
    consecutive: int = 0  # windows in a row that matched
    last_window: int | None = None  # window_start (µs) of the last window evaluated
    notified_at: float | None = None  # wall time of the last firing notification
    since: str | None = None  # window_start (ISO) when the current state began
    fired: int = 0
    resolved: int = 0
    suppressed: int = 0


class Alert:
    """One rule and its state."""

    def __init__(self, spec: AlertSpec) -> None:
        from loglake.analytics.engine import Sandbox

        self.spec = spec
        self.status = AlertState()
        self._sql = Sandbox(f"SELECT * FROM stream WHERE ({spec.when})", f"alert {spec.name}")

    def evaluate(self, results: pl.DataFrame, wall: float) -> list[dict[str, Any]]:
        """Evaluate every window of ``results`` (first revisions, in order); the notifications."""
        out: list[dict[str, Any]] = []
        fresh = results.filter((pl.col("revision") == 0) & ~pl.col("retracted"))
        if fresh.height == 0:
            return out
        for part in fresh.sort("window_start").partition_by("window_start", maintain_order=True):
            start = int(part.get_column("window_start").cast(pl.Int64)[0])
            if self.status.last_window is not None and start <= self.status.last_window:
                continue  # already evaluated (a replay after a restart)
            self.status.last_window = start
            rows = part.drop("revision", "retracted")
            matching = self._sql.run(rows) if rows.width else rows
            out.extend(self._step(part, matching, wall))
        return out

    def _step(
        self, window: pl.DataFrame, matching: pl.DataFrame, wall: float
    ) -> list[dict[str, Any]]:
        s = self.status
        first = window.row(0, named=True)
        start_iso = first["window_start"].isoformat()
        if matching.height:
            s.consecutive += 1
            if s.state == "firing":
                return []
            if s.consecutive < self.spec.for_windows:
                if s.state != "pending":
                    s.state, s.since = "pending", start_iso
                return []
            s.state, s.since = "firing", start_iso
            s.fired += 1
            if s.notified_at is not None and wall - s.notified_at < self.spec.cooldown:
                s.suppressed += 1
                return []
            s.notified_at = wall
            return [self._notification("firing", first, matching)]
        s.consecutive = 0
        if s.state == "firing":
            s.state, s.since = "inactive", start_iso
            s.resolved += 1
            return [self._notification("resolved", first, matching)]
        if s.state == "pending":
            s.state, s.since = "inactive", start_iso
        return []

    def _notification(
        self, state: str, window: dict[str, Any], matching: pl.DataFrame
    ) -> dict[str, Any]:
        return {
            "alert": self.spec.name,
            "state": state,
            "severity": self.spec.severity,
            "query": self.spec.query,
            "when": self.spec.when,
            "window_start": window["window_start"].isoformat(),
            "window_end": window["window_end"].isoformat(),
            "rows": [
                {k: json_value(v) for k, v in r.items()}
                for r in matching.head(20).iter_rows(named=True)
            ],
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }

    def checkpoint(self) -> dict[str, Any]:
        return dict(self.status.__dict__)

    def restore(self, state: dict[str, Any]) -> None:
        self.status = AlertState(**state)


class Notifier:
    """Sends notifications to their webhooks from background threads, with retries.

    One thread and one queue per webhook URL, so a webhook that hangs or keeps failing delays only
    its own notifications, never those of other webhooks. Each attempt is bounded in total by
    ``timeout`` seconds (connect, send, the answer's status and headers), so a receiver that trickles
    its answer cannot hold its thread either.

    Counters (per notification, cumulative): ``sent``; ``failed`` (every attempt failed, or the
    webhook refused it with a 3xx or a 4xx other than 408/429, which are not retried); ``dropped``
    (:data:`NOTIFY_QUEUE` already waiting for that webhook, or its thread is gone); ``errors`` (an
    unexpected exception while sending one: logged with the alert and traceback, the thread goes on
    with the next notification). ``alive`` is False once a webhook thread has ended other than by
    :meth:`close`; the server shows it on ``/readyz`` and ``/metrics``.
    """

    def __init__(
        self,
        retries: int = RETRIES,
        first_delay: float = RETRY_FIRST_S,
        timeout: float = TIMEOUT_S,
        queue_size: int = NOTIFY_QUEUE,
        spawn: Spawn = plain_thread,
    ) -> None:
        """``retries`` attempts per notification, ``first_delay`` seconds before the second,
        doubling after each failure; ``timeout`` seconds per attempt; ``queue_size`` notifications
        waiting per webhook at most. Webhook threads start through ``spawn`` (the server's
        supervisor: a thread that dies is counted and shown on /readyz and /metrics)."""
        self.retries = max(1, retries)
        self.first_delay = first_delay
        self.timeout = timeout
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self._closing = threading.Event()
        self._spawn = spawn
        self._started = itertools.count(1)  # thread names must be unique under a supervisor

    @property
    def sent(self) -> int:
        return self._counts["sent"]

    @property
    def failed(self) -> int:
        return self._counts["failed"]

    @property
    def dropped(self) -> int:
        return self._counts["dropped"]

    @property
    def errors(self) -> int:
        return self._counts["errors"]

    @property
    def alive(self) -> bool:
        """Whether every webhook thread runs (True before the first webhook notification);
        False after :meth:`close`, or once a thread has died."""
        with self._lock:
            workers = list(self._workers.values())
        return not self._closing.is_set() and all(w.thread.is_alive() for w in workers)

    def send(self, webhook: str, note: dict[str, Any]) -> None:
        """Log ``note`` now and queue it for ``webhook`` (``""``: log only); never blocks, never raises
        for the webhook's sake (a full queue or a dead thread is counted as ``dropped``)."""
        level = logging.WARNING if note["state"] == "firing" else logging.INFO
        log.log(
            level,
            "alert %s %s (window %s)",
            note["alert"],
            note["state"],
            note["window_start"],
            extra={"fields": {k: note.get(k) for k in ("alert", "state", "severity", "query")}},
        )
        if not webhook:
            return
        worker = self._worker(webhook)
        if worker is None:
            self._count("dropped")
            log.error(
                "alert %s: notification to webhook %s dropped: %s",
                note["alert"],
                _shown(webhook),
                "the notifier is closed" if self._closing.is_set() else "its thread has stopped",
                extra={"fields": {"alert": note["alert"], "webhook": _shown(webhook)}},
            )
            return
        try:
            worker.queue.put_nowait(note)
        except queue.Full:
            self._count("dropped")

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the threads: what is queued gets one more attempt each (no back-off waits) within
        ``timeout`` seconds in all; what is still unsent then is abandoned (the threads are
        daemons)."""
        with self._lock:
            self._closing.set()
            workers = list(self._workers.values())
        for worker in workers:
            with contextlib.suppress(queue.Full):
                worker.queue.put_nowait(None)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    def _worker(self, webhook: str) -> _Worker | None:
        """The running worker of ``webhook``, started on first use; None if closed or dead."""
        with self._lock:
            if self._closing.is_set():
                return None
            worker = self._workers.get(webhook)
            if worker is None:
                notes: queue.Queue[dict[str, Any] | None] = queue.Queue(self.queue_size)
                # Named by number: a webhook URL may carry a secret.
                thread = self._spawn(
                    f"loglake-notify-{id(self):x}-{next(self._started)}",
                    lambda: self._run(webhook, notes),
                )
                worker = self._workers[webhook] = _Worker(notes, thread)
            return worker if worker.thread.is_alive() else None

    def _run(self, webhook: str, notes: queue.Queue[dict[str, Any] | None]) -> None:
        """One webhook's thread: deliver its notifications in order until close()."""
        try:
            while (note := notes.get()) is not None:
                try:
                    self._deliver(webhook, note)
                except Exception as exc:
                    # A bug must cost one notification, never the thread and every later one.
                    self._count("errors")
                    log.exception(
                        "alert %s: unexpected error while notifying webhook %s; this notification "
                        "is lost, the next ones are sent: %r",
                        note.get("alert"),
                        _shown(webhook),
                        exc,
                        extra={"fields": {"alert": note.get("alert"), "reason": repr(exc)}},
                    )
        finally:
            if not self._closing.is_set():
                log.critical(
                    "alert notifier thread for webhook %s stopped; its notifications are dropped "
                    "until the server restarts",
                    _shown(webhook),
                    extra={"fields": {"webhook": _shown(webhook)}},
                )

    def _deliver(self, webhook: str, note: dict[str, Any]) -> None:
        """POST one notification, retrying with back-off; count it as sent or failed."""
        body = encode_notification(note)
        delay = self.first_delay
        for attempt in range(1, self.retries + 1):
            try:
                status, answer = post_json(webhook, body, self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                reason, retry = _reason(exc), True
            else:
                if 200 <= status < 300:
                    self._count("sent")
                    return
                reason = f"HTTP {status}" + (f": {answer}" if answer else "")
                retry = status >= 500 or status in RETRIED_STATUS
            if not retry:
                self._count("failed")
                log.error(
                    "alert %s: webhook %s refused the notification: %s (not retried: the same "
                    "request would be refused again; check the webhook URL and what it expects)",
                    note["alert"],
                    _shown(webhook),
                    reason,
                    extra={"fields": {"alert": note["alert"], "reason": reason}},
                )
                return
            if attempt == self.retries or self._closing.is_set():
                self._count("failed")
                log.error(
                    "alert %s: webhook %s failed %d times: %s",
                    note["alert"],
                    _shown(webhook),
                    attempt,
                    reason,
                    extra={"fields": {"alert": note["alert"], "reason": reason}},
                )
                return
            self._closing.wait(delay)  # close() ends the wait: one last attempt, then given up
            delay *= 2


@dataclass
class _Worker:
    queue: queue.Queue[dict[str, Any] | None]
    thread: threading.Thread


def post_json(url: str, body: bytes, timeout: float) -> tuple[int, str]:
    """POST ``body`` as JSON to ``url``; return the answer's status and, unless 2xx, the start of
    its body (for the log).

    ``timeout`` bounds the whole attempt, not each socket operation: a watchdog shuts the socket
    down when it expires. No proxy, no redirects (a 3xx is returned like any status). User info in
    the URL (``https://user:password@host/...``) is sent as HTTP Basic authentication. Raises
    :class:`OSError` (refused, reset, :class:`TimeoutError`) or :class:`http.client.HTTPException`
    (an answer that is not HTTP) when no status arrives, :class:`ValueError` for a URL that is not
    ``http(s)://HOST[:PORT]/...``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook {url!r} is not an http(s)://HOST/... URL")
    port = parts.port  # ValueError for a port that is not a number in 0-65535
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"loglake/{__version__}",
    }
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            # Wakes a blocked recv() or send() at once; close() from this thread would not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        if expired.is_set():  # connected after the deadline: the watchdog found no socket
            raise TimeoutError
        conn.request("POST", target, body, headers)
        resp = conn.getresponse()
        answer = b"" if 200 <= resp.status < 300 else resp.read(_ANSWER_BYTES)
        if expired.is_set():  # the shutdown ended the answer early: it looks whole, it is not
            raise TimeoutError
        return resp.status, answer.decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise TimeoutError(f"no answer within {timeout:g} s") from exc
        raise
    finally:
        watchdog.cancel()
        conn.close()


def _shown(url: str) -> str:
    """``url`` for the log: a password in it replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _reason(exc: BaseException) -> str:
    """A short reason for the log: the exception's message, or its type when it has none."""
    text = str(exc)
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer ({type(exc).__name__}: {text})"
    return text or type(exc).__name__


def encode_notification(note: dict[str, Any]) -> bytes:
    """The JSON body of a notification (every value through :func:`json_value`; never NaN)."""
    return json.dumps(json_value(note), allow_nan=False).encode()


def json_value(value: Any) -> Any:
    """``value``, anything a result row can hold, as JSON data (also inside lists, structs, maps).

    ``datetime``, ``date`` and ``time`` become ISO 8601 strings (``2024-03-01T10:01:00``, with the
    offset when the value has a time zone; ``2024-03-01``; ``10:01:00``); ``timedelta`` becomes its
    seconds; ``Decimal`` a number (an integer when its scale is 0, e.g. ``sum()`` of integers, else
    the nearest float); ``bytes`` base64 text; NaN and infinities ``null`` (as JavaScript's
    ``JSON.stringify`` does: JSON has no such numbers); map keys text; any other type its ``str()``.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, date | dt_time):  # datetime included: it is a date
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        exponent = value.as_tuple().exponent
        return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {_json_key(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    if isinstance(value, pl.Series):
        return [json_value(v) for v in value.to_list()]
    return str(value)


def _json_key(key: Any) -> str:
    value = json_value(key)
    return value if isinstance(value, str) else json.dumps(value)
