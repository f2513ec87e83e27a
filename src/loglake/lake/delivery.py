"""Delivery: moves one stream's records from its durable log into the lake, exactly once.

Like Firehose, records are buffered and committed when ``buffer_seconds`` have passed or
``buffer_records`` are waiting. Each Iceberg commit carries, in its snapshot summary, the stream offset
it covers (``loglake.offset.<stream>``), so the commit and the consumer position move together. On
start, delivery reads that offset back from each target table's latest snapshot and resumes there:
records before it are already in the lake (never written twice), records after it are re-read from
the log (never lost). Records are single lines; their ``line`` column holds their stream offset.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

from loglake.errors import is_transient
from loglake.formats import detect_format, get_format
from loglake.formats.base import LineBatch
from loglake.formats.lines import decode

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

    from loglake.analytics.runner import QueryRunner
    from loglake.config import Config, StreamConfig
    from loglake.formats.base import Format
    from loglake.lake.writer import TableWriter
    from loglake.stream.local import LocalLog, Records

log = logging.getLogger(__name__)

_READ_RECORDS = 50_000
_TICK_S = 1.0  # an idle stream's queries look at the clock this often
_QUERY_BACKLOG = 30  # commits whose query runs may wait; beyond, the committer waits for them
_PARSE_INTERVAL_S = 0.25  # batches parsed at most this often when records trickle in
_RETRY_FIRST_S = 1.0  # back-off after a failed delivery, doubling up to _RETRY_MAX_S
_RETRY_MAX_S = 30.0
# Commits between snapshot expiries: every commit copies the table metadata, whose size grows with
# the snapshots kept (pyiceberg deep-copies it), so expiring often keeps commits cheap.
_EXPIRE_EVERY = 10
_ORPHANS_EVERY_S = 300.0  # seconds between removals of unreferenced files (they wait 10 min anyway)
_COMPACT_EVERY = 10  # commits between looks for partitions with many small files to compact
_MAINTAIN_IDLE_S = 30.0  # a maintenance pass at least this often while commits happen
_COMPACT_MAX_LAG = 100_000  # records behind the log's end above which compaction waits
_DETECT_LINES = (
    2000  # auto streams: detect the format from this many lines of a batch, as ingest does
)


def offset_property(stream: str) -> str:
    """Snapshot-summary key holding the next stream offset a table's data covers."""
    return f"loglake.offset.{stream}"


def default_table(stream: str) -> str:
    """``logs.<stream>`` with non-alphanumerics turned into ``_`` (the AWS API's default)."""
    return "logs." + re.sub(r"[^0-9a-zA-Z]", "_", stream)


def committed_offset(table: Table, stream: str) -> int | None:
    """The offset recorded by the latest snapshot of ``table`` that came from ``stream``."""
    key = offset_property(stream)
    best: tuple[int, int] | None = None
    for snap in table.snapshots():
        summary = snap.summary
        value = summary.additional_properties.get(key) if summary is not None else None
        sequence = snap.sequence_number or 0
        if value is not None and (best is None or sequence > best[0]):
            best = (sequence, int(value))
    return best[1] if best else None


@dataclass
class DeliveryStats:
    """Counters of one stream's delivery (exposed as metrics later)."""

    delivered: int = 0
    rejected: int = 0
    commits: int = 0
    last_commit_seconds: float = 0.0
    compacted_files: int = 0
    compactions_deferred: int = 0  # passes skipped because delivery was behind
    removed_files: int = 0  # files no snapshot references any more, deleted
    removed_bytes: int = 0
    position: int = 0
    errors: list[str] = field(default_factory=list)


class Delivery:
    """The consumer thread of one stream: log → parse → enrich → Iceberg commits with offsets."""

    def __init__(
        self,
        config: Config,
        name: str,
        stream: StreamConfig,
        log: LocalLog,
        catalog: Future[Catalog],
    ):
        self.config = config
        self.name = name
        self.stream = stream
        self.log = log
        self._catalog = catalog
        self._fixed: Format | None = None
        if stream.format != "auto":
            self._fixed = get_format(stream.format, config.formats)
        self.stats = DeliveryStats()
        self._stats_lock = threading.Lock()  # counters are updated by delivery and committer
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"loglake-deliver-{name}", daemon=True
        )
        # Compaction and snapshot expiry run in their own thread so delivery never waits for them;
        # commits to a table (delivery's and maintenance's) take turns under this lock, and the
        # heavy part of compaction (reading and writing Parquet) runs outside it.
        self._commit_lock = threading.RLock()
        self._maintain_due = threading.Event()
        self._maintainer = threading.Thread(
            target=self._maintain, name=f"loglake-maintain-{name}", daemon=True
        )
        self._committer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"loglake-commit-{name}"
        )
        self._inflight: Future[None] | None = None  # the commit being written, if any
        # Continuous queries run in a thread of their own after each commit, so their SQL (which
        # can take seconds over a busy minute) never holds up the next commit.
        self._query_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"loglake-queries-{name}"
        )
        self._query_jobs: deque[Future[None]] = deque()  # feeds, submitted by the committer
        self._early_jobs: deque[Future[None]] = deque()  # emit_prepared, by the delivery thread
        self.runner: QueryRunner | None = None  # continuous queries reading this stream
        # What they need of records parsed since the last commit, with the time of the parse.
        self._query_rows: list[tuple[pl.DataFrame, float]] = []
        self._inflight_rows: list[tuple[pl.DataFrame, float]] = []  # those of the last commit
        self._ticked_at = time.monotonic()
        self._window_due = False
        self._expired_at = 0  # stats.commits at the last snapshot expiry
        self._orphans_at = time.monotonic()  # last removal of unreferenced files
        self._writers: dict[str, TableWriter] = {}
        self._committed: dict[str, int] = {}
        self._enrichers: dict[str, object] = {}
        self.ready = threading.Event()

    @property
    def table(self) -> str:
        if self.stream.table:
            return self.stream.table
        if self._fixed is not None and self.stream.format != "auto":
            return self._fixed.default_table
        return default_table(self.name)

    def start(self) -> None:
        self._thread.start()
        self._maintainer.start()

    @property
    def alive(self) -> bool:
        """False once a started delivery or maintenance thread has ended without being stopped."""
        if self._stop.is_set():
            return True
        started = [t for t in (self._thread, self._maintainer) if t.ident is not None]
        return all(t.is_alive() for t in started)

    def stop(self, timeout: float = 30.0) -> None:
        """Deliver and commit what the log holds now, then stop. Called on graceful shutdown.

        A compaction still writing is abandoned (its files were never committed: no row is lost).
        """
        self._stop.set()
        self._maintain_due.set()
        self._thread.join(timeout)
        self._maintainer.join(timeout)
        self._committer.shutdown(wait=False)
        self._query_thread.shutdown(wait=False)

    def add_query(self, name: str, config: Config) -> None:
        """Start the continuous query ``name`` of ``config`` on this stream (from the next records).

        Runs in the queries' thread, between two runs, so it never races a running query.
        """
        self.config = config
        self._query_thread.submit(self._add_query, name, config).result()

    def _add_query(self, name: str, config: Config) -> None:
        from loglake.analytics.runner import QueryRunner

        if self.runner is None:
            runner = QueryRunner(config, self.name, self.table, self._catalog, self._commit_lock)
            self.runner = runner  # delivery collects event times for it from now on
        else:
            self.runner.add(name, config)

    def remove_query(self, name: str, config: Config) -> None:
        """Stop the continuous query ``name``; its results table stays."""
        self.config = config
        if self.runner is not None:
            self._query_thread.submit(self.runner.remove, name).result()

    # -- the loop --------------------------------------------------------------------------------

    def _writer(self, table: str) -> TableWriter:
        """The writer of ``table`` (which is created from the first rows written to it)."""
        w = self._writers.get(table)
        if w is None:
            w = self._writers[table] = self._make_writer(table)
        return w

    def _make_writer(self, table: str) -> TableWriter:
        from loglake.lake.writer import TableWriter, load_existing

        catalog = self._catalog.result()
        t = load_existing(catalog, table)
        if t is not None:
            self._committed.setdefault(table, committed_offset(t, self.name) or 0)
        return TableWriter(
            lambda: (catalog, t),
            table,
            10**12,
            sort_by=_time_column(table),
            commit_lock=self._commit_lock,
            partition=self.config.table(table).partition,
        )

    def _resume_position(self) -> int:
        """Where to start reading: the lowest offset any of our tables has not committed yet."""
        from loglake.lake.rejected import REJECTED_TABLE

        catalog = self._catalog.result()
        offsets = []
        for table in (self.table, REJECTED_TABLE):
            if catalog.table_exists(table):
                value = committed_offset(catalog.load_table(table), self.name)
                self._committed[table] = value or 0
                offsets.append(value or 0)
            else:
                self._committed[table] = 0
                offsets.append(0)
        if self.config.queries and any(q.stream == self.name for q in self.config.queries.values()):
            from loglake.analytics.runner import QueryRunner

            if self.runner is not None:
                self.runner.close()
            # A fresh runner restored from the lake: after a failure its state is the committed one.
            self.runner = QueryRunner(
                self.config, self.name, self.table, self._catalog, self._commit_lock
            )
            needed = self.runner.resume()
            if needed is not None:
                offsets.append(needed)
        return max(min(offsets), self.log.start_offset)

    def _run(self) -> None:
        """Deliver until stopped; after an error, start over from the committed offsets.

        A failed read, parse or commit leaves nothing half-visible (uncommitted files are orphans
        for maintenance to delete), so the safe recovery is to drop the writers' state and resume
        from what the lake holds, after a back-off: nothing is lost and nothing is written twice.
        """
        backoff = _RETRY_FIRST_S
        while True:
            try:
                self._deliver_until_stopped()
                break
            except BaseException as exc:
                # Also a library's panic (pyo3's PanicException is a BaseException): the thread
                # must not die on it; only interpreter shutdown ends it.
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                reason = f"{type(exc).__name__}: {exc}"
                log.error(
                    "stream %s: delivery failed (%s); retrying from the last commit in %.0f s",
                    self.name,
                    reason,
                    backoff,
                    exc_info=True,
                    extra={"fields": {"stream": self.name, "table": self.table, "reason": reason}},
                )
                self.stats.errors.append(f"delivery failed: {reason}")
                del self.stats.errors[:-10]
                # Let a commit in flight finish or fail first; either way the restart resumes from
                # what the lake holds.
                with contextlib.suppress(Exception):
                    self._await_commit()
                while self._query_jobs:
                    with contextlib.suppress(Exception):
                        self._query_jobs.popleft().result()
                while self._early_jobs:
                    with contextlib.suppress(Exception):
                        self._early_jobs.popleft().result()
                self._query_rows, self._inflight_rows = [], []
                for writer in self._writers.values():
                    writer.close()
                self._writers.clear()
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, _RETRY_MAX_S)
        for w in self._writers.values():
            w.close()

    def _deliver_until_stopped(self) -> None:
        position = self._resume_position()
        self.stats.position = position
        self.ready.set()
        pending = 0
        last_commit = last_parse = time.monotonic()
        while True:
            if self._inflight is not None and self._inflight.done():
                self._await_commit()  # a failed commit surfaces here even when no records come
            if self._query_jobs and self._query_jobs[0].done():
                failed = self._query_jobs[0].exception()  # looked at, not taken: committer's
                if failed is not None:
                    raise failed
            while self._early_jobs and self._early_jobs[0].done():
                self._early_jobs.popleft().result()  # a failed early emission restarts delivery
            stopping = self._stop.is_set()
            if not stopping:
                self.log.wait(position, timeout=0.1)
                # Parse at most every _PARSE_INTERVAL_S unless a full read is waiting: each parse
                # has a fixed cost (query plan, regex compilation) that a trickle of small batches
                # would pay many times a second.
                delay = last_parse + _PARSE_INTERVAL_S - time.monotonic()
                if delay > 0 and self.log.durable_offset - position < _READ_RECORDS:
                    self._stop.wait(delay)
            records = self.log.read_records(position, max_records=_READ_RECORDS)
            if len(records):
                last_parse = time.monotonic()
                pending += self._deliver(records)
                position = records.end
            due = time.monotonic() - last_commit >= self.stream.buffer_seconds
            if self._window_due:  # a continuous query's window just closed: commit now
                due, self._window_due = True, False
            if pending and (due or pending >= self.stream.buffer_records or stopping):
                self._commit(position)
                pending = 0
                last_commit = time.monotonic()
            elif (
                self.runner is not None
                and not pending
                and self._inflight is None
                and time.monotonic() - self._ticked_at >= _TICK_S
            ):
                # No records: the queries' idle timeouts still close windows by the clock.
                self._ticked_at = time.monotonic()
                self._inflight = self._committer.submit(self._tick_queries, position)
            if stopping and not len(records):
                break
        self._await_commit()
        self._check_queries(wait=True)
        while self._early_jobs:
            self._early_jobs.popleft().result()

    def _deliver(self, records: Records) -> int:
        from loglake.formats.step import naive_utc
        from loglake.lake.rejected import REJECTED_TABLE

        raw = records.values
        batch = LineBatch(
            text=decode(raw), raw=raw, first_line=records.first, source=f"stream:{self.name}"
        )
        fmt = self._fixed or detect_format(
            batch.text.head(_DETECT_LINES), timezone=self.config.ingest.syslog_timezone
        )
        at = pl.lit(time.time_ns() // 1000).cast(pl.Datetime("us")).alias("ingested_at")
        rows = 0
        if fmt is None:
            reasons = pl.Series(["format not recognized"] * len(batch), dtype=pl.String)
            rejected = batch.rejected(pl.Series([True] * len(batch)), reasons)
            parsed = None
        else:
            result = fmt.parse(batch)
            rejected, parsed = result.rejected, result.parsed
        if self.runner is not None and parsed is not None and parsed.height:
            # Event times (and session keys) for the continuous queries, fed after the commit.
            self._query_rows.append(
                (parsed.select("line", "ts", *self.runner.key_columns), time.time())
            )
            newest = parsed.get_column("ts").cast(pl.Datetime("us")).cast(pl.Int64).max()
            if newest is not None and self.runner.window_closes(int(newest)):  # type: ignore[arg-type]
                self._window_due = True
                # Prepared windows these records close go out now, not after their commit: the
                # queries' thread checks that none of the records not yet fed falls in them.
                unfed = [rows.select("line", "ts") for rows, _ in self._unfed_rows()]
                runner = self.runner
                parsed_at = self._query_rows[-1][1]
                self._early_jobs.append(
                    self._query_thread.submit(runner.emit_prepared, unfed, parsed_at)
                )
        if parsed is not None and parsed.height:
            parsed = parsed.filter(pl.col("line") >= self._committed.get(self.table, 0))
        if parsed is not None and parsed.height:
            for name in fmt.enrich if fmt else ():
                if name not in self._enrichers:
                    from loglake.enrich import get_enricher

                    self._enrichers[name] = get_enricher(name)
                parsed = self._enrichers[name].enrich(parsed)  # type: ignore[attr-defined]
            parsed = naive_utc(parsed).select(
                pl.exclude("line"), pl.col("line"), pl.lit(batch.source).alias("source"), at
            )
            # Records that do not fit the table (a value of another type than its column's) are
            # rejected like unparsable ones: one drifting record must never hold up the stream.
            refused = self._writer(self.table).add(parsed)
            if refused.height:
                rejected = pl.concat([rejected, batch.rejected_lines(refused)])
            rows += parsed.height - refused.height
        if rejected.height:
            rejected = rejected.filter(pl.col("line") >= self._committed.get(REJECTED_TABLE, 0))
        if rejected.height:
            name = fmt.name if fmt else "unrecognized"
            self._reject(rejected, name)
            rows += rejected.height
        return rows

    def _reject(self, rejected: pl.DataFrame, format_name: str) -> None:
        """Queue rejected records (``line``, ``raw``, ``reason``) for ``logs.rejected``."""
        from loglake.errors import LakeError
        from loglake.lake.rejected import REJECTED_TABLE, rejected_frame

        source = f"stream:{self.name}"
        frame = rejected_frame(rejected, source, format_name, self.table, _now_naive())
        if self._writer(REJECTED_TABLE).add(frame).height:
            raise LakeError(
                f"internal error: {REJECTED_TABLE} refused rejected records; does its schema "
                "still match loglake's?"
            )

    def _maintain(self) -> None:
        """The maintenance thread: compaction, snapshot expiry and removal of unreferenced files."""
        passed_at = 0  # stats.commits at the last pass
        while True:
            # Every _COMPACT_EVERY commits, or after a quiet spell if commits came since the last
            # pass (compaction deferred during a burst then catches up once the burst is over).
            kicked = self._maintain_due.wait(_MAINTAIN_IDLE_S)
            self._maintain_due.clear()
            if self._stop.is_set():
                return
            if not kicked and self.stats.commits == passed_at:
                continue
            passed_at = self.stats.commits
            try:
                self._compact()
                if self.stats.commits - self._expired_at >= _EXPIRE_EVERY:
                    self._expire()
            except (Exception, pl.exceptions.PanicException) as exc:  # report, never stop delivery
                log.warning(
                    "stream %s: maintenance failed: %s",
                    self.name,
                    exc,
                    exc_info=True,
                    extra={"fields": {"stream": self.name, "reason": str(exc)}},
                )
                self.stats.errors.append(f"maintenance failed: {exc}")
                del self.stats.errors[:-10]

    def _compact(self) -> None:
        """Merge partitions' small files; each merge is written outside the commit lock."""
        from loglake.lake.maintenance import commit_replace, plan_compaction, write_merged
        from loglake.query.plan import refresh_plans

        catalog = self._catalog.result()
        for name, writer in list(self._writers.items()):
            if not writer.exists:
                continue  # created with its first rows, not written yet
            time_column = _time_column(name)
            with self._commit_lock:
                # A table object of its own: pyiceberg caches lazily inside table metadata, so
                # the writer's object, read by the committer thread meanwhile, is not copied here.
                table = catalog.load_table(name)
            for files in plan_compaction(table):
                if self._stop.is_set():
                    return
                if self.log.durable_offset - self.stats.position > _COMPACT_MAX_LAG:
                    # Ingest first: while delivery is behind, compaction (which rewrites every
                    # row once more) waits for a later pass instead of taking CPU from it.
                    self.stats.compactions_deferred += 1
                    return
                new_files = write_merged(catalog, table, name, files, time_column)
                with self._commit_lock:
                    # Only this thread removes files, so the planned ones are all still live.
                    table = commit_replace(catalog.load_table(name), files, new_files)
                    writer.table = catalog.load_table(name)
                    refresh_plans(self.config, {name: table})
                self.stats.compacted_files += len(files)

    def _expire(self) -> None:
        """Expire old snapshots, then delete the files no remaining snapshot references."""
        from loglake.lake.maintenance import expire_snapshots, remove_orphans
        from loglake.query.plan import refresh_plans

        catalog = self._catalog.result()
        self._expired_at = self.stats.commits
        orphans_due = time.monotonic() - self._orphans_at >= _ORPHANS_EVERY_S
        for name, writer in list(self._writers.items()):
            if not writer.exists:
                continue
            with self._commit_lock:
                expire_snapshots(catalog.load_table(name))  # see _compact: an object of its own
                table = catalog.load_table(name)
                writer.table = catalog.load_table(name)
                refresh_plans(self.config, {name: table})
            if orphans_due:
                deleted, freed = remove_orphans(table)
                self.stats.removed_files += deleted
                self.stats.removed_bytes += freed
        if orphans_due:
            self._orphans_at = time.monotonic()

    def _commit(self, position: int) -> None:
        """Hand the rows parsed up to ``position`` to the committer thread and go on parsing.

        Writing Parquet and committing take a good part of a second at high rates; meanwhile this
        thread parses the next records. One commit is in flight at most: the next waits for it
        (and re-raises its error here, which restarts delivery from the committed offsets).
        """
        sealed = {table: writer.seal() for table, writer in self._writers.items()}
        query_rows, self._query_rows = self._query_rows, []
        self._inflight_rows = query_rows
        self._await_commit()
        self._inflight = self._committer.submit(self._commit_sealed, sealed, position, query_rows)
        self._ticked_at = time.monotonic()

    def _unfed_rows(self) -> list[tuple[pl.DataFrame, float]]:
        """Rows parsed for the queries that may not have been fed to them yet: those of the
        last commit handed to the committer (it feeds them once committed) and those since."""
        return [*self._inflight_rows, *self._query_rows]

    def _tick_queries(self, position: int) -> None:
        self._check_queries()  # forget finished runs (a failed one re-raises here)
        if not self._query_jobs:  # queries still running will look at the clock themselves
            self._feed_queries([], position)

    def _feed_queries(self, rows: list[tuple[pl.DataFrame, float]], position: int) -> None:
        """Hand records now in the lake to the continuous queries' thread (in commit order).

        Committer thread only (it alone adds and removes jobs while delivery runs)."""
        assert self.runner is not None
        self._check_queries()
        while len(self._query_jobs) >= _QUERY_BACKLOG:  # the queries fall behind: wait for them
            self._query_jobs.popleft().result()
        runner = self.runner
        self._query_jobs.append(self._query_thread.submit(runner.feed, rows, position, time.time()))

    def _write_rows(
        self, writer: TableWriter, frames: list[pl.DataFrame]
    ) -> tuple[list[DataFile], pl.DataFrame]:
        """Write ``frames`` as data files (uncommitted); also the rows that cannot be written.

        Rows are conformed to the table when they are added, so a write fails for its data only
        through a bug or a limit of the file format. Such a failure is not retried (it would fail
        again on every retry and stall the stream): the rows are split in halves until the rows
        that fail alone are found; they come back as ``line`` and ``reason``, all others are
        written. A transient error (disk, catalog) is raised, for delivery to retry.
        """
        try:
            return writer.write_frames(frames), _NO_ROWS
        except Exception as exc:
            if is_transient(exc):
                raise
            rows = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
            log.warning(
                "stream %s: %d records cannot be written to %s (%s); looking for the records "
                "that fail, to reject them",
                self.name,
                rows.height,
                writer.name,
                exc,
                extra={"fields": {"stream": self.name, "table": writer.name, "reason": str(exc)}},
            )
            return self._isolate(writer, rows, exc, [_ISOLATE_WRITES])

    def _isolate(
        self, writer: TableWriter, rows: pl.DataFrame, error: Exception, budget: list[int]
    ) -> tuple[list[DataFile], pl.DataFrame]:
        """Write ``rows`` (whose write as a whole failed with ``error``) by halves.

        At most ``budget[0]`` more writes are tried: when most rows fail (a problem of the whole
        batch, not of a few records), the rows left are rejected together instead of one write
        per row."""
        if rows.height <= 1 or budget[0] <= 0:
            reason = f"cannot be written to {writer.name}: {type(error).__name__}: {error}"
            refused = pl.DataFrame(
                {"line": rows.get_column("line").cast(pl.Int64), "reason": [reason] * rows.height},
                schema={"line": pl.Int64, "reason": pl.String},
            )
            return [], refused
        files: list[DataFile] = []
        refused_parts: list[pl.DataFrame] = []
        half = rows.height // 2
        for part in (rows.slice(0, half), rows.slice(half)):
            budget[0] -= 1
            try:
                files += writer.write_frames([part])
            except Exception as exc:
                if is_transient(exc):
                    raise
                more, refused = self._isolate(writer, part, exc, budget)
                files += more
                refused_parts.append(refused)
        return files, pl.concat(refused_parts) if refused_parts else _NO_ROWS

    def _refused_records(self, refused: pl.DataFrame) -> pl.DataFrame:
        """Rejected records (for ``logs.rejected``) of rows no data file could hold, their raw
        bytes read back from the stream's log (not trimmed before this commit)."""
        from loglake.lake.rejected import REJECTED_TABLE, rejected_frame

        refused = refused.filter(pl.col("line") >= self._committed.get(REJECTED_TABLE, 0))
        raw = [
            self.log.read_records(line, max_records=1).values[0].as_py()
            for line in refused.get_column("line").to_list()
        ]
        records = refused.select("line", pl.Series("raw", raw, dtype=pl.Binary), pl.col("reason"))
        source = f"stream:{self.name}"
        fmt = self._fixed.name if self._fixed else "auto"
        return rejected_frame(records, source, fmt, self.table, _now_naive())

    def _check_queries(self, wait: bool = False) -> None:
        """Re-raise a failed query run here (delivery then restarts from the committed state)."""
        while self._query_jobs and (wait or self._query_jobs[0].done()):
            self._query_jobs.popleft().result()

    def _await_commit(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()

    def _commit_sealed(
        self,
        sealed: dict[str, list[pl.DataFrame]],
        position: int,
        query_rows: list[tuple[pl.DataFrame, float]] | None = None,
    ) -> None:
        """The committer thread: write the sealed rows as Parquet, commit them with the offset,
        then run the continuous queries over what is now in the lake."""
        from loglake.lake.rejected import REJECTED_TABLE
        from loglake.query.plan import extend_plan

        started = time.perf_counter()
        props = {offset_property(self.name): str(position)}
        # Parquet is written before taking the lock: only the commits themselves are serialized.
        # Data tables first, so records no data file can hold become rejected records of this
        # same commit instead of failing it again on every retry.
        writers = {table: self._writers[table] for table in sealed}
        written: dict[str, list[DataFile]] = {}
        unwritable: list[pl.DataFrame] = []
        for table, frames in sealed.items():
            if table != REJECTED_TABLE:
                written[table], refused = self._write_rows(writers[table], frames)
                if refused.height:
                    unwritable.append(self._refused_records(refused))
        if unwritable and REJECTED_TABLE not in writers:
            # Only the delivery thread registers writers; this one serves this commit only.
            writers[REJECTED_TABLE] = self._make_writer(REJECTED_TABLE)
        if REJECTED_TABLE in writers:
            frames = [*sealed.get(REJECTED_TABLE, []), *unwritable]
            written[REJECTED_TABLE] = writers[REJECTED_TABLE].write_frames(frames)
        # Rejected lines first: a crash between the two commits re-reads from the data table's
        # offset, and the rejected table's own offset keeps its lines from being added twice.
        for table in sorted(writers, key=lambda t: t != REJECTED_TABLE):
            writer = writers[table]
            files = written[table]
            if not files:
                continue  # nothing for this table (which may not even exist yet)
            with self._commit_lock:
                before = writer.table.metadata_location
                if writer.commit(props, files):
                    self._committed[table] = position
                    # Counted once committed: a commit that fails and is retried counts once.
                    rows = sum(f.record_count for f in files)
                    with self._stats_lock:
                        if table == REJECTED_TABLE:
                            self.stats.rejected += rows
                        else:
                            self.stats.delivered += rows
                    # Keep the query plan cache current at a cost that does not grow with the table.
                    extend_plan(self.config, table, writer.table, before, writer.last_committed)
        for table, writer in writers.items():
            if self._writers.get(table) is not writer:
                writer.close()
        self.stats.commits += 1
        self.stats.position = position
        self.stats.last_commit_seconds = time.perf_counter() - started
        log.debug(
            "stream %s: committed up to offset %d in %.3f s",
            self.name,
            position,
            self.stats.last_commit_seconds,
            extra={
                "fields": {
                    "stream": self.name,
                    "offset": position,
                    "seconds": round(self.stats.last_commit_seconds, 4),
                }
            },
        )
        trim_at = position
        if self.runner is not None:
            self._feed_queries(query_rows or [], position)
            needed = self.runner.min_offset()
            if needed is not None:
                trim_at = min(trim_at, needed)
        # Every table has committed past `trim_at`: the log no longer needs what lies before it.
        self.log.trim(trim_at)
        if self.stats.commits % _COMPACT_EVERY == 0:
            self._maintain_due.set()


_ISOLATE_WRITES = 256  # writes tried to find the rows of a batch that cannot be written
_NO_ROWS = pl.DataFrame(schema={"line": pl.Int64, "reason": pl.String})


def _time_column(table: str) -> str:
    """The column a table is sorted and partitioned by: rejected records by their arrival."""
    return "ingested_at" if table.endswith(".rejected") else "ts"


def _now_naive() -> datetime:

    return datetime.now(UTC).replace(tzinfo=None)
