"""Quoting of names and values pasted into SQL text: the one place loglake does it.

Column names come from log data (JSON keys, CSV headers, attribute names), so a name is never
trusted: every identifier that reaches SQL text goes through :func:`ident`, every string through
:func:`literal`.
"""

from __future__ import annotations


def ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (DuckDB, Trino, Athena): ``a"b`` -> ``"a""b"``.

    Raises ValueError for a name with a NUL character, which no SQL engine can quote.
    """
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def qualified(name: str) -> str:
    """``namespace.table`` as ``"namespace"."table"`` (split at the first dot only)."""
    namespace, _, table = name.partition(".")
    return f"{ident(namespace)}.{ident(table)}" if table else ident(namespace)


def literal(text: str) -> str:
    """``text`` as a single-quoted SQL string literal: ``it's`` -> ``'it''s'``.

    Raises ValueError for a NUL character (DuckDB string literals cannot hold one).
    """
    if "\x00" in text:
        raise ValueError(f"string {text!r} contains a NUL character")
    return "'" + text.replace("'", "''") + "'"
