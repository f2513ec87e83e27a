"""Formats with a fixed list of fields: one anchored regular expression and a typed column per field.

The AWS access logs (ALB, CLB, S3) and the Apache and nginx error logs are such formats. A
:class:`FieldedFormat` extracts every field of a batch with one ``str.extract_groups`` pass, casts
each column to its type, derives ``ts`` (the event time in UTC) from the column the format names,
and rejects the lines the regex does not match, empty lines, and lines whose time is not a real
time. No Python runs per line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from loglake.formats.base import LineBatch, ParseResult

#: Column types by the name Athena gives them (``CREATE TABLE``), as Polars types.
ATHENA_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int": pl.Int32(),
    "bigint": pl.Int64(),
    "double": pl.Float64(),
    "float": pl.Float32(),
    "date": pl.Date(),
}

#: Turns the text of the time column into a zone-aware UTC datetime (null when not a real time).
TimeParser = Callable[[pl.Expr], pl.Expr]


@dataclass(frozen=True)
class Column:
    """One output column: its name, Athena type name and what happens to ``-`` and empty text.

    ``dash_null`` makes ``-`` null in a text column (numbers are null for ``-`` always, as
    Athena's SerDes read them); an empty text value is always null.
    """

    name: str
    type: str = "string"
    dash_null: bool = False

    def expr(self) -> pl.Expr:
        """The cast of the regex group of the same name to this column's type."""
        col = pl.col(self.name)
        if self.type == "string":
            empty = col == ""
            if self.dash_null:
                empty = empty | (col == "-")
            return pl.when(empty).then(None).otherwise(col).alias(self.name)
        return col.cast(ATHENA_TYPES[self.type], strict=False).alias(self.name)


def utc_time(fmt: str) -> TimeParser:
    """A parser for times written in UTC with the strptime format ``fmt`` (no offset in it)."""

    def parse(text: pl.Expr) -> pl.Expr:
        return text.str.strptime(pl.Datetime("us"), fmt, strict=False).dt.replace_time_zone("UTC")

    return parse


def offset_time(fmt: str) -> TimeParser:
    """A parser for times carrying their own offset (``fmt`` ends with ``%z``)."""

    def parse(text: pl.Expr) -> pl.Expr:
        return text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False)

    return parse


def local_time(fmt: str, timezone: str) -> TimeParser:
    """A parser for local times without a zone, taken to be in ``timezone``.

    A time a DST change repeats is its first occurrence; one a DST change skips is null.
    """

    def parse(text: pl.Expr) -> pl.Expr:
        naive = text.str.strptime(pl.Datetime("us"), fmt, strict=False)
        return naive.dt.replace_time_zone(
            timezone, ambiguous="earliest", non_existent="null"
        ).dt.convert_time_zone("UTC")

    return parse


class FieldedFormat:
    """Base of the formats whose lines are one regex with a named group per column.

    A subclass sets ``name``, ``regex``, ``columns`` (the table columns in order, each a group of
    ``regex`` or made by :meth:`derive`), ``time_column`` (the group ``ts`` comes from, through
    :meth:`parse_time`), ``description`` (used in the reasons of rejected lines) and
    ``default_table``.
    """

    name: str = "fielded"
    regex: ClassVar[str]
    columns: ClassVar[tuple[Column, ...]]
    time_column: ClassVar[str]
    description: ClassVar[str]
    default_table: ClassVar[str]
    enrich: ClassVar[tuple[str, ...]] = ()

    def parse_time(self, text: pl.Expr) -> pl.Expr:
        """``ts`` (zone-aware UTC) from the text of ``time_column``; null when not a real time."""
        raise NotImplementedError

    def derive(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Columns made from others after the casts (none by default)."""
        return frame

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """The parsed columns and their types, ``ts`` first (``line`` follows them)."""
        return {
            "ts": pl.Datetime("us", "UTC"),
            **{c.name: ATHENA_TYPES[c.type] for c in self.columns},
        }

    def match_rate(self, sample: pl.Series) -> float:
        """Fraction of ``sample`` lines this format's regex matches."""
        if len(sample) == 0:
            return 0.0
        return int(sample.str.contains(self.regex).fill_null(False).sum()) / len(sample)

    def parse(self, batch: LineBatch) -> ParseResult:
        """Parse every line of ``batch``; lines that do not fit go to ``rejected`` with a reason.

        Never raises for bad input: ``parsed.height + rejected.height == len(batch)``.
        """
        line_no = batch.line_numbers()
        groups = batch.text.str.extract_groups(self.regex).struct.unnest()
        matched = groups.get_column(self.time_column).is_not_null()
        frame = groups.with_columns(line_no).filter(matched)
        frame = frame.select(
            self.parse_time(pl.col(self.time_column)).alias("ts"),
            *(c.expr() for c in self.columns if c.name in frame.columns),
            pl.col("line"),
        )
        frame = self.derive(frame)
        frame = frame.select(
            *(
                pl.col(name).cast(dtype)
                if name in frame.columns
                else pl.lit(None, dtype=dtype).alias(name)
                for name, dtype in self.schema.items()
            ),
            pl.col("line"),
        )
        bad_ts = frame.get_column("ts").is_null()
        bad_lines = frame.get_column("line").filter(bad_ts)
        if len(bad_lines):
            frame = frame.filter(~bad_ts)
        unmatched = line_no.filter(~matched)
        if len(unmatched) == 0 and len(bad_lines) == 0:
            return ParseResult(parsed=frame, rejected=batch.rejected(None, pl.lit("")))
        reasons = (
            pl.when(pl.col("text").str.len_bytes() == 0)
            .then(pl.lit("empty line"))
            .when(pl.col("line").is_in(bad_lines.implode()))
            .then(pl.lit("invalid timestamp"))
            .otherwise(pl.lit(f"does not match the {self.description} format"))
        )
        mask = line_no.is_in(unmatched.implode()) | line_no.is_in(bad_lines.implode())
        return ParseResult(parsed=frame, rejected=batch.rejected(mask, reasons))
