"""Athena (Trino/Presto) functions rewritten so they answer in DuckDB as they answer in Athena.

sqlglot translates most of Athena's SQL to DuckDB's, but some functions either do not exist in
DuckDB or exist with other semantics. :func:`rewrite` runs on sqlglot's tree of an ``athena``,
``trino`` or ``presto`` statement, after parsing and before DuckDB SQL is written, and replaces:

- the URL family (``url_extract_host``, ``_path``, ``_protocol``, ``_port``, ``_query``,
  ``_fragment``, ``_parameter``; ``url_encode``, ``url_decode``) by plain DuckDB expressions that
  split the URL as ``java.net.URI`` does (RFC 2396/3986), so nothing must exist in the sandbox;
- ``split_part`` past the last field and ``regexp_extract`` without a match: NULL, not ``''``; a
  ``regexp_extract`` group that took no part in the match: NULL (query/athena_regex.py);
- a division of two integers (``bigint / bigint``): an integer division, as in Athena; decimal
  literals and divisions, ``avg`` of decimals, casts of doubles to integers and text, ``round``
  of doubles: as Trino types and computes them (query/athena_numeric.py);
- ``sum`` of integers as a ``bigint`` (DuckDB sums in 128 bits); ``every``, ``hamming_distance``,
  ``codepoint``, ``trim_array``, ``split(s, d, limit)``, ``substr`` (start 0 or before the
  beginning is ''), ``slice`` (a length, not an end), ``array_distinct`` and ``array_union``
  (first occurrences in order), ``array_max``/``array_min`` (NULL with a NULL element),
  ``arrays_overlap``, ``e()``, ``is_finite``, ``is_infinite``;
- ``map_agg``, ``histogram`` (bigint counts), ``max_by``/``min_by`` (a NULL value kept),
  ``contains`` (NULL when not found in an array holding NULL), ``nan()``, ``infinity()``; the
  approximate aggregates ``approx_distinct``, ``approx_percentile`` and ``approx_most_frequent``
  answered exactly (within any error bound Athena's answer has);
- ``count_if`` and ``cardinality`` (of an array or a map) as Athena's ``bigint``;
- ``regexp_replace`` replacements written with Java's ``$1`` group references (and ``\\$`` for a
  dollar) as RE2's ``\\1``.

:func:`refuse_untranslated` then refuses a statement that still calls a function DuckDB does not
have, naming it and the nearest supported alternative, instead of letting DuckDB fail later.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import duckdb
from sqlglot import exp, parse_one
from sqlglot.errors import ParseError, TokenError

from loglake.errors import QueryRefusedError
from loglake.query import athena_datetime, athena_numeric
from loglake.query.athena_regex import group_shape

#: The dialects whose function library is Trino's.
DIALECTS = frozenset({"athena", "trino", "presto"})

#: RFC 3986 appendix B: groups 2 scheme, 4 authority, 5 path, 7 query, 9 fragment.
_URI = r"^(([^:/?#]+):)?(//([^/?#]*))?([^?#]*)(\?([^#]*))?(#(.*))?"
#: The host (an IPv6 literal keeps its brackets, as URI.getHost does) and port of an authority.
_HOST = r"^(?:[^@]*@)?(\[[^\]]*\]|[^:]*)"
_PORT = r"^(?:[^@]*@)?(?:\[[^\]]*\]|[^:]*):([0-9]+)$"

#: Athena functions DuckDB lacks and that are not translated, with what to write instead.
ALTERNATIVES: dict[str, str] = {
    "approx_set": "approx_count_distinct(x)",
    "json_array_get": "json_extract(json, '$[i]') (0-based i)",
    "json_size": "json_array_length(json_extract(json, path)) for an array",
    "array_intersect": "array_distinct(filter(a, x -> contains(b, x)))",
    "array_except": "array_distinct(filter(a, x -> NOT contains(b, x)))",
    "array_histogram": "histogram(x) over CROSS JOIN UNNEST(array) AS t(x)",
    "zip_with": "transform(sequence(1, cardinality(a)), i -> f(element_at(a, i), element_at(b, i)))",
    "map_filter": "map_from_entries(filter(map_entries(m), e -> ...))",
    "transform_values": "map_from_entries(transform(map_entries(m), e -> ...))",
    "transform_keys": "map_from_entries(transform(map_entries(m), e -> ...))",
    "multimap_agg": "map_agg(k, values) over a subquery with array_agg(v) AS values GROUP BY k",
    "regexp_position": "strpos(s, regexp_extract(s, pattern))",
    "ngrams": "transform(sequence(1, cardinality(a) - n + 1), i -> slice(a, i, n))",
    "title_case": "upper(substr(s, 1, 1)) || lower(substr(s, 2)) per word",
    "luhn_check": "a CASE over the digits (no built-in equivalent)",
    "from_unixtime_nanos": "make_timestamp(nanos // 1000)",
}


def _uri(url: str, group: int) -> str:
    return f"regexp_extract({url}, '{_URI}', {group})"


def _has_authority(url: str) -> str:
    return f"regexp_matches({url}, '^([^:/?#]+:)?//')"


def _opaque(url: str) -> str:
    """A URI with a scheme whose rest does not start with '/' (mailto:x): Java gives it no path,
    host or query."""
    return f"regexp_matches({url}, '^[^:/?#]+:[^/]')"


def _query_raw(url: str) -> str:
    return (
        f"CASE WHEN regexp_matches({url}, '^[^#]*\\?') AND NOT {_opaque(url)} "
        f"THEN {_uri(url, 7)} END"
    )


def _url_extract_protocol(url: str) -> str:
    return f"CASE WHEN regexp_matches({url}, '^[^:/?#]+:') THEN {_uri(url, 2)} END"


def _url_extract_host(url: str) -> str:
    return (
        f"CASE WHEN {_has_authority(url)} "
        f"THEN nullif(regexp_extract({_uri(url, 4)}, '{_HOST}', 1), '') END"
    )


def _url_extract_port(url: str) -> str:
    return (
        f"CASE WHEN {_has_authority(url)} "
        f"THEN TRY_CAST(nullif(regexp_extract({_uri(url, 4)}, '{_PORT}', 1), '') AS BIGINT) END"
    )


def _url_extract_path(url: str) -> str:
    # URI.getPath decodes %XX escapes (not '+': that is a form encoding, not a URI one).
    return f"CASE WHEN NOT {_opaque(url)} THEN url_decode({_uri(url, 5)}) END"


def _url_extract_query(url: str) -> str:
    return f"url_decode({_query_raw(url)})"


def _url_extract_fragment(url: str) -> str:
    return f"CASE WHEN strpos({url}, '#') > 0 THEN url_decode({_uri(url, 9)}) END"


def _url_extract_parameter(url: str, name: str) -> str:
    # Trino splits the raw (undecoded) query on '&', then each pair on its first '=': the first
    # pair whose key equals the name wins; a key without '=' has the value ''. \Q...\E matches the
    # name literally.
    pattern = f"'(?:^|&)\\Q' || replace({name}, '\\E', '\\E\\\\E\\Q') || '\\E(?:=([^&]*))?(?:&|$)'"
    query = _query_raw(url)
    return (
        f"CASE WHEN regexp_matches({query}, {pattern}) "
        f"THEN regexp_extract({query}, {pattern}, 1) END"
    )


def _url_encode(value: str) -> str:
    # Java's URLEncoder: keeps letters, digits and . - * _; a space becomes '+'; everything else
    # is %XX of its UTF-8 bytes. DuckDB's url_encode keeps '~' and encodes '*' and ' ' as %XX.
    return f"replace(replace(replace(url_encode({value}), '~', '%7E'), '%2A', '*'), '%20', '+')"


def _url_decode(value: str) -> str:
    return f"url_decode(replace({value}, '+', ' '))"


def _split_part(value: str, delimiter: str, index: str) -> str:
    # DuckDB counts a negative index from the end; Trino refuses an index below 1.
    fail = athena_numeric.failing_integer("split_part index must be greater than zero")
    checked = f"(CASE WHEN {index} < 1 THEN {fail} ELSE {index} END)"
    return (
        f"CASE WHEN {checked} <= len(string_split({value}, {delimiter})) "
        f"THEN split_part({value}, {delimiter}, {index}) END"
    )


_URL_FUNCTIONS: dict[str, tuple[int, Callable[..., str]]] = {
    "url_extract_protocol": (1, _url_extract_protocol),
    "url_extract_host": (1, _url_extract_host),
    "url_extract_port": (1, _url_extract_port),
    "url_extract_path": (1, _url_extract_path),
    "url_extract_query": (1, _url_extract_query),
    "url_extract_fragment": (1, _url_extract_fragment),
    "url_extract_parameter": (2, _url_extract_parameter),
    "url_encode": (1, _url_encode),
    "url_decode": (1, _url_decode),
}


#: Column types of a lake table (``{column: DuckDB type}``) by its name, None for an unknown table.
ColumnsOf = Callable[[str], "dict[str, str] | None"]


def rewrite(tree: exp.Expr, columns_of: ColumnsOf | None = None) -> exp.Expr:
    """Replace, in sqlglot's tree of an Athena statement, the functions whose DuckDB counterpart
    is missing or answers differently (see the module docstring), and make a division of two
    integers an integer division when ``columns_of`` lets the operands' types be known. Raises
    QueryRefusedError for a URL function called with the wrong number of arguments."""
    names = _projection_names(tree)
    twins, type_of = _typed(tree, columns_of)
    # Deepest first, so an argument is already rewritten when its caller is.
    for node in reversed(list(tree.walk(bfs=False))):
        replacement = _replacement(node)
        if replacement is None and "athena_n" in node.meta:
            twin = twins.get(node.meta.pop("athena_n"))
            if twin is not None:
                replacement = athena_numeric.numeric_replacement(node, twin, type_of)
        if replacement is not None:
            if node is tree:
                tree = replacement
            else:
                node.replace(replacement)
    _keep_names(names)
    return tree


def _projection_names(tree: exp.Expr) -> list[tuple[exp.Select, int, str, str]]:
    """Each unnamed projection's text, so that a rewritten one keeps the column name DuckDB gives
    the call as written (``url_extract_host(url)``), not that of the expression replacing it."""
    names = []
    for select in tree.find_all(exp.Select):
        for i, projection in enumerate(select.expressions):
            if not isinstance(projection, (exp.Alias, exp.Column, exp.Star)):
                text = projection.sql(dialect="duckdb", normalize_functions="lower")
                names.append((select, i, text, projection.sql(dialect="duckdb")))
    return names


def _keep_names(names: list[tuple[exp.Select, int, str, str]]) -> None:
    for select, i, name, before in names:
        projection = select.expressions[i]
        if projection.sql(dialect="duckdb") != before:
            projection.replace(exp.alias_(projection.copy(), name, quoted=True))


def _typed(
    tree: exp.Expr, columns_of: ColumnsOf | None
) -> tuple[dict[int, exp.Expr], athena_numeric.TypeOf]:
    """Tag the divisions, ``avg``, casts and ``round`` of ``tree`` whose Trino types may make
    them answer otherwise than DuckDB's (query/athena_numeric.py), and return each one's twin in
    a qualified copy of the tree annotated with the lake tables' column types, with the typing
    of that copy. When the copy cannot be qualified, only literals, casts and aggregates are
    typed."""
    from sqlglot.errors import SqlglotError
    from sqlglot.optimizer.annotate_types import annotate_types
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.schema import MappingSchema

    kinds = (
        exp.Div,
        exp.Avg,
        exp.Cast,
        exp.Round,
        exp.Sum,
        exp.Bracket,
        exp.GenerateSeries,
        exp.Reverse,
    )
    for i, node in enumerate(n for n in tree.walk() if isinstance(n, kinds)):
        node.meta["athena_n"] = i
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for table in tree.find_all(exp.Table):
        if table.db and table.name and columns_of is not None:
            columns = columns_of(f"{table.db}.{table.name}".lower())
            if columns:
                schema.setdefault(table.db, {})[table.name] = columns
    nested: dict[str, object] = {db: tables for db, tables in schema.items()}
    mapping = MappingSchema(nested, dialect="duckdb")
    try:
        copy = qualify(
            tree.copy(),
            schema=mapping,
            dialect="athena",
            validate_qualify_columns=False,
            quote_identifiers=False,
            identify=False,
        )
        annotate_types(copy, schema=mapping, dialect="athena")
    except (SqlglotError, KeyError, ValueError):
        copy = tree.copy()
    twins = {n.meta["athena_n"]: n for n in copy.walk() if "athena_n" in n.meta}
    return twins, athena_numeric.TypeOf(copy)


def _replacement(node: exp.Expr) -> exp.Expr | None:
    timed = athena_datetime.replacement(node)
    if timed is not None:
        return timed
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        if name in _AGGREGATES:
            arity, build = _AGGREGATES[name]
            if len(node.expressions) != arity:
                raise QueryRefusedError(
                    f"Athena function {name}() takes {arity} argument(s) here, "
                    f"got {len(node.expressions)}"
                )
            return _parse(build(*(_sql(a) for a in node.expressions)))
        if name in _URL_FUNCTIONS:
            arity, build = _URL_FUNCTIONS[name]
            if len(node.expressions) != arity:
                raise QueryRefusedError(
                    f"Athena function {name}() takes {arity} argument(s), "
                    f"got {len(node.expressions)}"
                )
            return _parse(build(*(_sql(a) for a in node.expressions)))
        return None
    aggregate = _aggregate_replacement(node)
    if aggregate is not None:
        return aggregate
    if isinstance(node, exp.CountIf):
        # DuckDB counts in HUGEINT (a decimal to Arrow); Athena's count_if is a bigint. The cast
        # goes around the whole call, with its FILTER and OVER clauses.
        target: exp.Expr = node
        while isinstance(target.parent, (exp.Filter, exp.Window)):
            target = target.parent
        target.replace(exp.cast(target.copy(), "BIGINT"))
        return None
    if isinstance(node, exp.ArraySize):
        # cardinality(): DuckDB's takes lists and maps alike (array_length only lists), as UBIGINT.
        return _parse(f"CAST(cardinality({_sql(node.this)}) AS BIGINT)")
    if isinstance(node, exp.SplitPart):
        return _parse(
            _split_part(
                _sql(node.this), _sql(node.args["delimiter"]), _sql(node.args["part_index"])
            )
        )
    if isinstance(node, exp.RegexpExtract) and not node.meta.get("athena"):
        return _parse(_regexp_extract(node))
    if isinstance(node, exp.RegexpReplace):
        replacement = node.args.get("replacement")
        if isinstance(replacement, exp.Lambda):
            raise QueryRefusedError(
                "Athena function regexp_replace() with a lambda replacement is not translated "
                "to loglake's SQL engine; use regexp_replace(s, pattern, '$1...') with group "
                "references, or regexp_extract_all() and transform() over the matches"
            )
        if isinstance(replacement, exp.Literal) and replacement.is_string:
            converted = java_replacement(replacement.this)
            if converted != replacement.this:
                replacement.replace(exp.Literal.string(converted))
        elif replacement is not None:
            # Not a literal: convert at run time (backslashes first, then $n).
            text = _sql(replacement)
            runtime = (
                f"regexp_replace(regexp_replace({text}, '\\\\', '\\\\\\\\', 'g'), "
                f"'\\$([0-9])', '\\\\\\1', 'g')"
            )
            replacement.replace(_parse(runtime))
    return None


def _regexp_extract(node: exp.RegexpExtract) -> str:
    """Athena's regexp_extract: NULL without a match, NULL when the group took no part in the
    match, ``''`` when it matched nothing (DuckDB's regexp_extract answers ``''`` for all three).

    Where the pattern's structure shows the group takes part in every match, or holds at least one
    character whenever it does (query/athena_regex.py), DuckDB's regexp_extract is used, with
    ``nullif(..., '')`` in the second case; otherwise the first element of DuckDB's
    regexp_extract_all, which is NULL for a group that took no part (and finds every match: slower
    over long text)."""
    group = node.args.get("group")
    value, pattern = _sql(node.this), _sql(node.expression)
    index = _sql(group) if group else "0"
    literal = node.expression
    number = group.to_py() if isinstance(group, exp.Literal) and group.is_int else None
    if group is None or number == 0:
        shape = "always"
    elif isinstance(literal, exp.Literal) and literal.is_string and isinstance(number, int):
        shape = group_shape(literal.this, number)
    else:
        shape = "ambiguous"  # a pattern or group known only at run time
    if shape == "ambiguous":
        return f"list_extract(regexp_extract_all({value}, {pattern}, {index}), 1)"
    extract = f"regexp_extract({value}, {pattern}, {index})"
    if shape == "nonempty":
        extract = f"nullif({extract}, '')"
    return f"CASE WHEN regexp_matches({value}, {pattern}) THEN {extract} END"


def _map_agg(key: str, value: str) -> str:
    # Trino skips NULL keys and keeps one value of a repeated key; DuckDB's map() refuses both.
    entries = f"list({{'key': {key}, 'value': {value}}}) FILTER (WHERE {key} IS NOT NULL)"
    first = (
        f"list_filter({entries}, (_e, _i) -> "
        f"list_position(list_transform({entries}, _x -> _x.key), _e.key) = _i)"
    )
    return f"map_from_entries({first})"


def _histogram(value: str) -> str:
    # DuckDB counts in UBIGINT; Trino's histogram is map(K, bigint). NULLs are skipped by both.
    entries = f"map_entries(histogram({value}))"
    bigint = "_e -> {'key': _e.key, 'value': CAST(_e.value AS BIGINT)}"
    return f"map_from_entries(list_transform({entries}, {bigint}))"


def _approx_most_frequent(buckets: str, value: str, capacity: str) -> str:
    # Exact counts: the `buckets` most frequent values (ties by value), with their bigint counts.
    del capacity  # the size of Trino's summary; exact counting needs none
    entries = f"map_entries(histogram({value}))"
    negated = "_e -> {'n': -CAST(_e.value AS BIGINT), 'key': _e.key}"
    ranked = f"list_sort(list_transform({entries}, {negated}))"
    top = f"list_slice({ranked}, 1, {buckets})"
    return f"map_from_entries(list_transform({top}, _e -> {{'key': _e.key, 'value': -_e.n}}))"


def _substring(node: exp.Expr) -> str:
    """Trino's substr: start 0, a negative start before the beginning or a length below 1 give
    '' (DuckDB counts them otherwise)."""
    value, start = _sql(node.this), _sql(node.args["start"])
    length = node.args.get("length")
    empty = f"{start} = 0 OR ({start} < 0 AND -{start} > length({value}))"
    if length is None:
        return (
            f"CASE WHEN {value} IS NULL OR {start} IS NULL THEN NULL WHEN {empty} THEN '' "
            f"ELSE substring({value}, {start}) END"
        )
    count = _sql(length)
    return (
        f"CASE WHEN {value} IS NULL OR {start} IS NULL OR {count} IS NULL THEN NULL "
        f"WHEN {empty} OR {count} <= 0 THEN '' ELSE substring({value}, {start}, {count}) END"
    )


def _slice(array: str, start: str, length: str) -> str:
    """Trino's slice(array, start, length) (DuckDB's list_slice takes an end, not a length)."""
    fail_length = athena_numeric.failing_integer("length must be greater than or equal to 0")
    fail_start = athena_numeric.failing_integer("SQL array indices start at 1")
    count = f"(CASE WHEN {length} < 0 THEN {fail_length} ELSE {length} END)"
    first = (
        f"(CASE WHEN {start} = 0 THEN {fail_start} "
        f"WHEN {start} < 0 THEN len({array}) + {start} + 1 ELSE {start} END)"
    )
    return (
        f"CASE WHEN {count} IS NULL OR {first} < 1 THEN list_slice({array}, 1, 0) "
        f"ELSE list_slice({array}, {first}, least({first} + {count}, len({array}) + 1) - 1) END"
    )


def _ordered_distinct(array: str) -> str:
    # Trino keeps each value's first occurrence, in order; DuckDB's list_distinct does not keep
    # the order (nor a NULL).
    return f"list_filter({array}, (_x, _i) -> list_position({array}, _x) = _i)"


def _arrays_overlap(a: str, b: str) -> str:
    # Trino: NULL when nothing non-NULL is shared but either array holds a NULL.
    return (
        f"CASE WHEN {a} IS NULL OR {b} IS NULL THEN NULL WHEN list_has_any({a}, {b}) THEN true "
        f"WHEN list_count({a}) < len({a}) OR list_count({b}) < len({b}) THEN NULL ELSE false END"
    )


def _trim_array(array: str, n: str) -> str:
    fail = athena_numeric.failing_integer("size must not exceed array cardinality")
    checked = f"(CASE WHEN {n} < 0 OR {n} > len({array}) THEN {fail} ELSE {n} END)"
    return f"list_slice({array}, 1, len({array}) - {checked})"


_AGGREGATES: dict[str, tuple[int, Callable[..., str]]] = {
    "map_agg": (2, _map_agg),
    "histogram": (1, _histogram),
    "approx_most_frequent": (3, _approx_most_frequent),
    "every": (1, lambda x: f"bool_and({x})"),
    "e": (0, lambda: "exp(1)"),
    "is_finite": (1, lambda x: f"isfinite({x})"),
    "is_infinite": (1, lambda x: f"isinf({x})"),
    "arrays_overlap": (2, _arrays_overlap),
    "array_union": (2, lambda a, b: _ordered_distinct(f"list_concat({a}, {b})")),
    "trim_array": (2, _trim_array),
    "hamming_distance": (2, lambda a, b: f"CAST(hamming({a}, {b}) AS BIGINT)"),
    "codepoint": (1, lambda x: f"CAST(unicode({x}) AS INTEGER)"),
    "nan": (0, lambda: "CAST('NaN' AS DOUBLE)"),
    "infinity": (0, lambda: "CAST('Infinity' AS DOUBLE)"),
}


def _aggregate_replacement(node: exp.Expr) -> exp.Expr | None:
    """Trino's approximate aggregates answered exactly, ``max_by``/``min_by`` keeping a NULL
    value, ``contains`` with Trino's NULL, and constructs sqlglot would drop refused."""
    if isinstance(node, exp.ApproxDistinct):
        # Exact: Athena's HyperLogLog answer has a 2.3 % standard error around this count.
        return _parse(f"count(DISTINCT {_sql(node.this)})")
    if isinstance(node, exp.ApproxQuantile):
        if node.args.get("weight") is not None or node.args.get("accuracy") is not None:
            raise QueryRefusedError(
                "Athena function approx_percentile() with a weight or an accuracy argument is "
                "not translated to loglake's SQL engine; use approx_percentile(x, percentage) "
                "(exact here), or repeat each row by its weight: ... CROSS JOIN "
                "UNNEST(sequence(1, w)) AS r(i)"
            )
        return _parse(f"quantile_disc({_sql(node.this)}, {_sql(node.args['quantile'])})")
    if isinstance(node, (exp.ArgMax, exp.ArgMin)):
        value, key, count = _sql(node.this), _sql(node.expression), node.args.get("count")
        if count is None:
            name = "arg_max_null" if isinstance(node, exp.ArgMax) else "arg_min_null"
            return _parse(f"{name}({value}, {key})")
        # max_by(x, y, n): the x of the n largest y, largest first, a NULL x kept (DuckDB's
        # arg_max(x, y, n) drops it).
        order = "DESC" if isinstance(node, exp.ArgMax) else "ASC"
        listed = f"list({value} ORDER BY {key} {order}) FILTER (WHERE {key} IS NOT NULL)"
        return _parse(f"list_slice({listed}, 1, {_sql(count)})")
    if isinstance(node, exp.ArrayContains):
        array, element = _sql(node.this), _sql(node.expression)
        # Trino: not found in an array holding a NULL is NULL, not false.
        return _parse(
            f"CASE WHEN {array} IS NULL OR {element} IS NULL THEN NULL "
            f"WHEN list_contains({array}, {element}) THEN true "
            f"WHEN list_count({array}) < len({array}) THEN NULL ELSE false END"
        )
    if isinstance(node, exp.ArraySort) and node.expression is not None:
        raise QueryRefusedError(
            "Athena function array_sort() with a comparator function is not translated to "
            "loglake's SQL engine; use array_sort(x) (ascending, NULLs last), or build the array "
            "in the order wanted with array_agg(x ORDER BY ...)"
        )
    if isinstance(node, exp.Reduce) and not _is_identity(node.args.get("finish")):
        raise QueryRefusedError(
            "Athena function reduce() with an output function other than s -> s is not "
            "translated to loglake's SQL engine; use reduce(array, initial, (s, x) -> ..., "
            "s -> s) and apply the output function to its result"
        )
    if isinstance(node, exp.Split) and node.args.get("limit") is not None:
        value, delimiter = _sql(node.this), _sql(node.expression)
        limit = _sql(node.args["limit"])
        parts = f"string_split({value}, {delimiter})"
        # Trino: at most `limit` elements, the last holding the rest of the string.
        fail = athena_numeric.failing_integer("split limit must be positive")
        limit = f"(CASE WHEN {limit} < 1 THEN {fail} ELSE {limit} END)"
        return _parse(
            f"CASE WHEN len({parts}) <= {limit} THEN {parts} "
            f"ELSE list_append(list_slice({parts}, 1, {limit} - 1), "
            f"array_to_string(list_slice({parts}, {limit}, len({parts})), {delimiter})) END"
        )
    if isinstance(node, exp.Format):
        raise QueryRefusedError(
            "Athena function format() (Java's String.format patterns) is not translated to "
            "loglake's SQL engine; use printf(pattern, args...) (C-style %s, %d, %.2f) or || "
            "concatenation"
        )
    if isinstance(node, exp.StrToMap):
        raise QueryRefusedError(
            "Athena function split_to_map() is not translated to loglake's SQL engine; use "
            "split(s, entry_delimiter) with split_part(entry, key_value_delimiter, 1 or 2), "
            "or url_extract_parameter() for a URL query string"
        )
    if isinstance(node, exp.Substring) and node.args.get("start") is not None:
        return _parse(_substring(node))
    if isinstance(node, exp.ArraySlice) and node.args.get("end") is not None:
        return _parse(_slice(_sql(node.this), _sql(node.args["start"]), _sql(node.args["end"])))
    if isinstance(node, exp.ArrayDistinct):
        return _parse(_ordered_distinct(_sql(node.this)))
    if isinstance(node, (exp.ArrayMax, exp.ArrayMin)):
        # Trino: NULL when the array holds a NULL (DuckDB skips it).
        array = _sql(node.this)
        name = "list_max" if isinstance(node, exp.ArrayMax) else "list_min"
        return _parse(
            f"CASE WHEN list_count({array}) < len({array}) THEN NULL ELSE {name}({array}) END"
        )
    if isinstance(node, exp.StrPosition) and node.args.get("occurrence") is not None:
        raise QueryRefusedError(
            "Athena function strpos() with an instance argument is not translated to loglake's "
            "SQL engine; use strpos(s, sub) for the first, or for the n-th (non-overlapping) "
            "length(array_join(slice(split(s, sub), 1, n), sub)) + 1"
        )
    return None


def _is_identity(function: exp.Expr | None) -> bool:
    """True for no function or ``s -> s``."""
    if function is None:
        return True
    return (
        isinstance(function, exp.Lambda)
        and len(function.expressions) == 1
        and isinstance(function.this, (exp.Identifier, exp.Column))
        and function.this.name == function.expressions[0].name
    )


def java_replacement(text: str) -> str:
    """A Java ``Matcher`` replacement (``$1`` a group, ``\\$`` a dollar, ``\\\\`` a backslash) as
    an RE2 one (``\\1`` a group, ``\\\\`` a backslash, anything else literal)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append("\\\\" if nxt == "\\" else nxt)
            i += 2
        elif ch == "$" and i + 1 < len(text) and text[i + 1].isdigit():
            out.append("\\" + text[i + 1])
            i += 2
        elif ch == "\\":
            out.append("\\\\")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def refuse_untranslated(duckdb_sql: str) -> None:
    """Refuse ``duckdb_sql`` (the translated statement) when it calls a function DuckDB does not
    have: the message names it and, when one is known, the nearest supported alternative."""
    try:
        tree = parse_one(duckdb_sql, read="duckdb")
    except (ParseError, TokenError):
        return  # DuckDB's own parser reports it, with its position, when the policy checks it
    # TRY(expr) is a DuckDB special form, not a function of the catalog.
    known = _duckdb_functions() | {"try"}
    for node in tree.find_all(exp.Anonymous):
        name = str(node.this).lower()
        if name in known:
            continue
        alternative = ALTERNATIVES.get(name)
        advice = (
            f"use {alternative} instead"
            if alternative
            else "see docs/sql.md, 'Athena dialect: what is translated', for what is supported"
        )
        raise QueryRefusedError(
            f"Athena function {name}() is not translated to loglake's SQL engine; {advice}"
        )


@cache
def _duckdb_functions() -> frozenset[str]:
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions()"
        ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def _sql(node: exp.Expr) -> str:
    return f"({node.sql(dialect='duckdb')})"


def _parse(sql: str) -> exp.Expr:
    node = parse_one(sql, read="duckdb")
    # Our own regexp_extract is final: the walk has passed it, but mark it against a second one.
    for inner in node.find_all(exp.RegexpExtract):
        inner.meta["athena"] = True
    return exp.Paren(this=node)
