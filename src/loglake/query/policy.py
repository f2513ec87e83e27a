"""What user SQL may do, decided on DuckDB's own parse tree before anything runs.

A statement is accepted only when it is one ``SELECT`` (``WITH``, ``UNION``, ``DESCRIBE``, ...) or an
``EXPLAIN [ANALYZE]`` of one, and its tree (``json_serialize_sql``, the parser that will run it)
reads nothing but:

- the tables in scope: lake tables (``namespace.table``) for ``loglake query``, only the relation
  ``stream`` for a continuous query, plus the query's own CTEs where they are visible;
- table functions that read no files and no engine state (``range``, ``unnest``, ...);
- scalar functions other than those that show the engine's settings or variables.

Using DuckDB's parser rather than another one means the statement checked is the statement run: a
text that one parser reads as a SELECT and another as something else cannot slip through. Anything
the tree does not show plainly (a statement kind it cannot serialize) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import duckdb

from loglake.errors import QueryError, QueryRefusedError

#: Table functions that compute rows from their arguments only: no files, no catalog, no settings.
TABLE_FUNCTIONS = frozenset(
    {"range", "generate_series", "unnest", "json_each", "json_tree", "generate_subscripts"}
)
#: Scalar functions that reveal the engine's configuration (the data home in allowed_directories)
#: or write to its log.
SCALAR_DENIED = frozenset({"current_setting", "getvariable", "write_log"})


@dataclass(frozen=True)
class Checked:
    """An accepted statement: its text, the SELECT it runs (itself, or what EXPLAIN explains) and
    the in-scope tables it reads (lower case)."""

    text: str
    select: str
    tables: frozenset[str]


def check_read_only(
    con: duckdb.DuckDBPyConnection, sql: str, tables: Collection[str], hint: str = ""
) -> Checked:
    """Refuse ``sql`` unless it is one read statement over ``tables``; return what was accepted.

    ``tables`` holds the names the statement may read, lower case (``logs.access``, or ``stream``).
    ``hint`` ends the message of an out-of-scope table (e.g. the list of lake tables). Raises
    QueryError when the SQL does not parse or names an unknown table, QueryRefusedError for anything
    the sandbox does not allow. ``con`` is only used to parse.
    """
    statements = _statements(con, sql)
    if len(statements) != 1:
        raise QueryRefusedError(
            f"send exactly one SQL statement (got {len(statements)}); split them into separate queries"
        )
    statement = statements[0]
    kind = _kind(statement)
    text = statement.query
    if kind == "EXPLAIN":
        inner = _explained(con, text)
        if inner is None:
            raise QueryRefusedError(
                "EXPLAIN is accepted only for a SELECT statement: the lake is read-only here"
            )
        text_checked = inner
    elif kind == "SELECT":
        text_checked = text
    else:
        raise QueryRefusedError(
            f"{kind} statements are not allowed: the lake is read-only here; only SELECT "
            "(with WITH, UNION, ...) and EXPLAIN of a SELECT are accepted"
        )
    tree = _tree(con, text_checked)
    allowed = {t.lower() for t in tables}
    used: set[str] = set()
    for node in tree:
        _walk(node, frozenset(), allowed, hint, used)
    return Checked(text, text_checked, frozenset(used))


def _statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    try:
        return list(con.extract_statements(sql))
    except duckdb.Error as exc:
        raise QueryError(_first_line(exc)) from exc


def _kind(statement: Any) -> str:
    """The statement's type name; a type the Python binding has no name for is refused later."""
    try:
        return str(statement.type.name)
    except ValueError:
        return "this kind of"


def _explained(con: duckdb.DuckDBPyConnection, text: str) -> str | None:
    """The statement an ``EXPLAIN [ANALYZE] [(options)]`` text explains, if it is one SELECT."""
    tokens = [(pos, kind) for pos, kind in duckdb.tokenize(text) if kind.name != "comment"]
    if not tokens or text[tokens[0][0] :].split(None, 1)[0].upper() != "EXPLAIN":
        return None
    i = 1
    if i < len(tokens) and text[tokens[i][0] :].split(None, 1)[0].upper().startswith("ANALY"):
        i += 1
    candidates = []
    if i < len(tokens):
        candidates.append(text[tokens[i][0] :])
        if text[tokens[i][0]] == "(":
            # EXPLAIN (FORMAT json) SELECT ...: skip the balanced option list.
            depth, j = 0, i
            while j < len(tokens):
                ch = text[tokens[j][0]]
                if tokens[j][1].name == "operator" and ch in "()":
                    depth += 1 if ch == "(" else -1
                    if depth == 0:
                        break
                j += 1
            if j + 1 < len(tokens):
                candidates.append(text[tokens[j + 1][0] :])
    for candidate in candidates:
        try:
            inner = list(con.extract_statements(candidate))
        except duckdb.Error:
            continue
        if len(inner) == 1 and _kind(inner[0]) == "SELECT":
            return str(inner[0].query)
    return None


def _tree(con: duckdb.DuckDBPyConnection, text: str) -> list[Any]:
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", [text]).fetchall()[0]
    except duckdb.Error as exc:
        raise QueryError(_first_line(exc)) from exc
    parsed: dict[str, Any] = (
        json.loads(raw[0]) if raw else {"error": True, "error_message": "no parse tree"}
    )
    if parsed.get("error"):
        raise QueryRefusedError(
            f"this form of statement cannot be checked by the sandbox, so it is refused "
            f"({parsed.get('error_message')}); write it as a plain SELECT"
        )
    return [s.get("node") for s in parsed.get("statements", [])]


def _walk(node: Any, scope: frozenset[str], allowed: set[str], hint: str, used: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, scope, allowed, hint, used)
        return
    if not isinstance(node, dict):
        return
    ctes = node.get("cte_map")
    if isinstance(ctes, dict) and ctes.get("map"):
        names: list[str] = []
        for entry in ctes["map"]:
            name = str(entry.get("key", "")).lower()
            body = entry.get("value", {})
            # A CTE sees the ones before it, and itself only when it is recursive; a name used
            # where no CTE of that name is visible is a table (DuckDB binds it to one).
            query = body.get("query_node", body.get("query", body))
            own = {name} if _recursive_name(query) == name else set()
            _walk(body, scope | set(names) | own, allowed, hint, used)
            names.append(name)
        scope = scope | set(names)
    kind = node.get("type")
    if kind == "BASE_TABLE":
        table = _check_table(node, scope, allowed, hint)
        if table:
            used.add(table)
    elif kind == "TABLE_FUNCTION":
        function = node.get("function") or {}
        name = str(function.get("function_name", "")).lower()
        if name not in TABLE_FUNCTIONS or function.get("schema") or function.get("catalog"):
            raise QueryRefusedError(
                f"table function {name}() is not allowed: queries read lake tables only "
                f"(allowed table functions: {', '.join(sorted(TABLE_FUNCTIONS))})"
            )
    elif node.get("class") == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        if name in SCALAR_DENIED:
            raise QueryRefusedError(f"function {name}() is not allowed in the sandbox")
    for key, value in node.items():
        if key != "cte_map":
            _walk(value, scope, allowed, hint, used)


def _recursive_name(query: Any) -> str | None:
    if isinstance(query, dict) and query.get("type") == "RECURSIVE_CTE_NODE":
        return str(query.get("cte_name", "")).lower()
    return None


def _check_table(
    node: dict[str, Any], scope: frozenset[str], allowed: set[str], hint: str
) -> str | None:
    """The in-scope table a reference reads, None for a visible CTE; QueryError otherwise."""
    catalog = str(node.get("catalog_name") or "").lower()
    schema = str(node.get("schema_name") or "").lower()
    table = str(node.get("table_name") or "").lower()
    if not catalog and not schema and table in scope:
        return None
    name = f"{schema}.{table}" if schema else table
    if catalog or name not in allowed:
        shown = ".".join(p for p in (catalog, schema, table) if p)
        raise QueryError(f"table {shown} is not in scope{hint}")
    return name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
