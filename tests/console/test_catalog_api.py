"""The Catalog page's API (/v1/catalog/*) over real HTTP against ``loglake serve``: every route
answers with what the lake, the streams and the queries really hold; unknown tables and bad page
bounds get the one JSON error shape with a message saying what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from browsing import generated_home

from serving import RUNNING, Server, request
from waiting import wait_for

CONFIG = """
[syslog]
udp = ""
tcp = ""

[streams.web]
format = "combined"
table = "logs.access"
buffer_seconds = 0.2

[queries.web_status]
stream = "web"
window = "tumbling 1m"
sql = "SELECT count(*) AS requests, count(*) FILTER (WHERE status >= 500) AS errors FROM stream"

[alerts.server_errors]
query = "web_status"
when = "errors > 0"
severity = "critical"
"""

BAD_LINE = "catalog api test: this is not a combined log line"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``loglake serve`` over generated access logs with a continuous query and an alert."""
    home = generated_home(tmp_path_factory.mktemp("catalog-api") / "home")
    srv = Server.started(home, CONFIG)
    try:
        yield srv
    finally:
        if srv.proc is not None:
            srv.stop()
        if srv in RUNNING:
            RUNNING.remove(srv)


def get(server: Server, path: str) -> tuple[int, Any]:
    status, body, _ = request("GET", server.url + path)
    return status, body


def ok(server: Server, path: str) -> Any:
    status, body = get(server, path)
    assert status == 200, (path, body)
    return body


def iceberg_table(server: Server, name: str) -> Any:
    """The table as pyiceberg loads it from the server's catalog (the truth the API reports)."""
    from loglake.config import load_config
    from loglake.lake.catalog import load_table, open_catalog

    return load_table(open_catalog(load_config(home=server.home, environ={})), name)


def count(server: Server, sql: str) -> int:
    return int(server.query(sql)[0]["n"])


def test_table_list_has_every_table_with_real_counts(server: Server) -> None:
    tables = {t["name"]: t for t in ok(server, "/v1/catalog/tables")["tables"]}
    assert {"logs.access", "logs.rejected"} <= set(tables)
    access = tables["logs.access"]
    assert access["rows"] == count(server, "SELECT count(*) AS n FROM logs.access")
    table = iceberg_table(server, "logs.access")
    files = list(table.scan().plan_files())
    assert access["files"] == len(files)
    assert access["size"] == sum(t.file.file_size_in_bytes for t in files)
    assert access["snapshot_id"] == str(table.current_snapshot().snapshot_id)
    assert access["columns"] == len(table.schema().fields)
    assert access["writers"] == ["stream web"]
    assert access["last_commit"] is not None and "error" not in access


def test_table_detail_is_the_iceberg_metadata(server: Server) -> None:
    table = iceberg_table(server, "logs.access")
    info = ok(server, "/v1/catalog/tables/logs.access")
    assert info["rows"] == count(server, "SELECT count(*) AS n FROM logs.access")
    assert [(f["id"], f["name"], f["type"], f["required"]) for f in info["schema"]] == [
        (f.field_id, f.name, str(f.field_type), f.required) for f in table.schema().fields
    ]
    assert info["partition_spec"]["spec_id"] == table.spec().spec_id
    assert [(f["source"], f["transform"], f["name"]) for f in info["partition_spec"]["fields"]] == [
        ("ts", "hour", "ts_hour")
    ]
    assert info["snapshots"] == len(table.snapshots())
    assert info["location"] == table.location()
    assert info["properties"]["write.parquet.compression-codec"] == "zstd"
    assert info["format_version"] == 2


def test_an_unknown_table_is_404_naming_the_known_ones(server: Server) -> None:
    for suffix in ("", "/snapshots", "/files"):
        status, body = get(server, f"/v1/catalog/tables/logs.nope{suffix}")
        assert status == 404, body
        assert body["error"]["code"] == "no_such_table"
        message = body["error"]["message"]
        assert "'logs.nope' does not exist" in message
        assert "logs.access" in message and "logs.rejected" in message


def test_snapshots_are_paged_newest_first_and_add_up(server: Server) -> None:
    table = iceberg_table(server, "logs.access")
    want = len(table.snapshots())
    seen: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = ok(server, f"/v1/catalog/tables/logs.access/snapshots?offset={offset}&limit=1")
        assert page["total"] == want and page["limit"] == 1
        if not page["snapshots"]:
            break
        seen += page["snapshots"]
        offset += 1
    assert len(seen) == want
    assert [s["timestamp_ms"] for s in seen] == sorted(
        (s["timestamp_ms"] for s in seen), reverse=True
    )
    rows = count(server, "SELECT count(*) AS n FROM logs.access")
    assert sum(s["added_rows"] - s["deleted_rows"] for s in seen) == rows
    current = [s for s in seen if s["current"]]
    assert len(current) == 1 and current[0]["total_rows"] == rows
    assert current[0]["snapshot_id"] == str(table.current_snapshot().snapshot_id)
    assert seen[-1]["operation"] == "append" and seen[-1]["summary"]["added-records"] == str(
        seen[-1]["added_rows"]
    )


def test_files_are_paged_with_their_total(server: Server) -> None:
    table = iceberg_table(server, "logs.access")
    want = {t.file.file_path.removeprefix("file://"): t.file for t in table.scan().plan_files()}
    seen: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = ok(server, f"/v1/catalog/tables/logs.access/files?offset={offset}&limit=20")
        assert page["total"] == len(want) and page["offset"] == offset
        seen += page["files"]
        if len(page["files"]) < 20:
            break
        offset += 20
    assert len(seen) == len(want) == len({f["path"] for f in seen})
    for f in seen:
        data = want[f["path"]]
        assert (f["rows"], f["size"]) == (data.record_count, data.file_size_in_bytes)
        hour = f["partition"].removeprefix("ts_hour=")
        assert f["ts_min"].replace(" ", "-").startswith(hour), f  # 2026-11-30-09 of the time
    assert sum(f["rows"] for f in seen) == count(server, "SELECT count(*) AS n FROM logs.access")
    ends = [f["ts_max"] for f in seen]
    assert ends == sorted(ends, reverse=True)  # newest data first


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=-3", "limit=ten", "offset=-1", "offset=1.5"],
)
def test_bad_page_bounds_are_400_saying_what_is_allowed(server: Server, query: str) -> None:
    for route in ("snapshots", "files"):
        status, body = get(server, f"/v1/catalog/tables/logs.access/{route}?{query}")
        assert status == 400, body
        assert body["error"]["code"] == "invalid_request"
        assert "is a whole number from" in body["error"]["message"]
    status, body = get(server, f"/v1/catalog/rejected/samples?reason=x&{query}")
    assert status == 400, body


def test_a_page_past_the_end_is_empty(server: Server) -> None:
    page = ok(server, "/v1/catalog/tables/logs.access/files?offset=100000&limit=500")
    assert page["files"] == [] and page["total"] > 0


def _post(server: Server, lines: list[str]) -> None:
    body = "".join(line + "\n" for line in lines).encode()
    status, reply, _ = request("POST", server.url + "/v1/streams/web/records", body)
    assert status == 200 and reply["accepted"] == len(lines), reply


def test_streams_show_offsets_lag_rates_and_sources(server: Server) -> None:
    before = ok(server, "/v1/catalog/streams")["streams"]
    assert [s["name"] for s in before] == ["web"]
    assert before[0]["format"] == "combined" and before[0]["table"] == "logs.access"
    assert before[0]["queries"] == ["web_status"]
    _post(server, [_line(200), _line(503)])

    def measured() -> Any:
        web = ok(server, "/v1/catalog/streams")["streams"][0]
        return web if web["rate_in"] is not None and web["lag"] == 0 else None

    wait_for(measured, "a rate measured over two samples, everything delivered", timeout=60)
    web = ok(server, "/v1/catalog/streams")["streams"][0]
    plain = next(s for s in ok(server, "/v1/streams")["streams"] if s["name"] == "web")
    for key in ("next_offset", "delivered_offset", "delivered", "rejected", "commits"):
        assert web[key] == plain[key], key
    assert web["next_offset"] >= 2 and web["lag"] == 0 and web["state"] == "caught up"
    assert web["rate_in"] > 0 and web["rate_seconds"] >= 1
    http = next(s for s in web["sources"] if s["name"] == "http")
    assert http["accepted"] == web["next_offset"]  # every record of web came over HTTP


def _line(status: int) -> str:
    from datetime import UTC, datetime

    now = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return f'10.1.2.3 - - [{now}] "GET /catalog HTTP/1.1" {status} 512 "-" "curl/8.0"'


def test_rejected_records_are_grouped_by_reason_with_their_lines(server: Server) -> None:
    before = count(server, "SELECT count(*) AS n FROM logs.rejected")
    _post(server, [BAD_LINE, BAD_LINE + " again"])
    server.wait_rows("SELECT count(*) AS n FROM logs.rejected", before + 2)
    data = ok(server, "/v1/catalog/rejected")
    want = server.query(
        "SELECT reason, count(*) AS n, max(ingested_at) AS last FROM logs.rejected "
        "GROUP BY reason ORDER BY last DESC, reason"
    )
    assert [(g["reason"], g["records"]) for g in data["groups"]] == [
        (r["reason"], r["n"]) for r in want
    ]
    assert data["records"] == before + 2 and data["reasons"] == len(want) and data["note"] is None
    group = data["groups"][0]  # the newest
    assert group["reason"] == "does not match the combined format"
    assert group["sources"] == ["stream:web"] and group["tables"] == ["logs.access"]
    reason = quote(group["reason"])
    first = ok(server, f"/v1/catalog/rejected/samples?reason={reason}&limit=1")
    second = ok(server, f"/v1/catalog/rejected/samples?reason={reason}&limit=1&offset=1")
    assert [s["text"] for s in first["samples"] + second["samples"]] == [
        BAD_LINE + " again",  # the later line of the same request: newest first
        BAD_LINE,
    ]
    sample = first["samples"][0]
    assert sample["bytes"] == len(BAD_LINE + " again") and sample["text_cut"] is False
    assert sample["source"] == "stream:web" and sample["target_table"] == "logs.access"


def test_rejected_samples_need_a_reason(server: Server) -> None:
    status, body = get(server, "/v1/catalog/rejected/samples")
    assert status == 400 and "?reason=" in body["error"]["message"]
    status, body = get(server, "/v1/catalog/rejected/samples?reason=x&limit=101")
    assert status == 400 and "from 1 to 100" in body["error"]["message"]
    nothing = ok(server, "/v1/catalog/rejected/samples?reason=" + quote("no such reason"))
    assert nothing["samples"] == []


def test_queries_and_alerts_with_sql_window_and_state(server: Server) -> None:
    data = ok(server, "/v1/catalog/queries")
    (query,) = data["queries"]
    assert query["name"] == "web_status" and query["stream"] == "web"
    assert query["table"] == "analytics.web_status"
    assert query["window"] == "tumbling 1m"
    assert query["sql"].startswith("SELECT count(*) AS requests")
    assert query["state"] in ("waiting", "running") and query["alerts"] == ["server_errors"]
    (alert,) = data["alerts"]
    plain = ok(server, "/v1/alerts")["alerts"][0]
    for key in ("name", "query", "when", "for", "severity"):
        assert alert[key] == plain[key], key
    assert alert["severity"] == "critical" and alert["state"] in ("inactive", "pending", "firing")


def test_a_query_created_through_the_api_is_listed(server: Server) -> None:
    settings = {
        "stream": "web",
        "window": "hopping 2m every 1m",
        "sql": "SELECT 1 AS one FROM stream",
    }
    status, body, _ = request(
        "PUT", server.url + "/v1/queries/catalog_probe", json.dumps(settings).encode()
    )
    assert status in (200, 201), body
    try:
        listed = {q["name"]: q for q in ok(server, "/v1/catalog/queries")["queries"]}
        probe = listed["catalog_probe"]
        assert probe["window"] == "hopping 2m every 1m" and probe["sql"] == settings["sql"]
        assert probe["alerts"] == [] and probe["stream"] == "web"
    finally:
        request("DELETE", server.url + "/v1/queries/catalog_probe")
