"""The notebooks page in a real browser against a real server: SQL paragraphs drawn as charts with
the right number of points, run one (button, Ctrl+Enter) or all, errors under their paragraph,
notebooks saved, listed, renamed, reopened from their URL, deleted, exported and imported, a
result downloaded as ``loglake query`` prints it, markdown rendered with its HTML escaped."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from browsing import doc_screenshot, open_page

from serving import Server, request

HOURLY = (
    "SELECT time_bucket(INTERVAL 1 HOUR, ts) AS hour, count(*) AS hits FROM logs.access "
    "GROUP BY ALL ORDER BY hour"
)
BY_METHOD_AND_CLASS = (
    "SELECT method, (status // 100) || 'xx' AS class, count(*) AS n FROM logs.access "
    "GROUP BY ALL ORDER BY ALL"
)


def make(server: Server, name: str, paragraphs: list[dict[str, Any]]) -> dict[str, Any]:
    """A notebook created through the API (the page's own create is tested on its own)."""
    body = json.dumps({"name": name, "paragraphs": paragraphs}).encode()
    status, doc, _ = request(
        "POST", server.url + "/v1/notebooks", body, {"Content-Type": "application/json"}
    )
    assert status == 201, doc
    return doc


def api_get(server: Server, path: str) -> tuple[int, Any]:
    status, body, _ = request("GET", server.url + path)
    return status, body


def para(page: Any, pid: str) -> str:
    return f".nb-para[data-id='{pid}']"


def run(page: Any, pid: str, state: str = "done") -> None:
    """Click a paragraph's Run and wait until it finished (``state``: done or error)."""
    page.click(f"{para(page, pid)} .nb-run")
    page.wait_for_selector(f"{para(page, pid)}[data-state='{state}']", timeout=60_000)


def points(page: Any, pid: str) -> int:
    return int(page.get_attribute(f"{para(page, pid)} .nb-chart", "data-points"))


def wait_saved(page: Any) -> None:
    page.wait_for_selector(".nb-page[data-save='saved']", timeout=30_000)


def cli_query(server: Server, sql: str, fmt: str) -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "query", "--format", fmt, sql],
        env=server.env(),
        capture_output=True,
        timeout=300,
        check=True,
    )
    return done.stdout


def test_the_starter_notebook_on_first_visit(page: Any, console_server: Server) -> None:
    # First in this module: no notebooks yet, and the page offers the starter notebook.
    open_page(page, console_server, "/console/notebooks")
    assert page.text_content(".nb-home h2") == "No notebooks yet"
    assert page.text_content(".nb-count") == "No notebooks yet."
    page.click(".nb-home button:text('Open the starter notebook')")
    page.wait_for_selector(".nb-para")
    assert page.input_value(".nb-name") == "Getting started with logs.access"
    page.click(".nb-run-all")
    page.wait_for_function(
        "[...document.querySelectorAll('.nb-para')].every(p => p.dataset.state === 'done')",
        timeout=120_000,
    )
    charts = page.locator(".nb-chart")
    kinds = [charts.nth(i).get_attribute("data-kind") for i in range(charts.count())]
    assert kinds == ["line", "bar", "pie"]
    sql = [p for p in json.loads(_doc(page, console_server))["paragraphs"] if p["kind"] == "sql"]
    for i, paragraph in enumerate(sql[:3]):
        rows = console_server.query(paragraph["text"])
        assert int(charts.nth(i).get_attribute("data-points")) == len(rows), paragraph["text"]
    assert page.is_hidden("#error")
    page.eval_on_selector(".nb-para.sql", "p => p.scrollIntoView()")
    page.eval_on_selector("main", "m => { m.scrollTop -= 60; }")
    doc_screenshot(page, "notebooks")
    assert page.console_errors == []


def test_a_sql_paragraph_draws_a_chart_with_the_right_number_of_points(
    page: Any, console_server: Server
) -> None:
    doc = make(
        console_server,
        "hourly",
        [
            {
                "id": "hourly",
                "kind": "sql",
                "text": HOURLY,
                "view": "line",
                "chart": {"x": "hour", "y": "hits", "group": ""},
            }
        ],
    )
    want = console_server.query(HOURLY)
    assert len(want) > 24
    open_page(page, console_server, f"/console/notebooks?id={doc['id']}")
    run(page, "hourly")
    chart = f"{para(page, 'hourly')} .nb-chart"
    assert page.get_attribute(chart, "data-kind") == "line"
    assert points(page, "hourly") == len(want)
    meta = page.text_content(f"{para(page, 'hourly')} .nb-meta")
    assert re.fullmatch(rf"{len(want)} rows · \d+\.\d\d s", meta), meta
    assert page.is_visible(f"{chart} canvas")

    # Another view of the same result: an area chart, then the virtual table.
    page.click(f"{para(page, 'hourly')} .nb-views button[data-view='area']")
    page.wait_for_selector(f"{chart}[data-kind='area']")
    assert points(page, "hourly") == len(want)
    page.click(f"{para(page, 'hourly')} .nb-views button[data-view='table']")
    grid = f"{para(page, 'hourly')} .grid"
    page.wait_for_selector(grid)
    assert page.get_attribute(grid, "data-rows") == str(len(want))
    first = page.locator(f"{grid} .grid-row[data-row='0'] .grid-cell").all_text_contents()
    assert first[1] == str(want[0]["hits"])
    assert first[0].startswith(want[0]["hour"][:19].replace("T", " "))
    assert page.is_hidden("#error")
    assert page.console_errors == []


def test_bar_and_pie_charts_with_group_by(page: Any, console_server: Server) -> None:
    doc = make(console_server, "groups", [{"id": "g", "kind": "sql", "text": BY_METHOD_AND_CLASS}])
    want = console_server.query(BY_METHOD_AND_CLASS)
    classes = sorted({r["class"] for r in want})
    assert len(classes) > 1 and len({r["method"] for r in want}) > 1
    open_page(page, console_server, f"/console/notebooks?id={doc['id']}")
    run(page, "g")
    box = para(page, "g")
    chart = f"{box} .nb-chart"

    # Bars: x method, y n, one series per status class (chosen in the page, as a user does).
    page.click(f"{box} .nb-views button[data-view='bar']")
    page.wait_for_selector(f"{chart}[data-kind='bar']")
    page.select_option(f"{box} select.nb-x", "method")
    page.select_option(f"{box} select.nb-y", "n")
    page.select_option(f"{box} select.nb-group", "class")
    page.wait_for_function(
        f'document.querySelectorAll("{chart} .u-legend .u-series").length === {len(classes) + 1}'
    )
    assert points(page, "g") == len(want)  # one bar per (method, class) of the result
    legend = page.locator(f"{chart} .u-legend .u-series .u-label").all_text_contents()
    assert legend[1:] == classes

    # A pie of the classes: one slice per class, each with its share of the requests.
    page.click(f"{box} .nb-views button[data-view='pie']")
    page.wait_for_selector(f"{chart}[data-kind='pie']")
    page.select_option(f"{box} select.nb-x", "class")
    page.select_option(f"{box} select.nb-group", "")
    page.wait_for_function(
        f"document.querySelector(\"{chart}\").dataset.points === '{len(classes)}'"
    )
    total = sum(r["n"] for r in want)
    shares = {c: sum(r["n"] for r in want if r["class"] == c) / total for c in classes}
    items = page.locator(f"{chart} .pie-legend li").all_text_contents()
    assert items == [f"{c} · {shares[c] * 100:.1f} %" for c in classes]
    # Grouped by method too: one slice per (class, method) pair.
    page.select_option(f"{box} select.nb-group", "method")
    page.wait_for_function(f"document.querySelector(\"{chart}\").dataset.points === '{len(want)}'")
    assert page.locator(f"{chart} svg .slice").count() == len(want)

    # The choices are saved with the notebook.
    wait_saved(page)
    _, stored = api_get(console_server, f"/v1/notebooks/{doc['id']}")
    assert stored["paragraphs"][0]["view"] == "pie"
    assert stored["paragraphs"][0]["chart"] == {"x": "class", "y": "n", "group": "method"}


def test_run_all_runs_every_paragraph_in_order_and_says_when_a_result_was_cut(
    page: Any, console_server: Server
) -> None:
    doc = make(
        console_server,
        "all",
        [
            {"id": "intro", "kind": "markdown", "text": "# Every paragraph"},
            {"id": "count", "kind": "sql", "text": "SELECT count(*) AS n FROM logs.access"},
            {
                "id": "athena",
                "kind": "sql",
                "dialect": "athena",
                "text": "SELECT date_format(min(ts), '%Y') AS y FROM logs.access",
            },
            {"id": "big", "kind": "sql", "text": "SELECT range AS i FROM range(150000)"},
        ],
    )
    open_page(page, console_server, f"/console/notebooks?id={doc['id']}")
    for pid in ("count", "athena", "big"):
        assert page.get_attribute(para(page, pid), "data-state") == "idle"
    page.click(".nb-run-all")
    for pid in ("intro", "count", "athena", "big"):
        page.wait_for_selector(f"{para(page, pid)}[data-state='done']", timeout=60_000)
    n = console_server.query("SELECT count(*) AS n FROM logs.access")[0]["n"]
    cell = f"{para(page, 'count')} .grid-row[data-row='0'] .grid-cell"
    assert page.text_content(cell) == str(n)
    year = console_server.query("SELECT strftime(min(ts), '%Y') AS y FROM logs.access")[0]["y"]
    assert page.text_content(f"{para(page, 'athena')} .grid-row[data-row='0'] .grid-cell") == year
    assert page.text_content(f"{para(page, 'intro')} .nb-markdown h1") == "Every paragraph"

    # 150,000 rows: the page shows the first 100,000 ([console] max_rows) and says so.
    big = para(page, "big")
    note = page.text_content(f"{big} .nb-note")
    assert "only the first 100,000 rows are shown ([console] max_rows)" in note
    assert page.text_content(f"{big} .nb-meta").startswith("100,000 rows")
    assert page.get_attribute(f"{big} .grid", "data-rows") == "100000"
    # Only the rows in view are in the page; the last one is reached by scrolling.
    assert page.locator(f"{big} .grid-row").count() < 100
    page.eval_on_selector(f"{big} .grid-body", "b => { b.scrollTop = b.scrollHeight; }")
    page.wait_for_selector(f"{big} .grid-row[data-row='99999']")
    assert page.text_content(f"{big} .grid-row[data-row='99999'] .grid-cell") == "99999"
    assert page.locator(f"{big} .grid-row").count() < 100


def test_ctrl_enter_runs_a_paragraph_of_a_new_notebook(page: Any, console_server: Server) -> None:
    open_page(page, console_server, "/console/notebooks")
    page.click(".nb-side .nb-new")
    page.wait_for_selector(".nb-para.sql textarea")
    assert re.search(r"[?&]id=[0-9a-f]{16}$", page.url), page.url
    sql = "SELECT status, count(*) AS n FROM logs.access GROUP BY status ORDER BY status"
    editor = page.locator(".nb-para.sql textarea").first
    editor.fill(sql)
    editor.press("Control+Enter")
    page.wait_for_selector(".nb-para.sql[data-state='done'] .grid")
    want = console_server.query(sql)
    assert page.get_attribute(".nb-para.sql .grid", "data-rows") == str(len(want))
    cells = page.locator(".nb-para.sql .grid-row[data-row='0'] .grid-cell").all_text_contents()
    assert cells == [str(want[0]["status"]), str(want[0]["n"])]
    assert editor.input_value() == sql  # Ctrl+Enter ran it and typed no newline
    wait_saved(page)
    nid = page.url.split("id=")[1]
    _, stored = api_get(console_server, f"/v1/notebooks/{nid}")
    assert stored["name"] == "Untitled" and stored["paragraphs"][0]["text"] == sql


def test_a_bad_sql_paragraph_shows_the_servers_error(page: Any, console_server: Server) -> None:
    bad = "SELECT no_such_column FROM logs.access"
    refused = "DELETE FROM logs.access"
    doc = make(
        console_server,
        "errors",
        [
            {"id": "bad", "kind": "sql", "text": bad},
            {"id": "refused", "kind": "sql", "text": refused},
            {"id": "good", "kind": "sql", "text": "SELECT 42 AS answer"},
        ],
    )
    open_page(page, console_server, f"/console/notebooks?id={doc['id']}")
    page.click(".nb-run-all")
    for pid, state in (("bad", "error"), ("refused", "error"), ("good", "done")):
        page.wait_for_selector(f"{para(page, pid)}[data-state='{state}']", timeout=60_000)
    for pid, sql in (("bad", bad), ("refused", refused)):
        status, reply, _ = request(
            "POST", console_server.url + "/v1/sql", json.dumps({"sql": sql}).encode()
        )
        assert status in (400, 403)
        shown = page.text_content(f"{para(page, pid)} .nb-error")
        assert shown == reply["error"]["message"]
    assert "no_such_column" in page.text_content(f"{para(page, 'bad')} .nb-error")
    assert page.text_content(f"{para(page, 'good')} .grid-row[data-row='0']") == "42"
    assert page.is_hidden("#error")  # under its paragraph, not in the banner

    # An id that names no notebook: the server's message, and the page still works.
    open_page(page, console_server, "/console/notebooks?id=00000000deadbeef")
    page.wait_for_selector("#error:not([hidden])")
    assert "no notebook '00000000deadbeef'" in page.text_content("#error .error-text")
    assert page.is_visible(".nb-home")


def test_save_list_rename_reload_and_delete(page: Any, console_server: Server) -> None:
    open_page(page, console_server, "/console/notebooks")
    page.click(".nb-side .nb-new")
    page.wait_for_selector(".nb-para.sql textarea")
    nid = page.url.split("id=")[1]
    box = ".nb-para.sql"
    pid = page.get_attribute(box, "data-id")
    page.fill(f"{box} textarea", BY_METHOD_AND_CLASS)
    page.select_option(f"{box} select.nb-dialect", "athena")
    page.select_option(f"{box} select.nb-dialect", "duckdb")
    run(page, pid)
    page.click(f"{para(page, pid)} .nb-views button[data-view='bar']")
    page.select_option(f"{para(page, pid)} select.nb-x", "class")
    page.select_option(f"{para(page, pid)} select.nb-group", "method")
    page.click(".nb-add-md")
    md = page.locator(".nb-para.markdown textarea")
    md.fill("## Notes\nMethods by class.")
    md.press("Control+Enter")
    page.wait_for_selector(".nb-para.markdown .nb-markdown h2")
    page.fill(".nb-name", "Methods by status class")
    page.press(".nb-name", "Enter")
    wait_saved(page)
    page.wait_for_selector(f".nb-list li[data-id='{nid}'] a:text('Methods by status class')")

    _, listing = api_get(console_server, "/v1/notebooks")
    mine = next(n for n in listing["notebooks"] if n["id"] == nid)
    assert mine["name"] == "Methods by status class" and mine["paragraphs"] == 2
    _, stored = api_get(console_server, f"/v1/notebooks/{nid}")
    assert [p["kind"] for p in stored["paragraphs"]] == ["sql", "markdown"]
    assert stored["paragraphs"][0]["view"] == "bar"
    assert stored["paragraphs"][0]["chart"] == {"x": "class", "y": "n", "group": "method"}
    assert stored["paragraphs"][1]["text"] == "## Notes\nMethods by class."
    on_disk = console_server.home / "console" / "notebooks" / f"{nid}.json"
    assert json.loads(on_disk.read_text()) == stored

    # The URL holds the notebook: a reload (or a bookmark) opens it as it was saved.
    page.reload()
    page.wait_for_selector("#page[data-ready='true']")
    assert page.input_value(".nb-name") == "Methods by status class"
    assert page.input_value(f"{para(page, pid)} textarea") == BY_METHOD_AND_CLASS
    assert page.input_value(f"{para(page, pid)} select.nb-dialect") == "duckdb"
    assert page.get_attribute(para(page, pid), "data-view") == "bar"
    assert page.text_content(".nb-para.markdown .nb-markdown h2") == "Notes"
    assert page.is_hidden(".nb-para.markdown textarea")  # rendered, not in edit mode
    run(page, pid)
    chart = f"{para(page, pid)} .nb-chart"
    assert page.get_attribute(chart, "data-kind") == "bar"
    assert page.input_value(f"{para(page, pid)} select.nb-x") == "class"
    assert page.input_value(f"{para(page, pid)} select.nb-y") == "n"
    assert page.input_value(f"{para(page, pid)} select.nb-group") == "method"
    assert points(page, pid) == len(console_server.query(BY_METHOD_AND_CLASS))

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(".nb-delete")
    page.wait_for_selector(".nb-home")
    assert f"id={nid}" not in page.url
    assert page.locator(f".nb-list li[data-id='{nid}']").count() == 0
    assert api_get(console_server, f"/v1/notebooks/{nid}")[0] == 404
    assert not on_disk.exists()


def test_export_and_import_json(page: Any, console_server: Server, tmp_path: Path) -> None:
    doc = make(
        console_server,
        "to export",
        [
            {"kind": "markdown", "text": "# Exported"},
            {"kind": "sql", "text": HOURLY, "view": "area", "chart": {"x": "hour", "y": "hits"}},
        ],
    )
    open_page(page, console_server, f"/console/notebooks?id={doc['id']}")
    with page.expect_download() as info:
        page.click(".nb-export")
    download = info.value
    assert download.suggested_filename == "to-export.loglake-notebook.json"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    exported = json.loads(saved.read_text())
    assert exported["format"] == "loglake-notebook"
    assert exported["name"] == "to export" and exported["paragraphs"] == doc["paragraphs"]

    page.set_input_files(".nb-side input[type=file]", str(saved))
    page.wait_for_function(f"!location.search.includes('{doc['id']}')")
    page.wait_for_selector(".nb-para")
    new_id = page.url.split("id=")[1]
    assert new_id != doc["id"]
    assert page.input_value(".nb-name") == "to export"
    _, copy = api_get(console_server, f"/v1/notebooks/{new_id}")
    assert copy["paragraphs"] == doc["paragraphs"]
    assert page.locator(f".nb-list li[data-id='{new_id}']").count() == 1

    # A file that is not an export: the server's message, nothing created.
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    before = len(api_get(console_server, "/v1/notebooks")[1]["notebooks"])
    page.set_input_files(".nb-side input[type=file]", str(junk))
    page.wait_for_selector("#error:not([hidden])")
    assert "this is not an exported notebook" in page.text_content("#error .error-text")
    assert len(api_get(console_server, "/v1/notebooks")[1]["notebooks"]) == before


def test_a_result_downloads_as_loglake_query_prints_it(
    page: Any, console_server: Server, tmp_path: Path
) -> None:
    sql = (
        "SELECT ts, client, method, path, status, bytes, referrer, user_agent FROM logs.access "
        "WHERE status >= 300 ORDER BY ts, client, path"
    )
    doc = make(console_server, "Download me", [{"id": "d", "kind": "sql", "text": sql}])
    open_page(page, console_server, f"/console/notebooks?id={doc['id']}")
    run(page, "d")
    for fmt, button, ext in (("csv", "nb-csv", "csv"), ("json", "nb-jsonl", "jsonl")):
        with page.expect_download() as info:
            page.click(f"{para(page, 'd')} .{button}")
        download = info.value
        assert download.suggested_filename == f"Download-me-1.{ext}"
        path = tmp_path / download.suggested_filename
        download.save_as(path)
        want = cli_query(console_server, sql, fmt)
        assert want.count(b"\n") > 1000
        assert path.read_bytes() == want, fmt


def test_markdown_renders_a_safe_subset_and_escapes_html(page: Any, console_server: Server) -> None:
    text = "\n".join(
        [
            "# Title <b>not bold</b>",
            "Some **bold**, *italic*, _also italic_, `code <i>` and snake_case_name.",
            "",
            "- one",
            "- two [docs](https://example.com/docs)",
            "",
            "1. first",
            "2. second",
            "",
            "<script>window.pwned = 1</script>",
            '<img src="x" onerror="window.pwned = 2">',
            "[bad](javascript:window.pwned=3) and [relative](/console/explore)",
            "",
            "```",
            "SELECT '<tag>'",
            "```",
        ]
    )
    doc = make(console_server, "markdown", [{"id": "m", "kind": "markdown", "text": text}])
    open_page(page, console_server, f"/console/notebooks?id={doc['id']}")
    md = f"{para(page, 'm')} .nb-markdown"
    page.wait_for_selector(md)
    assert page.text_content(f"{md} h1") == "Title <b>not bold</b>"
    assert page.locator(f"{md} strong").all_text_contents() == ["bold"]
    assert page.locator(f"{md} em").all_text_contents() == ["italic", "also italic"]
    assert page.locator(f"{md} p code").all_text_contents() == ["code <i>"]
    assert "snake_case_name" in page.text_content(f"{md} p")
    assert page.locator(f"{md} ul li").all_text_contents() == ["one", "two docs"]
    assert page.locator(f"{md} ol li").all_text_contents() == ["first", "second"]
    hrefs = page.eval_on_selector_all(f"{md} a", "links => links.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://example.com/docs", "/console/explore"]
    assert page.get_attribute(f"{md} a[href^='https']", "rel") == "noopener noreferrer"
    body = page.text_content(md)
    assert "<script>window.pwned = 1</script>" in body
    assert '<img src="x" onerror="window.pwned = 2">' in body
    assert page.text_content(f"{md} pre code") == "SELECT '<tag>'"
    for tag in ("script", "img", "b", "i", "iframe"):
        assert page.locator(f"{md} {tag}").count() == 0, tag
    assert page.evaluate("window.pwned") is None
    assert page.is_hidden(f"{para(page, 'm')} textarea")
    # Double-click shows the source to edit; Ctrl+Enter renders it again.
    page.dblclick(md)
    editor = f"{para(page, 'm')} textarea"
    page.wait_for_selector(editor)
    page.fill(editor, "**changed**")
    page.press(editor, "Control+Enter")
    page.wait_for_selector(f"{md} strong:text('changed')")
    assert page.is_hidden(editor)


def _doc(page: Any, server: Server) -> str:
    nid = page.url.split("id=")[1]
    status, doc = api_get(server, f"/v1/notebooks/{nid}")
    assert status == 200
    return json.dumps(doc)


def test_a_save_never_overwrites_a_newer_revision(page: Any, console_server: Server) -> None:
    doc = make(console_server, "shared", [{"id": "s", "kind": "sql", "text": "SELECT 1 AS one"}])
    open_page(page, console_server, f"/console/notebooks?id={doc['id']}")
    # Someone else saves the notebook after this page read it.
    body = json.dumps({"paragraphs": [{"kind": "sql", "text": "SELECT 2 AS two"}], "revision": 1})
    status, _, _ = request(
        "PUT",
        f"{console_server.url}/v1/notebooks/{doc['id']}",
        body.encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200
    page.fill(f"{para(page, 's')} textarea", "SELECT 3 AS three")
    page.wait_for_selector(".nb-page[data-save='error']")
    assert "the notebook was saved elsewhere (revision 2, yours 1)" in page.text_content(
        "#error .error-text"
    )
    _, stored = api_get(console_server, f"/v1/notebooks/{doc['id']}")
    assert stored["paragraphs"][0]["text"] == "SELECT 2 AS two"  # the other save is kept
