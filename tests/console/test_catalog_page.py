"""The Catalog page in a real browser against ``loglake serve`` over generated access logs: what
it shows of tables, snapshots, files, streams, rejected records and queries equals what the lake
and the server hold, and a bookmarked URL opens the same view."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from browsing import doc_screenshot, open_page

from loglake.sqltext import literal
from serving import Server, request

BAD_LINE = "catalog page test: not a combined log line"


def iceberg_table(server: Server, name: str) -> Any:
    from loglake.config import load_config
    from loglake.lake.catalog import load_table, open_catalog

    return load_table(open_catalog(load_config(home=server.home, environ={})), name)


def rows_in(server: Server, table: str = "logs.access") -> int:
    return int(server.query(f"SELECT count(*) AS n FROM {table}")[0]["n"])


def url_params(page: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def test_tables_show_row_counts_and_the_real_schema(page: Any, console_server: Server) -> None:
    open_page(page, console_server, "/console/catalog")
    page.wait_for_selector("#table-detail[data-table='logs.access'] #schema tr[data-column]")
    assert url_params(page) == {"table": "logs.access"}  # the view is in the URL
    count = rows_in(console_server)
    listed = page.get_attribute("#catalog-tables tr[data-table='logs.access']", "data-rows")
    assert int(listed or -1) == count
    cell = page.text_content("#catalog-tables tr[data-table='logs.access'] td.rows") or ""
    assert cell.replace(",", "") == str(count)
    assert page.get_attribute("#table-detail", "data-rows") == str(count)
    assert page.is_visible("#catalog-tables tr[data-table='logs.rejected']")
    schema = iceberg_table(console_server, "logs.access").schema()
    shown = page.eval_on_selector_all(
        "#schema tbody tr",
        "rows => rows.map(r => [Number(r.dataset.id), r.dataset.column, r.dataset.type])",
    )
    assert shown == [[f.field_id, f.name, str(f.field_type)] for f in schema.fields]
    doc_screenshot(page, "catalog")
    assert page.is_hidden("#error") and page.console_errors == []


def test_snapshots_list_the_rows_each_added(page: Any, console_server: Server) -> None:
    open_page(page, console_server, "/console/catalog?table=logs.access&tab=snapshots")
    page.wait_for_selector("#snapshots tbody tr[data-snapshot]")
    table = iceberg_table(console_server, "logs.access")
    total = int(page.get_attribute("#tab-snapshots .pager", "data-total") or -1)
    assert total == len(table.snapshots())
    added = page.eval_on_selector_all(
        "#snapshots > tbody > tr",
        "rows => rows.map(r => [Number(r.dataset.added), Number(r.dataset.deleted)])",
    )
    assert len(added) == total  # one page holds them all here
    assert sum(a - d for a, d in added) == rows_in(console_server)
    current = str(table.current_snapshot().snapshot_id)
    assert page.is_visible(f"#snapshots tr[data-snapshot='{current}'] .tag.ok")
    assert page.is_hidden("#error")


def test_files_are_paged_with_their_total(page: Any, console_server: Server) -> None:
    table = iceberg_table(console_server, "logs.access")
    files = {t.file.file_path.removeprefix("file://"): t.file for t in table.scan().plan_files()}
    assert len(files) > 40  # hourly partitions of two days: more than two pages of 20
    open_page(page, console_server, "/console/catalog?table=logs.access&tab=files&size=20")
    page.wait_for_selector("#files tbody tr[data-file]")
    pager = "#tab-files .pager"
    assert int(page.get_attribute(pager, "data-total") or -1) == len(files)
    assert f"Files 1–20 of {len(files)}" in (page.text_content(pager) or "")
    seen: list[str] = []
    pages = -(-len(files) // 20)
    for number in range(1, pages + 1):
        page.wait_for_selector(f"{pager}[data-page='{number}']")
        shown = page.eval_on_selector_all(
            "#files tbody tr", "rows => rows.map(r => [r.dataset.file, Number(r.dataset.rows)])"
        )
        assert len(shown) == (20 if number < pages else len(files) - 20 * (pages - 1))
        for path, rows in shown:
            assert files[path].record_count == rows
        seen += [path for path, _ in shown]
        assert url_params(page).get("page", "1") == str(number)
        if number < pages:
            page.click(f"{pager} button[data-go='next']")
    assert sorted(seen) == sorted(files)
    assert page.is_disabled(f"{pager} button[data-go='next']")
    page.go_back()  # the previous page of files, from the browser's history
    page.wait_for_selector(f"{pager}[data-page='{pages - 1}']")
    assert page.is_hidden("#error")


def test_a_bookmarked_url_opens_the_same_table_and_tab(page: Any, console_server: Server) -> None:
    open_page(page, console_server, "/console/catalog")
    page.wait_for_selector("#table-detail[data-table='logs.access']")
    page.click("#catalog-tables tr[data-table='logs.rejected']")
    page.wait_for_selector("#table-detail[data-table='logs.rejected']")
    page.click(".catalog-tabs button[data-tab='partitioning']")
    page.wait_for_selector("#tab-partitioning table[data-spec]")
    assert url_params(page) == {"table": "logs.rejected", "tab": "partitioning"}
    bookmark = page.url
    fresh = page.context.new_page()
    try:
        fresh.goto(bookmark)
        fresh.wait_for_selector("#table-detail[data-table='logs.rejected'] #tab-partitioning")
        active = fresh.text_content(".catalog-tabs button.active") or ""
        assert active.startswith("Partitioning")
        assert "ingested_at" in (fresh.text_content("#tab-partitioning") or "")
    finally:
        fresh.close()
    open_page(page, console_server, "/console/catalog?table=logs.nope&tab=files")
    page.wait_for_selector("#table-detail[data-table='logs.access'] #tab-files")
    message = page.text_content("#error .error-text") or ""
    assert "logs.nope does not exist" in message and "logs.access" in message


def test_a_bad_line_shows_in_rejected_under_its_reason(page: Any, console_server: Server) -> None:
    before = rows_in(console_server, "logs.rejected")
    status, reply, _ = request(
        "POST", console_server.url + "/v1/streams/web/records", (BAD_LINE + "\n").encode()
    )
    assert status == 200 and reply["accepted"] == 1, reply
    console_server.wait_rows("SELECT count(*) AS n FROM logs.rejected", before + 1)
    (group,) = console_server.query(
        f"SELECT DISTINCT reason FROM logs.rejected WHERE text = {literal(BAD_LINE)}"
    )
    per_reason = console_server.query(
        f"SELECT count(*) AS n FROM logs.rejected WHERE reason = {literal(group['reason'])}"
    )[0]["n"]
    open_page(page, console_server, "/console/catalog?section=rejected")
    selector = f"#rejected tr.group[data-reason={json.dumps(group['reason'])}]"
    page.wait_for_selector(selector)
    assert int(page.get_attribute(selector, "data-records") or -1) == per_reason
    assert int(page.get_attribute("#rejected", "data-records") or -1) == before + 1
    page.click(selector)
    page.wait_for_selector("#rejected table.samples tr.sample")
    assert url_params(page) == {"section": "rejected", "reason": group["reason"]}
    assert page.text_content("#rejected table.samples tr.sample pre.raw") == BAD_LINE  # newest
    doc_screenshot(page, "catalog-rejected")
    assert page.is_hidden("#error")


def test_streams_show_web_with_its_rates_and_sources(page: Any, console_server: Server) -> None:
    open_page(page, console_server, "/console/catalog?section=streams")
    row = "#streams tr[data-stream='web']"
    page.wait_for_selector(row)
    offset = console_server.next_offset("web")
    assert int(page.get_attribute(row, "data-next") or -1) == offset
    assert "logs.access" in (page.text_content(row) or "")
    # Rates need two samples: the page polls, and the second answer has them.
    page.wait_for_function(
        "document.querySelector(\"#streams tr[data-stream='web'] td.rate-in\")"
        ".textContent.endsWith('/s')",
        timeout=60_000,
    )
    if offset:
        assert page.is_visible(f"{row} .source[data-source='http']")
    assert page.is_hidden("#error")


def test_queries_section_lists_continuous_queries(page: Any, console_server: Server) -> None:
    settings = {"stream": "web", "window": "tumbling 1m", "sql": "SELECT count(*) AS n FROM stream"}
    status, body, _ = request(
        "PUT", console_server.url + "/v1/queries/catalog_page", json.dumps(settings).encode()
    )
    assert status in (200, 201), body
    try:
        open_page(page, console_server, "/console/catalog?section=queries")
        row = "#queries tr[data-query='catalog_page']"
        page.wait_for_selector(row)
        text = page.text_content(row) or ""
        assert "tumbling 1m" in text and settings["sql"] in text and "web" in text
        assert page.get_attribute(row, "data-state") in ("waiting", "running")
        assert "No alerts" in (page.text_content("#catalog-body") or "")
    finally:
        request("DELETE", console_server.url + "/v1/queries/catalog_page")
