"""SQL over the lake with DuckDB, sandboxed to the warehouse and read-only.

Each query: parse it (sqlglot) to find the lake tables it names and the time ranges its WHERE clauses
put on them; take each table's cached plan (``plan.py``) and keep only the files whose ``ts`` bounds can
overlap those ranges; bind ``namespace.table`` to a view over exactly those Parquet files; run the query.

The sandbox (set once per connection, then locked): only files under the warehouse are readable, no
external access, no extension loading or installing, no configuration changes; only single read
statements are accepted; each query has a time limit and a row limit.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb

from loglake.errors import NoSuchTableError, QueryError, QueryRefusedError
from loglake.query.plan import TablePlan, current_locations, get_plan, table_names

if TYPE_CHECKING:
    import pandas
    import polars
    import pyarrow as pa

    from loglake.config import Config

_ALLOWED_STATEMENTS = {"SELECT", "EXPLAIN"}
_US = 1_000_000


@dataclass
class Result:
    """A finished query's rows, materialized once; converts to Arrow, Polars or pandas."""

    table: pa.Table
    truncated: bool

    def arrow(self) -> pa.Table:
        return self.table

    def pl(self) -> polars.DataFrame:
        import polars as pl

        frame = pl.from_arrow(self.table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def df(self) -> pandas.DataFrame:
        return self.table.to_pandas()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in self.table.to_pylist()]

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def __len__(self) -> int:
        return self.table.num_rows


class Connection:
    """A read-only, sandboxed SQL session over the lake of one config.

    Created by :func:`loglake.connect`. Not thread-safe: use one per thread.
    """

    def __init__(self, config: Config):
        self.config = config
        self._con = duckdb.connect(":memory:")
        # Close DuckDB before the interpreter tears down: an open connection at exit can abort the
        # process ("exception not rethrown") after the output was already written.
        weakref.finalize(self, self._con.close)
        warehouse = config.warehouse
        root = warehouse[len("file://") :] if warehouse.startswith("file://") else str(config.home)
        self._setup(root)
        self._created_schemas: set[str] = set()

    def _setup(self, root: str) -> None:
        q = self.config.query
        con = self._con
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = '{q.memory_limit}'")
        con.execute("SET parquet_metadata_cache = true")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET allowed_directories = $dirs", {"dirs": [root.rstrip("/") + "/"]})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- statements --------------------------------------------------------------------------------

    def _check(self, sql: str) -> None:
        try:
            statements = self._con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(_clean(exc)) from exc
        if len(statements) != 1:
            raise QueryRefusedError(
                f"send exactly one SQL statement (got {len(statements)}); split them into separate queries"
            )
        kind = statements[0].type.name
        if kind not in _ALLOWED_STATEMENTS:
            raise QueryRefusedError(
                f"{kind} statements are not allowed: the lake is read-only here; only SELECT "
                "(with WITH, UNION, ...) and EXPLAIN are accepted"
            )

    def _bind(self, sql: str) -> None:
        """Create a view for every lake table the query names, over the files it can need."""
        from loglake.query.prune import referenced_tables

        locations = current_locations(self.config)
        known = set(locations) if locations is not None else set(table_names(self.config))
        wanted = referenced_tables(sql, known)
        for name, ranges in wanted.items():
            plan = get_plan(self.config, name, locations.get(name) if locations else None)
            self._create_view(plan, ranges)

    def _create_view(
        self, plan: TablePlan, ranges: list[tuple[int | None, int | None]] | None
    ) -> None:
        namespace, table = plan.name.split(".", 1)
        if namespace not in self._created_schemas:
            self._con.execute(f'CREATE SCHEMA IF NOT EXISTS "{namespace}"')
            self._created_schemas.add(namespace)
        files = plan.files
        if ranges is not None:
            files = [f for f in files if _overlaps(f.ts_min, f.ts_max, ranges)]
        cols = ", ".join(f'"{c}"' for c, _ in plan.columns)
        if files:
            paths = ", ".join("'" + f.path.replace("'", "''") + "'" for f in files)
            opts = ", union_by_name = true" if plan.evolved else ""
            source = f"SELECT {cols} FROM read_parquet([{paths}]{opts})"
        elif plan.files:
            # Nothing can match: keep the real schema by reading one file's footer only.
            one = plan.files[0].path.replace("'", "''")
            opts = ", union_by_name = true" if plan.evolved else ""
            source = f"SELECT {cols} FROM read_parquet(['{one}']{opts}) WHERE false"
        else:
            typed = ", ".join(f'CAST(NULL AS {t}) AS "{c}"' for c, t in plan.columns)
            source = f"SELECT {typed} WHERE false"
        self._con.execute(f'CREATE OR REPLACE VIEW "{namespace}"."{table}" AS {source}')

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Apply the time limit and turn DuckDB's errors into loglake's, for one query."""
        timer = threading.Timer(self.config.query.timeout_s, self._con.interrupt)
        timer.daemon = True
        timer.start()
        try:
            yield
        except duckdb.InterruptException as exc:
            raise QueryError(
                f"query stopped after {self.config.query.timeout_s:g} s (query.timeout_s); "
                "narrow the time range or raise the limit"
            ) from exc
        except duckdb.PermissionException as exc:
            raise QueryRefusedError(f"refused by the sandbox: {_clean(exc)}") from exc
        except duckdb.CatalogException as exc:
            raise QueryError(_clean(exc) + _table_hint(self.config)) from exc
        except duckdb.Error as exc:
            raise QueryError(_clean(exc)) from exc
        finally:
            timer.cancel()

    def sql(self, sql: str, dialect: str | None = None) -> Result:
        """Run one read-only statement and return its rows (at most ``query.max_rows``).

        ``dialect`` (e.g. ``athena``, ``trino``) transpiles the SQL to DuckDB's first. Raises
        QueryRefusedError for anything but a read, QueryError for errors in the SQL.
        """
        import pyarrow as pa

        sql = transpile(sql, dialect)
        self._check(sql)
        self._bind(sql)
        limit = self.config.query.max_rows
        with self._guard():
            reader = self._con.sql(sql).to_arrow_reader(min(limit + 1, 1_000_000))
            batches = []
            rows = 0
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                if rows > limit:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema)
        truncated = table.num_rows > limit
        return Result(table.slice(0, limit) if truncated else table, truncated)

    def rows(
        self, sql: str, dialect: str | None = None
    ) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        """Column names and an iterator of row tuples (no pyarrow needed: the CLI's fast path)."""
        sql = transpile(sql, dialect)
        self._check(sql)
        self._bind(sql)
        with self._guard():
            cursor = self._con.execute(sql)
        names = [d[0] for d in cursor.description or []]
        limit = self.config.query.max_rows

        def it() -> Iterator[tuple[Any, ...]]:
            sent = 0
            while sent < limit:
                with self._guard():
                    chunk = cursor.fetchmany(min(10_000, limit - sent))
                if not chunk:
                    return
                sent += len(chunk)
                yield from chunk

        return names, it()


def transpile(sql: str, dialect: str | None) -> str:
    """Translate ``sql`` from ``dialect`` (athena, trino, presto, spark...) to DuckDB SQL."""
    if not dialect or dialect == "duckdb":
        return sql
    import sqlglot
    from sqlglot.errors import ParseError

    try:
        out = sqlglot.transpile(sql, read=dialect, write="duckdb")
    except ParseError as exc:
        raise QueryError(f"cannot parse the {dialect} SQL: {exc}") from exc
    except ValueError as exc:
        raise QueryError(f"unknown SQL dialect {dialect!r}: {exc}") from exc
    if len(out) != 1:
        raise QueryRefusedError("send exactly one SQL statement")
    return out[0]


def _overlaps(lo: int | None, hi: int | None, ranges: list[tuple[int | None, int | None]]) -> bool:
    if lo is None or hi is None:
        return True  # no statistics: the file may hold anything
    return any((rhi is None or lo <= rhi) and (rlo is None or hi >= rlo) for rlo, rhi in ranges)


def _clean(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _table_hint(config: Config) -> str:
    names = table_names(config)
    return f" (lake tables: {', '.join(names) or 'none yet; run loglake ingest'})"


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch, exactly (a naive datetime is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

__all__ = ["Connection", "NoSuchTableError", "Result", "transpile"]
