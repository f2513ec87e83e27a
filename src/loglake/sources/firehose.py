"""Firehose clients (boto3, the AWS CLI, the Kinesis Agent...) feed streams unchanged.

``POST /`` with ``X-Amz-Target: Firehose_20150804.OPERATION`` (the AWS JSON protocol shared with
Kinesis is in :mod:`loglake.sources.aws`). Supported: PutRecord, PutRecordBatch,
CreateDeliveryStream, DescribeDeliveryStream, ListDeliveryStreams. Every loglake stream is a
DirectPut delivery stream whose destination is its own lake table. See ``docs/aws-api.md``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from loglake.sources.aws import (
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
    from loglake.sources.live import LiveSource

# AWS's documented limits.
MAX_RECORDS = 500
MAX_DATA = 1_024_000  # 1,000 KiB per record, before base64
MAX_CALL = 4 << 20  # per PutRecordBatch


def sources(config: Config) -> list[LiveSource]:
    """The Firehose API is always on (it is authenticated like the rest of the server)."""
    return [FirehoseSource(config)]


def stream_name(body: dict[str, Any]) -> str:
    name = string(body, "DeliveryStreamName", "deliveryStreamName", required=True)
    assert name is not None
    problem = name_problem(name, "deliveryStreamName", 64)
    if problem:
        raise validation([problem])
    return name


def record_data(entry: Any, where: str, problems: list[str]) -> bytes:
    if not isinstance(entry, dict):
        raise serialization(f"{where} must be an object")
    data = blob(entry.get("Data"), f"{where}.data")
    if len(data) > MAX_DATA:
        problems.append(
            f"Value of {len(data)} bytes at '{where}.data' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_DATA}"
        )
    return data


def record_id(offset: int, nonce: str, index: int) -> str:
    # Unique even for a record without lines (which shares its offset with the next record).
    return f"{offset:020d}-{nonce}-{index:03d}"


class FirehoseSource(AwsJsonSource):
    """The Firehose API (``Firehose_20150804.*``) as a live source."""

    service = "firehose"
    target_prefix = "Firehose_20150804."
    kind = "Firehose"

    def operations(self) -> dict[str, Operation]:
        return {
            "PutRecord": self.put_record,
            "PutRecordBatch": self.put_record_batch,
            "CreateDeliveryStream": self.create_delivery_stream,
            "DescribeDeliveryStream": self.describe_delivery_stream,
            "ListDeliveryStreams": self.list_delivery_streams,
        }

    async def put_record(self, call: Call) -> dict[str, Any]:
        name = stream_name(call.body)
        entry = call.body.get("Record")
        if entry is None:
            raise validation(
                ["Value null at 'record' failed to satisfy constraint: Member must not be null"]
            )
        problems: list[str] = []
        data = record_data(entry, "record", problems)
        if problems:
            raise validation(problems)
        stream = self.info(name)
        done = await self.append(stream, [data])
        if done.error is not None:
            self.raise_single(done.error)
        return {"RecordId": record_id(done.starts[0], secrets.token_hex(8), 0), "Encrypted": False}

    async def put_record_batch(self, call: Call) -> dict[str, Any]:
        name = stream_name(call.body)
        entries = records_member(call.body)
        problems: list[str] = []
        if not 1 <= len(entries) <= MAX_RECORDS:
            problems.append(
                f"Value of {len(entries)} records at 'records' failed to satisfy constraint: "
                f"Member must have length between 1 and {MAX_RECORDS}"
            )
        blobs = [record_data(e, f"records.{i}.member", problems) for i, e in enumerate(entries, 1)]
        if problems:
            raise validation(problems)
        if sum(len(b) for b in blobs) > MAX_CALL:
            raise AwsError("InvalidArgumentException", "Records size exceeds 4 MB limit")
        stream = self.info(name)
        done = await self.append(stream, blobs)
        if done.error is None:
            nonce = secrets.token_hex(8)
            responses: list[dict[str, Any]] = [
                {"RecordId": record_id(s, nonce, i)} for i, s in enumerate(done.starts)
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

    async def create_delivery_stream(self, call: Call) -> dict[str, Any]:
        name = stream_name(call.body)
        kind = string(call.body, "DeliveryStreamType", "deliveryStreamType")
        if kind not in (None, "DirectPut"):
            raise AwsError(
                "InvalidArgumentException",
                f"DeliveryStreamType {kind!r} is not supported by loglake; only DirectPut",
            )
        # Destination settings (S3, Iceberg...) are accepted and ignored: loglake delivers every
        # stream to its own lake table.
        await self.create(name)
        return {"DeliveryStreamARN": self.arn(call, name)}

    async def describe_delivery_stream(self, call: Call) -> dict[str, Any]:
        stream = self.info(stream_name(call.body))
        return {
            "DeliveryStreamDescription": {
                "DeliveryStreamName": stream.name,
                "DeliveryStreamARN": self.arn(call, stream.name),
                "DeliveryStreamStatus": "ACTIVE",
                "DeliveryStreamType": "DirectPut",
                "DeliveryStreamEncryptionConfiguration": {"Status": "DISABLED"},
                "VersionId": "1",
                "CreateTimestamp": stream.created_at,
                "LastUpdateTimestamp": stream.created_at,
                "Source": {},
                "Destinations": [],
                "HasMoreDestinations": False,
            }
        }

    async def list_delivery_streams(self, call: Call) -> dict[str, Any]:
        limit = integer(call.body, "Limit", 1, 10_000) or 10  # AWS's default page size
        kind = string(call.body, "DeliveryStreamType", "deliveryStreamType")
        after = string(
            call.body, "ExclusiveStartDeliveryStreamName", "exclusiveStartDeliveryStreamName"
        )
        # Every loglake stream is a DirectPut stream; Firehose names are at most 64 characters.
        names = (
            [n for n in self.streams.names() if len(n) <= 64] if kind in (None, "DirectPut") else []
        )
        listed, more = page(names, after, limit)
        return {"DeliveryStreamNames": listed, "HasMoreDeliveryStreams": more}
