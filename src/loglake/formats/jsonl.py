"""JSON lines: one JSON object per line, top-level keys become columns, decoded by Polars.

Output columns: ``ts`` (Datetime us UTC), ``ts_missing`` (Boolean), then the top-level keys of the
batch in first-seen order (objects stay nested as Struct columns, arrays as List columns), then
``line`` (Int64). The event time comes from ``ts_field`` (default ``ts``; when it is left at ``ts``,
also ``timestamp``, ``@timestamp``, ``time`` and ``created_at``: the first of them present in the
line). ISO 8601 strings (offset or ``Z`` converted to UTC, no offset meaning UTC) and epoch numbers
(seconds; above 1e11 milliseconds, above 1e14 microseconds, above 1e17 nanoseconds) are understood.
A line with no usable time gets the ingest time (``now``) and ``ts_missing = True``.

A key named ``ts`` is the parsed time when it is the time field; otherwise, like keys named
``ts_missing`` or ``line``, it is kept as ``<key>_raw``. So are ``source`` and ``ingested_at``,
which ingest adds to every row (a log's own ``source`` field would otherwise be overwritten).
These names are matched in any case (``Source`` -> ``Source_raw``), as column names are
case-insensitive in the lake. A key
seen with null values only becomes a String column of nulls, also inside objects and arrays (an
Iceberg v2 table has no null type), and integers beyond 64 bits (which Polars reads as Int128, a
type tables do not have) become their decimal text.

How a batch is decoded, and why:

* Fast path: one ``str.json_decode`` over the lines that look like objects (``{...}`` after trimming
  whitespace), with the schema inferred from every line of the batch (``infer_schema_length=None``):
  keys vary by line, so inferring from the first rows would drop or mistype keys of later lines.
* Polars raises for the whole batch when one line is bad or when types cannot be merged. Only then,
  each candidate line is checked with ``json.loads`` (the fallback path, per line in Python), which
  finds the invalid lines and gives the JSON type of every top-level value; the valid lines are then
  decoded by Polars again. The usual batch never takes this path; lines that do not look like
  objects are rejected by the vectorized prefilter and never reach it.
* Mixed types: a top-level key whose values have different JSON types across the batch (ignoring
  null; integers and floats are both numbers) becomes a String column holding each value as text: a
  string as itself, any other value as its compact JSON text (``1``, ``true``, ``{"a":1}``). This is
  the rule Polars' decoder already applies when it merges numbers or booleans with strings, so the
  fast path and the fallback agree; keeping strings unquoted means ``WHERE id = 'abc'`` still works.
  Objects or arrays mixed with other types, and booleans mixed with numbers (which Polars would turn
  into 1/0), are made text explicitly; a key whose objects conflict inside (``{"a":1}`` vs
  ``{"a":{"b":2}}``) is text as a whole. Within one key's objects, Polars' own merge rules apply.
* Duplicate keys in an object: the first value wins, which is what Polars' decoder does when it does
  not refuse the batch; the fallback does the same, so the result does not depend on the path.

Rejected: empty lines ("empty line"), lines that are valid JSON but not objects ("not a JSON
object") and lines that are not JSON ("invalid JSON: <what json.loads says>"), with their raw bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import polars as pl
from polars.datatypes import DataTypeClass

from loglake.errors import FormatError
from loglake.formats.base import LineBatch, ParseResult

#: Time fields tried in order when ``ts_field`` is not given.
DEFAULT_TS_FIELDS: tuple[str, ...] = ("ts", "timestamp", "@timestamp", "time", "created_at")
# Output columns of this format, and columns ingest adds to every parsed row.
_RESERVED = ("ts", "ts_missing", "line", "source", "ingested_at")
_JSON_WS = " \t\r\n"
# First characters that can start a JSON value (or a cut-off object); a line that starts otherwise
# is reported without calling the Python decoder.
_VALUE_STARTS = ['"', "{", "[", "-", "t", "f", "n", *"0123456789"]
_NOT_JSON = "invalid JSON: Expecting value: line 1 column 1 (char 0)"
#: Deepest nesting accepted. Polars' schema inference slows down steeply with depth (about 1 s at
#: 300 levels, 9 s at 600, for one line), so one pathological line could stall a whole batch; and
#: Parquet readers refuse deep schemas (pyarrow: 100 levels; each array takes two, so 50 nested
#: arrays made the table's files unreadable by pyarrow and pyiceberg). Real logs nest a few levels
#: (GitHub events: 6); Elasticsearch's default depth limit is 20.
MAX_DEPTH = 32
_TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"
# What a failing decode raises: Polars errors, and (on inputs its authors did not foresee) a Rust
# panic, which Python sees as a BaseException; either must send the batch to the fallback.
_DECODE_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException)


@dataclass
class JsonFormat:
    """JSON-lines parser; ``ts_field`` ``ts`` (the default) also tries the usual alternatives.

    ``now`` is the time given to lines without a usable time (default: the time of each ``parse``).
    """

    name: str
    ts_field: str = "ts"
    now: datetime | None = None
    default_table: ClassVar[str] = "logs.json"
    enrich: ClassVar[tuple[str, ...]] = ()

    @property
    def ts_fields(self) -> tuple[str, ...]:
        """The keys the event time is read from, first present one wins."""
        return DEFAULT_TS_FIELDS if self.ts_field == "ts" else (self.ts_field,)

    def match_rate(self, sample: pl.Series) -> float:
        """Fraction of ``sample`` lines that are JSON objects."""
        if len(sample) == 0:
            return 0.0
        body = _body(sample.cast(pl.String))
        cand = body.filter(_looks_like_object(body))
        if len(cand) == 0:
            return 0.0
        try:
            cand.str.json_decode(pl.Struct({}))  # validates syntax; an empty schema cannot conflict
            valid = len(cand)
        except _DECODE_ERRORS:
            # Detection samples are small: checking them one by one is cheap here.
            valid = sum(isinstance(_load(s), dict) for s in cand.to_list())
        return valid / len(sample)

    def parse(self, batch: LineBatch) -> ParseResult:
        """Parse every line of ``batch``; lines that are not JSON objects go to ``rejected``.

        Never raises for bad input: ``parsed.height + rejected.height == len(batch)``.
        """
        now = _utc(self.now) if self.now is not None else datetime.now(UTC)
        len(batch)
        line_no = batch.line_numbers()
        body = _body(batch.text.cast(pl.String))
        is_empty = body.str.len_bytes() == 0
        too_deep = _too_deep(body)
        looks = _looks_like_object(body) & ~too_deep
        cand_pos = looks.arg_true()
        decoded, bad = _decode_objects(body.filter(looks))

        # Reasons, null for parsed lines. Lines failing the prefilter get a fixed reason without the
        # Python decoder, unless they could be some other JSON value (then json.loads says which).
        reasons = pl.select(
            pl.when(is_empty)
            .then(pl.lit("empty line"))
            .when(looks)
            .then(pl.lit(None, dtype=pl.String))
            .when(too_deep)
            .then(pl.lit(_TOO_DEEP))
            .otherwise(pl.lit(_NOT_JSON))
            .alias("reason")
        ).to_series()
        ask = (
            ~is_empty & ~looks & ~too_deep & body.str.slice(0, 1).is_in(_VALUE_STARTS)
        ).arg_true()
        fixes = dict(zip(ask.to_list(), map(_explain, body.gather(ask).to_list()), strict=True))
        positions = cand_pos.gather(list(bad)).to_list() if bad else []
        fixes.update(zip(positions, bad.values(), strict=True))
        if fixes:
            reasons = reasons.scatter(list(fixes), list(fixes.values()))

        good = reasons.is_null()
        parsed = self._assemble(decoded, line_no.filter(good), now)
        return ParseResult(parsed=parsed, rejected=batch.rejected(~good, reasons))

    def _assemble(self, decoded: pl.DataFrame, lines: pl.Series, now: datetime) -> pl.DataFrame:
        """``ts``, ``ts_missing``, the key columns (renamed where reserved) and ``line``."""
        keys = decoded.columns
        sources = [k for k in self.ts_fields if k in keys]
        if sources:
            ts: pl.Expr = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
            for key in reversed(sources):
                # The first present field wins even if it does not parse: a time field that is
                # there but unreadable is a missing time, not a reason to read another field.
                col = pl.col(key)
                parsed = _parse_ts(col, decoded.schema[key])
                ts = pl.when(col.is_not_null()).then(parsed).otherwise(ts)
            event = decoded.select(ts.alias("ts")).to_series()
        else:  # (also when no line has any key: a frame without columns has no rows)
            event = pl.repeat(None, len(lines), dtype=pl.Datetime("us", "UTC"), eager=True)
        columns: list[pl.Series] = [
            event.fill_null(pl.lit(now, dtype=pl.Datetime("us", "UTC"))).alias("ts"),
            event.is_null().alias("ts_missing"),
        ]
        # Column names are case-insensitive in the lake (loglake.lake.conform): `Source` would
        # land in the `source` column ingest adds, so reserved names are matched in any case.
        taken = {k.lower() for k in keys}
        for key in keys:
            if key == "ts" and "ts" in self.ts_fields:
                continue  # replaced by the parsed time
            column = decoded.get_column(key)
            storable = _storable(column.dtype)
            if storable != column.dtype:
                column = column.cast(storable)
            if key.lower() in _RESERVED:
                new = f"{key}_raw"
                while new.lower() in taken:
                    new += "_raw"
                taken.add(new.lower())
                column = column.alias(new)
            columns.append(column)
        columns.append(lines.alias("line"))
        return pl.DataFrame(columns)


def _storable(dtype: pl.DataType | DataTypeClass) -> pl.DataType:
    """``dtype`` with every type a table cannot hold (Null, Int128) replaced by String."""
    if dtype == pl.Null or dtype == pl.Int128:
        return pl.String()
    if not isinstance(dtype, pl.DataType):  # a bare class such as pl.Int64: no inner types
        return dtype()
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: _storable(f.dtype) for f in dtype.fields})
    if isinstance(dtype, pl.List):
        return pl.List(_storable(dtype.inner))
    if isinstance(dtype, pl.Array):
        return pl.Array(_storable(dtype.inner), dtype.shape)
    return dtype


# -- decoding ----------------------------------------------------------------------------------


def _body(text: pl.Series) -> pl.Series:
    """Lines without a leading BOM and surrounding JSON whitespace (both are not data)."""
    return text.str.strip_prefix("\ufeff").str.strip_chars(_JSON_WS)


def _looks_like_object(body: pl.Series) -> pl.Series:
    """Cheap vectorized prefilter: only ``{...}`` can be a JSON object."""
    return body.str.starts_with("{") & body.str.ends_with("}")


def _too_deep(body: pl.Series) -> pl.Series:
    """Mask of lines nested deeper than ``MAX_DEPTH`` (vectorized; exact for valid JSON)."""
    # Depth is at most the number of opening brackets, so most lines are cleared by one count.
    suspect = body.str.count_matches(r"[\[{]") > MAX_DEPTH
    if not suspect.any():
        return suspect
    idx = suspect.arg_true()
    # Brackets inside strings are text: drop the strings, keep only the brackets, then remove
    # innermost pairs once per level. Whatever is left after MAX_DEPTH rounds is deeper than that.
    shape = (
        body.gather(idx).str.replace_all(r'"(?:[^"\\]|\\.)*"', "").str.replace_all(r"[^\[\]{}]", "")
    )
    for _ in range(MAX_DEPTH):
        shape = shape.str.replace_all(r"\{\}|\[\]", "")
        if not (shape.str.len_bytes() > 0).any():
            break
    deep = shape.str.len_bytes() > 0
    return suspect.scatter(idx, deep)


def _decode_objects(cand: pl.Series) -> tuple[pl.DataFrame, dict[int, str]]:
    """Decode candidate lines into key columns; also the positions of bad lines, with reasons.

    The returned frame has one row per candidate line not in the bad set, in order.
    """
    if len(cand) == 0:
        return pl.DataFrame(), {}
    try:
        decoded = cand.str.json_decode(infer_schema_length=None).struct.unnest()
    except _DECODE_ERRORS:
        return _decode_fallback(cand)
    return _text_for_bool_numbers(cand, decoded), {}


def _text_for_bool_numbers(cand: pl.Series, decoded: pl.DataFrame) -> pl.DataFrame:
    """Make text of numeric columns that also held booleans (Polars would read true as 1)."""
    numeric = [c for c, dtype in decoded.schema.items() if dtype.is_numeric()]
    if not numeric:
        return decoded
    # Prefilter, one regex pass for all numeric keys: only a line where one of them is followed by
    # true/false can hold such a boolean (nested keys of the same name are weeded out below). A key
    # spelled with \u escapes in the line would slip through; no logger writes keys that way.
    names = "|".join(re.escape(json.dumps(c, ensure_ascii=False)[1:-1]) for c in numeric)
    maybe = cand.str.contains(rf'"(?:{names})"\s*:\s*(?:true|false)')
    if not maybe.any():
        return decoded
    subset = cand.filter(maybe)
    for column in numeric:
        path = _json_path(column)
        if path is None:
            continue
        if subset.str.json_path_match(path).is_in(["true", "false"]).any():
            # json_path_match gives each value's compact JSON text: 1, 2.5, true.
            text = cand.str.json_path_match(path)
            decoded = decoded.with_columns(text.alias(column))
    return decoded


def _json_path(key: str) -> str | None:
    """A JSONPath selecting top-level ``key``, or None when Polars' JSONPath cannot quote it."""
    if "\\" in key:
        return None
    if "'" not in key:
        return f"$['{key}']"
    if '"' not in key:
        return f'$["{key}"]'
    return None


_KIND = {bool: "boolean", int: "number", float: "number", str: "string", dict: "object"}


def _kind(value: object) -> str:
    return _KIND.get(type(value), "array")


def _as_text(value: object) -> str:
    """A value as text: a string as itself, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object from its key/value pairs; of duplicate keys the first value is kept (as Polars)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        obj = {}
        for key, value in pairs:
            obj.setdefault(key, value)
    return obj


def _load(line: str) -> dict[str, Any] | str:
    """The object of ``line``, or the reason it is rejected."""
    try:
        value = json.loads(line, parse_constant=_no_constant, object_pairs_hook=_first_wins)
    except (ValueError, RecursionError) as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(value, dict):
        return "not a JSON object"
    return value


def _explain(line: str) -> str:
    """Reason for rejecting ``line`` (it is not a decodable JSON object)."""
    loaded = _load(line)
    if isinstance(loaded, str):
        return loaded
    return "invalid JSON: rejected by the JSON decoder"


def _decode_fallback(cand: pl.Series) -> tuple[pl.DataFrame, dict[int, str]]:
    """Slow path: find bad lines and mixed-type keys with ``json.loads``, then decode (Polars)."""
    bad: dict[int, str] = {}
    objs: list[dict[str, Any]] = []
    good_pos: list[int] = []
    for i, line in enumerate(cand.to_list()):
        loaded = _load(line)
        if isinstance(loaded, str):
            bad[i] = loaded
        else:
            objs.append(loaded)
            good_pos.append(i)
    good = cand.gather(good_pos) if bad else cand

    # Lines Python accepts but Polars does not (should not happen; kept for safety): rejected.
    for local in _polars_invalid(good):
        bad[good_pos[local]] = "invalid JSON: rejected by the JSON decoder"
    if len(bad) > len(cand) - len(good):
        keep = [j for j, p in enumerate(good_pos) if p not in bad]
        objs = [objs[j] for j in keep]
        good = good.gather(keep)

    kinds: dict[str, set[str]] = {}
    for obj in objs:
        for key, value in obj.items():
            seen = kinds.setdefault(key, set())
            if value is not None:
                seen.add(_kind(value))
    text_keys = {k for k, s in kinds.items() if len(s) > 1}
    rewrite_all = False
    for _ in range(len(kinds) + 2):
        lines = _rewrite(good, objs, text_keys, rewrite_all)
        try:
            return lines.str.json_decode(infer_schema_length=None).struct.unnest(), bad
        except pl.exceptions.DuplicateError:
            rewrite_all = True  # the loaded objects hold each key once
        except _DECODE_ERRORS:
            # A key whose objects/arrays conflict inside; find which by decoding keys alone.
            nested = [
                k
                for k, s in kinds.items()
                if k not in text_keys and s and s <= {"object", "array"} and not _decodes(objs, k)
            ]
            text_keys |= set(nested) if nested else set(kinds)
    raise AssertionError("unreachable: every key is text after the loop")  # pragma: no cover


def _rewrite(
    lines: pl.Series, objs: list[dict[str, Any]], text_keys: set[str], rewrite_all: bool
) -> pl.Series:
    """``lines`` with text keys turned into strings; other lines are kept as they were."""
    if not text_keys and not rewrite_all:
        return lines
    out = lines.to_list()
    for i, obj in enumerate(objs):
        hit = [k for k in text_keys if obj.get(k) is not None]
        if hit or rewrite_all:
            fixed = {k: (_as_text(v) if k in hit else v) for k, v in obj.items()}
            out[i] = json.dumps(fixed, ensure_ascii=False)
    return pl.Series(lines.name, out, dtype=pl.String)


def _decodes(objs: list[dict[str, Any]], key: str) -> bool:
    """Whether Polars can decode the values of ``key`` alone as one column."""
    values = pl.Series([json.dumps(obj.get(key), ensure_ascii=False) for obj in objs])
    try:
        values.str.json_decode(infer_schema_length=None)
    except _DECODE_ERRORS:
        return False
    return True


def _polars_invalid(lines: pl.Series) -> list[int]:
    """Positions of lines Polars cannot read as objects, found by bisection (vectorized checks)."""
    found: list[int] = []
    stack = [(0, len(lines))]
    while stack:
        start, length = stack.pop()
        if length == 0:
            continue
        try:
            # An empty schema cannot conflict: this checks syntax and object-ness only.
            lines.slice(start, length).str.json_decode(pl.Struct({}))
            continue
        except _DECODE_ERRORS:
            pass
        if length == 1:
            found.append(start)
            continue
        half = length // 2
        stack.append((start + half, length - half))
        stack.append((start, half))
    return sorted(found)


# -- time --------------------------------------------------------------------------------------


def _parse_ts(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Event time from a decoded column: ISO 8601 text or epoch numbers; null if unusable."""
    if dtype == pl.String:
        text = col.str.strip_chars()
        norm = (
            text.str.replace(r"^(\d{4}-\d{2}-\d{2})[ tT]", "${1}T")
            .str.replace(r"[Zz]$", "+00:00")
            .str.replace(r"([+-]\d{2})(\d{2})$", "$1:$2")
        )
        with_offset = norm.str.strptime(
            pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False
        )
        naive = norm.str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S%.f", strict=False)
        date = norm.str.strptime(pl.Date, "%Y-%m-%d", strict=False).cast(pl.Datetime("us"))
        # Numbers that arrived as strings (or as text of a mixed-type key) are epochs too.
        number = pl.when(text.str.contains(r"^-?\d+(?:\.\d+)?$")).then(
            _epoch(text.cast(pl.Float64, strict=False))
        )
        return pl.coalesce(
            with_offset,
            naive.dt.replace_time_zone("UTC"),
            date.dt.replace_time_zone("UTC"),
            number,
        )
    if dtype.is_integer():
        return _epoch(col.cast(pl.Int64, strict=False))
    if dtype.is_float():
        return _epoch(col.cast(pl.Float64))
    return pl.lit(None, dtype=pl.Datetime("us", "UTC"))


def _epoch(value: pl.Expr) -> pl.Expr:
    """Epoch number to UTC time; the magnitude tells the unit (s, ms, us, ns)."""
    size = value.abs()
    micros = (
        pl.when(size > 1e17)
        .then(value / 1000)
        .when(size > 1e14)
        .then(value)
        .when(size > 1e11)
        .then(value * 1000)
        .otherwise(value * 1_000_000)
    )
    # Floats are rounded to the microsecond; NaN/inf and out-of-range values become null.
    return (
        micros.cast(pl.Float64)
        .round(0)
        .cast(pl.Int64, strict=False)
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )


def _utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def json_format(name: str, **options: object) -> JsonFormat:
    """The JSON-lines format. Options: ``ts_field`` (str) and ``now`` (datetime); others ignored.

    Raises :class:`FormatError` for a bad option type.
    """
    ts_field = options.get("ts_field")
    now = options.get("now")
    if ts_field is not None and (not isinstance(ts_field, str) or not ts_field):
        raise FormatError(f"json option ts_field must be a non-empty key name, got {ts_field!r}")
    if now is not None and not isinstance(now, datetime):
        raise FormatError(f"json option now must be a datetime, got {now!r}")
    return JsonFormat(name, ts_field=ts_field or "ts", now=now)
