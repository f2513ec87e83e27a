"""Continuous queries inside ``loglake serve``: fed by a stream's delivery, results into the lake.

A :class:`QueryRunner` belongs to one stream's delivery. The delivery thread hands it the event times
(and session keys) of every parsed batch; its committer thread, right after committing those
records to the lake, calls :meth:`QueryRunner.feed`, so a window's records are all in the lake when
the window is emitted and the query reads them from there (restricted to the stream's own rows).

Results go to ``analytics.<query>`` (one Iceberg commit per feed that emitted something). Each such
commit carries, in its snapshot summary, the stream offset it covers and the query's state as JSON,
so results, state and position move together: after a crash the query restarts from that snapshot,
the records after it are read again from the stream, and no window is written twice or missed.
The latest results are also kept in memory for ``GET /v1/queries/NAME/results``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from loglake.analytics.alerts import Alert, Notifier
from loglake.analytics.engine import ContinuousQuery, ContinuousQueryError, QuerySpec
from loglake.errors import LoglakeError
from loglake.sqltext import ident, literal
from loglake.supervise import Spawn, plain_thread

if TYPE_CHECKING:
    from concurrent.futures import Future

    from pyiceberg.catalog import Catalog

    from loglake.config import Config
    from loglake.lake.tables import Tables
    from loglake.lake.writer import TableWriter

log = logging.getLogger(__name__)

STATE_PROPERTY = "loglake.query-state"
RECENT_ROWS = 1000  # result rows kept in memory per query for the API
QUERY_THREADS = 4  # queries of one stream whose windows run at the same time, at least
MAINTAIN_EVERY = 10  # results commits of a query between compactions and expiries of its table
ORPHANS_EVERY_S = 300.0  # seconds between removals of a results table's unreferenced files


@dataclass
class RunningQuery:
    """One query of the runner: its engine, results table, and the offset its state covers."""

    spec: QuerySpec
    engine: ContinuousQuery
    table: str
    offset: int | None = None  # records below this are accounted for in the committed state
    fed: int | None = None  # records below this are accounted for in the engine's state
    writer: TableWriter | None = None
    alerts: list[Alert] = field(default_factory=list)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_ROWS))
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards recent
    results: int = 0  # result rows written
    # The latest window's results as Prometheus samples: (labels, column, value).
    gauges: list[tuple[dict[str, str], str, float]] = field(default_factory=list)
    prometheus_labels: tuple[str, ...] | None = None  # None: not exported
    boundary: int | None = None  # delivery thread: last window boundary its watermark passed
    commits: int = 0  # results commits since the table was last maintained
    orphans_at: float = field(default_factory=time.monotonic)  # last removal of unused files

    subscribers: list[tuple[Any, Any]] = field(default_factory=list)  # (event loop, asyncio.Queue)

    def subscribe(self, loop: Any, queue: Any) -> None:
        """Deliver every new result row to ``queue`` (an asyncio.Queue of ``loop``)."""
        with self.lock:
            self.subscribers.append((loop, queue))

    def unsubscribe(self, queue: Any) -> None:
        with self.lock:
            self.subscribers = [s for s in self.subscribers if s[1] is not queue]

    def _publish(self, rows: list[dict[str, Any]]) -> None:
        with self.lock:
            targets = list(self.subscribers)
        for loop, queue in targets:
            try:
                loop.call_soon_threadsafe(_offer, queue, rows)
            except RuntimeError:  # the subscriber's loop is closed
                self.unsubscribe(queue)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` result rows, oldest first (safe from any thread)."""
        with self.lock:
            return list(self.recent)[-limit:]


class QueryRunner:
    """The continuous queries reading one stream. Used by that stream's committer thread only."""

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
        self._tables = tables  # one commit lock per table, and the post-commit hooks
        self._spawn = spawn  # starts the alert notifier's threads (under the server's supervisor)
        self._local = threading.local()  # a loglake Connection per thread, opened on first use
        self._connections: list[Any] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._notifier: Notifier | None = None
        self._notifier_lock = threading.Lock()
        self.queries: dict[str, RunningQuery] = {}
        for name, q in config.queries.items():
            if q.stream == stream:
                self.add(name, config)

    def add(self, name: str, config: Config) -> None:
        """Start running ``[queries.NAME]`` of ``config`` (from the next records on)."""
        from loglake.config import alert_spec, query_spec

        q = config.queries[name]
        spec = query_spec(config, name)
        engine = ContinuousQuery(spec, execute=self._executor(spec))
        alerts = [
            Alert(alert_spec(config, a)) for a, rule in config.alerts.items() if rule.query == name
        ]
        self.queries[name] = RunningQuery(
            spec,
            engine,
            q.table or f"analytics.{name}",
            alerts=alerts,
            prometheus_labels=tuple(q.prometheus_labels) if q.prometheus else None,
        )

    @property
    def notifier(self) -> Notifier | None:
        """The alert notifier (its sent/failed/dropped counters), once an alert has notified."""
        return self._notifier

    def window_closes(self, max_ts: int) -> bool:
        """Whether event time ``max_ts`` (µs, just parsed) moves some query's watermark past a
        window end it had not reached: then delivery commits at once instead of waiting for its
        buffer interval, so the window is emitted within a second. Delivery thread only."""
        due = False
        for q in list(self.queries.values()):
            w = q.spec.window
            if w.is_session:
                continue  # sessions close on silence; they follow the buffer interval
            boundary = (max_ts - q.spec.lateness) // w.slide
            if q.boundary is not None and boundary > q.boundary:
                due = True
            if q.boundary is None or boundary > q.boundary:
                q.boundary = boundary
        return due

    def remove(self, name: str) -> None:
        """Stop running a query (its results table stays)."""
        q = self.queries.pop(name, None)
        if q is not None and q.writer is not None:
            q.writer.close()

    @property
    def key_columns(self) -> list[str]:
        """Columns the engines need from parsed records besides ``ts`` and ``line``."""
        return sorted({q.spec.key for q in self.queries.values() if q.spec.key})

    # -- resuming --------------------------------------------------------------------------------

    def resume(self) -> int | None:
        """Restore every query from its table's latest snapshot; the lowest offset they need.

        None when no query has committed yet (they start wherever delivery starts).
        """
        from loglake.lake.consumer import offset_property

        catalog = self._catalog.result()
        key = offset_property(self.stream)
        needed = []
        for q in self.queries.values():
            if not catalog.table_exists(q.table):
                continue
            table = catalog.load_table(q.table)
            best = None
            for snap in table.snapshots():
                props = snap.summary.additional_properties if snap.summary else {}
                if key in props and STATE_PROPERTY in props:
                    seq = snap.sequence_number or 0
                    if best is None or seq > best[0]:
                        best = (seq, int(props[key]), props[STATE_PROPERTY])
            if best is not None:
                state = json.loads(best[2])
                q.offset = q.fed = best[1]
                q.engine.restore(state["engine"], time.time())
                for alert in q.alerts:
                    if alert.spec.name in state.get("alerts", {}):
                        alert.restore(state["alerts"][alert.spec.name])
                needed.append(best[1])
        return min(needed) if needed else None

    def min_offset(self) -> int | None:
        """The lowest stream offset a query still needs (the log must keep records from there)."""
        offsets = [q.offset for q in self.queries.values() if q.offset is not None]
        return min(offsets) if offsets else None

    # -- running ---------------------------------------------------------------------------------

    def feed(self, frames: list[tuple[pl.DataFrame, float]], position: int, wall: float) -> None:
        """Run the queries over the event times of records now committed to the lake.

        ``frames`` are ``(rows, parsed_at)`` in parse order: ``line`` (stream offset), ``ts`` and
        the key columns of records below ``position``, and the wall time they were parsed (from
        which emission delays are measured); each query takes the rows at or above its offset.
        """
        self._each(lambda q: self._feed_one(q, frames, position, wall))

    def emit_prepared(self, frames: list[pl.DataFrame], wall: float) -> None:
        """Emit the prepared windows that just-parsed records close, before those are committed.

        ``frames`` hold ``line`` and ``ts`` of every record parsed but maybe not yet fed
        (:meth:`feed`), the last of them the batch that moves the watermark past the windows;
        ``wall`` its parse time. See :meth:`ContinuousQuery.emit_prepared`: a window whose result
        is prepared and that none of these records falls in is final, so it goes out now rather
        than after the records' commit and the feed. Results are committed with the offset the
        query's state covers, as always, so a restart neither repeats nor loses them.
        """
        if frames:
            rows = pl.concat(frames, how="diagonal_relaxed")
            self._each(lambda q: self._emit_prepared_one(q, rows, wall))

    def _emit_prepared_one(self, q: RunningQuery, rows: pl.DataFrame, wall: float) -> None:
        if q.fed is None or q.spec.window.is_session:
            return  # not fed yet: nothing prepared
        unseen = rows.filter(pl.col("line") >= q.fed).get_column("ts")
        if (out := q.engine.emit_prepared(unseen, wall)) is not None:
            self._publish_results(q, out, q.fed)

    def _each(self, run: Any) -> None:
        """``run(query)`` for every query, each in its own thread when there are several."""
        queries = list(self.queries.values())
        if len(queries) > 1:
            # Each query's windows run in the lake at the same time (DuckDB works outside the
            # GIL), so the last of several queries is not emitted after all the others' SQL.
            if self._pool is None or self._pool_size < len(queries):
                # A thread per query (at least QUERY_THREADS): emitting a prepared window is
                # quick, and should not queue behind another query's SQL or commit.
                if self._pool is not None:
                    self._pool.shutdown(wait=True)
                self._pool_size = max(QUERY_THREADS, len(queries))
                self._pool = ThreadPoolExecutor(
                    max_workers=self._pool_size, thread_name_prefix=f"loglake-query-{self.stream}"
                )
            list(self._pool.map(run, queries))
        elif queries:
            run(queries[0])

    def _feed_one(
        self,
        q: RunningQuery,
        frames: list[tuple[pl.DataFrame, float]],
        position: int,
        wall: float,
    ) -> None:
        outs = []
        for rows, parsed_at in frames:
            if q.fed is not None:
                rows = rows.filter(pl.col("line") >= q.fed)
            if rows.height and (got := q.engine.process(rows, parsed_at)) is not None:
                outs.append(got)
        if (got := q.engine.tick(wall)) is not None:
            outs.append(got)
        q.fed = position
        if outs:
            self._publish_results(q, pl.concat(outs, how="diagonal_relaxed"), position)
        try:
            # Windows that only late records can still change: their SQL runs now, while the
            # watermark is still `lateness` away, so that their emission need not wait for it.
            q.engine.prepare()
        except ContinuousQueryError as exc:  # the emission runs it again and reports the error
            log.debug("continuous query %s: preparing a window failed: %s", q.spec.name, exc)
        if q.commits >= MAINTAIN_EVERY:
            self._maintain(q)

    def _publish_results(self, q: RunningQuery, out: pl.DataFrame, position: int) -> None:
        """Check alerts, commit the rows with the state (covering records below ``position``),
        then notify."""
        notes = [(a.spec.webhook, n) for a in q.alerts for n in a.evaluate(out, time.time())]
        self._commit(q, out, position)
        q.engine.emitted()  # written, published: the emission delays end here
        q.commits += 1
        # After the commit that holds the alert states: a crash before it replays the windows
        # and notifies then, so no notification is sent twice.
        for webhook, note in notes:
            with self._notifier_lock:
                if self._notifier is None:
                    self._notifier = Notifier(spawn=self._spawn)
            self._notifier.send(webhook, note)

    def _maintain(self, q: RunningQuery) -> None:
        """Compact the results table's small files (one per window) and expire old snapshots.

        Without it, every commit rewrites a growing list of snapshots and manifest entries: a
        results commit took 12 ms at the first window and 200 ms after 300 (unloaded), which the
        emission of every window waits for. Runs after an emission, never before one; failures
        are logged and retried at the next turn (the results are committed either way).
        """
        from loglake.lake.maintenance import compact, expire_snapshots, remove_orphans

        assert q.writer is not None
        q.commits = 0
        catalog = self._catalog.result()
        try:
            with self._tables.get(q.table).lock:
                # This thread alone writes the table: compaction cannot race another writer.
                compact(catalog, catalog.load_table(q.table), q.table, "window_start")
                expire_snapshots(catalog.load_table(q.table))
                table = catalog.load_table(q.table)
                q.writer.table = table
                self._tables.committed(q.table, table, None, [])
            if time.monotonic() - q.orphans_at >= ORPHANS_EVERY_S:
                q.orphans_at = time.monotonic()
                remove_orphans(table)
        except Exception as exc:
            log.warning(
                "continuous query %s: maintenance of %s failed: %s",
                q.spec.name,
                q.table,
                exc,
                extra={"fields": {"query": q.spec.name, "reason": str(exc)}},
            )

    def _commit(self, q: RunningQuery, out: pl.DataFrame, position: int) -> None:
        """Write the result rows with the query's state and the offset they cover, in one commit."""
        from loglake.lake.catalog import ensure_table
        from loglake.lake.consumer import offset_property
        from loglake.lake.writer import TableWriter

        now = datetime.now(UTC).replace(tzinfo=None)
        frame = out.with_columns(pl.lit(now).cast(pl.Datetime("us")).alias("emitted_at"))
        if q.writer is None:
            catalog = self._catalog.result()
            schema = frame.to_arrow(compat_level=pl.CompatLevel.oldest()).schema
            with self._tables.get(q.table).lock:  # catalog writes of the query threads take turns
                table = ensure_table(catalog, q.table, schema, "day", "window_start")
            q.writer = TableWriter(
                lambda: (catalog, table),
                q.table,
                10**12,
                sort_by="window_start",
                tables=self._tables,
            )
        props = {
            offset_property(self.stream): str(position),
            STATE_PROPERTY: json.dumps(
                {
                    "engine": q.engine.checkpoint(),
                    "alerts": {a.spec.name: a.checkpoint() for a in q.alerts},
                },
                separators=(",", ":"),
            ),
        }
        files = q.writer.write_frames([frame])
        q.writer.commit(props, files)  # under the table's lock; its hooks update the plan cache
        q.offset = position
        q.results += frame.height
        rows = [{k: _json_value(v) for k, v in r.items()} for r in frame.iter_rows(named=True)]
        with q.lock:
            q.recent.extend(rows)
        q._publish(rows)
        if q.prometheus_labels is not None:
            q.gauges = _gauges(out, q.prometheus_labels)

    def _window_rows(self, spec: QuerySpec, start: int, stop: int, key: str | None) -> str:
        """The condition on the lake table that selects the stream's rows of one window."""
        where = (
            f"source = {literal('stream:' + self.stream)} "
            f"AND ts >= TIMESTAMP {literal(_literal(start))} "
            f"AND ts < TIMESTAMP {literal(_literal(stop))}"
        )
        if spec.key:
            where += f" AND coalesce(CAST({ident(spec.key)} AS VARCHAR), '') = {literal(str(key))}"
        return where

    def _connection(self) -> Any:
        from loglake.query.engine import Connection

        lake = getattr(self._local, "lake", None)
        if lake is None:
            lake = self._local.lake = Connection(self.config)
            with self._notifier_lock:
                self._connections.append(lake)
        return lake

    def _executor(self, spec: QuerySpec) -> Any:
        """Runs the query's SQL in the lake sandbox with ``stream`` bound to the window's rows.

        DuckDB then reads only the columns the SQL uses, from the files of the window's time
        range, and aggregates as it reads: far less work than fetching every column of a minute
        of a busy stream and handing it over. The SQL sees nothing but ``stream`` (no other table,
        no file) and runs under the limits of ``loglake query``, in a sandbox process of its own.
        """

        def execute(start: int, stop: int, key: str | None) -> pl.DataFrame:
            rows = self._window_rows(spec, start, stop, key)
            try:
                result = self._connection().window(
                    spec.sql, self.source_table, rows, [(start, stop)]
                )
            except LoglakeError as exc:
                raise ContinuousQueryError(
                    f"continuous query {spec.name} failed on a window: {exc}"
                ) from exc
            table = result.arrow()
            _check_result_types(spec.name, table.schema)
            return pl.DataFrame(pl.from_arrow(table))

        return execute

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()
        for q in self.queries.values():
            if q.writer is not None:
                q.writer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for lake in self._connections:
            lake.close()


def _check_result_types(query: str, schema: Any) -> None:
    """Refuse (as a failed window: counted, logged, the stream goes on) result columns that the
    results table cannot store, naming the column and the cast to use instead."""
    import pyarrow as pa

    for column in schema:
        kind = column.type
        fix = ""
        if pa.types.is_interval(kind) or pa.types.is_duration(kind):
            fix = f"epoch({column.name}) for seconds, or {column.name}::VARCHAR"
        elif pa.types.is_time(kind):
            fix = f"{column.name}::VARCHAR, or a TIMESTAMP"
        if fix:
            raise ContinuousQueryError(
                f"continuous query {query}: result column {column.name!r} is {kind}, which a "
                f"results table cannot store; select {fix} instead"
            )


_WINDOW_COLUMNS = ("window_start", "window_end", "revision", "retracted", "window_key")


def _gauges(out: pl.DataFrame, labels: tuple[str, ...]) -> list[tuple[dict[str, str], str, float]]:
    """The newest window of ``out`` as samples: numeric columns are values, ``labels`` (or, when
    empty, the text columns) become labels."""
    latest = out.filter(
        (pl.col("window_start") == pl.col("window_start").max()) & ~pl.col("retracted")
    )
    if "revision" in latest.columns and latest.height:
        latest = latest.filter(pl.col("revision") == pl.col("revision").max())
    columns = [c for c in latest.columns if c not in _WINDOW_COLUMNS and c != "emitted_at"]
    label_cols = list(labels) or [c for c in columns if latest.schema[c] == pl.String]
    value_cols = [c for c in columns if c not in label_cols and latest.schema[c].is_numeric()]
    samples = []
    for row in latest.iter_rows(named=True):
        tags = {c: str(row[c]) for c in label_cols if c in row}
        for c in value_cols:
            if row[c] is not None:
                samples.append((tags, c, float(row[c])))
    return samples


def _offer(queue: Any, rows: list[dict[str, Any]]) -> None:
    """Runs in the subscriber's event loop: a slow subscriber loses its oldest rows, never
    blocks the query or other subscribers."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(rows)


def _literal(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value
