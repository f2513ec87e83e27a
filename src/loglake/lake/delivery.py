"""Delivery: moves one stream's records from its durable log into the lake, exactly once.

Like Firehose, records are buffered and committed when ``buffer_seconds`` have passed or
``buffer_records`` are waiting. Each Iceberg commit carries, in its snapshot summary, the stream offset
it covers (``loglake.offset.<stream>``), so the commit and the consumer position move together. On
start, delivery reads that offset back from each target table's latest snapshot and resumes there:
records before it are already in the lake (never written twice), records after it are re-read from
the log (never lost). Records are single lines; their ``line`` column holds their stream offset.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

from loglake.formats import detect_format, get_format
from loglake.formats.base import LineBatch
from loglake.formats.lines import decode

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from loglake.config import Config, StreamConfig
    from loglake.formats.base import Format
    from loglake.lake.writer import TableWriter
    from loglake.stream.local import LocalLog, Records

_READ_RECORDS = 50_000
_EXPIRE_EVERY = 50  # commits between snapshot expiries (see lake/maintenance.py)
_COMPACT_EVERY = 20  # commits between compactions of partitions with many small files
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
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"loglake-deliver-{name}", daemon=True
        )
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

    def stop(self, timeout: float = 30.0) -> None:
        """Deliver and commit what the log holds now, then stop. Called on graceful shutdown."""
        self._stop.set()
        self._thread.join(timeout)

    # -- the loop --------------------------------------------------------------------------------

    def _writer(self, table: str, frame: pl.DataFrame, time_column: str) -> TableWriter:
        from loglake.lake.catalog import ensure_table
        from loglake.lake.writer import TableWriter

        w = self._writers.get(table)
        if w is None:
            catalog = self._catalog.result()
            schema = frame.to_arrow(compat_level=pl.CompatLevel.oldest()).schema
            t = ensure_table(
                catalog, table, schema, self.config.table(table).partition, time_column
            )
            self._committed.setdefault(table, committed_offset(t, self.name) or 0)
            w = TableWriter(lambda: (catalog, t), table, 10**12, sort_by=time_column)
            self._writers[table] = w
        return w

    def _resume_position(self) -> int:
        """Where to start reading: the lowest offset any of our tables has not committed yet."""
        from loglake.ingest import REJECTED_TABLE

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
        return max(min(offsets), self.log.start_offset)

    def _run(self) -> None:
        try:
            position = self._resume_position()
        except Exception as exc:  # the catalog cannot be opened: reported by /readyz
            self.stats.errors.append(f"cannot open the lake: {exc}")
            return
        self.stats.position = position
        self.ready.set()
        pending = 0
        last_commit = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            if not stopping:
                self.log.wait(position, timeout=0.1)
            records = self.log.read_records(position, max_records=_READ_RECORDS)
            if len(records):
                pending += self._deliver(records)
                position = records.end
            due = time.monotonic() - last_commit >= self.stream.buffer_seconds
            if pending and (due or pending >= self.stream.buffer_records or stopping):
                self._commit(position)
                pending = 0
                last_commit = time.monotonic()
            if stopping and not len(records):
                break
        for w in self._writers.values():
            w.close()

    def _deliver(self, records: Records) -> int:
        from loglake.ingest import REJECTED_TABLE, naive_utc, rejected_frame

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
            self._writer(self.table, parsed, "ts").add(parsed)
            self.stats.delivered += parsed.height
            rows += parsed.height
        if rejected.height:
            rejected = rejected.filter(pl.col("line") >= self._committed.get(REJECTED_TABLE, 0))
        if rejected.height:
            name = fmt.name if fmt else "unrecognized"
            frame = rejected_frame(rejected, batch.source, name, self.table, _now_naive())
            self._writer(REJECTED_TABLE, frame, "ingested_at").add(frame)
            self.stats.rejected += rejected.height
            rows += rejected.height
        return rows

    def _compact(self) -> None:
        """Compact the tables this delivery writes, between its own commits (never concurrently)."""
        from loglake.lake.maintenance import compact
        from loglake.query.plan import refresh_plans

        catalog = self._catalog.result()
        changed = {}
        try:
            for name, writer in self._writers.items():
                time_column = "ingested_at" if name.endswith(".rejected") else "ts"
                removed, _ = compact(catalog, writer.table, name, time_column)
                if removed:
                    writer.table = catalog.load_table(name)
                    changed[name] = writer.table
                    self.stats.compacted_files += removed
        except Exception as exc:  # compaction is an optimisation: report, never stop delivery
            self.stats.errors.append(f"compaction failed: {exc}")
            del self.stats.errors[:-10]
        if changed:
            refresh_plans(self.config, changed)

    def _commit(self, position: int) -> None:
        started = time.perf_counter()
        props = {offset_property(self.name): str(position)}
        from loglake.ingest import REJECTED_TABLE

        # Rejected lines first: a crash between the two commits re-reads from the data table's
        # offset, and the rejected table's own offset keeps its lines from being added twice.
        from loglake.query.plan import extend_plan

        for table in sorted(self._writers, key=lambda t: t != REJECTED_TABLE):
            writer = self._writers[table]
            before = writer.table.metadata_location
            if writer.commit(props):
                self._committed[table] = position
                # Keep the query plan cache current at a cost that does not grow with the table.
                extend_plan(self.config, table, writer.table, before, writer.last_committed)
        self.stats.commits += 1
        self.stats.position = position
        self.stats.last_commit_seconds = time.perf_counter() - started
        # Every table has committed past `position`: the log no longer needs what lies before it.
        self.log.trim(position)
        if self.stats.commits % _COMPACT_EVERY == 0:
            self._compact()
        if self.stats.commits % _EXPIRE_EVERY == 0:
            from loglake.lake.maintenance import expire_snapshots
            from loglake.query.plan import refresh_plans

            for writer in self._writers.values():
                expire_snapshots(writer.table)
                writer.table = writer.table.refresh()
            refresh_plans(self.config, {n: w.table for n, w in self._writers.items()})


def _now_naive() -> datetime:

    return datetime.now(UTC).replace(tzinfo=None)
