"""The Loki push API (``POST /loki/api/v1/push``) against a real ``loglake serve``: the npm clients
winston-loki (snappy protobuf, and JSON) and pino-loki (JSON, structured metadata) run by Debian's
node, the push examples of Loki's own documentation verbatim, gzip and deflate bodies, exact
nanosecond timestamps, malformed bodies (a 4xx, nothing kept), a full stream (429 + Retry-After,
which winston-loki retries until every line lands once), API keys sent as Basic auth, and the
counters on /metrics."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import signal
import subprocess
import time
import urllib.request
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cramjam
import pytest
import requests

from loglake.sources.loki import PushRequest
from serving import Server, request
from waiting import wait_for

CONFIG = """
[streams.loki]
format = "json"
table = "logs.loki"
buffer_seconds = 0.2

[server]
max_records_per_request = 500

[syslog]
udp = ""
tcp = ""
"""

NODE = Path(__file__).parents[1] / "clients" / "node"
JSON = "application/json"
PROTOBUF = "application/x-protobuf"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server.started(tmp_path_factory.mktemp("loki"), CONFIG)
    try:
        yield srv
    finally:
        srv.stop(signal.SIGKILL)


def node(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``tests/clients/node/SCRIPT`` with Debian's node; its JSON report (or {})."""
    assert (NODE / "node_modules" / "winston-loki").is_dir(), (
        f"the npm clients are not installed: run `npm ci` in {NODE} (.ci/run does)"
    )
    done = subprocess.run(
        ["/usr/bin/node", script, *args],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    last = done.stdout.strip().splitlines()[-1:] or ["{}"]
    return dict(json.loads(last[0]))


def post(
    srv: Server, body: bytes, content_type: str | None = JSON, **headers: str
) -> tuple[int, bytes, dict[str, str]]:
    """POST ``body`` to the push route; (status, reply body, lower-cased headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type is not None:
        sent["Content-Type"] = content_type
    try:
        conn.request("POST", "/loki/api/v1/push", body, sent)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def push_body(test: str, entries: list[tuple[int, str]], **labels: str) -> bytes:
    """A JSON push body of one stream labelled test=``test`` (and ``labels``)."""
    values = [[str(ns), line] for ns, line in entries]
    return json.dumps(
        {"streams": [{"stream": {"test": test, **labels}, "values": values}]}
    ).encode()


def protobuf_body(labels: str, entries: list[tuple[int, str, dict[str, str]]]) -> bytes:
    """A snappy-compressed protobuf PushRequest of one stream, as Promtail sends it."""
    message = PushRequest()
    stream = message.streams.add(labels=labels)
    for nanos, line, metadata in entries:
        entry = stream.entries.add(line=line)
        entry.timestamp.seconds, entry.timestamp.nanos = divmod(nanos, 1_000_000_000)
        for name, value in metadata.items():
            entry.structuredMetadata.add(name=name, value=value)
    return bytes(cramjam.snappy.compress_raw(message.SerializeToString()))


def rows(srv: Server, where: str, want: int) -> list[dict[str, Any]]:
    srv.wait_rows(f"SELECT count(*) AS n FROM logs.loki WHERE {where}", want)
    return srv.query(f"SELECT * FROM logs.loki WHERE {where} ORDER BY time_unix_nano, message")


def metric(srv: Server, name: str, reason: str = "") -> float:
    """The value of ``name`` for the loki source and stream on /metrics (0 when absent)."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"{srv.url}/metrics", timeout=30
    ) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        labels = re.match(name + r"\{(.*)\} (\S+)$", line)
        wanted = ['source="loki"', 'stream="loki"', *([f'reason="{reason}"'] if reason else [])]
        if labels and all(label in labels[1] for label in wanted):
            return float(labels[2])
    return 0.0


def lines_of(found: list[dict[str, Any]]) -> list[str]:
    return sorted(r["message"] for r in found)


# -- real clients -------------------------------------------------------------------------------------


def test_winston_loki_protobuf_snappy_lands_every_line_once(server: Server) -> None:
    report = node("winston.js", server.url, "winston-proto", "200")
    assert report == {"errors": [], "left": 0}
    found = rows(server, "labels.test = 'winston-proto'", 200)
    # winston-loki's default line: the message, then its metadata as JSON.
    assert lines_of(found) == sorted(
        f'line {i} of winston-proto {{"n":"{i}","level":"info"}}' for i in range(200)
    )
    assert {(r["labels"]["job"], r["labels"]["level"]) for r in found} == {("winston", "info")}
    assert {r["stream"] for r in found} == {'{job="winston", level="info", test="winston-proto"}'}
    # winston-loki sends milliseconds: the nanoseconds are whole milliseconds, ts the same instant.
    for r in found:
        assert r["time_unix_nano"] % 1_000_000 == 0
        assert micros(r["ts"]) == r["time_unix_nano"] // 1000


def test_winston_loki_json_keeps_its_structured_metadata(server: Server) -> None:
    report = node("winston.js", server.url, "winston-json", "100", "--json")
    assert report == {"errors": [], "left": 0}
    found = rows(server, "labels.test = 'winston-json'", 100)
    assert lines_of(found) == sorted(
        f'line {i} of winston-json {{"n":"{i}","level":"info"}}' for i in range(100)
    )
    # In JSON, winston-loki also sends each line's metadata as Loki structured metadata.
    assert sorted(int(r["metadata"]["n"]) for r in found) == list(range(100))
    in_sql = server.query(
        "SELECT count(*) AS n FROM logs.loki WHERE labels.test = 'winston-json' "
        "AND metadata.n = '42' AND labels.job = 'winston'"
    )
    assert in_sql == [{"n": 1}]


def test_pino_loki_lands_every_line_once_with_its_metadata(server: Server) -> None:
    assert node("pino.js", server.url, "pino", "150") == {}
    found = rows(server, "labels.test = 'pino'", 150)
    assert {r["labels"]["job"] for r in found} == {"pino"}
    assert {r["labels"]["hostname"] for r in found} == {"node-host"}
    assert {r["labels"]["level"] for r in found} == {"info"}
    # pino-loki's line is the pino record as JSON; its `meta` key is the structured metadata.
    records = sorted((json.loads(r["message"]) for r in found), key=lambda x: x["n"])
    assert [x["msg"] for x in records] == [f"line {i} of pino" for i in range(150)]
    assert sorted(r["metadata"]["request_id"] for r in found) == sorted(f"r{i}" for i in range(150))
    assert {r["metadata"]["user"] for r in found} == {"ann"}
    # pino's time is milliseconds, which pino-loki pads to nanoseconds.
    assert all(r["time_unix_nano"] == x["time"] * 1_000_000 for r, x in zip_by_n(found, records))


def zip_by_n(found: list[dict[str, Any]], records: list[dict[str, Any]]) -> Iterator[Any]:
    by_n = {json.loads(r["message"])["n"]: r for r in found}
    return ((by_n[x["n"]], x) for x in records)


def micros(ts: str) -> int:
    """The lake's ``ts`` text as Unix microseconds."""
    when = datetime.fromisoformat(ts)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - EPOCH) // timedelta(microseconds=1)


def present(value: dict[str, Any]) -> dict[str, Any]:
    """A struct column's members that this row has (the column holds every name seen, null here)."""
    return {k: v for k, v in value.items() if v is not None}


# -- Loki's documentation, verbatim ---------------------------------------------------------------


def test_the_curl_example_of_lokis_http_api_reference(server: Server) -> None:
    # docs/sources/reference/loki-http-api.md, "Ingest logs", the cURL example's --data-raw.
    body = b'{"streams": [{ "stream": { "foo": "bar2" }, "values": [ [ "1570818238000000000", "fizzbuzz" ] ] }]}'  # noqa: E501
    status, reply, _ = post(server, body)
    assert (status, reply) == (204, b"")
    [row] = rows(server, "labels.foo = 'bar2'", 1)
    assert row["message"] == "fizzbuzz" and row["time_unix_nano"] == 1570818238000000000
    assert micros(row["ts"]) == 1570818238_000000
    assert row["stream"] == '{foo="bar2"}'


def test_the_structured_metadata_example(server: Server) -> None:
    # The same page's structured metadata example, with a time for its "<unix epoch in nanoseconds>"
    # and a label of this test's: {"trace_id": "0242ac120002", "user_id": "superUser123"}.
    body = (
        b'{"streams": [{"stream": {"test": "metadata"}, "values": [\n'
        b'    [ "1700000000000000001", "<log line>", {"trace_id": "0242ac120002", '
        b'"user_id": "superUser123"}]\n]}]}'
    )
    assert post(server, body)[0] == 204
    [row] = rows(server, "labels.test = 'metadata'", 1)
    assert present(row["metadata"]) == {"trace_id": "0242ac120002", "user_id": "superUser123"}
    assert row["time_unix_nano"] == 1700000000000000001


def test_the_troubleshooting_guides_push_test(server: Server) -> None:
    # docs/sources/operations/troubleshooting/troubleshoot-ingest.md, "Test push endpoint": the
    # body its shell command makes, with $(date +%s) filled in as the shell would.
    now = int(time.time())
    body = (
        '{"streams":[{"stream":{"job":"test"},"values":[["'
        + f"{now}000000000"
        + '","test log line"]]}]}'
    )
    assert post(server, body.encode())[0] == 204
    [row] = rows(server, "labels.job = 'test'", 1)
    assert (row["message"], row["time_unix_nano"]) == ("test log line", now * 1_000_000_000)


def push_logs(
    url: str,
    labels: dict[str, str],
    entries: list[tuple[str, str]],
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    verify: bool | str = True,  # False to skip TLS, or path to CA bundle
) -> None:
    """Push log entries to Loki.

    Args:
        url: Loki base URL.
        labels: Stream labels, for example {"job": "myapp", "env": "dev"}.
        entries: List of (timestamp_ns, log_line) tuples. Use
                 str(int(time.time() * 1e9)) to get a nanosecond timestamp.
    """
    # Verbatim from docs/sources/reference/python-client-examples.md, "Push logs".
    payload = {
        "streams": [
            {
                "stream": labels,
                "values": [list(e) for e in entries],
            }
        ]
    }
    req_headers = {**(headers or {}), "Content-Type": "application/json"}
    resp = requests.post(
        f"{url}/loki/api/v1/push",
        headers=req_headers,
        data=json.dumps(payload),
        auth=auth,
        verify=verify,
    )
    resp.raise_for_status()


def test_the_python_example_of_lokis_docs(server: Server) -> None:
    now_ns = str(int(time.time() * 1e9))
    push_logs(
        url=server.url,
        labels={"job": "myapp", "env": "dev"},
        entries=[
            (now_ns, "application started"),
            (now_ns, "listening on port 8080"),
        ],
    )
    found = rows(server, "labels.job = 'myapp' AND labels.env = 'dev'", 2)
    assert lines_of(found) == ["application started", "listening on port 8080"]
    assert {str(r["time_unix_nano"]) for r in found} == {now_ns}


# -- encodings and exact time ------------------------------------------------------------------------


def test_nanoseconds_are_kept_exactly_and_ts_has_microseconds(server: Server) -> None:
    body = push_body("nanos", [(1700000000123456789, "a"), (-1, "before 1970")])
    assert post(server, body)[0] == 204
    found = rows(server, "labels.test = 'nanos'", 2)
    assert [(r["time_unix_nano"], r["message"]) for r in found] == [
        (-1, "before 1970"),
        (1700000000123456789, "a"),
    ]
    assert micros(found[1]["ts"]) == 1700000000_123456  # the lake's precision: microseconds
    exact = server.query(
        "SELECT CAST(time_unix_nano AS VARCHAR) AS ns FROM logs.loki WHERE labels.test = 'nanos' "
        "AND time_unix_nano > 0"
    )
    assert exact == [{"ns": "1700000000123456789"}]


def test_protobuf_keeps_labels_metadata_and_nanoseconds(server: Server) -> None:
    labels = '{test="proto", app="shop\\"s", path="C:\\\\x"}'
    body = protobuf_body(
        labels, [(1700000000987654321, "paid", {"trace_id": "abc"}), (1, "early", {})]
    )
    assert post(server, body, PROTOBUF)[0] == 204
    # No Content-Type at all is read as protobuf too, as Loki does.
    assert post(server, protobuf_body('{test="proto"}', [(2, "no type", {})]), None)[0] == 204
    found = rows(server, "labels.test = 'proto'", 3)
    assert [(r["time_unix_nano"], r["message"]) for r in found] == [
        (1, "early"),
        (2, "no type"),
        (1700000000987654321, "paid"),
    ]
    assert present(found[2]["labels"]) == {"test": "proto", "app": 'shop"s', "path": "C:\\x"}
    assert found[2]["metadata"]["trace_id"] == "abc"
    assert found[2]["stream"] == '{app="shop\\"s", path="C:\\\\x", test="proto"}'


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_json_and_protobuf(server: Server, encoding: str) -> None:
    def pack(data: bytes) -> bytes:
        return gzip.compress(data) if encoding == "gzip" else zlib.compress(data)

    json_body = push_body(encoding, [(10, "json one"), (11, "json two")])
    assert post(server, pack(json_body), Content_Encoding=encoding)[0] == 204
    # Loki un-gzips, then reads snappy protobuf: both layers at once.
    proto = protobuf_body(f'{{test="{encoding}"}}', [(12, "proto", {})])
    assert post(server, pack(proto), PROTOBUF, Content_Encoding=encoding)[0] == 204
    # Content-Encoding: snappy on a protobuf body is what some clients send: the body is the same.
    if encoding == "gzip":
        snappy = protobuf_body('{test="gzip"}', [(13, "snappy header", {})])
        assert post(server, snappy, PROTOBUF, Content_Encoding="snappy")[0] == 204
    want = ["json one", "json two", "proto"] + (["snappy header"] if encoding == "gzip" else [])
    assert lines_of(rows(server, f"labels.test = '{encoding}'", len(want))) == want


def test_labels_differing_only_in_case_go_to_rejected_with_the_reason(server: Server) -> None:
    # Column names are case-insensitive in the lake, members of objects too: Job and job with
    # different values cannot both be stored, so the entry is kept raw in logs.rejected.
    body = push_body("case", [(1, "clash")], Job="a", job="b")
    assert post(server, body)[0] == 204
    assert post(server, push_body("case", [(2, "fine")], job="b"))[0] == 204
    assert [r["message"] for r in rows(server, "labels.test = 'case'", 1)] == ["fine"]
    where = 'FROM logs.rejected WHERE contains(decode(raw), \'"test":"case"\')'
    server.wait_rows(f"SELECT count(*) AS n {where}", 1)
    [refused] = server.query(f"SELECT reason {where}")
    # Named in either order: the table's existing spelling (if any) comes first.
    assert re.search(r'keys "(Job" and "job|job" and "Job)" differ only in case', refused["reason"])


# -- refusals ----------------------------------------------------------------------------------------

NOT_SNAPPY = b"\xff\xff\xff\xff\xff\xff"
SNAPPY_NOT_PROTO = bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff\xff"))


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "says"),
    [
        (b"{not json", JSON, {}, 400, "not JSON"),
        (b'{"streams": 1}', JSON, {}, 400, '"streams"'),
        (
            b'{"streams": [{"stream": {"a": "b"}, "values": [[1570818238000000000, "x"]]}]}',
            JSON,
            {},
            400,
            "string of Unix nanoseconds",
        ),
        (
            b'{"streams": [{"stream": {"a": "b"}, "values": [["1", 5]]}]}',
            JSON,
            {},
            400,
            "line must be a string",
        ),
        (
            b'{"streams": [{"stream": {"a": "b"}, "values": [["1", "x", {"n": 1}]]}]}',
            JSON,
            {},
            400,
            "string values",
        ),
        (
            b'{"streams": [{"stream": {}, "values": [["1", "x"]]}]}',
            JSON,
            {},
            400,
            "at least one label",
        ),
        (
            b'{"streams": [{"stream": {"1a": "b"}, "values": [["1", "x"]]}]}',
            JSON,
            {},
            400,
            "label name",
        ),
        (
            b'{"streams": [{"stream": {"a": 1}, "values": [["1", "x"]]}]}',
            JSON,
            {},
            400,
            "string values",
        ),
        (
            b'{"streams": [{"stream": {"a": "b"}, "values": [["99999999999999999999", "x"]]}]}',
            JSON,
            {},
            400,
            "int64",
        ),
        (NOT_SNAPPY, PROTOBUF, {}, 400, "snappy"),
        (SNAPPY_NOT_PROTO, PROTOBUF, {}, 400, "PushRequest"),
        (protobuf_body("job=x", [(1, "x", {})]), PROTOBUF, {}, 400, "label set"),
        (protobuf_body('{job="x"}', [(10**21, "x", {})]), PROTOBUF, {}, 400, "int64"),
        (push_body("many", [(i, "x") for i in range(501)]), JSON, {}, 413, "500 entries"),
        (protobuf_body('{job="x", job="y"}', [(1, "x", {})]), PROTOBUF, {}, 400, "duplicate"),
        (b"{}", JSON, {"Content-Encoding": "br"}, 415, "not supported"),
        (b"not gzip", JSON, {"Content-Encoding": "gzip"}, 400, "not gzip"),
        (gzip.compress(b" " * (9 << 20)), JSON, {"Content-Encoding": "gzip"}, 413, "limit"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",
)
def test_malformed_requests_are_refused_whole(
    server: Server,
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    says: str,
) -> None:
    received = metric(server, "loglake_source_records_received_total")
    got, reply, answer_headers = post(server, body, content_type, **headers)
    assert got == status, reply
    assert answer_headers["content-type"] == JSON
    error = json.loads(reply)["error"]
    assert says in error["message"], error
    assert metric(server, "loglake_source_records_received_total") == received


def test_a_snappy_body_past_the_limit_is_refused_before_inflating(server: Server) -> None:
    big = bytes(cramjam.snappy.compress_raw(b"\x00" * (9 << 20)))  # states 9 MiB in its preamble
    status, reply, _ = post(server, big, PROTOBUF)
    assert status == 413 and b"server.max_body_bytes" in reply


def test_ready_answers_like_loki(server: Server) -> None:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"{server.url}/ready", timeout=30
    ) as resp:
        assert (resp.status, resp.read()) == (200, b"ready\n")


def test_counters_on_metrics(server: Server) -> None:
    before = metric(server, "loglake_source_records_accepted_total")
    assert post(server, push_body("counted", [(1, "a"), (2, "b"), (3, "c")]))[0] == 204
    assert metric(server, "loglake_source_records_accepted_total") == before + 3
    assert metric(server, "loglake_source_records_received_total") >= before + 3
    rows(server, "labels.test = 'counted'", 3)


# -- back-pressure and authentication ------------------------------------------------------------


def test_a_full_stream_answers_429_and_winston_loki_retries_until_every_line_lands_once(
    tmp_path: Path,
) -> None:
    config = CONFIG.replace("buffer_seconds = 0.2", "buffer_seconds = 2\nmax_log_bytes = 65536")
    srv = Server.started(tmp_path, config)
    try:
        filled = 0
        for attempt in range(5):
            # Fill the stream until it refuses: 10 KiB a request in a 64 KiB budget. Delivery
            # frees it every 2 s; winston-loki, started at once, meets the full stream, re-queues
            # its batch and sends it again until it fits.
            for _ in range(100):
                body = push_body("filler", [(attempt * 100 + filled, "x" * 10_000)])
                status, reply, headers = post(srv, body)
                if status != 204:
                    break
                filled += 1
            assert status == 429, reply
            assert int(headers["retry-after"]) >= 1
            assert json.loads(reply)["error"]["code"] == "stream_full"
            test = f"retried-{attempt}"
            report = node("winston.js", srv.url, test, "100", "--retry")
            assert report["left"] == 0
            found = rows(srv, f"labels.test = '{test}'", 100)
            assert lines_of(found) == sorted(
                f'line {i} of {test} {{"n":"{i}","level":"info"}}' for i in range(100)
            )
            if any("429" in error for error in report["errors"]):
                break  # the client met the full stream, retried, and delivered everything once
        else:
            pytest.fail(
                "winston-loki never met the full stream (delivery freed it first each time)"
            )
        rows(srv, "labels.test = 'filler'", filled)
        assert metric(srv, "loglake_source_records_dropped_total", "stream_full") >= 101
    finally:
        srv.stop(signal.SIGKILL)


def test_with_api_keys_the_clients_send_the_key_as_basic_auth(tmp_path: Path) -> None:
    srv = Server.started(tmp_path, CONFIG + '\n[auth]\napi_keys = ["s3cret"]\n')
    try:
        body = push_body("auth", [(1, "no key")])
        status, reply, _ = post(srv, body)
        assert status == 401, reply
        basic = {"LOKI_BASIC_AUTH": "loglake:s3cret"}
        assert node("winston.js", srv.url, "auth-winston", "20", env=basic)["left"] == 0
        assert node("pino.js", srv.url, "auth-pino", "20", env=basic) == {}
        assert len(rows(srv, "labels.test IN ('auth-winston', 'auth-pino')", 40)) == 40
        assert request("GET", f"{srv.url}/readyz")[0] == 200
    finally:
        srv.stop(signal.SIGKILL)


def test_an_undeclared_stream_is_created_by_the_first_entries(tmp_path: Path) -> None:
    srv = Server.started(tmp_path, '[syslog]\nudp = ""\ntcp = ""\n')
    try:
        assert post(srv, b'{"streams": []}')[0] == 204
        assert "loki" not in {
            s["name"] for s in request("GET", f"{srv.url}/v1/streams")[1]["streams"]
        }
        assert post(srv, push_body("first", [(5, "first")]))[0] == 204
        wait_for(lambda: rows(srv, "labels.test = 'first'", 1), "the first entry in logs.loki")
        srv.stop()
        srv.start()  # kept as an API-created stream: reopened after a restart
        assert "loki" in {s["name"] for s in request("GET", f"{srv.url}/v1/streams")[1]["streams"]}
    finally:
        if srv.proc is not None:
            srv.stop(signal.SIGKILL)
