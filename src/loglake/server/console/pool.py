"""The sandboxed query workers that answer the console's SQL.

Every console query runs in a :class:`~loglake.query.engine.Connection` (a DuckDB child process
with the time, memory and result limits of ``[query]``, read-only, only lake tables in scope), the
same sandbox as ``loglake query``. ``console.query_workers`` of them answer one query each at a
time; a query that finds them all busy waits ``console.queue_timeout_s`` and is then refused with
503 + Retry-After (:class:`~loglake.errors.ConsoleBusyError`) rather than queueing without bound.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from loglake.errors import ConsoleBusyError

if TYPE_CHECKING:
    from loglake.config import Config
    from loglake.query.engine import Connection, Result


class SqlPool:
    """``console.query_workers`` sandboxed connections, started on first use, closed by :meth:`close`.

    :meth:`run` (blocking) and :meth:`arun` (from the event loop: runs in a thread) return the
    query's :class:`~loglake.query.engine.Result`; errors are the sandbox's own
    (QueryRefusedError, QueryError) or ConsoleBusyError when no worker came free in time.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.size = config.console.query_workers
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self._all: list[Connection] = []

    def run(self, sql: str, dialect: str | None = None, *, max_rows: int | None = None) -> Result:
        """Run one read-only statement; at most ``max_rows`` rows (default ``console.max_rows``)."""
        if not self._slots.acquire(timeout=self.config.console.queue_timeout_s):
            raise ConsoleBusyError(
                f"all {self.size} console query workers stayed busy for "
                f"{self.config.console.queue_timeout_s:g} s; retry shortly, or raise "
                "[console] query_workers"
            )
        try:
            conn = self._take()
            try:
                rows = self.config.console.max_rows if max_rows is None else max_rows
                return conn.sql(sql, dialect, max_rows=rows)
            finally:
                self._idle.put(conn)
        finally:
            self._slots.release()

    async def arun(
        self, sql: str, dialect: str | None = None, *, max_rows: int | None = None
    ) -> Result:
        """:meth:`run` in a worker thread, for request handlers."""
        return await run_in_threadpool(self.run, sql, dialect, max_rows=max_rows)

    def _take(self) -> Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        from loglake.query.engine import Connection

        conn = Connection(self.config)
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        """Stop every worker process (at server shutdown)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
