"""The AWS-compatible API against a real server subprocess, driven by real boto3 clients.

The server is ``loglake serve`` itself. SigV4 verification is also checked directly against
botocore's signer; the disk-full paths use a stream with a tiny disk budget.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import serving
from loglake.server import sigv4
from loglake.sources.aws import split_lines
from serving import free_port as _free_port
from serving import request
from waiting import wait_for

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SAMPLE = SHARED_DATA / "apache_combined_10k.log"

AUTH_CONFIG = """
[auth.aws_credentials]
AKIDTEST = "secret"
"""


@dataclass
class Server(serving.Server):
    def client(self, service: str, key: str = "AKIDTEST", secret: str = "secret") -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            # One attempt: the tests look at each answer, not at botocore's retries.
            config=BotoConfig(retries={"max_attempts": 1, "mode": "standard"}),
        )


def _start(root: Path, config: str) -> Server:
    home = root / "lake"
    home.mkdir(parents=True)
    (home / "loglake.toml").write_text(config)
    srv = Server(home, _free_port())
    srv.start()
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(tmp_path_factory.mktemp("aws"), "")
    yield srv
    if srv.proc is not None:
        # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit here.
        assert srv.stop() in (0, -signal.SIGTERM)
    log = (srv.home / "server.log").read_text()
    assert "Traceback" not in log, log  # no request, however malformed, raised out of a handler


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    assert SHARED_DATA.is_dir(), f"sample data missing: {SHARED_DATA}"  # /work/shared/data here
    assert SAMPLE.is_file(), f"sample data missing: {SAMPLE}"
    return SAMPLE.read_bytes().splitlines()


def _bytes_sum(lines: list[bytes]) -> int:
    return sum(int(x) for x in re.findall(rb'" \d{3} (\d+) "', b"\n".join(lines)))


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _raw(srv: Server, target: str, body: bytes, content_type: str = "application/x-amz-json-1.1"):
    return request(
        "POST", f"{srv.url}/", body, {"X-Amz-Target": target, "Content-Type": content_type}
    )


# -- end to end ---------------------------------------------------------------------------------


def test_kinesis_put_records_reach_the_lake(server: Server, lines: list[bytes]) -> None:
    kinesis = server.client("kinesis")
    kinesis.create_stream(StreamName="web-kinesis", ShardCount=1)
    sent = lines[:500]
    sequence: list[int] = []
    for i in range(0, 400, 100):  # four PutRecords calls of 100 one-line records
        reply = kinesis.put_records(
            StreamName="web-kinesis",
            Records=[{"Data": line + b"\n", "PartitionKey": "k"} for line in sent[i : i + 100]],
        )
        assert reply["FailedRecordCount"] == 0 and len(reply["Records"]) == 100
        assert {r["ShardId"] for r in reply["Records"]} == {"shardId-000000000000"}
        sequence += [int(r["SequenceNumber"]) for r in reply["Records"]]
    assert sequence == list(range(400))
    # One Data blob may carry many lines (CRLF too): 100 records from one PutRecord.
    blob = b"\r\n".join(sent[400:]) + b"\r\n\n"
    one = kinesis.put_record(StreamName="web-kinesis", Data=blob, PartitionKey="k")
    assert int(one["SequenceNumber"]) == 400 and len(one["SequenceNumber"]) == 56
    assert server.next_offset("web-kinesis") == 500

    server.wait_rows("SELECT count(*) AS n FROM logs.web_kinesis", 500)
    got = server.query("SELECT sum(bytes) AS b, count(DISTINCT line) AS d FROM logs.web_kinesis")
    assert got == [{"b": _bytes_sum(sent), "d": 500}]


def test_firehose_put_record_batch_reaches_the_lake(server: Server, lines: list[bytes]) -> None:
    firehose = server.client("firehose")
    arn = firehose.create_delivery_stream(DeliveryStreamName="web.firehose")["DeliveryStreamARN"]
    assert arn == "arn:aws:firehose:us-east-1:000000000000:deliverystream/web.firehose"
    sent = lines[1000:1500]
    ids: list[str] = []
    for i in range(0, 500, 250):
        reply = firehose.put_record_batch(
            DeliveryStreamName="web.firehose",
            Records=[{"Data": line + b"\n"} for line in sent[i : i + 250]],
        )
        assert reply["FailedPutCount"] == 0
        ids += [r["RecordId"] for r in reply["RequestResponses"]]
    assert len(set(ids)) == 500
    single = firehose.put_record(DeliveryStreamName="web.firehose", Record={"Data": b"\n \n"})
    assert single["RecordId"]  # a blob of blank lines is accepted and stores nothing
    assert server.next_offset("web.firehose") == 500

    server.wait_rows("SELECT count(*) AS n FROM logs.web_firehose", 500)
    got = server.query("SELECT sum(bytes) AS b FROM logs.web_firehose")
    assert got == [{"b": _bytes_sum(sent)}]


# -- limits -------------------------------------------------------------------------------------


def test_kinesis_limits_reject_the_whole_call(server: Server) -> None:
    kinesis = server.client("kinesis")
    kinesis.create_stream(StreamName="limits")
    line = b"x" * 100
    with pytest.raises(kinesis.exceptions.ValidationException) as exc:
        kinesis.put_records(
            StreamName="limits", Records=[{"Data": line, "PartitionKey": "k"}] * 501
        )
    assert "less than or equal to 500" in str(exc.value)
    with pytest.raises(kinesis.exceptions.ValidationException) as exc:
        kinesis.put_records(
            StreamName="limits",
            Records=[
                {"Data": line, "PartitionKey": "k"},
                {"Data": b"y" * ((1 << 20) + 1), "PartitionKey": "k"},
            ],
        )
    assert "records.2.member.data" in str(exc.value)
    with pytest.raises(kinesis.exceptions.ValidationException):
        kinesis.put_record(StreamName="limits", Data=b"y" * ((1 << 20) + 1), PartitionKey="k")
    with pytest.raises(kinesis.exceptions.InvalidArgumentException) as exc:
        kinesis.put_records(  # six records of 1,000,000 bytes: each fine, together over 5 MiB
            StreamName="limits", Records=[{"Data": b"z" * 1_000_000, "PartitionKey": "k"}] * 6
        )
    assert "5 MB" in str(exc.value)
    with pytest.raises(kinesis.exceptions.ValidationException):
        kinesis.put_record(StreamName="limits", Data=line, PartitionKey="p" * 257)
    assert server.next_offset("limits") == 0  # nothing of any refused call was stored
    # Exactly at the limits is fine: 1 MiB of data in one record, 500 records in one call.
    kinesis.put_record(StreamName="limits", Data=b"y" * (1 << 20), PartitionKey="k")
    reply = kinesis.put_records(
        StreamName="limits", Records=[{"Data": line, "PartitionKey": "k"}] * 500
    )
    assert reply["FailedRecordCount"] == 0 and server.next_offset("limits") == 501


def test_firehose_limits_reject_the_whole_call(server: Server) -> None:
    firehose = server.client("firehose")
    firehose.create_delivery_stream(DeliveryStreamName="flimits")
    with pytest.raises(ClientError) as exc:
        firehose.put_record_batch(DeliveryStreamName="flimits", Records=[{"Data": b"a"}] * 501)
    assert _code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        firehose.put_record(DeliveryStreamName="flimits", Record={"Data": b"b" * 1_024_001})
    assert _code(exc) == "ValidationException" and "1024000" in str(exc.value)
    with pytest.raises(firehose.exceptions.InvalidArgumentException) as exc:
        firehose.put_record_batch(  # five records of 1,000,000 bytes: over 4 MiB together
            DeliveryStreamName="flimits", Records=[{"Data": b"c" * 1_000_000}] * 5
        )
    assert "4 MB" in str(exc.value)
    assert server.next_offset("flimits") == 0
    firehose.put_record(DeliveryStreamName="flimits", Record={"Data": b"d" * 1_024_000})
    assert server.next_offset("flimits") == 1


# -- errors, describe, list -----------------------------------------------------------------------


def test_errors_have_the_aws_shape(server: Server) -> None:
    kinesis = server.client("kinesis")
    firehose = server.client("firehose")
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.put_record(StreamName="nope", Data=b"x", PartitionKey="k")
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream(StreamName="nope")
    with pytest.raises(firehose.exceptions.ResourceNotFoundException):
        firehose.put_record_batch(DeliveryStreamName="nope", Records=[{"Data": b"x"}])
    kinesis.create_stream(StreamName="twice")
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.create_stream(StreamName="twice")
    with pytest.raises(firehose.exceptions.ResourceInUseException):
        firehose.create_delivery_stream(DeliveryStreamName="twice")
    with pytest.raises(ClientError) as exc:
        kinesis.get_shard_iterator(
            StreamName="twice", ShardId="shardId-000000000000", ShardIteratorType="LATEST"
        )
    assert _code(exc) == "UnknownOperationException"
    with pytest.raises(kinesis.exceptions.ValidationException):
        kinesis.create_stream(StreamName="bad name!")
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.create_stream(StreamName="big-records", MaxRecordSizeInKiB=4096)

    status, body, headers = _raw(server, "Kinesis_20131202.PutRecord", b"{not json")
    assert status == 400 and body["__type"] == "SerializationException"
    assert headers["x-amzn-errortype"] == "SerializationException"
    for target, payload in [
        ("Kinesis_20131202.PutRecord", b"[1, 2]"),
        (
            "Kinesis_20131202.PutRecord",
            b'{"StreamName": "twice", "Data": "!!", "PartitionKey": "k"}',
        ),
        ("Kinesis_20131202.PutRecords", b'{"StreamName": "twice", "Records": {"a": 1}}'),
        ("Kinesis_20131202.PutRecords", b'{"StreamName": "twice", "Records": [7]}'),
        ("Firehose_20150804.PutRecord", b'{"DeliveryStreamName": 5, "Record": {}}'),
        ("Kinesis_20131202.ListStreams", b'{"Limit": "many"}'),
        ("Kinesis_20131202.PutRecord", b"[" * 100_000 + b"]" * 100_000),
    ]:
        status, body, _ = _raw(server, target, payload)
        assert status == 400 and body["__type"] == "SerializationException", (payload[:60], body)
    status, body, _ = _raw(server, "Nope.Nothing", b"{}")
    assert status == 400 and body["__type"] == "UnknownOperationException"
    status, body, _ = _raw(server, "", b"{}")
    assert status == 400 and body["__type"] == "UnknownOperationException"
    status, body, _ = _raw(
        server, "Kinesis_20131202.ListStreams", b"\xbf\xff", "application/x-amz-cbor-1.1"
    )
    assert status == 400 and "CBOR" in body["message"]
    status, body, _ = _raw(server, "Kinesis_20131202.PutRecords", b'{"StreamName": "twice"}')
    assert status == 400 and body["__type"] == "ValidationException"
    status, body, _ = _raw(server, "Kinesis_20131202.DescribeStream", b"{}")
    assert status == 400 and body["__type"] == "ValidationException"
    assert request("GET", f"{server.url}/healthz")[0] == 200  # still serving


def test_describe_and_list(server: Server) -> None:
    kinesis = server.client("kinesis")
    firehose = server.client("firehose")
    for name in ("list-a", "list-b", "list-c"):
        kinesis.create_stream(StreamName=name, ShardCount=2)
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/list-a"
    described = kinesis.describe_stream(StreamName="list-a")["StreamDescription"]
    assert described["StreamStatus"] == "ACTIVE" and described["StreamARN"] == arn
    assert [s["ShardId"] for s in described["Shards"]] == ["shardId-000000000000"]
    assert described["HasMoreShards"] is False
    assert abs(described["StreamCreationTimestamp"].timestamp() - time.time()) < 600
    summary = kinesis.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
    assert summary["StreamName"] == "list-a" and summary["OpenShardCount"] == 1
    kinesis.get_waiter("stream_exists").wait(StreamName="list-b")  # polls DescribeStream

    everything = kinesis.list_streams()
    assert {"list-a", "list-b", "list-c"} <= set(everything["StreamNames"])
    assert everything["HasMoreStreams"] is False
    assert [s["StreamName"] for s in everything["StreamSummaries"]] == everything["StreamNames"]
    paged = [
        name
        for page in kinesis.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 2})
        for name in page["StreamNames"]
    ]
    assert paged == everything["StreamNames"]
    first = kinesis.list_streams(Limit=1, ExclusiveStartStreamName="list-a")
    assert first["StreamNames"] == ["list-b"] and first["HasMoreStreams"] is True

    description = firehose.describe_delivery_stream(DeliveryStreamName="list-c")
    stream = description["DeliveryStreamDescription"]
    assert stream["DeliveryStreamStatus"] == "ACTIVE" and stream["Destinations"] == []
    assert stream["DeliveryStreamARN"].endswith(":deliverystream/list-c")
    listed = firehose.list_delivery_streams(Limit=100)
    assert listed["DeliveryStreamNames"] == everything["StreamNames"]
    assert (
        firehose.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource")[
            "DeliveryStreamNames"
        ]
        == []
    )


# -- SigV4 ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigv4_auth_on_a_real_server(tmp_path: Path) -> None:
    srv = _start(tmp_path, AUTH_CONFIG)
    try:
        good = srv.client("kinesis")
        good.create_stream(StreamName="signed")
        reply = good.put_records(
            StreamName="signed", Records=[{"Data": b'{"msg": "hello"}\n', "PartitionKey": "k"}]
        )
        assert reply["FailedRecordCount"] == 0
        srv.client("firehose").put_record(
            DeliveryStreamName="signed", Record={"Data": b'{"msg": "hi"}'}
        )

        with pytest.raises(ClientError) as exc:
            srv.client("kinesis", secret="wrong").put_record(
                StreamName="signed", Data=b"x", PartitionKey="k"
            )
        assert _code(exc) == "InvalidSignatureException"
        with pytest.raises(ClientError) as exc:
            srv.client("firehose", key="AKIDOTHER").list_delivery_streams()
        assert _code(exc) == "UnrecognizedClientException"
        status, body, _ = _raw(srv, "Kinesis_20131202.ListStreams", b"{}")
        assert status == 403 and body["__type"] == "MissingAuthenticationTokenException"
        # Only the two signed records reached the lake.
        srv.wait_rows("SELECT count(*) AS n FROM logs.signed", 2, timeout=120)
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.slow
def test_only_aws_credentials_open_only_the_aws_api(tmp_path: Path) -> None:
    """With [auth.aws_credentials] alone the server may listen beyond loopback, and then every
    route but the health probes and SigV4-signed AWS calls answers 401 (no API key exists)."""
    home = tmp_path / "lake"
    srv = Server.started(home, AUTH_CONFIG + '[syslog]\nudp = ""\ntcp = ""\n', host="0.0.0.0")
    try:
        kinesis = srv.client("kinesis")
        kinesis.create_stream(StreamName="signed")
        kinesis.put_record(StreamName="signed", Data=b'{"msg": "hello"}', PartitionKey="k")
        query = b'{"stream": "signed", "window": "tumbling 1m", "sql": "SELECT 1 AS x FROM stream"}'
        for method, path, body in [
            ("GET", "/v1/streams", None),
            ("PUT", "/v1/streams/open", b"{}"),
            ("DELETE", "/v1/streams/signed", None),
            ("POST", "/v1/streams/signed/records", b"x\n"),
            ("GET", "/metrics", None),
            ("GET", "/v1/queries", None),
            ("PUT", "/v1/queries/open", query),
            ("GET", "/v1/alerts", None),
            ("POST", "/", b"{}"),  # not an AWS call (no X-Amz-Target): a native one
            ("GET", "/nope", None),
        ]:
            status, reply, headers = request(
                method, f"{srv.url}{path}", body, {"Authorization": "Bearer anything"}
            )
            assert status == 401, (method, path, reply)
            assert reply["error"]["code"] == "unauthorized"
            assert "[auth] api_keys" in reply["error"]["message"]
            assert headers["www-authenticate"] == "Bearer"
        assert request("GET", f"{srv.url}/healthz")[0] == 200
        # /readyz needs no key either; it answers 200 once the stream created above has resumed.
        wait_for(lambda: request("GET", f"{srv.url}/readyz")[0] == 200, "/readyz 200", timeout=120)
        # The signed call went through.
        srv.wait_rows("SELECT count(*) AS n FROM logs.signed", 1, timeout=120)
        started = next(
            json.loads(x)
            for x in (home / "server.log").read_text().splitlines()
            if "loglake serve started" in x
        )
        assert started["listen"] == f"0.0.0.0:{srv.port}"
        assert started["auth"] == "sigv4 (native API closed: no api_keys)"
    finally:
        srv.stop(signal.SIGKILL)


def test_aws_bodies_with_other_encodings_or_too_many_lines_are_refused(server: Server) -> None:
    kinesis = server.client("kinesis")
    kinesis.create_stream(StreamName="bounded")

    def brotli(request: Any, **_: Any) -> None:
        request.headers["Content-Encoding"] = "br"

    kinesis.meta.events.register("before-sign.kinesis.PutRecord", brotli)
    with pytest.raises(ClientError) as exc:
        kinesis.put_record(StreamName="bounded", Data=b"x", PartitionKey="k")
    assert _code(exc) == "UnsupportedMediaTypeException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 415
    assert "gzip or identity" in exc.value.response["Error"]["Message"]
    kinesis.meta.events.unregister("before-sign.kinesis.PutRecord", brotli)
    # 500,000 lines in one 1 MB blob: more records than server.max_records_per_request (100,000).
    with pytest.raises(kinesis.exceptions.InvalidArgumentException) as exc:
        kinesis.put_record(StreamName="bounded", Data=b"a\n" * 500_000, PartitionKey="k")
    assert "server.max_records_per_request" in exc.value.response["Error"]["Message"]
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.put_records(
            StreamName="bounded",
            Records=[{"Data": b"a\n" * 30_000, "PartitionKey": "k"} for _ in range(4)],
        )
    assert kinesis.describe_stream_summary(StreamName="bounded")  # still there, untouched
    # A gzip body (SigV4 signs it as sent) is inflated like the native API's.
    import base64
    import gzip

    payload = json.dumps(
        {
            "StreamName": "bounded",
            "Data": base64.b64encode(b'{"n": 1}\n{"n": 2}').decode(),
            "PartitionKey": "k",
        }
    ).encode()
    status, body, _ = request(
        "POST",
        f"{server.url}/",
        gzip.compress(payload),
        {
            "X-Amz-Target": "Kinesis_20131202.PutRecord",
            "Content-Type": "application/x-amz-json-1.1",
            "Content-Encoding": "gzip",
        },
    )
    assert status == 200 and body["SequenceNumber"] == f"{0:056d}"
    server.wait_rows("SELECT count(*) AS n FROM logs.bounded", 2, timeout=120)


def _signed(
    body: bytes = b'{"StreamName": "s"}',
    url: str = "http://127.0.0.1:8080/",
    secret: str = "secret",
    region: str = "eu-west-1",
    service: str = "kinesis",
) -> AWSRequest:
    """A request signed by botocore's own SigV4 signer."""
    req = AWSRequest(
        "POST",
        url,
        data=body,
        headers={
            "X-Amz-Target": "Kinesis_20131202.DescribeStream",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    SigV4Auth(Credentials("AKIDTEST", secret), service, region).add_auth(req)
    return req


def _verify(req: AWSRequest, **changes: Any) -> sigv4.Signed | sigv4.AuthFailure:
    path, _, query = req.url.split("/", 3)[3].partition("?")
    headers = [(k, str(v)) for k, v in req.headers.items()]
    headers.append(("Host", "127.0.0.1:8080"))
    fields: dict[str, Any] = {
        "method": req.method,
        "path": "/" + path,
        "query": query,
        "headers": headers,
        "body": req.body if isinstance(req.body, bytes) else (req.body or b""),
    }
    fields.update(changes)
    return sigv4.verify({"AKIDTEST": "secret"}, **fields)


def test_sigv4_matches_botocores_signer() -> None:
    ok = _verify(_signed())
    assert ok == sigv4.Signed("AKIDTEST", "eu-west-1", "kinesis")
    assert isinstance(_verify(_signed(service="firehose", region="us-east-1")), sigv4.Signed)
    # Query strings and percent-encoded paths are canonicalised as botocore does.
    assert isinstance(
        _verify(_signed(url="http://127.0.0.1:8080/a%20b/c?b=2&a=1&c=x%2Fy")), sigv4.Signed
    )
    with_hash = _signed()
    with_hash.headers["X-Amz-Content-SHA256"] = hashlib.sha256(with_hash.body).hexdigest()
    del with_hash.headers["Authorization"]
    SigV4Auth(Credentials("AKIDTEST", "secret"), "kinesis", "eu-west-1").add_auth(with_hash)
    assert isinstance(_verify(with_hash), sigv4.Signed)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"body": b'{"StreamName": "t"}'}, "InvalidSignatureException"),
        ({"method": "PUT"}, "InvalidSignatureException"),
        ({"query": "x=1"}, "InvalidSignatureException"),
        ({"extra": ("X-Amz-Target", "Kinesis_20131202.PutRecord")}, "InvalidSignatureException"),
        ({"extra": ("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")}, "InvalidSignatureException"),
        ({"drop": "authorization"}, "MissingAuthenticationTokenException"),
        ({"auth": "AWS4-HMAC-SHA256 Credential=AKIDTEST/x"}, "IncompleteSignatureException"),
        ({"auth": "Bearer abc"}, "IncompleteSignatureException"),
        ({"auth": "AWS4-HMAC-SHA256 ,,,=="}, "IncompleteSignatureException"),
    ],
)
def test_sigv4_refuses_tampered_requests(change: dict[str, Any], code: str) -> None:
    req = _signed()
    if "extra" in change:
        name, value = change.pop("extra")
        req.headers[name] = value  # HTTPHeaders appends: a second value, or a new header
    if "drop" in change:
        del req.headers[change.pop("drop")]
    if "auth" in change:
        req.headers.replace_header("Authorization", change.pop("auth"))
    verdict = _verify(req, **change)
    assert isinstance(verdict, sigv4.AuthFailure) and verdict.code == code, verdict


def test_sigv4_refuses_wrong_keys_and_old_signatures() -> None:
    wrong = _verify(_signed(secret="wrong"))
    assert isinstance(wrong, sigv4.AuthFailure) and wrong.code == "InvalidSignatureException"
    unknown = sigv4.verify(
        {"OTHER": "secret"},
        "POST",
        "/",
        "",
        [("Authorization", _signed().headers["Authorization"])],
        b"",
    )
    assert isinstance(unknown, sigv4.AuthFailure) and unknown.code == "UnrecognizedClientException"
    later = datetime.now(UTC) + timedelta(minutes=16)
    verdict = _verify(_signed(), now=later)
    assert isinstance(verdict, sigv4.AuthFailure) and "expired" in verdict.message
    assert isinstance(_verify(_signed(), now=later - timedelta(minutes=2)), sigv4.Signed)
    s3 = _verify(_signed(service="s3"))
    assert isinstance(s3, sigv4.AuthFailure) and s3.code == "InvalidSignatureException"


# -- in-process: the disk budget is used up -----------------------------------------------------


FULL_CONFIG = """
[streams.full]
format = "combined"
buffer_seconds = 600   # no delivery commit (and so no trim) during the test
max_log_bytes = 65536
"""


def test_full_stream_fails_records_not_calls(tmp_path: Path) -> None:
    srv = _start(tmp_path, FULL_CONFIG)
    try:
        kinesis = srv.client("kinesis")
        firehose = srv.client("firehose")
        line = b'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"'
        record = {"Data": b"\n".join([line] * 50), "PartitionKey": "k"}
        failed = None
        for _ in range(200):  # fill the 64 KiB budget
            reply = kinesis.put_records(StreamName="full", Records=[record] * 5)
            if reply["FailedRecordCount"]:
                failed = reply
                break
        assert failed is not None and failed["FailedRecordCount"] == 5
        codes = {r["ErrorCode"] for r in failed["Records"]}
        assert codes == {"ProvisionedThroughputExceededException"}
        with pytest.raises(kinesis.exceptions.ProvisionedThroughputExceededException):
            for _ in range(1000):  # the last few bytes of the budget take single lines
                kinesis.put_record(StreamName="full", Data=line, PartitionKey="k")
        batch = firehose.put_record_batch(DeliveryStreamName="full", Records=[{"Data": line}] * 2)
        assert batch["FailedPutCount"] == 2
        assert {r["ErrorCode"] for r in batch["RequestResponses"]} == {
            "ServiceUnavailableException"
        }
    finally:
        srv.stop(signal.SIGKILL)


def test_split_lines() -> None:
    assert split_lines(b"a\r\nb\n\n  \nc") == [b"a", b"b", b"c"]
    assert split_lines(b"") == [] and split_lines(b"\n") == []
    assert split_lines(b"one") == [b"one"]
