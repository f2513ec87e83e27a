"""Athena's numeric typing, rewritten so that DuckDB computes what Athena (Trino) computes.

Trino and DuckDB agree on most arithmetic but not on these, which :func:`numeric_replacement`
(called by :func:`loglake.query.athena.rewrite` for each division, ``avg``, cast and ``round``)
fixes, using the operands' Trino types (worked out by :class:`TypeOf` from literals, casts,
aggregates, the lake tables' column types and the projections of CTEs, subqueries and VALUES):

- ``bigint / bigint`` is an integer division (truncated toward zero), DuckDB's ``//``;
- ``100.0`` is a ``decimal(4,1)`` literal and a division with a decimal operand (and no floating-point
  one) is a decimal of scale ``max(s1, s2)`` rounded HALF_UP (Trino's DecimalOperators); DuckDB
  divides decimals in floating point. ``avg`` of a decimal is a decimal of its scale the same way;
- a decimal division by zero is the error "Division by zero" (DuckDB gives infinity or NULL);
- ``CAST(double AS bigint)`` (and ``integer``...) rounds half away from zero (DuckDB: half to even);
- ``CAST(double AS varchar)`` is Java's ``Double.toString`` (``1.0E7``, ``1.5E-5``, ``NaN``), and
  ``CAST(timestamp(p) AS varchar)`` has ``p`` fractional digits (a lake column is ``timestamp(6)``);
- ``round(double, n)`` is Java's ``Math.round(x * 10^n) / 10^n``, symmetric around zero;
- ``sum`` of integers is a ``bigint`` (DuckDB's is a 128-bit integer);
- ``sequence`` of integers counts down when start > stop, and fails as Trino does for a step
  going the wrong way, a zero step or more than 10000 entries;
- ``array[i]`` past the end or below 1, ``map[key]`` of an absent key and ``element_at(array, 0)``
  are errors, as in Trino (DuckDB answers NULL).

A division with a decimal operand whose type cannot be worked out is refused (QueryRefusedError)
rather than answered in floating point.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlglot import exp, parse_one
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from loglake.errors import QueryRefusedError


@dataclass(frozen=True)
class TrinoType:
    """A numeric (or timestamp) type as Trino types an expression: ``kind`` is ``int``,
    ``decimal``, ``double``, ``real``, ``timestamp`` or ``other``; ``precision`` and ``scale``
    are known for decimals (``scale`` None: a decimal of unknown scale) and integers (the digits
    of its decimal form: 10 for integer, 19 for bigint), ``precision`` for timestamps."""

    kind: str
    precision: int | None = None
    scale: int | None = None


OTHER = TrinoType("other")
ARRAY = TrinoType("array")
MAP = TrinoType("map")
DOUBLE = TrinoType("double")
REAL = TrinoType("real")
BIGINT = TrinoType("int", 19, 0)
INTEGER = TrinoType("int", 10, 0)

_INT_DIGITS = {
    exp.DataType.Type.TINYINT: 3,
    exp.DataType.Type.SMALLINT: 5,
    exp.DataType.Type.INT: 10,
    exp.DataType.Type.BIGINT: 19,
    exp.DataType.Type.INT128: 38,
    exp.DataType.Type.UTINYINT: 3,
    exp.DataType.Type.USMALLINT: 5,
    exp.DataType.Type.UINT: 10,
    exp.DataType.Type.UBIGINT: 20,
}


def of_data_type(data_type: exp.DataType | None) -> TrinoType | None:
    """The Trino type of a sqlglot DataType (None: unknown)."""
    if data_type is None:
        return None
    kind = data_type.this
    if kind in _INT_DIGITS:
        return TrinoType("int", _INT_DIGITS[kind], 0)
    if kind in (exp.DataType.Type.DOUBLE,):
        return DOUBLE
    if kind in (exp.DataType.Type.FLOAT,):
        return REAL
    if kind in (exp.DataType.Type.DECIMAL,):
        params = [p.this for p in data_type.expressions if isinstance(p, exp.DataTypeParam)]
        numbers = [int(p.this) for p in params if isinstance(p, exp.Literal)]
        if len(numbers) == 2:
            return TrinoType("decimal", numbers[0], numbers[1])
        if len(numbers) == 1:
            return TrinoType("decimal", numbers[0], 0)
        return TrinoType("decimal", None, None)
    if kind in (
        exp.DataType.Type.TIMESTAMP,
        exp.DataType.Type.TIMESTAMPNTZ,
        exp.DataType.Type.DATETIME,
    ):
        params = [p.this for p in data_type.expressions if isinstance(p, exp.DataTypeParam)]
        numbers = [int(p.this) for p in params if isinstance(p, exp.Literal)]
        # A lake column has no precision in DuckDB's schema: Athena reads Iceberg's as (6).
        return TrinoType("timestamp", numbers[0] if numbers else 6)
    if kind in (exp.DataType.Type.ARRAY, exp.DataType.Type.LIST):
        return ARRAY
    if kind == exp.DataType.Type.MAP:
        return MAP
    if kind in (exp.DataType.Type.UNKNOWN, exp.DataType.Type.NULL):
        return None
    return OTHER


def literal_type(text: str) -> TrinoType:
    """Trino's type of a number literal: ``1e0`` double, ``100.0`` decimal(4,1), ``7`` integer
    (bigint past the integer range)."""
    if "e" in text.lower():
        return DOUBLE
    if "." in text:
        whole, _, fraction = text.partition(".")
        digits = len(whole.lstrip("0")) + len(fraction)
        return TrinoType("decimal", max(digits, 1), len(fraction))
    return INTEGER if abs(int(text)) <= 2**31 - 1 else BIGINT


def _decimal_of(t: TrinoType) -> TrinoType | None:
    """An integer or decimal operand as the decimal Trino coerces it to."""
    if t.kind == "int":
        return TrinoType("decimal", t.precision, 0)
    if t.kind == "decimal":
        return t
    return None


def arithmetic(node: exp.Expr, left: TrinoType | None, right: TrinoType | None) -> TrinoType | None:
    """The Trino type of ``left <op> right`` for +, -, *, / and %."""
    if left is None or right is None:
        return None
    kinds = {left.kind, right.kind}
    if "other" in kinds or "timestamp" in kinds:
        return None
    if "double" in kinds:
        return DOUBLE
    if "real" in kinds:
        return REAL
    if kinds == {"int"}:
        return TrinoType("int", max(left.precision or 19, right.precision or 19), 0)
    a, b = _decimal_of(left), _decimal_of(right)
    if a is None or b is None or a.scale is None or b.scale is None:
        return TrinoType("decimal", None, None)
    assert a.precision is not None and b.precision is not None
    if isinstance(node, (exp.Add, exp.Sub)):
        scale = max(a.scale, b.scale)
        digits = max(a.precision - a.scale, b.precision - b.scale) + scale + 1
        return TrinoType("decimal", min(38, digits), scale)
    if isinstance(node, exp.Mul):
        return TrinoType("decimal", min(38, a.precision + b.precision), a.scale + b.scale)
    if isinstance(node, exp.Div):
        digits = a.precision + b.scale + max(b.scale - a.scale, 0)
        return TrinoType("decimal", min(38, digits), max(a.scale, b.scale))
    # Modulus: the scale of the larger, as wide as the smaller operand's whole digits allow.
    scale = max(a.scale, b.scale)
    return TrinoType(
        "decimal", min(38, min(b.precision - b.scale, a.precision - a.scale) + scale), scale
    )


class TypeOf:
    """Works out Trino types of expressions of a qualified, type-annotated copy of the statement:
    a column of a CTE or subquery gets the type of the projection that defines it, a lake
    column the type of its table's schema (annotated by sqlglot)."""

    def __init__(self, copy: exp.Expr) -> None:
        self._scope_of: dict[int, Scope] = {}
        try:
            for scope in traverse_scope(copy):
                for column in scope.columns:
                    self._scope_of[id(column)] = scope
        except SqlglotError:
            pass

    def __call__(self, node: exp.Expr | None, depth: int = 0) -> TrinoType | None:
        if node is None or depth > 64:
            return None
        nxt = depth + 1
        if isinstance(node, (exp.Paren, exp.Alias)):
            return self(node.this, nxt)
        if isinstance(node, exp.Neg):
            return self(node.this, nxt)
        if isinstance(node, exp.Literal):
            return None if node.is_string else literal_type(node.this)
        if isinstance(node, exp.Cast):
            return of_data_type(node.to)
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
            return arithmetic(node, self(node.this, nxt), self(node.expression, nxt))
        if isinstance(node, exp.IntDiv):
            return self(node.this, nxt)
        if isinstance(node, (exp.Count, exp.CountIf, exp.ApproxDistinct)):
            return BIGINT
        if isinstance(node, exp.Sum):
            inner = self(node.this, nxt)
            if inner is not None and inner.kind == "int":
                return BIGINT
            if inner is not None and inner.kind == "decimal":
                return TrinoType("decimal", 38, inner.scale)
            return inner
        if isinstance(node, exp.Avg):
            inner = self(node.this, nxt)
            if inner is not None and inner.kind == "int":
                return DOUBLE
            return inner
        if isinstance(node, (exp.Min, exp.Max, exp.AnyValue, exp.Abs, exp.Round, exp.Nullif)):
            return self(node.this, nxt)
        if isinstance(node, (exp.Coalesce, exp.Case, exp.If)):
            branches = (
                [node.this, *node.expressions]
                if isinstance(node, exp.Coalesce)
                else [
                    *(i.args.get("true") for i in node.args.get("ifs") or []),
                    node.args.get("default"),
                ]
                if isinstance(node, exp.Case)
                else [node.args.get("true"), node.args.get("false")]
            )
            return common_type(
                [self(b, nxt) for b in branches if b is not None and not isinstance(b, exp.Null)]
            )
        if isinstance(node, (exp.Greatest, exp.Least)):
            return common_type([self(a, nxt) for a in [node.this, *node.expressions]])
        if isinstance(node, (exp.Split, exp.RegexpSplit, exp.RegexpExtractAll, exp.Array)):
            return ARRAY
        if isinstance(node, exp.Column):
            return self._column(node, nxt)
        if isinstance(node, exp.Anonymous):
            name = str(node.this).lower()
            if name in ("nan", "infinity", "e"):
                return DOUBLE
            if name == "url_extract_port":
                return BIGINT
            if name.startswith("url_"):
                return OTHER
        if isinstance(node, exp.Try):
            return self(node.this, nxt)
        if isinstance(node, exp.Window):
            return self(node.this, nxt)
        if isinstance(node, exp.Filter):
            return self(node.this, nxt)
        # Any other expression: sqlglot's annotation, unless it holds a decimal literal (sqlglot
        # types those as double).
        if any(_is_decimal_literal(n) for n in node.walk()):
            return None
        return of_data_type(node.type)

    def _column(self, column: exp.Column, depth: int) -> TrinoType | None:
        scope = self._scope_of.get(id(column))
        source: object = scope.sources.get(column.table) if scope is not None else None
        if isinstance(source, Scope):
            source = source.expression
        if isinstance(source, exp.Values):
            return self._values_column(source, column.name, depth)
        if isinstance(source, exp.Subquery):
            source = source.this
        if isinstance(source, exp.Expr) and not isinstance(source, exp.Table):
            select = source
            while isinstance(select, exp.SetOperation):
                select = select.this
            if isinstance(select, exp.Select):
                for projection in select.expressions:
                    if projection.alias_or_name == column.name:
                        return self(projection, depth)
            return None
        return of_data_type(column.type)

    def _values_column(self, values: exp.Values, name: str, depth: int) -> TrinoType | None:
        """The common type of a VALUES column: Trino widens decimals to the largest scale and
        whole digits, an integer and a decimal to a decimal."""
        alias = values.args.get("alias")
        names = [c.name for c in alias.columns] if alias is not None else []
        if name not in names:
            return None
        index = names.index(name)
        types = []
        for row in values.expressions:
            cells = row.expressions if isinstance(row, exp.Tuple) else [row]
            if index >= len(cells):
                return None
            if isinstance(cells[index], exp.Null):
                continue
            types.append(self(cells[index], depth + 1))
        return common_type(types)


def common_type(types: list[TrinoType | None]) -> TrinoType | None:
    """The type Trino coerces several values to (CASE branches, COALESCE arguments, a VALUES
    column): integers to the widest, integers and decimals to a decimal wide enough for all,
    anything with a double to double (real: real); None when one is unknown or they mix."""
    if not types or any(t is None for t in types):
        return None
    known = [t for t in types if t is not None]
    kinds = {t.kind for t in known}
    if len(set(known)) == 1:
        return known[0]
    if kinds <= {"int", "decimal", "double", "real"}:
        if "double" in kinds:
            return DOUBLE
        if "real" in kinds:
            return REAL
        if kinds == {"int"}:
            return TrinoType("int", max(t.precision or 19 for t in known), 0)
        decimals = [_decimal_of(t) for t in known]
        if any(d is None or d.scale is None or d.precision is None for d in decimals):
            return TrinoType("decimal", None, None)
        scale = max(d.scale for d in decimals if d and d.scale is not None)
        whole = max(
            d.precision - d.scale
            for d in decimals
            if d and d.precision is not None and d.scale is not None
        )
        return TrinoType("decimal", min(38, whole + scale), scale)
    return known[0] if len(kinds) == 1 and kinds != {"decimal"} else None


def _is_decimal_literal(node: exp.Expr) -> bool:
    return (
        isinstance(node, exp.Literal)
        and not node.is_string
        and "." in node.this
        and "e" not in node.this.lower()
    )


def has_decimal_literal(node: exp.Expr) -> bool:
    """True when ``node`` holds a literal such as ``100.0`` (a decimal in Trino)."""
    return any(_is_decimal_literal(n) for n in node.walk())


def _sql(node: exp.Expr) -> str:
    return f"({node.sql(dialect='duckdb')})"


def _unscaled(operand: str, t: TrinoType) -> str:
    """The operand's unscaled value (``12.34`` of scale 2 is 1234) as a 128-bit integer."""
    if t.kind == "int" or not t.scale:
        return f"CAST({operand} AS HUGEINT)"
    return f"CAST(CAST({operand} AS DECIMAL(38, {t.scale})) * {10**t.scale} AS HUGEINT)"


_VOLATILE = re.compile(r"\b(random|rand|uuid|gen_random_uuid|shuffle|nextval)\s*\(", re.IGNORECASE)


def bound(operands: list[str], build: Callable[[list[str]], str]) -> str:
    """``build(operands)``, which may repeat an operand: an operand calling a volatile function
    (``rand()``) is then bound once per row, so that every repetition sees the same value."""
    if not any(_VOLATILE.search(o) for o in operands):
        return build(operands)
    fields = ", ".join(f"'v{i}': {o}" for i, o in enumerate(operands))
    body = build([f"_bound.v{i}" for i in range(len(operands))])
    return f"list_transform([{{{fields}}}], _bound -> {body})[1]"


def decimal_division(left: str, lt: TrinoType, right: str, rt: TrinoType) -> str:
    """DuckDB SQL dividing ``left`` by ``right`` (integers or decimals of known scale, one at
    least a decimal) as Trino does: scale max(s1, s2), rounded HALF_UP, "Division by zero" an
    error, a NULL operand NULL."""
    a, b = _decimal_of(lt), _decimal_of(rt)
    assert a is not None and b is not None and a.scale is not None and b.scale is not None
    result = arithmetic(exp.Div(), a, b)
    assert result is not None and result.scale is not None
    scale = result.scale
    rescale = scale - a.scale + b.scale
    numerator = f"({_unscaled(left, a)} * {10**rescale})"
    divisor = _unscaled(right, b)
    # HALF_UP: the quotient of the magnitudes goes up when twice the remainder reaches the divisor.
    quotient = f"((2 * abs({numerator}) + abs({divisor})) // (2 * abs({divisor})))"
    signed = f"CASE WHEN ({numerator} < 0) <> ({divisor} < 0) THEN -{quotient} ELSE {quotient} END"
    unit = Decimal(1).scaleb(-scale)
    shifted = f"CAST({signed} AS DECIMAL(38, 0)) * CAST('{unit}' AS DECIMAL({scale + 1}, {scale}))"
    value = f"CAST({shifted} AS DECIMAL({result.precision}, {scale}))"
    # A zero divisor makes the integer division fail with DuckDB's "Division by zero" (error()
    # would do too, but it is volatile and TRY() refuses volatile functions).
    return value


def java_double_text(value: str, t: TrinoType) -> str:
    """DuckDB SQL giving Java's ``Double.toString`` (``Float.toString`` for a real) of ``value``:
    plain between 10^-3 and 10^7 with at least one fractional digit, else ``d.dddE±n``."""
    text = f"CAST(abs({value}) AS VARCHAR)"
    # DuckDB writes the shortest digits either plain ('12345678.9') or as '1.5e-05'.
    mantissa = f"regexp_extract({text}, '^([0-9.]+)', 1)"
    e_part = f"coalesce(TRY_CAST(regexp_extract({text}, 'e([-+]?[0-9]+)$', 1) AS INTEGER), 0)"
    whole = f"split_part({mantissa}, '.', 1)"
    fraction = f"coalesce(nullif(split_part({mantissa}, '.', 2), ''), '')"
    digits_all = f"({whole} || {fraction})"
    significant = f"rtrim(ltrim({digits_all}, '0'), '0')"
    # The exponent of the first significant digit.
    exponent = (
        f"(CASE WHEN ltrim({whole}, '0') <> '' THEN length(ltrim({whole}, '0')) - 1 "
        f"ELSE -(length({fraction}) - length(ltrim({fraction}, '0')) + 1) END + {e_part})"
    )
    scientific = (
        f"left({significant}, 1) || '.' || coalesce(nullif(substr({significant}, 2), ''), '0') "
        f"|| 'E' || CAST({exponent} AS VARCHAR)"
    )
    plain = f"CASE WHEN strpos({text}, '.') > 0 THEN {text} ELSE {text} || '.0' END"
    sign = f"CASE WHEN {value} < 0 THEN '-' ELSE '' END"
    return (
        f"CASE WHEN {value} IS NULL THEN NULL WHEN isnan({value}) THEN 'NaN' "
        f"WHEN isinf({value}) THEN {sign} || 'Infinity' WHEN {value} = 0 THEN '0.0' "
        f"WHEN abs({value}) >= 0.001 AND abs({value}) < 10000000 AND {e_part} = 0 "
        f"THEN {sign} || {plain} ELSE {sign} || {scientific} END"
    )


def timestamp_text(value: str, precision: int) -> str:
    """Trino's text of a ``timestamp(p)``: ``2026-12-01 10:00:00`` with ``p`` fractional digits."""
    if precision <= 0:
        return f"strftime({value}, '%Y-%m-%d %H:%M:%S')"
    digits = min(precision, 6)
    text = f"strftime({value}, '%Y-%m-%d %H:%M:%S.%f')"
    return f"left({text}, {20 + digits}) || '{'0' * (precision - digits)}'"


def half_up_integer(value: str, target: str, try_cast: bool) -> str:
    """A double or real cast to an integer type rounding half away from zero, as Trino does."""
    cast = "TRY_CAST" if try_cast else "CAST"
    return (
        f"{cast}(trunc({value}) + CASE WHEN abs({value} - trunc({value})) >= 0.5 "
        f"THEN sign({value}) ELSE 0 END AS {target})"
    )


def java_round(value: str, decimals: str) -> str:
    """Trino's ``round(double, n)``: ``Math.round(|x| * 10^n) / 10^n`` with x's sign, where
    Java's Math.round is floor(y + 0.5) computed exactly."""
    factor = f"pow(10, {decimals})"
    scaled = f"(abs({value}) * {factor})"
    rounded = f"(floor({scaled}) + CASE WHEN {scaled} - floor({scaled}) >= 0.5 THEN 1 ELSE 0 END)"
    return (
        f"CASE WHEN isnan({value}) OR isinf({value}) THEN {value} "
        f"WHEN {value} < 0 THEN -({rounded} / {factor}) ELSE {rounded} / {factor} END"
    )


_INTEGER_TARGETS = {
    exp.DataType.Type.TINYINT,
    exp.DataType.Type.SMALLINT,
    exp.DataType.Type.INT,
    exp.DataType.Type.BIGINT,
}
_TEXT_TARGETS = {exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT, exp.DataType.Type.CHAR}


def numeric_replacement(original: exp.Expr, typed: exp.Expr, type_of: TypeOf) -> exp.Expr | None:
    """The replacement of ``original`` (a node of the statement) whose qualified, annotated twin
    is ``typed``, or None to leave it."""
    if isinstance(original, exp.Div):
        lt, rt = type_of(typed.this), type_of(typed.expression)
        left, right = _sql(original.this), _sql(original.expression)
        if lt is not None and rt is not None and lt.kind == "int" and rt.kind == "int":
            return exp.IntDiv(this=original.this, expression=original.expression)
        kinds = {t.kind for t in (lt, rt) if t is not None}
        if kinds & {"double", "real", "other", "timestamp"}:
            return None
        a = _decimal_of(lt) if lt is not None else None
        b = _decimal_of(rt) if rt is not None else None
        if (
            "decimal" in kinds
            and a is not None
            and b is not None
            and a.scale is not None
            and b.scale is not None
        ):
            return _parse(bound([left, right], lambda v: decimal_division(v[0], a, v[1], b)))
        if "decimal" in kinds or has_decimal_literal(typed):
            raise QueryRefusedError(
                f"Athena divides decimals exactly (rounding HALF_UP to the larger scale), but the "
                f"operand types of {original.sql(dialect='athena')} cannot be worked out here; cast "
                f"the operands, e.g. CAST(x AS double) / y for a floating-point answer or "
                f"CAST(x AS decimal(18, 2)) / y for a decimal one"
            )
        return None
    if isinstance(original, exp.Avg):
        inner = type_of(typed.this)
        if inner is not None and inner.kind == "decimal":
            if inner.scale is None or isinstance(original.parent, (exp.Window, exp.Filter)):
                raise QueryRefusedError(
                    f"Athena's avg() of a decimal is a decimal; the scale of "
                    f"{original.this.sql(dialect='athena')} cannot be worked out here; cast it, "
                    f"e.g. avg(CAST(x AS double)) or avg(CAST(x AS decimal(18, 2)))"
                )
            value = _sql(original.this)
            total = TrinoType("decimal", 38, inner.scale)
            divided = decimal_division(f"sum({value})", total, f"count({value})", BIGINT)
            return _parse(f"CAST({divided} AS DECIMAL({inner.precision}, {inner.scale}))")
        return None
    if isinstance(original, exp.Cast):
        source = type_of(typed.this)
        target = original.to
        if source is None:
            return None
        value = _sql(original.this)
        try_cast = isinstance(original, exp.TryCast)
        if source.kind in ("double", "real") and target.this in _INTEGER_TARGETS:
            to = target.sql(dialect="duckdb")
            return _parse(bound([value], lambda v: half_up_integer(v[0], to, try_cast)))
        if target.this in _TEXT_TARGETS and not target.expressions:
            if source.kind in ("double", "real"):
                floating: TrinoType = source
                return _parse(bound([value], lambda v: java_double_text(v[0], floating)))
            if source.kind == "timestamp" and source.precision is not None:
                return _parse(timestamp_text(value, source.precision))
        return None
    if isinstance(original, exp.Sum):
        inner = type_of(typed.this)
        if inner is not None and inner.kind == "int":
            # Trino's sum of integers is a bigint (an overflow an error); DuckDB's a HUGEINT. The
            # cast goes around the whole call, with its FILTER and OVER clauses.
            call: exp.Expr = original
            while isinstance(call.parent, (exp.Filter, exp.Window)):
                call = call.parent
            call.replace(exp.cast(call.copy(), "BIGINT"))
        return None
    if isinstance(original, exp.GenerateSeries):
        start, end = type_of(typed.args.get("start")), type_of(typed.args.get("end"))
        if start is not None and end is not None and start.kind == end.kind == "int":
            return _parse(
                _sequence(
                    _sql(original.args["start"]),
                    _sql(original.args["end"]),
                    _sql(original.args["step"]) if original.args.get("step") is not None else None,
                )
            )
        return None
    if isinstance(original, exp.Reverse):
        reversed_type = type_of(typed.this)
        if reversed_type is not None and reversed_type.kind == "array":
            return _parse(f"list_reverse({_sql(original.this)})")
        return None
    if isinstance(original, exp.Bracket) and len(original.expressions) == 1:
        return _subscript(original, type_of(typed.this))
    if isinstance(original, exp.Round) and original.args.get("decimals") is not None:
        source = type_of(typed.this)
        if source is not None and source.kind in ("double", "real"):
            operands = [_sql(original.this), _sql(original.args["decimals"])]
            return _parse(bound(operands, lambda v: java_round(v[0], v[1])))
    return None


def _subscript(bracket: exp.Bracket, container: TrinoType | None) -> exp.Expr | None:
    """Trino's ``array[i]`` fails past the end or below 1 and ``map[key]`` for an absent key,
    ``element_at(array, 0)`` fails: DuckDB gives NULL for all of them."""
    if container is None or container.kind not in ("array", "map"):
        return None
    text = bracket.sql(dialect="duckdb")
    head = bracket.this.sql(dialect="duckdb")
    if not (text.startswith(head + "[") and text.endswith("]")):
        return None
    index = f"({text[len(head) + 1 : -1]})"
    value = f"({head})"
    safe = bool(bracket.args.get("safe"))
    if container.kind == "map":
        if safe:
            return None
        # The failing index (not error(), which TRY() refuses as volatile) lets try(map[key])
        # be NULL, as in Athena.
        absent = failing_integer("Key not present in map")
        return _parse(
            f"map_extract({value}, {index})"
            f"[CASE WHEN NOT map_contains({value}, {index}) THEN {absent} ELSE 1 END]"
        )
    zero = f"WHEN {index} = 0 THEN {failing_integer('SQL array indices start at 1')}"
    if safe:
        return _parse(f"{value}[CASE {zero} ELSE {index} END]")
    past = "Array subscript must be less than or equal to array length"
    return _parse(
        f"{value}[CASE WHEN {index} < 0 THEN {failing_integer('Array subscript is negative')} "
        f"{zero} WHEN {index} > len({value}) THEN {failing_integer(past)} ELSE {index} END]"
    )


def _sequence(first: str, last: str, step: str | None) -> str:
    """Trino's sequence() of integers: counting down without a step when start > stop, an error
    for a step going the wrong way, a zero step or more than 10000 entries (DuckDB gives an empty
    or an unbounded list)."""
    if step is None:
        step = f"(CASE WHEN {first} <= {last} THEN 1 ELSE -1 END)"
    wrong = (
        "sequence stop value should be greater than or equal to start value if step is greater "
        "than zero otherwise stop should be less than or equal to start"
    )
    checked = (
        f"(CASE WHEN {step} = 0 THEN {failing_integer('step must not be zero')} "
        f"WHEN ({step} > 0 AND {first} > {last}) OR ({step} < 0 AND {first} < {last}) "
        f"THEN {failing_integer(wrong)} "
        f"WHEN abs({last} - {first}) // abs({step}) >= 10000 "
        f"THEN {failing_integer('result of sequence function must not have more than 10000 entries')} "
        f"ELSE {step} END)"
    )
    return f"generate_series({first}, {last}, {checked})"


def failing_integer(message: str) -> str:
    """An integer expression that fails with ``message`` when (and only when) it is evaluated.
    DuckDB's error() would do, but it is volatile and TRY() refuses volatile functions, while
    Athena's try() turns these errors into NULL; a failing cast is neither."""
    return f"CAST('{message}' AS BIGINT)"


def _parse(sql: str) -> exp.Expr:
    return exp.Paren(this=parse_one(sql, read="duckdb"))
