"""The access formats' compiled line scanner gives exactly what the regular expressions give.

Every access preset with a scanner program is parsed twice, with and without the scanner, over the
shared real logs and over lines built to sit on each edge of the fast regex (escapes, missing quotes,
non-ASCII in tokens and in quoted fields, odd numbers and times, CR, DEL, bytes that are not UTF-8);
the parsed rows and the rejected lines must be identical, and the scanner must really have taken
the lines it should.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from loglake.formats.access import PRESETS, AccessFormat, access_format
from loglake.formats.lines import line_batch
from loglake.formats.scan import available, scan

_EDGES = [
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a?b=1 HTTP/1.1" 200 2326 "-" "UA"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a? HTTP/1.1" 200 - "-" "UA',
    b'1.2.3.4 - - [1/Oct/2000:13:55:36 +0000] "GET  HTTP/1.1" 200 0 "" ""',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "get /a HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" 200 1 "-" "x\\"y"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a\\\\b HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" 200 1 "-" "x"trailing',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" 2000 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /\xc3\xa9 HTTP/1.1" 200 1 "-" "\xc3\xa9"',
    b'1.2.\xc3\xa9 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4\xc2\xa0x - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x"\r',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x\ry"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 -1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/" 200 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1 extra" 200 1 "-" "x"',
    b'1.2.3.4 - - [99/Zzz/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4 - - [100/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 0700] "GET / HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a b HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "\x16\x03\x01" 400 0 "-" "-"',
    b'vh 1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x" "10.0.0.1"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x" "-"',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 -',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 12\xd9\xa3',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1\x7f',
    b'1.2.3.4\t- - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1',
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 2\xd9\xa30 1 "-" "x"',
    b'1.2.3.4 - - [\xd9\xa30/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x"',
    b"",
    b"   ",
    b"\t",
]
_NOT_UTF8 = b'\xff\xfe - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "x"'


def _with_and_without(fmt: AccessFormat, data: bytes) -> None:
    regex_only = copy.copy(fmt)
    regex_only.program = None
    batch = line_batch(data, 1, "test.log")
    scanned, regexed = fmt.parse(batch), regex_only.parse(batch)
    assert_frame_equal(scanned.parsed, regexed.parsed)
    assert_frame_equal(scanned.rejected, regexed.rejected)


def test_the_compiled_scanner_is_built() -> None:
    # No skip: where the tests run the module must exist, or the tests below test nothing.
    assert available()


def test_which_formats_have_a_program() -> None:
    have = {name for name in PRESETS if access_format(name).program is not None}
    # vhost_combined's `%v:%p` is a \S+ field before a ':' the field may hold: the regex decides.
    assert have == {"common", "combined", "vhost_common", "common_complete", "nginx_main"}
    bracketed = access_format(
        '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent" [$proxy_alternative_upstream_name]'
    )
    assert bracketed.program is None
    iso = access_format('$remote_addr [$time_iso8601] "$request" $status')
    assert iso.program is None


@pytest.mark.parametrize(
    "name", ["common", "combined", "vhost_common", "common_complete", "nginx_main"]
)
def test_scanner_and_regex_agree_on_edges(name: str) -> None:
    fmt = access_format(name)
    _with_and_without(fmt, b"\n".join(_EDGES) + b"\n")
    _with_and_without(fmt, b"\n".join([*_EDGES, _NOT_UTF8]) + b"\n")


@pytest.mark.parametrize(
    "log", ["apache_combined_10k.log", "access_bad_lines.log", "access_big5_bytes.log"]
)
@pytest.mark.parametrize("name", ["combined", "nginx_main", "common"])
def test_scanner_and_regex_agree_on_real_logs(shared_data: Path, log: str, name: str) -> None:
    _with_and_without(access_format(name), (shared_data / log).read_bytes())


def test_scanner_takes_the_usual_lines(shared_data: Path) -> None:
    fmt = access_format("combined")
    assert fmt.program is not None
    batch = line_batch((shared_data / "apache_combined_10k.log").read_bytes(), 1, "a.log")
    found = scan(fmt.program, [f.column for f in fmt.fast_fields], batch.raw)
    assert found is not None
    fields, accepted = found
    assert accepted.sum() == 9997  # the other 3 have an escape or lack the closing quote
    first = fields.row(0, named=True)
    assert first["client"] == "83.149.9.216"
    assert first["ts"] == "17/May/2015:10:05:03 +0000"
    assert (first["method"], first["query"]) == ("GET", None)
    assert first["path"] == "/presentations/logstash-monitorama-2013/images/kibana-search.png"
    assert first["protocol"] == "HTTP/1.1"
    assert (first["status"], first["bytes"]) == ("200", "203023")
    # lines that are not all UTF-8 were escaped into their text: the regexes parse them
    assert (
        scan(fmt.program, ["x"] * len(fmt.fast_fields), line_batch(_NOT_UTF8, 1, "b").raw) is None
    )


def test_a_custom_format_with_a_duration_agrees(shared_data: Path) -> None:
    fmt = access_format('%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D')
    assert fmt.program is not None
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:2000]
    timed = [line + b" " + str(i * 7).encode() for i, line in enumerate(lines)]
    odd = [b"%s -" % lines[0], b"%s 12a" % lines[1], b"%s  5" % lines[2], lines[3]]
    _with_and_without(fmt, b"\n".join([*timed, *odd, *_EDGES]) + b"\n")
    parsed = fmt.parse(line_batch(b"\n".join(timed) + b"\n", 1, "d.log")).parsed
    assert parsed.height == 2000
    assert parsed.get_column("duration_ms").head(3).to_list() == [0.0, 0.007, 0.014]  # %D is µs


@pytest.mark.parametrize("name", ["combined", "vhost_combined"])
def test_an_empty_batch_parses_to_no_rows(name: str) -> None:
    result = access_format(name).parse(line_batch(b"", 1, "empty.log"))
    assert (result.parsed.height, result.rejected.height) == (0, 0)
    assert result.parsed.columns[:3] == ["ts", "client", "ident"]
