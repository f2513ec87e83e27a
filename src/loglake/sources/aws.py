"""What the AWS-compatible sources share: the AWS JSON 1.1 protocol on ``POST /``.

Kinesis Data Streams (:mod:`loglake.sources.kinesis`) and Firehose (:mod:`loglake.sources.firehose`)
clients work unchanged: boto3 and the AWS CLI send ``POST /`` with an ``X-Amz-Target`` header
(``Kinesis_20131202.PutRecords``, ``Firehose_20150804.PutRecordBatch``...), a JSON body
(``application/x-amz-json-1.1``) and ``Data`` blobs in base64. Both sources answer on that one route;
each claims its target prefix (:attr:`HttpRoute.dispatch`) and the server sends it the calls that
start with it. A target neither claims goes to the Kinesis source, which answers
``UnknownOperationException``.

Kinesis streams and Firehose delivery streams are both loglake streams (one namespace). A ``Data``
blob may hold several lines: each non-blank line becomes one record of the stream's durable log, and
the call is answered only once they are on disk. Errors have AWS's shape (HTTP 4xx/5xx,
``{"__type": CODE, "message": ...}`` and ``x-amzn-ErrorType``) so the SDKs raise their modeled
exceptions; a full stream is AWS's throttling (the SDKs retry it). Requests are authenticated by
the server's SigV4 check, handed over as :attr:`SourceContext.verify_aws`, once the body is read
(the signature covers it) and before anything else. See ``docs/aws-api.md``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loglake.config import STREAM_NAME, STREAM_NAME_RULE
from loglake.errors import (
    ConfigError,
    FormatError,
    LoglakeError,
    NoSuchStreamError,
    StreamBusyError,
    TooManyStreamsError,
)
from loglake.sources.http_body import (
    BadEncoding,
    BodyTimeout,
    BodyTooLarge,
    TooManyRecords,
    UnsupportedEncoding,
    content_encoding,
    decode_body,
    lines,
    media_type,
    read_body,
)
from loglake.sources.live import (
    AuthRefused,
    CountersByStream,
    HttpRoute,
    SignedRequest,
    SourceContext,
    SourceCounters,
    StreamInfo,
    Streams,
)
from loglake.stream.local import RecordTooLargeError, StreamError, StreamFullError

if TYPE_CHECKING:
    from starlette.requests import Request

    from loglake.config import Config

log = logging.getLogger(__name__)

ACCOUNT = "000000000000"  # there are no AWS accounts here; ARNs need one
DEFAULT_REGION = "us-east-1"  # used in ARNs when the request is not signed
CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_HEADER = "x-amz-target"
# A valid call is at most ~5 MiB of data, ~6.7 MiB in base64 plus keys and JSON; anything far larger
# is refused before parsing so one request cannot make the server buffer without bound.
MAX_BODY = 16 << 20
_MAX_LISTED_ERRORS = 10  # validation messages name at most this many problems


class AwsError(Exception):
    """An answer in AWS's error shape; raised by the operations, rendered by the endpoint."""

    def __init__(
        self, code: str, message: str, status: int = 400, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


def validation(problems: Sequence[str]) -> AwsError:
    """AWS's model-validation error: ``N validation error(s) detected: a; b``."""
    n = len(problems)
    shown = "; ".join(problems[:_MAX_LISTED_ERRORS])
    more = f"; and {n - _MAX_LISTED_ERRORS} more" if n > _MAX_LISTED_ERRORS else ""
    noun = "error" if n == 1 else "errors"
    return AwsError("ValidationException", f"{n} validation {noun} detected: {shown}{more}")


def serialization(message: str) -> AwsError:
    return AwsError("SerializationException", message)


@dataclass(frozen=True)
class Call:
    """One parsed request: its service, operation, JSON body and the region used in ARNs."""

    service: str  # "kinesis" or "firehose"
    operation: str
    body: dict[str, Any]
    region: str


# -- field access: type errors are SerializationException, constraint errors ValidationException --


def string(body: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise validation(
                [f"Value null at '{where}' failed to satisfy constraint: Member must not be null"]
            )
        return None
    if not isinstance(value, str):
        raise serialization(f"{key} must be a string, got {type(value).__name__}")
    return value


def integer(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise serialization(f"{key} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise validation(
            [
                f"Value '{value}' at '{key[0].lower() + key[1:]}' failed to satisfy constraint: "
                f"Member must have value between {low} and {high}"
            ]
        )
    return value


def blob(value: Any, where: str) -> bytes:
    """A base64 ``Data`` member, decoded; ``where`` names it in messages (``records.3.member.data``)."""
    if value is None:
        raise validation(
            [f"Value null at '{where}' failed to satisfy constraint: Member must not be null"]
        )
    if not isinstance(value, str):
        raise serialization(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise serialization(f"{where} is not valid base64: {exc}") from exc


def name_problem(name: str, where: str, max_len: int) -> str | None:
    if not 1 <= len(name) <= max_len:
        return (
            f"Value '{name[:200]}' at '{where}' failed to satisfy constraint: "
            f"Member must have length between 1 and {max_len}"
        )
    if not STREAM_NAME.fullmatch(name):
        return (
            f"Value '{name}' at '{where}' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ (loglake: "
            f"{STREAM_NAME_RULE})"
        )
    return None


def records_member(body: dict[str, Any]) -> list[Any]:
    """The ``Records`` list of a PutRecords / PutRecordBatch call, checked as AWS does."""
    entries = body.get("Records")
    if entries is None:
        raise validation(
            ["Value null at 'records' failed to satisfy constraint: Member must not be null"]
        )
    if not isinstance(entries, list):
        raise serialization("Records must be a list")
    return entries


def split_lines(data: bytes, max_records: int = 1 << 62) -> list[bytes]:
    """The records of one ``Data`` blob: its lines, ``\\r\\n`` or ``\\n`` ended, blank ones dropped.

    Blank lines are not records, as in the native API (the log also refuses empty records).
    Raises :class:`TooManyRecords` past ``max_records``.
    """
    return [line for _, line in lines(data, max_records)]


def page(names: list[str], after: str | None, limit: int) -> tuple[list[str], bool]:
    """Sorted ``names`` after ``after`` (exclusive), at most ``limit``; and whether more follow."""
    rest = [n for n in sorted(names) if after is None or n > after]
    return rest[:limit], len(rest) > limit


@dataclass
class Appended:
    """Outcome of appending the blobs of one call: each blob's first offset, or why all failed."""

    starts: list[int]
    error: Exception | None = None


Operation = Callable[[Call], Awaitable[dict[str, Any]]]


class AwsJsonSource:
    """A live source speaking the AWS JSON 1.1 protocol on ``POST /`` (one per AWS service).

    A subclass names its ``service`` (``kinesis``), its ``target_prefix``
    (``Kinesis_20131202.``), what a missing stream is called in AWS's messages (``kind``) and its
    operations (:meth:`operations`: operation name -> coroutine taking a :class:`Call`).
    Counters are per stream: ``received`` counts the lines of the calls that reached an append,
    ``accepted`` those appended, ``rejected`` those of a record the log refuses as too large, and
    ``dropped`` those of calls the stream refused (``stream_full``, ``stream_error``,
    ``no_such_stream`` for a stream deleted during the call).
    """

    service = ""
    target_prefix = ""
    kind = ""

    def __init__(self, config: Config) -> None:
        self.name = self.service
        self._max_records = config.server.max_records_per_request
        self._body_timeout = config.server.body_timeout_s
        self._counters = CountersByStream()
        self._context: SourceContext | None = None

    # -- the LiveSource contract ----------------------------------------------------------------

    def start(self, context: SourceContext) -> None:
        self._context = context

    def stop(self) -> None:
        """Nothing to stop: the server stops taking requests before it stops the sources."""

    def counters(self) -> Mapping[str, SourceCounters]:
        return self._counters.snapshot()

    def health(self) -> list[str]:
        return []

    def routes(self) -> list[HttpRoute]:
        return [
            HttpRoute("/", self.endpoint, hot=True, dispatch=(TARGET_HEADER, self.target_prefix))
        ]

    def feeds(self) -> list[str]:
        return []

    def operations(self) -> dict[str, Operation]:
        raise NotImplementedError

    # -- helpers for the operations -------------------------------------------------------------

    @property
    def streams(self) -> Streams:
        if self._context is None:
            raise AwsError("ServiceUnavailableException", "the server is starting", 503, 1.0)
        return self._context.streams

    def arn(self, call: Call, name: str) -> str:
        if self.service == "kinesis":
            return f"arn:aws:kinesis:{call.region}:{ACCOUNT}:stream/{name}"
        return f"arn:aws:firehose:{call.region}:{ACCOUNT}:deliverystream/{name}"

    def not_found(self, name: str) -> AwsError:
        return AwsError(
            "ResourceNotFoundException", f"{self.kind} {name} under account {ACCOUNT} not found."
        )

    def info(self, name: str) -> StreamInfo:
        """The stream ``name``, or AWS's ResourceNotFoundException."""
        try:
            return self.streams.info(name)
        except NoSuchStreamError as exc:
            raise self.not_found(name) from exc

    async def create(self, name: str) -> None:
        """Create a stream with the defaults (format auto, table ``logs.<name>``); it must be new."""
        try:
            created = await run_in_threadpool(self.streams.create, name, {})
        except (ConfigError, FormatError) as exc:
            raise AwsError("InvalidArgumentException", str(exc)) from exc
        except TooManyStreamsError as exc:
            raise AwsError("LimitExceededException", str(exc)) from exc  # Kinesis's code for it
        except StreamBusyError as exc:
            raise AwsError("ResourceInUseException", str(exc)) from exc
        if not created:
            raise AwsError(
                "ResourceInUseException",
                f"{self.kind} {name} under account {ACCOUNT} already exists.",
            )

    async def append(self, stream: StreamInfo, blobs: Sequence[bytes]) -> Appended:
        """Append the lines of every blob as one durable append (one fsync for the whole call).

        A blob's first offset is where its first line went; a blob without lines gets the offset
        its first line would have had. :class:`StreamFullError` and other :class:`StreamError` are
        returned (not raised) so batch calls can report them per record; nothing of the call is
        then written. More than ``server.max_records_per_request`` lines in the whole call refuse
        it (InvalidArgumentException).
        """
        per_blob = []
        left = self._max_records
        for data in blobs:
            try:
                per_blob.append(split_lines(data, left))
            except TooManyRecords:
                raise AwsError(
                    "InvalidArgumentException",
                    f"the call holds more than {self._max_records} lines (records of the stream) "
                    "(server.max_records_per_request); split it into smaller calls",
                ) from None
            left -= len(per_blob[-1])
        flat = [line for blob_lines in per_blob for line in blob_lines]
        counters = self._counters[stream.name]
        counters.add(received=len(flat))
        try:
            if flat:
                first, _ = await run_in_threadpool(self.streams.append, stream.name, flat)
            else:
                first = stream.next_offset
        except StreamFullError as exc:
            counters.drop("stream_full", len(flat))
            return Appended([], exc)
        except RecordTooLargeError as exc:
            # Only reachable if the log's record limit is below the API's: the client's error.
            counters.add(rejected=len(flat))
            raise AwsError("ValidationException", str(exc)) from exc
        except NoSuchStreamError as exc:  # deleted between the lookup and the append
            counters.drop("no_such_stream", len(flat))
            raise self.not_found(stream.name) from exc
        except StreamError as exc:
            counters.drop("stream_error", len(flat))
            log.warning(
                "append to stream %s failed: %s",
                stream.name,
                exc,
                extra={"fields": {"stream": stream.name, "reason": str(exc)}},
            )
            return Appended([], exc)
        counters.add(accepted=len(flat))
        starts = []
        position = first
        for blob_lines in per_blob:
            starts.append(position)
            position += len(blob_lines)
        return Appended(starts)

    def raise_single(self, error: Exception) -> None:
        """The whole-call error of PutRecord when its append failed."""
        if isinstance(error, StreamFullError):
            if self.service == "kinesis":
                raise AwsError(
                    "ProvisionedThroughputExceededException",
                    f"Rate exceeded for stream under account {ACCOUNT}: {error}",
                    400,
                    error.retry_after,
                )
            # 503 so that SDKs retry it on their own, as they do for Firehose's real throttling.
            raise AwsError(
                "ServiceUnavailableException", f"Slow down. {error}", 503, error.retry_after
            )
        code = (
            "InternalFailureException"
            if self.service == "kinesis"
            else "ServiceUnavailableException"
        )
        raise AwsError(code, f"internal failure: {error}", 500)

    # -- the endpoint ---------------------------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        """The ``POST /`` handler. Every failure, including a malformed request or an unexpected
        exception, is answered in AWS's error shape; nothing a client sends can stop the server."""
        try:
            return await self._handle(request)
        except AwsError as exc:
            return error_response(exc)
        except Exception as exc:  # one bad request must not take the server down
            operation = request.headers.get(TARGET_HEADER, "")[:100]
            log.exception(
                "AWS API request %s failed",
                operation,
                extra={"fields": {"operation": operation, "reason": repr(exc)}},
            )
            return error_response(AwsError("InternalFailure", "Internal service failure.", 500))

    async def _handle(self, request: Request) -> Response:
        try:
            encoding = content_encoding(request)  # before reading: such a body is not taken
            body = await read_body(request, MAX_BODY, self._body_timeout)
        except UnsupportedEncoding as exc:
            raise AwsError("UnsupportedMediaTypeException", str(exc), 415) from None
        except BodyTooLarge:
            raise AwsError(
                "InvalidArgumentException", f"request body is over {MAX_BODY} bytes", 413
            ) from None
        except BodyTimeout as exc:
            raise AwsError("RequestTimeoutException", str(exc), 408) from None
        region = self._authenticate(request, body)
        target = request.headers.get(TARGET_HEADER, "")
        operations = self.operations()
        operation = operations.get(target.removeprefix(self.target_prefix))
        if operation is None or not target.startswith(self.target_prefix):
            supported = ", ".join(sorted(self.target_prefix + o for o in operations))
            raise AwsError(
                "UnknownOperationException",
                f"operation {target[:100]!r} is not supported by loglake; supported: "
                f"{supported} (docs/aws-api.md lists every supported operation)",
            )
        try:
            body = decode_body(body, encoding, MAX_BODY)  # after SigV4: it signs the body as sent
        except BodyTooLarge:
            raise AwsError(
                "InvalidArgumentException", f"request body inflates past {MAX_BODY} bytes", 413
            ) from None
        except BadEncoding as exc:
            raise serialization(str(exc)) from None
        kind = media_type(request.headers)
        if "cbor" in kind:
            raise serialization(
                "CBOR is not supported; make the SDK send JSON "
                "(AWS SDK for Java v1: AWS_CBOR_DISABLE=true; v2: CBOR_ENABLED=false)"
            )
        try:
            parsed = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise serialization(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise serialization("request body must be a JSON object")
        call = Call(self.service, target.partition(".")[2], parsed, region)
        try:
            return respond(200, await operation(call))
        except NoSuchStreamError as exc:  # a stream removed between lookup and use
            raise AwsError("ResourceNotFoundException", str(exc)) from exc
        except LoglakeError as exc:
            stream = call.body.get("StreamName") or call.body.get("DeliveryStreamName")
            log.warning(
                "%s failed: %s",
                target,
                exc,
                extra={"fields": {"operation": target, "stream": stream, "reason": str(exc)}},
            )
            raise AwsError("InternalFailure", str(exc), 500) from exc

    def _authenticate(self, request: Request, body: bytes) -> str:
        """The region the request was signed for (for ARNs), through the server's SigV4 check;
        unsigned requests (no credentials configured) name their region in an unverified header."""
        verify = self._context.verify_aws if self._context is not None else None
        if verify is None:
            return unsigned_region(request.headers.get("authorization", ""))
        signed = SignedRequest(
            request.method,
            request.scope.get("raw_path", b"/").decode("latin-1"),
            request.scope.get("query_string", b"").decode("latin-1"),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            body,
        )
        try:
            return verify(signed)
        except AuthRefused as exc:
            raise AwsError(exc.code, str(exc), exc.status) from None


def respond(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    all_headers = {"x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})}
    return Response(
        json.dumps(payload, separators=(",", ":")), status, all_headers, media_type=CONTENT_TYPE
    )


def error_response(error: AwsError) -> Response:
    """``error`` in AWS's shape: ``{"__type": CODE, "message": ...}`` and ``x-amzn-ErrorType``."""
    headers = {"x-amzn-ErrorType": error.code}
    if error.status in (408, 413, 415):
        headers["Connection"] = "close"  # the body may be unread: no further request on it
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return respond(error.status, {"__type": error.code, "message": error.message}, headers)


def unsigned_region(authorization: str) -> str:
    """The region of an unverified SigV4 header (for ARNs only), else the default."""
    match = re.search(r"Credential=[^/,\s]*/\d{8}/([\w-]+)/", authorization)
    return match.group(1) if match else DEFAULT_REGION
