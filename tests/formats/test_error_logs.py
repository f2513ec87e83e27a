"""Apache and nginx error logs: real sample lines (tests/data/formats/SOURCES.md) and their values."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from loglake.errors import FormatError
from loglake.formats import detect_format, get_format
from loglake.formats.base import ParseResult
from loglake.formats.lines import line_batch

DATA = Path(__file__).resolve().parents[1] / "data" / "formats"
COLUMNS = [
    "ts",
    "level",
    "module",
    "pid",
    "tid",
    "connection",
    "client",
    "client_port",
    "server",
    "request",
    "host",
    "upstream",
    "referrer",
    "error_code",
    "detail",
    "message",
    "line",
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc,arg-type]


def parse_file(name: str, fmt: str, **options: object) -> ParseResult:
    return get_format(fmt, None, **options).parse(line_batch((DATA / name).read_bytes(), 1, name))


def rows(result: ParseResult) -> list[dict[str, Any]]:
    return list(result.parsed.iter_rows(named=True))


def test_apache_error_lines_column_by_column() -> None:
    result = parse_file("apache_error.log", "apache_error")
    assert result.rejected.height == 0
    assert result.parsed.columns == COLUMNS
    got = rows(result)
    # 2.4 default format (Apache's own documentation).
    assert got[0] == {
        "ts": utc(2011, 9, 9, 10, 42, 29, 902022),
        "level": "error",
        "module": "core",
        "pid": 35708,
        "tid": 4328636416,
        "connection": None,
        "client": "72.15.99.187",
        "client_port": None,
        "server": None,
        "request": None,
        "host": None,
        "upstream": None,
        "referrer": None,
        "error_code": None,
        "detail": None,
        "message": "File does not exist: /usr/local/apache2/htdocs/favicon.ico",
        "line": 1,
    }
    # 2.2 format: no module, no pid.
    assert (got[1]["ts"], got[1]["level"], got[1]["module"], got[1]["pid"]) == (
        utc(2000, 10, 11, 14, 32, 52),
        "error",
        None,
        None,
    )
    assert got[1]["client"] == "127.0.0.1"
    assert got[1]["message"] == (
        "client denied by server configuration: /export/home/live/ap/htdocs/test"
    )
    # Client with port, an AH code, pid without tid.
    assert (got[2]["module"], got[2]["level"], got[2]["pid"], got[2]["tid"]) == (
        "include",
        "warn",
        15934,
        None,
    )
    assert (got[2]["client"], got[2]["client_port"], got[2]["error_code"]) == (
        "67.43.156.12",
        12345,
        "AH01374",
    )
    assert got[2]["message"].startswith("AH01374: mod_include: Options +Includes")
    # No client block: the whole rest is the message.
    assert (got[3]["level"], got[3]["client"], got[3]["message"]) == (
        "notice",
        None,
        "Apache/2.2.22 (Ubuntu) configured -- resuming normal operations",
    )
    # `, referer: URL` at the end.
    assert got[4]["referrer"] == "http://192.168.33.72/"
    assert got[4]["message"] == (
        "File does not exist: /var/www/favicon.ico, referer: http://192.168.33.72/"
    )
    # A trace line: the source file before [client] is `detail`; a level with a digit.
    assert (got[5]["level"], got[5]["module"], got[5]["detail"]) == (
        "trace3",
        "rewrite",
        "mod_rewrite.c(470)",
    )
    assert (got[5]["client"], got[5]["client_port"]) == ("10.121.192.8", 38350)
    assert got[5]["message"].startswith("10.121.192.8 - - [dev.elastic.co/sid#55a374e851c8]")
    assert got[5]["ts"] == utc(2021, 10, 20, 19, 20, 59, 121211)


def test_nginx_error_lines_column_by_column() -> None:
    result = parse_file("nginx_error.log", "nginx_error")
    assert result.rejected.height == 0
    assert result.parsed.columns == COLUMNS
    got = rows(result)
    # The NGINX blog's rate-limiting example.
    assert got[0] == {
        "ts": utc(2015, 6, 13, 4, 20, 0),
        "level": "error",
        "module": None,
        "pid": 120315,
        "tid": 0,
        "connection": 32086,
        "client": "192.168.1.2",
        "client_port": None,
        "server": "nginx.com",
        "request": "GET / HTTP/1.0",
        "host": "nginx.com",
        "upstream": None,
        "referrer": None,
        "error_code": None,
        "detail": None,
        "message": 'limiting requests, excess: 1.000 by zone "mylimit"',
        "line": 1,
    }
    assert (got[1]["request"], got[1]["client"], got[1]["connection"]) == (
        "POST /index.htm HTTP/1.0",
        "1.2.3.4",
        99927,
    )
    # fail2ban's fixtures: an empty `server:` (null), then a `referrer:`.
    assert (got[2]["server"], got[2]["host"], got[2]["message"]) == (
        None,
        "localhost:8443",
        'user "scribendio": password mismatch',
    )
    assert got[3]["referrer"] == "https://scribend.io/admin"
    assert got[3]["server"] == "scribend.io"
    # An upstream failure.
    assert got[4]["upstream"] == "http://10.10.0.7:80/"
    assert got[4]["message"] == (
        "connect() failed (113: No route to host) while connecting to upstream"
    )
    assert (got[4]["pid"], got[4]["tid"], got[4]["host"]) == (31, 31, "10.10.0.5")
    # Start-up notices: no connection, no context.
    assert [(r["level"], r["connection"], r["client"], r["message"]) for r in got[5:]] == [
        ("notice", None, None, "getrlimit(RLIMIT_NOFILE): 1048576:1048576"),
        ("notice", None, None, "start worker processes"),
    ]
    assert got[6]["ts"] == utc(2022, 9, 8, 22, 53, 47)


def test_local_times_follow_the_timezone_option() -> None:
    berlin = rows(parse_file("apache_error.log", "apache_error", timezone="Europe/Berlin"))
    assert berlin[0]["ts"] == utc(2011, 9, 9, 8, 42, 29, 902022)  # CEST, UTC+2
    assert berlin[1]["ts"] == utc(2000, 10, 11, 12, 32, 52)
    nginx = rows(parse_file("nginx_error.log", "nginx_error", timezone="America/New_York"))
    assert nginx[0]["ts"] == utc(2015, 6, 13, 8, 20, 0)  # EDT, UTC-4
    with pytest.raises(FormatError, match="time zone"):
        get_format("nginx_error", None, timezone="Mars/Olympus")


def test_files_are_detected_as_their_format() -> None:
    for name, fmt in (("apache_error.log", "apache_error"), ("nginx_error.log", "nginx_error")):
        batch = line_batch((DATA / name).read_bytes(), 1, name)
        found = detect_format(batch.text)
        assert found is not None and found.name == fmt
        assert found.default_table == "logs.errors"


def test_bad_lines_are_rejected_with_reasons() -> None:
    data = (
        b"[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 1] fine\n"
        b"\n"
        b"[Fri Feb 30 10:42:29 2011] [error] no such day\n"
        b"Sep 09 10:42:29 not an error log line\n"
    )
    result = get_format("apache_error").parse(line_batch(data, 10, "x"))
    assert result.parsed.get_column("line").to_list() == [10]
    assert result.rejected.select("line", "reason").rows() == [
        (11, "empty line"),
        (12, "invalid timestamp"),
        (13, "does not match the Apache error log format"),
    ]
    assert (
        result.rejected.get_column("raw").to_list()[2] == b"Sep 09 10:42:29 not an error log line"
    )
    nginx = get_format("nginx_error").parse(
        line_batch(b"2024/13/01 10:00:00 [error] 1#1: x\n", 1, "x")
    )
    assert nginx.rejected.get_column("reason").to_list() == ["invalid timestamp"]
    assert nginx.parsed.schema["ts"] == pl.Datetime("us", "UTC")


def test_apache_os_errors_empty_modules_and_ipv6_clients() -> None:
    data = (
        # An SSL debugging transcript posted to a public mailing list (Apache 2.4, mod_ssl).
        b"[Mon Jun 29 20:16:55.808702 2015] [ssl:info] [pid 5588] (70007)The timeout specified "
        b"has expired: [client 80.100.143.119:63297] AH01991: SSL input filter read failed.\n"
        # A PHP warning as Apache 2.4 logs it, module empty ([:error]), from a public write-up.
        b"[Fri Mar 02 12:18:56.505245 2018] [:error] [pid 3506] [client 192.168.234.1:47880] PHP "
        b"Warning:  phpinfo() has been disabled for security reasons in "
        b"/var/www/html/php/index.php on line 2\n"
        # A proxy_fcgi timeout from a local IPv6 client, from a public troubleshooting note.
        b"[Thu Mar 25 18:53:07.457268 2021] [proxy_fcgi:error] [pid 13295] (70007)The timeout "
        b"specified has expired: [client ::1:54684] AH01075: Error dispatching request to : "
        b"(polling)\n"
    )
    result = get_format("apache_error").parse(line_batch(data, 1, "x"))
    assert result.rejected.height == 0
    got = result.parsed.select(
        "module", "level", "pid", "client", "client_port", "detail", "error_code"
    ).rows()
    timeout = "(70007)The timeout specified has expired"
    assert got == [
        ("ssl", "info", 5588, "80.100.143.119", 63297, timeout, "AH01991"),
        (None, "error", 3506, "192.168.234.1", 47880, None, None),
        ("proxy_fcgi", "error", 13295, "::1", 54684, timeout, "AH01075"),
    ]
    # Apache 2.2 (no [pid] block) writes no port: an IPv6 address stays whole.
    old = get_format("apache_error").parse(
        line_batch(b"[Wed Oct 11 14:32:52 2000] [error] [client 2001:db8::1] denied\n", 1, "x")
    )
    assert old.parsed.select("client", "client_port").rows() == [("2001:db8::1", None)]


def test_nginx_request_lines_are_written_raw() -> None:
    data = (
        # Public nginx debug logs: a proxy probe, TLS bytes sent to a plain port (the request
        # holds a comma), an HTTP/2 preface; `server:` empty or a regex server_name.
        "2025/01/16 15:45:33 [info] 1614335#1614335: *1 client sent invalid request while "
        "reading client request line, client: 91.228.154.209, server: , request: "
        '"CONNECT www.google.com:443 HTTP/1.1"\n'
        "2015/12/30 12:14:28 [info] 1383#0: *48 client sent invalid method while reading "
        "client request line, client: 91.157.67.239, server: villesalonen.fi, request: "
        '"\u2592\u2592t\u2592\u2592Q\u2592\u2592,N\u2592\u2592N\u2592\u2592s"\n'
        "2025/05/09 15:43:52 [info] 576#576: *12 client sent invalid request while reading "
        "client request line, client: 206.168.34.86, server: ~sven-dev(-vic)?.nimbusvideo.com, "
        'request: "PRI * HTTP/2.0"\n'
        # fail2ban's nginx-http-auth line with quotes put into its request and referrer (made
        # up: nginx copies both raw, so they may hold quotes).
        '2014/04/02 12:37:58 [error] 6563#0: *1861 user "scribendio": password mismatch, '
        'client: 10.0.2.2, server: scribend.io, request: "GET /a"b HTTP/1.1", host: '
        '"scribend.io", referrer: "https://scribend.io/"x""\n'
    ).encode()
    result = get_format("nginx_error").parse(line_batch(data, 1, "x"))
    assert result.rejected.height == 0
    invalid = "client sent invalid request while reading client request line"
    assert result.parsed.select("connection", "client", "server", "request", "message").rows() == [
        (1, "91.228.154.209", None, "CONNECT www.google.com:443 HTTP/1.1", invalid),
        (
            48,
            "91.157.67.239",
            "villesalonen.fi",
            "\u2592\u2592t\u2592\u2592Q\u2592\u2592,N\u2592\u2592N\u2592\u2592s",
            "client sent invalid method while reading client request line",
        ),
        (12, "206.168.34.86", "~sven-dev(-vic)?.nimbusvideo.com", "PRI * HTTP/2.0", invalid),
        (
            1861,
            "10.0.2.2",
            "scribend.io",
            'GET /a"b HTTP/1.1',
            'user "scribendio": password mismatch',
        ),
    ]
    assert result.parsed.get_column("referrer").to_list()[3] == 'https://scribend.io/"x"'
