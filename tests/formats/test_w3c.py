"""W3C extended logs: CloudFront standard logs and IIS, their #Fields directives deciding the
columns (sample sources in tests/data/formats/SOURCES.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from loglake.formats import detect_format, get_format
from loglake.formats.base import ParseResult
from loglake.formats.lines import line_batch

DATA = Path(__file__).resolve().parents[1] / "data" / "formats"
CHROME = (
    "Mozilla/5.0%20(Windows%20NT%2010.0;%20Win64;%20x64)%20AppleWebKit/537.36%20(KHTML,%20like"
    "%20Gecko)%20Chrome/78.0.3904.108%20Safari/537.36"
)
DIRECTIVE = "W3C directive line: not a record"


def parse_lines(data: bytes, fmt: str, first_line: int = 1) -> ParseResult:
    return get_format(fmt).parse(line_batch(data, first_line, "x"))


def rows(result: ParseResult) -> list[dict[str, Any]]:
    return list(result.parsed.iter_rows(named=True))


def test_cloudfront_columns_are_athenas() -> None:
    # Athena's CREATE TABLE cloudfront_standard_logs ("Create a table for CloudFront standard
    # logs"), FLOAT being a 32-bit float.
    types = {"STRING": pl.String(), "INT": pl.Int32(), "BIGINT": pl.Int64()}
    types |= {"FLOAT": pl.Float32(), "DATE": pl.Date()}
    spec = (
        "date DATE, time STRING, x_edge_location STRING, sc_bytes BIGINT, c_ip STRING, "
        "cs_method STRING, cs_host STRING, cs_uri_stem STRING, sc_status INT, cs_referrer STRING, "
        "cs_user_agent STRING, cs_uri_query STRING, cs_cookie STRING, x_edge_result_type STRING, "
        "x_edge_request_id STRING, x_host_header STRING, cs_protocol STRING, cs_bytes BIGINT, "
        "time_taken FLOAT, x_forwarded_for STRING, ssl_protocol STRING, ssl_cipher STRING, "
        "x_edge_response_result_type STRING, cs_protocol_version STRING, fle_status STRING, "
        "fle_encrypted_fields INT, c_port INT, time_to_first_byte FLOAT, "
        "x_edge_detailed_result_type STRING, sc_content_type STRING, sc_content_len BIGINT, "
        "sc_range_start BIGINT, sc_range_end BIGINT"
    )
    expected = {n: types[t] for n, t in (item.split() for item in spec.split(", "))}
    schema = parse_lines((DATA / "cloudfront.log").read_bytes(), "cloudfront").parsed.schema
    assert dict(schema) == {"ts": pl.Datetime("us", "UTC"), **expected, "line": pl.Int64()}


def test_cloudfront_example_column_by_column() -> None:
    result = parse_lines((DATA / "cloudfront.log").read_bytes(), "cloudfront")
    assert result.rejected.select("line", "reason").rows() == [(1, DIRECTIVE), (2, DIRECTIVE)]
    assert result.rejected.get_column("raw").to_list()[0] == b"#Version: 1.0"
    got = rows(result)
    assert len(got) == 3
    first = got[0]
    assert {k: v for k, v in first.items() if k not in ("time_taken", "time_to_first_byte")} == {
        "ts": datetime(2019, 12, 4, 21, 2, 31, tzinfo=UTC),
        "date": date(2019, 12, 4),
        "time": "21:02:31",
        "x_edge_location": "LAX1",
        "sc_bytes": 392,
        "c_ip": "192.0.2.100",
        "cs_method": "GET",
        "cs_host": "d111111abcdef8.cloudfront.net",
        "cs_uri_stem": "/index.html",
        "sc_status": 200,
        "cs_referrer": "-",
        "cs_user_agent": CHROME,
        "cs_uri_query": "-",
        "cs_cookie": "-",
        "x_edge_result_type": "Hit",
        "x_edge_request_id": "SOX4xwn4XV6Q4rgb7XiVGOHms_BGlTAC4KyHmureZmBNrjGdRLiNIQ==",
        "x_host_header": "d111111abcdef8.cloudfront.net",
        "cs_protocol": "https",
        "cs_bytes": 23,
        "x_forwarded_for": "-",
        "ssl_protocol": "TLSv1.2",
        "ssl_cipher": "ECDHE-RSA-AES128-GCM-SHA256",
        "x_edge_response_result_type": "Hit",
        "cs_protocol_version": "HTTP/2.0",
        "fle_status": "-",
        "fle_encrypted_fields": None,
        "c_port": 11040,
        "x_edge_detailed_result_type": "Hit",
        "sc_content_type": "text/html",
        "sc_content_len": 78,
        "sc_range_start": None,
        "sc_range_end": None,
        "line": 3,
    }
    assert first["time_taken"] == pytest.approx(0.001)
    assert first["time_to_first_byte"] == pytest.approx(0.001)
    # The documentation's third record ends with a tab: the same 33 values.
    assert got[1]["x_edge_request_id"] == "f37nTMVvnKvV2ZSvEsivup_c2kZ7VXzYdjC-GUQZ5qNs-89BlWazbw=="
    assert got[1]["sc_range_end"] is None
    error = got[2]
    assert (error["x_edge_location"], error["sc_status"], error["x_edge_result_type"]) == (
        "SEA19-C2",
        502,
        "Error",
    )
    assert (error["cs_user_agent"], error["x_host_header"], error["cs_protocol"]) == (
        "curl/7.55.1",
        "www.example.com",
        "http",
    )
    assert (error["x_edge_detailed_result_type"], error["c_port"], error["sc_bytes"]) == (
        "OriginDnsError",
        12644,
        900,
    )
    assert error["ts"] == datetime(2019, 12, 13, 22, 37, 2, tzinfo=UTC)


def test_iis_fields_directives_decide_the_columns() -> None:
    result = parse_lines((DATA / "iis.log").read_bytes(), "w3c")
    directives = [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert result.rejected.select("line", "reason").rows() == [(n, DIRECTIVE) for n in directives]
    internet, intranet = rows(result)
    assert internet == {
        "ts": datetime(2002, 5, 24, 20, 18, 1, tzinfo=UTC),
        "date": date(2002, 5, 24),
        "time": "20:18:01",
        "c_ip": "172.224.24.114",
        "cs_username": None,
        "s_ip": "206.73.118.24",
        "s_port": 80,
        "cs_method": "GET",
        "cs_uri_stem": "/Default.htm",
        "cs_uri_query": None,
        "sc_status": 200,
        "sc_bytes": 7930,
        "cs_bytes": 248,
        "time_taken": 31.0,
        "cs_user_agent": "Mozilla/4.0+(compatible;+MSIE+5.01;+Windows+2000+Server)",
        "cs_referrer": "http://64.224.24.114/",
        "line": 5,
    }
    # The second #Fields has fewer fields: those it lacks are null.
    assert intranet["ts"] == datetime(2002, 5, 2, 17, 42, 15, tzinfo=UTC)
    assert (intranet["c_ip"], intranet["cs_uri_stem"], intranet["sc_status"]) == (
        "172.22.255.255",
        "/images/picture.jpg",
        200,
    )
    assert intranet["cs_user_agent"] == "Mozilla/4.0+(compatible;MSIE+5.5;+Windows+2000+Server)"
    assert (intranet["sc_bytes"], intranet["cs_referrer"], intranet["line"]) == (None, None, 11)


def test_fields_carry_over_to_the_next_batch_of_the_input() -> None:
    fmt = get_format("w3c")
    lines = (DATA / "iis.log").read_bytes().splitlines(keepends=True)
    first = fmt.parse(line_batch(b"".join(lines[:4]), 1, "x"))
    assert first.parsed.height == 0 and first.rejected.height == 4
    second = fmt.parse(line_batch(lines[4], 5, "x"))
    assert second.rejected.height == 0
    assert second.parsed.select("line", "c_ip", "sc_bytes").rows() == [(5, "172.224.24.114", 7930)]


def test_lines_without_a_directive_use_the_default_fields() -> None:
    # CloudFront files always start with their directives; an input resumed after them, or
    # cut in front of them, still parses with the documented 33 fields.
    data = (DATA / "cloudfront.log").read_bytes().splitlines(keepends=True)[2]
    got = parse_lines(data, "cloudfront", first_line=3)
    assert got.rejected.height == 0 and got.parsed.get_column("sc_content_len").to_list() == [78]
    short = parse_lines(b"2019-12-04\t21:02:31\tLAX1\n", "cloudfront")
    assert short.rejected.get_column("reason").to_list() == [
        "no #Fields directive before this line, and its 3 values are not the 33 of the default "
        "CloudFront standard log fields"
    ]


def test_bad_records_are_rejected_with_their_reason() -> None:
    data = (
        b"#Fields: date time c-ip sc-status\n"
        b"2002-05-24 20:18:01 172.224.24.114 200\n"
        b"2002-05-24 20:18:01 172.224.24.114\n"
        b"2002-02-30 20:18:01 172.224.24.114 200\n"
        b"\n"
        b"#Fields: time c-ip\n"
        b"20:18:01 10.0.0.1\n"
    )
    result = parse_lines(data, "w3c")
    assert result.parsed.select("line", "sc_status").rows() == [(2, 200)]
    assert result.rejected.select("line", "reason").rows() == [
        (1, DIRECTIVE),
        (3, "has 3 values where its #Fields directive names 4"),
        (4, "invalid timestamp"),
        (5, "empty line"),
        (6, DIRECTIVE),
        (7, "no date: the #Fields have none and no #Date directive came before"),
    ]
    assert result.parsed.height + result.rejected.height == 7


def test_each_file_is_detected_as_its_format() -> None:
    for name, fmt, table in (
        ("cloudfront.log", "cloudfront", "logs.cloudfront"),
        ("iis.log", "w3c", "logs.w3c"),
    ):
        found = detect_format(line_batch((DATA / name).read_bytes(), 1, name).text)
        assert found is not None and (found.name, found.default_table) == (fmt, table)
    # Shell-style comments alone are not W3C.
    assert get_format("w3c").match_rate(pl.Series(["# a comment", "echo hi"])) == 0.0


def test_fields_do_not_carry_over_to_another_input() -> None:
    fmt = get_format("w3c")
    fmt.parse(line_batch(b"#Fields: date time c-ip\n", 1, "a.log"))
    record = b"2002-05-24 20:18:01 172.224.24.114\n"
    same = fmt.parse(line_batch(record, 2, "a.log"))
    assert same.parsed.select("c_ip").rows() == [("172.224.24.114",)]
    other = fmt.parse(line_batch(record, 3, "b.log"))  # no #Fields of its own: IIS's 15 fields
    assert (other.parsed.height, other.rejected.height) == (0, 1)


def test_concatenated_files_repeat_their_directives() -> None:
    # `cat *.log` of a day of CloudFront files: a directive pair before every file's records.
    data = (DATA / "cloudfront.log").read_bytes() * 500
    result = parse_lines(data, "cloudfront")
    assert (result.parsed.height, result.rejected.height) == (1500, 1000)
    lines = result.parsed.get_column("line")
    assert lines.is_sorted() and lines.head(4).to_list() == [3, 4, 5, 8]
    assert set(result.rejected.get_column("reason").to_list()) == {DIRECTIVE}


def test_records_without_a_date_field_take_the_date_directives() -> None:
    # Microsoft's IIS 6.0 FTP log example (as quoted by the w3c-logs test suite): time only.
    data = (
        b"#Software: Microsoft Internet Information Services 6.0\n"
        b"#Version: 1.0\n"
        b"#Date: 2002-06-04 16:40:23\n"
        b"#Fields: time c-ip cs-method cs-uri-stem sc-status \n"
        b"16:40:23 10.152.10.200 [6994]USER anonymous 331\n"
        b"16:40:25 10.152.10.200 [6994]PASS anonymous@example.net 530\n"
    )
    fmt = get_format("w3c")
    result = fmt.parse(line_batch(data, 1, "ftp.log"))
    assert result.rejected.get_column("line").to_list() == [1, 2, 3, 4]
    assert result.parsed.select("ts", "date", "c_ip", "cs_method", "sc_status").rows() == [
        (
            datetime(2002, 6, 4, 16, 40, 23, tzinfo=UTC),
            date(2002, 6, 4),
            "10.152.10.200",
            "[6994]USER",
            331,
        ),
        (
            datetime(2002, 6, 4, 16, 40, 25, tzinfo=UTC),
            date(2002, 6, 4),
            "10.152.10.200",
            "[6994]PASS",
            530,
        ),
    ]
    # The directive's date carries over to the next chunk of the same input.
    more = fmt.parse(line_batch(b"16:41:00 10.152.10.200 [6994]QUIT - 221\n", 7, "ftp.log"))
    assert more.parsed.select("ts").rows() == [(datetime(2002, 6, 4, 16, 41, tzinfo=UTC),)]


def test_iis_7_sample_with_status_fields() -> None:
    # A vendor's guide to "Interpreting IIS log files" (IIS 7.5 W3C sample, as published).
    data = (
        b"#Software: Microsoft Internet Information Services 7.5\n"
        b"#Version: 1.0\n"
        b"#Date: 2013-06-24 10:56:45\n"
        b"#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip "
        b"cs(User-Agent) sc-status sc-substatus sc-win32-status time-taken\n"
        b"2013-06-24 10:56:45 192.168.0.1 POST /xas/ - 80 - 222.222.222.222 "
        b"Mozilla/5.0+(Windows+NT+6.1;+WOW64)+AppleWebKit/537.36+(KHTML,+like+Gecko)"
        b"+Chrome/27.0.1453.110+Safari/537.36 404 0 2 471\n"
    )
    result = parse_lines(data, "w3c")
    assert result.rejected.height == 4
    row = result.parsed.row(0, named=True)
    assert row["ts"] == datetime(2013, 6, 24, 10, 56, 45, tzinfo=UTC)
    assert (row["s_ip"], row["cs_method"], row["cs_uri_stem"], row["cs_uri_query"]) == (
        "192.168.0.1",
        "POST",
        "/xas/",
        None,
    )
    assert (row["s_port"], row["cs_username"], row["c_ip"]) == (80, None, "222.222.222.222")
    assert row["cs_user_agent"].startswith("Mozilla/5.0+(Windows+NT+6.1;+WOW64)")
    assert (row["sc_status"], row["sc_substatus"], row["sc_win32_status"]) == (404, 0, 2)
    assert row["time_taken"] == 471.0
    schema = result.parsed.schema
    assert (schema["sc_status"], schema["sc_substatus"], schema["sc_win32_status"]) == (
        pl.Int32(),
        pl.Int32(),
        pl.Int64(),
    )


def test_a_byte_order_mark_before_the_first_directive() -> None:
    data = "\ufeff".encode() + (DATA / "iis.log").read_bytes()
    result = parse_lines(data, "w3c")
    assert result.parsed.height == 2
    assert result.rejected.get_column("reason").to_list()[0] == DIRECTIVE
    assert result.rejected.get_column("raw").to_list()[0].startswith(b"\xef\xbb\xbf#Software")
