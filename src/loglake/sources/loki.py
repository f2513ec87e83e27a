"""The Loki push API: Promtail, Grafana Alloy's ``loki.write``, Vector's ``loki`` sink, Fluent Bit's
``loki`` output and the logging libraries' Loki transports send to ``POST /loki/api/v1/push``.

The body is a ``PushRequest`` as Loki takes it: snappy-compressed (block format) protobuf
(``application/x-protobuf``, or no Content-Type), or JSON (``application/json``:
``{"streams": [{"stream": {labels}, "values": [["<ns>", "<line>", {metadata}]]}]}``, timestamps as
strings of Unix nanoseconds); either may also be sent with ``Content-Encoding: gzip`` (or
``deflate``; ``snappy`` is accepted as a no-op, as Loki does). At most ``server.max_body_bytes`` as
sent and inflated, at most ``server.max_records_per_request`` entries.

Each entry becomes one JSON object appended to the stream ``loki`` (unless the config declares it,
created by the first request that carries entries, as ``PUT /v1/streams/loki`` would: a ``json``
stream into ``logs.loki``): its time (``ts``, microseconds; ``time_unix_nano``, exact), its line,
the stream's labels as one object (``labels``, a struct column: ``labels.job``), its structured
metadata as another (``metadata``) and the stream's label set as Loki writes it (``stream``).
See ``docs/loki.md``.

The answer, 204 with no body, comes once the entries are durable. A malformed request is refused
as a whole (400, nothing kept), in the API's one JSON error shape; a full stream answers 429 with
``Retry-After``, which Loki's clients retry (Loki itself answers 429 when it throttles).
``GET /ready`` answers 200 ``ready``, as Loki's readiness probe does.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import DecodeError
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from loglake.errors import LoglakeError
from loglake.sources.http_body import (
    BadEncoding,
    BodyTooLarge,
    TooManyRecords,
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
from loglake.stream.local import StreamFullError

if TYPE_CHECKING:
    from starlette.requests import Request

    from loglake.config import Config
    from loglake.sources.live import LiveSource

PUSH_PATH = "/loki/api/v1/push"
READY_PATH = "/ready"
STREAM = "loki"
#: The stream's settings when nobody declared it (as a PUT /v1/streams/loki body).
STREAM_SETTINGS = {"format": "json", "table": "logs.loki"}
JSON = "application/json"
#: Content-Encoding values a push may have, as Loki takes them ("x-gzip" is gzip's old name; snappy
#: changes nothing: a protobuf body is snappy anyway).
ENCODINGS = ("", "identity", "snappy", "gzip", "x-gzip", "deflate")
#: A Prometheus label name, as Loki validates them.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Unix nanoseconds that fit Loki's int64 timestamps.
NANOS_RANGE = (-(2**63), 2**63 - 1)


def sources(config: Config) -> list[LiveSource]:
    """The Loki push route is always on (behind the server's API keys when configured)."""
    return [LokiSource(config)]


class PushRejected(LoglakeError):
    """A push request that is malformed (400): nothing of it is kept."""

    status = 400
    code = "invalid_request"


class PushThrottled(LoglakeError):
    """The stream ``loki`` is full (429 + Retry-After): Loki's clients retry a 429 later."""

    status = 429
    code = "stream_full"
    transient = True

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- the protobuf messages, built from Loki's push.proto at import (no generated code to keep) ----


def _push_message() -> type[Any]:
    """The PushRequest class of Loki's ``pkg/push/push.proto`` (package ``logproto``)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="loglake/loki_push.proto",
        package="logproto",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    string, uint64, message = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    )
    optional, repeated = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )

    def add(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    add("PushRequest", [("streams", 1, message, repeated, ".logproto.StreamAdapter")])
    add(
        "StreamAdapter",
        [
            ("labels", 1, string, optional, ""),
            ("entries", 2, message, repeated, ".logproto.EntryAdapter"),
            ("hash", 3, uint64, optional, ""),
        ],
    )
    add("LabelPairAdapter", [("name", 1, string, optional, ""), ("value", 2, string, optional, "")])
    add(
        "EntryAdapter",
        [
            ("timestamp", 1, message, optional, ".google.protobuf.Timestamp"),
            ("line", 2, string, optional, ""),
            ("structuredMetadata", 3, message, repeated, ".logproto.LabelPairAdapter"),
            ("parsed", 4, message, repeated, ".logproto.LabelPairAdapter"),
        ],
    )
    pool = descriptor_pool.Default()  # its Timestamp is timestamp_pb2's: entries take those
    try:
        pool.Add(proto)
    except TypeError:
        # Another logproto is in the default pool already (a Loki client's generated code): a pool
        # of its own then, whose Timestamp is a class of that pool.
        pool = descriptor_pool.DescriptorPool()
        pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


#: Loki's ``logproto.PushRequest`` message class.
PushRequest = _push_message()


def push_request_class() -> type[Any]:
    """Loki's ``logproto.PushRequest`` message class, to build pushes (tests, benchmarks)."""
    return PushRequest


# -- decoding ---------------------------------------------------------------------------------------


def snappy_length(data: bytes) -> int:
    """The uncompressed length a snappy block states in its varint preamble."""
    length = shift = 0
    for index, byte in enumerate(data[:10]):
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length
        shift += 7
        if index == 4:  # snappy's preamble is a 32-bit varint: at most five bytes
            break
    raise PushRejected(
        "the protobuf body is not snappy-compressed (block format): send the PushRequest "
        "snappy-compressed, as Loki expects, or JSON with Content-Type: application/json"
    )


def unsnappy(data: bytes, limit: int) -> bytes:
    """``data`` snappy block-decompressed, at most ``limit`` bytes (checked before inflating)."""
    size = snappy_length(data)
    if size > limit:
        raise BodyTooLarge(
            f"the snappy body inflates to {size} bytes, over the limit of {limit} "
            "(server.max_body_bytes counts decompressed bytes); send smaller requests"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as exc:
        raise PushRejected(
            f"the protobuf body is not valid snappy (block format): {exc}; send the PushRequest "
            "snappy-compressed, as Loki expects"
        ) from None


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` without its Content-Encoding (gzip, deflate; snappy and none leave it as is)."""
    if encoding in ("", "identity", "snappy"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return decode_body(body, "gzip", limit)
    if encoding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; Go's flate reader (Loki's) reads it raw: take both.
        for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
            inflater = zlib.decompressobj(wbits)
            try:
                out = inflater.decompress(body, limit + 1)
            except zlib.error:
                continue
            if len(out) > limit:
                raise BodyTooLarge(
                    f"the deflate body inflates past the limit of {limit} bytes "
                    "(server.max_body_bytes counts decompressed bytes); send smaller requests"
                )
            if inflater.eof:
                return out
        raise BadEncoding("Content-Encoding: deflate but the body is not deflate")
    raise unsupported(encoding)


def unsupported(encoding: str) -> UnsupportedEncoding:
    """The refusal of a Content-Encoding Loki does not take (415)."""
    return UnsupportedEncoding(
        f"Content-Encoding {encoding[:100]!r} is not supported: send gzip, deflate, snappy or none"
    )


def parse_labels(text: str) -> dict[str, str]:
    """The label set of a protobuf stream, written as Loki writes it: ``{job="api", env="dev"}``
    (values in Go's double-quoted string syntax). PushRejected when it is not one."""
    labels: dict[str, str] = {}
    position = _skip(text, 0)
    if not text.startswith("{", position):
        raise PushRejected(f'stream labels {text[:200]!r} are not a label set like {{job="api"}}')
    position = _skip(text, position + 1)
    while not text.startswith("}", position):
        match = _NAME.match(text, position)
        if match is None:
            raise PushRejected(f"stream labels {text[:200]!r}: a label name expected at {position}")
        name = match.group()
        position = _skip(text, match.end())
        if not text.startswith("=", position):
            raise PushRejected(f"stream labels {text[:200]!r}: '=' expected after {name}")
        value, position = _quoted(text, _skip(text, position + 1))
        if name in labels:
            raise PushRejected(f"stream labels {text[:200]!r}: duplicate label name {name}")
        labels[name] = value
        position = _skip(text, position)
        if text.startswith(",", position):
            position = _skip(text, position + 1)
        elif not text.startswith("}", position):
            raise PushRejected(f"stream labels {text[:200]!r}: ',' or '}}' expected at {position}")
    if text[position + 1 :].strip():
        raise PushRejected(f"stream labels {text[:200]!r}: text after the closing '}}'")
    return labels


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "a": "\a"}
_ESCAPES |= {"b": "\b", "f": "\f", "v": "\v"}


def _quoted(text: str, position: int) -> tuple[str, int]:
    """The string value at ``position`` (double-quoted, Go escapes) and the position after it."""
    if not text.startswith('"', position):
        raise PushRejected(f"stream labels {text[:200]!r}: a quoted value expected at {position}")
    out: list[str] = []
    i = position + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\":
            kind = text[i + 1 : i + 2]
            if kind in _ESCAPES:
                out.append(_ESCAPES[kind])
                i += 2
                continue
            digits = {"x": 2, "u": 4, "U": 8}.get(kind)
            code = text[i + 2 : i + 2 + (digits or 0)]
            if digits and re.fullmatch(r"[0-9a-fA-F]+", code) and len(code) == digits:
                out.append(chr(int(code, 16)))
                i += 2 + digits
                continue
            raise PushRejected(f"stream labels {text[:200]!r}: bad escape at {i}")
        out.append(char)
        i += 1
    raise PushRejected(f"stream labels {text[:200]!r}: a quoted value is not closed")


def check_labels(labels: Mapping[str, str]) -> None:
    """Loki's rules for a stream's labels: at least one, each named like a Prometheus label."""
    if not labels:
        raise PushRejected(
            "a stream without labels: Loki requires at least one label pair per stream "
            '(e.g. {"job": "app"})'
        )
    for name in labels:
        if not LABEL_NAME.match(name):
            raise PushRejected(
                f"label name {name[:100]!r} is not valid: names are letters, digits and _, "
                "not starting with a digit"
            )


def label_text(labels: Mapping[str, str]) -> str:
    """The label set as Loki writes a stream: ``{env="dev", job="api"}``, names sorted."""
    pairs = (f"{name}={json.dumps(labels[name], ensure_ascii=False)}" for name in sorted(labels))
    return "{" + ", ".join(pairs) + "}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Rows:
    """The JSON records of one Loki stream's entries (columns: docs/loki.md). The labels and the
    stream's label text are the same for every entry: they are written once per stream."""

    def __init__(self, labels: Mapping[str, str], stream: str) -> None:
        self._tail = f',"stream":{_dumps(stream)}}}'
        self._labels = f',"labels":{_dumps(labels)},"metadata":'

    def row(self, nanos: int, line: str, metadata: Mapping[str, str]) -> bytes:
        """One entry as the record appended to the stream (the text ``json.dumps`` writes)."""
        return (
            f'{{"ts":"{iso_micros(nanos)}","time_unix_nano":{nanos},"message":{_dumps(line)}'
            f"{self._labels}{_dumps(metadata) if metadata else '{}'}{self._tail}"
        ).encode()


def from_protobuf(data: bytes, max_entries: int) -> Iterator[bytes]:
    """The records of a (decompressed) protobuf PushRequest; PushRejected when it is not one."""
    message = PushRequest()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise PushRejected(f"the body is not a Loki PushRequest (protobuf): {exc}") from None
    count = 0
    for stream in message.streams:
        labels = parse_labels(stream.labels)
        check_labels(labels)
        rows = Rows(labels, label_text(labels))
        for entry in stream.entries:
            count = _counted(count, max_entries)
            nanos = entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos
            if not NANOS_RANGE[0] <= nanos <= NANOS_RANGE[1]:
                raise PushRejected(
                    f"an entry's timestamp ({entry.timestamp.seconds} s) is past Loki's int64 "
                    "nanoseconds (years 1677 to 2262)"
                )
            metadata = {pair.name: pair.value for pair in entry.structuredMetadata}
            yield rows.row(nanos, entry.line, metadata)


def from_json(data: bytes, max_entries: int) -> Iterator[bytes]:
    """The records of a JSON push body; PushRejected when it is not one."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PushRejected(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("streams"), list):
        raise PushRejected('the body must be an object with "streams": an array of streams')
    count = 0
    for number, stream in enumerate(value["streams"]):
        where = f"streams[{number}]"
        if not isinstance(stream, dict):
            raise PushRejected(f'{where} must be an object with "stream" and "values"')
        labels = stream.get("stream")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise PushRejected(f"{where}.stream must be an object of labels with string values")
        check_labels(labels)
        rows = Rows(labels, label_text(labels))
        values = stream.get("values")
        if not isinstance(values, list):
            raise PushRejected(f'{where}.values must be an array of ["<ns>", "<line>"] entries')
        for index, entry in enumerate(values):
            count = _counted(count, max_entries)
            nanos, line, metadata = _json_entry(entry, f"{where}.values[{index}]")
            yield rows.row(nanos, line, metadata)


def _json_entry(entry: Any, where: str) -> tuple[int, str, dict[str, str]]:
    if not isinstance(entry, list) or len(entry) not in (2, 3):
        raise PushRejected(f'{where} must be ["<unix ns>", "<line>"] or with a metadata object')
    stamp, line = entry[0], entry[1]
    if not isinstance(stamp, str) or not re.fullmatch(r"[+-]?[0-9]+", stamp):
        raise PushRejected(
            f"{where}: the timestamp {json.dumps(stamp)[:60]} must be a string of Unix "
            'nanoseconds, e.g. "1570818238000000000" (Loki refuses numbers too)'
        )
    nanos = int(stamp)
    if not NANOS_RANGE[0] <= nanos <= NANOS_RANGE[1]:
        raise PushRejected(
            f"{where}: the timestamp {stamp[:60]} is past Loki's int64 nanoseconds "
            "(years 1677 to 2262)"
        )
    if not isinstance(line, str):
        raise PushRejected(f"{where}: the log line must be a string")
    metadata: dict[str, str] = {}
    if len(entry) == 3:
        meta = entry[2]
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise PushRejected(
                f"{where}: structured metadata must be an object of string values, e.g. "
                '{"trace_id": "0242ac120002"}'
            )
        metadata = meta
    return nanos, line, metadata


def _counted(count: int, max_entries: int) -> int:
    count += 1
    if count > max_entries:
        raise TooManyRecords(
            f"the request holds more than {max_entries} entries "
            "(server.max_records_per_request); send smaller batches"
        )
    return count


# -- the source -------------------------------------------------------------------------------------


class LokiSource:
    """The Loki push API as a live source, into the stream ``loki``.

    Counters: ``received`` entries, ``accepted`` appended, ``dropped`` entries of requests the stream
    refused as a whole (``stream_full``: 429, ``too_large``, ``stream_error``). A malformed request is
    refused before its entries are counted (no entry of it is taken).
    """

    name = "loki"

    def __init__(self, config: Config) -> None:
        server = config.server
        self._limit = server.max_body_bytes
        self._timeout = server.body_timeout_s
        self._max_entries = server.max_records_per_request
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
        return [
            HttpRoute(PUSH_PATH, self.push, hot=True),
            HttpRoute(READY_PATH, self.ready, ("GET",)),
        ]

    def feeds(self) -> list[str]:
        return []

    async def ready(self, request: Request) -> Response:
        """Loki's readiness probe: 200 ``ready`` once the source takes pushes."""
        if self._streams is None:
            return PlainTextResponse("Ingester not ready: loglake is starting\n", 503)
        return PlainTextResponse("ready\n")

    def _records(self, data: bytes, is_json: bool) -> list[bytes]:
        """The records of a push body (without its Content-Encoding); PushRejected when malformed."""
        if is_json:
            return list(from_json(data, self._max_entries))
        # Loki reads every other Content-Type (none, application/x-protobuf) as snappy protobuf.
        return list(from_protobuf(unsnappy(data, self._limit), self._max_entries))

    async def push(self, request: Request) -> Response:
        """Append the request's entries to the stream ``loki``; 204 once they are durable."""
        streams = self._streams
        if streams is None:
            raise PushThrottled("the server is starting; retry in a moment", 1.0)
        kind = media_type(request.headers)
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ENCODINGS:  # refused before the body is read
            raise unsupported(encoding)
        body = await read_body(request, self._limit, self._timeout, "server.max_body_bytes")
        data = inflate(body, encoding, self._limit)
        # Decoded off the event loop: a body of many entries takes a while to turn into records.
        records = await run_in_threadpool(self._records, data, kind == JSON)
        if not records:
            return Response(status_code=204)
        if STREAM not in streams.names():
            # Created on first use, as the API creates streams (so reopened after a restart): a
            # server nobody pushes Loki entries to has no loki stream.
            await run_in_threadpool(streams.create, STREAM, STREAM_SETTINGS)
        counters = self._counters[STREAM]
        counters.add(received=len(records))
        try:
            await run_in_threadpool(streams.append, STREAM, records)
        except StreamFullError as exc:
            counters.drop("stream_full", len(records))
            raise PushThrottled(
                f"stream {STREAM!r} is full (its disk budget, max_log_bytes, is used up until "
                f"delivery to the lake frees it); retry later: {exc}",
                exc.retry_after,
            ) from exc
        except LoglakeError as exc:
            counters.drop("too_large" if exc.status == 413 else "stream_error", len(records))
            raise
        except Exception:
            counters.drop("stream_error", len(records))
            raise
        counters.add(accepted=len(records))
        return Response(status_code=204)
