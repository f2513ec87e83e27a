"""OTLP/HTTP logs: OpenTelemetry SDKs and the Collector's ``otlphttp`` exporter send to ``POST /v1/logs``.

The body is an ``ExportLogsServiceRequest``, binary protobuf (``application/x-protobuf``) or
OTLP/JSON (``application/json``: ids as hex strings, enums as names or numbers, 64-bit integers as
strings or numbers), plain or with any Content-Encoding the Collector sends (gzip, zstd, snappy
block or framed, x-snappy-framed, deflate, zlib, lz4), at most ``server.max_body_bytes`` as sent
and inflated and ``server.max_records_per_request`` log records. Each LogRecord becomes one JSON
object appended to the stream ``otlp`` (unless the config declares it, created by the first
request that carries records, as ``PUT /v1/streams/otlp`` would: a ``json`` stream into
``logs.otlp``); its columns are listed in ``docs/otlp.md``.

The answer comes once the records are durable: an ``ExportLogsServiceResponse`` in the request's
encoding, with ``partial_success`` counting the records refused one by one (a trace id that is not 16
bytes, a span id that is not 8). Errors answer a ``google.rpc.Status`` in the request's encoding, as
the OTLP/HTTP specification asks: 400 for a malformed body, 401 for a missing or wrong API key
(the server's authentication answers through :func:`refuse`), 413/415 for one too large or in another
encoding, 503 with ``Retry-After`` when the stream's disk budget is used up or the append failed in
a way a retry may get past (a full disk: none acknowledged). The Collector and the SDKs retry
exactly 429, 502, 503 and 504 and drop the batch on any other status, so a failure that is not the
data's fault must never be a 500.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import cramjam
import zstandard
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loglake.errors import LoglakeError, is_transient
from loglake.sources.http_body import (
    BadEncoding,
    BodyTooLarge,
    UnsupportedEncoding,
    decode_body,
    media_type,
    read_body,
)
from loglake.sources.live import (
    CountersByStream,
    HttpRoute,
    SourceContext,
    SourceCounters,
    Streams,
    iso_micros,
)
from loglake.stream.local import RETRY_AFTER_S, StreamFullError

if TYPE_CHECKING:
    from opentelemetry.proto.logs.v1 import logs_pb2
    from starlette.requests import Request

    from loglake.config import Config
    from loglake.sources.live import LiveSource

log = logging.getLogger(__name__)

PATH = "/v1/logs"
STREAM = "otlp"
#: The stream's settings when nobody declared it (as a PUT /v1/streams/otlp body).
STREAM_SETTINGS = {"format": "json", "table": "logs.otlp"}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: Content-Encoding values a body may have ("x-gzip" is gzip's old name).
ENCODINGS = (
    "identity",
    "gzip",
    "x-gzip",
    "zstd",
    "deflate",
    "zlib",
    "snappy",
    "x-snappy-framed",
    "lz4",
)
#: The first chunk of every framed snappy stream.
SNAPPY_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"
#: How OTLP senders send smaller requests, added to a 413's message.
SMALLER_BATCHES = (
    "the Collector: lower send_batch_max_size of its batch processor; an SDK: lower "
    "max_export_batch_size of its BatchLogRecordProcessor"
)
#: HTTP status -> google.rpc code of the Status body.
RPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    408: code_pb2.DEADLINE_EXCEEDED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


def sources(config: Config) -> list[LiveSource]:
    """The OTLP/HTTP logs route is always on (behind the server's API keys when configured)."""
    return [OtlpSource(config)]


class OtlpError(LoglakeError):
    """A request to ``/v1/logs`` refused as a whole, answered as a ``google.rpc.Status``."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def decode(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` without its Content-Encoding (one of :data:`ENCODINGS`), at most ``limit`` bytes
    inflated: BodyTooLarge past it (found before inflating where the format states its size),
    BadEncoding for a body that is not in its encoding."""
    if encoding == "zstd":
        return _unzstd(body, limit)
    if encoding in ("deflate", "zlib"):
        return _inflate(body, encoding, limit)
    if encoding in ("snappy", "x-snappy-framed"):
        return _unsnappy(body, encoding, limit)
    if encoding == "lz4":
        return _unlz4(body, limit)
    return decode_body(body, "gzip" if encoding == "x-gzip" else encoding, limit)


def _too_large(encoding: str, limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"the {encoding} body inflates past the limit of {limit} bytes (server.max_body_bytes "
        "counts decompressed bytes); send smaller requests"
    )


def _unzstd(body: bytes, limit: int) -> bytes:
    try:
        with zstandard.ZstdDecompressor().stream_reader(body) as reader:
            out = reader.read(limit + 1)
            # One more byte past the frame's end: a cut-short frame raises here.
            reader.read(1)
    except zstandard.ZstdError as exc:
        raise BadEncoding(f"Content-Encoding: zstd but the body is not zstd: {exc}") from exc
    if len(out) > limit:
        raise _too_large("zstd", limit)
    return bytes(out)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A zlib stream (what HTTP's deflate and the Collector's deflate and zlib send), or a raw
    deflate stream as some clients send for deflate."""
    zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
    inflater = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadEncoding(
            f"Content-Encoding: {encoding} but the body is not {encoding}: {exc}"
        ) from exc
    if len(out) > limit:
        raise _too_large(encoding, limit)
    if not inflater.eof:
        raise BadEncoding(f"Content-Encoding: {encoding} but the body is cut short")
    return out


def _unsnappy(body: bytes, encoding: str, limit: int) -> bytes:
    """Snappy, block or framed: the Collector sends ``snappy`` as a block since 0.125 and framed
    before (told apart by the framed format's stream identifier, as the Collector's own receivers
    do), ``x-snappy-framed`` framed. Both state their size, checked before inflating."""
    framed = body.startswith(SNAPPY_STREAM_ID)
    if encoding == "x-snappy-framed" and not framed:
        raise BadEncoding("Content-Encoding: x-snappy-framed but the body is not framed snappy")
    try:
        size = _snappy_framed_size(body) if framed else cramjam.snappy.decompress_raw_len(body)
        if size > limit:
            raise _too_large(encoding, limit)
        # The framed decoder checks each chunk's CRC.
        out = cramjam.snappy.decompress(body) if framed else cramjam.snappy.decompress_raw(body)
    except cramjam.DecompressionError as exc:
        raise BadEncoding(
            f"Content-Encoding: {encoding} but the body is not snappy: {exc}"
        ) from exc
    return bytes(out)


def _snappy_framed_size(body: bytes) -> int:
    """The inflated size of a framed snappy stream, from its chunks' headers and block preambles
    (google/snappy framing_format.txt: a type byte, a 3-byte length, then for data chunks a
    4-byte CRC and the data)."""
    size = pos = 0
    while pos < len(body):
        kind = body[pos]
        length = int.from_bytes(body[pos + 1 : pos + 4], "little")
        chunk = body[pos + 4 : pos + 4 + length]
        if pos + 4 > len(body) or len(chunk) < length:
            raise BadEncoding("Content-Encoding: snappy but the framed body is cut short")
        if kind == 0x00:  # compressed data
            size += cramjam.snappy.decompress_raw_len(chunk[4:])
        elif kind == 0x01:  # uncompressed data
            size += len(chunk) - 4
        elif kind < 0x80:  # reserved unskippable chunks (stream identifiers are 0xff)
            raise BadEncoding(f"Content-Encoding: snappy but the framed body has a chunk {kind}")
        pos += 4 + length
    return size


def _unlz4(body: bytes, limit: int) -> bytes:
    """LZ4 frames (lz4_Frame_format.md), as the Collector sends them: each block inflated on its
    own, at most the frame's block size, so the limit holds block by block. Linked blocks (the
    Collector writes independent ones) are inflated whole if their block sizes fit the limit."""
    out: list[bytes] = []
    size = pos = 0
    room = bytearray()

    def cut_short() -> BadEncoding:
        return BadEncoding("Content-Encoding: lz4 but the lz4 frame is cut short")

    while pos < len(body):
        start = pos
        magic = int.from_bytes(body[pos : pos + 4], "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:  # a skippable frame
            pos += 8 + int.from_bytes(body[pos + 4 : pos + 8], "little")
            continue
        if magic != 0x184D2204 or pos + 7 > len(body):
            raise BadEncoding("Content-Encoding: lz4 but the body is not an lz4 frame")
        flags, block_code = body[pos + 4], body[pos + 5] >> 4 & 0x7
        if flags >> 6 != 1 or block_code < 4:
            raise BadEncoding("Content-Encoding: lz4 but the lz4 frame header is not valid")
        block_max = 1 << (8 + 2 * block_code)  # 64 KiB, 256 KiB, 1 MiB or 4 MiB
        independent, block_sums, content_sum = flags & 0x20, flags & 0x10, flags & 0x04
        pos += 6 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1
        blocks = 0
        while True:
            if pos + 4 > len(body):
                raise cut_short()
            word = int.from_bytes(body[pos : pos + 4], "little")
            pos += 4
            if word == 0:
                break
            length = word & 0x7FFFFFFF
            block = body[pos : pos + length]
            if length > block_max:
                raise BadEncoding(f"Content-Encoding: lz4 but a block is over {block_max} bytes")
            if len(block) < length:
                raise cut_short()
            pos += length + (4 if block_sums else 0)
            blocks += 1
            if not independent:
                continue
            if word & 0x80000000:  # stored uncompressed
                piece = block
            else:
                if len(room) < block_max:  # one buffer for every block of the body
                    room = bytearray(block_max)
                try:
                    piece = bytes(room[: cramjam.lz4.decompress_block_into(block, room)])
                except cramjam.DecompressionError as exc:
                    raise BadEncoding(
                        f"Content-Encoding: lz4 but a block is not lz4: {exc}"
                    ) from exc
            size += len(piece)
            if size > limit:
                raise _too_large("lz4", limit)
            out.append(piece)
        pos += 4 if content_sum else 0
        if pos > len(body):
            raise cut_short()
        if not independent:
            if size + blocks * block_max > limit:
                raise _too_large("lz4", limit)
            try:
                piece = bytes(cramjam.lz4.decompress(body[start:pos]))
            except cramjam.DecompressionError as exc:
                raise BadEncoding(f"Content-Encoding: lz4 but the body is not lz4: {exc}") from exc
            size += len(piece)
            out.append(piece)
    return b"".join(out)


def _hex_ids_to_base64(value: Any) -> None:
    """OTLP/JSON writes traceId/spanId as hex; protobuf's JSON mapping reads bytes as base64."""
    if not isinstance(value, dict):
        raise OtlpError(400, "the OTLP/JSON body must be an object with resourceLogs")
    for resource in _items(value, "resourceLogs"):
        for scope in _items(resource, "scopeLogs"):
            for record in _items(scope, "logRecords"):
                for key in ("traceId", "spanId", "trace_id", "span_id"):
                    ident = record.get(key)
                    if ident is None or ident == "":
                        continue
                    if not isinstance(ident, str):
                        raise OtlpError(400, f"{key} must be a hex string, not {ident!r}")
                    try:
                        raw = bytes.fromhex(ident)
                    except ValueError:
                        raise OtlpError(
                            400, f"{key} {ident!r} is not hex (OTLP/JSON writes ids as hex)"
                        ) from None
                    record[key] = base64.b64encode(raw).decode()


def _items(parent: Any, key: str) -> list[Any]:
    if not isinstance(parent, dict):
        raise OtlpError(400, f"an element holding {key} must be an object")
    items = parent.get(key) or []
    if not isinstance(items, list):
        raise OtlpError(400, f"{key} must be an array")
    return items


def parse(data: bytes, is_json: bool) -> logs_service_pb2.ExportLogsServiceRequest:
    """The request message of ``data``; OtlpError (400) for a malformed body."""
    message = logs_service_pb2.ExportLogsServiceRequest()
    if not is_json:
        try:
            message.ParseFromString(data)
        except (DecodeError, RecursionError) as exc:
            raise OtlpError(400, f"the body is not an ExportLogsServiceRequest: {exc}") from None
        return message
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise OtlpError(400, f"the body is not JSON: {exc}") from None
    _hex_ids_to_base64(value)
    try:
        # Unknown fields are ignored: the OTLP specification asks receivers to (newer senders).
        json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise OtlpError(
            400, f"the body is not an OTLP/JSON ExportLogsServiceRequest: {exc}"
        ) from None
    return message


def any_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as JSON (bytes as base64, an empty value as null)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    """Key-value pairs as one JSON object (a repeated key: the last one wins)."""
    return {kv.key: any_value(kv.value) for kv in pairs}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def record_problem(record: logs_pb2.LogRecord) -> str | None:
    """Why ``record`` is refused (None when it is kept)."""
    if record.trace_id and len(record.trace_id) != 16:
        return f"trace_id is {len(record.trace_id)} bytes, not 16"
    if record.span_id and len(record.span_id) != 8:
        return f"span_id is {len(record.span_id)} bytes, not 8"
    return None


def flatten(
    request: logs_service_pb2.ExportLogsServiceRequest, now_nanos: int
) -> tuple[list[bytes], list[str]]:
    """One JSON line per valid LogRecord, and the reasons of the records refused.

    The keys, in order: ts, time_unix_nano, observed_ts, severity_number, severity_text, body,
    attributes, service_name, resource, scope_name, scope_version, trace_id, span_id, flags,
    dropped_attributes_count, event_name (the text ``json.dumps`` of that object writes). The
    resource's and the scope's parts are the same for all their records: written once each."""
    lines: list[bytes] = []
    problems: list[str] = []
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        shared = (
            f',"service_name":{_dumps(resource.get("service.name"))},"resource":{_dumps(resource)}'
        )
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            owner = (
                f'{shared},"scope_name":{_dumps(scope.name)},"scope_version":'
                f"{_dumps(scope.version)}"
            )
            for record in scope_logs.log_records:
                problem = record_problem(record)
                if problem:
                    problems.append(problem)
                    continue
                when = record.time_unix_nano or record.observed_time_unix_nano or now_nanos
                kind = record.body.WhichOneof("value")
                body = any_value(record.body)
                if kind in ("array_value", "kvlist_value"):
                    body = _dumps(body)
                elif body is not None and not isinstance(body, str):
                    body = json.dumps(body)
                pairs = record.attributes
                lines.append(
                    (
                        f'{{"ts":"{iso_micros(when)}","time_unix_nano":{when},"observed_ts":'
                        f'"{iso_micros(record.observed_time_unix_nano or now_nanos)}",'
                        f'"severity_number":{record.severity_number},"severity_text":'
                        f'{_dumps(record.severity_text)},"body":{_dumps(body)},"attributes":'
                        f"{_dumps(attributes(pairs)) if pairs else '{}'}{owner},"
                        f'"trace_id":"{record.trace_id.hex()}","span_id":"{record.span_id.hex()}",'
                        f'"flags":{record.flags},"dropped_attributes_count":'
                        f'{record.dropped_attributes_count},"event_name":'
                        f"{_dumps(record.event_name)}}}"
                    ).encode()
                )
    return lines, problems


class OtlpSource:
    """OTLP/HTTP logs as a live source, into the stream ``otlp``.

    Counters: ``received`` log records, ``accepted`` appended, ``rejected`` refused one by one
    (reported in ``partial_success``), ``dropped`` records of requests refused as a whole:
    ``stream_full`` (503), ``too_large`` (413), ``stream_error``.
    """

    name = "otlp"

    def __init__(self, config: Config) -> None:
        server = config.server
        self._limit = server.max_body_bytes
        self._timeout = server.body_timeout_s
        self._max_records = server.max_records_per_request
        self._counters = CountersByStream()
        self._streams: Streams | None = None

    def start(self, context: SourceContext) -> None:
        self._streams = context.streams

    def stop(self) -> None:
        """Nothing to stop: the server stops taking requests before it stops the sources."""

    def counters(self) -> Mapping[str, SourceCounters]:
        return self._counters.snapshot()

    def health(self) -> list[str]:
        return []

    def routes(self) -> list[HttpRoute]:
        return [HttpRoute(PATH, self.export, refuse=refuse)]

    def feeds(self) -> list[str]:
        return []

    async def export(self, request: Request) -> Response:
        """Append the request's log records; answer an ExportLogsServiceResponse once durable."""
        kind = media_type(request.headers)
        is_json = kind == JSON
        try:
            if kind not in (PROTOBUF, JSON):
                raise OtlpError(
                    415,
                    f"Content-Type {kind or '(none)'} is not OTLP: send {PROTOBUF} or {JSON}",
                )
            return await self._export(request, is_json)
        except StreamFullError as exc:
            return status_answer(503, str(exc), is_json, exc.headers)
        except LoglakeError as exc:
            headers = exc.headers
            message = str(exc)
            if exc.status == 413:
                # Senders drop a refused batch for good: say which of their settings to change.
                message = f"{message} ({SMALLER_BATCHES})"
            # The server's body errors close the connection: the body may be half read.
            return status_answer(exc.status, message, is_json, headers)

    def _records(
        self, body: bytes, encoding: str, is_json: bool, now: int
    ) -> tuple[list[bytes], list[str]]:
        return flatten(parse(decode(body, encoding, self._limit), is_json), now)

    async def _export(self, request: Request, is_json: bool) -> Response:
        streams = self._streams
        if streams is None:
            raise RuntimeError("the otlp source serves requests only after start()")
        encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
        if encoding not in ENCODINGS:
            raise UnsupportedEncoding(
                f"Content-Encoding {encoding} is not supported: send gzip, zstd, snappy, "
                "x-snappy-framed, lz4, deflate, zlib or identity"
            )
        body = await read_body(request, self._limit, self._timeout, "server.max_body_bytes")
        now = time.time_ns()
        # Inflating, decoding and flattening a large export takes milliseconds of CPU: off the
        # event loop, so other requests go on meanwhile.
        records, problems = await run_in_threadpool(self._records, body, encoding, is_json, now)
        total = len(records) + len(problems)
        if total > self._max_records:
            raise OtlpError(
                413,
                f"{total} log records in one request, over server.max_records_per_request "
                f"({self._max_records}); send smaller batches",
            )
        counters = self._counters[STREAM]
        counters.add(received=total, rejected=len(problems))
        if records:
            try:
                if STREAM not in streams.names():
                    # Created on first use, not at start: a server nobody sends OTLP to has no
                    # otlp stream. Created as the API creates streams: reopened after a restart.
                    await run_in_threadpool(streams.create, STREAM, STREAM_SETTINGS)
                await run_in_threadpool(streams.append, STREAM, records)
            except StreamFullError:
                counters.drop("stream_full", len(records))
                raise
            except Exception as exc:
                too_large = isinstance(exc, LoglakeError) and exc.status == 413
                counters.drop("too_large" if too_large else "stream_error", len(records))
                if is_transient(exc):
                    raise transient_failure(exc) from exc
                raise
        counters.add(accepted=len(records))
        reply = logs_service_pb2.ExportLogsServiceResponse()
        if problems:
            reply.partial_success.rejected_log_records = len(problems)
            shown = "; ".join(sorted(set(problems))[:5])
            reply.partial_success.error_message = f"{len(problems)} log records refused: {shown}"
        return encode(reply, is_json, 200)


def transient_failure(exc: BaseException) -> OtlpError:
    """A failure that may pass on a retry (a full disk, an I/O error: nothing was acknowledged)
    as a 503 with Retry-After, logged. OTLP senders drop a batch for good on any status but 429,
    502, 503 and 504, so a 500 here would lose data the sender still holds."""
    log.warning(
        "otlp: appending to stream %s failed, answered 503 so the sender retries: %s",
        STREAM,
        exc,
        extra={"fields": {"stream": STREAM, "reason": str(exc) or type(exc).__name__}},
    )
    return OtlpError(
        503,
        f"the stream {STREAM} cannot take records now ({exc}); none acknowledged, retry later",
        retry_after=RETRY_AFTER_S,
    )


def encode(
    message: Any, is_json: bool, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    """``message`` in the request's encoding."""
    if is_json:
        content = json_format.MessageToJson(message, indent=None).encode()
        return Response(content, status, dict(headers or {}), media_type=JSON)
    return Response(message.SerializeToString(), status, dict(headers or {}), media_type=PROTOBUF)


def refuse(
    status: int, message: str, request_headers: Mapping[str, str], headers: Mapping[str, str]
) -> Response:
    """The server's refusal of a request to ``/v1/logs`` before the route runs (a missing or wrong
    API key), as a ``google.rpc.Status`` in the request's encoding, so the Collector's and the
    SDKs' logs show its message."""
    kind = media_type(request_headers)
    return status_answer(status, message, kind == JSON, headers)


def status_answer(
    status: int, message: str, is_json: bool, headers: Mapping[str, str] | None = None
) -> Response:
    """A refusal as the ``google.rpc.Status`` OTLP/HTTP clients read."""
    code = RPC_CODES.get(status, code_pb2.INTERNAL if status >= 500 else code_pb2.INVALID_ARGUMENT)
    return encode(status_pb2.Status(code=code, message=message), is_json, status, headers)
