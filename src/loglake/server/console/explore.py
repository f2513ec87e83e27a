"""The console's Explore page (Kibana Discover, Grafana Explore): its API and the SQL it builds.

Every route reads the view from query parameters, the same ones the page keeps in its URL:

- ``table``: a lake table (default ``logs.access``);
- ``from``, ``to``: the time range, records with ``from <= time < to`` on the table's time column
  (``ts``; ``ingested_at`` for logs.rejected). Absolute (``2026-01-01``, ``2026-01-01 10:00:00``,
  ``2026-01-01T10:00:00.5Z``; UTC unless an offset is given) or relative to now (``now``,
  ``now-15m``, ``now-24h``, ``now-7d``; units s, m, h, d, w). The page resolves relative times once
  per search and sends absolute ones, so all its requests see one range.
- ``q``: the filter (:func:`parse_filter`): ``field:value`` terms, ``-field:value`` to exclude,
  ``"quoted values"``, ``field:*`` (has a value), ``field:>=500`` (also ``>``, ``<``, ``<=``),
  ``path:/api/*`` (``*`` matches any text), and bare words or ``"phrases"`` of free text, matched
  case-insensitively within the table's text columns (:func:`text_columns`). Terms are ANDed.
- ``where``: a SQL condition ANDed to the filter (DuckDB SQL over the table's columns).

Routes (all ``GET``, answers in JSON unless said):

- ``/v1/explore/tables``: the lake's tables with their columns, time column, text columns, the
  field that says where a record came from, default fields and time bounds.
- ``/v1/explore/histogram``: matching records counted per time bucket (:func:`choose_bucket`).
- ``/v1/explore/records``: one page of matching records, newest first (``limit``, ``cursor``).
  Keyset pagination on the time column: the cursor is the time of the last record sent and how many
  records at exactly that time were sent; ties are ordered by :func:`tie_columns`, so every record
  comes exactly once however many share a time, and no query ever skips more rows than share
  one time stamp (never OFFSET over the result).
- ``/v1/explore/top``: the 10 most frequent values of each of ``fields`` with their counts and
  share, exact over every matching record of the range.
- ``/v1/explore/tail``: records at or after a cursor, oldest first from it, for the live tail.
- ``/v1/explore/around``: records of one source (a field's value) before and after a time.
- ``/v1/explore/download``: every matching record as CSV or JSON lines, streamed: the bytes of
  ``loglake query --format csv|json`` of :attr:`Search.sql`, written slice by slice.

Every statement runs through the console's sandboxed query pool, like any other console query. The
time filter is a plain ``ts >= TIMESTAMP '...' AND ts < TIMESTAMP '...'``, which the query engine
reads to open only the files of the range (query/prune.py).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from loglake.errors import NoSuchTableError
from loglake.server.console.encode import column_values, result_json
from loglake.server.errors import BadRequestError
from loglake.sqltext import ident, literal, qualified

if TYPE_CHECKING:
    import pyarrow as pa
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from loglake.config import Config
    from loglake.query.engine import Result
    from loglake.server.console.context import Console

DEFAULT_TABLE = "logs.access"
MAX_FILTER_CHARS = 4096
MAX_TERMS = 64
MAX_WHERE_CHARS = 8192
MAX_FIELDS = 20
TOP_N = 10
PAGE_DEFAULT = 100
PAGE_MAX = 1000
TAIL_MAX = 1000
AROUND_MAX = 200
#: How far from the record "records around this one" looks on each side.
AROUND_SPAN = timedelta(days=1)
#: Rows of one query of a download (bounded memory per slice).
DOWNLOAD_PAGE = 50_000
#: The most buckets a histogram has; the bucket is the smallest round size that keeps under it.
MAX_BUCKETS = 120
DOWNLOAD_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "json": ("application/x-ndjson", "jsonl"),
}

_US = 1_000_000
#: Round bucket sizes (label, µs), smallest first.
BUCKETS: tuple[tuple[str, int], ...] = tuple(
    (name, int(seconds * _US))
    for name, seconds in (
        ("10ms", 0.01),
        ("50ms", 0.05),
        ("100ms", 0.1),
        ("500ms", 0.5),
        ("1s", 1),
        ("2s", 2),
        ("5s", 5),
        ("10s", 10),
        ("15s", 15),
        ("30s", 30),
        ("1m", 60),
        ("2m", 120),
        ("5m", 300),
        ("10m", 600),
        ("15m", 900),
        ("30m", 1800),
        ("1h", 3600),
        ("2h", 7200),
        ("3h", 10800),
        ("6h", 21600),
        ("12h", 43200),
        ("1d", 86400),
        ("7d", 7 * 86400),
        ("30d", 30 * 86400),
        ("365d", 365 * 86400),
    )
)

# Columns that hold a record's text, in order of preference: free text searches the first found.
_TEXT_COLUMNS = ("message", "msg", "text", "log", "line", "raw", "request", "body")
# For access logs (no stored line): the text fields of the line.
_ACCESS_TEXT = ("client", "user", "method", "path", "query", "protocol", "referrer", "user_agent")
_ACCESS_LINE = ("client", "ident", "user", "method", "path", "protocol", "status", "bytes")
# The field that says where a record came from ("records around this one").
_SOURCE_FIELDS = ("client", "host", "hostname", "remote_addr", "ip", "client_ip", "app", "source")
# Fields whose top values are shown by default, in order of preference.
_PREFERRED_FIELDS = (
    "status",
    "method",
    "path",
    "client",
    "ua_browser",
    "level",
    "severity",
    "facility",
    "host",
    "app",
    "reason",
    "format",
    "target_table",
    "ua_os",
    "is_bot",
)
_NOT_DEFAULT = {"line", "source", "ingested_at", "raw", "text", "message", "bytes", "user_agent"}
_INTEGER = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"}
_INTEGER |= {"UINTEGER", "UBIGINT", "UHUGEINT"}
_FLOAT = {"FLOAT", "DOUBLE", "REAL"}
_CAST_TYPES = {"TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", "DATE", "TIME", "UUID"}
_TIME_TYPES = {"TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"}


class BadViewError(BadRequestError):
    """A view the Explore page cannot show as asked: a bad time, filter, field or parameter (400);
    the message says what to change."""


# -- time -------------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"now(?:\s*-\s*(\d{1,9})\s*(ms|s|m|h|d|w))?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EPOCH = datetime(1970, 1, 1)


def parse_time(text: str, now: datetime, what: str) -> datetime:
    """``text`` as a naive UTC datetime: ``now``, ``now-15m`` (units ms, s, m, h, d, w) or an ISO
    date or time (UTC unless it names an offset). BadViewError naming ``what`` otherwise."""
    value = text.strip()
    relative = _RELATIVE.fullmatch(value)
    if relative:
        amount, unit = relative.groups()
        try:
            return now - timedelta(seconds=int(amount or 0) * _UNITS[unit or "s"])
        except OverflowError:
            raise BadViewError(f"{what} {text!r} is before the year 1") from None
    try:
        parsed = datetime.fromisoformat(value.replace(" UTC", "Z"))
    except ValueError:
        raise BadViewError(
            f"{what} {text!r} is not a time: use an ISO time such as 2026-01-01 10:00:00 "
            "(UTC) or a time relative to now such as now-15m, now-24h, now-7d"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def micros(value: datetime) -> int:
    """A naive UTC datetime as µs since the epoch."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def iso(value: datetime) -> str:
    """The text a time is sent back in (UTC, µs): ``2026-01-01 10:00:00.000000``."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def choose_bucket(span_us: int) -> tuple[str, int]:
    """The histogram bucket of a range of ``span_us`` µs: the smallest round size (:data:`BUCKETS`)
    that cuts the range into at most :data:`MAX_BUCKETS` buckets (60 to 120 for the usual
    ranges: 15 min in 10 s buckets, 24 h in 15 min, 7 days in 2 h, 30 days in 6 h)."""
    for name, size in BUCKETS:
        if math.ceil(span_us / size) <= MAX_BUCKETS:
            return name, size
    return BUCKETS[-1]


# -- the filter -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One term of the filter. ``field`` None: free text. ``value`` None: ``field:*`` (the field
    has a value). ``wildcard``: an unquoted value with ``*``, matched as a pattern."""

    field: str | None
    value: str | None
    op: str = "="
    negated: bool = False
    wildcard: bool = False


_FIELD_END = set(' \t\r\n:"')
_OPS = (">=", "<=", ">", "<")
_BARE = re.compile(r"[A-Za-z0-9_./@+][A-Za-z0-9_./@+\-]*")


def parse_filter(text: str) -> list[Term]:
    """The terms of a filter (see the module docstring); BadViewError saying what to fix."""
    if len(text) > MAX_FILTER_CHARS:
        raise BadViewError(f"the filter is longer than {MAX_FILTER_CHARS} characters")
    terms: list[Term] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        negated = text[i] == "-" and i + 1 < n and not text[i + 1].isspace()
        if negated:
            i += 1
        if text[i] == '"':
            value, i = _quoted(text, i)
            terms.append(Term(None, value, negated=negated))
            continue
        j = i
        while j < n and text[j] not in _FIELD_END:
            j += 1
        if j < n and text[j] == ":" and j > i:
            name = text[i:j]
            term, i = _field_term(text, j + 1, name, negated)
            terms.append(term)
        else:
            j = i
            while j < n and not text[j].isspace():
                j += 1
            terms.append(Term(None, text[i:j], negated=negated))
            i = j
        if len(terms) > MAX_TERMS:
            raise BadViewError(f"the filter has more than {MAX_TERMS} terms: use the SQL WHERE")
    return terms


def _field_term(text: str, i: int, name: str, negated: bool) -> tuple[Term, int]:
    n = len(text)
    op = "="
    for candidate in _OPS:
        if text.startswith(candidate, i):
            op, i = candidate, i + len(candidate)
            break
    if i < n and text[i] == '"':
        value, i = _quoted(text, i)
        return Term(name, value, op, negated), i
    j = i
    while j < n and not text[j].isspace():
        j += 1
    value = text[i:j]
    if not value:
        raise BadViewError(
            f'{name}: has no value: write {name}:value, {name}:"" for empty text or {name}:* '
            "for any value"
        )
    if value == "*" and op == "=":
        return Term(name, None, negated=negated), j
    wildcard = "*" in value and op == "="
    return Term(name, value, op, negated, wildcard), j


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The string quoted at ``text[i]`` (``\\"`` is a quote, ``\\\\`` a backslash) and the index
    after it."""
    out: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\" and j + 1 < len(text):
            out.append(text[j + 1])
            j += 2
            continue
        if c == '"':
            end = j + 1
            if end < len(text) and not text[end].isspace():
                raise BadViewError(
                    f"the filter has text right after a closing quote at character {end + 1}: "
                    "put a space between terms"
                )
            return "".join(out), end
        out.append(c)
        j += 1
    raise BadViewError(
        f'the filter has a quote at character {i + 1} that is never closed: close it with " '
        '(write \\" for a quote inside a value)'
    )


def term_text(name: str, value: Any) -> str | None:
    """The filter term that matches records whose ``name`` is ``value`` (None: no value): quoted
    when the value is not a plain word, so quotes, colons, spaces and ``*`` stay literal. None when
    the field's name cannot be written in a filter (use the SQL WHERE for it)."""
    if not name or any(c in _FIELD_END for c in name) or name.startswith("-"):
        return None
    if value is None:
        return f"-{name}:*"
    if isinstance(value, dict | list):
        return None  # a struct's or list's text is DuckDB's own: filter those with the WHERE
    shown = value if isinstance(value, str) else _value_text(value)
    if _BARE.fullmatch(shown) and not shown.startswith(_OPS):
        return f"{name}:{shown}"
    return f'{name}:"' + shown.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- tables -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableInfo:
    """What Explore needs of one table: its columns and the roles some of them play."""

    name: str
    columns: list[tuple[str, str]]  # (name, DuckDB type)
    time_column: str
    text_columns: list[str]  # where free text is searched
    raw: str | None  # the column holding the record's line, "combined" (rebuilt), None
    source_field: str | None  # "records around this one" share its value
    default_fields: list[str]
    tie: list[str]  # order among records of one time (with the time, a total order)
    rows: int = 0
    time_min: int | None = None
    time_max: int | None = None
    #: (first time, last time, rows) of each data file, for choosing narrow windows
    files: tuple[tuple[int, int, int], ...] = ()
    _by_lower: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    def column(self, name: str) -> tuple[str, str]:
        """``(name, type)`` of a column, by its name in any case; BadViewError listing the
        table's columns otherwise."""
        found = self._by_lower.get(name.lower())
        if found is None:
            raise BadViewError(
                f"{self.name} has no field {name!r}; its fields: "
                f"{', '.join(c for c, _ in self.columns)} (quote free text that has a colon: "
                f'"{name}:...")'
            )
        return found

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": [{"name": c, "type": t} for c, t in self.columns],
            "time_column": self.time_column,
            "text_columns": self.text_columns,
            "raw": self.raw,
            "source_field": self.source_field,
            "default_fields": self.default_fields,
            "rows": self.rows,
            "time_min": iso(from_micros(self.time_min)) if self.time_min is not None else None,
            "time_max": iso(from_micros(self.time_max)) if self.time_max is not None else None,
        }


def _is_text(dtype: str) -> bool:
    return dtype == "VARCHAR"


def text_columns(columns: list[tuple[str, str]]) -> list[str]:
    """Where free text is searched: the table's line or message column (the first of ``message``,
    ``msg``, ``text``, ``log``, ``line``, ``raw``, ``request``, ``body`` that is text); for access
    logs, which keep no line, the text fields of the line (client, user, method, path, query,
    protocol, referrer, user agent); otherwise every text column but ``source``."""
    types = {c.lower(): (c, t) for c, t in columns}
    for name in _TEXT_COLUMNS:
        if name in types and _is_text(types[name][1]):
            return [types[name][0]]
    if "path" in types and "status" in types:
        return [types[c][0] for c in _ACCESS_TEXT if c in types and _is_text(types[c][1])]
    return [c for c, t in columns if _is_text(t) and c.lower() != "source"]


def raw_column(columns: list[tuple[str, str]]) -> str | None:
    """What the page shows as a record's raw line: its line column, ``combined`` for access logs
    (rebuilt in the combined log format from the fields), or None."""
    types = {c.lower(): (c, t) for c, t in columns}
    for name in _TEXT_COLUMNS:
        if name in types and (_is_text(types[name][1]) or types[name][1] == "BLOB"):
            return types[name][0]
    if all(c in types for c in _ACCESS_LINE):
        return "combined"
    return None


def tie_columns(columns: list[tuple[str, str]], time_column: str) -> list[str]:
    """The order among records of one time: ``source`` then ``line`` when the table has them
    (where a record came from and its line or stream offset: unique per record), otherwise every
    other column (records equal in all of them are indistinguishable, so any order of them is
    the same output)."""
    names = {c.lower(): c for c, _ in columns}
    if "source" in names and "line" in names:
        return [names["source"], names["line"]]
    return [c for c, t in columns if c != time_column and not t.startswith("MAP")]


def default_fields(columns: list[tuple[str, str]], time_column: str, texts: list[str]) -> list[str]:
    """Five fields whose top values the page shows first: preferred names, then other short
    fields (not the time, the text or a line number)."""
    by_lower = {c.lower(): c for c, _ in columns}
    chosen = [by_lower[p] for p in _PREFERRED_FIELDS if p in by_lower]
    skip = {time_column, *texts} | {by_lower[n] for n in _NOT_DEFAULT if n in by_lower}
    for name, dtype in columns:
        plain = not dtype.endswith("]") and not dtype.startswith(("STRUCT", "MAP", "BLOB"))
        if plain and name not in chosen and name not in skip:
            chosen.append(name)
    return chosen[:5]


def table_info(config: Config, name: str) -> TableInfo:
    """The :class:`TableInfo` of lake table ``name`` (from its cached query plan: no data is read);
    NoSuchTableError (404) naming the tables there are."""
    from loglake.query.plan import current_locations, get_plan, table_names

    locations = current_locations(config)
    known = table_names(config)  # the catalog's tables and the external ones (CSV in place)
    if name not in known:
        raise NoSuchTableError(
            f"no lake table {name!r}; tables: {', '.join(known) or 'none yet: run loglake ingest'}"
        )
    plan = get_plan(config, name, locations.get(name) if locations else None)
    columns = [(c, t.upper()) for c, t in plan.columns]
    types = dict(columns)
    time_column = plan.time_column if plan.time_column in types else None
    if time_column is None or types[time_column] not in _TIME_TYPES:
        time_column = next((c for c, t in columns if t in _TIME_TYPES), None)
    if time_column is None:
        raise BadViewError(f"{name} has no timestamp column to explore by; query it in a notebook")
    texts = text_columns(columns)
    lows = [f.ts_min for f in plan.files if f.ts_min is not None]
    highs = [f.ts_max for f in plan.files if f.ts_max is not None]
    lower = {c.lower(): c for c, _ in columns}
    return TableInfo(
        name=name,
        columns=columns,
        time_column=time_column,
        text_columns=texts,
        raw=raw_column(columns),
        source_field=next((lower[f] for f in _SOURCE_FIELDS if f in lower), None),
        default_fields=default_fields(columns, time_column, texts),
        tie=tie_columns(columns, time_column),
        rows=plan.rows,
        time_min=min(lows) if lows else None,
        time_max=max(highs) if highs else None,
        files=tuple(
            (f.ts_min, f.ts_max, f.rows)
            for f in plan.files
            if f.ts_min is not None and f.ts_max is not None
        )
        if all(f.ts_min is not None and f.ts_max is not None for f in plan.files)
        else (),
        _by_lower={c.lower(): (c, t) for c, t in columns},
    )


def lake_tables(config: Config) -> list[dict[str, Any]]:
    """Every lake table Explore can show, with its :class:`TableInfo`, and those it cannot with
    the reason."""
    from loglake.errors import LoglakeError
    from loglake.query.plan import table_names

    out: list[dict[str, Any]] = []
    for name in table_names(config):
        try:
            out.append(table_info(config, name).json())
        except LoglakeError as exc:
            out.append({"name": name, "error": str(exc)})
    return out


# -- SQL --------------------------------------------------------------------------------------------


def check_where(where: str) -> str:
    """A SQL condition to AND to the filter, checked to be one expression: parentheses balanced
    outside quotes, no ``;``, no comments. It still runs in the query sandbox, like all SQL the
    console sends; this check only keeps it from reshaping the statement around it."""
    if len(where) > MAX_WHERE_CHARS:
        raise BadViewError(f"the WHERE is longer than {MAX_WHERE_CHARS} characters")
    depth, i, n = 0, 0, len(where)
    while i < n:
        c = where[i]
        if c in "'\"":
            end = i + 1
            while True:
                end = where.find(c, end)
                if end < 0:
                    raise BadViewError(f"the WHERE has a {c} at character {i + 1} never closed")
                if end + 1 < n and where[end + 1] == c:
                    end += 2  # a doubled quote stands for itself
                    continue
                break
            i = end + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise BadViewError(
                    f"the WHERE closes a parenthesis never opened (character {i + 1})"
                )
        elif c == ";":
            raise BadViewError("the WHERE is one condition: no ; in it")
        elif where.startswith(("--", "/*"), i):
            raise BadViewError("the WHERE is one condition: no comments (-- or /*) in it")
        i += 1
    if depth:
        raise BadViewError("the WHERE opens a parenthesis it never closes")
    return where.strip()


def _lit(text: str) -> str:
    try:
        return literal(text)
    except ValueError:
        raise BadViewError("a value of the filter has a NUL character") from None


def _typed(term: Term, dtype: str) -> str:
    """The value of ``term`` as an SQL constant of the column's type."""
    value = term.value
    assert value is not None
    base = dtype.split("(")[0]
    if base in _INTEGER:
        if not re.fullmatch(r"[+-]?\d{1,38}", value):
            raise BadViewError(f"{term.field} holds whole numbers: {value!r} is not one")
        return value.lstrip("+")
    if base in _FLOAT or base == "DECIMAL":
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise BadViewError(f"{term.field} holds numbers: {value!r} is not one")
        return repr(number)
    if base == "BOOLEAN":
        if value.lower() not in ("true", "false"):
            raise BadViewError(f"{term.field} is true or false, not {value!r}")
        return value.upper()
    if dtype in _CAST_TYPES:
        return f"CAST({_lit(value)} AS {dtype})"
    return _lit(value)


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def term_sql(term: Term, table: TableInfo) -> str:
    """One term as an SQL condition over ``table``; a negated term also keeps records where the
    condition is unknown (the field has no value), as Kibana does."""
    if term.field is None:
        assert term.value is not None
        if not table.text_columns:
            raise BadViewError(
                f"{table.name} has no text column for free text: filter with field:value"
            )
        needle = _lit(term.value.lower())
        cond = " OR ".join(f"contains(lower({ident(c)}), {needle})" for c in table.text_columns)
        cond = f"({cond})"
    else:
        name, dtype = table.column(term.field)
        col = ident(name)
        simple = dtype == "VARCHAR" or dtype.split("(")[0] in _INTEGER | _FLOAT | {"DECIMAL"}
        simple = simple or dtype in _CAST_TYPES or dtype == "BOOLEAN"
        if term.value is None:
            cond = f"{col} IS NOT NULL"
        elif term.wildcard:
            text = col if dtype == "VARCHAR" else f"CAST({col} AS VARCHAR)"
            cond = f"{text} LIKE {_lit(_like(term.value))} ESCAPE '\\'"
        elif simple:
            cond = f"{col} {term.op} {_typed(term, dtype)}"
        else:  # lists, structs, blobs: compared as their text
            cond = f"CAST({col} AS VARCHAR) {term.op} {_lit(term.value)}"
    return f"NOT coalesce({cond}, false)" if term.negated else cond


def _time_literal(value: datetime, dtype: str) -> str:
    if dtype == "TIMESTAMP":
        return f"TIMESTAMP '{iso(value)}'"
    return f"TIMESTAMPTZ '{iso(value)}+00:00'"


@dataclass(frozen=True)
class Cursor:
    """Where a page of records newest first starts: before ``time`` (µs), after the first ``skip``
    records at exactly ``time`` (in the tie order)."""

    time: int
    skip: int

    def text(self) -> str:
        return f"{iso(from_micros(self.time))}~{self.skip}"

    @classmethod
    def parse(cls, text: str, what: str = "cursor") -> Cursor:
        stamp, sep, skip = text.rpartition("~")
        if not sep or not (skip.isascii() and skip.isdigit()) or len(skip) > 12:
            raise BadViewError(
                f"{what} {text!r} is not one the API gave: start from the first page"
            )
        try:
            at = datetime.fromisoformat(stamp)
        except ValueError:
            raise BadViewError(f"{what} {text!r} is not one the API gave") from None
        return cls(micros(at), int(skip))


def window_starts(table: TableInfo, start: datetime, top: datetime, needed: int) -> list[datetime]:
    """Lower time bounds to try for the ``needed`` newest records at or before ``top``, narrowest
    first, ending with ``start``: a page then reads the rows just before ``top`` instead of the
    whole range (the scan skips the other files, and the sort sees only the rows of the window).

    A window is wide enough when the page comes back full. The estimate spreads each data file's
    rows evenly over its time span and counts every row, while the filter may match fewer: the
    first window holds about 4 times ``needed`` rows, each next one 16 times more. Without time
    bounds of every file, only ``start``."""
    lo, hi = micros(start), micros(top)
    files = sorted(
        (f for f in table.files if f[1] >= lo and f[0] <= hi), key=lambda f: f[1], reverse=True
    )
    edges = {hi, lo} | {f[0] for f in files} | {f[1] + 1 for f in files}
    points = sorted((p for p in edges if lo <= p <= hi), reverse=True)
    out: list[datetime] = []
    target, held = 4.0 * needed, 0.0
    for upper, lower in itertools.pairwise(points):
        # rows per µs in [lower, upper): every file covering it (no file edge falls inside)
        density = 0.0
        for first, last, rows in files:
            if last < lower:
                break  # sorted by last time: no further file reaches this segment
            if first < upper:
                density += rows / (last - first + 1)
        while density and held + density * (upper - lower) >= target:
            bound = upper - int((target - held) / density)
            if bound <= lo:
                return [*out, start]
            out.append(from_micros(bound))
            if len(out) == 3:
                return [*out, start]
            target *= 16
        held += density * (upper - lower)
    return [*out, start]


def next_cursor(times: list[int], previous: Cursor | None) -> Cursor | None:
    """The cursor after a page whose records have these times (µs, in page order)."""
    if not times:
        return None
    last = times[-1]
    same = 0
    for t in reversed(times):
        if t != last:
            break
        same += 1
    if previous is not None and same == len(times) and previous.time == last:
        same += previous.skip  # the whole page was more records of the cursor's own time
    return Cursor(last, same)


@dataclass(frozen=True)
class Search:
    """One Explore view: a table, a time range (naive UTC), the filter and the WHERE."""

    table: TableInfo
    start: datetime
    end: datetime
    terms: list[Term]
    where: str = ""

    @property
    def time(self) -> str:
        return ident(self.table.time_column)

    @property
    def time_type(self) -> str:
        return dict(self.table.columns)[self.table.time_column]

    def lit(self, value: datetime) -> str:
        return _time_literal(value, self.time_type)

    def conditions(self, start: datetime | None = None, end: datetime | None = None) -> list[str]:
        """The WHERE conjuncts: the time range first (plain comparisons the pruner reads)."""
        start = self.start if start is None else start
        end = self.end if end is None else end
        out = [f"{self.time} >= {self.lit(start)}", f"{self.time} < {self.lit(end)}"]
        out.extend(term_sql(t, self.table) for t in self.terms)
        if self.where:
            out.append(f"({self.where})")
        return out

    def order(self, descending: bool = True) -> str:
        way = "DESC" if descending else "ASC"
        keys = [f"{self.time} {way}"]
        keys.extend(f"{ident(c)} {way} NULLS LAST" for c in self.table.tie)
        return ", ".join(keys)

    @property
    def source(self) -> str:
        return qualified(self.table.name)

    @property
    def sql(self) -> str:
        """Every matching record, newest first: what a download holds."""
        where = " AND ".join(self.conditions())
        return f"SELECT * FROM {self.source} WHERE {where} ORDER BY {self.order()}"

    def page_sql(
        self,
        limit: int,
        cursor: Cursor | None,
        end: datetime | None = None,
        start: datetime | None = None,
    ) -> str:
        """``limit`` records newest first from ``cursor`` (None: the newest), within ``start`` and
        ``end`` when given (a narrower window of the range)."""
        conds = self.conditions(start, end)
        offset = ""
        if cursor is not None:
            conds.insert(2, f"{self.time} <= {self.lit(from_micros(cursor.time))}")
            if cursor.skip:
                offset = f" OFFSET {cursor.skip}"
        where = " AND ".join(conds)
        return (
            f"SELECT * FROM {self.source} WHERE {where} ORDER BY {self.order()} "
            f"LIMIT {limit}{offset}"
        )

    def histogram_sql(self, origin: int, size: int) -> str:
        """Matching records per bucket: ``(bucket number from origin, count)``."""
        where = " AND ".join(self.conditions())
        return (
            f"SELECT (epoch_us({self.time}) - {origin}) // {size} AS bucket, count(*) AS n "
            f"FROM {self.source} WHERE {where} GROUP BY bucket ORDER BY bucket"
        )

    def top_sql(self, fields: list[str]) -> str:
        """The :data:`TOP_N` most frequent values of each field, their counts, the number of
        distinct values, and the total (``k`` = -1): one scan, GROUPING SETS."""
        cols = [ident(f) for f in fields]
        where = " AND ".join(self.conditions())
        pick = " ".join(f"WHEN GROUPING({c}) = 0 THEN {i}" for i, c in enumerate(cols))
        sets = ", ".join(f"({c})" for c in cols)
        ties = ", ".join(f"{c} NULLS LAST" for c in cols)
        listed = ", ".join(cols)
        return (
            f"WITH g AS (SELECT CASE {pick} ELSE -1 END AS k, count(*) AS n, {listed} "
            f"FROM {self.source} WHERE {where} GROUP BY GROUPING SETS ({sets}, ())), "
            f"r AS (SELECT *, row_number() OVER (PARTITION BY k ORDER BY n DESC, {ties}) AS rank, "
            f"count(*) OVER (PARTITION BY k) AS distinct_values FROM g) "
            f"SELECT k, n, distinct_values, {listed} FROM r WHERE rank <= {TOP_N} "
            f"ORDER BY k, rank"
        )

    def tail_sql(self, cursor: Cursor, limit: int) -> str:
        """Records at or after ``cursor.time``, oldest first, after the first ``cursor.skip`` of
        those at exactly that time: no upper bound (what lands next)."""
        conds = [f"{self.time} >= {self.lit(from_micros(cursor.time))}"]
        conds.extend(self.conditions()[2:])
        offset = f" OFFSET {cursor.skip}" if cursor.skip else ""
        return (
            f"SELECT * FROM {self.source} WHERE {' AND '.join(conds)} "
            f"ORDER BY {self.order(descending=False)} LIMIT {limit}{offset}"
        )

    def count_at_sql(self, at: int) -> str:
        conds = [f"{self.time} = {self.lit(from_micros(at))}", *self.conditions()[2:]]
        return f"SELECT count(*) AS n FROM {self.source} WHERE {' AND '.join(conds)}"


def around_sql(table: TableInfo, at: datetime, term: Term, n: int) -> str:
    """Up to ``n`` records of one source (``term``) after ``at``, those at ``at`` and ``n`` before,
    within :data:`AROUND_SPAN` on each side, newest first."""
    search = Search(table, at - AROUND_SPAN, at + AROUND_SPAN, [term])
    t, lit = search.time, search.lit
    cond = term_sql(term, table)
    src = search.source
    newer = (
        f"SELECT * FROM {src} WHERE {t} > {lit(at)} AND {t} <= {lit(at + AROUND_SPAN)} "
        f"AND {cond} ORDER BY {search.order(descending=False)} LIMIT {n}"
    )
    same = (
        f"SELECT * FROM {src} WHERE {t} = {lit(at)} AND {cond} ORDER BY {search.order()} LIMIT {n}"
    )
    older = (
        f"SELECT * FROM {src} WHERE {t} < {lit(at)} AND {t} >= {lit(at - AROUND_SPAN)} "
        f"AND {cond} ORDER BY {search.order()} LIMIT {n}"
    )
    return (
        f"SELECT * FROM (({newer}) UNION ALL ({same}) UNION ALL ({older})) AS around "
        f"ORDER BY {search.order()}"
    )


# -- requests ---------------------------------------------------------------------------------------

_VIEW_PARAMS = {"table", "from", "to", "q", "where"}


def _params(request: Request, allowed: set[str]) -> dict[str, str]:
    params = request.query_params
    unknown = sorted(set(params.keys()) - allowed)
    if unknown:
        raise BadViewError(
            f"unknown parameters {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}"
        )
    out: dict[str, str] = {}
    for key in params:
        values = params.getlist(key)
        if len(values) > 1:
            raise BadViewError(f"give {key} once")
        out[key] = values[0]
    return out


def _int(params: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    text = params.get(key)
    if text is None or text == "":
        return default
    # isdigit() is also true of digits int() refuses (such as "²"): ASCII digits only
    if not (text.isascii() and text.isdigit()) or not lo <= int(text) <= hi:
        raise BadViewError(f"{key} must be a whole number from {lo} to {hi}, not {text!r}")
    return int(text)


def _table_name(params: dict[str, str]) -> str:
    name = params.get("table") or DEFAULT_TABLE
    if len(name) > 200:
        raise BadViewError("the table name is longer than 200 characters")
    return name


def build_search(config: Config, params: dict[str, str], now: datetime | None = None) -> Search:
    """The :class:`Search` of a request's view parameters (see the module docstring)."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    table = table_info(config, _table_name(params))
    start = parse_time(params.get("from") or "now-24h", now, "from")
    end = parse_time(params.get("to") or "now", now, "to")
    if not start < end:
        raise BadViewError(
            f"the range is empty: from ({iso(start)}) must be before to ({iso(end)})"
        )
    terms = parse_filter(params.get("q", ""))
    for term in terms:  # unknown fields and bad values are 400s here, before any query runs
        term_sql(term, table)
    where = check_where(params.get("where", ""))
    return Search(table, start, end, terms, where)


def _range_json(search: Search) -> dict[str, Any]:
    return {"table": search.table.name, "from": iso(search.start), "to": iso(search.end)}


def _times(table: pa.Table, column: str) -> list[int]:
    import pyarrow as pa

    values = table.column(column).cast(pa.int64()).to_pylist()
    return [v for v in values if v is not None]


def histogram(
    search: Search, result_rows: list[tuple[int, int]], origin: int, size: int, label: str
) -> dict[str, Any]:
    count = math.ceil((micros(search.end) - origin) / size)
    counts = [0] * count
    for bucket, n in result_rows:
        if 0 <= bucket < count:
            counts[bucket] += n
    return {
        **_range_json(search),
        "bucket": label,
        "bucket_seconds": size / _US,
        "times": [(origin + i * size) / _US for i in range(count)],
        "counts": counts,
        "total": sum(counts),
    }


def top_values(search: Search, fields: list[str], result: Result) -> dict[str, Any]:
    """The top values of ``fields`` from :meth:`Search.top_sql`'s result."""
    table = result.table
    ks = table.column("k").to_pylist()
    ns = table.column("n").to_pylist()
    distinct = table.column("distinct_values").to_pylist()
    values = [column_values(table.column(3 + i)) for i in range(len(fields))]
    total = next((n for k, n in zip(ks, ns, strict=True) if k == -1), 0)
    out: list[dict[str, Any]] = [{"field": f, "distinct": 0, "values": []} for f in fields]
    for row, (k, n) in enumerate(zip(ks, ns, strict=True)):
        if k is None or k < 0:
            continue
        value = values[k][row]
        include = term_text(fields[k], value)
        out[k]["distinct"] = distinct[row]
        out[k]["values"].append(
            {
                "value": value,
                "count": n,
                "share": n / total if total else 0,
                "include": include,
                "exclude": _negate(include),
            }
        )
    return {**_range_json(search), "total": total, "fields": out}


def _negate(term: str | None) -> str | None:
    if term is None:
        return None
    return term[1:] if term.startswith("-") else f"-{term}"


def _fields(params: dict[str, str], table: TableInfo) -> list[str]:
    text = params.get("fields")
    names = [f for f in (text.split(",") if text else table.default_fields) if f.strip()]
    if len(names) > MAX_FIELDS:
        raise BadViewError(f"at most {MAX_FIELDS} fields at once")
    out: list[str] = []
    for name in names:
        real = table.column(name.strip())[0]
        if real not in out:
            out.append(real)
    return out


def download_tables(
    pool_run: Callable[[str], Result],
    search: Search,
    slices: list[tuple[datetime, datetime]],
    first: Result | None,
    page_rows: int = DOWNLOAD_PAGE,
) -> Iterator[pa.Table]:
    """The matching records newest first, as Arrow tables of at most ``page_rows`` rows:
    time slices newest first, each paged by keyset (a slice's query reads only its files).
    ``first`` is the first page of the first slice when it was already run."""
    for index, (lo, hi) in enumerate(slices):
        cursor: Cursor | None = None
        while True:
            if index == 0 and cursor is None and first is not None:
                result = first
            else:
                result = pool_run(search.page_sql(page_rows, cursor, hi, lo))
            page = result.table
            if page.num_rows:
                yield page
            cursor = next_cursor(_times(page, search.table.time_column), cursor)
            # a page cut by [query] max_result_bytes is short, yet more records follow it
            if cursor is None or (page.num_rows < page_rows and not result.truncated):
                break


def download_slices(
    search: Search,
    counts: list[tuple[int, int]],
    origin: int,
    size: int,
    page_rows: int = DOWNLOAD_PAGE,
) -> list[tuple[datetime, datetime]]:
    """The range cut into contiguous slices, newest first, of about ``page_rows``
    matching records each by the histogram ``counts`` (only a guide: each slice is paged until
    it is exhausted, so records that land meanwhile are not lost within the range)."""
    by_bucket = dict(counts)
    buckets = math.ceil((micros(search.end) - origin) / size)
    slices: list[tuple[datetime, datetime]] = []
    hi = search.end
    held = 0
    for b in range(buckets - 1, -1, -1):
        held += by_bucket.get(b, 0)
        lo_us = max(origin + b * size, micros(search.start))
        if held >= page_rows or b == 0:
            lo = from_micros(lo_us) if b else search.start
            slices.append((lo, hi))
            hi, held = lo, 0
    return slices or [(search.start, search.end)]


def routes(console: Console) -> list[BaseRoute]:
    """The routes of the Explore page's API (see the module docstring)."""
    config = console.config
    pool = console.pool

    async def search_of(params: dict[str, str]) -> Search:
        return await run_in_threadpool(build_search, config, params)

    async def tables(request: Request) -> Response:
        _params(request, set())
        listed = await run_in_threadpool(lake_tables, config)
        return JSONResponse({"tables": listed, "default": DEFAULT_TABLE})

    async def histogram_route(request: Request) -> Response:
        params = _params(request, _VIEW_PARAMS)
        search = await search_of(params)
        label, size = choose_bucket(micros(search.end) - micros(search.start))
        origin = micros(search.start) // size * size
        result = await pool.arun(search.histogram_sql(origin, size))
        rows = list(
            zip(result.table.column(0).to_pylist(), result.table.column(1).to_pylist(), strict=True)
        )
        return JSONResponse({**histogram(search, rows, origin, size, label), "sql": search.sql})

    async def records(request: Request) -> Response:
        params = _params(request, _VIEW_PARAMS | {"limit", "cursor"})
        search = await search_of(params)
        limit = _int(params, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
        cursor = Cursor.parse(params["cursor"]) if params.get("cursor") else None
        top = from_micros(cursor.time) if cursor else search.end
        needed = limit + (cursor.skip if cursor else 0)
        for lower in window_starts(search.table, search.start, top, needed):
            sql = search.page_sql(limit, cursor, start=lower)
            result = await pool.arun(sql, max_rows=limit)
            if result.table.num_rows == limit or result.truncated:
                break  # the window held the whole page: the newest records are all in it
        times = _times(result.table, search.table.time_column)
        more = result.table.num_rows == limit or result.truncated
        after = next_cursor(times, cursor) if more else None
        # a page cut by [query] max_result_bytes loses nothing: the next page starts after it
        return JSONResponse(
            {
                **result_json(result),
                "note": None,
                **_range_json(search),
                "next": after.text() if after else None,
                "sql": search.sql,
            }
        )

    async def top(request: Request) -> Response:
        params = _params(request, _VIEW_PARAMS | {"fields"})
        search = await search_of(params)
        fields = _fields(params, search.table)
        if not fields:
            return JSONResponse({**_range_json(search), "total": None, "fields": []})
        result = await pool.arun(search.top_sql(fields), max_rows=(TOP_N + 1) * len(fields) + 1)
        return JSONResponse(top_values(search, fields, result))

    async def tail(request: Request) -> Response:
        params = _params(request, _VIEW_PARAMS | {"after", "seen", "limit"})
        if not params.get("after"):
            raise BadViewError("after: the time to tail from (the newest record shown) is missing")
        search = await search_of(params)
        limit = _int(params, "limit", 500, 1, TAIL_MAX)
        at = micros(parse_time(params["after"], datetime.now(UTC).replace(tzinfo=None), "after"))
        if params.get("seen", "") == "":
            counted = await pool.arun(search.count_at_sql(at))
            seen = int(counted.table.column(0)[0].as_py())
        else:
            seen = _int(params, "seen", 0, 0, 10**12)
        cursor = Cursor(at, seen)
        result = await pool.arun(search.tail_sql(cursor, limit), max_rows=limit)
        times = _times(result.table, search.table.time_column)
        newest = cursor
        if times:
            last = times[-1]
            same = sum(1 for t in times if t == last)
            newest = Cursor(last, same + (cursor.skip if last == cursor.time else 0))
        reply = {**result_json(result), "note": None}  # cut: "more" says to ask again at once
        # newest first, as the page lists records
        reply["data"] = [list(reversed(column)) for column in reply["data"]]
        more = result.table.num_rows == limit or result.truncated
        return JSONResponse(
            {**reply, "after": iso(from_micros(newest.time)), "seen": newest.skip, "more": more}
        )

    async def around(request: Request) -> Response:
        params = _params(request, {"table", "at", "field", "value", "n"})
        now = datetime.now(UTC).replace(tzinfo=None)
        info = await run_in_threadpool(table_info, config, _table_name(params))
        if not params.get("at") or not params.get("field"):
            raise BadViewError("give at (a record's time) and field (the field to match on)")
        at = parse_time(params["at"], now, "at")
        if not datetime.min + AROUND_SPAN <= at <= datetime.max - AROUND_SPAN:
            raise BadViewError(
                f"at {params['at']!r} is within a day of the year 1 or 9999: give a record's time"
            )
        name = info.column(params["field"])[0]
        n = _int(params, "n", 25, 1, AROUND_MAX)
        term = Term(name, params.get("value"))
        term_sql(term, info)
        result = await pool.arun(around_sql(info, at, term, n), max_rows=3 * n)
        return JSONResponse(
            {
                **result_json(result),
                "table": info.name,
                "field": name,
                "value": params.get("value"),
                "at": iso(at),
            }
        )

    async def download(request: Request) -> Response:
        params = _params(request, _VIEW_PARAMS | {"format", "page"})
        rows = _int(params, "page", DOWNLOAD_PAGE, 100, DOWNLOAD_PAGE)
        fmt = params.get("format") or "csv"
        if fmt not in DOWNLOAD_FORMATS:
            raise BadViewError(f"format must be csv or json (JSON lines), not {fmt!r}")
        search = await search_of(params)
        _, size = choose_bucket(micros(search.end) - micros(search.start))
        origin = micros(search.start) // size * size
        counted = await pool.arun(search.histogram_sql(origin, size))
        counts = list(
            zip(
                counted.table.column(0).to_pylist(),
                counted.table.column(1).to_pylist(),
                strict=True,
            )
        )
        slices = download_slices(search, counts, origin, size, rows)
        lo, hi = slices[0]
        # The first query runs before the answer starts, so that its errors are a 4xx.
        first = await pool.arun(search.page_sql(rows, None, hi, lo), max_rows=rows)

        def run(sql: str) -> Result:
            return pool.run(sql, max_rows=rows)

        from loglake.query.output import chunks

        def body() -> Iterator[bytes]:
            tables = download_tables(run, search, slices, first, rows)
            pages = _with_schema(tables, first.table)
            yield from chunks(pages, fmt)

        media, ext = DOWNLOAD_FORMATS[fmt]
        name = f"{search.table.name}-{search.start:%Y%m%dT%H%M%S}-{search.end:%Y%m%dT%H%M%S}.{ext}"
        return StreamingResponse(
            body(),
            media_type=media,
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
            },
        )

    return [
        Route("/v1/explore/tables", tables),
        Route("/v1/explore/histogram", histogram_route),
        Route("/v1/explore/records", records),
        Route("/v1/explore/top", top),
        Route("/v1/explore/tail", tail),
        Route("/v1/explore/around", around),
        Route("/v1/explore/download", download),
    ]


def _with_schema(tables: Iterator[pa.Table], first: pa.Table) -> Iterator[pa.Table]:
    """``tables``, or the empty first page when there are none (its header row is the CSV's)."""
    empty = True
    for table in tables:
        empty = False
        yield table
    if empty:
        yield first
