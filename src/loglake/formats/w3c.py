"""W3C extended log files: IIS and other servers (``w3c``) and CloudFront standard logs
(``cloudfront``).

A W3C file declares its columns in a ``#Fields:`` directive; the lines after it hold one value per
field, separated by spaces (``w3c``) or tabs (``cloudfront``). Each field becomes a column named
after it in snake case (``cs-uri-stem`` → ``cs_uri_stem``, ``cs(User-Agent)`` →
``cs_user_agent``), as Athena's ``cloudfront_standard_logs`` table names them (with its one
spelling change, ``cs(Referer)`` → ``cs_referrer``, for CloudFront). Known fields get a type
(``sc-status`` int, ``sc-bytes`` bigint, ``date`` date, ...), the others are text. ``ts`` is
``date`` + ``time``, which W3C writes in UTC; records with a time but no date field take the date
of the last ``#Date:`` directive (as IIS's FTP logs need), kept in ``date``.

A batch is parsed per distinct ``#Fields:`` list (a file may hold several directives, after a
server restart; concatenated files repeat the same one), the lines under each list with one
``str.split`` and a ``list.get`` per field. The directive in force at the end of a batch carries
over to the next batch of the same input (same source, next line), never to another input.
Lines before any directive use the producer's default field list (CloudFront's 33 fields, IIS's
15) when their number of values fits it.

Directive lines (``#Version``, ``#Fields``, ``#Software``, ``#Date``...) are not records: they are
kept in ``logs.rejected`` with the reason ``W3C directive line: not a record``. A line whose number
of values differs from its ``#Fields`` is rejected with both numbers in the reason.
"""

from __future__ import annotations

import re
from typing import ClassVar

import polars as pl

from loglake.errors import FormatError
from loglake.formats.base import LineBatch, ParseResult
from loglake.formats.fielded import ATHENA_TYPES

#: The reason a directive line is kept under in logs.rejected (ingest counts these apart).
DIRECTIVE_REASON = "W3C directive line: not a record"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: CloudFront's standard log fields, in order (the documented ``#Fields:`` of its files).
CLOUDFRONT_FIELDS: tuple[str, ...] = _words(
    "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status "
    "cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id "
    "x-host-header cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher "
    "x-edge-response-result-type cs-protocol-version fle-status fle-encrypted-fields c-port "
    "time-to-first-byte x-edge-detailed-result-type sc-content-type sc-content-len "
    "sc-range-start sc-range-end"
)
#: IIS's default W3C fields (what a new site logs).
IIS_FIELDS: tuple[str, ...] = _words(
    "date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
    "cs(Referer) sc-status sc-substatus sc-win32-status time-taken"
)

# Athena types of CloudFront's fields (its `cloudfront_standard_logs` table); text otherwise.
_CLOUDFRONT_TYPES = {
    "date": "date",
    "sc_bytes": "bigint",
    "sc_status": "int",
    "cs_bytes": "bigint",
    "time_taken": "float",
    "fle_encrypted_fields": "int",
    "c_port": "int",
    "time_to_first_byte": "float",
    "sc_content_len": "bigint",
    "sc_range_start": "bigint",
    "sc_range_end": "bigint",
}
# Types of the common W3C/IIS fields; `time-taken` is milliseconds in IIS, seconds elsewhere.
_W3C_TYPES = {
    "date": "date",
    "s_port": "int",
    "c_port": "int",
    "sc_status": "int",
    "sc_substatus": "int",
    "sc_win32_status": "bigint",
    "sc_bytes": "bigint",
    "cs_bytes": "bigint",
    "time_taken": "double",
}
_DIRECTIVE = r"^#(?:Version|Fields|Software|Date|Start-Date|End-Date|Remark)\b"
# Column names loglake adds itself; a field spelled so keeps its value as `<name>_raw`.
_RESERVED = {"ts", "line", "source", "ingested_at"}


def column_name(field: str, renames: dict[str, str] | None = None) -> str:
    """The column a W3C field becomes: ``cs(User-Agent)`` → ``cs_user_agent``."""
    name = re.sub(r"[^0-9a-z]+", "_", field.lower()).strip("_")
    name = (renames or {}).get(name, name)
    return f"{name}_raw" if name in _RESERVED else name


class W3CFormat:
    """W3C extended log format; the ``#Fields:`` directive decides the columns.

    ``separator`` is what splits values (space for IIS, tab for CloudFront); ``dash_null`` makes
    ``-`` null in text columns (W3C's "no value"; CloudFront keeps it, as Athena does).
    """

    name: str = "w3c"
    default_table: ClassVar[str] = "logs.w3c"
    enrich: ClassVar[tuple[str, ...]] = ()
    separator: ClassVar[str] = " "
    dash_null: ClassVar[bool] = True
    default_fields: ClassVar[tuple[str, ...]] = IIS_FIELDS
    types: ClassVar[dict[str, str]] = _W3C_TYPES
    renames: ClassVar[dict[str, str]] = {}
    description: ClassVar[str] = "W3C extended log"

    def __init__(self) -> None:
        # What is in force at the end of the last batch: its source, its next line, the #Fields
        # list and the date of the last #Date directive.
        self._carry: tuple[str, int, tuple[str, ...] | None, str | None] | None = None

    def match_rate(self, sample: pl.Series) -> float:
        """Fraction of ``sample`` lines that are W3C directives or records fitting them."""
        if len(sample) == 0:
            return 0.0
        # Cheap test first (detection tries every format on every input): W3C records start
        # with a date and a time, or the file with directives.
        start = rf"^\d{{4}}-\d{{2}}-\d{{2}}{self.separator}\d{{2}}:\d{{2}}"
        if not sample.str.contains(f"{start}|{_DIRECTIVE}").any():
            return 0.0
        probe = type(self)()  # a fresh parser: detection must not change this one's state
        result = probe.parse(
            LineBatch(text=sample, raw=sample.cast(pl.Binary).to_arrow(), first_line=1, source="")
        )
        directives = int(sample.str.contains(_DIRECTIVE).sum())
        if result.parsed.height == 0:
            return 0.0
        return (result.parsed.height + directives) / len(sample)

    def parse(self, batch: LineBatch) -> ParseResult:
        """Parse every line of ``batch``; directives and lines that do not fit are rejected.

        Never raises for bad input: ``parsed.height + rejected.height == len(batch)``.
        """
        # A file saved with a byte order mark has it before its first directive.
        text = batch.text.str.strip_prefix("\ufeff")
        line_no = batch.line_numbers()
        is_directive = text.str.starts_with("#").fill_null(False)
        is_fields = text.str.starts_with("#Fields:").fill_null(False)
        carry = self._carry
        # Fields carry over only to the next batch of the same input, never to another input.
        carried, carried_date = None, None
        if carry is not None and carry[:2] == (batch.source, batch.first_line):
            carried, carried_date = carry[2], carry[3]
        # The #Fields directive in force on each line, grouped by its text: a few distinct lists
        # however many directives (concatenated files repeat the same one).
        header = (
            pl.Series("header", text)
            .zip_with(is_fields, pl.Series([None], dtype=pl.String))
            .str.strip_prefix("#Fields:")
            .str.replace_all(r"\s+", " ")
            .str.strip_chars()
            .forward_fill()
        )
        # The date of the last #Date (or #Start-Date) directive: the date of records whose
        # fields have a time but no date (W3C allows it; IIS's FTP logs do it).
        day = (
            text.str.extract(r"^#(?:Start-)?Date:\s*(\d{4}-\d{2}-\d{2})", 1)
            .forward_fill()
            .fill_null(pl.lit(carried_date, dtype=pl.String))
        )
        frame = pl.DataFrame(
            {"line": line_no, "text": text, "header": header, "directive_date": day}
        ).filter(~is_directive & (text.str.len_bytes() > 0))
        parts: list[pl.DataFrame] = []
        refused: list[pl.DataFrame] = []
        for (spec,), rows in frame.group_by("header", maintain_order=True):
            fields = carried if spec is None else tuple(str(spec).split())
            parsed, bad = self._parse_group(rows, fields)
            parts.append(parsed)
            refused.append(bad)
        last = header.drop_nulls().tail(1).to_list()
        in_force = tuple(last[0].split()) if last else carried
        last_day = day.tail(1).to_list()[0] if len(day) else carried_date
        self._carry = (batch.source, batch.first_line + len(batch), in_force, last_day)
        parsed = (
            pl.concat(parts, how="diagonal_relaxed").sort("line")
            if parts
            else pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "line": pl.Int64})
        )
        reasons = pl.concat(
            [
                pl.DataFrame({"line": line_no.filter(is_directive)}).with_columns(
                    reason=pl.lit(DIRECTIVE_REASON)
                ),
                pl.DataFrame({"line": line_no.filter(text.str.len_bytes() == 0)}).with_columns(
                    reason=pl.lit("empty line")
                ),
                *refused,
            ],
            how="vertical_relaxed",
        )
        if reasons.height == 0:
            return ParseResult(parsed=parsed, rejected=batch.rejected(None, pl.lit("")))
        by_line = pl.DataFrame({"line": line_no}).join(
            reasons, on="line", how="left", maintain_order="left"
        )
        mask = by_line.get_column("reason").is_not_null()
        return ParseResult(
            parsed=parsed, rejected=batch.rejected(mask, by_line.get_column("reason"))
        )

    def _parse_group(
        self, rows: pl.DataFrame, fields: tuple[str, ...] | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Records of one run of lines under ``fields`` (None: no #Fields seen), and refusals."""
        sep = self.separator
        values = rows.get_column("text").str.strip_chars_end(f"{sep}\r").str.split(sep)
        counts = values.list.len()
        given = fields is not None
        if fields is None:
            fields = self.default_fields
        ok = counts == len(fields)
        if given:
            reason = pl.format(
                "has {} values where its #Fields directive names {}", pl.col("n"), len(fields)
            )
        else:
            reason = pl.format(
                "no #Fields directive before this line, and its {} values are not the {} of "
                f"the default {self.description} fields",
                pl.col("n"),
                len(fields),
            )
        bad = rows.select("line", n=counts).filter(~ok).select("line", reason.alias("reason"))
        good = values.filter(ok)
        names = [column_name(f, self.renames) for f in fields]
        frame = pl.DataFrame(
            {
                "line": rows.get_column("line").filter(ok),
                "__directive_date": rows.get_column("directive_date").filter(ok),
            }
        ).with_columns(good.list.get(i).alias(f"__{i}") for i in range(len(names)))
        exprs = []
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:  # a field named twice: the first one wins
                continue
            seen.add(name)
            exprs.append(self._typed(pl.col(f"__{i}"), name))
        dated_by_directive = "time" in seen and "date" not in seen
        if dated_by_directive:
            exprs.insert(0, self._typed(pl.col("__directive_date"), "date"))
            seen.add("date")
        frame = frame.select(pl.col("line"), *exprs)
        if not {"date", "time"} <= seen:
            missing = (
                rows.select("line")
                .filter(ok)
                .with_columns(
                    reason=pl.lit(f"the #Fields directive has no time: {' '.join(fields)}")
                )
            )
            return frame.clear().select("line"), pl.concat([bad, missing])
        ts = (
            (pl.col("date").cast(pl.String) + " " + pl.col("time"))
            .str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S%.f", strict=False)
            .dt.replace_time_zone("UTC")
        )
        frame = frame.select(ts.alias("ts"), pl.exclude("line"), pl.col("line"))
        bad_ts = frame.get_column("ts").is_null()
        if bad_ts.any():
            no_date = pl.col("date").is_null() & dated_by_directive
            reason = (
                pl.when(no_date)
                .then(pl.lit("no date: the #Fields have none and no #Date directive came before"))
                .otherwise(pl.lit("invalid timestamp"))
            )
            invalid = frame.filter(bad_ts).select("line", reason=reason)
            bad = pl.concat([bad, invalid])
            frame = frame.filter(~bad_ts)
        return frame, bad

    def _typed(self, value: pl.Expr, name: str) -> pl.Expr:
        kind = self.types.get(name, "string")
        if kind == "string":
            empty = value == ""
            if self.dash_null:
                empty = empty | (value == "-")
            return pl.when(empty).then(None).otherwise(value).alias(name)
        if kind == "date":
            return value.str.to_date("%Y-%m-%d", strict=False).alias(name)
        return value.cast(ATHENA_TYPES[kind], strict=False).alias(name)


class CloudFrontFormat(W3CFormat):
    """CloudFront standard (access) logs: tab-separated W3C, Athena's column names and types."""

    name = "cloudfront"
    default_table: ClassVar[str] = "logs.cloudfront"
    separator: ClassVar[str] = "\t"
    dash_null: ClassVar[bool] = False
    default_fields: ClassVar[tuple[str, ...]] = CLOUDFRONT_FIELDS
    types: ClassVar[dict[str, str]] = _CLOUDFRONT_TYPES
    renames: ClassVar[dict[str, str]] = {"cs_referer": "cs_referrer"}
    description: ClassVar[str] = "CloudFront standard log"


_FORMATS: dict[str, type[W3CFormat]] = {
    "w3c": W3CFormat,
    "iis": W3CFormat,
    "cloudfront": CloudFrontFormat,
}


def w3c_format(spec: str, **_options: object) -> W3CFormat:
    """The W3C format ``spec`` (``w3c`` (alias ``iis``) or ``cloudfront``); options are ignored
    (W3C times are UTC). Raises :class:`FormatError` for another name."""
    if spec not in _FORMATS:
        raise FormatError(f"unknown W3C log format {spec!r}; use one of: {', '.join(_FORMATS)}")
    return _FORMATS[spec]()
