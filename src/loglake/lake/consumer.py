"""The lake writer: the stream consumer that delivers a stream's records into the lake, exactly once.

Like Firehose, records are buffered and committed when ``buffer_seconds`` have passed or
``buffer_records`` are waiting. Each Iceberg commit carries, in its snapshot summary, the stream offset
it covers (``loglake.offset.<stream>``), so the commit and the consumer position move together. On
resume, the consumer reads that offset back from each target table's latest snapshot and starts
there: records before it are already in the lake (never written twice), records after it are read
again from the log (never lost). Records are single lines; their ``line`` column holds their offset.

Per batch: the shared step (formats/step.py: parse, enrich, normalise, rejects), rows conformed to
their table (refused rows become rejected records), rejected records for ``logs.rejected``. Formats
read their options from ``[ingest]`` as batch ingest does (``syslog_timezone``, ``json_ts_field``).

A stream of ``format = "auto"`` detects formats per group of lines, as batch ingest does
(formats/mixed.py): the format that parsed most of the previous batch parses each batch first, and
the lines it leaves go to the other formats. The stream's table takes the rows of one family of
formats, its *owner* (the formats sharing a default table: the access-log formats, the syslog
ones...), the family that parsed most of the first batch the stream delivered, remembered in the
table's snapshots (``loglake.owner.<stream>``) so it stays the same across restarts; rows of other
formats go to their own default tables (``logs.syslog``...), nothing that parses is rejected. Each
table of a commit gets the offset; the stream's own table is committed last, so on resume its
offset is one every other table covers too, and each table skips the rows it already holds. Commits
run in a committer thread of their own so the next batch is parsed meanwhile; they take turns with
every other writer of the table under its lock (lake/tables.py), whose post-commit hooks keep the
query plan cache and the maintenance schedule current. Whoever else wants the parsed records (the
continuous queries) plugs in through :class:`DeliveryHooks`: the lake knows nothing of them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from loglake.errors import LakeError, is_transient
from loglake.formats import get_format
from loglake.formats.base import LineBatch
from loglake.formats.lines import decode
from loglake.formats.mixed import Detector
from loglake.formats.step import BatchStep, normalise
from loglake.lake.rejected import REJECTED_TABLE, rejected_frame, time_column
from loglake.lake.writer import TableWriter, latest_property, load_existing

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

    from loglake.config import Config, StreamConfig
    from loglake.formats.base import Format
    from loglake.lake.maintenance import MaintenanceSchedule
    from loglake.lake.tables import Tables
    from loglake.stream.local import Records
    from loglake.stream.log import StreamLog

log = logging.getLogger(__name__)

_TICK_S = 1.0  # an idle stream's hooks (the queries) look at the clock this often


def offset_property(stream: str) -> str:
    """Snapshot-summary key holding the next stream offset a table's data covers."""
    return f"loglake.offset.{stream}"


def owner_property(stream: str) -> str:
    """Snapshot-summary key holding the default table of the formats whose rows an ``auto``
    stream writes to its own table (the others go to their default tables)."""
    return f"loglake.owner.{stream}"


def format_options(config: Config) -> dict[str, object]:
    """The options formats take from ``[ingest]``, for streams as for batch ingest."""
    return {"timezone": config.ingest.syslog_timezone, "ts_field": config.ingest.json_ts_field}


def _newest_property(table: Table, key: str) -> str | None:
    """The value of ``key`` in the summary of the newest snapshot of ``table`` that has it."""
    best: tuple[int, str] | None = None
    for snap in table.snapshots():
        summary = snap.summary
        value = summary.additional_properties.get(key) if summary is not None else None
        sequence = snap.sequence_number or 0
        if value is not None and (best is None or sequence > best[0]):
            best = (sequence, value)
    return best[1] if best else None


def default_table(stream: str) -> str:
    """``logs.<stream>`` with non-alphanumerics turned into ``_`` (the AWS API's default)."""
    return "logs." + re.sub(r"[^0-9a-zA-Z]", "_", stream)


def committed_offset(table: Table, stream: str) -> int | None:
    """The offset recorded by the latest snapshot of ``table`` that came from ``stream``."""
    return latest_property(table.snapshots(), offset_property(stream))


@dataclass
class DeliveryStats:
    """Counters of one stream's lake delivery (on /metrics)."""

    delivered: int = 0  # rows committed to the stream's table(s)
    rejected: int = 0  # rows committed to logs.rejected
    commits: int = 0
    last_commit_seconds: float = 0.0
    position: int = 0  # every record below this offset is committed


class DeliveryHooks(Protocol):
    """What a listener to the lake writer of a stream (the continuous queries) is told.

    ``parsed`` runs in the consumer's thread; ``committed`` and ``tick`` in its committer thread,
    one at a time and in commit order. A hook that raises fails the consumer, which resumes from
    the lake (the hooks' :meth:`resume` then restores their own committed state).
    """

    @property
    def active(self) -> bool:
        """Whether anything listens now (otherwise parsed rows are not collected)."""
        ...

    @property
    def key_columns(self) -> list[str]:
        """Columns wanted from parsed rows besides ``line`` and ``ts``."""
        ...

    def resume(self) -> int | None:
        """Restore state from the lake; the lowest offset still needed (None: no need)."""
        ...

    def parsed(self, rows: pl.DataFrame) -> bool:
        """Rows just parsed (``line``, ``ts``, the key columns). True: commit now (a window
        closed), rather than at the end of the buffer interval."""
        ...

    def seal(self) -> Any:
        """A commit starts: take the rows parsed since the last one (given back to committed)."""
        ...

    def committed(self, sealed: Any, position: int) -> None:
        """Everything below ``position`` is in the lake; ``sealed`` is what :meth:`seal` gave."""
        ...

    def tick(self, position: int) -> None:
        """No records for a while: look at the clock (idle timeouts close windows)."""
        ...

    def needed_offset(self) -> int | None:
        """The lowest offset the hooks still need from the log (None: none)."""
        ...

    def check(self) -> None:
        """Raise a failure of the hooks' background work."""
        ...

    def reset(self) -> None:
        """After a failure: wait for background work, drop what was not fed."""
        ...

    def finish(self) -> None:
        """Stopping, after the last commit: wait for background work."""
        ...

    def close(self) -> None: ...


class LakeConsumer:
    """The lake writer of one stream (a :class:`loglake.stream.consumer.Consumer`)."""

    name = "lake"

    def __init__(
        self,
        config: Config,
        stream_name: str,
        stream: StreamConfig,
        log: StreamLog,
        catalog: Future[Catalog],
        tables: Tables,
        *,
        maintenance: MaintenanceSchedule | None = None,
        hooks: DeliveryHooks | None = None,
        on_progress: Callable[[], None] = lambda: None,
    ):
        self.config = config
        self.stream_name = stream_name
        self.stream = stream
        self.log = log
        self.hooks = hooks
        self._catalog = catalog
        self._tables = tables
        self._maintenance = maintenance
        self._on_progress = on_progress
        self._fixed: Format | None = None
        options = format_options(config)
        if stream.format != "auto":
            self._fixed = get_format(stream.format, config.formats, **options)
        self._step = BatchStep(options)
        # auto: formats detected per group of lines, the previous batch's busiest tried first.
        self._detector = Detector(options, "format not recognized")
        self._main: Format | None = None
        self._owner: str | None = None  # auto: the default table of the stream table's formats
        self.stats = DeliveryStats()
        self._stats_lock = threading.Lock()  # counters are updated by two threads
        self._committer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"loglake-commit-{stream_name}"
        )
        self._inflight: Future[None] | None = None  # the commit being written, if any
        self._pending = 0  # rows taken since the last flush
        self._commit_now = False  # the hooks asked for a commit (a window closed)
        self._ticked_at = time.monotonic()
        self._writers: dict[str, TableWriter] = {}
        self._committed: dict[str, int] = {}
        # Per table, the stream's offset as the lake held it when last seen (None: no commit of
        # the stream yet): each commit lands only if it is still so (a fence against another
        # node committing the same records; lake/writer.py).
        self._fence: dict[str, int | None] = {}
        self._needed: int | None = None  # what the hooks need, as of the latest commit

    @property
    def table(self) -> str:
        if self.stream.table:
            return self.stream.table
        if self._fixed is not None:
            return self._fixed.default_table
        return default_table(self.stream_name)

    # -- the Consumer contract -------------------------------------------------------------------

    def resume(self) -> int:
        """The lowest offset a table of ours (or a hook) has not committed yet."""
        catalog = self._catalog.result()
        # One load per table (table_exists() would load it a first time just to answer).
        table = load_existing(catalog, self.table)
        data = committed_offset(table, self.stream_name) if table is not None else None
        rejects = load_existing(catalog, REJECTED_TABLE)
        rejected = committed_offset(rejects, self.stream_name) if rejects is not None else None
        self._fence = {self.table: data, REJECTED_TABLE: rejected}
        # Rejected records are committed before the data rows of the same records, so whatever
        # the data table covers, logs.rejected covers too (a stream that never rejected a record
        # has no offset there, and must not be taken as needing its whole log again).
        if data is not None:
            rejected = max(rejected or 0, data)
        self._committed = {self.table: data or 0, REJECTED_TABLE: rejected or 0}
        if self._fixed is None and self._owner is None:
            self._owner = self._stored_owner(catalog, table)
        position = min(self._committed.values())
        self.stats.position = max(position, self.log.start_offset)
        self._needed = None
        if self.hooks is not None:
            self._needed = self.hooks.resume()
            if self._needed is not None:
                position = min(position, self._needed)
        self._pending = 0
        return position

    def _stored_owner(self, catalog: Catalog, table: Table | None) -> str | None:
        """The owner an earlier run of this auto stream chose: from its table's snapshots, else
        from another format's table (a crash between the first commits, after another table's
        and before the stream table's, leaves it only there). None: it never committed."""
        key = owner_property(self.stream_name)
        owner = _newest_property(table, key) if table is not None else None
        if owner is not None:
            return owner
        from loglake.formats import DETECT_ORDER
        from loglake.lake.catalog import list_tables

        others = {self._detector.format(n).default_table for n in DETECT_ORDER} - {self.table}
        for name in sorted(others & set(list_tables(catalog))):
            other = load_existing(catalog, name)
            owner = _newest_property(other, key) if other is not None else None
            if owner is not None:
                return owner
        return None

    def take(self, records: Records) -> int:
        self._pending += self._deliver(records)
        return self._pending

    def due(self, pending: int, since_flush_s: float) -> bool:
        if self._commit_now:
            self._commit_now = False
            return True
        return since_flush_s >= self.stream.buffer_seconds or pending >= self.stream.buffer_records

    def flush(self, position: int) -> None:
        """Hand the rows taken up to ``position`` to the committer thread and go on parsing.

        Writing Parquet and committing take a good part of a second at high rates; meanwhile the
        runner's thread parses the next records. One commit is in flight at most: the next waits
        for it (and re-raises its error, which makes the runner resume from the lake).
        """
        sealed = {table: writer.seal() for table, writer in self._writers.items()}
        hooked = self.hooks.seal() if self.hooks is not None and self.hooks.active else None
        self._await_commit()
        self._inflight = self._committer.submit(self._commit_sealed, sealed, position, hooked)
        self._pending = 0
        self._ticked_at = time.monotonic()

    def idle(self, position: int) -> None:
        hooks = self.hooks
        if hooks is None or not hooks.active or self._inflight is not None:
            return
        if time.monotonic() - self._ticked_at >= _TICK_S:
            # No records: the hooks' idle timeouts still close windows by the clock.
            self._ticked_at = time.monotonic()
            self._inflight = self._committer.submit(hooks.tick, position)

    def check(self) -> None:
        if self._inflight is not None and self._inflight.done():
            self._await_commit()  # a failed commit surfaces here even when no records come
        if self.hooks is not None:
            self.hooks.check()

    def finish(self) -> None:
        self._await_commit()
        if self.hooks is not None:
            self.hooks.finish()

    def reset(self) -> None:
        # Let a commit in flight finish or fail first; either way resume() starts from the lake.
        try:
            self._await_commit()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        if self.hooks is not None:
            self.hooks.reset()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._pending = 0
        self._commit_now = False

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._committer.shutdown(wait=False)
        if self.hooks is not None:
            self.hooks.close()

    def committed(self) -> int | None:
        position = self.stats.position
        needed = self._needed
        return position if needed is None else min(position, needed)

    # -- one batch -------------------------------------------------------------------------------

    def _writer(self, table: str) -> TableWriter:
        """The writer of ``table`` (which is created from the first rows written to it)."""
        w = self._writers.get(table)
        if w is None:
            w = self._writers[table] = self._make_writer(table)
        return w

    def _make_writer(self, table: str) -> TableWriter:
        catalog = self._catalog.result()
        t = load_existing(catalog, table)
        if t is not None and table not in self._committed:
            self._committed[table] = committed_offset(t, self.stream_name) or 0
        if table not in self._fence:
            self._fence[table] = committed_offset(t, self.stream_name) if t is not None else None
        if self._maintenance is not None:
            self._maintenance.manage(table, time_column(table))
        return TableWriter(
            lambda: (catalog, t),
            table,
            10**12,
            sort_by=time_column(table),
            partition=self.config.table(table).partition,
            tables=self._tables,
        )

    def _deliver(self, records: Records) -> int:
        """Parse ``records`` into the writers' buffers; how many rows were queued."""
        raw = records.values
        # A log with offsets that are not dense (NATS) gives each record's: the batch numbers its
        # lines 0..n-1, and the rows get the records' offsets once parsed.
        offsets = records.offsets
        batch = LineBatch(
            text=decode(raw),
            raw=raw,
            first_line=records.first if offsets is None else 0,
            source=f"stream:{self.stream_name}",
        )
        groups, rejected, format_name = self._parse(batch, time.time_ns() // 1000)
        if offsets is not None:
            groups = [(table, _at_offsets(frame, offsets)) for table, frame in groups]
            rejected = _at_offsets(rejected, offsets)
        hooks = self.hooks
        own = [frame for table, frame in groups if table == self.table]
        if (
            hooks is not None
            and hooks.active
            and own
            # Event times (and session keys) of the stream table's rows for the hooks; True
            # when a window just closed.
            and hooks.parsed(_keys(own, ["line", "ts", *hooks.key_columns]))
        ):
            self._commit_now = True
        rows = 0
        for table, parsed in groups:
            parsed = parsed.filter(pl.col("line") >= self._committed_offset(table))
            if not parsed.height:
                continue
            # Records that do not fit the table (a value of another type than its column's) are
            # rejected like unparsable ones: one drifting record must never hold up the stream.
            refused = self._writer(table).add(parsed)
            if refused.height:
                if offsets is None:
                    rejected = pl.concat([rejected, batch.rejected_lines(refused)])
                else:
                    local = _at_offsets(refused, offsets, inverse=True)
                    more = _at_offsets(batch.rejected_lines(local), offsets)
                    rejected = pl.concat([rejected, more])
            rows += parsed.height - refused.height
        if rejected.height:
            rejected = rejected.filter(pl.col("line") >= self._committed.get(REJECTED_TABLE, 0))
        if rejected.height:
            self._reject(rejected, format_name)
            rows += rejected.height
        return rows

    def _parse(
        self, batch: LineBatch, at: int
    ) -> tuple[list[tuple[str, pl.DataFrame]], pl.DataFrame, str]:
        """Rows to store as (table, rows), the rejected lines, and the name of the format that
        parsed most (rejected lines are kept under it)."""
        if self._fixed is not None:
            step = self._step.run(batch, self._fixed, at)
            groups = [(self.table, step.rows)] if step.rows is not None and step.rows.height else []
            return groups, step.rejected, step.format_name
        split = self._detector.split(batch, self._main)
        busiest = split.busiest
        if busiest is not None:
            self._main = busiest
            if self._owner is None:
                self._owner = busiest.default_table
        out = []
        for group in split.groups:
            if not group.rows.height:
                continue
            fmt = group.format
            rows = normalise(self._step.enrich(fmt, group.rows), batch.source, at)
            out.append(
                (self.table if fmt.default_table == self._owner else fmt.default_table, rows)
            )
        return out, split.rejected, busiest.name if busiest is not None else "unrecognized"

    def _committed_offset(self, table: str) -> int:
        """The offset ``table`` holds this stream's records up to (read once from the lake)."""
        offset = self._committed.get(table)
        if offset is None:
            t = load_existing(self._catalog.result(), table)
            raw = committed_offset(t, self.stream_name) if t is not None else None
            offset = self._committed[table] = raw or 0
            self._fence.setdefault(table, raw)
        return offset

    def _reject(self, rejected: pl.DataFrame, format_name: str) -> None:
        """Queue rejected records (``line``, ``raw``, ``reason``) for ``logs.rejected``."""
        source = f"stream:{self.stream_name}"
        frame = rejected_frame(rejected, source, format_name, self.table, _now_naive())
        if self._writer(REJECTED_TABLE).add(frame).height:
            raise LakeError(
                f"internal error: {REJECTED_TABLE} refused rejected records; does its schema "
                "still match loglake's?"
            )

    # -- the committer thread --------------------------------------------------------------------

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
                self.stream_name,
                rows.height,
                writer.name,
                exc,
                extra={
                    "fields": {"stream": self.stream_name, "table": writer.name, "reason": str(exc)}
                },
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
        refused = refused.filter(pl.col("line") >= self._committed.get(REJECTED_TABLE, 0))
        raw = [self.log.read_at(line) for line in refused.get_column("line").to_list()]
        records = refused.select("line", pl.Series("raw", raw, dtype=pl.Binary), pl.col("reason"))
        source = f"stream:{self.stream_name}"
        fmt = self._fixed.name if self._fixed else "auto"
        return rejected_frame(records, source, fmt, self.table, _now_naive())

    def _await_commit(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()

    def _commit_sealed(
        self, sealed: dict[str, list[pl.DataFrame]], position: int, hooked: Any
    ) -> None:
        """Write the sealed rows as Parquet, commit them with the offset, tell the hooks, trim."""
        started = time.perf_counter()
        props = {offset_property(self.stream_name): str(position)}
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
            # Only the runner's thread registers writers; this one serves this commit only.
            writers[REJECTED_TABLE] = self._make_writer(REJECTED_TABLE)
        if REJECTED_TABLE in writers:
            frames = [*sealed.get(REJECTED_TABLE, []), *unwritable]
            written[REJECTED_TABLE] = writers[REJECTED_TABLE].write_frames(frames)
        # Rejected records first and the stream's own table last: a crash between commits
        # re-reads from the stream table's offset, and every other table's own offset keeps its
        # records from being added twice. Every data table's commit names the owner, so a
        # restart after a crash before the stream table's first commit keeps the same owner.
        owned = {**props, owner_property(self.stream_name): self._owner} if self._owner else props
        for table in sorted(writers, key=lambda t: (t != REJECTED_TABLE, t == self.table)):
            files = written[table]
            fence = (offset_property(self.stream_name), self._fence.get(table))
            if files and writers[table].commit(
                props if table == REJECTED_TABLE else owned, files, expect=fence
            ):
                self._committed[table] = self._fence[table] = position
                # Counted once committed: a commit that fails and is retried counts once.
                rows = sum(f.record_count for f in files)
                with self._stats_lock:
                    if table == REJECTED_TABLE:
                        self.stats.rejected += rows
                    else:
                        self.stats.delivered += rows
        for table, writer in writers.items():
            if self._writers.get(table) is not writer:
                writer.close()
        self.stats.commits += 1
        self.stats.position = position
        self.stats.last_commit_seconds = time.perf_counter() - started
        log.debug(
            "stream %s: committed up to offset %d in %.3f s",
            self.stream_name,
            position,
            self.stats.last_commit_seconds,
            extra={
                "fields": {
                    "stream": self.stream_name,
                    "offset": position,
                    "seconds": round(self.stats.last_commit_seconds, 4),
                }
            },
        )
        if self.hooks is not None and hooked is not None:
            self.hooks.committed(hooked, position)
        if self.hooks is not None:
            self._needed = self.hooks.needed_offset()
        self._on_progress()  # the log may drop what every consumer has committed past


def _keys(frames: list[pl.DataFrame], columns: list[str]) -> pl.DataFrame:
    """``columns`` of ``frames`` as one frame (null where a format has no such column)."""
    picked = [
        f.select(pl.col(c) if c in f.columns else pl.lit(None).alias(c) for c in columns)
        for f in frames
    ]
    return picked[0] if len(picked) == 1 else pl.concat(picked, how="diagonal_relaxed")


_ISOLATE_WRITES = 256  # writes tried to find the rows of a batch that cannot be written
_NO_ROWS = pl.DataFrame(schema={"line": pl.Int64, "reason": pl.String})


def _at_offsets(frame: pl.DataFrame, offsets: np.ndarray, inverse: bool = False) -> pl.DataFrame:
    """``frame`` with its ``line`` column (0..n-1 in a batch) replaced by the records' offsets;
    ``inverse``: offsets back to positions in the batch (``offsets`` is increasing)."""
    if not frame.height:
        return frame
    lines = frame.get_column("line").to_numpy()
    mapped = np.searchsorted(offsets, lines) if inverse else offsets[lines]
    return frame.with_columns(pl.Series("line", mapped, dtype=pl.Int64))


def _now_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
