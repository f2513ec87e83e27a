"""Access-log parsing: presets, custom Apache/nginx format strings, and every tricky case."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from loglake.errors import FormatError
from loglake.formats import detect_format, get_format
from loglake.formats.access import AccessFormat
from loglake.formats.lines import line_batch

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"


def parse(fmt: str, data: bytes):  # type: ignore[no-untyped-def]
    batch = line_batch(data, 1, "test")
    result = get_format(fmt).parse(batch)
    assert result.parsed.height + result.rejected.height == len(batch)
    return result


def one(fmt: str, line: str | bytes) -> dict[str, object]:
    data = line.encode() if isinstance(line, str) else line
    result = parse(fmt, data)
    assert result.rejected.height == 0, result.rejected.to_dicts()
    assert result.parsed.height == 1
    return result.parsed.row(0, named=True)


def test_combined_line_fields() -> None:
    row = one(
        "combined",
        f'83.149.9.216 - frank [17/May/2015:10:05:03 +0000] "GET /a/b.png?x=1&y=2 HTTP/1.1" 200 '
        f'203023 "http://ref.example/" "{UA}"',
    )
    assert row["ts"] == datetime(2015, 5, 17, 10, 5, 3, tzinfo=UTC)
    assert row["client"] == "83.149.9.216"
    assert row["ident"] is None and row["user"] == "frank"
    assert (row["method"], row["path"], row["query"], row["protocol"]) == (
        "GET",
        "/a/b.png",
        "x=1&y=2",
        "HTTP/1.1",
    )
    assert row["status"] == 200 and row["bytes"] == 203023
    assert row["referrer"] == "http://ref.example/" and row["user_agent"] == UA
    assert row["line"] == 1


def test_dash_size_is_null() -> None:
    row = one("common", '1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 304 -')
    assert row["bytes"] is None and row["status"] == 304


def test_request_without_protocol() -> None:
    row = one("common", '1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET /old/page" 200 12')
    assert (row["method"], row["path"], row["protocol"]) == ("GET", "/old/page", None)


def test_empty_request() -> None:
    row = one("combined", '1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "" 400 0 "-" "-"')
    assert row["method"] is None and row["path"] is None and row["status"] == 400
    assert row["user_agent"] is None and row["referrer"] is None


def test_garbage_request_is_kept_in_path() -> None:
    row = one("common", r'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "\x16\x03\x01\x00" 400 226')
    assert row["method"] is None and row["path"] == r"\x16\x03\x01\x00"


def test_escaped_quotes_in_user_agent() -> None:
    line = (
        r'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" '
        r'"Mozilla \"quoted\" agent\\x"'
    )
    row = one("combined", line)
    assert row["user_agent"] == 'Mozilla "quoted" agent\\x'


def test_ipv6_and_hostname_clients() -> None:
    data = (
        b'2001:db8::1a - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "a"\n'
        b'crawl-66-249-66-1.googlebot.com - - [01/Jan/2024:00:00:01 +0000] "GET / HTTP/1.1" 200 5 "-" "b"\n'
    )
    result = parse("combined", data)
    assert result.parsed.get_column("client").to_list() == [
        "2001:db8::1a",
        "crawl-66-249-66-1.googlebot.com",
    ]


def test_offset_applied_to_utc() -> None:
    row = one("common", '1.2.3.4 - - [10/Oct/2000:13:55:36 +0330] "GET / HTTP/1.0" 200 1')
    assert row["ts"] == datetime(2000, 10, 10, 10, 25, 36, tzinfo=UTC)
    row = one("common", '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 1')
    local = datetime(2000, 10, 10, 13, 55, 36, tzinfo=timezone(timedelta(hours=-7)))
    assert row["ts"] == local


def test_missing_final_newline_and_crlf() -> None:
    data = (
        b'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET /a HTTP/1.1" 200 1\r\n'
        b'1.2.3.4 - - [01/Jan/2024:00:00:01 +0000] "GET /b HTTP/1.1" 200 2'
    )
    result = parse("common", data)
    assert result.parsed.get_column("path").to_list() == ["/a", "/b"]
    assert result.parsed.get_column("bytes").to_list() == [1, 2]


def test_glued_records_are_rejected_not_misparsed() -> None:
    a = f'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET /a HTTP/1.1" 200 1 "-" "{UA}"'
    b = f'5.6.7.8 - - [01/Jan/2024:00:00:01 +0000] "GET /b HTTP/1.1" 404 2 "-" "{UA}"'
    result = parse("combined", f"{a}\n{a}{b}\n{b}\n".encode())
    assert result.parsed.get_column("line").to_list() == [1, 3]
    rej = result.rejected.row(0, named=True)
    assert rej["line"] == 2 and rej["raw"] == (a + b).encode()
    assert "does not match" in rej["reason"]


def test_non_utf8_path_parses_and_raw_is_kept_on_reject(shared_data: Path) -> None:
    data = (shared_data / "access_big5_bytes.log").read_bytes()
    row = parse("common_complete", data).parsed.row(0, named=True)
    assert row["vhost"] == "www.example.com" and row["user"] == "theuser"
    assert row["path"].startswith("/\\xac\\xb0\\xa8") and row["status"] == 301
    assert row["ts"] == datetime(2012, 2, 10, 21, 42, 7, tzinfo=UTC)
    bad = b'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET /\xff\xfe HTTP/1.1" 200\n'
    rej = parse("common", bad).rejected.row(0, named=True)
    assert rej["raw"] == bad.rstrip(b"\n")


def test_bad_lines_sample(shared_data: Path) -> None:
    result = parse("combined", (shared_data / "access_bad_lines.log").read_bytes())
    assert result.parsed.get_column("line").to_list() == [1, 3]
    assert result.rejected.get_column("line").to_list() == [2]


def test_invalid_timestamp_and_empty_lines_rejected() -> None:
    data = (
        b'1.2.3.4 - - [31/Feb/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1\n\n'
        b'1.2.3.4 - - [01/Mar/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1\n'
    )
    result = parse("common", data)
    reasons = dict(
        zip(
            result.rejected.get_column("line").to_list(),
            result.rejected.get_column("reason").to_list(),
            strict=True,
        )
    )
    assert reasons == {1: "invalid timestamp", 2: "empty line"}
    assert result.parsed.get_column("line").to_list() == [3]


def test_sample_10k_matches_file(shared_data: Path) -> None:
    data = (shared_data / "apache_combined_10k.log").read_bytes()
    result = parse("combined", data)
    assert result.parsed.height + result.rejected.height == 10_000
    # An independent reading of the same file with Python's re, line by line.
    rx = re.compile(r'^\S+ \S+ \S+ \[([^\]]+)\] ".*?" (\d{3}) (\d+|-) ')
    expected_ts, expected_status, expected_bytes = [], [], []
    for line in data.decode().splitlines():
        m = rx.match(line)
        assert m
        expected_ts.append(datetime.strptime(m.group(1), "%d/%b/%Y:%H:%M:%S %z"))
        expected_status.append(int(m.group(2)))
        expected_bytes.append(None if m.group(3) == "-" else int(m.group(3)))
    frame = result.parsed.sort("line")
    assert result.rejected.height == 0
    assert frame.get_column("ts").to_list() == expected_ts
    assert frame.get_column("status").to_list() == expected_status
    assert frame.get_column("bytes").to_list() == expected_bytes
    assert frame.get_column("bytes").null_count() == 669
    # The one user agent without its closing quote is parsed too.
    assert frame.filter(pl.col("user_agent").str.ends_with('"')).height == 0


def test_vhost_combined_and_nginx_main() -> None:
    row = one(
        "vhost_combined",
        f'www.example.org:443 10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/2.0" '
        f'200 512 "-" "{UA}"',
    )
    assert (row["vhost"], row["port"], row["bytes"], row["protocol"]) == (
        "www.example.org",
        443,
        512,
        "HTTP/2.0",
    )
    row = one(
        "nginx_main",
        f'10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "{UA}" '
        f'"203.0.113.7, 10.0.0.2"',
    )
    assert row["forwarded_for"] == "203.0.113.7, 10.0.0.2" and row["ident"] is None


def test_custom_apache_logformat() -> None:
    fmt = '%a %{X-Request-Id}i %t "%m %U%q %H" %>s %B %D "%{User-Agent}i"'
    line = '10.1.1.1 abc-123 [01/Jan/2024:00:00:00 +0000] "POST /api/v1?x=2 HTTP/1.1" 201 17 2500 "curl/8.0"'
    row = one(fmt, line)
    assert row["client"] == "10.1.1.1" and row["req_x_request_id"] == "abc-123"
    assert (row["method"], row["path"], row["query"], row["protocol"]) == (
        "POST",
        "/api/v1",
        "x=2",
        "HTTP/1.1",
    )
    assert row["duration_ms"] == pytest.approx(2.5) and row["bytes"] == 17


def test_custom_nginx_log_format() -> None:
    fmt = (
        '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent" $request_time $upstream_response_time $host'
    )
    line = (
        '192.0.2.9 - alice [01/Jan/2024:10:00:00 +0100] "GET /x HTTP/1.1" 502 0 "-" "curl/8" '
        "0.250 0.249 shop.example"
    )
    row = one(fmt, line)
    assert row["ts"] == datetime(2024, 1, 1, 9, 0, 0, tzinfo=UTC)
    assert row["user"] == "alice" and row["status"] == 502
    assert row["duration_ms"] == pytest.approx(250.0)
    assert row["upstream_response_time"] == "0.249" and row["vhost"] == "shop.example"


def test_nginx_iso_time() -> None:
    row = one(
        '$remote_addr [$time_iso8601] "$request" $status',
        '192.0.2.9 [2024-01-01T10:00:00+02:00] "GET / HTTP/1.1" 200',
    )
    assert row["ts"] == datetime(2024, 1, 1, 8, 0, 0, tzinfo=UTC)


def test_format_errors_say_how_to_fix() -> None:
    with pytest.raises(FormatError, match="no time"):
        AccessFormat("x", '%h "%r" %>s')
    with pytest.raises(FormatError, match="unknown format"):
        get_format("nonsense")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1', "common"),
        (f'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "{UA}"', "combined"),
        (
            f'h.example:80 1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "{UA}"',
            "vhost_combined",
        ),
        (
            f'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "{UA}" "-"',
            "nginx_main",
        ),
        (
            "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
            "rfc5424",
        ),
        ("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown", "rfc3164"),
        ('{"ts": "2024-01-01T00:00:00Z", "msg": "hi"}', "json"),
    ],
)
def test_auto_detect(line: str, expected: str) -> None:
    fmt = detect_format(pl.Series([line] * 3))
    assert fmt is not None and fmt.name == expected


def test_auto_detect_unknown_returns_none() -> None:
    assert detect_format(pl.Series(["hello world", "nothing to see"])) is None
