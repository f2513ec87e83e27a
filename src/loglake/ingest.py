"""Batch ingest: sources → formats (parse) → enrich → lake, with counts that always add up.

One run reads every input in bounded chunks, parses each chunk as a whole column, enriches it, and
buffers it for its table; rejected lines go to ``logs.rejected``. At the end each table gets one Iceberg
commit whose snapshot summary names the run, and the ingest ledger marks the inputs done, so running
the same inputs again is a no-op (unless ``force``).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

from loglake.enrich import get_enricher
from loglake.errors import LoglakeError
from loglake.formats import detect_format, get_format
from loglake.formats.lines import line_batch
from loglake.lake.catalog import ensure_table, open_catalog
from loglake.lake.ledger import Ledger
from loglake.lake.writer import TableWriter
from loglake.sources import list_inputs
from loglake.sources.base import Input, open_decompressed, read_chunks

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from loglake.config import Config
    from loglake.enrich import Enricher
    from loglake.formats.base import Format, LineBatch

REJECTED_TABLE = "logs.rejected"
RUN_PROPERTY = "loglake.run-id"
_DETECT_LINES = 2000


@dataclass
class IngestStats:
    """What one ingest run did. ``read == parsed + rejected`` always holds."""

    read: int = 0
    parsed: int = 0
    rejected: int = 0
    bytes_read: int = 0
    inputs: int = 0
    skipped: int = 0
    seconds: float = 0.0
    tables: dict[str, int] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)  # input name -> format used

    def summary(self) -> str:
        rate = self.read / self.seconds if self.seconds else 0.0
        return (
            f"read {self.read:,} lines = parsed {self.parsed:,} + rejected {self.rejected:,} "
            f"from {self.inputs} input(s) ({self.skipped} already ingested, skipped) "
            f"in {self.seconds:.2f} s ({rate:,.0f} lines/s)"
        )


ProgressFn = Callable[[int, int], None]  # (lines so far, bytes so far)


def rejected_frame(
    rejected: pl.DataFrame, source: str, fmt: str, table: str, at: datetime
) -> pl.DataFrame:
    # Rejected lines are few: decoding them one by one for the readable `text` column is cheap.
    text = pl.Series(
        "text",
        [
            b.decode("utf-8", errors="backslashreplace")
            for b in rejected.get_column("raw").to_list()
        ],
        dtype=pl.String,
    )
    return rejected.with_columns(text).select(
        pl.lit(at).alias("ingested_at"),
        pl.lit(source).alias("source"),
        pl.col("line"),
        pl.col("reason"),
        pl.lit(fmt).alias("format"),
        pl.lit(table).alias("target_table"),
        pl.col("text"),
        pl.col("raw"),
    )


class _Run:
    """State of one ingest run: catalog, writers per table, enrichers, counters."""

    def __init__(self, config: Config, catalog: Future[Catalog], run_id: str):
        self.config = config
        self._catalog = catalog
        self.run_id = run_id
        # The lake stores times as UTC without a zone (Iceberg `timestamp`): see docs/decisions/0005.
        self.at = datetime.now(UTC).replace(tzinfo=None)
        self.writers: dict[str, TableWriter] = {}
        self.enrichers: dict[str, Enricher] = {}

    def writer(self, table: str, frame: pl.DataFrame, time_column: str = "ts") -> TableWriter:
        w = self.writers.get(table)
        if w is None:
            schema = frame.to_arrow(compat_level=pl.CompatLevel.oldest()).schema
            partition = self.config.table(table).partition

            def open_table() -> tuple[Catalog, Table]:
                catalog = self._catalog.result()
                return catalog, ensure_table(catalog, table, schema, partition, time_column)

            w = TableWriter(open_table, table, self.config.ingest.flush_rows, sort_by=time_column)
            self.writers[table] = w
        return w

    def enrich(self, fmt: Format, frame: pl.DataFrame) -> pl.DataFrame:
        for name in fmt.enrich:
            if name not in self.enrichers:
                self.enrichers[name] = get_enricher(name)
            frame = self.enrichers[name].enrich(frame)
        return frame


def _batches(
    inp: Input, chunk_bytes: int, counter_out: list[object]
) -> Iterator[tuple[bytes, int]]:
    raw = inp.open()
    stream, counting = open_decompressed(raw)
    counter_out.append(counting)
    try:
        for chunk in read_chunks(stream, chunk_bytes):
            yield chunk, counting.count
    finally:
        if inp.key != "stdin":
            stream.close()


def _prefetch(it: Iterator[tuple[bytes, int]], depth: int = 2) -> Iterator[tuple[bytes, int]]:
    """Read (and decompress) the next chunks in a thread while the current one is parsed."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    done = object()

    def pump() -> None:
        try:
            for item in it:
                q.put(item)
        except BaseException as exc:  # handed to the consumer, re-raised there
            q.put(exc)
            return
        q.put(done)

    threading.Thread(target=pump, daemon=True, name="loglake-read").start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item  # type: ignore[misc]


def ingest(
    config: Config,
    sources: list[str],
    *,
    format: str | None = None,
    table: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> IngestStats:
    """Ingest ``sources`` (paths, folders, globs, ``s3://`` URIs, ``-``) into the lake.

    ``format`` is a format name or string (None or ``auto``: detected per input from its first lines);
    ``table`` overrides the format's default table. Inputs already ingested (same path, size and
    mtime/ETag) are skipped unless ``force``. Raises LoglakeError for unreadable inputs or a lake that
    cannot be written; bad lines never raise, they are counted and kept in ``logs.rejected``.
    """
    started = time.perf_counter()
    stats = IngestStats()
    ledger = Ledger(config.state_dir / "ledger.db")
    # Opening the catalog imports pyiceberg (about a second); do it while the first chunks parse.
    opening = ThreadPoolExecutor(max_workers=1).submit(open_catalog, config)
    if ledger.has_pending():  # a run died between its commit and its ledger update: settle first
        catalog = opening.result()
        ledger.settle(lambda t, rid: _run_committed(catalog, t, rid))
    run = _Run(config, opening, uuid.uuid4().hex)
    fixed: Format | None = None
    if format and format != "auto":
        fixed = get_format(format, config.formats, **_format_options(config))
    done_inputs: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    lines_total = 0
    bytes_before = 0
    try:
        inputs = [inp for spec in sources for inp in list_inputs(spec, config)]
        for inp in inputs:
            fp = inp.fingerprint
            if fp and ((not force and ledger.is_done(fp)) or fp in seen):
                stats.skipped += 1  # already in the lake, or named twice in this run
                continue
            if fp:
                seen.add(fp)
            stats.inputs += 1
            counters: list[object] = []
            fmt = fixed
            line_no = 1
            for chunk, consumed in _prefetch(_batches(inp, config.ingest.chunk_bytes, counters)):
                batch = line_batch(chunk, line_no, inp.name)
                if fmt is None:
                    fmt = detect_format(batch.text.head(_DETECT_LINES), **_format_options(config))
                    stats.formats[inp.name] = fmt.name if fmt else "unrecognized"
                _ingest_batch(run, stats, batch, fmt, table)
                line_no += len(batch)
                lines_total += len(batch)
                if progress:
                    progress(lines_total, bytes_before + consumed)
            if counters:
                bytes_before += counters[0].count  # type: ignore[attr-defined]
            stats.formats.setdefault(inp.name, fmt.name if fmt else "unrecognized")
            if fp:
                done_inputs.append((fp, inp.name, line_no - 1))
        stats.bytes_read = bytes_before
        _commit(run, ledger, done_inputs, stats)
    finally:
        for w in run.writers.values():
            w.close()
        ledger.close()
    stats.seconds = time.perf_counter() - started
    return stats


def _format_options(config: Config) -> dict[str, object]:
    return {"timezone": config.ingest.syslog_timezone, "ts_field": config.ingest.json_ts_field}


def _ingest_batch(
    run: _Run, stats: IngestStats, batch: LineBatch, fmt: Format | None, table: str | None
) -> None:
    stats.read += len(batch)
    if fmt is None:
        reasons = pl.Series(["format not recognized; pass --format"] * len(batch), dtype=pl.String)
        rejected = batch.rejected(pl.Series([True] * len(batch)), reasons)
        fmt_name, target = "unrecognized", table or "?"
        parsed = None
    else:
        result = fmt.parse(batch)
        rejected = result.rejected
        parsed = result.parsed
        fmt_name, target = fmt.name, table or fmt.default_table
    if parsed is not None and parsed.height:
        parsed = run.enrich(fmt, parsed)  # type: ignore[arg-type]
        parsed = naive_utc(parsed).select(
            pl.exclude("line"),
            pl.col("line"),
            pl.lit(batch.source).alias("source"),
            pl.lit(run.at).alias("ingested_at"),
        )
        run.writer(target, parsed).add(parsed)
        stats.parsed += parsed.height
        stats.tables[target] = stats.tables.get(target, 0) + parsed.height
    if rejected.height:
        frame = rejected_frame(rejected, batch.source, fmt_name, target, run.at)
        run.writer(REJECTED_TABLE, frame, time_column="ingested_at").add(frame)
        stats.rejected += rejected.height
        stats.tables[REJECTED_TABLE] = stats.tables.get(REJECTED_TABLE, 0) + rejected.height
    if stats.parsed + stats.rejected != stats.read:  # a format bug, never the input's fault
        raise LoglakeError(
            f"internal error: {fmt_name} accounted for {stats.parsed + stats.rejected} of "
            f"{stats.read} lines; please report this with the input"
        )


def naive_utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Zone-aware time columns as UTC wall time without a zone, the lake's representation.

    DuckDB truncates and casts zone-less timestamps 4-10x faster than zone-aware ones (which go
    through ICU): `date_trunc('hour', ts)` over 10M rows 50 ms vs 571 ms.
    """
    exprs = [
        pl.col(name).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    ]
    return frame.with_columns(exprs) if exprs else frame


def _commit(
    run: _Run, ledger: Ledger, done_inputs: list[tuple[str, str, int]], stats: IngestStats
) -> None:
    for w in run.writers.values():
        w.flush()
    tables = [name for name, w in run.writers.items() if w.rows_written]
    ledger.mark_pending(run.run_id, done_inputs, tables)
    # Rejected lines first: if the process dies between the two commits, a re-run re-adds at most
    # rejected lines, never data rows.
    order = sorted(run.writers, key=lambda t: t != REJECTED_TABLE)
    for name in order:
        run.writers[name].commit({RUN_PROPERTY: run.run_id, "loglake.inputs": str(stats.inputs)})
    ledger.mark_done(run.run_id)
    from loglake.query.plan import refresh_plans

    refresh_plans(run.config, {n: w.table for n, w in run.writers.items()})


def _run_committed(catalog: Catalog, table: str, run_id: str) -> bool:
    try:
        t = catalog.load_table(table)
    except Exception:
        return False
    for snap in t.snapshots():
        summary = snap.summary
        if summary is not None and summary.additional_properties.get(RUN_PROPERTY) == run_id:
            return True
    return False
