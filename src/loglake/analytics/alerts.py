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
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from loglake.errors import ConfigError

log = logging.getLogger("loglake.alerts")

NOTIFY_QUEUE = 1000  # notifications waiting for their webhook at most (older ones are dropped)
RETRIES = 5  # webhook attempts per notification
RETRY_FIRST_S = 1.0  # back-off before the second attempt, doubling
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class AlertSpec:
    """One alert rule. ``cooldown`` is in seconds."""

    name: str
    query: str
    when: str
    for_windows: int = 1
    cooldown: float = 300.0
    webhook: str = ""
    severity: str = "warning"

    def __post_init__(self) -> None:
        if self.for_windows < 1 or self.cooldown < 0:
            raise ConfigError(f"alerts.{self.name}: for must be >= 1 and cooldown >= 0")
        if self.webhook and not self.webhook.startswith(("http://", "https://")):
            raise ConfigError(f"alerts.{self.name}.webhook must be an http(s):// URL")


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
                {k: _json(v) for k, v in r.items()} for r in matching.head(20).iter_rows(named=True)
            ],
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }

    def checkpoint(self) -> dict[str, Any]:
        return dict(self.status.__dict__)

    def restore(self, state: dict[str, Any]) -> None:
        self.status = AlertState(**state)


class Notifier:
    """Sends notifications from a background thread: log line, then webhook with retries."""

    def __init__(self, retries: int = RETRIES, first_delay: float = RETRY_FIRST_S) -> None:
        """``retries`` attempts per notification, ``first_delay`` seconds before the second,
        doubling after each failure (a 4xx/5xx answer, a refused or timed-out connection)."""
        self.retries = retries
        self.first_delay = first_delay
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(NOTIFY_QUEUE)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="loglake-notify", daemon=True)
        self._thread.start()

    def send(self, webhook: str, note: dict[str, Any]) -> None:
        level = logging.WARNING if note["state"] == "firing" else logging.INFO
        log.log(
            level,
            "alert %s %s (window %s)",
            note["alert"],
            note["state"],
            note["window_start"],
            extra={"fields": {k: note[k] for k in ("alert", "state", "severity", "query")}},
        )
        if not webhook:
            return
        try:
            self._queue.put_nowait((webhook, note))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            webhook, note = item
            body = json.dumps(note).encode()
            delay = self.first_delay
            for attempt in range(1, self.retries + 1):
                try:
                    req = urllib.request.Request(
                        webhook, data=body, headers={"Content-Type": "application/json"}
                    )
                    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                    with opener.open(req, timeout=TIMEOUT_S) as resp:
                        resp.read()
                    self.sent += 1
                    break
                except (urllib.error.URLError, OSError) as exc:
                    if attempt == self.retries:
                        self.failed += 1
                        log.error(
                            "alert %s: webhook %s failed %d times: %s",
                            note["alert"],
                            webhook,
                            self.retries,
                            exc,
                            extra={"fields": {"alert": note["alert"], "reason": str(exc)}},
                        )
                        break
                    time.sleep(delay)
                    delay *= 2

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(2)


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
