"""Athena's date and time functions rewritten so they answer in DuckDB as they answer in Athena.

:func:`replacement` is called by :func:`loglake.query.athena.rewrite` for every node of sqlglot's
tree of an Athena statement, deepest first; it returns the DuckDB expression replacing the node,
or None to leave it as it is.

How a ``timestamp with time zone`` is carried. Athena's session zone is UTC, so a ``timestamp``
(no zone) is a UTC wall time, which is what the lake's ``ts`` holds (DuckDB ``TIMESTAMP``, the
sandbox's TimeZone is UTC). DuckDB has no type that keeps a zone with a value, so a value of
Athena's ``timestamp with time zone`` (the result of ``AT TIME ZONE``, ``with_timezone``,
``from_unixtime``, ``from_iso8601_timestamp``, ``parse_datetime``, a literal with a zone) is
written as a DuckDB ``TIMESTAMP`` holding its *local* wall time, so that ``hour()``, ``day()``,
``date_trunc``, ``date_format`` and the other field functions answer in its zone as Athena's do.
The expression node also carries, at plan time, the SQL of the instant (as a UTC ``TIMESTAMP``)
and of the zone's name, which ``to_unixtime``, ``to_iso8601``, ``format_datetime`` (``Z``),
``timezone_hour``, a second ``AT TIME ZONE`` and comparisons use. That knowledge does not cross a
subquery's or a CTE's column: there the value is its wall time, right for field functions, and a
use that its zone decides is refused (:func:`_refuse_lost_zones`).

Anything without a faithful translation raises QueryRefusedError naming the Athena function or
pattern letter and what to use instead.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from functools import cache

from sqlglot import exp, parse_one

from loglake.errors import QueryError, QueryRefusedError

#: meta keys of a node that stands for a timestamp with time zone: the SQL of its instant (a UTC
#: TIMESTAMP) and of its zone's name (a VARCHAR: 'UTC', 'America/Los_Angeles', '+01:00').
_INSTANT = "athena_instant"
_ZONE = "athena_zone"
#: meta key of a node whose Athena type is a timestamp(p) (with time zone or not): p.
_PRECISION = "athena_precision"
#: meta key of a translated node whose answer depends on the zone of its arguments: the names of
#: the columns it reads (see _refuse_lost_zones).
_USES = "athena_zone_uses"

_UNITS = frozenset(
    {"millisecond", "second", "minute", "hour", "day", "week", "month", "quarter", "year"}
)
_DATE_UNITS = frozenset({"day", "week", "month", "quarter", "year"})

#: Names of the values bound once by _let.
_NAMES = itertools.count()

#: A zone written as an offset, which ICU's timezone() does not take: applied as minutes.
_OFFSET_ZONE = r"^[+-][0-9]{2}:[0-9]{2}$"


def replacement(node: exp.Expr) -> exp.Expr | None:
    """The DuckDB expression that answers as Athena's date/time construct ``node`` does, or None
    when ``node`` is not one this module translates. Raises QueryRefusedError for a construct
    that cannot be translated faithfully (the message names it and what to use instead)."""
    if node.parent is None:
        _refuse_lost_zones(node)  # the root comes last: everything below is translated
    result: exp.Expr | None = None
    if isinstance(node, exp.Anonymous):
        build = _ANONYMOUS.get(str(node.this).lower())
        result = build(node) if build else None
    else:
        for kind, handler in _HANDLERS:
            if isinstance(node, kind):
                result = handler(node)
                break
    if _zone_sensitive(node):
        target = result if result is not None else node
        names = {c.name.lower() for c in node.find_all(exp.Column)}
        target.meta[_USES] = names | set(target.meta.get(_USES, ()))
    return result


def _zone_sensitive(node: exp.Expr) -> bool:
    """True for a construct whose answer depends on its argument's zone, not only on its wall
    time (to_unixtime, to_iso8601, comparisons, AT TIME ZONE, ...)."""
    if isinstance(node, _SENSITIVE):
        return True
    if isinstance(node, exp.Cast):
        return node.args["to"].this in (exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT)
    if isinstance(node, exp.Extract):
        return node.this.name.upper() in ("TIMEZONE_HOUR", "TIMEZONE_MINUTE")
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        if name == "format_datetime" and len(node.expressions) == 2:
            pattern = node.expressions[1]
            return isinstance(pattern, exp.Literal) and any(
                isinstance(t, tuple) and t[0] == "Z" for t in joda_tokens(pattern.this)
            )
        return name in ("to_iso8601", "timezone_hour", "timezone_minute", "timezone")
    return False


def _refuse_lost_zones(root: exp.Expr) -> None:
    """Refuse a statement that takes a timestamp with time zone (other than UTC) out of a
    subquery or a CTE by a column and then uses that column where its zone matters: the zone is
    known only within the expression that makes it, so the answer would silently differ.

    A zone read from the data (``from_iso8601_timestamp``, ``parse_datetime`` with ``Z``) is
    checked row by row instead: such a column fails when a row's zone is not UTC (CloudTrail's
    ``...Z`` times pass), since its wall time is then its instant."""
    lost: dict[str, exp.Alias] = {}
    for select in root.find_all(exp.Select):
        if select.find_ancestor(exp.Subquery, exp.CTE) is None:
            continue
        for projection in select.expressions:
            zoned = isinstance(projection, exp.Alias) and _is_zoned(projection.this)
            if zoned and _zone(projection.this) != "'UTC'":
                lost[projection.alias.lower()] = projection
    if not lost:
        return
    used: set[str] = set()
    for node in root.walk():
        used |= set(node.meta.get(_USES, ())) & set(lost)
    for key in sorted(used):
        projection = lost[key]
        value = projection.this
        zone = _zone(value)
        message = (
            f"column {projection.alias} is a timestamp with time zone made in a subquery or "
            "WITH clause, and its zone does not cross into the outer query, where it is used for "
            "something its zone decides (to_unixtime, to_iso8601, a comparison, AT TIME ZONE, "
            "...); apply that inside the subquery, or write AT TIME ZONE in the outer query"
        )
        if re.fullmatch(r"'[^']*'", zone):
            raise QueryRefusedError(message)
        text = exp.Literal.string(message + "; a row's zone is ").sql(dialect="duckdb")
        guarded = _parse(
            f"CASE WHEN {zone} = 'UTC' THEN {_sql(value)} ELSE error({text} || {zone}) END"
        )
        value.replace(guarded)


# -- helpers ------------------------------------------------------------------------------------


def _sql(node: exp.Expr) -> str:
    return f"({node.sql(dialect='duckdb')})"


def _parse(sql: str) -> exp.Expr:
    return exp.Paren(this=parse_one(sql, read="duckdb"))


def _zoned(local: str, instant: str, zone: str, precision: int) -> exp.Expr:
    """A timestamp(precision) with time zone: its local wall time, with its instant, zone and
    fractional digits as meta."""
    node = _parse(local)
    node.meta[_INSTANT] = instant
    node.meta[_ZONE] = zone
    node.meta[_PRECISION] = precision
    return node


def _unwrap(node: exp.Expr) -> exp.Expr:
    """``node`` without the parentheses written around it in the query."""
    while isinstance(node, exp.Paren) and _INSTANT not in node.meta:
        node = node.this
    return node


def _is_zoned(node: exp.Expr) -> bool:
    return _INSTANT in _unwrap(node).meta


def _instant(node: exp.Expr) -> str:
    """The SQL of ``node``'s instant as a UTC TIMESTAMP (a timestamp without zone is UTC; a
    DuckDB TIMESTAMPTZ such as now() is written as its UTC wall time, the sandbox's zone)."""
    inner = _unwrap(node)
    if _INSTANT in inner.meta:
        return str(inner.meta[_INSTANT])
    return f"CAST({_sql(node)} AS TIMESTAMP)"


def _zone(node: exp.Expr) -> str:
    return str(_unwrap(node).meta.get(_ZONE, "'UTC'"))


def _offset_minutes(node: exp.Expr) -> str:
    """The SQL of ``node``'s offset from UTC in minutes (0 for a timestamp without zone)."""
    if not _is_zoned(node):
        return "0"
    return f"((epoch_us({_sql(node)}) - epoch_us({_instant(node)})) // 60000000)"


def _let(value: str, body: Callable[[str], str]) -> str:
    """SQL of ``body`` with ``value`` computed once: each rewrite that nests another would
    otherwise repeat its operand's SQL several times, growing exponentially with the depth."""
    name = f"athena_v{next(_NAMES)}"
    return f"list_transform([{value}], LAMBDA {name}: {body(name)})[1]"


def _literal_zone(zone: str) -> str | None:
    """The text of a zone written as a SQL string literal, None for an expression."""
    match = re.fullmatch(r"'([^']*)'", zone)
    return match.group(1) if match else None


def _literal_offset(zone: str) -> int | None:
    """Minutes of a literal '+hh:mm' zone, None for any other."""
    text = _literal_zone(zone)
    if text is None or not re.fullmatch(_OFFSET_ZONE, text):
        return None
    sign = -1 if text[0] == "-" else 1
    return sign * (int(text[1:3]) * 60 + int(text[4:6]))


def _local_in(instant: str, zone: str) -> str:
    """The wall time in ``zone`` (an IANA name, 'UTC' or an offset '+05:30') of a UTC instant."""
    offset = _literal_offset(zone)
    if offset is not None:
        return f"({instant} + to_minutes({offset}))"
    if _literal_zone(zone) is not None:
        return f"timezone({zone}, CAST({instant} AS TIMESTAMPTZ))"

    def body(z: str) -> str:
        return _let(
            instant,
            lambda i: (
                f"CASE WHEN regexp_matches({z}, '{_OFFSET_ZONE}') "
                f"THEN {i} + to_minutes({_zone_offset_minutes(z)}) "
                f"ELSE timezone({z}, CAST({i} AS TIMESTAMPTZ)) END"
            ),
        )

    return _let(zone, body)


def _instant_of(local: str, zone: str) -> str:
    """The UTC instant of wall time ``local`` in ``zone``."""
    offset = _literal_offset(zone)
    if offset is not None:
        return f"({local} - to_minutes({offset}))"
    if _literal_zone(zone) is not None:
        return f"timezone('UTC', timezone({zone}, CAST({local} AS TIMESTAMP)))"

    def body(z: str) -> str:
        return _let(
            local,
            lambda t: (
                f"CASE WHEN regexp_matches({z}, '{_OFFSET_ZONE}') "
                f"THEN {t} - to_minutes({_zone_offset_minutes(z)}) "
                f"ELSE timezone('UTC', timezone({z}, CAST({t} AS TIMESTAMP))) END"
            ),
        )

    return _let(zone, body)


def _zone_offset_minutes(zone: str) -> str:
    """Minutes of a '+hh:mm' zone (0 for any other); only read where the zone is one."""
    return (
        f"(CASE WHEN regexp_matches({zone}, '{_OFFSET_ZONE}') THEN "
        f"(CASE WHEN left({zone}, 1) = '-' THEN -1 ELSE 1 END) * "
        f"(CAST(substr({zone}, 2, 2) AS BIGINT) * 60 + CAST(substr({zone}, 5, 2) AS BIGINT)) "
        f"ELSE 0 END)"
    )


def _zone_literal(zone: exp.Expr) -> str:
    """The SQL of a zone argument; a literal one is checked and normalized at plan time."""
    if isinstance(zone, exp.Literal) and zone.is_string:
        text = zone.this.strip()
        offset = re.fullmatch(r"([+-])([0-9]{1,2})(?::?([0-9]{2}))?", text)
        if offset:
            sign, hours, minutes = offset.groups()
            if int(hours) == 0 and int(minutes or 0) == 0:
                return "'UTC'"
            return f"'{sign}{int(hours):02d}:{minutes or '00'}'"
        if text.upper() in ("Z", "UTC", "GMT", "UT"):
            return "'UTC'"
        known = _zone_names()
        if text.lower() not in known:
            raise QueryError(
                f"unknown time zone {text!r}: use an IANA name such as 'America/Los_Angeles', "
                "'UTC', or an offset such as '+05:30'"
            )
        return exp.Literal.string(known[text.lower()]).sql(dialect="duckdb")
    if isinstance(zone, exp.Interval):
        raise QueryRefusedError(
            "Athena's AT TIME ZONE INTERVAL '...' is not translated; write the offset as a "
            "string, e.g. AT TIME ZONE '-08:00'"
        )
    return _sql(zone)


@cache
def _zone_names() -> dict[str, str]:
    """The zone names DuckDB's ICU knows, by their lower-case spelling (Trino's are
    case-insensitive too)."""
    import duckdb

    with duckdb.connect() as con:
        rows = con.execute("SELECT name FROM pg_timezone_names()").fetchall()
    return {str(r[0]).lower(): str(r[0]) for r in rows}


def _unit(node: exp.Expr, function: str) -> str:
    unit = node.args.get("unit")
    literal = isinstance(unit, exp.Var) or (isinstance(unit, exp.Literal) and unit.is_string)
    text = unit.name.lower() if unit is not None and literal else ""
    if text not in _UNITS:
        raise QueryRefusedError(
            f"Athena function {function}() takes a literal unit, one of {', '.join(sorted(_UNITS))}"
            f" (got {unit.sql() if unit is not None else 'none'})"
        )
    return text


def _refuse_nonliteral(function: str, argument: str) -> QueryRefusedError:
    return QueryRefusedError(
        f"Athena function {function}() is translated only with a literal {argument} (a string "
        f"constant written in the query), because the pattern is translated when the query is "
        f"planned; write the {argument} as a constant"
    )


def _is_date(node: exp.Expr) -> bool:
    """True when ``node`` is known at plan time to be a DATE (a literal, a cast, date(), ...)."""
    inner = node
    while isinstance(inner, exp.Paren):
        if inner.meta.get("athena_date"):
            return True
        inner = inner.this
    if isinstance(inner, exp.Cast):
        return inner.to.this == exp.DataType.Type.DATE
    return isinstance(
        inner, (exp.CurrentDate, exp.Date, exp.LastDay, exp.FromISO8601Date, exp.TsOrDsToDate)
    ) or bool(inner.meta.get("athena_date"))


# -- AT TIME ZONE, with_timezone, literals with a zone ------------------------------------------


def _at_time_zone(node: exp.Expr) -> exp.Expr:
    value = node.this
    zone = _zone_literal(node.args["zone"])
    instant = _instant(value)
    return _zoned(_local_in(instant, zone), instant, zone, _precision(value))


def _at_timezone(node: exp.Expr) -> exp.Expr:
    value, zone = _args(node, "at_timezone", 2)
    zone_sql = _zone_literal(zone)
    instant = _instant(value)
    return _zoned(_local_in(instant, zone_sql), instant, zone_sql, _precision(value))


def _with_timezone(node: exp.Expr) -> exp.Expr:
    value, zone = _args(node, "with_timezone", 2)
    zone_sql = _zone_literal(zone)
    local = _sql(value)
    return _zoned(local, _instant_of(local, zone_sql), zone_sql, _precision(value))


_ZONED_LITERAL = re.compile(
    r"^(\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?)\s*"
    r"(Z|UTC|[+-]\d{1,2}(?::?\d{2})?|[A-Za-z][A-Za-z0-9_/+-]*)$"
)


def _cast(node: exp.Expr) -> exp.Expr | None:
    target = node.args["to"].this
    value = node.this
    if target == exp.DataType.Type.TIMESTAMPTZ:
        if isinstance(value, exp.Literal) and value.is_string:
            match = _ZONED_LITERAL.match(value.this.strip())
            if match:
                local = f"CAST('{match.group(1)}' AS TIMESTAMP)"
                zone = _zone_literal(exp.Literal.string(match.group(2)))
                return _zoned(local, _instant_of(local, zone), zone, _precision(node))
        if _is_zoned(value):
            # The zone is kept; the type's precision is the cast's (timestamp(3) without one).
            return _zoned(_sql(value), _instant(value), _zone(value), _precision(node))
        return None
    if _is_zoned(value) and target in (exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT):
        # Athena writes a timestamp(p) with time zone with p digits and its zone's name.
        text = _sql(value)
        fraction = _fraction_sql(text, _precision(value))
        return _parse(
            f"strftime({text}, '%Y-%m-%d %H:%M:%S') || {fraction} || ' ' || {_zone(value)}"
        )
    return None


def _comparison(node: exp.Expr) -> exp.Expr | None:
    """Athena compares timestamps with time zone by their instants, not their wall times."""
    names = ("this", "low", "high") if isinstance(node, exp.Between) else ("this", "expression")
    sides = [node.args[name] for name in names if node.args.get(name) is not None]
    if not any(_is_zoned(s) for s in sides):
        return None
    for side in sides:
        if _is_zoned(side):
            side.replace(_parse(_instant(side)))
    return None


def _ordered(node: exp.Expr) -> exp.Expr | None:
    """Athena sorts timestamps with time zone by their instants."""
    if _is_zoned(node.this):
        node.this.replace(_parse(_instant(node.this)))
    return None


_DAY_TO_SECOND = frozenset({"DAY", "HOUR", "MINUTE", "SECOND", "MILLISECOND"})
_YEAR_TO_MONTH = frozenset({"YEAR", "MONTH", "QUARTER", "WEEK"})


def _interval_unit(node: exp.Expr) -> str | None:
    if not isinstance(node, exp.Interval):
        return None
    unit = node.args.get("unit")
    return unit.name.upper() if isinstance(unit, exp.Var) else None


def _plus_interval(node: exp.Expr) -> exp.Expr | None:
    """``date ± interval`` is a date in Athena; ``timestamp with time zone ± interval`` keeps
    its zone, adding a day-to-second interval to the instant and a year-to-month one on the
    zone's calendar."""
    left, right = node.this, node.expression
    sign = "-" if isinstance(node, exp.Sub) else "+"
    value, interval = (left, right) if _interval_unit(right) else (right, left)
    unit = _interval_unit(interval)
    if unit is None or (sign == "-" and value is not left):
        return None
    if _is_date(value):
        if unit not in _YEAR_TO_MONTH and unit != "DAY":
            raise QueryRefusedError(
                f"Athena does not add {unit.lower()}s to a date; cast it to timestamp first"
            )
        result = _parse(f"CAST({_sql(value)} {sign} {_sql(interval)} AS DATE)")
        result.meta["athena_date"] = True
        return result
    if not _is_zoned(value):
        return None
    zone = _zone(value)
    if unit in _DAY_TO_SECOND:
        instant = f"({_instant(value)} {sign} {_sql(interval)})"
        return _zoned(_local_in(instant, zone), instant, zone, _precision(value))
    local = f"({_sql(value)} {sign} {_sql(interval)})"
    return _zoned(local, _instant_of(local, zone), zone, _precision(value))


def _to_milliseconds(node: exp.Expr) -> exp.Expr:
    (value,) = _args(node, "to_milliseconds", 1)
    return _parse(f"CAST(round(epoch({_sql(value)}) * 1000) AS BIGINT)")


def _refuse_nanos(node: exp.Expr) -> exp.Expr:
    raise QueryRefusedError(
        "Athena function from_iso8601_timestamp_nanos() is not translated: loglake keeps "
        "microseconds, not nanoseconds; use from_iso8601_timestamp() (milliseconds)"
    )


# -- Unix time, ISO 8601 ------------------------------------------------------------------------


def _to_unixtime(node: exp.Expr) -> exp.Expr:
    return _parse(f"epoch_us({_instant(node.this)}) / 1000000.0")


def _from_unixtime(node: exp.Expr) -> exp.Expr:
    # Trino: Math.round(unixtime * 1000) milliseconds, a timestamp(3) with time zone.
    seconds = _sql(node.this)
    instant = (
        f"make_timestamp(CAST(floor(CAST({seconds} AS DOUBLE) * 1000 + 0.5) AS BIGINT) * 1000)"
    )
    zone = node.args.get("zone")
    hours = node.args.get("hours")
    if zone is not None:
        zone_sql = _zone_literal(zone)
    elif hours is not None:
        minutes = node.args.get("minutes")
        total = f"({_sql(hours)} * 60 + {_sql(minutes) if minutes is not None else 0})"
        zone_sql = (
            f"(CASE WHEN {total} = 0 THEN 'UTC' ELSE "
            f"(CASE WHEN {total} < 0 THEN '-' ELSE '+' END) || "
            f"printf('%02d:%02d', abs({total}) // 60, abs({total}) % 60) END)"
        )
    else:
        return _zoned(instant, instant, "'UTC'", 3)
    return _zoned(_local_in(instant, zone_sql), instant, zone_sql, 3)


def _iso_offset(node: exp.Expr) -> str:
    """Java's ZoneOffset text of ``node``'s offset: 'Z', or '+01:00'."""
    return _let(_offset_minutes(node), lambda m: _offset_name(m, "Z"))


def _precision(node: exp.Expr) -> int:
    """The fractional digits of ``node``'s Athena type: a literal's own, 3 for now() and a cast
    without one, 6 otherwise (a lake column: Athena reads loglake's Iceberg tables' timestamps as
    timestamp(6))."""
    inner = node
    while isinstance(inner, exp.Paren):
        if _PRECISION in inner.meta:
            return int(inner.meta[_PRECISION])
        inner = inner.this
    if _PRECISION in inner.meta:
        return int(inner.meta[_PRECISION])
    if isinstance(inner, exp.Cast):
        if not inner.to.expressions:
            return 3
        param = inner.to.expressions[0]
        literal = param.this if isinstance(param, exp.DataTypeParam) else param
        if isinstance(literal, exp.Literal) and literal.is_int:
            return int(literal.this)
    if isinstance(inner, exp.CurrentTimestamp):
        return 3
    return 6


def _fraction_sql(value: str, precision: int) -> str:
    """SQL of the fraction of ``precision`` digits, with its dot (DuckDB keeps microseconds)."""
    if precision == 0:
        return "''"
    if precision <= 3:
        return f"'.' || left(strftime({value}, '%g'), {precision})"
    return f"'.' || left(strftime({value}, '%f') || '000000', {precision})"


def _to_iso8601(node: exp.Expr) -> exp.Expr:
    (value,) = _args(node, "to_iso8601", 1)
    text = _sql(value)
    if _is_date(value):
        return _parse(f"strftime({text}, '%Y-%m-%d')")
    precision = _precision(value)
    if precision > 6:
        raise QueryRefusedError(
            f"Athena's to_iso8601 of a timestamp({precision}) is not translated: loglake keeps "
            "microseconds; cast the value to timestamp(6) first"
        )
    body = f"(strftime({text}, '%Y-%m-%dT%H:%M:%S') || {_fraction_sql(text, precision)})"
    if _is_zoned(value):
        return _parse(f"{body} || {_iso_offset(value)}")
    # A DuckDB TIMESTAMPTZ (now(), a cast): UTC in the sandbox; a DATE column: the date only.
    return _parse(
        f"CASE WHEN typeof({text}) = 'DATE' THEN strftime({text}, '%Y-%m-%d') "
        f"WHEN typeof({text}) = 'TIMESTAMP WITH TIME ZONE' THEN {body} || 'Z' ELSE {body} END"
    )


def _from_iso8601_timestamp(node: exp.Expr) -> exp.Expr:
    text = _sql(node.this)
    offset = f"regexp_extract({text}, 'T.*?(Z|[+-][0-9]{{2}}(?::?[0-9]{{2}})?)$', 1)"
    local_text = f"left({text}, length({text}) - length({offset}))"
    formats = (
        "['%Y-%m-%dT%H:%M:%S.%n', '%Y-%m-%dT%H:%M:%S', '%Y-%m-%dT%H:%M', '%Y-%m-%dT%H', "
        "'%Y-%m-%d', '%Y-%m', '%Y']"
    )
    local = f"date_trunc('millisecond', strptime({local_text}, {formats}))"
    minutes, zone = _offset_text(offset)
    return _zoned(local, f"({local} - to_minutes({minutes}))", zone, 3)


def _offset_text(offset: str) -> tuple[str, str]:
    """SQL of the minutes and of the zone name (Trino's: 'UTC' for a zero offset, else '+01:00')
    of an offset text: '' or 'Z' (UTC), '+01', '+0100' or '+01:00'."""

    def minutes_of(o: str) -> str:
        digits = f"replace({o}, ':', '')"
        return (
            f"CASE WHEN {o} IN ('', 'Z') THEN 0 ELSE "
            f"(CASE WHEN left({o}, 1) = '-' THEN -1 ELSE 1 END) * "
            f"(CAST(substr({digits}, 2, 2) AS BIGINT) * 60 "
            f"+ coalesce(CAST(nullif(substr({digits}, 4, 2), '') AS BIGINT), 0)) END"
        )

    minutes = _let(offset, minutes_of)
    zone = _let(minutes, lambda m: _offset_name(m, "UTC"))
    return minutes, zone


def _offset_name(minutes: str, zero: str) -> str:
    """SQL of '+01:00' for ``minutes`` (a name bound once), ``zero`` for 0."""
    return (
        f"CASE WHEN {minutes} = 0 THEN '{zero}' ELSE (CASE WHEN {minutes} < 0 THEN '-' ELSE '+' "
        f"END) || printf('%02d:%02d', abs({minutes}) // 60, abs({minutes}) % 60) END"
    )


def _from_iso8601_date(node: exp.Expr) -> exp.Expr:
    text = _sql(node.this)
    week = r"^([0-9]{4})-?W([0-9]{2})(?:-?([1-7]))?$"
    jan4 = f"make_date(CAST(regexp_extract({text}, '{week}', 1) AS BIGINT), 1, 4)"
    week_date = (
        f"CAST({jan4} + CAST(1 - isodow({jan4}) "
        f"+ (CAST(regexp_extract({text}, '{week}', 2) AS INTEGER) - 1) * 7 "
        f"+ coalesce(CAST(nullif(regexp_extract({text}, '{week}', 3), '') AS INTEGER), 1) - 1 "
        f"AS INTEGER) AS DATE)"
    )
    return _parse(
        f"CASE WHEN regexp_matches({text}, '{week}') THEN {week_date} "
        f"WHEN regexp_matches({text}, '^[0-9]{{4}}-?[0-9]{{3}}$') "
        f"THEN CAST(strptime(replace({text}, '-', ''), '%Y%j') AS DATE) "
        f"ELSE CAST(strptime({text}, ['%Y-%m-%d', '%Y%m%d', '%Y-%m', '%Y']) AS DATE) END"
    )


# -- zone fields --------------------------------------------------------------------------------


def _timezone_hour(node: exp.Expr, value: exp.Expr | None = None) -> exp.Expr:
    target = value if value is not None else _args(node, "timezone_hour", 1)[0]
    minutes = _offset_minutes(target)
    return _parse(f"CAST(sign({minutes}) * (abs({minutes}) // 60) AS BIGINT)")


def _timezone_minute(node: exp.Expr, value: exp.Expr | None = None) -> exp.Expr:
    target = value if value is not None else _args(node, "timezone_minute", 1)[0]
    minutes = _offset_minutes(target)
    return _parse(f"CAST(sign({minutes}) * (abs({minutes}) % 60) AS BIGINT)")


def _timezone(node: exp.Expr) -> exp.Expr | None:
    if len(node.expressions) != 1:
        return None  # DuckDB's own timezone(zone, ts) form
    return _parse(_zone(node.expressions[0]))


def _extract(node: exp.Expr) -> exp.Expr | None:
    field = node.this.name.upper() if isinstance(node.this, (exp.Var, exp.Identifier)) else ""
    value = node.expression
    if field in ("DOW", "DAY_OF_WEEK", "DAYOFWEEK"):
        return _parse(f"isodow({_sql(value)})")
    if field in ("YOW", "YEAR_OF_WEEK", "ISOYEAR"):
        return _parse(f"isoyear({_sql(value)})")
    if field == "TIMEZONE_HOUR":
        return _timezone_hour(node, value)
    if field == "TIMEZONE_MINUTE":
        return _timezone_minute(node, value)
    return None


# -- arithmetic ---------------------------------------------------------------------------------


def _date_diff(node: exp.Expr) -> exp.Expr:
    # Trino counts whole units elapsed (Joda's getDifferenceAsLong); DuckDB's date_sub does the
    # same (month ends included), unlike its date_diff, which counts boundaries crossed.
    unit = _unit(node, "date_diff")
    start, end = node.expression, node.this
    if unit not in _DATE_UNITS and _is_date(start) and _is_date(end):
        raise _date_unit_refusal("date_diff", unit)
    if unit in _DATE_UNITS and (_is_zoned(start) or _is_zoned(end)):
        # Days and longer count on the calendar of the first value's zone (Joda's zoned
        # chronology); shorter units on the instants.
        zone = _zone(start)
        return _parse(
            f"date_sub('{unit}', {_local_in(_instant(start), zone)}, "
            f"{_local_in(_instant(end), zone)})"
        )
    return _parse(f"date_sub('{unit}', {_instant(start)}, {_instant(end)})")


def _date_unit_refusal(function: str, unit: str) -> QueryRefusedError:
    return QueryRefusedError(
        f"Athena's {function}('{unit}', ...) does not take a date ('{unit}' is not a date "
        "field there, so Athena fails); cast the date to timestamp, or use a unit from day to year"
    )


def _date_add(node: exp.Expr) -> exp.Expr:
    unit = _unit(node, "date_add")
    value = node.this
    amount = _sql(node.expression)
    interval = {
        "millisecond": f"to_milliseconds({amount})",
        "second": f"to_seconds({amount})",
        "minute": f"to_minutes({amount})",
        "hour": f"to_hours({amount})",
        "day": f"to_days({amount})",
        "week": f"to_weeks({amount})",
        "month": f"to_months({amount})",
        "quarter": f"to_months(3 * {amount})",
        "year": f"to_years({amount})",
    }[unit]
    added = f"{_sql(value)} + {interval}"
    if _is_date(value):
        if unit not in _DATE_UNITS:
            raise _date_unit_refusal("date_add", unit)
        return _parse(f"CAST({added} AS DATE)")
    if _is_zoned(value):
        local = f"({added})"
        return _zoned(local, _instant_of(local, _zone(value)), _zone(value), _precision(value))
    return _parse(added)


def _date_trunc(node: exp.Expr) -> exp.Expr:
    unit = _unit(node, "date_trunc")
    value = node.this
    truncated = f"date_trunc('{unit}', {_sql(value)})"
    if _is_date(value):
        if unit not in _DATE_UNITS:
            raise _date_unit_refusal("date_trunc", unit)
        return _parse(f"CAST({truncated} AS DATE)")
    if _is_zoned(value):
        local = f"({truncated})"
        return _zoned(local, _instant_of(local, _zone(value)), _zone(value), _precision(value))
    return _parse(truncated)


def _millisecond(node: exp.Expr) -> exp.Expr:
    (value,) = _args(node, "millisecond", 1)
    # DuckDB's millisecond() counts from the start of the minute; Athena's from the second.
    return _parse(f"CAST(millisecond({_sql(value)}) % 1000 AS BIGINT)")


def _yow(node: exp.Expr) -> exp.Expr:
    (value,) = _args(node, "yow", 1)
    return _parse(f"isoyear({_sql(value)})")


def _human_readable_seconds(node: exp.Expr) -> exp.Expr:
    (value,) = _args(node, "human_readable_seconds", 1)
    # Trino rounds the seconds to a whole number, then lists the non-zero units (weeks to seconds)
    # with plural forms; zero seconds is '0 seconds'.
    total = f"CAST(round(CAST({_sql(value)} AS DOUBLE)) AS BIGINT)"
    parts = []
    for name, size, modulo in (
        ("week", 604800, None),
        ("day", 86400, 7),
        ("hour", 3600, 24),
        ("minute", 60, 60),
        ("second", 1, 60),
    ):
        amount = f"({total} // {size})" if modulo is None else f"(({total} // {size}) % {modulo})"
        parts.append(
            f"CASE WHEN {amount} > 0 THEN CAST({amount} AS VARCHAR) || ' {name}' || "
            f"CASE WHEN {amount} = 1 THEN '' ELSE 's' END END"
        )
    listed = f"concat_ws(', ', {', '.join(parts)})"
    return _parse(
        f"CASE WHEN {total} IS NULL THEN NULL WHEN {total} = 0 THEN '0 seconds' ELSE {listed} END"
    )


# -- MySQL-style date_parse / date_format ---------------------------------------------------------

#: sqlglot has turned Athena's MySQL specifiers into strftime ones before this module sees them;
#: these are the ones (as sqlglot leaves them) Athena does not support, with Athena's own name.
_MYSQL_UNSUPPORTED = {
    "%D": "%D",
    "%U": "%U",
    "%W": "%u",
    "%V": "%V",
    "%w": "%w",
    "%X": "%X",
}
_MYSQL_KNOWN = set("aAbBdGHIjmMpSTyYfV%") | {"-"}


def _mysql_format(fmt: str, function: str, parsing: bool) -> str:
    """sqlglot's strftime text of an Athena MySQL-style format, checked and made DuckDB's."""
    out: list[str] = []
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%" or i + 1 >= len(fmt):
            out.append("%%" if ch == "%" else ch)
            i += 1
            continue
        spec = fmt[i : i + 2]
        if spec == "%-":
            out.append(fmt[i : i + 3])
            i += 3
            continue
        if spec in _MYSQL_UNSUPPORTED:
            raise QueryRefusedError(
                f"Athena's {function}() does not support {_MYSQL_UNSUPPORTED[spec]} (Athena "
                "refuses it too); use day_of_week(), week() or year_of_week() instead"
            )
        letter = fmt[i + 1]
        if spec == "%v":
            out.append("%V")
        elif spec == "%f":
            # Athena keeps milliseconds: it prints them as 6 digits and parses 1 to 9 digits.
            out.append("%n" if parsing else "%g000")
        elif letter in _MYSQL_KNOWN:
            out.append(spec)
        else:
            # Athena: "%x: x, for any x not listed".
            out.append("%%" if letter == "%" else letter)
        i += 2
    return "".join(out)


def _date_parse(node: exp.Expr) -> exp.Expr | None:
    fmt = node.args.get("format")
    if not (isinstance(fmt, exp.Literal) and fmt.is_string):
        raise _refuse_nonliteral("date_parse", "format")
    converted = _mysql_format(fmt.this, "date_parse", parsing=True)
    literal = exp.Literal.string(converted).sql(dialect="duckdb")
    # Athena's date_parse gives a timestamp(3).
    parsed = _no_year(
        converted,
        f"date_trunc('millisecond', {_strptime(_sql(node.this), literal, 'date_parse', fmt.this)})",
    )
    if "%y" in converted.replace("%%", ""):
        # Athena reads a two-digit year as 1970..2069, DuckDB as 1969..2068: only '69' differs.
        parsed = (
            f"(CASE WHEN year({parsed}) = 1969 THEN {parsed} + INTERVAL 100 YEAR ELSE {parsed} END)"
        )
    return _parse(parsed)


def _no_year(fmt: str, parsed: str) -> str:
    """Joda gives a field the text does not set its value in 1970-01-01 00:00; DuckDB's strptime
    starts from 1900-01-01 (both not leap years): a pattern without a year moves 70 years on."""
    plain = fmt.replace("%%", "")
    if any(spec in plain for spec in ("%Y", "%y", "%G")):
        return parsed
    return f"({parsed} + INTERVAL 70 YEAR)"


def _date_format(node: exp.Expr) -> exp.Expr | None:
    fmt = node.args.get("format")
    if not (isinstance(fmt, exp.Literal) and fmt.is_string):
        raise _refuse_nonliteral("date_format", "format")
    converted = _mysql_format(fmt.this, "date_format", parsing=False)
    literal = exp.Literal.string(converted).sql(dialect="duckdb")
    return _parse(f"strftime({_sql(node.this)}, {literal})")


# -- Joda-Time patterns: parse_datetime / format_datetime -----------------------------------------

_JODA_LETTER = re.compile(r"([A-Za-z])\1*")


def joda_tokens(pattern: str) -> list[tuple[str, int] | str]:
    """A Joda-Time ``DateTimeFormat`` pattern split into fields (letter, count) and literal text
    (quoted text, ``''`` a quote, any non-letter)."""
    tokens: list[tuple[str, int] | str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "'":
            if pattern[i + 1 : i + 2] == "'":
                tokens.append("'")
                i += 2
                continue
            end = i + 1
            text = []
            while True:
                if end >= len(pattern):
                    raise QueryRefusedError(
                        f"the Joda pattern {pattern!r} has an unterminated quote; close it with '"
                    )
                if pattern[end] == "'":
                    if pattern[end + 1 : end + 2] == "'":
                        text.append("'")
                        end += 2
                        continue
                    break
                text.append(pattern[end])
                end += 1
            tokens.append("".join(text))
            i = end + 1
        elif ch.isascii() and ch.isalpha():
            match = _JODA_LETTER.match(pattern, i)
            assert match is not None
            tokens.append((ch, len(match.group(0))))
            i = match.end()
        else:
            tokens.append(ch)
            i += 1
    return tokens


_JODA_HELP = (
    "supported letters: y, Y, x, w, e, E, D, M, d, a, K, h, H, k, m, s, S, C, G, Z "
    "(see docs/sql.md)"
)


def _joda_refusal(function: str, letter: str, count: int, why: str) -> QueryRefusedError:
    return QueryRefusedError(
        f"Athena's {function}() pattern letter {letter * count!r} is not translated: {why}"
    )


def _joda_number(letter: str, count: int, local: str) -> str | None:
    """SQL of a numeric Joda field of ``local`` (zero-padded to ``count`` digits)."""
    fields = {
        "y": f"year({local})",
        "Y": f"year({local})",
        "x": f"isoyear({local})",
        "w": f"week({local})",
        "e": f"isodow({local})",
        "D": f"dayofyear({local})",
        "M": f"month({local})",
        "d": f"day({local})",
        "K": f"(hour({local}) % 12)",
        "h": f"((hour({local}) + 11) % 12 + 1)",
        "H": f"hour({local})",
        "k": f"(CASE WHEN hour({local}) = 0 THEN 24 ELSE hour({local}) END)",
        "m": f"minute({local})",
        "s": f"second({local})",
        "C": f"(year({local}) // 100)",
    }
    value = fields.get(letter)
    if value is None:
        return None
    if letter in "yYx" and count == 2:
        return f"printf('%02d', {value} % 100)"
    return f"printf('%0{count}d', {value})"


def _joda_format_sql(pattern: str, value: exp.Expr) -> str:
    """SQL formatting ``value`` as Joda's DateTimeFormat ``pattern`` does (English locale)."""
    local = _sql(value)
    pieces: list[str] = []
    for token in joda_tokens(pattern):
        if isinstance(token, str):
            pieces.append(exp.Literal.string(token).sql(dialect="duckdb"))
            continue
        letter, count = token
        number = _joda_number(letter, count, local)
        if letter == "M" and count >= 3:
            pieces.append(f"strftime({local}, '{'%B' if count >= 4 else '%b'}')")
        elif letter == "E":
            pieces.append(f"strftime({local}, '{'%A' if count >= 4 else '%a'}')")
        elif letter == "a":
            pieces.append(f"strftime({local}, '%p')")
        elif letter == "G":
            pieces.append(f"(CASE WHEN year({local}) > 0 THEN 'AD' ELSE 'BC' END)")
        elif letter == "S":
            # Joda keeps milliseconds: digits past the third are zeros.
            millis = f"printf('%03d', millisecond({local}) % 1000)"
            pieces.append(
                f"left({millis}, {count})" if count <= 3 else f"({millis} || '{'0' * (count - 3)}')"
            )
        elif letter == "Z":
            pieces.append(_joda_zone(value, count))
        elif letter == "z":
            raise _joda_refusal(
                "format_datetime",
                letter,
                count,
                "zone short names (PST) depend on Java's locale data; use ZZZ for the zone's id "
                "or Z for its offset",
            )
        elif number is not None:
            pieces.append(number)
        else:
            raise _joda_refusal("format_datetime", letter, count, f"not a Joda field; {_JODA_HELP}")
    return " || ".join(pieces) if pieces else "''"


def _joda_zone(value: exp.Expr, count: int) -> str:
    """Joda's Z (-0800), ZZ (-08:00) or ZZZ (the zone's id) of ``value``."""
    if count >= 3:
        return _zone(value)
    layout = "%02d:%02d" if count == 2 else "%02d%02d"
    return _let(
        _offset_minutes(value),
        lambda m: (
            f"(CASE WHEN {m} < 0 THEN '-' ELSE '+' END) || "
            f"printf('{layout}', abs({m}) // 60, abs({m}) % 60)"
        ),
    )


def _joda_parse_format(tokens: list[tuple[str, int] | str]) -> str:
    """DuckDB strptime text of a Joda pattern's tokens (all but a zone at the end)."""
    out: list[str] = []
    simple = {
        ("M", 1): "%m",
        ("M", 2): "%m",
        ("M", 3): "%b",
        ("d", 1): "%d",
        ("d", 2): "%d",
        ("H", 1): "%H",
        ("H", 2): "%H",
        ("h", 1): "%I",
        ("h", 2): "%I",
        ("m", 1): "%M",
        ("m", 2): "%M",
        ("s", 1): "%S",
        ("s", 2): "%S",
        ("a", 1): "%p",
        ("D", 1): "%j",
        ("D", 2): "%j",
        ("D", 3): "%j",
    }
    for token in tokens:
        if isinstance(token, str):
            out.append(token.replace("%", "%%"))
            continue
        letter, count = token
        if letter in "yY" and count != 2:
            out.append("%Y")
        elif letter == "M" and count >= 4:
            out.append("%B")
        elif letter == "E":
            out.append("%A" if count >= 4 else "%a")
        elif letter == "S":
            if count > 9:
                raise _joda_refusal("parse_datetime", letter, count, "at most 9 digits")
            out.append("%n")
        elif (letter, count) in simple:
            out.append(simple[(letter, count)])
        elif letter in "yY":
            raise _joda_refusal(
                "parse_datetime",
                letter,
                count,
                "Joda reads a two-digit year relative to the current year; parse yyyy",
            )
        elif letter in "Zz":
            raise _joda_refusal(
                "parse_datetime",
                letter,
                count,
                "a zone is read only at the end of the pattern; use from_iso8601_timestamp() for "
                "ISO 8601 text with an offset, or quote a literal 'Z'",
            )
        else:
            raise _joda_refusal(
                "parse_datetime",
                letter,
                count,
                "parse_datetime reads y, yyyy, M to MMMM, d, H, h, m, s, S, a, E, D and a zone "
                "(Z, ZZ, ZZZ) at the end",
            )
    return "".join(out)


def _format_datetime(node: exp.Expr) -> exp.Expr:
    value, pattern = _args(node, "format_datetime", 2)
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        raise _refuse_nonliteral("format_datetime", "pattern")
    return _parse(_joda_format_sql(pattern.this, value))


def _parse_datetime(node: exp.Expr) -> exp.Expr:
    pattern = node.args.get("format")
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        raise _refuse_nonliteral("parse_datetime", "pattern")
    text = _sql(node.this)
    tokens = joda_tokens(pattern.this)
    last = tokens[-1] if tokens else ""
    if not (isinstance(last, tuple) and last[0] == "Z"):
        fmt = _joda_parse_format(tokens)
        # A timestamp(3) with time zone, in the session's zone (UTC) when the text has none.
        parsed = _strptime(text, _string(fmt), "parse_datetime", pattern.this)
        local = _no_year(fmt, f"date_trunc('millisecond', {parsed})")
        return _zoned(local, local, "'UTC'", 3)
    # A zone at the end (S3 access logs: 'dd/MMM/yyyy:HH:mm:ss Z'): the text before it is the
    # wall time, the zone that of the value, as Joda's withOffsetParsed() gives it.
    fmt = _joda_parse_format(tokens[:-1])
    if last[1] >= 3:
        zone_text = f"regexp_extract({text}, '([A-Za-z][A-Za-z0-9_/+-]*)$', 1)"
    else:
        zone_text = f"regexp_extract({text}, '(Z|[+-][0-9]{{2}}(?::?[0-9]{{2}})?)$', 1)"
    local_text = f"left({text}, length({text}) - length({zone_text}))"
    parsed = _strptime(local_text, _string(fmt), "parse_datetime", pattern.this)
    local = _no_year(fmt, f"date_trunc('millisecond', {parsed})")
    if last[1] >= 3:
        zone = (
            f"(CASE WHEN {zone_text} IN ('Z', 'UTC', 'GMT', 'UT') THEN 'UTC' ELSE {zone_text} END)"
        )
        return _zoned(local, _instant_of(local, zone), zone, 3)
    minutes, zone = _offset_text(f"nullif({zone_text}, '')")
    return _zoned(local, f"({local} - to_minutes({minutes}))", zone, 3)


def _string(text: str) -> str:
    return exp.Literal.string(text).sql(dialect="duckdb")


def _strptime(text: str, fmt: str, function: str, pattern: str) -> str:
    """DuckDB's strptime of ``text``, failing (as Athena does) with a message that names the
    Athena function and the pattern as written, not its translation."""
    shown = exp.Literal.string(
        f"Athena {function}(): the text does not match the pattern '{pattern}': "
    ).sql(dialect="duckdb")
    return (
        f"coalesce(try_strptime({text}, {fmt}), "
        f"CASE WHEN {text} IS NOT NULL THEN error({shown} || {text}) END)"
    )


def _args(node: exp.Expr, name: str, arity: int) -> list[exp.Expr]:
    arguments = list(node.expressions)
    if len(arguments) != arity:
        raise QueryRefusedError(
            f"Athena function {name}() takes {arity} argument(s), got {len(arguments)}"
        )
    return arguments


def _current_timezone(node: exp.Expr) -> exp.Expr:
    return _parse("'UTC'")


_ANONYMOUS: dict[str, Callable[[exp.Expr], exp.Expr | None]] = {
    "with_timezone": _with_timezone,
    "at_timezone": _at_timezone,
    "to_iso8601": _to_iso8601,
    "format_datetime": _format_datetime,
    "timezone_hour": _timezone_hour,
    "timezone_minute": _timezone_minute,
    "timezone": _timezone,
    "millisecond": _millisecond,
    "yow": _yow,
    "human_readable_seconds": _human_readable_seconds,
    "to_milliseconds": _to_milliseconds,
}

_HANDLERS: list[tuple[type[exp.Expr], Callable[[exp.Expr], exp.Expr | None]]] = [
    (exp.AtTimeZone, _at_time_zone),
    (exp.Cast, _cast),
    (exp.TimeToUnix, _to_unixtime),
    (exp.UnixToTime, _from_unixtime),
    (exp.FromISO8601Timestamp, _from_iso8601_timestamp),
    (exp.FromISO8601Date, _from_iso8601_date),
    (exp.CurrentTimezone, _current_timezone),
    (exp.Extract, _extract),
    (exp.DateDiff, _date_diff),
    (exp.DateAdd, _date_add),
    (exp.TimestampTrunc, _date_trunc),
    (exp.DateTrunc, _date_trunc),
    (exp.StrToTime, _date_parse),
    (exp.TimeToStr, _date_format),
    (exp.ParseDatetime, _parse_datetime),
    (exp.YearOfWeek, lambda n: _parse(f"isoyear({_sql(n.this)})")),
    (exp.FromISO8601TimestampNanos, _refuse_nanos),
    (exp.Add, _plus_interval),
    (exp.Sub, _plus_interval),
    (exp.EQ, _comparison),
    (exp.Between, _comparison),
    (exp.Ordered, _ordered),
    (exp.NEQ, _comparison),
    (exp.GT, _comparison),
    (exp.GTE, _comparison),
    (exp.LT, _comparison),
    (exp.LTE, _comparison),
]

_SENSITIVE = (
    exp.TimeToUnix,
    exp.DateDiff,
    exp.AtTimeZone,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Between,
)
