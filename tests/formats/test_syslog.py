"""Syslog parsing: the real Linux sample, the RFC 3164/5424 examples, PRI names, years, rejects."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from loglake.errors import FormatError
from loglake.formats import detect_format, get_format
from loglake.formats.base import ParseResult
from loglake.formats.lines import line_batch
from loglake.formats.syslog import SYSLOG_COLUMNS, SyslogFormat, syslog_format

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LINUX = DATA / "syslog_linux_2k.log"
BOM = "\ufeff"

# The four examples of RFC 5424 section 6.5 (BOM written as U+FEFF, as it is on the wire).
SD1 = '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
SD2 = '[examplePriority@32473 class="high"]'
RFC5424_EXAMPLES = [
    f"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - {BOM}'su root' failed for "
    "lonvick on /dev/pts/8",
    "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the "
    "do-nuts.",
    f"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {SD1} {BOM}An "
    "application event log entry...",
    f"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {SD1}{SD2}",
]


def parse(data: bytes | str, name: str = "syslog", **options: object) -> ParseResult:
    return parse_at(data, 1, name, **options)


def parse_at(data: bytes | str, first_line: int, name: str, **options: object) -> ParseResult:
    """Parse ``data`` as one batch whose first line is ``first_line``; counts must add up."""
    raw = data.encode() if isinstance(data, str) else data
    batch = line_batch(raw, first_line, "test")
    result = syslog_format(name, **options).parse(batch)
    assert result.parsed.height + result.rejected.height == len(batch)
    return result


def rows(lines: list[str], name: str = "syslog", **options: object) -> list[dict[str, object]]:
    result = parse("\n".join(lines), name, **options)
    assert result.rejected.height == 0, result.rejected.to_dicts()
    return result.parsed.to_dicts()


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- the real Linux sample ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def linux() -> ParseResult:
    return parse(LINUX.read_bytes(), year=2005)


@pytest.fixture(scope="module")
def linux_lines() -> list[str]:
    # The file has CRLF endings and no final newline.
    return LINUX.read_bytes().decode().split("\r\n")


def test_linux_sample_parses_every_line(linux: ParseResult, linux_lines: list[str]) -> None:
    assert len(linux_lines) == 2000
    assert linux.rejected.height == 0
    assert linux.parsed.height == 2000
    assert linux.parsed.schema == pl.Schema({**SYSLOG_COLUMNS, "line": pl.Int64()})
    assert linux.parsed.get_column("line").to_list() == list(range(1, 2001))
    assert set(linux.parsed.get_column("host").unique()) == {"combo"}
    # Files written by syslogd carry no <PRI>: no facility/severity; and no RFC 5424 fields.
    for column in ("facility", "severity", "msgid", "structured_data"):
        assert linux.parsed.get_column(column).null_count() == 2000


def test_linux_first_line(linux: ParseResult, linux_lines: list[str]) -> None:
    assert linux_lines[0].startswith("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication")
    row = linux.parsed.row(0, named=True)
    assert row["ts"] == utc(2005, 6, 14, 15, 16, 1)
    assert row["host"] == "combo"
    assert row["app"] == "sshd(pam_unix)"
    assert row["pid"] == 19939
    # The message is kept exactly, trailing space included.
    assert row["message"] == linux_lines[0].split("[19939]: ", 1)[1]
    assert row["message"].endswith("rhost=218.188.2.4 ")


def test_linux_every_row_matches_the_file(linux: ParseResult, linux_lines: list[str]) -> None:
    """Compare every row with an independent per-line reading of the file text."""
    names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    months = {m: i for i, m in enumerate(names, 1)}
    rx = re.compile(r"^(\w{3}) +(\d+) (\d\d):(\d\d):(\d\d) (\S+) +(.*)$")
    tag = re.compile(r"^([^\s\[\]:]+)(?:\[(\d+)\])?: (.*)$")
    for line, row in zip(linux_lines, linux.parsed.iter_rows(named=True), strict=True):
        m = rx.match(line)
        assert m is not None
        mon, day, hh, mm, ss, host, rest = m.groups()
        assert row["ts"] == utc(2005, months[mon], int(day), int(hh), int(mm), int(ss))
        assert row["host"] == host
        t = tag.match(rest)
        if t is None:
            assert (row["app"], row["pid"], row["message"]) == (None, None, rest)
        else:
            pid = int(t.group(2)) if t.group(2) else None
            assert (row["app"], row["pid"], row["message"]) == (t.group(1), pid, t.group(3))


def test_linux_specific_rows(linux: ParseResult, linux_lines: list[str]) -> None:
    def row(n: int) -> dict[str, object]:
        return linux.parsed.row(n - 1, named=True)

    # Space-padded day.
    assert linux_lines[713] == "Jul  3 04:08:03 combo syslogd 1.4.1: restart."
    assert row(714)["ts"] == utc(2005, 7, 3, 4, 8, 3)
    # `syslogd 1.4.1:` has a space in its tag: no app, the message is the whole rest.
    assert (row(714)["app"], row(714)["pid"], row(714)["message"]) == (
        None,
        None,
        "syslogd 1.4.1: restart.",
    )
    # A tag without a PID.
    assert linux_lines[1909].startswith("Jul 27 14:41:57 combo kernel: klogd 1.4.1")
    assert (row(1910)["app"], row(1910)["pid"]) == ("kernel", None)
    assert row(1910)["message"] == "klogd 1.4.1, log source = /proc/kmsg started."
    # Two spaces after the host and no tag.
    assert linux_lines[898] == "Jul  7 08:06:15 combo  -- root[2421]: ROOT LOGIN ON tty2"
    assert (row(899)["app"], row(899)["message"]) == (None, "-- root[2421]: ROOT LOGIN ON tty2")
    # The last line (no final newline in the file).
    assert row(2000)["message"] == "Linux agpgart interface v0.100 (c) Dave Jones"
    apps = dict(linux.parsed.get_column("app").value_counts().iter_rows())
    assert apps["ftpd"] == 916
    assert apps["sshd(pam_unix)"] == 677
    assert apps["rpc.statd"] == 1
    assert apps["gdm-binary"] == 1
    assert apps[None] == 8


def test_linux_sample_is_detected_as_rfc3164(linux_lines: list[str]) -> None:
    sample = pl.Series(linux_lines[:500])
    assert syslog_format("rfc3164").match_rate(sample) == 1.0
    assert syslog_format("syslog").match_rate(sample) == 1.0
    assert syslog_format("rfc5424").match_rate(sample) == 0.0
    fmt = detect_format(sample)
    assert fmt is not None
    assert fmt.name == "rfc3164"
    assert fmt.default_table == "logs.syslog"


# -- RFC 5424 ------------------------------------------------------------------------------------


def test_rfc5424_examples_from_the_rfc() -> None:
    got = rows(RFC5424_EXAMPLES, "rfc5424")
    assert got[0] == {
        "ts": datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC),
        "host": "mymachine.example.com",
        "app": "su",
        "pid": None,
        "facility": "auth",
        "severity": "crit",
        "msgid": "ID47",
        "structured_data": None,
        "message": "'su root' failed for lonvick on /dev/pts/8",  # BOM removed
        "line": 1,
    }
    # Offset -07:00 converted to UTC, microseconds kept.
    assert got[1]["ts"] == datetime(2003, 8, 24, 12, 14, 15, 3, tzinfo=UTC)
    assert (got[1]["host"], got[1]["app"], got[1]["pid"]) == ("192.0.2.1", "myproc", 8710)
    assert (got[1]["facility"], got[1]["severity"]) == ("local4", "notice")
    assert (got[1]["msgid"], got[1]["structured_data"]) == (None, None)
    assert got[1]["message"] == "%% It's time to make the do-nuts."
    assert got[2]["structured_data"] == SD1
    assert SD1 == '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
    assert got[2]["message"] == "An application event log entry..."
    assert got[2]["msgid"] == "ID47"
    assert got[3]["structured_data"] == SD1 + SD2  # several SD elements, kept as written
    assert got[3]["message"] is None  # no MSG part at all


def test_rfc5424_nil_values_escapes_and_procid() -> None:
    now = utc(2024, 3, 1, 12, 0, 0)
    got = rows(
        [
            "<14>1 - - - - - -",
            '<14>1 2024-02-29T23:59:59+01:00 h a worker-1 m [x@1 a="b\\]c\\"d" e=""] msg',
            "<14>1 2024-02-29T23:59:59.123456789Z h a 42 - - ",
        ],
        "syslog",
        now=now,
    )
    nil = got[0]
    assert nil["ts"] == now  # a nil timestamp gets the reception time
    assert [nil[k] for k in ("host", "app", "pid", "msgid", "structured_data", "message")] == [
        None,
        None,
        None,
        None,
        None,
        None,
    ]
    assert (nil["facility"], nil["severity"]) == ("user", "info")
    assert got[1]["ts"] == utc(2024, 2, 29, 22, 59, 59)
    assert got[1]["pid"] is None  # non-numeric PROCID
    assert got[1]["structured_data"] == '[x@1 a="b\\]c\\"d" e=""]'
    assert got[1]["message"] == "msg"
    assert got[2]["ts"] == datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)
    assert (got[2]["pid"], got[2]["message"]) == (42, "")


def test_rfc5424_only_mode_rejects_bsd_lines() -> None:
    result = parse("Oct 11 22:14:15 mymachine su: x\n" + RFC5424_EXAMPLES[1], "rfc5424")
    assert result.parsed.get_column("line").to_list() == [2]
    assert result.rejected.rows() == [
        (1, b"Oct 11 22:14:15 mymachine su: x", "does not match RFC 5424 syslog")
    ]


# -- RFC 3164 ------------------------------------------------------------------------------------


def test_rfc3164_examples_from_the_rfc() -> None:
    now = utc(2024, 12, 1)
    got = rows(
        [
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            "<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
        ],
        "rfc3164",
        now=now,
    )
    assert got[0] == {
        "ts": utc(2024, 10, 11, 22, 14, 15),
        "host": "mymachine",
        "app": "su",
        "pid": None,
        "facility": "auth",
        "severity": "crit",
        "msgid": None,
        "structured_data": None,
        "message": "'su root' failed for lonvick on /dev/pts/8",
        "line": 1,
    }
    assert got[1]["ts"] == utc(2024, 2, 5, 17, 32, 18)
    assert (got[1]["host"], got[1]["app"], got[1]["message"]) == ("10.0.0.99", None, "Use the BFG!")
    assert (got[1]["facility"], got[1]["severity"]) == ("user", "notice")


@pytest.mark.parametrize(
    ("pri", "facility", "severity"),
    [
        (0, "kern", "emerg"),
        (13, "user", "notice"),
        (34, "auth", "crit"),
        (46, "syslog", "info"),
        (78, "cron", "info"),
        (86, "authpriv", "info"),
        (120, "solaris-cron", "emerg"),
        (165, "local4", "notice"),
        (191, "local7", "debug"),
    ],
)
def test_pri_names(pri: int, facility: str, severity: str) -> None:
    bsd, ietf = rows(
        [f"<{pri}>Oct 11 22:14:15 host app: x", f"<{pri}>1 2003-10-11T22:14:15Z h a - - - x"],
        year=2003,
    )
    assert (bsd["facility"], bsd["severity"]) == (facility, severity)
    assert (ietf["facility"], ietf["severity"]) == (facility, severity)


def test_pri_out_of_range_is_rejected() -> None:
    result = parse("<192>Oct 11 22:14:15 host app: x", year=2003)
    assert result.parsed.height == 0
    assert result.rejected.get_column("reason").to_list() == [
        "does not match syslog (RFC 3164 or RFC 5424)"
    ]


def test_year_inference_around_new_year() -> None:
    now = utc(2025, 1, 1, 0, 5)
    got = rows(
        ["Dec 31 23:59:58 h a: old", "Jan  1 00:04:00 h a: new", "Jan  2 00:04:00 h a: skew"],
        now=now,
    )
    assert got[0]["ts"] == utc(2024, 12, 31, 23, 59, 58)  # Dec 31 read on Jan 1: last year
    assert got[1]["ts"] == utc(2025, 1, 1, 0, 4)
    assert got[2]["ts"] == utc(2025, 1, 2, 0, 4)  # less than a day ahead: clock skew, same year


def test_year_inference_future_and_leap_day() -> None:
    got = rows(["Jun 17 10:00:00 h a: x", "Feb 29 10:00:00 h a: leap"], now=utc(2025, 6, 15))
    assert got[0]["ts"] == utc(2024, 6, 17, 10)  # more than a day in the future: last year
    assert got[1]["ts"] == utc(2024, 2, 29, 10)  # no Feb 29 in 2025: the year before


def test_explicit_year_and_timezone() -> None:
    got = rows(["Jun 14 15:16:01 combo su: x"], year=2005, timezone="Europe/Berlin")
    assert got[0]["ts"] == utc(2005, 6, 14, 13, 16, 1)  # CEST is UTC+2
    got = rows(["Jan 14 15:16:01 combo su: x"], year=2005, timezone="America/New_York")
    assert got[0]["ts"] == utc(2005, 1, 14, 20, 16, 1)


def test_iso_timestamp_in_rfc3164_lines() -> None:
    got = rows(
        [
            "2024-01-01T10:00:00.123456+02:00 host app[12]: high precision",
            "2024-01-01T10:00:00Z host app: zulu",
            "2024-07-01T10:00:00 host app: local",
            "<30>2024-07-01T10:00:00-0500 host app: compact offset",
        ],
        "rfc3164",
        timezone="Europe/Berlin",
    )
    assert got[0]["ts"] == datetime(2024, 1, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert (got[0]["app"], got[0]["pid"], got[0]["message"]) == ("app", 12, "high precision")
    assert got[1]["ts"] == utc(2024, 1, 1, 10)
    assert got[2]["ts"] == utc(2024, 7, 1, 8)  # no offset: the configured zone
    assert got[3]["ts"] == utc(2024, 7, 1, 15)
    assert (got[3]["facility"], got[3]["severity"]) == ("daemon", "info")


def test_tags_and_missing_parts() -> None:
    got = rows(
        [
            "Mar  1 10:00:00 h /usr/sbin/cron[77]: (root) CMD (run-parts)",
            "Mar  1 10:00:00 h app[]: empty pid",
            "Mar  1 10:00:00 h kernel:",
            "Mar  1 10:00:00 h http://example.com/ is not a tag",
            "Mar  1 10:00:00 h",
        ],
        year=2024,
    )
    assert (got[0]["app"], got[0]["pid"], got[0]["message"]) == (
        "/usr/sbin/cron",
        77,
        "(root) CMD (run-parts)",
    )
    assert (got[1]["app"], got[1]["pid"]) == ("app", None)
    assert (got[2]["app"], got[2]["message"]) == ("kernel", "")
    assert (got[3]["app"], got[3]["message"]) == (None, "http://example.com/ is not a tag")
    assert (got[4]["host"], got[4]["app"], got[4]["message"]) == ("h", None, None)


# -- rejects -----------------------------------------------------------------------------------


def test_garbage_empty_and_bad_timestamps_are_rejected_with_raw_bytes() -> None:
    data = b"\n".join(
        [
            b"Jun 14 15:16:01 combo su: ok",
            b"",
            b"garbage \xff\xfe not syslog",
            b"Feb 30 10:00:00 host app: no such day",
            b"Jun 14 25:00:00 host app: no such hour",
            b"<14>1 2003-13-11T22:14:15Z h a - - - bad month",
            b"Mar 27 02:30:00 host app: skipped by DST",
            b"Jun 14 15:16:02 combo su: \xc3\xa9t\xc3\xa9 ok",
        ]
    )
    result = parse_at(data, 101, "syslog", year=2005, timezone="Europe/Berlin")
    assert result.parsed.get_column("line").to_list() == [101, 108]
    assert result.parsed.get_column("message").to_list() == ["ok", "été ok"]
    assert result.rejected.rows() == [
        (102, b"", "empty line"),
        (103, b"garbage \xff\xfe not syslog", "does not match syslog (RFC 3164 or RFC 5424)"),
        (104, b"Feb 30 10:00:00 host app: no such day", "invalid timestamp"),
        (105, b"Jun 14 25:00:00 host app: no such hour", "invalid timestamp"),
        (106, b"<14>1 2003-13-11T22:14:15Z h a - - - bad month", "invalid timestamp"),
        (107, b"Mar 27 02:30:00 host app: skipped by DST", "invalid timestamp"),
    ]
    assert result.rejected.schema == pl.Schema(
        {"line": pl.Int64(), "raw": pl.Binary(), "reason": pl.String()}
    )


def test_invalid_utf8_in_a_parsed_line_is_escaped_and_in_a_rejected_line_kept() -> None:
    result = parse(b"Jun 14 15:16:01 combo su: bad \xff byte\n\xff\xfe\xfd", year=2005)
    assert result.parsed.get_column("message").to_list() == ["bad \\xff byte"]
    assert result.rejected.get_column("raw").to_list() == [b"\xff\xfe\xfd"]


def test_empty_batch() -> None:
    result = parse(b"")
    assert result.parsed.height == 0
    assert result.parsed.columns == [*SYSLOG_COLUMNS, "line"]
    assert result.rejected.height == 0


def test_mixed_protocols_keep_line_order() -> None:
    result = parse(
        "\n".join([RFC5424_EXAMPLES[1], "Oct 11 22:14:15 h a: bsd", RFC5424_EXAMPLES[0]])
    )
    assert result.parsed.get_column("line").to_list() == [1, 2, 3]
    assert result.parsed.get_column("app").to_list() == ["myproc", "a", "su"]


# -- factory -----------------------------------------------------------------------------------


def test_registry_and_options() -> None:
    for name in ("syslog", "rfc3164", "rfc5424"):
        fmt = get_format(name, timezone="UTC", ts_field="ts")  # other formats' options are ignored
        assert isinstance(fmt, SyslogFormat)
        assert fmt.name == name
        assert fmt.enrich == ()
    with pytest.raises(FormatError, match="time zone"):
        syslog_format("syslog", timezone="Mars/Olympus")
    with pytest.raises(FormatError, match="year"):
        syslog_format("syslog", year="2005")
    with pytest.raises(FormatError, match="unknown syslog format"):
        syslog_format("rfc9999")
