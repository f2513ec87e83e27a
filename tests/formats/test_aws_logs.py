"""AWS ALB, CLB and S3 server access logs: the examples of AWS's documentation (sources in
tests/data/formats/SOURCES.md), their values column by column, Athena's column names and types."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from loglake.formats import detect_format, get_format
from loglake.formats.base import ParseResult
from loglake.formats.lines import line_batch

DATA = Path(__file__).resolve().parents[1] / "data" / "formats"
ARN = "arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067"
OWNER = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"


def parse_file(name: str, fmt: str) -> ParseResult:
    return get_format(fmt).parse(line_batch((DATA / name).read_bytes(), 1, name))


def rows(result: ParseResult) -> list[dict[str, Any]]:
    return list(result.parsed.iter_rows(named=True))


def athena_schema(spec: str) -> dict[str, pl.DataType]:
    """``name type, ...`` as in Athena's CREATE TABLE, as Polars types."""
    types = {
        "string": pl.String(),
        "int": pl.Int32(),
        "bigint": pl.Int64(),
        "double": pl.Float64(),
    }
    out: dict[str, pl.DataType] = {}
    for item in spec.split(","):
        name, kind = item.split()
        out[name] = types[kind]
    return out


def test_alb_columns_are_athenas() -> None:
    # The CREATE TABLE alb_access_logs of Athena's documentation ("Create the table for ALB
    # access logs"), every column with its type.
    expected = athena_schema(
        "type string, time string, elb string, client_ip string, client_port int, "
        "target_ip string, target_port int, request_processing_time double, "
        "target_processing_time double, response_processing_time double, elb_status_code int, "
        "target_status_code string, received_bytes bigint, sent_bytes bigint, "
        "request_verb string, request_url string, request_proto string, user_agent string, "
        "ssl_cipher string, ssl_protocol string, target_group_arn string, trace_id string, "
        "domain_name string, chosen_cert_arn string, matched_rule_priority string, "
        "request_creation_time string, actions_executed string, redirect_url string, "
        "lambda_error_reason string, target_port_list string, target_status_code_list string, "
        "classification string, classification_reason string, conn_trace_id string"
    )
    schema = parse_file("alb.log", "alb").parsed.schema
    assert schema["ts"] == pl.Datetime("us", "UTC")
    assert {k: v for k, v in schema.items() if k in expected} == expected
    assert list(schema)[1 : len(expected) + 1] == list(expected)


def test_alb_examples_column_by_column() -> None:
    result = parse_file("alb.log", "alb")
    assert result.rejected.height == 0
    got = rows(result)
    assert got[0] == {
        "ts": datetime(2018, 7, 2, 22, 23, 0, 186641, tzinfo=UTC),
        "type": "http",
        "time": "2018-07-02T22:23:00.186641Z",
        "elb": "app/my-loadbalancer/50dc6c495c0c9188",
        "client_ip": "192.168.131.39",
        "client_port": 2817,
        "target_ip": "10.0.0.1",
        "target_port": 80,
        "request_processing_time": 0.0,
        "target_processing_time": 0.001,
        "response_processing_time": 0.0,
        "elb_status_code": 200,
        "target_status_code": "200",
        "received_bytes": 34,
        "sent_bytes": 366,
        "request_verb": "GET",
        "request_url": "http://www.example.com:80/",
        "request_proto": "HTTP/1.1",
        "user_agent": "curl/7.46.0",
        "ssl_cipher": "-",
        "ssl_protocol": "-",
        "target_group_arn": ARN,
        "trace_id": "Root=1-58337262-36d228ad5d99923122bbe354",
        "domain_name": "-",
        "chosen_cert_arn": "-",
        "matched_rule_priority": "0",
        "request_creation_time": "2018-07-02T22:22:48.364000Z",
        "actions_executed": "forward",
        "redirect_url": "-",
        "lambda_error_reason": "-",
        "target_port_list": "10.0.0.1:80",
        "target_status_code_list": "200",
        "classification": "-",
        "classification_reason": "-",
        "conn_trace_id": None,
        "extra_fields": None,
        "line": 1,
    }
    https, h2, ws, lam = got[1:]
    assert (https["type"], https["ssl_cipher"], https["ssl_protocol"]) == (
        "https",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLSv1.2",
    )
    assert (https["request_processing_time"], https["received_bytes"], https["sent_bytes"]) == (
        0.086,
        0,
        57,
    )
    assert (https["domain_name"], https["actions_executed"], https["matched_rule_priority"]) == (
        "www.example.com",
        "authenticate,forward",
        "1",
    )
    assert https["chosen_cert_arn"] == (
        "arn:aws:acm:us-east-2:123456789012:certificate/12345678-1234-1234-1234-123456789012"
    )
    assert (h2["type"], h2["request_proto"], h2["redirect_url"], h2["client_port"]) == (
        "h2",
        "HTTP/2.0",
        "https://example.com:80/",
        48160,
    )
    assert (ws["elb_status_code"], ws["user_agent"], ws["target_port"]) == (101, "-", 8010)
    # The failed Lambda request: no target (`-`), no target status.
    assert (lam["target_ip"], lam["target_port"], lam["target_status_code"]) == (None, None, "-")
    assert (lam["elb_status_code"], lam["lambda_error_reason"]) == (502, "LambdaInvalidResponse")
    assert (lam["target_port_list"], lam["target_status_code_list"]) == ("-", "-")


def test_alb_current_fields_and_later_ones() -> None:
    # A line of the current ELB documentation's shape: quoted target lists, classification, the
    # connection trace ID; then a field AWS may add later, kept in `extra_fields`.
    line = (
        "https 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 "
        "192.168.131.39:2817 10.0.0.1:80 0.086 0.048 0.037 200 200 0 57 "
        '"GET https://www.example.com:443/ HTTP/1.1" "curl/7.46.0" ECDHE-RSA-AES128-GCM-SHA256 '
        f'TLSv1.2 {ARN} "Root=1-58337281-1d84f3d73c47ec4e58577259" "www.example.com" '
        '"arn:aws:acm:us-east-2:123456789012:certificate/12345678-1234-1234-1234-123456789012" '
        '1 2018-07-02T22:22:48.364000Z "authenticate,forward" "-" "-" "10.0.0.1:80" "200" "-" "-" '
        "TID_1234abcd5678ef90"
    )
    got = get_format("alb").parse(line_batch(f"{line}\n{line} future-field\n".encode(), 1, "x"))
    first, second = rows(got)
    assert (first["target_port_list"], first["target_status_code_list"]) == ("10.0.0.1:80", "200")
    assert (first["conn_trace_id"], first["extra_fields"]) == ("TID_1234abcd5678ef90", None)
    assert (second["conn_trace_id"], second["extra_fields"]) == (
        "TID_1234abcd5678ef90",
        "future-field",
    )


def test_clb_examples_column_by_column() -> None:
    expected = athena_schema(
        "timestamp string, elb_name string, request_ip string, request_port int, "
        "backend_ip string, backend_port int, request_processing_time double, "
        "backend_processing_time double, client_response_time double, elb_response_code string, "
        "backend_response_code string, received_bytes bigint, sent_bytes bigint, "
        "request_verb string, url string, protocol string, user_agent string, ssl_cipher string, "
        "ssl_protocol string"
    )
    result = parse_file("clb.log", "clb")
    assert result.rejected.height == 0
    assert {k: v for k, v in result.parsed.schema.items() if k in expected} == expected
    got = rows(result)
    assert got[0] == {
        "ts": datetime(2015, 5, 13, 23, 39, 43, 945958, tzinfo=UTC),
        "timestamp": "2015-05-13T23:39:43.945958Z",
        "elb_name": "my-loadbalancer",
        "request_ip": "192.168.131.39",
        "request_port": 2817,
        "backend_ip": "10.0.0.1",
        "backend_port": 80,
        "request_processing_time": 0.000073,
        "backend_processing_time": 0.001048,
        "client_response_time": 0.000057,
        "elb_response_code": "200",
        "backend_response_code": "200",
        "received_bytes": 0,
        "sent_bytes": 29,
        "request_verb": "GET",
        "url": "http://www.example.com:80/",
        "protocol": "HTTP/1.1",
        "user_agent": "curl/7.38.0",
        "ssl_cipher": "-",
        "ssl_protocol": "-",
        "extra_fields": None,
        "line": 1,
    }
    assert (got[1]["ssl_cipher"], got[1]["ssl_protocol"]) == ("DHE-RSA-AES128-SHA", "TLSv1.2")
    # TCP and SSL listeners: no status codes, the request logged as "- - - ".
    for tcp in got[2:]:
        assert (tcp["elb_response_code"], tcp["backend_response_code"]) == ("-", "-")
        assert (tcp["request_verb"], tcp["url"], tcp["protocol"], tcp["user_agent"]) == (
            "-",
            "-",
            "-",
            "-",
        )
    assert (got[2]["received_bytes"], got[2]["sent_bytes"]) == (82, 305)
    assert got[3]["ssl_cipher"] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_s3_access_examples_column_by_column() -> None:
    expected = athena_schema(
        "bucketowner string, bucket_name string, requestdatetime string, remoteip string, "
        "requester string, requestid string, operation string, key string, request_uri string, "
        "httpstatus string, errorcode string, bytessent bigint, objectsize bigint, "
        "totaltime string, turnaroundtime string, referrer string, useragent string, "
        "versionid string, hostid string, sigv string, ciphersuite string, authtype string, "
        "endpoint string, tlsversion string, accesspointarn string, aclrequired string"
    )
    result = parse_file("s3_access.log", "s3_access")
    assert result.rejected.height == 0
    assert {k: v for k, v in result.parsed.schema.items() if k in expected} == expected
    got = rows(result)
    assert got[0] == {
        "ts": datetime(2019, 2, 6, 0, 0, 38, tzinfo=UTC),
        "bucketowner": OWNER,
        "bucket_name": "awsexamplebucket1",
        "requestdatetime": "06/Feb/2019:00:00:38 +0000",
        "remoteip": "192.0.2.3",
        "requester": OWNER,
        "requestid": "3E57427F3EXAMPLE",
        "operation": "REST.GET.VERSIONING",
        "key": "-",
        "request_uri": "GET /awsexamplebucket1?versioning HTTP/1.1",
        "httpstatus": "200",
        "errorcode": "-",
        "bytessent": 113,
        "objectsize": None,
        "totaltime": "7",
        "turnaroundtime": "-",
        "referrer": "-",
        "useragent": "S3Console/0.4",
        "versionid": "-",
        "hostid": "s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234=",
        "sigv": "SigV2",
        "ciphersuite": "ECDHE-RSA-AES128-GCM-SHA256",
        "authtype": "AuthHeader",
        "endpoint": "awsexamplebucket1.s3.us-west-1.amazonaws.com",
        "tlsversion": "TLSV1.1",
        "accesspointarn": None,
        "aclrequired": None,
        "extra_fields": None,
        "line": 1,
    }
    assert (got[1]["httpstatus"], got[1]["errorcode"], got[1]["bytessent"]) == (
        "404",
        "NoSuchBucketPolicy",
        297,
    )
    put = got[2]
    assert (put["operation"], put["key"], put["bytessent"], put["objectsize"]) == (
        "REST.PUT.OBJECT",
        "s3-dg.pdf",
        None,
        4406583,
    )
    assert (put["totaltime"], put["turnaroundtime"], put["sigv"]) == ("41754", "28", "SigV4")
    assert put["ts"] == datetime(2019, 2, 6, 0, 1, 57, tzinfo=UTC)
    current = got[3]
    assert (current["accesspointarn"], current["aclrequired"], current["extra_fields"]) == (
        "arn:aws-cn:s3:us-west-1:123456789012:accesspoint/example-AP",
        "Yes",
        "us-east-1",
    )


def test_each_file_is_detected_as_its_format() -> None:
    for name, fmt, table in (
        ("alb.log", "alb", "logs.alb"),
        ("clb.log", "clb", "logs.clb"),
        ("s3_access.log", "s3_access", "logs.s3_access"),
    ):
        found = detect_format(line_batch((DATA / name).read_bytes(), 1, name).text)
        assert found is not None and (found.name, found.default_table) == (fmt, table)
    assert get_format("elb").name == "clb"


def test_lines_that_do_not_fit_are_rejected() -> None:
    data = (DATA / "clb.log").read_bytes().splitlines()[0] + b"\nnot a load balancer line\n\n"
    data += b"2015-02-30T23:39:43.945958Z " + data.split(b" ", 1)[1].split(b"\n")[0] + b"\n"
    result = get_format("clb").parse(line_batch(data, 1, "x"))
    assert result.parsed.get_column("line").to_list() == [1]
    assert result.rejected.select("line", "reason").rows() == [
        (2, "does not match the AWS Classic Load Balancer access log format"),
        (3, "empty line"),
        (4, "invalid timestamp"),
    ]
