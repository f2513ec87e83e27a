"""Kinesis Data Streams clients (boto3, the AWS CLI, the Kinesis Agent...) feed streams unchanged.

``POST /`` with ``X-Amz-Target: Kinesis_20131202.OPERATION`` (the AWS JSON protocol shared with
Firehose is in :mod:`loglake.sources.aws`). Supported: PutRecord, PutRecords, CreateStream,
DescribeStream, DescribeStreamSummary, ListStreams. Every loglake stream is a Kinesis stream of one
shard; sequence numbers are the stream's offsets. See ``docs/aws-api.md``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from loglake.sources.aws import (
    ACCOUNT,
    AwsError,
    AwsJsonSource,
    Call,
    Operation,
    blob,
    integer,
    name_problem,
    page,
    records_member,
    serialization,
    string,
    validation,
)
from loglake.stream.local import StreamFullError

if TYPE_CHECKING:
    from loglake.config import Config
    from loglake.sources.live import LiveSource, StreamInfo

SHARD_ID = "shardId-000000000000"  # every stream is one ordered log: one shard
MAX_HASH_KEY = str(2**128 - 1)

# AWS's documented limits (defaults; Kinesis streams can opt into larger records, loglake cannot).
MAX_RECORDS = 500
MAX_DATA = 1 << 20  # per record, before base64
MAX_CALL = 5 << 20  # per PutRecords: data plus partition keys
MAX_KEY = 256  # partition key, characters

_ARN = re.compile(r"arn:[\w-]+:kinesis:[\w-]*:\d*:stream/(.+)")


def sources(config: Config) -> list[LiveSource]:
    """The Kinesis API is always on (it is authenticated like the rest of the server)."""
    return [KinesisSource(config)]


def sequence_number(offset: int) -> str:
    # AWS sequence numbers are decimal strings of up to 56 digits; padding keeps them sortable.
    return f"{offset:056d}"


def stream_name(body: dict[str, Any]) -> str:
    """The stream of a Kinesis call: ``StreamName``, else the name inside ``StreamARN``."""
    name = string(body, "StreamName", "streamName")
    if name is None:
        arn = string(body, "StreamARN", "streamARN")
        if arn is None:
            raise AwsError(
                "ValidationException", "Either StreamName or StreamARN should be provided."
            )
        match = _ARN.fullmatch(arn)
        if not match:
            raise AwsError(
                "InvalidArgumentException", f"StreamARN {arn[:300]!r} is not a Kinesis stream ARN"
            )
        name = match.group(1)
    problem = name_problem(name, "streamName", 128)
    if problem:
        raise validation([problem])
    return name


def record(entry: Any, prefix: str, problems: list[str]) -> tuple[bytes, int]:
    """Decode one Kinesis record; constraint violations are appended to ``problems``.

    ``prefix`` names the record in messages: ``records.3.member.`` in PutRecords, "" in PutRecord
    (where AWS names the members ``data`` and ``partitionKey``). Returns (data, size counted
    against the call limit: data plus partition key bytes).
    """
    if not isinstance(entry, dict):
        raise serialization(f"{prefix.rstrip('.') or 'record'} must be an object")
    data = blob(entry.get("Data"), f"{prefix}data")
    key = entry.get("PartitionKey")
    if key is None:
        problems.append(
            f"Value null at '{prefix}partitionKey' failed to satisfy constraint: "
            "Member must not be null"
        )
        key = ""
    elif not isinstance(key, str):
        raise serialization(f"{prefix}partitionKey must be a string")
    elif not 1 <= len(key) <= MAX_KEY:
        problems.append(
            f"Value '{key[:300]}' at '{prefix}partitionKey' failed to satisfy constraint: "
            f"Member must have length between 1 and {MAX_KEY}"
        )
    if len(data) > MAX_DATA:
        problems.append(
            f"Value of {len(data)} bytes at '{prefix}data' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_DATA}"
        )
    return data, len(data) + len(key.encode())


class KinesisSource(AwsJsonSource):
    """The Kinesis Data Streams API (``Kinesis_20131202.*``) as a live source."""

    service = "kinesis"
    target_prefix = "Kinesis_20131202."
    kind = "Stream"

    def operations(self) -> dict[str, Operation]:
        return {
            "PutRecord": self.put_record,
            "PutRecords": self.put_records,
            "CreateStream": self.create_stream,
            "DescribeStream": self.describe_stream,
            "DescribeStreamSummary": self.describe_summary,
            "ListStreams": self.list_streams,
        }

    async def put_record(self, call: Call) -> dict[str, Any]:
        name = stream_name(call.body)
        problems: list[str] = []
        data, _ = record(call.body, "", problems)
        if problems:
            raise validation(problems)
        stream = self.info(name)
        done = await self.append(stream, [data])
        if done.error is not None:
            self.raise_single(done.error)
        return {
            "ShardId": SHARD_ID,
            "SequenceNumber": sequence_number(done.starts[0]),
            "EncryptionType": "NONE",
        }

    async def put_records(self, call: Call) -> dict[str, Any]:
        name = stream_name(call.body)
        entries = records_member(call.body)
        problems: list[str] = []
        if not 1 <= len(entries) <= MAX_RECORDS:
            problems.append(
                f"Value of {len(entries)} records at 'records' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_RECORDS}"
                if entries
                else "Value '[]' at 'records' failed to satisfy constraint: Member must have "
                "length greater than or equal to 1"
            )
        blobs: list[bytes] = []
        total = 0
        for i, entry in enumerate(entries, 1):  # AWS numbers list members from 1 in its messages
            data, size = record(entry, f"records.{i}.member.", problems)
            blobs.append(data)
            total += size
        if problems:
            raise validation(problems)
        if total > MAX_CALL:
            # AWS's own code and wording for this limit.
            raise AwsError("InvalidArgumentException", "Records size exceeds 5 MB limit")
        stream = self.info(name)
        done = await self.append(stream, blobs)
        if done.error is None:
            results: list[dict[str, Any]] = [
                {"SequenceNumber": sequence_number(s), "ShardId": SHARD_ID} for s in done.starts
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

    async def create_stream(self, call: Call) -> dict[str, Any]:
        name = string(call.body, "StreamName", "streamName", required=True)
        assert name is not None
        problem = name_problem(name, "streamName", 128)
        if problem:
            raise validation([problem])
        integer(call.body, "ShardCount", 1, 1_000_000)  # accepted and ignored: one log per stream
        max_kib = integer(call.body, "MaxRecordSizeInKiB", 1024, 10240)
        if max_kib not in (None, MAX_DATA >> 10):
            # Refused rather than ignored, so a producer does not go on to send records it expects
            # to be accepted.
            raise AwsError(
                "InvalidArgumentException",
                f"MaxRecordSizeInKiB {max_kib} is not supported by loglake; records are at most "
                "1024 KiB",
            )
        await self.create(name)
        return {}

    def _description(self, call: Call, stream: StreamInfo, summary: bool) -> dict[str, Any]:
        described: dict[str, Any] = {
            "StreamName": stream.name,
            "StreamARN": self.arn(call, stream.name),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": stream.created_at,
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
        }
        if summary:
            described.update(OpenShardCount=1, ConsumerCount=0, MaxRecordSizeInKiB=MAX_DATA >> 10)
        else:
            described["Shards"] = [
                {
                    "ShardId": SHARD_ID,
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": MAX_HASH_KEY},
                    "SequenceNumberRange": {
                        "StartingSequenceNumber": sequence_number(stream.first_offset)
                    },
                }
            ]
            described["HasMoreShards"] = False
        return described

    async def describe_stream(self, call: Call) -> dict[str, Any]:
        integer(call.body, "Limit", 1, 10_000)
        stream = self.info(stream_name(call.body))
        return {"StreamDescription": self._description(call, stream, summary=False)}

    async def describe_summary(self, call: Call) -> dict[str, Any]:
        stream = self.info(stream_name(call.body))
        return {"StreamDescriptionSummary": self._description(call, stream, summary=True)}

    async def list_streams(self, call: Call) -> dict[str, Any]:
        limit = integer(call.body, "Limit", 1, 10_000) or 100
        # NextToken is the last name of the previous page, so both pagination styles work alike.
        after = string(call.body, "NextToken", "nextToken") or string(
            call.body, "ExclusiveStartStreamName", "exclusiveStartStreamName"
        )
        names, more = page(self.streams.names(), after, limit)
        summaries = []
        for name in names:
            try:
                stream = self.info(name)
            except AwsError:
                continue  # deleted since the names were listed
            summaries.append(
                {
                    "StreamName": name,
                    "StreamARN": self.arn(call, name),
                    "StreamStatus": "ACTIVE",
                    "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                    "StreamCreationTimestamp": stream.created_at,
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
