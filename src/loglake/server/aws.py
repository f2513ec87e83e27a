"""The AWS-compatible ingest API: Kinesis Data Streams and Firehose clients work unchanged.

``POST /`` with an ``X-Amz-Target`` header, AWS JSON 1.1 protocol (what boto3 and the AWS CLI send for
both services: ``application/x-amz-json-1.1``, ``Data`` blobs in base64). Supported targets:

- ``Kinesis_20131202.``: PutRecord, PutRecords, CreateStream, DescribeStream, DescribeStreamSummary,
  ListStreams
- ``Firehose_20150804.``: PutRecord, PutRecordBatch, CreateDeliveryStream, DescribeDeliveryStream,
  ListDeliveryStreams

Kinesis streams and Firehose delivery streams are both loglake streams (one namespace). A ``Data``
blob may hold several lines: each non-blank line becomes one record of the stream's durable log, and
the call is answered only once they are on disk. Errors have AWS's shape (HTTP 4xx/5xx,
``{"__type": CODE, "message": ...}`` and ``x-amzn-ErrorType``) so the SDKs raise their modeled
exceptions. See ``docs/aws-api.md``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loglake.config import STREAM_NAME, STREAM_NAME_RULE
from loglake.errors import ConfigError, FormatError, LoglakeError
from loglake.server import sigv4
from loglake.server.runtime import NoSuchStreamError, StreamBusyError, TooManyStreamsError
from loglake.sources.http_body import (
    BadEncoding,
    BodyTimeout,
    BodyTooLarge,
    TooManyRecords,
    UnsupportedEncoding,
    content_encoding,
    decode_body,
    lines,
    read_body,
)
from loglake.stream.local import RecordTooLargeError, StreamError, StreamFullError

if TYPE_CHECKING:
    from loglake.config import Config
    from loglake.server.runtime import Runtime, Stream

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

ACCOUNT = "000000000000"  # there are no AWS accounts here; ARNs need one
DEFAULT_REGION = "us-east-1"  # used in ARNs when the request is not signed
SHARD_ID = "shardId-000000000000"  # every stream is one ordered log: one shard
MAX_HASH_KEY = str(2**128 - 1)
CONTENT_TYPE = "application/x-amz-json-1.1"

# AWS's documented limits (defaults; Kinesis streams can opt into larger records, loglake cannot).
KINESIS_MAX_RECORDS = 500
KINESIS_MAX_DATA = 1 << 20  # per record, before base64
KINESIS_MAX_CALL = 5 << 20  # per PutRecords: data plus partition keys
KINESIS_MAX_KEY = 256  # partition key, characters
FIREHOSE_MAX_RECORDS = 500
FIREHOSE_MAX_DATA = 1_024_000  # 1,000 KiB per record, before base64
FIREHOSE_MAX_CALL = 4 << 20  # per PutRecordBatch
# A valid call is at most ~5 MiB of data, ~6.7 MiB in base64 plus keys and JSON; anything far larger
# is refused before parsing so one request cannot make the server buffer without bound.
MAX_BODY = 16 << 20
_MAX_LISTED_ERRORS = 10  # validation messages name at most this many problems

_KINESIS_ARN = re.compile(r"arn:[\w-]+:kinesis:[\w-]*:\d*:stream/(.+)")


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


def _validation(problems: Sequence[str]) -> AwsError:
    """AWS's model-validation error: ``N validation error(s) detected: a; b``."""
    n = len(problems)
    shown = "; ".join(problems[:_MAX_LISTED_ERRORS])
    more = f"; and {n - _MAX_LISTED_ERRORS} more" if n > _MAX_LISTED_ERRORS else ""
    noun = "error" if n == 1 else "errors"
    return AwsError("ValidationException", f"{n} validation {noun} detected: {shown}{more}")


def _serialization(message: str) -> AwsError:
    return AwsError("SerializationException", message)


@dataclass(frozen=True)
class _Call:
    """One parsed request: its service, operation, JSON body and the region used in ARNs."""

    service: str  # "kinesis" or "firehose"
    operation: str
    body: dict[str, Any]
    region: str


# -- field access: type errors are SerializationException, constraint errors ValidationException --


def _string(body: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _validation(
                [f"Value null at '{where}' failed to satisfy constraint: Member must not be null"]
            )
        return None
    if not isinstance(value, str):
        raise _serialization(f"{key} must be a string, got {type(value).__name__}")
    return value


def _integer(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _serialization(f"{key} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _validation(
            [
                f"Value '{value}' at '{key[0].lower() + key[1:]}' failed to satisfy constraint: "
                f"Member must have value between {low} and {high}"
            ]
        )
    return value


def _blob(value: Any, where: str) -> bytes:
    """A base64 ``Data`` member, decoded; ``where`` names it in messages (``records.3.member.data``)."""
    if value is None:
        raise _validation(
            [f"Value null at '{where}' failed to satisfy constraint: Member must not be null"]
        )
    if not isinstance(value, str):
        raise _serialization(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _serialization(f"{where} is not valid base64: {exc}") from exc


def _name_problem(name: str, where: str, max_len: int) -> str | None:
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


def _kinesis_name(body: dict[str, Any]) -> str:
    """The stream of a Kinesis call: ``StreamName``, else the name inside ``StreamARN``."""
    name = _string(body, "StreamName", "streamName")
    if name is None:
        arn = _string(body, "StreamARN", "streamARN")
        if arn is None:
            raise AwsError(
                "ValidationException", "Either StreamName or StreamARN should be provided."
            )
        match = _KINESIS_ARN.fullmatch(arn)
        if not match:
            raise AwsError(
                "InvalidArgumentException", f"StreamARN {arn[:300]!r} is not a Kinesis stream ARN"
            )
        name = match.group(1)
    problem = _name_problem(name, "streamName", 128)
    if problem:
        raise _validation([problem])
    return name


def _firehose_name(body: dict[str, Any]) -> str:
    name = _string(body, "DeliveryStreamName", "deliveryStreamName", required=True)
    assert name is not None
    problem = _name_problem(name, "deliveryStreamName", 64)
    if problem:
        raise _validation([problem])
    return name


def split_lines(data: bytes, max_records: int = 1 << 62) -> list[bytes]:
    """The records of one ``Data`` blob: its lines, ``\\r\\n`` or ``\\n`` ended, blank ones dropped.

    Blank lines are not records, as in the native API (the log also refuses empty records).
    Raises :class:`TooManyRecords` past ``max_records``.
    """
    return [line for _, line in lines(data, max_records)]


def _sequence_number(offset: int) -> str:
    # AWS sequence numbers are decimal strings of up to 56 digits; padding keeps them sortable as text.
    return f"{offset:056d}"


def _arn(call: _Call, name: str) -> str:
    if call.service == "kinesis":
        return f"arn:aws:kinesis:{call.region}:{ACCOUNT}:stream/{name}"
    return f"arn:aws:firehose:{call.region}:{ACCOUNT}:deliverystream/{name}"


def _created_at(stream: Stream) -> float:
    """Best-effort creation time: the log's LOCK file is created once and never written to."""
    try:
        return (stream.log.path / "LOCK").stat().st_mtime
    except OSError:
        return time.time()


def _not_found(call: _Call, name: str) -> AwsError:
    kind = "Stream" if call.service == "kinesis" else "Firehose"
    return AwsError(
        "ResourceNotFoundException", f"{kind} {name} under account {ACCOUNT} not found."
    )


# -- appending ----------------------------------------------------------------------------------


@dataclass
class _Appended:
    """Outcome of appending the blobs of one call: each blob's first offset, or why all failed."""

    starts: list[int]
    error: Exception | None = None


async def _append(stream: Stream, blobs: Sequence[bytes], max_records: int) -> _Appended:
    """Append the lines of every blob as one durable append (one fsync for the whole call).

    A blob's first offset is where its first line went; a blob without lines gets the offset its
    first line would have had. :class:`StreamFullError` and other :class:`StreamError` are returned
    (not raised) so batch calls can report them per record; nothing of the call is then written.
    More than ``max_records`` lines in the whole call refuse it (InvalidArgumentException).
    """
    per_blob = []
    left = max_records
    for blob in blobs:
        try:
            per_blob.append(split_lines(blob, left))
        except TooManyRecords:
            raise AwsError(
                "InvalidArgumentException",
                f"the call holds more than {max_records} lines (records of the stream) "
                "(server.max_records_per_request); split it into smaller calls",
            ) from None
        left -= len(per_blob[-1])
    flat = [line for blob_lines in per_blob for line in blob_lines]
    counters = stream.counters
    counters.received += len(flat)
    try:
        if flat:
            first, _ = await run_in_threadpool(stream.append, flat)
        else:
            first = stream.log.next_offset
    except StreamFullError as exc:
        counters.refused_full += len(flat)
        return _Appended([], exc)
    except RecordTooLargeError as exc:
        # Only reachable if the log's record limit is below the API's; then it is the client's error.
        raise AwsError("ValidationException", str(exc)) from exc
    except StreamError as exc:
        log.warning(
            "append to stream %s failed: %s",
            stream.name,
            exc,
            extra={"fields": {"stream": stream.name, "reason": str(exc)}},
        )
        return _Appended([], exc)
    counters.accepted += len(flat)
    starts = []
    position = first
    for blob_lines in per_blob:
        starts.append(position)
        position += len(blob_lines)
    return _Appended(starts)


def _max_records(runtime: Runtime) -> int:
    return runtime.config.server.max_records_per_request


def _raise_single(call: _Call, error: Exception) -> None:
    """The whole-call error of PutRecord when its append failed."""
    if isinstance(error, StreamFullError):
        if call.service == "kinesis":
            raise AwsError(
                "ProvisionedThroughputExceededException",
                f"Rate exceeded for stream under account {ACCOUNT}: {error}",
                400,
                error.retry_after,
            )
        # 503 so that SDKs retry it on their own, as they do for Firehose's real throttling.
        raise AwsError("ServiceUnavailableException", f"Slow down. {error}", 503, error.retry_after)
    code = (
        "InternalFailureException" if call.service == "kinesis" else "ServiceUnavailableException"
    )
    raise AwsError(code, f"internal failure: {error}", 500)


# -- Kinesis ------------------------------------------------------------------------------------


def _kinesis_record(entry: Any, prefix: str, problems: list[str]) -> tuple[bytes, int]:
    """Decode one Kinesis record; constraint violations are appended to ``problems``.

    ``prefix`` names the record in messages: ``records.3.member.`` in PutRecords, "" in PutRecord
    (where AWS names the members ``data`` and ``partitionKey``). Returns (data, size counted against
    the call limit: data plus partition key bytes).
    """
    if not isinstance(entry, dict):
        raise _serialization(f"{prefix.rstrip('.') or 'record'} must be an object")
    data = _blob(entry.get("Data"), f"{prefix}data")
    key = entry.get("PartitionKey")
    if key is None:
        problems.append(
            f"Value null at '{prefix}partitionKey' failed to satisfy constraint: Member must not be null"
        )
        key = ""
    elif not isinstance(key, str):
        raise _serialization(f"{prefix}partitionKey must be a string")
    elif not 1 <= len(key) <= KINESIS_MAX_KEY:
        problems.append(
            f"Value '{key[:300]}' at '{prefix}partitionKey' failed to satisfy constraint: "
            f"Member must have length between 1 and {KINESIS_MAX_KEY}"
        )
    if len(data) > KINESIS_MAX_DATA:
        problems.append(
            f"Value of {len(data)} bytes at '{prefix}data' failed to satisfy constraint: "
            f"Member must have length less than or equal to {KINESIS_MAX_DATA}"
        )
    return data, len(data) + len(key.encode())


async def _kinesis_put_record(runtime: Runtime, call: _Call) -> dict[str, Any]:
    name = _kinesis_name(call.body)
    problems: list[str] = []
    data, _ = _kinesis_record(call.body, "", problems)
    if problems:
        raise _validation(problems)
    stream = _get(runtime, call, name)
    done = await _append(stream, [data], _max_records(runtime))
    if done.error is not None:
        _raise_single(call, done.error)
    return {
        "ShardId": SHARD_ID,
        "SequenceNumber": _sequence_number(done.starts[0]),
        "EncryptionType": "NONE",
    }


def _records(body: dict[str, Any]) -> list[Any]:
    """The ``Records`` list of a PutRecords / PutRecordBatch call, checked as AWS does."""
    entries = body.get("Records")
    if entries is None:
        raise _validation(
            ["Value null at 'records' failed to satisfy constraint: Member must not be null"]
        )
    if not isinstance(entries, list):
        raise _serialization("Records must be a list")
    return entries


async def _kinesis_put_records(runtime: Runtime, call: _Call) -> dict[str, Any]:
    name = _kinesis_name(call.body)
    entries = _records(call.body)
    problems: list[str] = []
    if not 1 <= len(entries) <= KINESIS_MAX_RECORDS:
        problems.append(
            f"Value of {len(entries)} records at 'records' failed to satisfy constraint: "
            f"Member must have length less than or equal to {KINESIS_MAX_RECORDS}"
            if entries
            else "Value '[]' at 'records' failed to satisfy constraint: Member must have length "
            "greater than or equal to 1"
        )
    blobs: list[bytes] = []
    total = 0
    for i, entry in enumerate(entries, 1):  # AWS numbers list members from 1 in its messages
        data, size = _kinesis_record(entry, f"records.{i}.member.", problems)
        blobs.append(data)
        total += size
    if problems:
        raise _validation(problems)
    if total > KINESIS_MAX_CALL:
        # AWS's own code and wording for this limit.
        raise AwsError("InvalidArgumentException", "Records size exceeds 5 MB limit")
    stream = _get(runtime, call, name)
    done = await _append(stream, blobs, _max_records(runtime))
    if done.error is None:
        results: list[dict[str, Any]] = [
            {"SequenceNumber": _sequence_number(s), "ShardId": SHARD_ID} for s in done.starts
        ]
        failed = 0
    else:
        # The append is all or nothing, so every record of the call failed; clients resend the
        # failed ones, as they must for AWS's per-record throttling.
        if isinstance(done.error, StreamFullError):
            code = "ProvisionedThroughputExceededException"
            message = (
                f"Rate exceeded for shard {SHARD_ID} in stream {name} under account {ACCOUNT}."
            )
        else:
            code, message = "InternalFailure", "Internal service failure."
        results = [{"ErrorCode": code, "ErrorMessage": message} for _ in blobs]
        failed = len(blobs)
    return {"FailedRecordCount": failed, "Records": results, "EncryptionType": "NONE"}


async def _kinesis_create_stream(runtime: Runtime, call: _Call) -> dict[str, Any]:
    name = _string(call.body, "StreamName", "streamName", required=True)
    assert name is not None
    problem = _name_problem(name, "streamName", 128)
    if problem:
        raise _validation([problem])
    _integer(call.body, "ShardCount", 1, 1_000_000)  # accepted and ignored: one log per stream
    max_kib = _integer(call.body, "MaxRecordSizeInKiB", 1024, 10240)
    if max_kib not in (None, KINESIS_MAX_DATA >> 10):
        # Refused rather than ignored, so a producer does not go on to send records it expects
        # to be accepted.
        raise AwsError(
            "InvalidArgumentException",
            f"MaxRecordSizeInKiB {max_kib} is not supported by loglake; records are at most 1024 KiB",
        )
    await _create(runtime, call, name)
    return {}


def _kinesis_description(call: _Call, stream: Stream, summary: bool) -> dict[str, Any]:
    described: dict[str, Any] = {
        "StreamName": stream.name,
        "StreamARN": _arn(call, stream.name),
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": {"StreamMode": "PROVISIONED"},
        "RetentionPeriodHours": 24,
        "StreamCreationTimestamp": _created_at(stream),
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
    }
    if summary:
        described.update(
            OpenShardCount=1, ConsumerCount=0, MaxRecordSizeInKiB=KINESIS_MAX_DATA >> 10
        )
    else:
        described["Shards"] = [
            {
                "ShardId": SHARD_ID,
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": MAX_HASH_KEY},
                "SequenceNumberRange": {
                    "StartingSequenceNumber": _sequence_number(stream.log.start_offset)
                },
            }
        ]
        described["HasMoreShards"] = False
    return described


async def _kinesis_describe_stream(runtime: Runtime, call: _Call) -> dict[str, Any]:
    _integer(call.body, "Limit", 1, 10_000)
    stream = _get(runtime, call, _kinesis_name(call.body))
    return {"StreamDescription": _kinesis_description(call, stream, summary=False)}


async def _kinesis_describe_summary(runtime: Runtime, call: _Call) -> dict[str, Any]:
    stream = _get(runtime, call, _kinesis_name(call.body))
    return {"StreamDescriptionSummary": _kinesis_description(call, stream, summary=True)}


def _page(names: list[str], after: str | None, limit: int) -> tuple[list[str], bool]:
    """Sorted ``names`` after ``after`` (exclusive), at most ``limit``; and whether more follow."""
    rest = [n for n in sorted(names) if after is None or n > after]
    return rest[:limit], len(rest) > limit


async def _kinesis_list_streams(runtime: Runtime, call: _Call) -> dict[str, Any]:
    limit = _integer(call.body, "Limit", 1, 10_000) or 100
    # NextToken is the last name of the previous page, so both pagination styles work alike.
    after = _string(call.body, "NextToken", "nextToken") or _string(
        call.body, "ExclusiveStartStreamName", "exclusiveStartStreamName"
    )
    names, more = _page(list(runtime.streams), after, limit)
    summaries = []
    for name in names:
        stream = runtime.streams.get(name)
        if stream is not None:
            summaries.append(
                {
                    "StreamName": name,
                    "StreamARN": _arn(call, name),
                    "StreamStatus": "ACTIVE",
                    "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                    "StreamCreationTimestamp": _created_at(stream),
                }
            )
    answer: dict[str, Any] = {
        "StreamNames": names,
        "HasMoreStreams": more,
        "StreamSummaries": summaries,
    }
    if more and names:
        answer["NextToken"] = names[-1]
    return answer


# -- Firehose -----------------------------------------------------------------------------------


def _firehose_data(entry: Any, where: str, problems: list[str]) -> bytes:
    if not isinstance(entry, dict):
        raise _serialization(f"{where} must be an object")
    data = _blob(entry.get("Data"), f"{where}.data")
    if len(data) > FIREHOSE_MAX_DATA:
        problems.append(
            f"Value of {len(data)} bytes at '{where}.data' failed to satisfy constraint: "
            f"Member must have length less than or equal to {FIREHOSE_MAX_DATA}"
        )
    return data


def _record_id(offset: int, nonce: str, index: int) -> str:
    # Unique even for a record without lines (which shares its offset with the next record).
    return f"{offset:020d}-{nonce}-{index:03d}"


async def _firehose_put_record(runtime: Runtime, call: _Call) -> dict[str, Any]:
    name = _firehose_name(call.body)
    record = call.body.get("Record")
    if record is None:
        raise _validation(
            ["Value null at 'record' failed to satisfy constraint: Member must not be null"]
        )
    problems: list[str] = []
    data = _firehose_data(record, "record", problems)
    if problems:
        raise _validation(problems)
    stream = _get(runtime, call, name)
    done = await _append(stream, [data], _max_records(runtime))
    if done.error is not None:
        _raise_single(call, done.error)
    return {"RecordId": _record_id(done.starts[0], secrets.token_hex(8), 0), "Encrypted": False}


async def _firehose_put_record_batch(runtime: Runtime, call: _Call) -> dict[str, Any]:
    name = _firehose_name(call.body)
    entries = _records(call.body)
    problems: list[str] = []
    if not 1 <= len(entries) <= FIREHOSE_MAX_RECORDS:
        problems.append(
            f"Value of {len(entries)} records at 'records' failed to satisfy constraint: "
            f"Member must have length between 1 and {FIREHOSE_MAX_RECORDS}"
        )
    blobs = [_firehose_data(e, f"records.{i}.member", problems) for i, e in enumerate(entries, 1)]
    if problems:
        raise _validation(problems)
    if sum(len(b) for b in blobs) > FIREHOSE_MAX_CALL:
        raise AwsError("InvalidArgumentException", "Records size exceeds 4 MB limit")
    stream = _get(runtime, call, name)
    done = await _append(stream, blobs, _max_records(runtime))
    if done.error is None:
        nonce = secrets.token_hex(8)
        responses: list[dict[str, Any]] = [
            {"RecordId": _record_id(s, nonce, i)} for i, s in enumerate(done.starts)
        ]
        failed = 0
    else:
        if isinstance(done.error, StreamFullError):
            code, message = "ServiceUnavailableException", "Slow down."
        else:
            code, message = "InternalFailure", "Internal service failure."
        responses = [{"ErrorCode": code, "ErrorMessage": message} for _ in blobs]
        failed = len(blobs)
    return {"FailedPutCount": failed, "Encrypted": False, "RequestResponses": responses}


async def _firehose_create(runtime: Runtime, call: _Call) -> dict[str, Any]:
    name = _firehose_name(call.body)
    kind = _string(call.body, "DeliveryStreamType", "deliveryStreamType")
    if kind not in (None, "DirectPut"):
        raise AwsError(
            "InvalidArgumentException",
            f"DeliveryStreamType {kind!r} is not supported by loglake; only DirectPut",
        )
    # Destination settings (S3, Iceberg...) are accepted and ignored: loglake delivers every stream
    # to its own lake table.
    await _create(runtime, call, name)
    return {"DeliveryStreamARN": _arn(call, name)}


async def _firehose_describe(runtime: Runtime, call: _Call) -> dict[str, Any]:
    stream = _get(runtime, call, _firehose_name(call.body))
    created = _created_at(stream)
    return {
        "DeliveryStreamDescription": {
            "DeliveryStreamName": stream.name,
            "DeliveryStreamARN": _arn(call, stream.name),
            "DeliveryStreamStatus": "ACTIVE",
            "DeliveryStreamType": "DirectPut",
            "DeliveryStreamEncryptionConfiguration": {"Status": "DISABLED"},
            "VersionId": "1",
            "CreateTimestamp": created,
            "LastUpdateTimestamp": created,
            "Source": {},
            "Destinations": [],
            "HasMoreDestinations": False,
        }
    }


async def _firehose_list(runtime: Runtime, call: _Call) -> dict[str, Any]:
    limit = _integer(call.body, "Limit", 1, 10_000) or 10  # AWS's default page size
    kind = _string(call.body, "DeliveryStreamType", "deliveryStreamType")
    after = _string(
        call.body, "ExclusiveStartDeliveryStreamName", "exclusiveStartDeliveryStreamName"
    )
    # Every loglake stream is a DirectPut stream; Firehose names are at most 64 characters.
    names = [n for n in runtime.streams if len(n) <= 64] if kind in (None, "DirectPut") else []
    page, more = _page(names, after, limit)
    return {"DeliveryStreamNames": page, "HasMoreDeliveryStreams": more}


# -- shared -------------------------------------------------------------------------------------


def _get(runtime: Runtime, call: _Call, name: str) -> Stream:
    try:
        return runtime.get(name)
    except NoSuchStreamError as exc:
        raise _not_found(call, name) from exc


async def _create(runtime: Runtime, call: _Call, name: str) -> None:
    """Create a stream with the defaults (format auto, table ``logs.<name>``); it must be new."""
    try:
        _, created = await run_in_threadpool(runtime.create, name, {})
    except (ConfigError, FormatError) as exc:
        raise AwsError("InvalidArgumentException", str(exc)) from exc
    except TooManyStreamsError as exc:
        raise AwsError("LimitExceededException", str(exc)) from exc  # Kinesis's code for it
    except StreamBusyError as exc:
        raise AwsError("ResourceInUseException", str(exc)) from exc
    if not created:
        kind = "Stream" if call.service == "kinesis" else "Firehose"
        raise AwsError(
            "ResourceInUseException", f"{kind} {name} under account {ACCOUNT} already exists."
        )


Operation = Callable[["Runtime", _Call], Awaitable[dict[str, Any]]]

OPERATIONS: dict[str, tuple[str, Operation]] = {
    "Kinesis_20131202.PutRecord": ("kinesis", _kinesis_put_record),
    "Kinesis_20131202.PutRecords": ("kinesis", _kinesis_put_records),
    "Kinesis_20131202.CreateStream": ("kinesis", _kinesis_create_stream),
    "Kinesis_20131202.DescribeStream": ("kinesis", _kinesis_describe_stream),
    "Kinesis_20131202.DescribeStreamSummary": ("kinesis", _kinesis_describe_summary),
    "Kinesis_20131202.ListStreams": ("kinesis", _kinesis_list_streams),
    "Firehose_20150804.PutRecord": ("firehose", _firehose_put_record),
    "Firehose_20150804.PutRecordBatch": ("firehose", _firehose_put_record_batch),
    "Firehose_20150804.CreateDeliveryStream": ("firehose", _firehose_create),
    "Firehose_20150804.DescribeDeliveryStream": ("firehose", _firehose_describe),
    "Firehose_20150804.ListDeliveryStreams": ("firehose", _firehose_list),
}


def _respond(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    all_headers = {"x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})}
    return Response(
        json.dumps(payload, separators=(",", ":")), status, all_headers, media_type=CONTENT_TYPE
    )


def _error(error: AwsError) -> Response:
    headers = {"x-amzn-ErrorType": error.code}
    if error.status in (408, 413, 415):
        headers["Connection"] = "close"  # the body may be unread: no further request on it
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return _respond(error.status, {"__type": error.code, "message": error.message}, headers)


def make_aws_endpoint(runtime: Runtime, config: Config) -> Handler:
    """The ``POST /`` handler of the AWS-compatible API for ``runtime``.

    Requests are authenticated with SigV4 against ``[auth.aws_credentials]`` when any are configured.
    With none configured, requests are accepted unsigned, unless other authentication is on
    (``[auth] api_keys``): then the AWS API refuses every request rather than be the one open door.
    Every failure, including a malformed request or an unexpected exception, is answered in AWS's
    error shape; nothing a client sends can stop the server.
    """
    credentials = dict(config.auth.aws_credentials)
    locked = config.auth.enabled and not credentials

    async def endpoint(request: Request) -> Response:
        try:
            return await _handle(request)
        except AwsError as exc:
            return _error(exc)
        except Exception as exc:  # one bad request must not take the server down
            operation = request.headers.get("x-amz-target", "")[:100]
            log.exception(
                "AWS API request %s failed",
                operation,
                extra={"fields": {"operation": operation, "reason": repr(exc)}},
            )
            return _error(AwsError("InternalFailure", "Internal service failure.", 500))

    async def _handle(request: Request) -> Response:
        try:
            encoding = content_encoding(request)  # before reading: such a body is not taken
            body = await read_body(request, MAX_BODY, config.server.body_timeout_s)
        except UnsupportedEncoding as exc:
            raise AwsError("UnsupportedMediaTypeException", str(exc), 415) from None
        except BodyTooLarge:
            raise AwsError(
                "InvalidArgumentException", f"request body is over {MAX_BODY} bytes", 413
            ) from None
        except BodyTimeout as exc:
            raise AwsError("RequestTimeoutException", str(exc), 408) from None
        region = DEFAULT_REGION
        if credentials:
            verdict = sigv4.verify(
                credentials,
                request.method,
                request.scope.get("raw_path", b"/").decode("latin-1"),
                request.scope.get("query_string", b"").decode("latin-1"),
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
                body,
            )
            if isinstance(verdict, sigv4.AuthFailure):
                raise AwsError(verdict.code, verdict.message, verdict.status)
            region = verdict.region
        elif locked:
            raise AwsError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid. "
                "(loglake: set [auth.aws_credentials] to use the AWS API when [auth] api_keys is set)",
            )
        else:
            region = _unsigned_region(request.headers.get("authorization", ""))
        target = request.headers.get("x-amz-target", "")
        found = OPERATIONS.get(target)
        if found is None:
            supported = ", ".join(sorted(OPERATIONS))
            raise AwsError(
                "UnknownOperationException",
                f"operation {target[:100]!r} is not supported by loglake; supported: {supported}",
            )
        try:
            body = decode_body(body, encoding, MAX_BODY)  # after SigV4: it signs the body as sent
        except BodyTooLarge:
            raise AwsError(
                "InvalidArgumentException", f"request body inflates past {MAX_BODY} bytes", 413
            ) from None
        except BadEncoding as exc:
            raise _serialization(str(exc)) from None
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if "cbor" in kind:
            raise _serialization(
                "CBOR is not supported; make the SDK send JSON "
                "(AWS SDK for Java v1: AWS_CBOR_DISABLE=true; v2: CBOR_ENABLED=false)"
            )
        try:
            parsed = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise _serialization(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise _serialization("request body must be a JSON object")
        service, operation = found
        call = _Call(service, target.partition(".")[2], parsed, region)
        try:
            return _respond(200, await operation(runtime, call))
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

    return endpoint


def _unsigned_region(authorization: str) -> str:
    """The region of an unverified SigV4 header (for ARNs only), else the default."""
    match = re.search(r"Credential=[^/,\s]*/\d{8}/([\w-]+)/", authorization)
    return match.group(1) if match else DEFAULT_REGION
