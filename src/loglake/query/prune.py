"""Which lake tables a query reads, and which time ranges its filters allow for each.

A range is only taken from a top-level ``AND`` conjunct of the WHERE clause of the very SELECT whose
FROM/JOIN names the table, comparing the table's time column with a constant (``>``, ``>=``, ``<``,
``<=``, ``=``, ``BETWEEN``). Anything else (OR, functions, subqueries, parameters) means "no pruning",
so pruning can only skip files whose rows that query would have filtered out anyway.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from sqlglot import exp, parse_one
from sqlglot.errors import ParseError

Range = tuple[int | None, int | None]  # inclusive bounds in µs since the epoch, UTC; None = open


def _time_column(table: str) -> str:
    return "ingested_at" if table == "logs.rejected" else "ts"


def _micros(node: exp.Expression) -> int | None:
    """The constant timestamp ``node`` stands for, or None when it is not a plain constant."""
    if isinstance(node, exp.Cast):
        return _micros(node.this)
    if isinstance(node, (exp.TsOrDsToTimestamp, exp.TimeStrToTime)):
        return _micros(node.this)
    if not isinstance(node, exp.Literal) or not node.is_string:
        return None
    text = node.this.strip()
    try:
        value = datetime.fromisoformat(text.replace(" UTC", "+00:00"))
    except ValueError:
        try:
            d = date.fromisoformat(text)
        except ValueError:
            return None
        value = datetime(d.year, d.month, d.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # the session time zone is UTC
    return int(value.timestamp()) * 1_000_000 + value.microsecond


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
    aliases = {table.alias_or_name, name, table.name}
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
