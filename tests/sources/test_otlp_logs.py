"""OTLP/HTTP logs (``POST /v1/logs``) against a real ``loglake serve``: the OpenTelemetry Python
SDK's OTLP/HTTP log exporter, and raw requests for OTLP/JSON's hex ids, gzip and zstd bodies,
partial success, malformed bodies (a ``google.rpc.Status`` in the request's encoding) and a full
stream (503 + Retry-After)."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import signal
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cramjam
import pytest
import requests
import zstandard
from google.rpc import code_pb2, status_pb2
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from serving import Server, request

CONFIG = """
[streams.otlp]
format = "json"
table = "logs.otlp"
buffer_seconds = 0.2

[syslog]
udp = ""
tcp = ""
"""

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACE = bytes(range(1, 17))
SPAN = bytes(range(21, 29))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server.started(tmp_path_factory.mktemp("otlp"), CONFIG)
    try:
        yield srv
    finally:
        srv.stop(signal.SIGKILL)


def post(
    srv: Server, body: bytes, content_type: str, encoding: str = ""
) -> tuple[int, bytes, dict[str, str]]:
    """POST ``body`` to /v1/logs; (status, reply body, lower-cased headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    try:
        conn.request("POST", "/v1/logs", body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    if isinstance(value, str):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))


def export_request(test: str, records: list[logs_pb2.LogRecord]) -> bytes:
    """One ExportLogsServiceRequest of ``records``, each marked with the attribute test=``test``."""
    for record in records:  # before the message copies them
        record.attributes.append(kv("test", test))
    resource = resource_pb2.Resource(attributes=[kv("service.name", "checkout")])
    scope = common_pb2.InstrumentationScope(name="raw", version="1.2")
    message = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource,
                scope_logs=[logs_pb2.ScopeLogs(scope=scope, log_records=records)],
            )
        ]
    )
    return message.SerializeToString()


def metric(srv: Server, name: str, reason: str = "") -> float:
    """The value of ``name`` for the otlp source and stream on /metrics (0 when absent)."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"{srv.url}/metrics", timeout=30
    ) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        labels = re.match(name + r"\{(.*)\} (\S+)$", line)
        wanted = ['source="otlp"', 'stream="otlp"', *([f'reason="{reason}"'] if reason else [])]
        if labels and all(label in labels[1] for label in wanted):
            return float(labels[2])
    return 0.0


def rows(srv: Server, test: str, want: int) -> list[dict[str, Any]]:
    where = f"FROM logs.otlp WHERE attributes.test = '{test}'"
    srv.wait_rows(f"SELECT count(*) AS n {where}", want)
    return srv.query(f"SELECT * {where} ORDER BY time_unix_nano")


def test_sdk_exporter_delivers_every_record_once(server: Server) -> None:
    resource = Resource.create({"service.name": "shop", "deployment.environment": "test"})
    provider = LoggerProvider(resource=resource)
    session = requests.Session()
    session.trust_env = False  # straight to the server, whatever proxy the environment names
    exporter = OTLPLogExporter(
        endpoint=f"{server.url}/v1/logs", compression=Compression.Gzip, session=session
    )
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=128))
    logger = provider.get_logger("otlp-sdk-test", "3.1")
    tracer = TracerProvider().get_tracer("otlp-test")
    try:
        with tracer.start_as_current_span("checkout") as span:
            context = span.get_span_context()
            for i in range(500):
                warn = i % 5 == 0
                logger.emit(
                    severity_number=SeverityNumber.WARN if warn else SeverityNumber.INFO,
                    severity_text="WARN" if warn else "INFO",
                    # Every tenth body is structured (a map), the others strings.
                    body={"order": i, "items": ["a", "b"]} if i % 10 == 0 else f"order {i} placed",
                    attributes={"test": "sdk", "n": i, "ratio": i / 2},
                )
        assert provider.force_flush(60_000)
    finally:
        provider.shutdown()
    found = rows(server, "sdk", 500)
    assert sorted(r["attributes"]["n"] for r in found) == list(range(500))
    by_n = {r["attributes"]["n"]: r for r in found}
    assert json.loads(by_n[0]["body"]) == {"order": 0, "items": ["a", "b"]}
    assert by_n[1]["body"] == "order 1 placed" and by_n[3]["attributes"]["ratio"] == 1.5
    assert (by_n[0]["severity_text"], by_n[0]["severity_number"]) == ("WARN", 13)
    assert (by_n[1]["severity_text"], by_n[1]["severity_number"]) == ("INFO", 9)
    assert {r["trace_id"] for r in found} == {format(context.trace_id, "032x")}
    assert {r["span_id"] for r in found} == {format(context.span_id, "016x")}
    assert {r["flags"] & 0xFF for r in found} == {int(context.trace_flags)}
    assert {r["service_name"] for r in found} == {"shop"}
    assert {r["resource"]["deployment.environment"] for r in found} == {"test"}
    assert {(r["scope_name"], r["scope_version"]) for r in found} == {("otlp-sdk-test", "3.1")}
    assert all(r["observed_ts"] and r["time_unix_nano"] > 0 for r in found)
    assert metric(server, "loglake_source_records_accepted_total") >= 500


def test_otlp_json_hex_ids_and_structured_body(server: Server) -> None:
    body = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "json-scope", "version": "0.1"},
                        "logRecords": [
                            {
                                "timeUnixNano": "1717171717000000001",
                                "observedTimeUnixNano": "1717171718000000000",
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "body": {
                                    "kvlistValue": {
                                        "values": [{"key": "k", "value": {"intValue": "42"}}]
                                    }
                                },
                                "attributes": [
                                    {"key": "test", "value": {"stringValue": "json"}},
                                    {"key": "big", "value": {"intValue": "9007199254740993"}},
                                ],
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex().upper(),
                                "flags": 1,
                                "droppedAttributesCount": 2,
                                "someFutureField": True,  # ignored, as the spec asks
                            },
                            {
                                "observedTimeUnixNano": 1717171719000000000,
                                "severityNumber": "SEVERITY_NUMBER_DEBUG",
                                "body": {"stringValue": "plain"},
                                "attributes": [{"key": "test", "value": {"stringValue": "json"}}],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    status, reply, headers = post(server, json.dumps(body).encode(), JSON)
    assert (status, headers["content-type"]) == (200, JSON), reply
    assert json.loads(reply) == {}  # no partial success
    first, second = rows(server, "json", 2)
    assert first["time_unix_nano"] == 1717171717000000001
    assert first["ts"].startswith("2024-05-31T16:08:37")
    assert (first["trace_id"], first["span_id"]) == (TRACE.hex(), SPAN.hex())
    assert json.loads(first["body"]) == {"k": 42}
    assert first["attributes"]["big"] == 9007199254740993
    assert (first["severity_number"], first["severity_text"]) == (17, "ERROR")
    assert (first["service_name"], first["scope_name"], first["scope_version"]) == (
        "api",
        "json-scope",
        "0.1",
    )
    assert (first["flags"], first["dropped_attributes_count"]) == (1, 2)
    # No time_unix_nano: the observed time is the event time.
    assert second["time_unix_nano"] == 1717171719000000000
    assert (second["body"], second["severity_number"], second["trace_id"]) == ("plain", 5, "")


def test_gzip_zstd_and_partial_success(server: Server) -> None:
    def record(i: int, trace_id: bytes = TRACE) -> logs_pb2.LogRecord:
        return logs_pb2.LogRecord(
            time_unix_nano=1_700_000_000_000_000_000 + i,
            body=common_pb2.AnyValue(string_value=f"line {i}"),
            trace_id=trace_id,
            span_id=SPAN,
            attributes=[kv("i", i)],
        )

    gz = export_request("gzip", [record(i) for i in range(3)])
    status, reply, headers = post(server, gzip.compress(gz), PROTOBUF, "gzip")
    assert (status, headers["content-type"]) == (200, PROTOBUF)
    assert not logs_service_pb2.ExportLogsServiceResponse.FromString(reply).HasField(
        "partial_success"
    )
    # The second record's trace id is 3 bytes: refused alone, the others kept.
    zs = export_request("zstd", [record(0), record(1, b"abc"), record(2)])
    status, reply, _ = post(server, zstandard.ZstdCompressor().compress(zs), PROTOBUF, "zstd")
    assert status == 200
    partial = logs_service_pb2.ExportLogsServiceResponse.FromString(reply).partial_success
    assert partial.rejected_log_records == 1
    assert "trace_id is 3 bytes, not 16" in partial.error_message
    assert [r["body"] for r in rows(server, "gzip", 3)] == ["line 0", "line 1", "line 2"]
    assert [r["body"] for r in rows(server, "zstd", 2)] == ["line 0", "line 2"]
    assert {r["resource"]["service.name"] for r in rows(server, "zstd", 2)} == {"checkout"}
    assert metric(server, "loglake_source_records_rejected_total") >= 1


def test_deflate_zlib_and_snappy_bodies(server: Server) -> None:
    # The Collector's other compressions: zlib for deflate and zlib, snappy as a block (framed
    # before its 0.125), x-snappy-framed, lz4 frames; and a raw deflate stream, as some clients
    # send it.

    def raw_deflate(data: bytes) -> bytes:
        deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return deflater.compress(data) + deflater.flush()

    bodies: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
        "zlib": ("zlib", zlib.compress),
        "deflate": ("deflate", zlib.compress),
        "raw-deflate": ("deflate", raw_deflate),
        "snappy-block": ("snappy", lambda data: bytes(cramjam.snappy.compress_raw(data))),
        "snappy-framed": ("snappy", lambda data: bytes(cramjam.snappy.compress(data))),
        "x-snappy-framed": ("x-snappy-framed", lambda data: bytes(cramjam.snappy.compress(data))),
        # cramjam writes linked blocks; the Collector independent ones (its own test).
        "lz4": ("lz4", lambda data: bytes(cramjam.lz4.compress(data))),
    }
    for test, (encoding, compress) in bodies.items():
        records = [
            logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value=f"{test} {i}"))
            for i in range(3)
        ]
        status, reply, _ = post(server, compress(export_request(test, records)), PROTOBUF, encoding)
        assert status == 200, (test, reply)
    for test in bodies:
        assert [r["body"] for r in rows(server, test, 3)] == [f"{test} {i}" for i in range(3)]
    # Sizes are checked before inflating: a 9 MiB body is refused, in either snappy format.
    big = export_request(
        "big", [logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value="x" * (9 << 20)))]
    )
    for encoding, compress in bodies.values():
        status, reply, _ = post(server, compress(big), PROTOBUF, encoding)
        assert status == 413, (encoding, reply)
        assert "inflates past the limit" in status_pb2.Status.FromString(reply).message


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "want", "says"),
    [
        (b"\xff\xff\xff", PROTOBUF, "", 400, "not an ExportLogsServiceRequest"),
        (b"{not json", JSON, "", 400, "not JSON"),
        (b'{"resourceLogs": 3}', JSON, "", 400, "resourceLogs must be an array"),
        (
            b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}',
            JSON,
            "",
            400,
            "is not hex",
        ),
        (b'{"resourceLogs":[{"scopeLogs":7}]}', JSON, "", 400, "scopeLogs must be an array"),
        (b"\x1f\x8b\x08garbage", PROTOBUF, "gzip", 400, "not gzip"),
        (b"garbage", PROTOBUF, "deflate", 400, "not deflate"),
        (zlib.compress(b"x" * 100)[:-6], PROTOBUF, "zlib", 400, "cut short"),
        (b"garbage", PROTOBUF, "snappy", 400, "not snappy"),
        (b"\xff\x06\x00\x00sNaPpY\x00\x10\x00\x00abc", PROTOBUF, "snappy", 400, "cut short"),
        (bytes(cramjam.snappy.compress_raw(b"{}")), JSON, "x-snappy-framed", 400, "not framed"),
        (b"garbage", JSON, "zstd", 400, "not zstd"),
        (b"{}", JSON, "br", 415, "send gzip, zstd, snappy"),
        (b"{}", JSON, "compress", 415, "lz4, deflate, zlib or identity"),
        (b"garbage", PROTOBUF, "lz4", 400, "not an lz4 frame"),
        (b"hello", "text/plain", "", 415, "is not OTLP"),
    ],
)
def test_malformed_bodies_answer_a_status(
    server: Server, body: bytes, content_type: str, encoding: str, want: int, says: str
) -> None:
    status, reply, headers = post(server, body, content_type, encoding)
    assert status == want, reply
    if content_type == JSON:
        assert headers["content-type"] == JSON
        answer = json.loads(reply)
        assert answer["code"] == code_pb2.INVALID_ARGUMENT and says in answer["message"]
    else:
        # Not JSON: the Status is protobuf (text/plain is not OTLP, so its answer is too).
        assert headers["content-type"] == PROTOBUF
        answer = status_pb2.Status.FromString(reply)
        assert answer.code == code_pb2.INVALID_ARGUMENT and says in answer.message


def test_full_stream_answers_503_with_retry_after(tmp_path: Path) -> None:
    config = CONFIG.replace("buffer_seconds = 0.2", "buffer_seconds = 600\nmax_log_bytes = 65536")
    srv = Server.started(tmp_path, config)
    try:
        big = "x" * 1000
        batch = export_request(
            "full",
            [logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value=big)) for _ in range(10)],
        )
        for _ in range(200):  # 10 KiB a request fills the 64 KiB budget
            status, reply, headers = post(srv, batch, PROTOBUF)
            if status != 200:
                break
        assert status == 503, reply
        assert int(headers["retry-after"]) >= 1
        answer = status_pb2.Status.FromString(reply)
        assert answer.code == code_pb2.UNAVAILABLE and "is full" in answer.message
        assert metric(srv, "loglake_source_records_dropped_total", "stream_full") == 10
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.slow
def test_an_undeclared_stream_is_created_by_the_first_records(tmp_path: Path) -> None:
    config = '[syslog]\nudp = ""\ntcp = ""\n'
    srv = Server.started(tmp_path, config)
    try:
        assert "otlp" not in streams(srv)
        assert post(srv, b"\x00\x01", PROTOBUF)[0] == 400
        assert post(srv, export_request("none", []), PROTOBUF)[0] == 200
        assert "otlp" not in streams(srv)  # nothing to keep: nothing created
        record = logs_pb2.LogRecord(body=common_pb2.AnyValue(string_value="first"))
        assert post(srv, export_request("first", [record]), PROTOBUF)[0] == 200
        assert [r["body"] for r in rows(srv, "first", 1)] == ["first"]
        srv.stop()
        srv.start()  # kept as an API-created stream: reopened after a restart
        assert "otlp" in streams(srv)
        assert [r["body"] for r in rows(srv, "first", 1)] == ["first"]
    finally:
        if srv.proc is not None:
            srv.stop(signal.SIGKILL)


def streams(srv: Server) -> set[str]:
    status, listing, _ = request("GET", f"{srv.url}/v1/streams")
    assert status == 200, listing
    return {s["name"] for s in listing["streams"]}


def test_a_missing_or_wrong_api_key_answers_a_status(tmp_path: Path) -> None:
    # OTLP clients read a google.rpc.Status (the Collector logs its message); the rest of the API
    # keeps the one JSON error shape.
    srv = Server.started(tmp_path, CONFIG + '\n[auth]\napi_keys = ["s3cret-key"]\n')
    try:
        body = export_request("denied", [logs_pb2.LogRecord()])
        status, reply, headers = post(srv, body, PROTOBUF)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert headers["content-type"] == PROTOBUF
        answer = status_pb2.Status.FromString(reply)
        assert answer.code == code_pb2.UNAUTHENTICATED
        assert answer.message.startswith("missing or wrong API key")
        status, reply, headers = post(srv, b'{"resourceLogs": []}', JSON)
        assert status == 401 and headers["content-type"] == JSON
        assert json.loads(reply)["code"] == code_pb2.UNAUTHENTICATED
        status, listing, _ = request("GET", f"{srv.url}/v1/streams")
        assert status == 401 and listing["error"]["code"] == "unauthorized"
    finally:
        srv.stop(signal.SIGKILL)
