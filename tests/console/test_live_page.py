"""The console's Live page in a real browser against a real server: the ready-made dashboard of the
ready-made access-log queries, a dashboard of the config file, panels that follow new windows
without a reload and show what the query's results hold, a firing alert listed and marked, and
dashboards created, edited and saved from the page."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browsing import doc_screenshot, open_page

from loglake.config.ready import ready_queries
from loglake.generate import generate_to
from serving import RUNNING, Server, request
from waiting import wait_for

CONFIG = '''
[syslog]
udp = ""
tcp = ""

[streams.web]
format = "combined"
buffer_seconds = 0.2
ready_queries = true

[streams.shop]
format = "combined"
table = "logs.shop"
buffer_seconds = 0.2

[queries.shop_hits]
stream = "shop"
window = "tumbling 1s"
sql = "SELECT status, count(*) AS hits, sum(bytes) AS bytes FROM stream GROUP BY status"
lateness = "0s"
idle_timeout = "1s"

[queries.shop_errors]
stream = "shop"
window = "tumbling 1s"
sql = """SELECT count(*) AS requests, count(*) FILTER (WHERE status >= 500) AS errors
FROM stream"""
lateness = "0s"
idle_timeout = "1s"

[alerts.shop_failing]
query = "shop_errors"
when = "errors > 0"

[alerts.web_errors]
query = "web_error_rate"
when = "error_rate > 0.1"
for = 2
severity = "critical"

[dashboards.shop]
title = "Shop"
description = "The shop's requests, one-second windows"

[[dashboards.shop.panels]]
title = "Hits per status"
query = "shop_hits"
y = ["hits"]
group = "status"

[[dashboards.shop.panels]]
title = "Requests (last second)"
query = "shop_errors"
kind = "stat"
y = ["requests"]
width = 3

[[dashboards.shop.panels]]
title = "Errors"
query = "shop_errors"
kind = "bar"
y = ["errors"]
width = 3

[[dashboards.shop.panels]]
title = "A query that does not run"
query = "gone"
kind = "table"
width = 12
'''

#: Minutes of generated traffic (10 requests/s, error bursts included) posted to the ready-made
#: queries' stream at start, ending a minute ago.
MINUTES = 20
DEADLINE_MS = 120_000


def line(ts: datetime, n: int, status: int) -> str:
    stamp = ts.strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (
        f'10.0.{n % 3}.{n % 11} - - [{stamp}] "GET /page/{n % 7} HTTP/1.1" {status} '
        f'{200 + 37 * (n % 13)} "-" "Mozilla/5.0 (n{n % 4})"'
    )


def post(srv: Server, stream: str, lines: list[str]) -> None:
    status, body, _ = request(
        "POST", f"{srv.url}/v1/streams/{stream}/records", "\n".join(lines).encode() + b"\n"
    )
    assert status == 200, body


def post_now(srv: Server, statuses: list[int]) -> str:
    """Records to ``shop`` stamped with the current second; that second as the results show it."""
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    post(srv, "shop", [line(now, n, s) for n, s in enumerate(statuses)])
    return now.isoformat()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's server (the ``page`` fixture opens its pages): the ready-made queries on
    ``web``, with ``MINUTES`` whole minutes of past traffic whose windows have all closed, and
    one-second queries, an alert and a dashboard on ``shop``."""
    server = Server.started(tmp_path_factory.mktemp("live") / "home", CONFIG)
    try:
        first = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
        first -= timedelta(minutes=MINUTES + 1)
        generated = io.BytesIO()
        generate_to(generated, MINUTES * 600, rate=10, start=first, seed=7)
        lines = generated.getvalue().decode().splitlines()
        for at in range(0, len(lines), 4000):
            post(server, "web", lines[at : at + 4000])

        def all_windows() -> bool:
            listing = request("GET", f"{server.url}/v1/queries")[1]["queries"]
            windows = {q["name"]: q["windows"] for q in listing}
            return all(windows.get(name) == MINUTES for name in ready_queries("web"))

        wait_for(all_windows, f"the {MINUTES} windows of every ready-made query")
        yield server
    finally:
        if server.proc is not None:
            server.stop()
        if server in RUNNING:
            RUNNING.remove(server)


def latest(srv: Server, table: str, columns: str) -> list[dict[str, Any]]:
    """The rows of the newest window of a results table, at its latest revision."""
    return srv.query(
        f"SELECT strftime(window_start, '%Y-%m-%dT%H:%M:%S') AS w, {columns} FROM {table} "
        "QUALIFY revision = max(revision) OVER (PARTITION BY window_start) AND NOT retracted "
        f"AND window_start = (SELECT max(window_start) FROM {table})"
    )


def panel(kind: str, query: str) -> str:
    return f".live-panel[data-kind='{kind}'][data-query='{query}']"


def wait_panels(page: Any, count: int) -> None:
    page.wait_for_function(
        "n => { const p = [...document.querySelectorAll('.live-panel')];"
        " return p.length === n && p.every(e => ['ok', 'empty', 'error'].includes(e.dataset.state)); }",
        arg=count,
        timeout=DEADLINE_MS,
    )


def test_the_ready_made_dashboard_loads_with_its_panels(page: Any, console_server: Server) -> None:
    srv = console_server
    open_page(page, srv, "/console/live")
    assert "d=web_access" in page.url  # the ready-made dashboard is shown by default
    wait_panels(page, 12)
    assert page.text_content("#live-title") == "Access log · web"
    states = page.eval_on_selector_all(".live-panel", "ps => ps.map(p => p.dataset.state)")
    assert states == ["ok"] * 12

    # Single numbers: the newest window's value of the query's results.
    for query, table, column in [
        ("web_requests", "analytics.web_requests", "requests"),
        ("web_error_rate", "analytics.web_error_rate", "error_rate"),
        ("web_unique_visitors", "analytics.web_unique_visitors", "visitors"),
    ]:
        [row] = latest(srv, table, column)
        value = page.locator(f"{panel('stat', query)} .stat-value")
        assert value.get_attribute("data-window") == row["w"]
        assert float(value.get_attribute("data-value")) == pytest.approx(row[column])

    # Time series: one point per window (and status class), as many as the lake holds.
    windows = srv.query("SELECT count(DISTINCT window_start) AS n FROM analytics.web_requests")
    assert windows == [{"n": MINUTES}]
    chart = page.locator(f"{panel('timeseries', 'web_requests')} .chart")
    assert chart.get_attribute("data-points") == str(MINUTES)
    mix = srv.query(
        "SELECT status_class FROM analytics.web_status_mix "
        "QUALIFY revision = max(revision) OVER (PARTITION BY window_start)"
    )
    chart = page.locator(f"{panel('timeseries', 'web_status_mix')} .chart")
    assert chart.get_attribute("data-points") == str(len(mix))
    classes = latest(srv, "analytics.web_status_mix", "status_class, requests")
    pie = page.locator(f"{panel('pie', 'web_status_mix')} .chart")
    assert pie.get_attribute("data-points") == str(len(classes))
    paths = latest(srv, "analytics.web_top_paths", "path, requests")
    bars = page.locator(f"{panel('bar', 'web_top_paths')} .chart")
    assert bars.get_attribute("data-points") == str(len(paths))

    # The table: the newest window's rows, as the lake has them.
    shown = page.eval_on_selector_all(
        f"{panel('table', 'web_top_clients')} tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
    )
    want = latest(srv, "analytics.web_top_clients", "client, requests, bytes")
    assert sorted((c, int(r.replace(",", "")), int(b.replace(",", ""))) for c, r, b in shown) == (
        sorted((r["client"], r["requests"], r["bytes"]) for r in want)
    )
    assert page.is_hidden("#error"), page.text_content("#error")
    doc_screenshot(page, "live")


def test_a_live_panel_follows_new_windows_without_a_reload(
    page: Any, console_server: Server
) -> None:
    srv = console_server
    open_page(page, srv, "/console/live?d=shop")
    wait_panels(page, 4)
    page.evaluate("window.__same_page = true")
    second = post_now(srv, [200, 200, 404, 200])
    stat = f"{panel('stat', 'shop_errors')} .stat-value"
    page.wait_for_function(
        "([sel, w]) => { const e = document.querySelector(sel); return e && e.dataset.window === w; }",
        arg=[stat, second],
        timeout=DEADLINE_MS,
    )
    # The number shown is the query's result for that window: its results API and its table.
    value = page.get_attribute(stat, "data-value")
    _, results, _ = request("GET", f"{srv.url}/v1/queries/shop_errors/results?limit=1000")
    [row] = [r for r in results["rows"] if r["window_start"] == second]
    assert int(value) == row["requests"] == 4
    [lake] = srv.query(
        "SELECT requests FROM analytics.shop_errors "
        f"WHERE window_start = TIMESTAMP '{second.replace('T', ' ')}'"
    )
    assert lake["requests"] == 4
    # The time series took the same window: one point per status of each window shown.
    hits = panel("timeseries", "shop_hits")
    page.wait_for_function(
        "([sel, w]) => document.querySelector(sel).dataset.last === w",
        arg=[hits, second],
        timeout=DEADLINE_MS,
    )
    shown_windows = int(page.get_attribute(hits, "data-windows"))
    rows = srv.query(
        "SELECT strftime(window_start, '%Y-%m-%dT%H:%M:%S') AS w, count(*) AS n FROM ("
        "SELECT * FROM analytics.shop_hits "
        "QUALIFY revision = max(revision) OVER (PARTITION BY window_start)) "
        f"GROUP BY ALL ORDER BY w DESC LIMIT {shown_windows}"
    )
    assert rows[0]["w"] == second
    assert page.get_attribute(f"{hits} .chart", "data-points") == str(sum(r["n"] for r in rows))
    assert page.evaluate("window.__same_page") is True  # updated in place, not reloaded
    assert page.get_attribute("#live-status", "data-state") == "live"


def test_a_firing_alert_is_listed_and_marked_on_the_chart(
    page: Any, console_server: Server
) -> None:
    srv = console_server
    open_page(page, srv, "/console/live?d=shop")
    wait_panels(page, 4)
    second = post_now(srv, [500, 200, 503])
    row = "#live-alerts tr[data-alert='shop_failing']"
    page.wait_for_function(
        "([sel, w]) => { const r = document.querySelector(sel);"
        " return r && r.dataset.state === 'firing' && r.dataset.since === w; }",
        arg=[row, second],
        timeout=DEADLINE_MS,
    )
    _, alerts, _ = request("GET", f"{srv.url}/v1/alerts")
    [alert] = [a for a in alerts["alerts"] if a["name"] == "shop_failing"]
    assert (alert["name"], alert["state"], alert["since"]) == ("shop_failing", "firing", second)
    assert page.text_content(f"{row} td:nth-child(2)") == "firing"
    # The chart of the alert's query marks the window where it started firing.
    errors = panel("bar", "shop_errors")
    page.wait_for_function(
        "sel => document.querySelector(sel + ' .chart')?.dataset.markers === '1'",
        arg=errors,
        timeout=DEADLINE_MS,
    )
    assert "firing" in (page.get_attribute(errors, "class") or "")
    assert page.text_content(f"{errors} .live-badges") == "shop_failing firing"
    [lake] = srv.query(
        "SELECT errors FROM analytics.shop_errors "
        f"WHERE window_start = TIMESTAMP '{second.replace('T', ' ')}'"
    )
    assert lake["errors"] == 2
    doc_screenshot(page, "live-alert")


def test_create_edit_and_save_a_dashboard_from_the_page(page: Any, console_server: Server) -> None:
    srv = console_server
    open_page(page, srv, "/console/live?d=shop")
    page.click("#live-new")
    page.fill("#live-name", "ops")
    page.fill("#live-title-input", "Ops board")
    page.click("#live-add-panel")
    first = page.locator(".live-editor-panel[data-panel='0']")
    first.locator("input[name=query]").fill("shop_errors")
    first.locator("select[name=kind]").select_option("stat")
    page.click("#live-save")  # no value column yet: the server's message shows, nothing is saved
    page.wait_for_selector("#error:not([hidden])")
    assert "dashboards.ops.panels[0].y is missing" in page.text_content("#error")
    assert request("GET", f"{srv.url}/v1/console/dashboards/ops")[0] == 404
    first.locator("input[name=y]").fill("requests")
    first.locator("input[name=width]").fill("4")
    page.click("#live-save")
    page.wait_for_selector("#live-grid .live-panel")
    assert "d=ops" in page.url
    assert page.is_hidden("#error")
    assert page.text_content("#live-title") == "Ops board"

    page.reload()
    page.wait_for_selector("#page[data-ready='true']")
    wait_panels(page, 1)
    assert page.text_content("#live-title") == "Ops board"
    page.click("#live-edit")
    page.fill("#live-title-input", "Ops board, edited")
    page.click("#live-add-panel")
    second = page.locator(".live-editor-panel[data-panel='1']")
    second.locator("input[name=query]").fill("shop_hits")
    second.locator("select[name=kind]").select_option("table")
    second.locator("input[name=y]").fill("status, hits")
    page.click("#live-save")
    page.wait_for_selector(".live-panel[data-kind='table']")

    page.goto(srv.url + "/console/live?d=ops")
    page.wait_for_selector("#page[data-ready='true']")
    wait_panels(page, 2)
    assert page.text_content("#live-title") == "Ops board, edited"
    kinds = page.eval_on_selector_all(".live-panel", "ps => ps.map(p => p.dataset.kind)")
    assert kinds == ["stat", "table"]
    status, saved, _ = request("GET", f"{srv.url}/v1/console/dashboards/ops")
    assert status == 200 and saved["title"] == "Ops board, edited"
    assert [(p["query"], p["kind"], p["y"], p["width"]) for p in saved["panels"]] == [
        ("shop_errors", "stat", ["requests"], 4),
        ("shop_hits", "table", ["status", "hits"], 6),
    ]
    on_disk = json.loads((srv.home / "console" / "dashboards" / "ops.json").read_text())
    assert on_disk == {k: saved[k] for k in ("title", "description", "panels")}


def test_a_config_dashboard_shows_read_only_and_saves_as_a_copy(
    page: Any, console_server: Server
) -> None:
    srv = console_server
    open_page(page, srv, "/console/live?d=shop")
    wait_panels(page, 4)
    assert page.text_content("#live-title") == "Shop"
    assert "The shop's requests" in page.text_content(".live-heading")
    assert page.is_hidden("#live-edit") and page.is_hidden("#live-delete")
    # A panel whose query does not run says so in the panel; the rest of the page works.
    gone = ".live-panel[data-query='gone']"
    assert page.get_attribute(gone, "data-state") == "error"
    assert "continuous query 'gone' does not exist" in page.text_content(gone)
    assert page.is_hidden("#error")

    page.click("#live-copy")
    assert page.input_value("#live-name") == "shop_copy"
    page.click("#live-save")
    page.wait_for_selector("#live-delete:not([hidden])")
    assert "d=shop_copy" in page.url
    status, copy, _ = request("GET", f"{srv.url}/v1/console/dashboards/shop_copy")
    _, original, _ = request("GET", f"{srv.url}/v1/console/dashboards/shop")
    assert status == 200 and copy["source"] == "saved"
    assert copy["panels"] == original["panels"]

    page.click("#live-delete")
    page.click("#live-delete")  # the second click confirms
    page.wait_for_function("() => location.search.includes('d=web_access')", timeout=DEADLINE_MS)
    assert request("GET", f"{srv.url}/v1/console/dashboards/shop_copy")[0] == 404


def test_an_unknown_dashboard_in_the_url_says_so(page: Any, console_server: Server) -> None:
    open_page(page, console_server, "/console/live?d=nope")
    assert "no dashboard 'nope'" in page.text_content(".live-body")
    assert "no dashboard 'nope'" in page.text_content("#error")
