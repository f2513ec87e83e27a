"""Athena's date and time functions (query/athena_datetime.py) answer as Athena does, or are refused
by name with what to use instead. Expected values come from Trino's documentation and Joda-Time's
rules, worked out by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

import loglake
from loglake.errors import QueryError, QueryRefusedError
from loglake.query.athena_datetime import joda_tokens
from loglake.query.engine import Connection, transpile


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    home: Path = tmp_path_factory.mktemp("datetime")
    with loglake.connect(str(home)) as c:
        yield c


def one(con: Connection, sql: str) -> Any:
    rows = con.sql(sql, dialect="athena").fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def test_joda_tokens_split_fields_quotes_and_literals() -> None:
    assert joda_tokens("yyyy-MM-dd''T''HH") == [
        ("y", 4), "-", ("M", 2), "-", ("d", 2), "'", ("T", 1), "'", ("H", 2)
    ]  # fmt: skip
    assert joda_tokens("yyyy'T'HH 'o''clock'") == [("y", 4), "T", ("H", 2), " ", "o'clock"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Joda formatting: text fields in English, numbers padded to the letter count.
        ("format_datetime(TIMESTAMP '2024-03-05 14:07:09.123', 'EEEE d MMMM yyyy h:mm a')",
         "Tuesday 5 March 2024 2:07 PM"),
        ("format_datetime(TIMESTAMP '2024-03-05 00:07:09.123', 'kk KK hh HH')", "24 00 12 00"),
        ("format_datetime(TIMESTAMP '2024-03-05 14:07:09.123456', 'ss.S ss.SS ss.SSSSSS')",
         "09.1 09.12 09.123000"),
        ("format_datetime(TIMESTAMP '2024-03-05 14:07:09', 'yy D e xxxx-ww G')",
         "24 65 2 2024-10 AD"),
        ("format_datetime(TIMESTAMP '2024-07-01 12:00' AT TIME ZONE 'America/New_York', "
         "'HH:mm Z ZZ ZZZ')", "08:00 -0400 -04:00 America/New_York"),
        # MySQL patterns: %i minutes, %s seconds, %f milliseconds as 6 digits, %x%v ISO week.
        ("date_format(TIMESTAMP '2021-01-01 13:04:05.678', '%x-%v %h:%i:%s.%f %p')",
         "2020-53 01:04:05.678000 PM"),
        ("to_iso8601(TIMESTAMP '2020-07-25 11:45:28.000 UTC')", "2020-07-25T11:45:28.000Z"),
        ("to_iso8601(TIMESTAMP '2020-07-25 11:45:28.000 +05:30')",
         "2020-07-25T11:45:28.000+05:30"),
        ("to_iso8601(DATE '2020-07-25')", "2020-07-25"),
        ("timezone_hour(TIMESTAMP '2020-07-25 11:45 -05:30')", -5),
        ("timezone_minute(TIMESTAMP '2020-07-25 11:45 -05:30')", -30),
        ("hour(TIMESTAMP '2020-07-25 11:45 +05:30')", 11),
        ("to_iso8601(CAST(TIMESTAMP '2020-07-25 11:45:28.123456 +05:30' "
         "AS timestamp(3) with time zone))", "2020-07-25T11:45:28.123+05:30"),
        ("to_unixtime(TIMESTAMP '1970-01-01 05:30 +05:30')", 0.0),
        ("current_timezone()", "UTC"),
        # now() is a DuckDB TIMESTAMPTZ: at an offset it is a wall time like any other.
        ("typeof(now() AT TIME ZONE '+05:30')", "TIMESTAMP"),
        ("millisecond(TIMESTAMP '2020-01-01 00:00:12.345')", 345),
        ("day_of_week(DATE '2024-01-07')", 7),
        ("human_readable_seconds(0)", "0 seconds"),
        ("to_milliseconds(INTERVAL '1' DAY + INTERVAL '2' SECOND)", 86402000),
        # A timestamp with time zone plus an interval keeps its zone (instant + 1 day here).
        ("to_iso8601(from_unixtime(0, 'America/New_York') + INTERVAL '1' DAY)",
         "1970-01-01T19:00:00.000-05:00"),
        ("date_trunc('month', DATE '2020-01-31' + INTERVAL '1' DAY)", date(2020, 2, 1)),
        # Whole units elapsed, not boundaries crossed (DuckDB's date_diff says 1 for each).
        ("date_diff('day', TIMESTAMP '2020-03-01 23:00', TIMESTAMP '2020-03-02 01:00')", 0),
        ("date_diff('year', DATE '2020-12-31', DATE '2021-01-01')", 0),
        ("date_diff('month', DATE '2020-03-31', DATE '2020-02-29')", -1),
        # Comparisons of timestamps with time zone are by instant.
        ("TIMESTAMP '2020-01-01 10:00 +01:00' = TIMESTAMP '2020-01-01 09:00 UTC'", True),
        ("from_unixtime(0, 'Asia/Tokyo') < from_unixtime(1, 'UTC')", True),
    ],
)  # fmt: skip
def test_translated_value(con: Connection, sql: str, expected: Any) -> None:
    assert one(con, f"SELECT {sql}") == expected


def test_parse_datetime_reads_the_joda_pattern(con: Connection) -> None:
    sql = "SELECT parse_datetime('06/Feb/2019:00:00:38', 'dd/MMM/yyyy:HH:mm:ss')"
    assert one(con, sql) == datetime(2019, 2, 6, 0, 0, 38)
    sql = "SELECT parse_datetime('2019-2-6 9:05 pm', 'yyyy-M-d h:mm a')"
    assert one(con, sql) == datetime(2019, 2, 6, 21, 5)


def test_fields_missing_from_the_text_default_as_in_joda(con: Connection) -> None:
    # Joda starts from 1970-01-01 00:00 and reads a two-digit year as 1970..2069.
    sql = "SELECT date_parse('10:00:00.5', '%H:%i:%s.%f')"
    assert one(con, sql) == datetime(1970, 1, 1, 10, 0, 0, 500000)
    assert one(con, "SELECT parse_datetime('10:00', 'HH:mm')") == datetime(1970, 1, 1, 10, 0)
    assert one(con, "SELECT date_parse('69-01-02', '%y-%m-%d')") == datetime(2069, 1, 2)
    assert one(con, "SELECT date_parse('70-01-02', '%y-%m-%d')") == datetime(1970, 1, 2)


def test_text_that_does_not_match_fails_naming_the_athena_pattern(con: Connection) -> None:
    # Athena fails too; the message names the pattern as written, not its translation.
    with pytest.raises(QueryError, match=r"parse_datetime.*'yyyy-MM-dd': 2020-13-01"):
        con.sql("SELECT parse_datetime('2020-13-01', 'yyyy-MM-dd')", dialect="athena")
    assert one(con, "SELECT parse_datetime(NULL, 'yyyy-MM-dd')") is None


def test_parse_datetime_keeps_a_zone_at_the_end(con: Connection) -> None:
    sql = (
        "SELECT to_iso8601(parse_datetime('06/Feb/2019:00:00:38 -0730', 'dd/MMM/yyyy:HH:mm:ss Z'))"
    )
    assert one(con, sql) == "2019-02-06T00:00:38.000-07:30"
    sql = "SELECT to_unixtime(parse_datetime('1970-01-01 01:00 +01:00', 'yyyy-MM-dd HH:mm ZZ'))"
    assert one(con, sql) == 0.0
    sql = (
        "SELECT format_datetime(parse_datetime('2020-01-01 10:00 America/New_York', "
        "'yyyy-MM-dd HH:mm ZZZ'), 'HH:mm ZZ ZZZ')"
    )
    assert one(con, sql) == "10:00 -05:00 America/New_York"


def test_an_unknown_zone_is_an_error_naming_it(con: Connection) -> None:
    with pytest.raises(QueryError, match="unknown time zone 'Mars/Olympus'"):
        con.sql("SELECT now() AT TIME ZONE 'Mars/Olympus'", dialect="athena")
    # Zone names are case-insensitive, as in Athena.
    sql = "SELECT hour(TIMESTAMP '2012-10-31 01:00' AT TIME ZONE 'america/los_angeles')"
    assert one(con, sql) == 18


def test_a_zone_lost_through_a_subquery_is_refused_where_it_matters(con: Connection) -> None:
    cte = "WITH t AS (SELECT TIMESTAMP '2026-12-01 10:00' AT TIME ZONE 'America/Los_Angeles' AS lt)"
    # Field functions read the wall time, which the column keeps.
    assert one(con, f"{cte} SELECT hour(lt) FROM t") == 2
    for use in ("to_unixtime(lt)", "to_iso8601(lt)", "lt > TIMESTAMP '2026-12-01 09:00'"):
        with pytest.raises(QueryRefusedError, match="column lt is a timestamp with time zone"):
            con.sql(f"{cte} SELECT {use} FROM t", dialect="athena")
    # A UTC value's wall time is its instant: nothing is lost.
    sql = "SELECT to_unixtime(u) FROM (SELECT from_unixtime(1) AS u)"
    assert one(con, sql) == 1.0
    # A zone read from the data is checked row by row: CloudTrail's UTC times pass.
    sql = (
        "WITH t AS (SELECT from_iso8601_timestamp(s) AS e FROM (VALUES ({})) AS v(s)) "
        "SELECT count(*) FROM t WHERE e > TIMESTAMP '2019-01-01 00:00'"
    )
    assert one(con, sql.format("'2019-03-12T21:32:00Z'")) == 1
    with pytest.raises(
        QueryError, match=r"column e is a timestamp with time zone.*'s zone is \+01:00"
    ):
        con.sql(sql.format("'2019-03-12T21:32:00+01:00'"), dialect="athena")


def test_zoned_values_sort_by_instant(con: Connection) -> None:
    # 09:00 +01:00 is 08:00 UTC: before 08:30 UTC although its wall time is later.
    sql = (
        "SELECT n FROM (VALUES (1, '2020-01-01T09:00:00+01:00'), (2, '2020-01-01T08:30:00Z')) "
        "AS t(n, s) ORDER BY from_iso8601_timestamp(s)"
    )
    assert con.sql(sql, dialect="athena").fetchall() == [(1,), (2,)]


def test_at_time_zone_of_a_zoned_value_uses_its_instant(con: Connection) -> None:
    sql = (
        "SELECT hour(from_iso8601_timestamp('2020-05-11T11:15:05+01:00') "
        "AT TIME ZONE 'America/Los_Angeles')"
    )
    assert one(con, sql) == 3


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("format_datetime(now(), 'yyyy q')", ("'q'", "format_datetime")),
        ("format_datetime(now(), 'h z')", ("'z'", "ZZZ")),
        ("parse_datetime('+01 2020', 'Z yyyy')", ("'Z'", "from_iso8601_timestamp")),
        ("parse_datetime('24', 'yy')", ("'yy'", "yyyy")),
        ("format_datetime(now(), lower('yyyy'))", ("format_datetime", "literal")),
        ("parse_datetime('2020 5', 'yyyy e')", ("'e'", "parse_datetime reads")),
        ("date_format(now(), '%U')", ("%U", "week()")),
        ("date_diff(lower('day'), now(), now())", ("date_diff", "literal unit")),
        ("now() AT TIME ZONE INTERVAL '1' HOUR", ("AT TIME ZONE", "'-08:00'")),
        ("DATE '2020-01-01' + INTERVAL '2' HOUR", ("hours to a date", "cast")),
        ("date_trunc('hour', DATE '2020-01-01')", ("date_trunc('hour'", "timestamp")),
        ("date_diff('minute', DATE '2020-01-01', current_date)", ("date_diff('minute'",)),
        (
            "from_iso8601_timestamp_nanos('2020-01-01')",
            ("from_iso8601_timestamp_nanos", "from_iso8601_timestamp()"),
        ),
        ("format_datetime(now(), 'yyyy ''T')", ("unterminated quote",)),
    ],
)
def test_untranslatable_is_refused_by_name(con: Connection, sql: str, words: tuple[str]) -> None:
    with pytest.raises(QueryRefusedError) as info:
        con.sql(f"SELECT {sql}", dialect="athena")
    for word in words:
        assert word in str(info.value)


def test_answers_do_not_depend_on_the_machine_time_zone(run_cli: Any) -> None:
    # `loglake query` in a process whose zone is UTC+14: the sandbox's session zone is UTC, as
    # Athena's, so every value is as in UTC.
    sql = (
        "SELECT hour(TIMESTAMP '2012-10-31 01:00' AT TIME ZONE 'America/Los_Angeles') AS h, "
        "to_iso8601(from_unixtime(0)) AS i, current_timezone() AS z, "
        "format_datetime(from_unixtime(0), 'yyyy-MM-dd HH:mm Z') AS f, "
        "to_unixtime(TIMESTAMP '1970-01-02 00:00') AS u, "
        "CAST(date_trunc('day', from_unixtime(72000)) AS varchar) AS d"
    )
    out = run_cli(
        "query", "--dialect", "athena", "--format", "json", sql, env={"TZ": "Pacific/Kiritimati"}
    )
    assert json.loads(out.stdout) == {
        "h": 18,
        "i": "1970-01-01T00:00:00.000Z",
        "z": "UTC",
        "f": "1970-01-01 00:00 +0000",
        "u": 86400.0,
        "d": "1970-01-01 00:00:00.000 UTC",
    }


def test_nested_translations_stay_small() -> None:
    # Each value used several times is computed once (a lambda binding), so nesting does not
    # multiply the SQL: four levels once gave 70 kB.
    sql = (
        "SELECT to_iso8601(date_trunc('hour', from_iso8601_timestamp(s) "
        "AT TIME ZONE 'Europe/Paris') + INTERVAL '1' DAY) FROM t"
    )
    assert len(transpile(sql, "athena")) < 8000


def test_zone_from_a_column(con: Connection) -> None:
    # A column of a derived table is taken as timestamp(6), the lake's columns' type.
    sql = (
        "SELECT hour(t AT TIME ZONE z), to_iso8601(with_timezone(t, z)) FROM (VALUES "
        "(CAST('2026-12-01 10:00' AS timestamp(6)), '+05:30'), "
        "(CAST('2026-12-01 10:00' AS timestamp(6)), 'Asia/Tokyo')) AS v(t, z) ORDER BY 1"
    )
    assert con.sql(sql, dialect="athena").fetchall() == [
        (15, "2026-12-01T10:00:00.000000+05:30"),
        (19, "2026-12-01T10:00:00.000000+09:00"),
    ]
