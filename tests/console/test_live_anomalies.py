"""The Live page marks the windows flagged by anomaly detection on a time chart, in a real browser
against a real server: a one-second query scores its request counts, steady seconds are followed by
a spike, and the chart carries one anomaly marker per flagged window that the lake's results hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browsing import open_page

from loglake.errors import QueryError
from serving import RUNNING, Server, request
from waiting import wait_for

#: anomaly_history = 3 is the smallest history allowed, and so the shortest warm-up (3 windows).
#: idle_timeout is long so that the last window, which no later record closes, stays open for the
#: whole test (an idle stream's watermark would otherwise follow the clock and close it).
CONFIG = """
[syslog]
udp = ""
tcp = ""

[streams.spikes]
format = "combined"
table = "logs.spikes"
buffer_seconds = 0.2

[queries.spike_requests]
stream = "spikes"
window = "tumbling 1s"
sql = "SELECT count(*) AS requests FROM stream"
lateness = "0s"
idle_timeout = "1h"
anomaly_column = "requests"
anomaly_history = 3

[dashboards.spikes]
title = "Spikes"

[[dashboards.spikes.panels]]
title = "Requests per second"
query = "spike_requests"
y = ["requests"]
windows = 30
width = 12
"""

STEADY = 5  # requests in each ordinary second: a flat history, so any spike scores high
SPIKE = 50  # requests in the spike's second: robust z-score (50 - 5) / 1 = 45 >= 4
#: Requests per second, oldest first: warm-up and steady seconds, the spike, steady seconds again,
#: and a last second whose window stays open (its records only move the watermark past the rest).
SECONDS = [STEADY] * 8 + [SPIKE] + [STEADY] * 3 + [STEADY]
CLOSED = len(SECONDS) - 1
RESULTS = "analytics.spike_requests"
DEADLINE_MS = 120_000


def line(ts: datetime, n: int) -> str:
    stamp = ts.strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (
        f'10.0.{n % 3}.{n % 11} - - [{stamp}] "GET /page/{n % 7} HTTP/1.1" 200 '
        f'{200 + 37 * (n % 13)} "-" "Mozilla/5.0 (n{n % 4})"'
    )


def closed_windows(srv: Server) -> int:
    try:
        return int(srv.query(f"SELECT count(DISTINCT window_start) AS n FROM {RESULTS}")[0]["n"])
    except QueryError:
        return -1  # the results table is created with the first window


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's server (the ``page`` fixture opens its pages): ``SECONDS`` of records posted
    in time order with their own timestamps, ten minutes ago; waits until the lake holds the
    results of every window they closed."""
    server = Server.started(tmp_path_factory.mktemp("anomalies") / "home", CONFIG)
    try:
        first = datetime.now(UTC).replace(microsecond=0, tzinfo=None) - timedelta(minutes=10)
        lines = [
            line(first + timedelta(seconds=i), n)
            for i, count in enumerate(SECONDS)
            for n in range(count)
        ]
        status, body, _ = request(
            "POST", f"{server.url}/v1/streams/spikes/records", "\n".join(lines).encode() + b"\n"
        )
        assert status == 200, body
        wait_for(lambda: closed_windows(server) >= CLOSED, f"the {CLOSED} windows in the lake")
        yield server
    finally:
        if server.proc is not None:
            server.stop()
        if server in RUNNING:
            RUNNING.remove(server)


def test_flagged_anomalies_are_marked_on_the_chart(page: Any, console_server: Server) -> None:
    srv = console_server
    assert closed_windows(srv) == CLOSED  # the last second's window is still open
    latest = (
        f"SELECT strftime(window_start, '%Y-%m-%dT%H:%M:%S') AS w, requests, anomaly_score, "
        f"is_anomaly FROM {RESULTS} "
        "QUALIFY revision = max(revision) OVER (PARTITION BY window_start) AND NOT retracted"
    )
    flagged = srv.query(f"SELECT * FROM ({latest}) WHERE is_anomaly ORDER BY w")
    # The detector flagged the spike, and only it: the warm-up windows have no score.
    assert [(r["requests"], r["anomaly_score"]) for r in flagged] == [(SPIKE, SPIKE - STEADY)]
    unscored = srv.query(f"SELECT count(*) AS n FROM ({latest}) WHERE anomaly_score IS NULL")
    assert unscored == [{"n": 3}]
    _, alerts, _ = request("GET", f"{srv.url}/v1/alerts")
    assert alerts["alerts"] == []  # so every marker on the chart is an anomaly's

    open_page(page, srv, "/console/live?d=spikes")
    panel = ".live-panel[data-kind='timeseries'][data-query='spike_requests']"
    page.wait_for_function(
        "([sel, n]) => { const p = document.querySelector(sel);"
        " return p && p.dataset.state === 'ok' && p.dataset.windows === String(n)"
        " && p.querySelector('.chart')?.dataset.markers !== undefined; }",
        arg=[panel, CLOSED],
        timeout=DEADLINE_MS,
    )
    shown = int(page.get_attribute(panel, "data-windows") or 0)
    last = page.get_attribute(panel, "data-last")
    windows = srv.query(f"SELECT w, is_anomaly FROM ({latest}) ORDER BY w DESC LIMIT {shown}")
    assert windows[0]["w"] == last  # the panel shows the newest windows of the lake
    flagged_shown = sum(1 for r in windows if r["is_anomaly"])
    chart = f"{panel} .chart"
    assert page.get_attribute(chart, "data-points") == str(shown)
    markers = int(page.get_attribute(chart, "data-markers") or 0)
    assert markers >= 1
    assert markers == flagged_shown == len(flagged)
    assert page.is_hidden("#error"), page.text_content("#error")
    assert page.console_errors == []
