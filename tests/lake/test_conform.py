"""conform(): which values fit a table's columns, which records are refused, and why."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from loglake.lake.conform import conform, reshape, union_type


def fit(
    values: list[Any], column: pl.DataType, dtype: pl.DataType | None = None
) -> tuple[list[Any], list[str | None]]:
    """Values of one key conformed to a column of type ``column``: (stored values, reasons)."""
    frame = pl.DataFrame({"k": pl.Series(values, dtype=dtype, strict=False)})
    result = conform(frame, {"k": column})
    assert result.rows.schema["k"] == column
    assert result.refused.to_list() == [r is not None for r in result.reasons.to_list()]
    return result.rows.get_column("k").to_list(), result.reasons.to_list()


DRIFT = 'type drift: column "k" is '


def test_table_types_never_change_values_that_fit_are_converted() -> None:
    assert fit(["1", "-7", "2.0", "1e3", None], pl.Int64()) == ([1, -7, 2, 1000, None], [None] * 5)
    assert fit([1.0, -3.0], pl.Int64()) == ([1, -3], [None, None])
    assert fit([1, 2**53], pl.Float64()) == ([1.0, 2.0**53], [None, None])
    assert fit(["1.5", "-2"], pl.Float64()) == ([1.5, -2.0], [None, None])
    assert fit(["true", "false"], pl.Boolean()) == ([True, False], [None, None])
    # Anything has a text form: strings as themselves, other values as compact JSON.
    assert fit([1, 2], pl.String()) == (["1", "2"], [None, None])
    assert fit([True], pl.String()) == (["true"], [None])
    assert fit([{"a": 1}, None], pl.String()) == (['{"a":1}', None], [None, None])
    assert fit([[1, 2], None], pl.String()) == (["[1,2]", None], [None, None])


def test_values_that_would_be_lost_or_changed_are_refused_with_a_reason() -> None:
    stored, why = fit(["abc", "1"], pl.Int64())
    assert stored == [1]
    assert why == [DRIFT + 'BIGINT, this record has string "abc"', None]
    _, why = fit([1.5], pl.Int64())
    assert why == [
        DRIFT + "BIGINT, this record has float 1.5 (not a whole number in range: it would be cut)"
    ]
    _, why = fit([2**53 + 1], pl.Float64())
    assert why == [
        DRIFT + f"DOUBLE, this record has integer {2**53 + 1} (beyond 2**53 it would be rounded)"
    ]
    _, why = fit([2**40], pl.Int32())
    assert why == [DRIFT + f"INTEGER, this record has integer {2**40} (out of range)"]
    _, why = fit([True], pl.Int64())  # a boolean is not the number 1
    assert why == [DRIFT + "BIGINT, this record has boolean true"]
    _, why = fit([1], pl.Boolean())
    assert why == [DRIFT + "BOOLEAN, this record has integer 1"]
    _, why = fit(["yes"], pl.Boolean())
    assert why == [DRIFT + 'BOOLEAN, this record has string "yes"']
    _, why = fit([{"a": 1}], pl.Int64())
    assert why == [DRIFT + 'BIGINT, this record has object {"a":1}']
    _, why = fit(["x" * 100], pl.Int64())
    assert why == [DRIFT + 'BIGINT, this record has string "' + "x" * 60 + '…"']


def test_objects_are_conformed_member_by_member() -> None:
    column = pl.Struct({"a": pl.Int64(), "b": pl.String()})
    frame = pl.DataFrame({"p": [{"a": "1", "c": 2.5}, {"a": "x", "c": None}, None]})
    result = conform(frame, {"p": column})
    # Members the table lacks are kept (schema evolution adds them); missing ones are null.
    assert result.rows.schema["p"] == pl.Struct(
        {"a": pl.Int64(), "b": pl.String(), "c": pl.Float64()}
    )
    assert result.rows.get_column("p").to_list() == [{"a": 1, "b": None, "c": 2.5}, None]
    assert result.reasons.to_list() == [
        None,
        'type drift: column "p.a" is BIGINT, this record has string "x"',
        None,
    ]


def test_arrays_are_conformed_element_by_element() -> None:
    frame = pl.DataFrame({"l": [["1", "2"], [], None, ["3", "x"]]})
    result = conform(frame, {"l": pl.List(pl.Int64())})
    assert result.rows.get_column("l").to_list() == [[1, 2], [], None]
    assert (
        result.reasons.to_list()[3]
        == 'type drift: column "l[]" is BIGINT, this record has string "x"'
    )


def test_json_text_of_a_mixed_type_key_goes_back_into_an_object_column() -> None:
    """The JSON format makes text of a key whose values have mixed types within one batch;
    against an object column that text is decoded again, so only the odd record is refused."""
    column = pl.Struct({"a": pl.Int64()})
    frame = pl.DataFrame({"p": ['{"a":1}', "plain", None, '{"a":2,"b":true}']})
    result = conform(frame, {"p": column})
    assert result.rows.get_column("p").to_list() == [{"a": 1, "b": None}, None, {"a": 2, "b": True}]
    assert result.reasons.to_list() == [
        None,
        'type drift: column "p" is STRUCT (an object), this record has string "plain"',
        None,
        None,
    ]


def test_column_names_are_case_insensitive() -> None:
    # An existing column takes every spelling of its name.
    result = conform(pl.DataFrame({"IP": ["10.0.0.2"]}), {"ip": pl.String()})
    assert result.rows.to_dicts() == [{"ip": "10.0.0.2"}]
    # New spellings: the first one seen names the column; equal values or one null merge.
    frame = pl.DataFrame(
        {
            "ip": ["10.0.0.1", None, "10.0.0.3", "10.0.0.4"],
            "IP": [None, "10.0.0.2", "10.0.0.3", "10.0.0.5"],
        }
    )
    result = conform(frame, {})
    assert result.rows.to_dicts() == [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}]
    assert result.reasons.to_list() == [
        None,
        None,
        None,
        'keys "ip" and "IP" differ only in case and hold different values '
        "(column names are case-insensitive)",
    ]
    # Different types under two spellings: text, as for one key with mixed types.
    result = conform(pl.DataFrame({"n": [1, None], "N": [None, "abc"]}), {})
    assert result.rows.to_dicts() == [{"n": "1"}, {"n": "abc"}]


def test_object_members_are_case_insensitive_too() -> None:
    frame = pl.DataFrame({"p": [{"a": 1, "A": None}, {"a": None, "A": 2}, {"a": 3, "A": 4}]})
    result = conform(frame, {})
    assert result.rows.get_column("p").to_list() == [{"a": 1}, {"a": 2}]
    assert result.reasons[2] == (
        'in p: keys "a" and "A" differ only in case and hold different values '
        "(column names are case-insensitive)"
    )


def test_new_columns_get_storable_types() -> None:
    decoded = pl.Series(
        ['{"e": {}, "le": [{}], "o": {"e": {}, "x": 1}, "n": null}']
    ).str.json_decode(infer_schema_length=None)
    result = conform(decoded.struct.unnest(), {})
    # `{}` has no value a column can hold (Parquet has no empty group): null until it has members.
    assert result.rows.schema == pl.Schema({"o": pl.Struct({"x": pl.Int64()}), "n": pl.String()})
    assert result.rows.to_dicts() == [{"o": {"x": 1}, "n": None}]
    huge = conform(pl.DataFrame({"u": pl.Series([2**64 - 1], dtype=pl.UInt64)}), {})
    assert huge.rows.to_dicts() == [{"u": str(2**64 - 1)}]


def test_an_empty_object_in_an_object_column_is_an_object_of_nulls() -> None:
    frame = pl.DataFrame({"p": pl.Series([{}], dtype=pl.Struct({}))})
    result = conform(frame, {"p": pl.Struct({"a": pl.Int64()})})
    assert result.rows.get_column("p").to_list() == [{"a": None}]


def test_partition_field_names_are_not_taken_by_new_columns() -> None:
    result = conform(pl.DataFrame({"TS_DAY": [1], "ts_day_raw": [2]}), {}, reserved=["ts_day"])
    assert result.rows.to_dicts() == [{"TS_DAY_raw_raw": 1, "ts_day_raw": 2}]


def test_rows_that_fit_as_they_are_pass_untouched() -> None:
    frame = pl.DataFrame({"a": [1, 2], "b": ["x", None]})
    result = conform(frame, {"a": pl.Int64(), "b": pl.String(), "c": pl.Float64()})
    assert result.rows is frame
    assert not result.refused.any()


@pytest.mark.parametrize(
    ("a", "b", "union"),
    [
        (pl.Int64(), pl.Float64(), pl.Float64()),
        (pl.Int64(), pl.String(), None),
        (
            pl.Struct({"a": pl.Int64()}),
            pl.Struct({"A": pl.Int64(), "b": pl.String()}),
            pl.Struct({"a": pl.Int64(), "b": pl.String()}),
        ),
        (
            pl.List(pl.Struct({"a": pl.Int64()})),
            pl.List(pl.Struct({"b": pl.Boolean()})),
            pl.List(pl.Struct({"a": pl.Int64(), "b": pl.Boolean()})),
        ),
    ],
)
def test_union_type(a: pl.DataType, b: pl.DataType, union: pl.DataType | None) -> None:
    assert union_type(a, b) == union


def test_reshape_matches_members_by_name() -> None:
    s = pl.Series("p", [{"b": "x", "a": 1}, None])
    target = pl.Struct({"a": pl.Int64(), "c": pl.List(pl.Int64()), "b": pl.String()})
    assert reshape(s, target).to_list() == [{"a": 1, "c": None, "b": "x"}, None]
    nested = pl.Series("l", [[{"b": 1}], None, []])
    assert reshape(nested, pl.List(pl.Struct({"a": pl.String(), "b": pl.Int64()}))).to_list() == [
        [{"a": None, "b": 1}],
        None,
        [],
    ]


def test_a_spelling_without_storable_value_does_not_hide_a_clash() -> None:
    frame = pl.DataFrame(
        {
            "ab": pl.Series([{}], dtype=pl.Struct({})),
            "AB": [1],
            "Ab": [2],
        }
    )
    result = conform(frame, {})
    assert result.reasons.to_list() == [
        'keys "AB" and "Ab" differ only in case and hold different values '
        "(column names are case-insensitive)"
    ]


def test_a_table_that_already_has_two_spellings_fills_the_first() -> None:
    """Tables written before names were case-insensitive may have `ip` and `IP`: new values of
    either spelling go to the first one (table order), so they all meet in one column."""
    columns = {"ip": pl.String(), "IP": pl.String()}
    result = conform(pl.DataFrame({"IP": ["10.0.0.9"]}), columns)
    assert result.rows.to_dicts() == [{"ip": "10.0.0.9"}]


def test_keys_with_a_nul_character_refuse_only_the_records_that_use_them() -> None:
    """A NUL in a key (top level, in an object, in an array of objects) made Polars panic when the
    frame went to Arrow, which killed a stream's delivery thread; no column name can hold one."""
    frame = pl.DataFrame(
        {
            "n": [1, 2, 3, 4],
            "x\x00y": [None, 4, None, None],
            "o": [{"a\x00b": 1, "c": 2}, None, {"a\x00b": None, "c": 3}, None],
            "l": [None, None, None, [{"q\x00": 1, "r": 2}]],
        }
    )
    result = conform(frame, {})
    assert result.refused.to_list() == [True, True, False, True]
    assert result.reasons.to_list()[:2] == [
        'key "o.a\\u0000b" contains a NUL character, which no column name can hold',
        'key "x\\u0000y" contains a NUL character, which no column name can hold',
    ]
    assert result.rows.to_dicts() == [{"n": 3, "o": {"c": 3}, "l": None}]
    assert "\x00" not in str(result.rows.to_arrow().schema)
