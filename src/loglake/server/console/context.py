"""What every page of the console shares: the :class:`Console` its routes are built with, and the
parsing of a SQL request (``{"sql": ..., "dialect": ...}``) that the SQL answer, Notebooks'
downloads and saved paragraphs all take.

The page modules (explore.py, dashboards.py, notebooks.py, catalog.py) import this module; web.py
imports them and this module: the arrows run one way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loglake.errors import ConfigError

if TYPE_CHECKING:
    from starlette.requests import Request

    from loglake.config import Config
    from loglake.server.console.pool import SqlPool
    from loglake.server.runtime import Runtime

SQL_BODY_LIMIT = 1 << 20  # one statement and a few options
DIALECTS = ("duckdb", "athena", "trino", "presto", "spark", "hive", "bigquery", "postgres", "mysql")


class UnknownDialectError(ConfigError):
    """A ``dialect`` the console does not offer (400)."""


@dataclass(frozen=True)
class Console:
    """What every page's routes need: the config, the running server, the query workers."""

    config: Config
    runtime: Runtime
    pool: SqlPool

    async def json_body(self, request: Request, what: str, limit: int = SQL_BODY_LIMIT) -> Any:
        """The request's JSON body (at most ``limit`` bytes, within ``server.body_timeout_s``);
        ConfigError (400) naming ``what`` for anything that is not JSON."""
        from loglake.sources.http_body import read_decoded

        raw = await read_decoded(request, limit, self.config.server.body_timeout_s)
        try:
            return json.loads(raw or b"null")
        except RecursionError:
            raise ConfigError(f"the body is nested too deeply; send {what}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the body must be JSON ({what}): {exc}") from exc


def sql_request(body: Any) -> tuple[str, str | None]:
    """The statement and dialect of a ``POST /v1/sql`` body; ConfigError (400) saying what is
    wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
        raise ConfigError(
            'the body must be a JSON object {"sql": "SELECT ...", "dialect": "duckdb"}'
        )
    unknown = sorted(set(body) - {"sql", "dialect"})
    if unknown:
        raise ConfigError(f"unknown keys {', '.join(unknown)}; valid: sql, dialect")
    dialect = body.get("dialect", "duckdb")
    if not isinstance(dialect, str) or dialect not in DIALECTS:
        raise UnknownDialectError(f"unknown dialect {dialect!r}; valid: {', '.join(DIALECTS)}")
    if not body["sql"].strip():
        raise ConfigError("the SQL is empty: write one SELECT statement")
    return body["sql"], None if dialect == "duckdb" else dialect
