"""Limits and checks at the HTTP boundary of ``loglake serve``, against a real server subprocess.

Request bodies (inflated size, records, time, content encoding), request heads (size, time), the
number of streams, the settings and names that streams and queries get through the API or from
saved state, deleting streams, and the one JSON error shape.
"""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loglake.server.app import is_loopback
from serving import Server

CONFIG = """
[streams.web]
format = "combined"
buffer_seconds = 0.2

[streams.events]
format = "json"
buffer_seconds = 0.2

[server]
max_body_bytes = 1048576
max_records_per_request = 1000
max_header_bytes = 16384
header_timeout_s = 2
body_timeout_s = 2
max_streams = 6

[syslog]
udp = ""
tcp = ""
"""

LINE = '10.0.0.1 - - [01/Jan/2024:10:00:00 +0000] "GET /r/{} HTTP/1.1" 200 1 "-" "x"'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server.started(tmp_path_factory.mktemp("limits") / "lake", CONFIG)
    yield srv
    if srv.proc is not None:
        srv.stop(signal.SIGKILL)


def request(
    srv: Server, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    """One request over http.client, which sends the path exactly as given (no ``..`` folding)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request(method, path, body, {k.replace("_", "-"): v for k, v in headers.items()})
        resp = conn.getresponse()
        raw = resp.read()
        kind = resp.getheader("content-type", "")
        return resp.status, json.loads(raw) if "json" in kind else raw, dict(resp.getheaders())
    finally:
        conn.close()


def raw_exchange(srv: Server, data: bytes, send_more: bytes = b"") -> tuple[bytes, bool]:
    """Send ``data`` (then keep sending ``send_more`` while the server reads), return what the
    server answered and whether it closed the connection. Waits at most 60 s for the answer."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall(data)
        if send_more:
            sock.settimeout(5)
            try:
                for start in range(0, len(send_more), 1 << 16):
                    sock.sendall(send_more[start : start + (1 << 16)])
            except OSError:
                pass  # the server answered and closed while we were still sending
            sock.settimeout(60)
        answer = b""
        try:
            while chunk := sock.recv(1 << 16):
                answer += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
    return answer, closed


def parse_answer(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


# -- finding 5: bodies that inflate, hold too many records, or never finish ----------------------


def test_gzip_bodies_are_bounded_after_inflating(server: Server) -> None:
    before = server.next_offset("web")
    bomb = gzip.compress(b"a\n" * (1 << 20), 9)  # 2 MiB of lines in a few KB; the limit is 1 MiB
    assert len(bomb) < 16 << 10
    status, reply, headers = request(
        server, "POST", "/v1/streams/web/records", bomb, Content_Encoding="gzip"
    )
    assert status == 413 and reply["error"]["code"] == "body_too_large"
    assert "server.max_body_bytes" in reply["error"]["message"]
    assert headers.get("connection") == "close"
    # Concatenated gzip members are one valid gzip body; a cut-short one is refused.
    two = gzip.compress(LINE.format(1).encode() + b"\n") + gzip.compress(LINE.format(2).encode())
    status, reply, _ = request(
        server, "POST", "/v1/streams/web/records", two, Content_Encoding="x-gzip"
    )
    assert status == 200 and reply["accepted"] == 2
    status, reply, _ = request(
        server, "POST", "/v1/streams/web/records", two[:-9], Content_Encoding="gzip"
    )
    assert status == 400 and "cut short" in reply["error"]["message"]
    assert server.next_offset("web") == before + 2


def test_records_per_request_are_bounded(server: Server) -> None:
    before = server.next_offset("web")
    lines = [LINE.format(n).encode() for n in range(1001)]
    status, reply, _ = request(server, "POST", "/v1/streams/web/records", b"\n".join(lines))
    assert status == 413 and reply["error"]["code"] == "too_many_records"
    message = reply["error"]["message"]
    assert "1000 records" in message and "server.max_records_per_request" in message
    assert "split" in message
    assert server.next_offset("web") == before  # nothing of the request was kept
    # Exactly the limit passes, blank lines between records do not count.
    body = b"\n\n\n".join(lines[:1000]) + b"\n" * 5000
    status, reply, _ = request(server, "POST", "/v1/streams/web/records", body)
    assert status == 200 and reply["accepted"] == 1000
    assert server.next_offset("web") == before + 1000


def test_a_body_that_never_finishes_gets_408(server: Server) -> None:
    head = (
        b"POST /v1/streams/web/records HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        + LINE.format(0).encode()[:20]
    )
    answer, closed = raw_exchange(server, head)
    status, reply = parse_answer(answer)
    assert status == 408 and reply["error"]["code"] == "body_timeout"
    assert "server.body_timeout_s" in reply["error"]["message"]
    assert closed


# -- finding 5: request heads that are too large or never finish -------------------------------


def test_large_headers_get_431(server: Server) -> None:
    status, reply, _ = request(server, "GET", "/v1/streams", X_Big="a" * 20_000)
    assert status == 431 and reply["error"]["code"] == "headers_too_large"
    assert "server.max_header_bytes" in reply["error"]["message"]
    status, _, _ = request(server, "GET", "/v1/streams", X_Fine="a" * 10_000)
    assert status == 200
    # 20 MB of one header value: answered as soon as the limit is passed, never buffered.
    answer, closed = raw_exchange(
        server, b"GET /v1/streams HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * (20 << 20)
    )
    assert parse_answer(answer)[0] == 431 and closed
    assert request(server, "GET", "/healthz")[0] == 200


def test_a_head_that_never_finishes_gets_408(server: Server) -> None:
    answer, closed = raw_exchange(server, b"GET /v1/streams HTTP/1.1\r\nHost: x\r\nX-A: 1")
    status, reply = parse_answer(answer)
    assert status == 408 and reply["error"]["code"] == "request_timeout"
    assert "server.header_timeout_s" in reply["error"]["message"]
    assert closed
    answer, closed = raw_exchange(server, b"")  # a connection that sends nothing at all
    assert parse_answer(answer)[0] == 408 and closed


# -- finding 5: streams are bounded ---------------------------------------------------------------


def test_stream_count_is_bounded(server: Server) -> None:
    created = []
    for n in range(10):
        status, reply, _ = request(server, "PUT", f"/v1/streams/many-{n}", b"{}")
        if status == 409:
            break
        assert status == 201, reply
        created.append(f"many-{n}")
    assert created, "max_streams = 6 leaves room for API streams"
    assert reply["error"]["code"] == "too_many_streams"
    assert "server.max_streams = 6" in reply["error"]["message"]
    listing = request(server, "GET", "/v1/streams")[1]["streams"]
    assert len(listing) == 6
    # Deleting one makes room again.
    status, reply, _ = request(server, "DELETE", f"/v1/streams/{created[-1]}")
    assert status == 200 and reply == {
        "deleted": created[-1],
        "delivered_offset": 0,
        "undelivered": 0,
    }
    assert request(server, "PUT", "/v1/streams/one-more", b"{}")[0] == 201
    for name in [*created[:-1], "one-more"]:
        assert request(server, "DELETE", f"/v1/streams/{name}")[0] == 200


# -- finding 11: settings and names from the API ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"buffer_seconds": "x"}, "buffer_seconds must be float, got 'x'"),
        ({"buffer_records": "many"}, "buffer_records must be int, got 'many'"),
        ({"buffer_records": True}, "buffer_records must be int, got True"),
        ({"buffer_seconds": 0}, "buffer_seconds = 0.0; use more than 0"),
        ({"buffer_seconds": -1}, "buffer_seconds = -1.0; use more than 0"),
        ({"max_log_bytes": 10}, "max_log_bytes = 10; use at least 65536"),
        ({"ready_queries": True}, "ready_queries is set in the config file"),
        (
            {"buffer_seconds": "2"},
            "streams.checked.buffer_seconds must be float, got '2' (a string)",
        ),
        ({"table": ["logs", "x"]}, "streams.checked.table must be str, got ['logs', 'x'] (a list)"),
        (
            {"colour": "red"},
            "unknown key streams.checked.colour; valid keys in [streams.checked]: buffer_records, "
            "buffer_seconds, format, max_log_bytes, table",
        ),
    ],
)
def test_stream_settings_from_the_api_are_checked(
    server: Server, body: dict[str, Any], message: str
) -> None:
    status, reply, _ = request(server, "PUT", "/v1/streams/checked", json.dumps(body).encode())
    assert status == 400 and reply["error"]["code"] == "invalid_request"
    assert message in reply["error"]["message"]
    names = [s["name"] for s in request(server, "GET", "/v1/streams")[1]["streams"]]
    assert "checked" not in names


@pytest.mark.parametrize("path", ["/v1/streams/..", "/v1/streams/.", "/v1/streams/%2E%2E"])
def test_stream_names_of_only_dots_are_refused(server: Server, path: str) -> None:
    status, reply, _ = request(server, "PUT", path, b"{}")
    assert status in (400, 404), reply
    if status == 400:
        assert "not only dots" in reply["error"]["message"]
    # No stream log opened in the data home (or above it): no segment, no LOCK file.
    for folder in (server.home, server.home.parent):
        assert not list(folder.glob("[0-9]*.log")) and not (folder / "LOCK").exists()


def test_query_names_and_durations_from_the_api_are_checked(server: Server) -> None:
    query = {"stream": "web", "window": "tumbling 1m", "sql": "SELECT count(*) AS n FROM stream"}
    status, reply, _ = request(server, "PUT", "/v1/queries/%2E%2E", json.dumps(query).encode())
    assert status == 400 and "query names are letters" in reply["error"]["message"]
    late = {**query, "lateness": "99999999999d"}
    status, reply, _ = request(server, "PUT", "/v1/queries/late", json.dumps(late).encode())
    assert status == 400
    assert "queries.late.lateness" in reply["error"]["message"]
    assert "365d" in reply["error"]["message"]
    typed = {**query, "anomaly_column": "n", "anomaly_by": "status"}
    status, reply, _ = request(server, "PUT", "/v1/queries/typed", json.dumps(typed).encode())
    assert status == 400 and reply["error"]["code"] == "invalid_request"
    assert (
        "queries.typed.anomaly_by must be a list of strings, got 'status'"
        in reply["error"]["message"]
    )
    status, reply, _ = request(
        server, "PUT", "/v1/queries/odd", json.dumps({**query, "x": 1}).encode()
    )
    assert status == 400 and "unknown key queries.odd.x; valid keys" in reply["error"]["message"]
    status, reply, _ = request(server, "GET", "/v1/queries")
    assert status == 200 and reply == {"queries": []}


# -- finding 15: one bad record, not the batch; unsupported encodings ----------------------------


def test_a_deeply_nested_record_is_one_reject(server: Server) -> None:
    before = server.next_offset("events")
    nested = b"[" * 100_000 + b"]" * 100_000
    body = b'{"ts": 1700000000, "n": 1}\n' + nested + b'\n{"ts": 1700000001, "n": 2}\n'
    status, reply, _ = request(
        server, "POST", "/v1/streams/events/records", body, Content_Type="application/x-ndjson"
    )
    assert status == 200, reply
    assert reply["accepted"] == 2
    assert reply["rejected"] == [{"index": 1, "reason": "JSON nested too deeply to parse"}]
    assert server.next_offset("events") == before + 2


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, br", "zstd"])
def test_unsupported_content_encoding_gets_415(server: Server, encoding: str) -> None:
    before = server.next_offset("web")
    status, reply, _ = request(
        server,
        "POST",
        "/v1/streams/web/records",
        LINE.format(9).encode(),
        Content_Encoding=encoding,
    )
    assert status == 415 and reply["error"]["code"] == "unsupported_encoding"
    assert "gzip or identity" in reply["error"]["message"]
    assert server.next_offset("web") == before


# -- one error shape -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("PATCH", "/v1/streams", 405, "method_not_allowed"),
        ("GET", "/v1/streams/web/records", 405, "method_not_allowed"),
        ("DELETE", "/v1/streams/nope", 404, "no_such_stream"),
        ("DELETE", "/v1/streams/web?force=maybe", 400, "invalid_request"),
    ],
)
def test_every_error_has_the_json_shape(
    server: Server, method: str, path: str, status: int, code: str
) -> None:
    got, reply, headers = request(server, method, path)
    assert (got, headers["content-type"]) == (status, "application/json")
    assert reply["error"]["code"] == code and reply["error"]["message"]


def test_config_streams_cannot_be_deleted(server: Server) -> None:
    status, reply, _ = request(server, "DELETE", "/v1/streams/web")
    assert status == 409 and reply["error"]["code"] == "stream_busy"
    assert "[streams.web]" in reply["error"]["message"]


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "", "10.0.0.1", "example.com"]))


# -- finding 11: deleting streams, and saved state that no longer passes the checks ------------


@pytest.mark.slow
def test_delete_waits_for_delivery_and_never_reuses_offsets(tmp_path: Path) -> None:
    srv = Server.started(tmp_path / "lake", '[syslog]\nudp = ""\ntcp = ""\n')
    try:
        assert request(srv, "PUT", "/v1/streams/doomed", b'{"format": "combined"}')[0] == 201
        lines = [LINE.format(n).encode() for n in range(30)]

        def post(part: list[bytes]) -> None:
            status, reply, _ = request(srv, "POST", "/v1/streams/doomed/records", b"\n".join(part))
            assert status == 200 and reply["accepted"] == len(part), reply

        post(lines[:10])
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 10, timeout=120)
        catalog = sqlite3.connect(srv.home / "catalog.db", timeout=5)
        catalog.execute("BEGIN EXCLUSIVE")  # every commit now fails: records stay undelivered
        try:
            post(lines[10:20])
            status, reply, _ = request(srv, "DELETE", "/v1/streams/doomed?timeout=2")
            assert status == 409 and reply["error"]["code"] == "stream_busy"
            assert "10 acknowledged records" in reply["error"]["message"]
            assert "force=true" in reply["error"]["message"]
            post(lines[20:25])  # refused deletion: the stream goes on
        finally:
            catalog.rollback()
        # Delivery catches up; then the deletion goes through, and nothing is lost.
        status, reply, _ = request(srv, "DELETE", "/v1/streams/doomed")
        assert status == 200 and reply == {
            "deleted": "doomed",
            "delivered_offset": 25,
            "undelivered": 0,
        }
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 25, timeout=120)
        assert request(srv, "POST", "/v1/streams/doomed/records", b"x")[0] == 404
        assert "doomed" not in json.loads((srv.home / "state" / "streams.json").read_text())
        # Re-created: its offsets go on from the old log, so the lake's bookkeeping holds.
        assert request(srv, "PUT", "/v1/streams/doomed", b'{"format": "combined"}')[0] == 201
        status, reply, _ = request(srv, "POST", "/v1/streams/doomed/records", lines[25])
        assert reply["first_offset"] == 25
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 26, timeout=120)
        # ?force=true while delivery fails: stopped at once, undelivered records kept in the log
        # folder and delivered when the stream is created again.
        catalog.execute("BEGIN EXCLUSIVE")
        try:
            post(lines[26:30])
            status, reply, _ = request(srv, "DELETE", "/v1/streams/doomed?force=true")
            assert status == 200 and reply["undelivered"] == 4
        finally:
            catalog.rollback()
            catalog.close()
        assert request(srv, "PUT", "/v1/streams/doomed", b'{"format": "combined"}')[0] == 201
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 30, timeout=120)
        got = srv.query("SELECT count(DISTINCT path) AS d, max(line) AS last FROM logs.access")
        assert got == [{"d": 30, "last": 29}]
    finally:
        srv.stop(signal.SIGKILL)


def test_saved_state_that_fails_its_checks_is_skipped(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    (home / "state").mkdir(parents=True)
    (home / "state" / "streams.json").write_text(
        json.dumps(
            {
                "bad": {"buffer_seconds": "x"},
                "..": {},
                "zero": {"buffer_seconds": 0},
                "good": {"format": "combined"},
            }
        )
    )
    query = {"stream": "good", "window": "tumbling 1m", "sql": "SELECT count(*) AS n FROM stream"}
    (home / "state" / "queries.json").write_text(
        json.dumps({"..": query, "late": {**query, "lateness": "99999999999d"}})
    )
    srv = Server.started(home, '[syslog]\nudp = ""\ntcp = ""\n')  # waits for /readyz 200
    try:
        status, ready, _ = request(srv, "GET", "/readyz")
        assert status == 200 and ready["streams"] == ["good"]
        skipped = {(s["kind"], s["name"]) for s in ready["skipped"]}
        assert skipped == {
            ("stream", "bad"),
            ("stream", ".."),
            ("stream", "zero"),
            ("query", ".."),
            ("query", "late"),
        }
        assert not list(home.glob("[0-9]*.log")) and not (home / "LOCK").exists()
        log = [json.loads(x) for x in (home / "server.log").read_text().splitlines()]
        errors = [e for e in log if e["level"] == "error" and "skipped" in e["msg"]]
        assert len(errors) == 5
        started = next(e for e in log if e["msg"] == "loglake serve started")
        assert len(started["skipped"]) == 5
        # The skipped entries stay in the files (to be fixed), and new streams are saved beside.
        assert request(srv, "PUT", "/v1/streams/new", b"{}")[0] == 201
        saved = json.loads((home / "state" / "streams.json").read_text())
        assert set(saved) == {"bad", "..", "zero", "good", "new"}
        assert request(srv, "GET", "/v1/queries")[0] == 200
    finally:
        srv.stop(signal.SIGKILL)
