"""Athena's date and time functions rewritten so they answer in DuckDB as they answer in Athena.

:func:`replacement` is called by :func:`loglake.query.athena.rewrite` for every node of sqlglot's
tree of an Athena statement, deepest first; it returns the DuckDB expression replacing the node,
or None to leave it as it is.
"""

from __future__ import annotations

from sqlglot import exp


def replacement(node: exp.Expr) -> exp.Expr | None:
    """The DuckDB expression that answers as Athena's date/time construct ``node`` does, or None
    when ``node`` is not one this module translates."""
    return None
