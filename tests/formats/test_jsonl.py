"""JSON lines: the real GitHub Archive sample, time fields, rejects, mixed types, reserved keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from loglake.errors import FormatError
from loglake.formats import detect_format, get_format
from loglake.formats.base import ParseResult
from loglake.formats.jsonl import MAX_DEPTH, JsonFormat, json_format
from loglake.formats.lines import line_batch

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GHARCHIVE = DATA / "gharchive_50.jsonl"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def parse(data: bytes | str | list[str], **options: object) -> ParseResult:
    return parse_at(data, 1, **options)


def parse_at(data: bytes | str | list[str], first_line: int, **options: object) -> ParseResult:
    """Parse ``data`` as one batch whose first line is ``first_line``; counts must add up."""
    if isinstance(data, list):
        data = "\n".join(data)
    raw = data.encode() if isinstance(data, str) else data
    batch = line_batch(raw, first_line, "test")
    result = json_format("json", **options).parse(batch)
    assert result.parsed.height + result.rejected.height == len(batch)
    return result


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- the real GitHub Archive sample -------------------------------------------------------------


@pytest.fixture(scope="module")
def events() -> list[dict[str, object]]:
    return [json.loads(line) for line in GHARCHIVE.read_text().splitlines()]


@pytest.fixture(scope="module")
def gh() -> ParseResult:
    return parse(GHARCHIVE.read_bytes(), ts_field="created_at")


def test_gharchive_all_lines_parse(gh: ParseResult, events: list[dict[str, object]]) -> None:
    assert len(events) == 50
    assert gh.rejected.height == 0
    assert gh.parsed.height == 50
    keys = list(dict.fromkeys(k for e in events for k in e))
    assert gh.parsed.columns == ["ts", "ts_missing", *keys, "line"]
    assert keys == ["id", "type", "actor", "repo", "payload", "public", "created_at", "org"]
    schema = gh.parsed.schema
    assert schema["ts"] == pl.Datetime("us", "UTC")
    assert schema["ts_missing"] == pl.Boolean
    assert schema["line"] == pl.Int64
    assert isinstance(schema["actor"], pl.Struct)
    assert isinstance(schema["payload"], pl.Struct)
    assert schema["public"] == pl.Boolean
    assert gh.parsed.get_column("line").to_list() == list(range(1, 51))


def test_gharchive_nested_fields(gh: ParseResult, events: list[dict[str, object]]) -> None:
    logins = gh.parsed.select(pl.col("actor").struct.field("login")).to_series().to_list()
    assert logins[0] == "mujianwu"
    assert logins == [e["actor"]["login"] for e in events]  # type: ignore[index]
    row = gh.parsed.row(3, named=True)
    assert row["type"] == events[3]["type"] == "PullRequestEvent"
    assert row["repo"]["name"] == events[3]["repo"]["name"]  # type: ignore[index]
    assert row["id"] == events[3]["id"]
    # Keys that only some event types have are null elsewhere (org is missing in some events).
    has_org = [("org" in e) for e in events]
    assert gh.parsed.get_column("org").is_not_null().to_list() == has_org
    # Arrays stay lists: the commits of push events.
    commits = gh.parsed.select(pl.col("payload").struct.field("commits")).to_series()
    assert isinstance(commits.dtype, pl.List)
    first_push = next(i for i, e in enumerate(events) if e["type"] == "PushEvent")
    expected = [c["sha"] for c in events[first_push]["payload"]["commits"]]  # type: ignore[index]
    assert [c["sha"] for c in commits[first_push]] == expected


def test_gharchive_ts_from_created_at(gh: ParseResult, events: list[dict[str, object]]) -> None:
    expected = [datetime.fromisoformat(str(e["created_at"])) for e in events]
    assert gh.parsed.get_column("ts").to_list() == expected
    assert gh.parsed.get_column("ts_missing").sum() == 0
    assert gh.parsed.get_column("created_at").to_list() == [e["created_at"] for e in events]


def test_gharchive_default_ts_field_falls_back_to_created_at(gh: ParseResult) -> None:
    result = parse(GHARCHIVE.read_bytes())
    assert result.parsed.get_column("ts").to_list() == gh.parsed.get_column("ts").to_list()
    assert not result.parsed.get_column("ts_missing").any()


def test_gharchive_is_detected_as_json() -> None:
    sample = pl.Series(GHARCHIVE.read_text().splitlines())
    assert json_format("json").match_rate(sample) == 1.0
    fmt = detect_format(sample)
    assert fmt is not None
    assert fmt.name == "json"
    assert fmt.default_table == "logs.json"
    syslog = pl.Series((DATA / "syslog_linux_2k.log").read_text().splitlines()[:100])
    assert json_format("json").match_rate(syslog) == 0.0


# -- time ----------------------------------------------------------------------------------------


def test_ts_formats() -> None:
    result = parse(
        [
            '{"ts": "2024-01-01T10:00:00Z"}',
            '{"ts": "2024-01-01T10:00:00.123456+02:00"}',
            '{"ts": "2024-01-01T10:00:00"}',
            '{"ts": "2024-01-01 10:00:00.5"}',
            '{"ts": "2024-01-01T10:00:00-0530"}',
            '{"ts": "2024-01-01"}',
        ],
        now=NOW,
    )
    assert result.parsed.get_column("ts").to_list() == [
        utc(2024, 1, 1, 10),
        datetime(2024, 1, 1, 8, 0, 0, 123456, tzinfo=UTC),
        utc(2024, 1, 1, 10),  # no offset: UTC
        datetime(2024, 1, 1, 10, 0, 0, 500000, tzinfo=UTC),
        utc(2024, 1, 1, 15, 30),
        utc(2024, 1, 1),
    ]
    assert not result.parsed.get_column("ts_missing").any()
    assert "ts" not in result.parsed.columns[2:]  # the original ts key is replaced


def test_ts_epoch_numbers() -> None:
    expected = datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)
    result = parse(
        [
            '{"ts": 1700000000.5}',
            '{"ts": 1700000000500}',
            '{"ts": 1700000000500000}',
            '{"ts": 1700000000500000000}',
        ],
        now=NOW,
    )
    assert result.parsed.get_column("ts").to_list() == [expected] * 4
    result = parse(['{"time": 1700000000}', '{"time": 0}'], now=NOW)
    assert result.parsed.get_column("ts").to_list() == [
        utc(2023, 11, 14, 22, 13, 20),
        utc(1970, 1, 1),
    ]


def test_missing_or_bad_ts_gets_now() -> None:
    result = parse(
        [
            '{"msg": "no time"}',
            '{"ts": "not a time", "msg": "bad"}',
            '{"ts": null, "@timestamp": "2024-05-05T00:00:00Z"}',
            '{"ts": true}',
        ],
        now=NOW,
    )
    assert result.parsed.get_column("ts").to_list() == [NOW, NOW, utc(2024, 5, 5), NOW]
    assert result.parsed.get_column("ts_missing").to_list() == [True, True, False, True]
    assert result.parsed.get_column("@timestamp").to_list() == [
        None,
        None,
        "2024-05-05T00:00:00Z",
        None,
    ]


def test_default_now_is_the_parse_time() -> None:
    before = datetime.now(UTC)
    result = parse(['{"msg": "no time"}'])
    after = datetime.now(UTC)
    ts = result.parsed.get_column("ts")[0]
    assert before - timedelta(milliseconds=1) <= ts <= after
    assert result.parsed.get_column("ts_missing").to_list() == [True]


def test_explicit_ts_field_reads_only_that_field() -> None:
    result = parse(
        ['{"when": "2024-01-01T00:00:00Z", "ts": "x"}', '{"timestamp": "2024-01-01T00:00:00Z"}'],
        ts_field="when",
        now=NOW,
    )
    assert result.parsed.get_column("ts").to_list() == [utc(2024, 1, 1), NOW]
    assert result.parsed.get_column("ts_missing").to_list() == [False, True]
    # `ts` is not the time field here: the original is kept as ts_raw; `when` stays as it was.
    assert result.parsed.columns == ["ts", "ts_missing", "when", "ts_raw", "timestamp", "line"]
    assert result.parsed.get_column("ts_raw").to_list() == ["x", None]
    assert result.parsed.get_column("when").to_list() == ["2024-01-01T00:00:00Z", None]


def test_reserved_keys_are_renamed() -> None:
    result = parse(
        ['{"line": 7, "ts_missing": "no", "source": "app", "ingested_at": 1, "line_raw": 0}'],
        now=NOW,
    )
    row = result.parsed.row(0, named=True)
    assert result.parsed.columns == [
        "ts",
        "ts_missing",
        "line_raw_raw",
        "ts_missing_raw",
        "source_raw",
        "ingested_at_raw",
        "line_raw",
        "line",
    ]
    assert (row["line_raw_raw"], row["line_raw"], row["line"]) == (7, 0, 1)
    assert (row["ts_missing_raw"], row["ts_missing"]) == ("no", True)
    assert row["source_raw"] == "app"


def test_reserved_keys_are_matched_in_any_case() -> None:
    """Column names are case-insensitive in the lake: a log's own `Source` would otherwise meet
    the `source` column ingest adds (and every record holding it be refused as a clash)."""
    result = parse(['{"Source": "app", "LINE": 3, "TS": "x", "Source_raw": 1}'], now=NOW)
    assert result.parsed.columns == [
        "ts",
        "ts_missing",
        "Source_raw_raw",
        "LINE_raw",
        "TS_raw",
        "Source_raw",
        "line",
    ]
    row = result.parsed.row(0, named=True)
    assert (row["Source_raw_raw"], row["LINE_raw"], row["TS_raw"], row["Source_raw"]) == (
        "app",
        3,
        "x",
        1,
    )


# -- rejects -------------------------------------------------------------------------------------


def test_invalid_non_object_and_empty_lines_are_rejected() -> None:
    lines = [
        b'{"a": 1, "ts": "2024-01-01T00:00:00Z"}',
        b"",
        b"[1,2]",
        b'"x"',
        b"3",
        b"null",
        b"{bad json}",
        b"not json at all",
        b'{"a": 2}',
        b'{"cut": "off',
        b"   ",
        b'{"v": NaN}',
        b'{"a": 1} {"b": 2}',
        b'\xff{"a": 3}',
        b'  {"a": 4}  ',
    ]
    result = parse_at(b"\n".join(lines), 10, now=NOW)
    assert result.parsed.get_column("line").to_list() == [10, 18, 24]
    assert result.parsed.get_column("a").to_list() == [1, 2, 4]
    rejected = {line: (raw, reason) for line, raw, reason in result.rejected.iter_rows()}
    assert sorted(rejected) == [11, 12, 13, 14, 15, 16, 17, 19, 20, 21, 22, 23]
    assert result.rejected.height + result.parsed.height == len(lines)
    assert rejected[11] == (b"", "empty line")
    assert rejected[20] == (b"   ", "empty line")
    for line in (12, 13, 14, 15):
        assert rejected[line][1] == "not a JSON object"
    assert rejected[12][0] == b"[1,2]"
    assert rejected[16][1].startswith("invalid JSON: Expecting property name")
    assert rejected[17][1] == "invalid JSON: Expecting value: line 1 column 1 (char 0)"
    assert rejected[19][1].startswith("invalid JSON: Unterminated string")
    assert rejected[21][1] == "invalid JSON: NaN is not valid JSON"
    assert rejected[22][1].startswith("invalid JSON: Extra data")
    assert rejected[23] == (
        b'\xff{"a": 3}',
        "invalid JSON: Expecting value: line 1 column 1 (char 0)",
    )


def test_a_bad_line_among_many_good_ones() -> None:
    lines = [json.dumps({"n": i, "ts": 1700000000 + i}) for i in range(300)]
    lines[150] = '{"n": 150, "ts": '
    result = parse(lines)
    assert result.parsed.height == 299
    assert result.rejected.get_column("line").to_list() == [151]
    assert result.parsed.get_column("n").to_list() == [i for i in range(300) if i != 150]
    assert result.parsed.schema["n"] == pl.Int64


def test_too_deep_is_rejected_not_decoded() -> None:
    deep = '{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1)
    ok = '{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH
    brackets_in_text = '{"s": "' + "{[" * 100 + '"}'
    result = parse([deep, ok, brackets_in_text])
    assert result.parsed.get_column("line").to_list() == [2, 3]
    assert result.rejected.rows() == [
        (1, deep.encode(), f"JSON nested deeper than {MAX_DEPTH} levels")
    ]


# -- schema --------------------------------------------------------------------------------------


def test_schema_inferred_from_every_line() -> None:
    lines = [json.dumps({"n": i}) for i in range(500)] + ['{"n": 500, "late": {"x": 1.5}}']
    result = parse(lines)
    assert result.parsed.schema["late"] == pl.Struct({"x": pl.Float64})
    assert result.parsed.get_column("late").to_list()[-2:] == [None, {"x": 1.5}]


def test_mixed_types_become_text() -> None:
    result = parse(
        [
            '{"id": 1, "err": "boom", "flag": true, "n": 1, "obj": {"a": 1}, "num": 1}',
            '{"id": "abc", "err": {"code": 5}, "flag": 1, "n": 2.5, "obj": {"a": {"b": 2}}}',
            '{"id": null, "err": [1, "x"], "flag": false, "n": 3, "obj": null, "num": 2.5}',
        ],
        now=NOW,
    )
    frame = result.parsed
    assert frame.schema["id"] == pl.String
    assert frame.get_column("id").to_list() == ["1", "abc", None]
    assert frame.get_column("err").to_list() == ["boom", '{"code":5}', '[1,"x"]']
    assert frame.schema["flag"] == pl.String
    assert frame.get_column("flag").to_list() == ["true", "1", "false"]
    # Integers and floats are both numbers: not mixed.
    assert frame.schema["n"] == pl.Float64
    assert frame.get_column("n").to_list() == [1.0, 2.5, 3.0]
    assert frame.schema["num"] == pl.Float64
    # Objects that conflict inside make the whole key text.
    assert frame.get_column("obj").to_list() == ['{"a":1}', '{"a":{"b":2}}', None]


def test_numbers_and_strings_in_one_key() -> None:
    result = parse(['{"id": 1, "ok": true}', '{"id": "abc", "ok": false}', '{"id": 2.5}'])
    assert result.parsed.get_column("id").to_list() == ["1", "abc", "2.5"]
    assert result.parsed.get_column("ok").to_list() == [True, False, None]


def test_bool_and_number_in_one_key() -> None:
    result = parse(['{"v": true, "w": 1}', '{"v": 2, "w": 3, "x": {"v": true}}'])
    assert result.parsed.get_column("v").to_list() == ["true", "2"]
    # `w` is numbers only; a nested `v` boolean does not make it text.
    assert result.parsed.get_column("w").to_list() == [1, 3]


def test_duplicate_keys_first_value_wins() -> None:
    assert parse(['{"a": 1, "a": 2}']).parsed.get_column("a").to_list() == [1]
    result = parse(['{"a": 1, "b": 3, "a": 2}', '{"a": 5}', "oops"])
    assert result.parsed.get_column("a").to_list() == [1, 5]
    assert result.parsed.get_column("b").to_list() == [3, None]


def test_objects_without_keys_and_null_only_keys() -> None:
    result = parse(["{}", "{ }", '{"n": null}'], now=NOW)
    assert result.parsed.height == 3
    assert result.parsed.columns == ["ts", "ts_missing", "n", "line"]
    assert result.parsed.schema["n"] == pl.String
    assert result.parsed.get_column("ts_missing").to_list() == [True, True, True]
    only_empty = parse(["{}", "{}"], now=NOW)
    assert only_empty.parsed.columns == ["ts", "ts_missing", "line"]
    assert only_empty.parsed.get_column("line").to_list() == [1, 2]


def _leaf_types(dtype: pl.DataType) -> set[type[pl.DataType]]:
    if isinstance(dtype, pl.Struct):
        return set().union(*(_leaf_types(f.dtype) for f in dtype.fields))  # type: ignore[arg-type]
    if isinstance(dtype, pl.List):
        return _leaf_types(dtype.inner)  # type: ignore[arg-type]
    return {type(dtype)}


def test_gharchive_types_are_storable(gh: ParseResult) -> None:
    # GitHub events hold always-empty arrays (assignees...) that Polars types as List(Null).
    leaves = set().union(*(_leaf_types(dtype) for dtype in gh.parsed.schema.values()))
    assert pl.Null not in leaves
    assert pl.Int128 not in leaves
    assert pl.String in leaves


def test_nulls_and_huge_integers_become_strings() -> None:
    result = parse(
        [
            '{"a": null, "b": {"c": null, "d": [null]}, "e": [], "big": 18446744073709551615}',
            '{"big": 1, "b": {"c": null}}',
        ]
    )
    frame = result.parsed
    assert frame.schema["a"] == pl.String
    assert frame.schema["b"] == pl.Struct({"c": pl.String, "d": pl.List(pl.String)})
    assert frame.schema["e"] == pl.List(pl.String)
    assert frame.get_column("big").to_list() == ["18446744073709551615", "1"]
    assert frame.get_column("b").to_list() == [{"c": None, "d": [None]}, {"c": None, "d": None}]


def test_empty_batch() -> None:
    result = parse(b"")
    assert result.parsed.height == 0
    assert result.parsed.columns == ["ts", "ts_missing", "line"]
    assert result.rejected.height == 0


# -- factory -------------------------------------------------------------------------------------


def test_registry_and_options() -> None:
    for name in ("json", "jsonl"):
        fmt = get_format(name, timezone="UTC", ts_field="ts")  # other formats' options are ignored
        assert isinstance(fmt, JsonFormat)
        assert fmt.name == name
        assert fmt.enrich == ()
    with pytest.raises(FormatError, match="ts_field"):
        json_format("json", ts_field=3)
    with pytest.raises(FormatError, match="now"):
        json_format("json", now="2024-01-01")
