"""One error shape for every route of the HTTP API, against a real server subprocess.

Every route the app has gets bad input (malformed and deeply nested JSON, wrong types, unknown
settings and names, bad query parameters, wrong methods, unsupported encodings) and must answer a
4xx with ``content-type: application/json`` and ``{"error": {"code": ..., "message": ...}}``; the
routes are read from the app itself, so a route added without a bad-input case here fails the test.
The AWS-compatible endpoint answers in AWS's shape and OTLP's ``/v1/logs`` a ``google.rpc.Status``
(their protocols'). Also: an unexpected failure is a
logged 500 in the shape, malformed HTTP is a JSON 400, and continuous-query results of every SQL
type are JSON.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from loglake.config import load_config
from loglake.server.app import BearerAuth, create_app
from serving import Server

CONFIG = """
[streams.web]
format = "combined"
buffer_seconds = 0.2

[streams.events]
format = "json"
buffer_seconds = 0.2

[streams.typed]
format = "json"
buffer_seconds = 0.2

[server]
max_records_per_request = 10

[syslog]
udp = ""
tcp = ""

[queries.typed]
stream = "typed"
window = "tumbling 1m"
lateness = "0s"
sql = '''
SELECT DATE '2024-03-01' AS d, TIMESTAMP '2024-03-01 10:00:00' AS at,
       1.25::DECIMAL(10, 2) AS dec, sum(n)::DECIMAL(18, 0) AS total, 'ab'::BLOB AS b,
       [DATE '2024-01-02'] AS l, {'a': 1.5::DECIMAL(4, 1), 'b': 'x'::BLOB} AS s,
       'nan'::DOUBLE AS f, count(*) AS hits
FROM stream
'''

[dashboards.ops]
title = "Operations"

[[dashboards.ops.panels]]
query = "typed"
y = ["hits"]
"""

JSON = "application/json"
AWS = "application/x-amz-json-1.1"
KINESIS = "Kinesis_20131202."
DEEP = b"[" * 100_000 + b"]" * 100_000  # past the JSON parser's recursion limit
DEEP_SMALL = b"[" * 30_000 + b"]" * 30_000  # as deep, within the 64 KiB of stream settings
DEEP_8K = b"[" * 4_000 + b"]" * 4_000  # as deep, within the 8 KiB of a console sign-in
QUERY = {"stream": "web", "window": "tumbling 1m", "sql": "SELECT count(*) AS n FROM stream"}
NOTEBOOK = "0123456789abcdef"  # an id of the form notebooks take; no notebook has it
EXPORT = {"format": "loglake-notebook", "version": 1, "name": "x"}
ACCESS_LINES = 3  # combined access-log lines the server fixture ingests into logs.access


@dataclass(frozen=True)
class Bad:
    """One bad request and the error it must get (``code`` is AWS's ``__type`` for ``aws``)."""

    method: str
    path: str
    status: int
    code: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    says: str = ""  # a part of the message (e.g. the key named)
    aws: bool = False
    otlp: bool = False  # OTLP's shape: a google.rpc.Status as JSON, ``code`` its numeric code
    es: bool = False  # Elasticsearch's shape: {"error": {"root_cause", "type", "reason"}, "status"}


def amz(operation: str, body: bytes, status: int, code: str, **headers: str) -> Bad:
    target = {"X-Amz-Target": KINESIS + operation, "Content-Type": AWS, **headers}
    return Bad("POST", "/", status, code, body, target, aws=True)


def otlp(body: bytes, status: int, says: str, **headers: str) -> Bad:
    """A ``POST /v1/logs`` of an OTLP/JSON body; the answer is a google.rpc.Status (code 3:
    INVALID_ARGUMENT)."""
    return Bad(
        "POST", "/v1/logs", status, "3", body, {"Content-Type": JSON, **headers}, says, otlp=True
    )


def loki(body: bytes, status: int, says: str, **headers: str) -> Bad:
    """A ``POST /loki/api/v1/push`` (JSON unless ``headers`` say otherwise); the answer is the API's
    one JSON shape."""
    code = {400: "invalid_request", 415: "unsupported_encoding"}[status]
    sent = {"Content_Type": JSON, **headers}
    return Bad("POST", "/loki/api/v1/push", status, code, body, sent, says)


def es(method: str, path: str, body: bytes, status: int, kind: str, **headers: str) -> Bad:
    """A request to the Elasticsearch API; the answer has its shape, ``kind`` its error type."""
    return Bad(
        method,
        path,
        status,
        kind,
        body,
        {"Content-Type": "application/x-ndjson", **headers},
        es=True,
    )


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def download(body: bytes, status: int, code: str, says: str) -> Bad:
    """A ``POST /v1/sql/download`` of a JSON body (a form when not sent as JSON)."""
    return Bad("POST", "/v1/sql/download", status, code, body, {"Content-Type": JSON}, says)


#: Every route (path and method, as the app declares them) -> bad requests it must refuse.
BAD: dict[tuple[str, str], list[Bad]] = {
    ("/v1/logs", "POST"): [
        otlp(b"{not json", 400, "not JSON"),
        otlp(DEEP, 400, "not JSON"),
        otlp(b'{"resourceLogs": 3}', 400, "resourceLogs must be an array"),
        otlp(b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"spanId": 1}]}]}]}', 400, "hex"),
        otlp(b"{}", 415, "send gzip, zstd, snappy", Content_Encoding="br"),
    ],
    ("/loki/api/v1/push", "POST"): [
        loki(b"{not json", 400, "not JSON"),
        loki(DEEP, 400, "not JSON"),
        loki(b'{"streams": {}}', 400, "streams"),
        loki(b'{"streams": [{"stream": {"a": "b"}, "values": [[1, "x"]]}]}', 400, "nanoseconds"),
        loki(b'{"streams": [{"stream": {}, "values": [["1", "x"]]}]}', 400, "label"),
        loki(b"\xff\xff\xff\xff\xff\xff", 400, "snappy", Content_Type="application/x-protobuf"),
        loki(b"{}", 415, "not supported", Content_Encoding="br"),
        loki(b"not gzip", 400, "not gzip", Content_Encoding="gzip"),
        Bad("GET", "/loki/api/v1/push", 405, "method_not_allowed"),
    ],
    ("/ready", "GET"): [Bad("POST", "/ready", 405, "method_not_allowed")],
    ("/", "POST"): [
        amz("PutRecord", b"{not json", 400, "SerializationException"),
        amz("PutRecord", DEEP, 400, "SerializationException"),
        amz("PutRecord", b"[]", 400, "SerializationException"),
        amz("Nope", b"{}", 400, "UnknownOperationException"),
        amz(
            "PutRecord",
            js({"StreamName": "nope", "Data": "YQ==", "PartitionKey": "k"}),
            400,
            "ResourceNotFoundException",
        ),
        amz("PutRecord", js({"StreamName": 5}), 400, "SerializationException"),
        amz("ListStreams", b"{}", 415, "UnsupportedMediaTypeException", Content_Encoding="br"),
        Bad("PUT", "/", 405, "method_not_allowed"),
    ],
    # The Elasticsearch API (its version document on GET /).
    ("/", "GET"): [Bad("DELETE", "/", 405, "method_not_allowed")],
    ("/_license", "GET"): [Bad("POST", "/_license", 405, "method_not_allowed")],
    ("/_cluster/health", "GET"): [Bad("PUT", "/_cluster/health", 405, "method_not_allowed")],
    ("/_cat/health", "GET"): [Bad("POST", "/_cat/health", 405, "method_not_allowed")],
    ("/_bulk", "POST"): [
        es("POST", "/_bulk", b"{not json\n{}\n", 400, "x_content_parse_exception"),
        es("POST", "/_bulk", DEEP + b"\n{}\n", 400, "x_content_parse_exception"),
        es("POST", "/_bulk", b'{"upsert": {}}\n{}\n', 400, "illegal_argument_exception"),
        es("POST", "/_bulk", b'{"index": {}}\n{}\n', 400, "action_request_validation_exception"),
        es("POST", "/_bulk", b"{}", 415, "parse_exception", Content_Encoding="br"),
        es(
            "POST",
            "/_bulk",
            b'{"index": {"_index": "events"}}\n{}\n' * 11,
            413,
            "content_too_long_exception",
        ),
        Bad("DELETE", "/_bulk", 405, "method_not_allowed"),
    ],
    ("/_bulk", "PUT"): [
        es("PUT", "/_bulk", b'{"index": []}\n{}\n', 400, "illegal_argument_exception"),
    ],
    ("/{index}/_bulk", "POST"): [
        es("POST", "/events/_bulk", b'{"index": {}}\n', 400, "illegal_argument_exception"),
        es("POST", "/events/_bulk", b"[1]\n{}\n", 400, "illegal_argument_exception"),
    ],
    ("/{index}/_bulk", "PUT"): [
        es("PUT", "/events/_bulk", b"not json\n", 400, "x_content_parse_exception"),
    ],
    ("/_index_template/{name}", "GET"): [
        Bad("DELETE", "/_index_template/x", 405, "method_not_allowed")
    ],
    ("/_index_template/{name}", "PUT"): [
        es("PUT", "/_index_template/x", b"{}", 415, "parse_exception", Content_Encoding="br")
    ],
    ("/_template/{name}", "GET"): [Bad("POST", "/_template/x", 405, "method_not_allowed")],
    ("/_template/{name}", "PUT"): [
        es("PUT", "/_template/x", b"{}", 415, "parse_exception", Content_Encoding="br")
    ],
    ("/_ilm/policy/{name}", "GET"): [Bad("POST", "/_ilm/policy/x", 405, "method_not_allowed")],
    ("/_ilm/policy/{name}", "PUT"): [
        es("PUT", "/_ilm/policy/x", b"{}", 415, "parse_exception", Content_Encoding="br")
    ],
    ("/_ingest/pipeline/{name}", "GET"): [
        Bad("POST", "/_ingest/pipeline/x", 405, "method_not_allowed")
    ],
    ("/_ingest/pipeline/{name}", "PUT"): [
        es("PUT", "/_ingest/pipeline/x", b"{}", 415, "parse_exception", Content_Encoding="br")
    ],
    ("/healthz", "GET"): [Bad("POST", "/healthz", 405, "method_not_allowed")],
    ("/readyz", "GET"): [Bad("DELETE", "/readyz", 405, "method_not_allowed")],
    ("/metrics", "GET"): [Bad("PUT", "/metrics", 405, "method_not_allowed")],
    ("/v1/cluster", "GET"): [Bad("POST", "/v1/cluster", 405, "method_not_allowed")],
    ("/v1/streams", "GET"): [Bad("PATCH", "/v1/streams", 405, "method_not_allowed")],
    ("/v1/streams/{stream}", "PUT"): [
        Bad("PUT", "/v1/streams/x", 400, "invalid_request", b"{not json", says="JSON object"),
        Bad("PUT", "/v1/streams/x", 400, "invalid_request", DEEP_SMALL, says="nested too deeply"),
        Bad("PUT", "/v1/streams/x", 413, "body_too_large", DEEP, says="65536 bytes"),
        Bad("PUT", "/v1/streams/x", 400, "invalid_request", b"[1]", says="not list"),
        Bad("PUT", "/v1/streams/x", 400, "invalid_request", b'{"a": "\xff"}', says="JSON"),
        Bad("PUT", "/v1/streams/x", 400, "invalid_request", js({"format": 123}), says="format"),
        Bad("PUT", "/v1/streams/x", 400, "invalid_request", js({"format": "nope"}), says="nope"),
        Bad(
            "PUT",
            "/v1/streams/x",
            400,
            "invalid_request",
            js({"buffer_records": True}),
            says="buffer_records",
        ),
        Bad("PUT", "/v1/streams/x", 400, "invalid_request", js({"colour": 1}), says="colour"),
        Bad("PUT", "/v1/streams/a%20b", 400, "invalid_request", b"{}", says="a b"),
        Bad("PUT", "/v1/streams/..", 400, "invalid_request", b"{}", says="only dots"),
        Bad(
            "PUT",
            "/v1/streams/x",
            415,
            "unsupported_encoding",
            b"{}",
            {"Content-Encoding": "br"},
        ),
        Bad(
            "PUT",
            "/v1/streams/x",
            400,
            "invalid_request",
            b"{}",
            {"Content-Encoding": "gzip"},
            says="not gzip",
        ),
    ],
    ("/v1/streams/{stream}", "DELETE"): [
        Bad("DELETE", "/v1/streams/nope", 404, "no_such_stream", says="nope"),
        Bad("DELETE", "/v1/streams/web?force=maybe", 400, "invalid_request", says="force"),
        Bad("DELETE", "/v1/streams/web?timeout=-1", 400, "invalid_request", says="timeout"),
        Bad("DELETE", "/v1/streams/web?timeout=x", 400, "invalid_request", says="timeout"),
        Bad("DELETE", "/v1/streams/web", 409, "stream_busy", says="[streams.web]"),
        Bad("GET", "/v1/streams/web", 405, "method_not_allowed"),
    ],
    ("/v1/streams/{stream}/records", "POST"): [
        Bad("POST", "/v1/streams/nope/records", 404, "no_such_stream", b"a", says="nope"),
        Bad(
            "POST",
            "/v1/streams/web/records",
            415,
            "unsupported_encoding",
            b"a",
            {"Content-Encoding": "zstd"},
        ),
        Bad(
            "POST",
            "/v1/streams/web/records",
            400,
            "invalid_request",
            gzip.compress(b"a\n")[:-3],
            {"Content-Encoding": "gzip"},
            says="cut short",
        ),
        Bad(
            "POST",
            "/v1/streams/web/records",
            413,
            "too_many_records",
            b"a\n" * 11,
            says="max_records_per_request",
        ),
        Bad("GET", "/v1/streams/web/records", 405, "method_not_allowed"),
    ],
    ("/v1/queries", "GET"): [Bad("POST", "/v1/queries", 405, "method_not_allowed")],
    ("/v1/queries/{query}", "PUT"): [
        Bad("PUT", "/v1/queries/q", 400, "invalid_request", b"{not json", says="JSON object"),
        Bad("PUT", "/v1/queries/q", 400, "invalid_request", DEEP, says="nested too deeply"),
        Bad("PUT", "/v1/queries/q", 400, "invalid_request", b"", says="JSON object"),
        Bad("PUT", "/v1/queries/q", 400, "invalid_request", b'"x"', says="not str"),
        Bad(
            "PUT",
            "/v1/queries/q",
            400,
            "invalid_request",
            js({**QUERY, "colour": 1}),
            says="colour",
        ),
        Bad(
            "PUT",
            "/v1/queries/q",
            400,
            "invalid_request",
            js({**QUERY, "window": 5}),
            says="window",
        ),
        Bad("PUT", "/v1/queries/q", 400, "invalid_request", js({**QUERY, "sql": 5}), says="sql"),
        Bad("PUT", "/v1/queries/q", 404, "no_such_stream", js({**QUERY, "stream": "nope"})),
        Bad(
            "PUT",
            "/v1/queries/q",
            400,
            "invalid_request",
            js({**QUERY, "sql": "DELETE FROM stream"}),
            says="queries.q.sql",
        ),
        Bad("PUT", "/v1/queries/typed", 409, "query_exists", js(QUERY), says="typed"),
        Bad(
            "PUT",
            "/v1/queries/q",
            415,
            "unsupported_encoding",
            js(QUERY),
            {"Content-Encoding": "deflate"},
        ),
    ],
    ("/v1/queries/{query}", "DELETE"): [
        Bad("DELETE", "/v1/queries/nope", 404, "no_such_query", says="nope"),
        Bad("DELETE", "/v1/queries/typed", 400, "invalid_request", says="config file"),
        Bad("GET", "/v1/queries/typed", 405, "method_not_allowed"),
    ],
    ("/v1/queries/{query}/results", "GET"): [
        Bad("GET", "/v1/queries/nope/results", 404, "no_such_query", says="typed"),
        Bad("GET", "/v1/queries/typed/results?limit=x", 400, "invalid_request", says="limit"),
        Bad("GET", "/v1/queries/typed/results?limit=0", 400, "invalid_request", says="limit"),
        Bad("POST", "/v1/queries/typed/results", 405, "method_not_allowed"),
    ],
    ("/v1/queries/{query}/events", "GET"): [
        Bad("GET", "/v1/queries/nope/events", 404, "no_such_query", says="nope"),
        Bad("POST", "/v1/queries/typed/events", 405, "method_not_allowed"),
    ],
    ("/v1/alerts", "GET"): [Bad("DELETE", "/v1/alerts", 405, "method_not_allowed")],
    # -- the web console: its pages, static code, sign-in and SQL ------------------------------------
    ("/console", "GET"): [Bad("POST", "/console", 405, "method_not_allowed")],
    ("/console/{page}", "GET"): [
        Bad("GET", "/console/nope", 404, "not_found", says="pages are explore"),
        Bad("POST", "/console/explore", 405, "method_not_allowed"),
    ],
    ("/console/static/{path}", "GET"): [
        Bad("GET", "/console/static/nope.js", 404, "not_found", says="/console/static/nope.js"),
        Bad("GET", "/console/static/..%2fweb.py", 404, "not_found", says="web.py"),
        Bad("GET", "/console/static/%2e%2e/%2e%2e/errors.py", 404, "not_found"),
        Bad("POST", "/console/static/app.js", 405, "method_not_allowed"),
    ],
    ("/console/vendor/{path}", "GET"): [
        Bad("GET", "/console/vendor/nope.js", 404, "not_found", says="/console/vendor/nope.js"),
        Bad("GET", "/console/vendor/..%2f..%2f__init__.py", 404, "not_found"),
        Bad("DELETE", "/console/vendor/uPlot.iife.js", 405, "method_not_allowed"),
    ],
    ("/console/login", "GET"): [Bad("PUT", "/console/login", 405, "method_not_allowed")],
    ("/console/login", "POST"): [
        Bad("POST", "/console/login", 400, "invalid_request", b"{not json", says="JSON"),
        Bad("POST", "/console/login", 400, "invalid_request", DEEP_8K, says="nested too deeply"),
        Bad("POST", "/console/login", 413, "body_too_large", DEEP_SMALL, says="8192 bytes"),
        Bad("POST", "/console/login", 401, "unauthorized", js({"key": "x"}), says="api_keys"),
        Bad("POST", "/console/login", 401, "unauthorized", js({"key": 5}), says="api_keys"),
        Bad("POST", "/console/login", 401, "unauthorized", b"[]", says="api_keys"),
    ],
    ("/console/logout", "POST"): [Bad("PUT", "/console/logout", 405, "method_not_allowed")],
    ("/v1/console", "GET"): [Bad("PUT", "/v1/console", 405, "method_not_allowed")],
    ("/v1/sql", "POST"): [
        Bad("GET", "/v1/sql", 405, "method_not_allowed"),
        Bad("POST", "/v1/sql", 400, "invalid_request", b"{not json", says="must be JSON"),
        Bad("POST", "/v1/sql", 400, "invalid_request", DEEP, says="nested too deeply"),
        Bad("POST", "/v1/sql", 400, "invalid_request", b"", says='"sql"'),
        Bad("POST", "/v1/sql", 400, "invalid_request", b"[1]", says='"sql"'),
        Bad("POST", "/v1/sql", 400, "invalid_request", js({"sql": 5}), says='"sql"'),
        Bad("POST", "/v1/sql", 400, "invalid_request", js({"sql": " "}), says="empty"),
        Bad(
            "POST",
            "/v1/sql",
            400,
            "invalid_request",
            js({"sql": "SELECT 1", "colour": 1}),
            says="colour",
        ),
        Bad(
            "POST",
            "/v1/sql",
            400,
            "invalid_request",
            js({"sql": "SELECT 1", "dialect": "cobol"}),
            says="athena",
        ),
        Bad(
            "POST",
            "/v1/sql",
            400,
            "invalid_request",
            js({"sql": "SELECT 1", "dialect": {}}),
            says="unknown dialect",
        ),
        Bad("POST", "/v1/sql", 400, "invalid_query", js({"sql": "SELEC 1"}), says="SELEC"),
        Bad(
            "POST",
            "/v1/sql",
            400,
            "invalid_query",
            js({"sql": "SELECT * FROM logs.nope"}),
            says="logs.nope",
        ),
        Bad(
            "POST",
            "/v1/sql",
            403,
            "query_refused",
            js({"sql": "DROP TABLE logs.access"}),
            says="read-only",
        ),
        Bad(
            "POST",
            "/v1/sql",
            403,
            "query_refused",
            js({"sql": "SELECT * FROM read_csv('/etc/passwd')"}),
            says="read_csv",
        ),
        Bad(
            "POST",
            "/v1/sql",
            415,
            "unsupported_encoding",
            js({"sql": "SELECT 1"}),
            {"Content-Encoding": "br"},
        ),
        Bad("POST", "/v1/sql", 413, "body_too_large", b" " * (2 << 20), says="1048576 bytes"),
    ],
    # -- Explore (logs.access holds the lines the server fixture ingested) ---------------------------
    ("/v1/explore/tables", "GET"): [
        Bad("GET", "/v1/explore/tables?x=1", 400, "invalid_request", says="x"),
        Bad("POST", "/v1/explore/tables", 405, "method_not_allowed"),
    ],
    ("/v1/explore/histogram", "GET"): [
        Bad(
            "GET", "/v1/explore/histogram?table=logs.nope", 404, "no_such_table", says="logs.access"
        ),
        Bad(
            "GET",
            "/v1/explore/histogram?table=..%2f..%2fetc",
            404,
            "no_such_table",
            says="../../etc",
        ),
        Bad("GET", "/v1/explore/histogram?from=yesterday", 400, "invalid_request", says="now-15m"),
        Bad(
            "GET",
            "/v1/explore/histogram?from=now-1h&to=now-2h",
            400,
            "invalid_request",
            says="must be before to",
        ),
        Bad(
            "GET",
            "/v1/explore/histogram?from=now-999999999w",
            400,
            "invalid_request",
            says="year 1",
        ),
        Bad("GET", "/v1/explore/histogram?q=colour:red", 400, "invalid_request", says="colour"),
        Bad(
            "GET",
            "/v1/explore/histogram?q=status:abc",
            400,
            "invalid_request",
            says="whole numbers",
        ),
        Bad("GET", "/v1/explore/histogram?q=%22open", 400, "invalid_request", says="never closed"),
        Bad(
            "GET", "/v1/explore/histogram?q=" + "x%20" * 65, 400, "invalid_request", says="64 terms"
        ),
        Bad("GET", "/v1/explore/histogram?where=1)", 400, "invalid_request", says="parenthesis"),
        Bad(
            "GET",
            "/v1/explore/histogram?where=1;DROP%20TABLE%20logs.access",
            400,
            "invalid_request",
            says="no ;",
        ),
        Bad(
            "GET", "/v1/explore/histogram?where=nosuchcol=1", 400, "invalid_query", says="nosuchcol"
        ),
        Bad(
            "GET",
            "/v1/explore/histogram?where=(SELECT%20count(*)%20FROM%20read_csv('/etc/passwd'))>0",
            403,
            "query_refused",
            says="read_csv",
        ),
        Bad("GET", "/v1/explore/histogram?table=a&table=b", 400, "invalid_request", says="once"),
        Bad("GET", "/v1/explore/histogram?limit=5", 400, "invalid_request", says="limit"),
        Bad("POST", "/v1/explore/histogram", 405, "method_not_allowed"),
    ],
    ("/v1/explore/records", "GET"): [
        Bad("GET", "/v1/explore/records?table=logs.nope", 404, "no_such_table", says="logs.nope"),
        Bad("GET", "/v1/explore/records?limit=0", 400, "invalid_request", says="1 to 1000"),
        Bad("GET", "/v1/explore/records?limit=1001", 400, "invalid_request", says="1 to 1000"),
        Bad("GET", "/v1/explore/records?limit=x", 400, "invalid_request", says="limit"),
        Bad("GET", "/v1/explore/records?limit=%C2%B2", 400, "invalid_request", says="limit"),
        Bad("GET", "/v1/explore/records?cursor=garbage", 400, "invalid_request", says="first page"),
        Bad("GET", "/v1/explore/records?cursor=x~3", 400, "invalid_request", says="cursor"),
        Bad(
            "GET",
            "/v1/explore/records?cursor=2026-01-01%2000:00:00~%C2%B2",
            400,
            "invalid_request",
            says="cursor",
        ),
        Bad("GET", "/v1/explore/records?where=(ts", 400, "invalid_request", says="never closes"),
        Bad("GET", "/v1/explore/records?where=1=1%20--", 400, "invalid_request", says="comments"),
        Bad(
            "GET",
            "/v1/explore/records?q=is_bot:maybe",
            400,
            "invalid_request",
            says="true or false",
        ),
        Bad("GET", "/v1/explore/records?q=ts:abc", 400, "invalid_query", says="abc"),
        Bad("DELETE", "/v1/explore/records", 405, "method_not_allowed"),
    ],
    ("/v1/explore/top", "GET"): [
        Bad("GET", "/v1/explore/top?fields=nope", 400, "invalid_request", says="nope"),
        Bad(
            "GET",
            "/v1/explore/top?fields=" + ",".join("status" for _ in range(21)),
            400,
            "invalid_request",
            says="at most 20",
        ),
        Bad("GET", "/v1/explore/top?q=status:", 400, "invalid_request", says="status:*"),
        Bad("PUT", "/v1/explore/top", 405, "method_not_allowed"),
    ],
    ("/v1/explore/tail", "GET"): [
        Bad("GET", "/v1/explore/tail", 400, "invalid_request", says="after"),
        Bad("GET", "/v1/explore/tail?after=bad", 400, "invalid_request", says="not a time"),
        Bad("GET", "/v1/explore/tail?after=now&seen=-1", 400, "invalid_request", says="seen"),
        Bad("GET", "/v1/explore/tail?after=now&limit=5000", 400, "invalid_request", says="limit"),
        Bad("POST", "/v1/explore/tail", 405, "method_not_allowed"),
    ],
    ("/v1/explore/around", "GET"): [
        Bad("GET", "/v1/explore/around", 400, "invalid_request", says="give at"),
        Bad("GET", "/v1/explore/around?at=now&field=nope", 400, "invalid_request", says="nope"),
        Bad("GET", "/v1/explore/around?at=bad&field=client", 400, "invalid_request", says="at"),
        Bad(
            "GET",
            "/v1/explore/around?at=0001-01-01&field=client",
            400,
            "invalid_request",
            says="year 1",
        ),
        Bad(
            "GET",
            "/v1/explore/around?at=9999-12-31&field=client",
            400,
            "invalid_request",
            says="9999",
        ),
        Bad("GET", "/v1/explore/around?at=now&field=client&n=0", 400, "invalid_request", says="n"),
        Bad(
            "GET",
            "/v1/explore/around?at=now&field=status&value=abc",
            400,
            "invalid_request",
            says="whole numbers",
        ),
        Bad(
            "GET",
            "/v1/explore/around?at=now&field=client&table=logs.nope",
            404,
            "no_such_table",
            says="logs.nope",
        ),
        Bad("POST", "/v1/explore/around", 405, "method_not_allowed"),
    ],
    ("/v1/explore/download", "GET"): [
        Bad("GET", "/v1/explore/download?format=xml", 400, "invalid_request", says="csv or json"),
        Bad("GET", "/v1/explore/download?page=5", 400, "invalid_request", says="page"),
        Bad("GET", "/v1/explore/download?q=nope:1", 400, "invalid_request", says="nope"),
        Bad(
            "GET", "/v1/explore/download?where=nosuchcol=1", 400, "invalid_query", says="nosuchcol"
        ),
        Bad("GET", "/v1/explore/download?table=logs.nope", 404, "no_such_table", says="logs.nope"),
        Bad("POST", "/v1/explore/download", 405, "method_not_allowed"),
    ],
    # -- Live: dashboards (ops is the config file's, read-only) and results --------------------------
    ("/v1/console/dashboards", "GET"): [
        Bad("POST", "/v1/console/dashboards", 405, "method_not_allowed"),
    ],
    ("/v1/console/dashboards/{name}", "GET"): [
        Bad("GET", "/v1/console/dashboards/nope", 404, "no_such_dashboard", says="nope"),
        Bad("GET", "/v1/console/dashboards/..", 400, "invalid_request", says="letters, digits"),
        Bad("GET", "/v1/console/dashboards/" + "a" * 65, 400, "invalid_request", says="1-64"),
        Bad("POST", "/v1/console/dashboards/x", 405, "method_not_allowed"),
    ],
    ("/v1/console/dashboards/{name}", "PUT"): [
        Bad("PUT", "/v1/console/dashboards/x", 400, "invalid_request", b"{not json", says="JSON"),
        Bad(
            "PUT",
            "/v1/console/dashboards/x",
            400,
            "invalid_request",
            DEEP_SMALL,
            says="nested too deeply",
        ),
        Bad("PUT", "/v1/console/dashboards/x", 413, "body_too_large", DEEP, says="65536 bytes"),
        Bad("PUT", "/v1/console/dashboards/x", 400, "invalid_request", b"[1]", says="a list"),
        Bad(
            "PUT",
            "/v1/console/dashboards/x",
            400,
            "invalid_request",
            js({"colour": 1}),
            says="colour",
        ),
        Bad(
            "PUT",
            "/v1/console/dashboards/x",
            400,
            "invalid_request",
            js({"title": 5}),
            says="dashboards.x.title",
        ),
        Bad(
            "PUT",
            "/v1/console/dashboards/x",
            400,
            "invalid_request",
            js({"panels": 5}),
            says="dashboards.x.panels",
        ),
        Bad(
            "PUT",
            "/v1/console/dashboards/x",
            400,
            "invalid_request",
            js({"panels": [{"query": "typed", "kind": "donut", "y": ["hits"]}]}),
            says="timeseries, bar",
        ),
        Bad(
            "PUT",
            "/v1/console/dashboards/x",
            400,
            "invalid_request",
            js({"panels": [{"query": "typed", "y": ["hits"], "width": 13}]}),
            says="width",
        ),
        Bad(
            "PUT",
            "/v1/console/dashboards/x",
            400,
            "invalid_request",
            js({"panels": [{"query": "typed", "y": ["hits"]}] * 25}),
            says="at most 24",
        ),
        Bad("PUT", "/v1/console/dashboards/a%20b", 400, "invalid_request", b"{}", says="a b"),
        Bad("PUT", "/v1/console/dashboards/ops", 409, "read_only", b"{}", says="config file"),
    ],
    ("/v1/console/dashboards/{name}", "DELETE"): [
        Bad("DELETE", "/v1/console/dashboards/nope", 404, "no_such_dashboard", says="nope"),
        Bad("DELETE", "/v1/console/dashboards/..", 400, "invalid_request", says="letters"),
        Bad("DELETE", "/v1/console/dashboards/ops", 409, "read_only", says="save a copy"),
    ],
    ("/v1/console/live/events", "GET"): [
        Bad("GET", "/v1/console/live/events", 400, "invalid_request", says="?query=NAME"),
        Bad(
            "GET",
            "/v1/console/live/events?" + "&".join(f"query=q{i}" for i in range(25)),
            400,
            "invalid_request",
            says="at most 24",
        ),
        Bad("POST", "/v1/console/live/events?query=typed", 405, "method_not_allowed"),
    ],
    ("/v1/console/live/history", "GET"): [
        Bad("GET", "/v1/console/live/history", 404, "no_such_query", says="GET /v1/queries"),
        Bad("GET", "/v1/console/live/history?query=nope", 404, "no_such_query", says="nope"),
        Bad(
            "GET",
            "/v1/console/live/history?query=typed&windows=0",
            400,
            "invalid_request",
            says="1 to 1000",
        ),
        Bad(
            "GET",
            "/v1/console/live/history?query=typed&windows=x",
            400,
            "invalid_request",
            says="windows",
        ),
        Bad("POST", "/v1/console/live/history", 405, "method_not_allowed"),
    ],
    # -- Notebooks (none exists: every id names no notebook) -----------------------------------------
    ("/v1/notebooks", "GET"): [Bad("DELETE", "/v1/notebooks", 405, "method_not_allowed")],
    ("/v1/notebooks", "POST"): [
        Bad("POST", "/v1/notebooks", 400, "invalid_request", b"{not json", says="must be JSON"),
        Bad("POST", "/v1/notebooks", 400, "invalid_request", DEEP, says="nested too deeply"),
        Bad("POST", "/v1/notebooks", 400, "invalid_request", b"[1]", says="JSON object"),
        Bad("POST", "/v1/notebooks", 400, "invalid_request", js({"colour": 1}), says="colour"),
        Bad("POST", "/v1/notebooks", 400, "invalid_request", js({"name": 5}), says='"name"'),
        Bad("POST", "/v1/notebooks", 400, "invalid_request", js({"name": " "}), says="empty"),
        Bad("POST", "/v1/notebooks", 400, "invalid_request", js({"name": "a\nb"}), says="control"),
        Bad("POST", "/v1/notebooks", 400, "invalid_request", js({"name": "x" * 121}), says="120"),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": 5}),
            says='"paragraphs"',
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": [5]}),
            says="paragraph 1",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": [{"kind": "python"}]}),
            says="sql, markdown",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": [{"dialect": "cobol"}]}),
            says="cobol",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": [{"view": "radar"}]}),
            says="radar",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": [{"chart": {"z": "a"}}]}),
            says="chart keys z",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": [{"colour": 1}]}),
            says="colour",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": [{"id": "../x"}]}),
            says="id",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            400,
            "invalid_request",
            js({"name": "x", "paragraphs": [{"id": "a"}, {"id": "a"}]}),
            says="used twice",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            413,
            "notebook_too_large",
            js({"name": "x", "paragraphs": [{}] * 201}),
            says="at most 200",
        ),
        Bad(
            "POST",
            "/v1/notebooks",
            413,
            "notebook_too_large",
            js({"name": "x", "paragraphs": [{"text": "x" * (1 << 20)}]}),
            says="1,048,576 bytes",
        ),
    ],
    ("/v1/notebooks/import", "POST"): [
        Bad("PATCH", "/v1/notebooks/import", 405, "method_not_allowed"),
        # GET /v1/notebooks/{id} takes the path: "import" is no notebook's id
        Bad("GET", "/v1/notebooks/import", 404, "no_such_notebook", says="16 hex digits"),
        Bad("POST", "/v1/notebooks/import", 400, "invalid_request", b"{not", says="must be JSON"),
        Bad(
            "POST",
            "/v1/notebooks/import",
            400,
            "invalid_request",
            js({"name": "x"}),
            says="loglake-notebook",
        ),
        Bad(
            "POST",
            "/v1/notebooks/import",
            400,
            "invalid_request",
            js({**EXPORT, "version": 99}),
            says="export it again",
        ),
        Bad(
            "POST",
            "/v1/notebooks/import",
            400,
            "invalid_request",
            js({**EXPORT, "colour": 1}),
            says="colour",
        ),
        Bad(
            "POST",
            "/v1/notebooks/import",
            400,
            "invalid_request",
            js({**EXPORT, "paragraphs": [{"kind": "r"}]}),
            says="kind 'r'",
        ),
    ],
    ("/v1/notebooks/{id}", "GET"): [
        Bad("GET", f"/v1/notebooks/{NOTEBOOK}", 404, "no_such_notebook", says="GET /v1/notebooks"),
        Bad("GET", "/v1/notebooks/nope", 404, "no_such_notebook", says="16 hex digits"),
        Bad("GET", "/v1/notebooks/%2e%2e", 404, "no_such_notebook", says="16 hex digits"),
        Bad("GET", "/v1/notebooks/..%2f..%2fetc%2fpasswd", 404, "not_found"),
        Bad("POST", f"/v1/notebooks/{NOTEBOOK}", 405, "method_not_allowed"),
    ],
    ("/v1/notebooks/{id}", "PUT"): [
        Bad("PUT", f"/v1/notebooks/{NOTEBOOK}", 404, "no_such_notebook", js({"name": "x"})),
        Bad("PUT", "/v1/notebooks/..", 404, "no_such_notebook", js({"name": "x"}), says="16 hex"),
        Bad(
            "PUT",
            f"/v1/notebooks/{NOTEBOOK}",
            400,
            "invalid_request",
            DEEP,
            says="nested too deeply",
        ),
        Bad(
            "PUT",
            f"/v1/notebooks/{NOTEBOOK}",
            400,
            "invalid_request",
            js({"colour": 1}),
            says="colour",
        ),
        Bad(
            "PUT",
            f"/v1/notebooks/{NOTEBOOK}",
            400,
            "invalid_request",
            js({"revision": "3"}),
            says='"revision"',
        ),
        Bad(
            "PUT",
            f"/v1/notebooks/{NOTEBOOK}",
            400,
            "invalid_request",
            js({"paragraphs": [{"kind": "python"}]}),
            says="python",
        ),
    ],
    ("/v1/notebooks/{id}", "DELETE"): [
        Bad("DELETE", f"/v1/notebooks/{NOTEBOOK}", 404, "no_such_notebook", says="deleted"),
        Bad("DELETE", "/v1/notebooks/..", 404, "no_such_notebook", says="16 hex digits"),
    ],
    ("/v1/notebooks/{id}/rename", "POST"): [
        Bad(
            "POST",
            f"/v1/notebooks/{NOTEBOOK}/rename",
            404,
            "no_such_notebook",
            js({"name": "y"}),
            says=NOTEBOOK,
        ),
        Bad("POST", "/v1/notebooks/nope/rename", 404, "no_such_notebook", js({"name": "y"})),
        Bad(
            "POST",
            f"/v1/notebooks/{NOTEBOOK}/rename",
            400,
            "invalid_request",
            js({}),
            says='"name"',
        ),
        Bad(
            "POST",
            f"/v1/notebooks/{NOTEBOOK}/rename",
            400,
            "invalid_request",
            js({"name": "y", "paragraphs": []}),
            says="paragraphs",
        ),
        Bad("GET", f"/v1/notebooks/{NOTEBOOK}/rename", 405, "method_not_allowed"),
    ],
    ("/v1/notebooks/{id}/export", "GET"): [
        Bad("GET", f"/v1/notebooks/{NOTEBOOK}/export", 404, "no_such_notebook", says=NOTEBOOK),
        Bad("GET", "/v1/notebooks/nope/export", 404, "no_such_notebook", says="16 hex digits"),
        Bad("POST", f"/v1/notebooks/{NOTEBOOK}/export", 405, "method_not_allowed"),
    ],
    ("/v1/sql/download", "GET"): [
        Bad("GET", "/v1/sql/download", 400, "invalid_request", says='"sql"'),
        Bad(
            "GET", "/v1/sql/download?sql=SELECT%201&format=xml", 400, "invalid_request", says="csv"
        ),
        Bad(
            "GET",
            "/v1/sql/download?sql=SELECT%201&dialect=cobol",
            400,
            "invalid_request",
            says="cobol",
        ),
        Bad(
            "GET", "/v1/sql/download?sql=SELECT%201&colour=1", 400, "invalid_request", says="colour"
        ),
        Bad("GET", "/v1/sql/download?sql=SELEC%201", 400, "invalid_query", says="SELEC"),
        Bad(
            "GET",
            "/v1/sql/download?sql=DROP%20TABLE%20logs.access",
            403,
            "query_refused",
            says="read-only",
        ),
        Bad("PUT", "/v1/sql/download", 405, "method_not_allowed"),
    ],
    ("/v1/sql/download", "POST"): [
        download(b"{not json", 400, "invalid_request", says="must be JSON"),
        download(DEEP, 400, "invalid_request", says="must be JSON"),
        download(b"[1]", 400, "invalid_request", says='"sql"'),
        download(js({"sql": 5}), 400, "invalid_request", says='"sql"'),
        download(js({"sql": "SELECT 1", "format": ["csv"]}), 400, "invalid_request", says="csv"),
        download(js({"sql": "SELECT 1", "name": 5}), 400, "invalid_request", says='"name"'),
        download(js({"sql": "DROP TABLE logs.access"}), 403, "query_refused", says="read-only"),
        Bad(
            "POST",
            "/v1/sql/download",
            400,
            "invalid_request",
            b"{not json",
            says='"sql"',  # not JSON's content type: a form, without sql
        ),
        Bad(
            "POST",
            "/v1/sql/download",
            400,
            "invalid_request",
            b"sql=SELECT+1&format=xml",
            {"Content-Type": "application/x-www-form-urlencoded"},
            says="csv or json",
        ),
        Bad(
            "POST",
            "/v1/sql/download",
            400,
            "invalid_request",
            b"a=1&" * 20,
            {"Content-Type": "application/x-www-form-urlencoded"},
            says="sql=...&format=csv",
        ),
        Bad(
            "POST",
            "/v1/sql/download",
            415,
            "unsupported_encoding",
            b"{}",
            {"Content-Encoding": "br"},
        ),
    ],
    # -- Catalog ---------------------------------------------------------------------------------------
    ("/v1/catalog/tables", "GET"): [Bad("POST", "/v1/catalog/tables", 405, "method_not_allowed")],
    ("/v1/catalog/tables/{table}", "GET"): [
        Bad("GET", "/v1/catalog/tables/logs.nope", 404, "no_such_table", says="logs.access"),
        Bad("GET", "/v1/catalog/tables/..", 404, "no_such_table", says="GET /v1/catalog/tables"),
        Bad("GET", "/v1/catalog/tables/%2e%2e%2f%2e%2e", 404, "not_found"),
        Bad("PUT", "/v1/catalog/tables/logs.access", 405, "method_not_allowed"),
    ],
    ("/v1/catalog/tables/{table}/snapshots", "GET"): [
        Bad(
            "GET", "/v1/catalog/tables/logs.nope/snapshots", 404, "no_such_table", says="logs.nope"
        ),
        Bad(
            "GET",
            "/v1/catalog/tables/logs.access/snapshots?limit=0",
            400,
            "invalid_request",
            says="1 to 500",
        ),
        Bad(
            "GET",
            "/v1/catalog/tables/logs.access/snapshots?limit=501",
            400,
            "invalid_request",
            says="1 to 500",
        ),
        Bad(
            "GET",
            "/v1/catalog/tables/logs.access/snapshots?offset=-1",
            400,
            "invalid_request",
            says="offset",
        ),
        Bad(
            "GET",
            "/v1/catalog/tables/logs.access/snapshots?offset=x",
            400,
            "invalid_request",
            says="offset",
        ),
        Bad("DELETE", "/v1/catalog/tables/logs.access/snapshots", 405, "method_not_allowed"),
    ],
    ("/v1/catalog/tables/{table}/files", "GET"): [
        Bad("GET", "/v1/catalog/tables/logs.nope/files", 404, "no_such_table", says="logs.nope"),
        Bad(
            "GET",
            "/v1/catalog/tables/logs.access/files?limit=x",
            400,
            "invalid_request",
            says="limit",
        ),
        Bad(
            "GET",
            "/v1/catalog/tables/logs.access/files?offset=99999999999999999999",
            400,
            "invalid_request",
            says="offset",
        ),
        Bad("POST", "/v1/catalog/tables/logs.access/files", 405, "method_not_allowed"),
    ],
    ("/v1/catalog/streams", "GET"): [Bad("POST", "/v1/catalog/streams", 405, "method_not_allowed")],
    ("/v1/catalog/rejected", "GET"): [
        Bad("POST", "/v1/catalog/rejected", 405, "method_not_allowed")
    ],
    ("/v1/catalog/rejected/samples", "GET"): [
        Bad("GET", "/v1/catalog/rejected/samples", 400, "invalid_request", says="?reason="),
        Bad(
            "GET",
            "/v1/catalog/rejected/samples?reason=x&limit=101",
            400,
            "invalid_request",
            says="1 to 100",
        ),
        Bad(
            "GET",
            "/v1/catalog/rejected/samples?reason=%00",
            400,
            "invalid_request",
            says="NUL",
        ),
        Bad("POST", "/v1/catalog/rejected/samples", 405, "method_not_allowed"),
    ],
    ("/v1/catalog/queries", "GET"): [
        Bad("PATCH", "/v1/catalog/queries", 405, "method_not_allowed")
    ],
}

#: Paths no route has.
UNKNOWN = [
    Bad("GET", "/nope", 404, "not_found", says="/nope"),
    Bad("POST", "/v1/streams/web/records/more", 404, "not_found"),
    Bad("GET", "/v1", 404, "not_found"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server.started(tmp_path_factory.mktemp("errors") / "lake", CONFIG)
    try:
        # A table for Explore's and the Catalog's cases to find: bad input to them is then refused
        # for what it is, not because the lake is empty.
        now = datetime.now(UTC)
        lines = "".join(
            f"10.0.0.{i} - - [{now - timedelta(minutes=i):%d/%b/%Y:%H:%M:%S +0000}] "
            f'"GET /a HTTP/1.1" 200 12 "-" "curl/8"\n'
            for i in range(ACCESS_LINES)
        )
        status, reply, _ = call(srv, "POST", "/v1/streams/web/records", lines.encode())
        assert status == 200 and reply["accepted"] == ACCESS_LINES, reply
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", ACCESS_LINES)
        yield srv
    finally:
        if srv.proc is not None:
            srv.stop(signal.SIGKILL)


def call(
    srv: Server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request over its own connection (http.client sends the path exactly as given)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request(
            method, path, body, {k.replace("_", "-"): v for k, v in (headers or {}).items()}
        )
        resp = conn.getresponse()
        raw = resp.read()
        heads = {k.lower(): v for k, v in resp.getheaders()}
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return resp.status, parsed, heads
    finally:
        conn.close()


def check(srv: Server, bad: Bad) -> None:
    status, reply, headers = call(srv, bad.method, bad.path, bad.body, bad.headers)
    where = f"{bad.method} {bad.path}"
    assert (status, headers.get("content-type")) == (bad.status, AWS if bad.aws else JSON), (
        where,
        reply,
    )
    if bad.aws:
        assert reply["__type"] == bad.code and reply["message"], (where, reply)
        assert headers["x-amzn-errortype"] == bad.code
        return
    if bad.otlp:
        assert str(reply["code"]) == bad.code and bad.says in reply["message"], (where, reply)
        return
    if bad.es:
        assert list(reply) == ["error", "status"] and reply["status"] == bad.status, (where, reply)
        assert reply["error"]["type"] == bad.code and reply["error"]["reason"], (where, reply)
        assert reply["error"]["root_cause"][0]["type"] == bad.code, (where, reply)
        assert headers["x-elastic-product"] == "Elasticsearch", (where, reply)
        return
    assert isinstance(reply, dict) and list(reply) == ["error"], (where, reply)
    assert set(reply["error"]) == {"code", "message"}, (where, reply)
    assert reply["error"]["code"] == bad.code, (where, reply)
    message = reply["error"]["message"]
    assert isinstance(message, str) and message and bad.says in message, (where, reply)


def make_app(home: Path) -> Any:
    """The ASGI app that ``loglake serve`` runs for CONFIG (not started: no lifespan)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "loglake.toml").write_text(CONFIG)
    return create_app(load_config(home=home, environ={}))


def app_routes(home: Path) -> set[tuple[str, str]]:
    """(path, method) of every route of the app that ``loglake serve`` runs for CONFIG."""
    app = make_app(home)
    while not isinstance(app, Starlette):  # IngestFastPath, BearerAuth: each wraps .app
        app = app.app
    routes: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Mount):  # static files: every path under it, GET (and HEAD)
            routes.add((route.path + "/{path}", "GET"))
            continue
        routes.update((route.path, method) for method in (route.methods or {"GET"}) - {"HEAD"})
    return routes


def test_the_table_covers_every_route(tmp_path: Path) -> None:
    routes = app_routes(tmp_path / "lake")
    assert len(routes) >= 14
    missing = routes - set(BAD)
    assert not missing, f"routes without bad-input cases in BAD: {sorted(missing)}"
    assert not set(BAD) - routes, "BAD names routes the app does not have"
    assert all(BAD[route] for route in routes)


@pytest.mark.parametrize(
    "bad",
    [b for route in sorted(BAD) for b in BAD[route]] + UNKNOWN,
    ids=lambda b: f"{b.method} {b.path[:40]} {b.status}",
)
def test_bad_input_gets_the_error_shape(server: Server, bad: Bad) -> None:
    check(server, bad)


def test_nothing_bad_was_created(server: Server) -> None:
    streams = {s["name"] for s in call(server, "GET", "/v1/streams")[1]["streams"]}
    assert streams == {"web", "events", "typed"}
    queries = {q["name"] for q in call(server, "GET", "/v1/queries")[1]["queries"]}
    assert queries == {"typed"}
    # The console's saved things: no notebook, no dashboard but the config file's.
    assert call(server, "GET", "/v1/notebooks")[1]["notebooks"] == []
    dashboards = call(server, "GET", "/v1/console/dashboards")[1]["dashboards"]
    assert [(d["name"], d["source"]) for d in dashboards] == [("ops", "config")]
    assert not list((server.home / "console").rglob("*.json"))


def test_limits_carry_their_headers(server: Server) -> None:
    status, _, headers = call(server, "PUT", "/v1/streams/x", b"{}", {"Content-Encoding": "br"})
    assert status == 415 and headers["connection"] == "close"  # the body was not read
    status, _, headers = call(server, "POST", "/v1/streams/web/records", b"a\n" * 11)
    assert status == 413 and headers["connection"] == "close"
    status, _, headers = call(server, "PATCH", "/v1/streams")
    assert status == 405 and set(headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_a_failure_of_the_server_is_a_logged_500_in_the_shape(server: Server) -> None:
    # A file where the new stream's log folder goes: creating the stream fails on the disk.
    (server.home / "streams").mkdir(exist_ok=True)
    (server.home / "streams" / "blocked").write_text("not a folder")
    (server.home / "streams" / "blocked-aws").write_text("not a folder")
    status, reply, headers = call(server, "PUT", "/v1/streams/blocked", b"{}")
    assert (status, headers["content-type"]) == (500, JSON), reply
    assert reply["error"]["code"] == "internal" and "blocked" in reply["error"]["message"]
    # The AWS API answers in its own shape.
    bad = amz("CreateStream", js({"StreamName": "blocked-aws", "ShardCount": 1}), 500, "")
    status, reply, headers = call(server, bad.method, bad.path, bad.body, bad.headers)
    assert (status, headers["content-type"]) == (500, AWS), reply
    assert reply["__type"] == "InternalFailure" and headers["x-amzn-errortype"] == "InternalFailure"
    # The server goes on, and its log says what failed, once, with the traceback.
    assert call(server, "GET", "/healthz")[0] == 200
    log = (server.home / "server.log").read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["msg"].startswith("PUT /v1/streams/blocked failed")]
    assert len(failed) == 1 and failed[0]["level"] == "error" and "File exists" in failed[0]["exc"]
    assert [e for e in events if "blocked-aws" in e["msg"]]
    assert not [e for e in events if "Exception in ASGI application" in e["msg"]]


def asgi_call(app: Any, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through an ASGI app in this process: (status, headers, body)."""
    import asyncio

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
    }
    asyncio.run(app(scope, receive, send))  # an error answered is not raised further
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_an_unexpected_error_is_a_logged_500_naming_only_its_type(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from loglake.server.app import IngestFastPath

    async def broken(request: Request) -> Response:
        raise KeyError("secret detail")

    app = make_app(tmp_path / "lake")
    routed = app
    while not isinstance(routed, Starlette):
        routed = routed.app
    routed.router.routes.append(Route("/broken", broken))
    fast = IngestFastPath(routed, [(re.compile("/broken"), frozenset({"POST"}), broken)])
    for asgi, method in [
        (app, "GET"),  # through Starlette's router and handlers
        (fast, "POST"),  # through the ingest fast path
    ]:
        caplog.clear()
        status, headers, body = asgi_call(asgi, method, "/broken")
        assert (status, headers["content-type"]) == (500, JSON)
        assert json.loads(body) == {
            "error": {
                "code": "internal",
                "message": "internal error: KeyError; the server log has the details",
            }
        }
        logged = [r for r in caplog.records if r.name == "loglake.serve"]
        assert len(logged) == 1 and logged[0].levelname == "ERROR"
        assert logged[0].getMessage().startswith(f"{method} /broken failed")
        assert logged[0].exc_info is not None


@pytest.mark.parametrize(
    "head",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /v1/streams/web/records HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n",
    ],
)
def test_malformed_http_gets_a_json_400(server: Server, head: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(1 << 16):  # the server closes the connection
            answer += chunk
    first, _, rest = answer.partition(b"\r\n")
    heads, _, body = rest.partition(b"\r\n\r\n")
    assert first == b"HTTP/1.1 400 Bad Request", answer
    assert b"content-type: application/json" in heads.lower()
    reply = json.loads(body)
    assert reply["error"]["code"] == "invalid_request" and "HTTP/1.1" in reply["error"]["message"]


def test_a_missing_api_key_is_a_401_in_the_shape() -> None:
    import asyncio

    async def never(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app behind the key check was called")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/v1/streams", "headers": []}
    asyncio.run(BearerAuth(never, keys=("k",))(scope, receive, send))
    assert sent[0]["status"] == 401
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    assert headers["content-type"] == JSON and headers["www-authenticate"] == "Bearer"
    reply = json.loads(sent[1]["body"])
    assert reply["error"]["code"] == "unauthorized" and "api_keys" in reply["error"]["message"]


# -- finding 1: continuous-query results of every SQL type are JSON -----------------------------


def test_results_of_every_sql_type_are_json(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", "/v1/queries/typed/events")
        events = conn.getresponse()
        assert events.status == 200 and events.readline().startswith(b": subscribed")
        lines = b'{"ts": 1709287200, "n": 2}\n{"ts": 1709287270, "n": 3}\n'  # closes 10:00
        status, reply, _ = call(
            server,
            "POST",
            "/v1/streams/typed/records",
            lines,
            {"Content-Type": "application/x-ndjson"},
        )
        assert status == 200 and reply["accepted"] == 2, reply
        deadline = time.monotonic() + 60
        rows: list[dict[str, Any]] = []
        while not rows:
            assert time.monotonic() < deadline, "no result row within 60 s"
            status, reply, headers = call(server, "GET", "/v1/queries/typed/results?limit=5")
            assert (status, headers["content-type"]) == (200, JSON), reply
            rows = reply["rows"]
            time.sleep(0.2)
        expected = {
            "window_start": "2024-03-01T10:00:00",
            "d": "2024-03-01",
            "at": "2024-03-01T10:00:00",
            "dec": 1.25,
            "total": 2,
            "b": base64.b64encode(b"ab").decode(),
            "l": ["2024-01-02"],
            "s": {"a": 1.5, "b": base64.b64encode(b"x").decode()},
            "f": None,
            "hits": 1,
        }
        assert {k: rows[0][k] for k in expected} == expected, rows[0]
        # The same row on the event stream, as JSON.
        while not (line := events.readline()).startswith(b"data: "):
            pass
        pushed = json.loads(line[6:])
        assert {k: pushed[k] for k in expected} == expected
    finally:
        conn.close()
    status, reply, headers = call(server, "GET", "/v1/queries")
    assert (status, headers["content-type"]) == (200, JSON)
    described = reply["queries"][0]
    assert described["name"] == "typed" and described["result_rows"] == 1
