"""Continuous queries fed by a stream's lake writer (its :class:`DeliveryHooks`).

The lake writer parses each batch once; the event times (and session keys) of those records come
here, and after their commit they are fed to the stream's :class:`QueryRunner`, in commit order, in
a thread of the queries' own, so a query's SQL (which can take seconds over a busy minute) never
holds up the next commit. Records that close a window make the writer commit at once, and prepared
window results those records cannot change go out even before that commit. The queries' state is
committed with their results (and the stream offset it covers), so after a failure everything
resumes from the lake: :meth:`QueryFeed.resume` says from which offset they need the log.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import polars as pl

from loglake.analytics.runner import QueryRunner
from loglake.supervise import Spawn, plain_thread

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from loglake.config import Config
    from loglake.lake.tables import Tables

_QUERY_BACKLOG = 30  # commits whose query runs may wait; beyond, the committer waits for them

Rows = list[tuple[pl.DataFrame, float]]  # (line, ts, keys) of parsed records, with the parse time


class QueryFeed:
    """The continuous queries of one stream, as hooks of its lake writer."""

    def __init__(
        self,
        config: Config,
        stream: str,
        source_table: str,
        catalog: Future[Catalog],
        tables: Tables,
        spawn: Spawn = plain_thread,
    ) -> None:
        self.config = config
        self.stream = stream
        self.source_table = source_table
        self._catalog = catalog
        self._tables = tables
        self._spawn = spawn  # for the alert notifier's threads
        self._thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"loglake-queries-{stream}"
        )
        self._jobs: deque[Future[None]] = deque()  # feeds, submitted by the committer thread
        self._early: deque[Future[None]] = deque()  # emit_prepared, by the consumer's thread
        self.runner: QueryRunner | None = None
        self._rows: Rows = []  # parsed since the last seal
        self._sealed: Rows = []  # those of the commit in flight (fed once it is committed)
        self._lock = threading.Lock()  # runner replacement vs. readers (the API)

    # -- managing queries (API threads) ----------------------------------------------------------

    def add_query(self, name: str, config: Config) -> None:
        """Start the continuous query ``name`` of ``config`` on this stream (from the next
        records). Runs in the queries' thread, between two runs, so it never races a running query.
        """
        self.config = config
        self._thread.submit(self._add_query, name, config).result()

    def _add_query(self, name: str, config: Config) -> None:
        if self.runner is None:
            # From now on the lake writer collects event times for it.
            self.runner = self._new_runner(config)
        else:
            self.runner.add(name, config)

    def remove_query(self, name: str, config: Config) -> None:
        """Stop the continuous query ``name``; its results table stays."""
        self.config = config
        if self.runner is not None:
            self._thread.submit(self.runner.remove, name).result()

    def _new_runner(self, config: Config) -> QueryRunner:
        return QueryRunner(
            config, self.stream, self.source_table, self._catalog, self._tables, self._spawn
        )

    # -- DeliveryHooks ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.runner is not None

    @property
    def key_columns(self) -> list[str]:
        return self.runner.key_columns if self.runner is not None else []

    def resume(self) -> int | None:
        if not any(q.stream == self.stream for q in self.config.queries.values()):
            return None
        if self.runner is not None:
            self.runner.close()
        # A fresh runner restored from the lake: after a failure its state is the committed one.
        self.runner = self._new_runner(self.config)
        return self.runner.resume()

    def parsed(self, rows: pl.DataFrame) -> bool:
        runner = self.runner
        if runner is None:
            return False
        parsed_at = time.time()
        self._rows.append((rows, parsed_at))
        newest = rows.get_column("ts").cast(pl.Datetime("us")).cast(pl.Int64).max()
        if newest is None or not runner.window_closes(int(newest)):  # type: ignore[arg-type]
            return False
        # Prepared windows these records close go out now, not after their commit: the queries'
        # thread checks that none of the records not yet fed falls in them.
        unfed = [r.select("line", "ts") for r, _ in [*self._sealed, *self._rows]]
        self._early.append(self._thread.submit(runner.emit_prepared, unfed, parsed_at))
        return True

    def seal(self) -> Rows:
        rows, self._rows = self._rows, []
        self._sealed = rows
        return rows

    def committed(self, sealed: Any, position: int) -> None:
        """Hand records now in the lake to the queries' thread (committer thread only: it alone
        adds and removes jobs while the writer runs)."""
        self._feed(sealed, position)

    def tick(self, position: int) -> None:
        self._check_jobs()  # forget finished runs (a failed one re-raises here)
        if not self._jobs:  # queries still running will look at the clock themselves
            self._feed([], position)

    def _feed(self, rows: Rows, position: int) -> None:
        runner = self.runner
        if runner is None:
            return
        self._check_jobs()
        while len(self._jobs) >= _QUERY_BACKLOG:  # the queries fall behind: wait for them
            self._jobs.popleft().result()
        self._jobs.append(self._thread.submit(runner.feed, rows, position, time.time()))

    def needed_offset(self) -> int | None:
        return self.runner.min_offset() if self.runner is not None else None

    def check(self) -> None:
        if self._jobs and self._jobs[0].done():
            failed = self._jobs[0].exception()  # looked at, not taken: the committer's
            if failed is not None:
                raise failed
        while self._early and self._early[0].done():
            self._early.popleft().result()  # a failed early emission restarts the writer

    def _check_jobs(self, wait: bool = False) -> None:
        while self._jobs and (wait or self._jobs[0].done()):
            self._jobs.popleft().result()

    def reset(self) -> None:
        for jobs in (self._jobs, self._early):
            while jobs:
                with contextlib.suppress(Exception):
                    jobs.popleft().result()
        self._rows, self._sealed = [], []

    def finish(self) -> None:
        self._check_jobs(wait=True)
        while self._early:
            self._early.popleft().result()

    def close(self) -> None:
        self._thread.shutdown(wait=False)
