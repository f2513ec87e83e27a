"""Which lake tables a query reads, and which time ranges its filters allow for each.

A range is only taken from a top-level ``AND`` conjunct of the WHERE clause of the very SELECT whose
FROM/JOIN names the table, comparing the table's time column with a constant (``>``, ``>=``, ``<``,
``<=``, ``=``, ``BETWEEN``). Anything else (OR, functions, subqueries, parameters) means "no pruning",
so pruning can only skip files whose rows that query would have filtered out anyway. A constant is
read as DuckDB reads it (a cast to DATE drops the time of day); one whose reading DuckDB could make
differently (an offset compared with a column whose zone is unknown here, a cast that rounds to
seconds or milliseconds) is not used either.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlglot import exp, parse_one
from sqlglot.errors import ParseError

Range = tuple[int | None, int | None]  # inclusive bounds in µs since the epoch, UTC; None = open


def _time_column(table: str) -> str:
    return "ingested_at" if table == "logs.rejected" else "ts"


_EPOCH = datetime(1970, 1, 1)
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(\s*(Z|UTC|[+-]\d{2}(:?\d{2})?))?"
)
_T = exp.DataType.Type
# Casts DuckDB stores with microsecond precision or finer, so the value is the text's (truncated
# to µs, which only widens a range). TIMESTAMP_S and TIMESTAMP_MS round: left unpruned.
_EXACT = {_T.TIMESTAMP, _T.TIMESTAMPNTZ, _T.DATETIME, _T.TIMESTAMP_NS}


def _constant(node: exp.Expression) -> datetime | None:
    """The timestamp DuckDB reads ``node`` as, when it is a constant whose reading is certain.

    Naive results are UTC (the session time zone); an aware result carries the offset its text
    gave, which only a comparison with a zone-aware value honours.
    """
    if isinstance(node, (exp.TsOrDsToTimestamp, exp.TimeStrToTime)):
        node = exp.Cast(this=node.this, to=exp.DataType.build("TIMESTAMP"))
    if isinstance(node, exp.Cast):
        to = node.to.this
        value = _constant(node.this)
        if value is None:
            return None
        if to == _T.TIMESTAMPTZ:
            return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        if _shifted(value):
            return None  # a zone-less cast drops the offset in some DuckDB versions, not in others
        value = value.replace(tzinfo=None)
        if to == _T.DATE:
            return datetime(value.year, value.month, value.day)  # the time of day is dropped
        return value if to in _EXACT else None
    if not isinstance(node, exp.Literal) or not node.is_string:
        return None
    text = node.this.strip()
    if not _ISO.fullmatch(text):
        return None  # Python reads forms DuckDB does not (ISO weeks, compact dates)
    try:
        value = datetime.fromisoformat(text.replace(" UTC", "+00:00").replace("UTC", "+00:00"))
    except ValueError:
        return None
    return value


def _shifted(value: datetime) -> bool:
    """Whether the text of ``value`` named an offset from UTC other than zero."""
    offset = value.utcoffset()
    return offset is not None and offset != timedelta(0)


def _micros(node: exp.Expression) -> int | None:
    """The constant timestamp ``node`` stands for in µs since the epoch (UTC), or None when it is
    not a plain constant or its meaning depends on the column's type.

    A string with an offset compared with a zone-less column is read without the offset, with a
    zone-aware one at that offset; the pruner does not know the column's type, so it does not
    prune by such a string.
    """
    value = _constant(node)
    if value is None or _shifted(value):
        return None
    value = value.replace(tzinfo=None)  # naive, or UTC
    # Integer arithmetic: float seconds put times before 1970 on the wrong side of a second.
    return (value - _EPOCH) // timedelta(microseconds=1)


def _is_time_column(node: exp.Expression, column: str, aliases: set[str], single: bool) -> bool:
    if not isinstance(node, exp.Column) or node.name != column:
        return False
    qualifier = node.table
    return (not qualifier and single) or qualifier in aliases


def _conjunct_range(
    node: exp.Expression, column: str, aliases: set[str], single: bool
) -> Range | None:
    if isinstance(node, exp.Paren):
        return _conjunct_range(node.this, column, aliases, single)
    if isinstance(node, exp.Between) and _is_time_column(node.this, column, aliases, single):
        lo, hi = _micros(node.args["low"]), _micros(node.args["high"])
        if lo is not None or hi is not None:
            return (lo, hi)
        return None
    ops = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ)
    if not isinstance(node, ops):
        return None
    left, right = node.this, node.expression
    op: type[exp.Binary]
    if _is_time_column(left, column, aliases, single):
        value, op = _micros(right), type(node)
    elif _is_time_column(right, column, aliases, single):
        flipped = {
            exp.GT: exp.LT,
            exp.GTE: exp.LTE,
            exp.LT: exp.GT,
            exp.LTE: exp.GTE,
            exp.EQ: exp.EQ,
        }
        value, op = _micros(left), flipped[type(node)]
    else:
        return None
    if value is None:
        return None
    if op in (exp.GT, exp.GTE):
        return (value, None)
    if op in (exp.LT, exp.LTE):
        return (None, value)
    return (value, value)


def _scope_range(table: exp.Table, name: str) -> Range | None:
    select = table.parent.parent if table.parent is not None else None
    if not isinstance(table.parent, (exp.From, exp.Join)) or not isinstance(select, exp.Select):
        return None
    where = select.args.get("where")
    if where is None:
        return None
    sources = [
        select.args.get("from_") or select.args.get("from"),
        *(select.args.get("joins") or []),
    ]
    single = len([s for s in sources if s is not None]) == 1
    # An aliased table is known by its alias only (DuckDB refuses its name then): another table
    # may be aliased as this one's name, and its filter says nothing about this one's rows.
    aliases = {table.alias} if table.alias else {table.name}
    column = _time_column(name)
    lo: int | None = None
    hi: int | None = None
    found = False
    for conjunct in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        r = _conjunct_range(conjunct, column, aliases, single)  # type: ignore[arg-type,unused-ignore]
        if r is None:
            continue
        found = True
        if r[0] is not None:
            lo = r[0] if lo is None else max(lo, r[0])
        if r[1] is not None:
            hi = r[1] if hi is None else min(hi, r[1])
    return (lo, hi) if found else None


def referenced_tables(sql: str, known: set[str]) -> dict[str, list[Range] | None]:
    """``{table: ranges or None}`` for each known lake table ``sql`` names (None: read all files)."""
    try:
        tree = parse_one(sql, read="duckdb")
    except (ParseError, ValueError):
        tree = None
    if tree is None or isinstance(tree, exp.Command):
        # Not parseable here (DuckDB may still accept it): bind every table named in the text.
        lowered = sql.lower()
        return {n: None for n in known if re.search(rf"\b{re.escape(n.lower())}\b", lowered)}
    out: dict[str, list[Range] | None] = {}
    lowered = sql.lower()
    for name in known:
        # Names sqlglot reads as something else (``logs.json``: JSON is a keyword there) are still
        # bound, without pruning; DuckDB would otherwise take them for file names.
        if re.search(rf"\b{re.escape(name.lower())}\b", lowered):
            out[name] = None
    seen: set[str] = set()
    for table in tree.find_all(exp.Table):
        name = f"{table.db}.{table.name}" if table.db else table.name
        if name not in known:
            continue
        r = _scope_range(table, name)
        if r is None:
            out[name] = None
            seen.add(name)
        elif name not in seen:
            out[name] = [r]
            seen.add(name)
        elif out[name] is not None:
            out[name].append(r)  # type: ignore[union-attr]
    return out
