"""The Explore page end to end in a real browser against a real server: filtering changes the
histogram and the records to the counts SQL gives, scrolling loads past 1,000 records in SQL's
order, the CSV download is byte for byte ``loglake query --format csv``, a record opens with its
fields, its line and the records around it, top values add and remove filter terms, the live tail
shows a record posted to the stream, a bookmarked URL reproduces the view, a bad WHERE shows the
server's message."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

from browsing import doc_screenshot, open_page

from serving import Server, request

ACCESS = "logs.access"
ORDER = "ts DESC, source DESC NULLS LAST, line DESC NULLS LAST"
READY = "document.querySelector('.explore-results')?.dataset.state === 'ready'"


def span(server: Server) -> tuple[str, str]:
    """An absolute range holding every generated record."""
    row = server.query(f"SELECT min(ts) AS lo, max(ts) AS hi FROM {ACCESS}")[0]
    lo = datetime.fromisoformat(row["lo"]).replace(microsecond=0)
    hi = datetime.fromisoformat(row["hi"]).replace(microsecond=0) + timedelta(seconds=1)
    return lo.isoformat(" "), hi.isoformat(" ")


def where_of(lo: str, hi: str, condition: str = "") -> str:
    out = f"ts >= TIMESTAMP '{lo}' AND ts < TIMESTAMP '{hi}'"
    return f"{out} AND {condition}" if condition else out


def count(server: Server, where: str) -> int:
    return int(server.query(f"SELECT count(*) AS n FROM {ACCESS} WHERE {where}")[0]["n"])


def explore_url(**params: str) -> str:
    return "/console/explore?" + urllib.parse.urlencode(params)


def wait_total(page: Any, total: int) -> None:
    """Wait until the search finished with ``total`` matching records."""
    page.wait_for_function(
        f"n => {READY} && document.querySelector('.explore-results').dataset.total === String(n)",
        arg=total,
        timeout=60_000,
    )


def histogram_counts(page: Any) -> list[int]:
    text = page.get_attribute(".explore-histogram", "data-counts")
    return [int(v) for v in text.split(",")]


def grid_header(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        ".explore-grid .grid-head .grid-cell", "cells => cells.map(c => c.textContent)"
    )


def grid_row(page: Any, i: int) -> list[str]:
    selector = f".explore-grid .grid-row[data-row='{i}']:not(.loading)"
    page.wait_for_selector(selector)
    return page.eval_on_selector_all(
        f"{selector} .grid-cell",
        "cells => cells.map(c => c.classList.contains('null') ? null : c.textContent)",
    )


def shown(value: Any) -> str:
    """A value as the grid shows it (times as the API sends them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", value):
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(value)


def submit(page: Any, q: str | None = None, where: str | None = None) -> None:
    if q is not None:
        page.fill("input[name=q]", q)
    if where is not None:
        page.fill("input[name=where]", where)
    page.press("input[name=q]", "Enter")


def test_filter_changes_histogram_and_rows_to_sql_counts(page: Any, console_server: Server) -> None:
    lo, hi = span(console_server)
    open_page(page, console_server, explore_url(**{"from": lo, "to": hi}))
    wait_total(page, count(console_server, where_of(lo, hi)))
    assert page.input_value("select[name=table]") == ACCESS
    assert grid_header(page) == [
        "ts",
        "status",
        "method",
        "path",
        "client",
        "ua_browser",
        "log line",
    ]

    submit(page, q="status:404 -method:POST")
    condition = "status = 404 AND method IS DISTINCT FROM 'POST'"
    wanted = console_server.query(f"SELECT ts FROM {ACCESS} WHERE {where_of(lo, hi, condition)}")
    wait_total(page, len(wanted))
    # each bar counts the records of its bucket
    bucket = page.get_attribute(".explore-histogram", "data-bucket")
    assert bucket == "30m"
    counts = histogram_counts(page)
    assert sum(counts) == len(wanted)
    origin = datetime.fromisoformat(lo).replace(tzinfo=UTC).timestamp() // 1800 * 1800
    per_bucket = [0] * len(counts)
    for row in wanted:
        at = datetime.fromisoformat(row["ts"]).replace(tzinfo=UTC).timestamp()
        per_bucket[int((at - origin) // 1800)] += 1
    assert counts == per_bucket
    assert page.get_attribute(".explore-histogram", "data-points") == str(len(counts))
    # the rows: newest first, in SQL's order
    want = console_server.query(
        f"SELECT ts, status, method, path, client FROM {ACCESS} "
        f"WHERE {where_of(lo, hi, condition)} ORDER BY {ORDER} LIMIT 5"
    )
    for i, row in enumerate(want):
        cells = grid_row(page, i)
        assert cells[:5] == [shown(row[k]) for k in ("ts", "status", "method", "path", "client")]
    top = page.wait_for_selector(".explore-top[data-state='ready'] [data-field='status'] tr")
    assert top.get_attribute("data-value") == "404"
    assert top.get_attribute("data-count") == str(len(wanted))
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    assert state["q"] == ["status:404 -method:POST"]
    assert state["from"] == [lo] and state["to"] == [hi] and state["table"] == [ACCESS]
    submit(page, q="")
    wait_total(page, count(console_server, where_of(lo, hi)))
    page.wait_for_selector(".explore-top[data-state='ready']")
    page.wait_for_selector("#busy", state="hidden")
    doc_screenshot(page, "explore")
    assert page.is_hidden("#error")
    assert page.console_errors == []


def test_scrolling_loads_past_1000_records_in_sql_order(page: Any, console_server: Server) -> None:
    lo, hi = span(console_server)
    open_page(page, console_server, explore_url(**{"from": lo, "to": hi, "q": "-status:200"}))
    total = count(console_server, where_of(lo, hi, "status IS DISTINCT FROM 200"))
    assert total > 2000
    wait_total(page, total)
    body = ".explore-grid .grid-body"
    deadline = time.monotonic() + 120
    # The grid takes the loaded records on its next render: wait for both counts.
    while (
        int(page.get_attribute(".explore-results", "data-loaded")) <= 1500
        or int(page.get_attribute(".explore-grid .grid", "data-rows")) <= 1500
    ):
        assert time.monotonic() < deadline, "the records did not load past 1,500"
        page.eval_on_selector(body, "b => { b.scrollTop = b.scrollHeight; }")
        page.wait_for_timeout(100)
    want = console_server.query(
        f"SELECT ts, status, method, path FROM {ACCESS} "
        f"WHERE {where_of(lo, hi, 'status IS DISTINCT FROM 200')} ORDER BY {ORDER} "
        "LIMIT 8 OFFSET 1200"
    )
    page.eval_on_selector(body, "b => { b.scrollTop = 1200 * 24; }")
    for i, row in enumerate(want):
        cells = grid_row(page, 1200 + i)
        assert cells[:4] == [shown(row[k]) for k in ("ts", "status", "method", "path")]
    # only the rows in view are in the page
    assert page.eval_on_selector_all(".explore-grid .grid-row", "rows => rows.length") < 100
    assert page.console_errors == []


def test_csv_download_is_loglake_query_byte_for_byte(page: Any, console_server: Server) -> None:
    lo, hi = span(console_server)
    open_page(
        page, console_server, explore_url(**{"from": lo, "to": hi, "q": 'method:GET "chrome"'})
    )
    page.wait_for_function(READY, timeout=60_000)
    with page.expect_download() as info:
        page.click("a.explore-download[data-format='csv']")
    got = open(info.value.path(), "rb").read()  # noqa: SIM115
    text_columns = (
        "client",
        "user",
        "method",
        "path",
        "query",
        "protocol",
        "referrer",
        "user_agent",
    )
    free = " OR ".join(f"contains(lower({c}), 'chrome')" for c in text_columns)
    condition = f"method = 'GET' AND ({free})"
    sql = f"SELECT * FROM {ACCESS} WHERE {where_of(lo, hi, condition)} ORDER BY {ORDER}"
    done = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "query", "--format", "csv", sql],
        env=console_server.env(),
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert got == done.stdout
    assert got.count(b"\r\n") == 1 + int(page.get_attribute(".explore-results", "data-total"))
    assert info.value.suggested_filename.endswith(".csv")


def test_a_record_opens_with_its_fields_line_and_neighbours(
    page: Any, console_server: Server
) -> None:
    lo, hi = span(console_server)
    open_page(page, console_server, explore_url(**{"from": lo, "to": hi, "q": "status:200"}))
    page.wait_for_function(READY, timeout=60_000)
    want = console_server.query(
        f"SELECT * FROM {ACCESS} WHERE {where_of(lo, hi, 'status = 200')} ORDER BY {ORDER} "
        "LIMIT 1 OFFSET 3"
    )[0]
    page.click(".explore-grid .grid-row[data-row='3']")
    detail = page.wait_for_selector(".explore-detail:not([hidden])")
    for name, value in want.items():
        cell = detail.query_selector(f"tr[data-field='{name}'] td")
        assert cell is not None, name
        assert cell.text_content() == ("null" if value is None else shown(value)), name
    # the line, rebuilt from the fields, is the line of the file it was ingested from
    source_lines = open(want["source"], encoding="utf-8").read().splitlines()  # noqa: SIM115
    assert page.text_content(".explore-line") == source_lines[want["line"] - 1]
    # records of the same client around it
    page.click(".explore-around-button")
    around = page.wait_for_selector(".explore-around[data-state='ready']")
    client, at = want["client"], want["ts"].replace("T", " ")
    day = "INTERVAL 1 DAY"
    newer = count(
        console_server,
        f"client = '{client}' AND ts > TIMESTAMP '{at}' AND ts <= TIMESTAMP '{at}' + {day}",
    )
    same = count(console_server, f"client = '{client}' AND ts = TIMESTAMP '{at}'")
    older = count(
        console_server,
        f"client = '{client}' AND ts < TIMESTAMP '{at}' AND ts >= TIMESTAMP '{at}' - {day}",
    )
    assert int(around.get_attribute("data-rows")) == sum(min(n, 25) for n in (newer, same, older))
    assert (
        page.text_content(".explore-around-table tr.explore-anchor td:last-child")
        == (source_lines[want["line"] - 1])
    )
    page.eval_on_selector(".explore-detail", "d => { d.scrollTop = 0; }")
    doc_screenshot(page, "explore-record")
    assert page.console_errors == []


def test_top_values_include_and_exclude(page: Any, console_server: Server) -> None:
    lo, hi = span(console_server)
    open_page(page, console_server, explore_url(**{"from": lo, "to": hi}))
    page.wait_for_function(READY, timeout=60_000)
    page.wait_for_selector(".explore-top[data-state='ready']")
    page.click(".explore-top [data-field='status'] tr[data-value='404'] button.include")
    wait_total(page, count(console_server, where_of(lo, hi, "status = 404")))
    assert page.input_value("input[name=q]") == "status:404"
    page.wait_for_selector(
        ".explore-top[data-state='ready'] [data-field='method'] tr[data-value='GET']"
    )
    page.click(".explore-top [data-field='method'] tr[data-value='GET'] button.exclude")
    wait_total(page, count(console_server, where_of(lo, hi, "status = 404 AND method <> 'GET'")))
    assert page.input_value("input[name=q]") == "status:404 -method:GET"
    # the include button of a record's field replaces the exclusion with an inclusion
    page.click(".explore-grid .grid-row[data-row='0']")
    page.wait_for_selector(".explore-detail:not([hidden])")
    page.click(".explore-detail tr[data-field='protocol'] button.include")
    protocol = page.input_value("input[name=q]").split("protocol:")[1]
    assert page.input_value("input[name=q]") == f"status:404 -method:GET protocol:{protocol}"
    condition = f"status = 404 AND method <> 'GET' AND protocol = '{protocol}'"
    wait_total(page, count(console_server, where_of(lo, hi, condition)))
    assert page.console_errors == []


def test_live_tail_shows_a_posted_record(page: Any, console_server: Server) -> None:
    open_page(page, console_server, explore_url(**{"from": "now-1h", "to": "now"}))
    page.wait_for_function(READY, timeout=60_000)
    page.click("button.explore-live")
    page.wait_for_selector(".explore-tail:not([hidden])")
    path = f"/live/{time.time_ns()}"
    stamp = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    line = f'10.1.2.3 - - [{stamp}] "GET {path} HTTP/1.1" 200 42 "-" "live-test"'
    status, reply, _ = request(
        "POST",
        f"{console_server.url}/v1/streams/web/records",
        (line + "\n").encode(),
        {"Content-Type": "text/plain"},
    )
    assert status == 200 and reply["accepted"] == 1, reply
    page.wait_for_function(
        "p => [...document.querySelectorAll('.explore-grid .grid-row')].some(r => r.textContent.includes(p))",
        arg=path,
        timeout=60_000,
    )
    assert int(page.get_attribute(".explore-tail", "data-new")) >= 1
    assert path in page.text_content(".explore-grid .grid-row[data-row='0']")
    # paused: nothing more comes
    page.click("button.explore-live")
    assert page.is_hidden(".explore-tail")
    assert page.console_errors == []


def test_a_bookmarked_url_reproduces_the_view(page: Any, console_server: Server) -> None:
    lo, hi = span(console_server)
    open_page(page, console_server, explore_url(**{"from": lo, "to": hi}))
    page.wait_for_function(READY, timeout=60_000)
    submit(page, q="-status:200", where="bytes > 1000")
    page.wait_for_function(
        READY + " && document.querySelector('input[name=q]').value === '-status:200'"
    )
    page.uncheck("input[data-field='client']")
    page.check("input[data-field='referrer']")
    page.wait_for_selector(".explore-top[data-state='ready'] [data-field='referrer']")
    # drag across the histogram: zoom into the middle of the range
    box = page.query_selector(".explore-histogram .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    page.wait_for_function(f"() => document.querySelector('input[name=from]').value !== {lo!r}")
    page.wait_for_function(READY)
    url = page.url
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert state["q"] == ["-status:200"] and state["where"] == ["bytes > 1000"]
    assert state["fields"] == ["status,method,path,ua_browser,referrer"]
    start, end = state["from"][0], state["to"][0]
    assert lo < start < end < hi
    total = count(console_server, where_of(start, end, "status <> 200 AND bytes > 1000"))
    wait_total(page, total)
    first = grid_row(page, 0)
    header = grid_header(page)
    # a new page (another tab, another day) opening the URL shows the same view
    other = page.context.new_page()
    other.goto(url)
    other.wait_for_function(READY, timeout=60_000)
    wait_total(other, total)
    assert other.input_value("input[name=q]") == "-status:200"
    assert other.input_value("input[name=where]") == "bytes > 1000"
    assert other.input_value("input[name=from]") == start
    assert (
        grid_header(other)
        == header
        == ["ts", "status", "method", "path", "ua_browser", "referrer", "log line"]
    )
    assert grid_row(other, 0) == first
    assert histogram_counts(other) == histogram_counts(page)
    other.close()
    assert page.console_errors == []


def test_a_bad_where_shows_the_servers_message(page: Any, console_server: Server) -> None:
    lo, hi = span(console_server)
    open_page(page, console_server, explore_url(**{"from": lo, "to": hi}))
    page.wait_for_function(READY, timeout=60_000)
    submit(page, where="no_such_column > 1")
    page.wait_for_selector("#error:not([hidden])")
    status, body, _ = request(
        "GET",
        f"{console_server.url}/v1/explore/histogram?"
        + urllib.parse.urlencode({"from": lo, "to": hi, "where": "no_such_column > 1"}),
    )
    assert status == 400
    assert page.text_content("#error .error-text") == body["error"]["message"]
    assert "no_such_column" in body["error"]["message"]
    assert page.get_attribute(".explore-results", "data-state") == "error"
    # and a bad filter term
    submit(page, q='path:"never closed', where="")
    page.wait_for_function(
        "() => document.querySelector('#error .error-text').textContent.includes('never closed')"
    )
