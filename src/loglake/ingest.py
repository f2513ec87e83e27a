"""Batch ingest: sources → formats (parse) → enrich → lake, with counts that always add up.

One run reads every input in bounded chunks, parses each chunk as a whole column, enriches it, and
buffers it for its table; rejected lines go to ``logs.rejected``. At the end each table gets one Iceberg
commit whose snapshot summary names the run, and the ingest ledger marks the inputs done, so running
the same inputs again is a no-op (unless ``force``).

Input never aborts a run: any byte sequence splits into lines, a line too long to hold is kept in
pieces, and an input that cannot be read is reported in ``IngestStats.failed`` while the others are
ingested and committed.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

from loglake.errors import LakeError, LoglakeError, SourceError
from loglake.formats import get_format
from loglake.formats.lines import line_batch
from loglake.formats.mixed import Detector, Group
from loglake.formats.step import BatchStep, normalise
from loglake.formats.w3c import DIRECTIVE_REASON
from loglake.lake.catalog import open_catalog
from loglake.lake.ledger import Ledger
from loglake.lake.rejected import REJECTED_TABLE, empty_rejected, rejected_frame
from loglake.lake.tables import Tables
from loglake.lake.writer import TablePeek, TableWriter, load_existing, peek_table
from loglake.query.plan import plan_hook
from loglake.sources import list_inputs
from loglake.sources.base import MAX_LINE_CHUNKS, Chunk, Input, open_decompressed, read_chunks

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from loglake.config import Config
    from loglake.formats.base import Format, LineBatch

RUN_PROPERTY = "loglake.run-id"
_DETECT_LINES = 2000
_UNRECOGNIZED = "format not recognized; pass --format"


@dataclass
class IngestStats:
    """What one ingest run did. ``read == parsed + rejected`` always holds."""

    read: int = 0
    parsed: int = 0
    rejected: int = 0
    bytes_read: int = 0
    inputs: int = 0
    skipped: int = 0
    resumed: int = 0  # inputs read on after the lines a failed earlier run stored
    seconds: float = 0.0
    tables: dict[str, int] = field(default_factory=dict)
    # input name -> {format name: lines it parsed}, the main format first; {} when none parsed any
    formats: dict[str, dict[str, int]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # input name -> lines read in this run
    # input name -> W3C directive lines (#Fields...) among its rejected: headers, not records
    directives: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # input or source name -> what happened

    def summary(self) -> str:
        rate = self.read / self.seconds if self.seconds else 0.0
        extra = (f"; {self.resumed} resumed" if self.resumed else "") + (
            f"; {len(self.failed)} failed" if self.failed else ""
        )
        return (
            f"read {self.read:,} lines = parsed {self.parsed:,} + rejected {self.rejected:,} "
            f"from {self.inputs} input(s) ({self.skipped} already ingested, skipped{extra}) "
            f"in {self.seconds:.2f} s ({rate:,.0f} lines/s)"
        )


ProgressFn = Callable[[int, int], None]  # (lines so far, bytes so far)


class _Run:
    """State of one ingest run: catalog, writers per table, enrichers, counters."""

    def __init__(self, config: Config, catalog: Future[Catalog], run_id: str):
        self.config = config
        self._catalog = catalog
        self.run_id = run_id
        # The lake stores times as UTC without a zone (Iceberg `timestamp`): see docs/decisions/0005.
        self.at = datetime.now(UTC).replace(tzinfo=None)
        self.writers: dict[str, TableWriter] = {}
        self.step = BatchStep(unrecognized=_UNRECOGNIZED)
        self.detector = Detector(_format_options(config), unrecognized=_UNRECOGNIZED)
        # One lock per table and the post-commit hook keeping the query plan cache current.
        self.tables = Tables()
        self.tables.on_commit(plan_hook(config))

    def writer(self, table: str, time_column: str = "ts") -> TableWriter:
        """The run's writer of ``table`` (created, with the table, from the first rows it takes)."""
        w = self.writers.get(table)
        if w is None:

            def open_table() -> tuple[Catalog, Table | None]:
                catalog = self._catalog.result()
                return catalog, load_existing(catalog, table)

            def peek() -> TablePeek | None:
                # The embedded catalog's table list is read without pyiceberg, so the first
                # chunks are conformed and parsed on while the catalog opens.
                from loglake.query.plan import current_locations

                locations = current_locations(self.config)
                return None if locations is None else peek_table(locations.get(table))

            w = TableWriter(
                open_table,
                table,
                self.config.ingest.flush_rows,
                sort_by=time_column,
                partition=self.config.table(table).partition,
                peek=peek,
                tables=self.tables,
                # One data file per partition per run, however often the buffer fills.
                hold_files=True,
            )
            self.writers[table] = w
        return w


def _batches(
    inp: Input, chunk_bytes: int, counter_out: list[object]
) -> Iterator[tuple[Chunk, int]]:
    """Chunks of ``inp`` and the raw bytes read so far; any failure to read is a SourceError."""
    try:
        raw = inp.open()
        stream, counting = open_decompressed(raw)
    except OSError as exc:
        raise SourceError(f"cannot open: {exc}") from exc
    counter_out.append(counting)
    try:
        for chunk in read_chunks(stream, chunk_bytes):
            yield chunk, counting.count
    finally:
        if inp.key != "stdin":
            stream.close()


def _prefetch(it: Iterator[tuple[Chunk, int]], depth: int = 2) -> Iterator[tuple[Chunk, int]]:
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
    mtime/ETag) are skipped unless ``force``. Bad lines never raise, they are counted and kept in
    ``logs.rejected``; a source or input that cannot be listed or read is reported in
    ``stats.failed`` and the others are ingested and committed. Raises LoglakeError for a lake
    that cannot be written, or a pending run that cannot be checked (the catalog is unreachable).
    """
    started = time.perf_counter()
    stats = IngestStats()
    ledger = Ledger(config.state_dir / "ledger.db")
    try:
        # Opening the catalog imports pyiceberg (about a second); do it while the first chunks parse.
        opening = ThreadPoolExecutor(max_workers=1).submit(_open_catalog, config)
        if ledger.has_pending():  # a run died between its commit and its ledger update: settle
            catalog = opening.result()
            ledger.settle(lambda t, rid: run_committed(catalog, t, rid))
        run = _Run(config, opening, uuid.uuid4().hex)
        try:
            _ingest_all(run, ledger, stats, sources, format, table, force, progress)
        finally:
            for w in run.writers.values():
                w.close()
    finally:
        ledger.close()
    stats.seconds = time.perf_counter() - started
    return stats


def _open_catalog(config: Config) -> Catalog:
    """The catalog, with the pyiceberg modules the writers use imported in this same thread.

    Writers wait for the catalog before they import pyiceberg themselves: two threads importing
    pyiceberg's modules at once can fail with Python's import ``_DeadlockError`` (its modules
    import each other circularly).
    """
    catalog = open_catalog(config)
    import pyiceberg.io.pyarrow
    import pyiceberg.transforms  # noqa: F401

    return catalog


def _list_all(sources: list[str], config: Config, stats: IngestStats) -> list[Input]:
    """Every input the sources name; a source that cannot be listed goes to ``stats.failed``."""
    inputs: list[Input] = []
    for spec in sources:
        try:
            inputs.extend(list_inputs(spec, config))
        except (SourceError, OSError) as exc:
            stats.failed[spec] = str(exc)
    return inputs


def _ingest_all(
    run: _Run,
    ledger: Ledger,
    stats: IngestStats,
    sources: list[str],
    format: str | None,
    table: str | None,
    force: bool,
    progress: ProgressFn | None,
) -> None:
    config = run.config
    fixed: Format | None = None
    if format and format != "auto":
        fixed = get_format(format, config.formats, **_format_options(config))
    done_inputs: list[tuple[str, str, int]] = []
    partial: list[tuple[str, str, int, str]] = []
    seen: set[str] = set()
    totals = [0, 0]  # lines and raw bytes read, for the progress bar
    for inp in _list_all(sources, config, stats):
        fp = inp.fingerprint
        if fp and ((not force and ledger.is_done(fp)) or fp in seen):
            stats.skipped += 1  # already in the lake, or named twice in this run
            continue
        if fp:
            seen.add(fp)
        after = ledger.resume_after(fp) if fp and not force else 0
        stats.inputs += 1
        stats.resumed += bool(after)
        last, error = _read_input(run, stats, inp, fixed, table, after, totals, progress)
        if error is None:
            if fp:
                done_inputs.append((fp, inp.name, last))
            continue
        if last > after:
            kept = f"lines {after + 1:,} to {last:,} are stored"
            if fp:
                partial.append((fp, inp.name, last, error))
                kept += "; the next ingest of it goes on after them"
        else:
            kept = "nothing new of it is stored" if after else "nothing of it is stored"
        stats.failed[inp.name] = f"{error} ({kept})"
    stats.bytes_read = totals[1]
    _commit(run, ledger, done_inputs, stats, partial)


def _read_input(
    run: _Run,
    stats: IngestStats,
    inp: Input,
    fmt: Format | None,
    table: str | None,
    after: int,
    totals: list[int],
    progress: ProgressFn | None,
) -> tuple[int, str | None]:
    """Read, parse and buffer the lines of ``inp`` that come after line ``after``.

    Returns the number of its last complete line handed on, and None, or the error that stopped
    the reading (what came before it is kept: complete lines only).
    """
    config = run.config
    counters: list[object] = []
    line_no = 1  # number of the next line of the input
    chunks = _prefetch(_batches(inp, config.ingest.chunk_bytes, counters))
    error: str | None = None
    auto = fmt is None  # detected per group of lines: the main format may change per batch
    state = _InputState(stats.formats.setdefault(inp.name, {}))
    if fmt is not None:
        state.parsed[fmt.name] = 0
        state.owner = fmt.default_table
    while True:
        try:
            item = next(chunks, None)
        except SourceError as exc:
            error = str(exc)
            break
        if item is None:
            break
        chunk, consumed = item
        if chunk.piece:
            if line_no > after:
                _reject_piece(run, stats, chunk, line_no, inp.name, fmt, table)
            line_no += chunk.last
            continue
        batch = line_batch(chunk.data, line_no, inp.name)
        if auto and line_no == 1:
            fmt = run.detector.best(batch.text.head(_DETECT_LINES))
        count = len(batch)
        if line_no + count - 1 > after:
            if line_no <= after:  # stored by an earlier run whose reading failed after it
                skip = after - line_no + 1
                batch = replace(
                    batch, text=batch.text[skip:], raw=batch.raw[skip:], first_line=after + 1
                )
            fmt = _ingest_batch(run, stats, batch, fmt, table, auto, state)
            totals[0] += len(batch)
        line_no += count
        if progress:
            progress(totals[0], totals[1] + consumed)
    if counters:
        totals[1] += counters[0].count  # type: ignore[attr-defined]
    return line_no - 1, error


def _reject_piece(
    run: _Run,
    stats: IngestStats,
    chunk: Chunk,
    line: int,
    source: str,
    fmt: Format | None,
    table: str | None,
) -> None:
    """Keep one piece of an over-long line in ``logs.rejected``; the line counts once."""
    size = run.config.ingest.chunk_bytes * MAX_LINE_CHUNKS
    reason = (
        f"line longer than {size:,} bytes, kept in pieces: piece {chunk.piece} from byte "
        f"{(chunk.piece - 1) * size:,}{' (the last)' if chunk.last else ''}"
    )
    rejected = pl.DataFrame(
        {"line": [line], "raw": [chunk.data], "reason": [reason]},
        schema={"line": pl.Int64, "raw": pl.Binary, "reason": pl.String},
    )
    fmt_name = fmt.name if fmt else "unrecognized"
    frame = rejected_frame(
        rejected, source, fmt_name, table or (fmt.default_table if fmt else "?"), run.at
    )
    if run.writer(REJECTED_TABLE, time_column="ingested_at").add(frame).height:
        raise LoglakeError(f"internal error: {REJECTED_TABLE} refused a piece of a long line")
    if chunk.piece == 1:
        stats.read += 1
        stats.lines[source] = stats.lines.get(source, 0) + 1
        stats.rejected += 1
    stats.tables[REJECTED_TABLE] = stats.tables.get(REJECTED_TABLE, 0) + 1


def _format_options(config: Config) -> dict[str, object]:
    return {"timezone": config.ingest.syslog_timezone, "ts_field": config.ingest.json_ts_field}


@dataclass
class _InputState:
    """What the batches of one input share: lines per format, and the table ``--table`` renames."""

    parsed: dict[str, int]  # format name -> lines it parsed, in the order formats were found
    owner: str | None = None  # default table of the input's first main format


def _ingest_batch(
    run: _Run,
    stats: IngestStats,
    batch: LineBatch,
    fmt: Format | None,
    table: str | None,
    auto: bool,
    state: _InputState,
) -> Format | None:
    """Parse and buffer ``batch``; returns the main format for the input's next batch.

    With ``auto``, ``fmt`` is only the format tried first (None: detected from the batch) and the
    lines it leaves go to the other formats; otherwise every line is ``fmt``'s or rejected.
    ``table`` (``--table``) replaces the default table of the input's first main format only, so
    that rows of other formats (another table's columns) never land in it.
    """
    stats.read += len(batch)
    stats.lines[batch.source] = stats.lines.get(batch.source, 0) + len(batch)
    if auto:
        split = run.detector.split(batch, fmt)
        groups, rejected = split.groups, split.rejected
        next_fmt = split.busiest or fmt
    elif fmt is not None:
        result = fmt.parse(batch)
        groups, rejected, next_fmt = [Group(fmt, result.parsed)], result.rejected, fmt
    else:  # pragma: no cover - a fixed format is always given
        raise LoglakeError("internal error: no format to parse with")
    if state.owner is None and next_fmt is not None:
        state.owner = next_fmt.default_table

    def target(own: str) -> str:
        return table if table and (state.owner is None or own == state.owner) else own

    for group in groups:
        state.parsed[group.format.name] = state.parsed.get(group.format.name, 0) + group.rows.height
        into = target(group.format.default_table)
        refused = _store(run, stats, batch, group, into)
        if refused.height:
            # Rows that do not fit the table (a value of another type than its column's) are
            # rejected lines like those the format refused, so a drifting key never stops the run.
            _store_rejected(run, stats, batch.source, refused, group.format.name, into)
    # Lines no format parses are kept under the name and table of the busiest format.
    fmt_name = next_fmt.name if next_fmt is not None else "unrecognized"
    if rejected.height:
        own = next_fmt.default_table if next_fmt is not None else "?"
        _store_rejected(run, stats, batch.source, rejected, fmt_name, target(own))
    if stats.parsed + stats.rejected != stats.read:  # a format bug, never the input's fault
        raise LoglakeError(
            f"internal error: {fmt_name} accounted for {stats.parsed + stats.rejected} of "
            f"{stats.read} lines; please report this with the input"
        )
    return next_fmt


def _store(
    run: _Run, stats: IngestStats, batch: LineBatch, group: Group, target: str
) -> pl.DataFrame:
    """Buffer a group's rows for ``target``; returns the rows it refused as rejected lines."""
    rows = group.rows
    if not rows.height:
        return batch.rejected(None, pl.lit(""))
    rows = normalise(run.step.enrich(group.format, rows), batch.source, run.at)
    refused = run.writer(target).add(rows)
    stored = rows.height - refused.height
    stats.parsed += stored
    stats.tables[target] = stats.tables.get(target, 0) + stored
    return batch.rejected_lines(refused) if refused.height else batch.rejected(None, pl.lit(""))


def _store_rejected(
    run: _Run, stats: IngestStats, source: str, rejected: pl.DataFrame, fmt: str, target: str
) -> None:
    """Keep rejected lines (``line``, ``raw``, ``reason``) in ``logs.rejected``."""
    frame = rejected_frame(rejected, source, fmt, target, run.at)
    if run.writer(REJECTED_TABLE, time_column="ingested_at").add(frame).height:
        raise LoglakeError(
            f"internal error: {REJECTED_TABLE} refused rejected lines; does its schema still "
            "match loglake's? (was another format ingested into it with --table?)"
        )
    stats.rejected += rejected.height
    stats.tables[REJECTED_TABLE] = stats.tables.get(REJECTED_TABLE, 0) + rejected.height
    headers = int((rejected.get_column("reason") == DIRECTIVE_REASON).sum())
    if headers:
        stats.directives[source] = stats.directives.get(source, 0) + headers


def _commit(
    run: _Run,
    ledger: Ledger,
    done_inputs: list[tuple[str, str, int]],
    stats: IngestStats,
    partial: list[tuple[str, str, int, str]],
) -> None:
    for w in run.writers.values():
        w.flush()
    tables = [name for name, w in run.writers.items() if w.rows_written]
    ledger.mark_pending(run.run_id, done_inputs, tables, partial)
    # Rejected lines first: if the process dies between the two commits, a re-run re-adds at most
    # rejected lines, never data rows.
    order = sorted(run.writers, key=lambda t: t != REJECTED_TABLE)
    for name in order:
        run.writers[name].commit({RUN_PROPERTY: run.run_id, "loglake.inputs": str(stats.inputs)})
    ledger.mark_done(run.run_id)
    if tables and REJECTED_TABLE not in tables:
        ensure_rejected_table(run._catalog.result(), run.config)


def ensure_rejected_table(catalog: Catalog, config: Config) -> None:
    """Create ``logs.rejected`` empty unless it exists: queries over it (the README's tour asks it
    what was rejected) then answer "nothing" after a clean run instead of "no such table"."""
    from loglake.lake.catalog import ensure_table

    if catalog.table_exists(REJECTED_TABLE):
        return
    schema = empty_rejected().to_arrow(compat_level=pl.CompatLevel.oldest()).schema
    table = ensure_table(
        catalog, REJECTED_TABLE, schema, config.table(REJECTED_TABLE).partition, "ingested_at"
    )
    plan_hook(config)(REJECTED_TABLE, table, None, [])


def run_committed(catalog: Catalog, table: str, run_id: str) -> bool:
    """Whether a snapshot of ``table`` carries ``run_id``.

    False only when it certainly does not: the table (or its namespace) does not exist, or none of
    its snapshots names the run. Any other failure (catalog locked or unreachable, metadata
    unreadable) raises LakeError, so the ledger keeps the run pending instead of forgetting it and
    having its inputs ingested twice.
    """
    from pyiceberg.exceptions import NoSuchNamespaceError
    from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable

    try:
        t = catalog.load_table(table)
        snapshots = t.snapshots()
    except (IcebergNoSuchTable, NoSuchNamespaceError):
        return False
    except Exception as exc:
        raise LakeError(
            f"cannot check whether the interrupted ingest run {run_id} was committed to {table}: "
            f"{exc}; its inputs stay pending in the ledger, so nothing is ingested twice: run the "
            "ingest again once the catalog is reachable"
        ) from exc
    for snap in snapshots:
        summary = snap.summary
        if summary is not None and summary.additional_properties.get(RUN_PROPERTY) == run_id:
            return True
    return False
