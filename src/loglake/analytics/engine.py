"""Continuous queries: SQL over event-time windows of a stream, emitted as the watermark passes.

One :class:`ContinuousQuery` holds the state of one query: which windows have records, which have
been emitted, and the watermark. It is fed the event times (and session keys) of parsed batches
(:meth:`ContinuousQuery.process`) and a clock (:meth:`ContinuousQuery.tick`), and returns result
rows: the query's SQL run over each window's records, visible as the relation ``stream``, with
``window_start``, ``window_end``, ``revision`` and ``retracted`` in front.

The records themselves are not kept: a window's records are fetched when it is emitted, from a
*source* (in the server, the lake table the stream delivers to, restricted to the stream's rows and
the window's time range; records are committed before the query runs). So the state stays small
whatever the window size and rate (a minute at 250,000 records/s would be 15 million records), it
is checkpointed as a few numbers per open window, and a window's result is by construction the same
SQL run in batch over the lake for that window.

Event time (the records' ``ts``) drives everything, like Kinesis Data Analytics and Flink:

* **Watermark** = the highest ``ts`` seen minus ``lateness``. A window is emitted once the watermark
  passes its end (a session: its last record plus the gap).
* **Corrections.** An emitted window keeps its records for another ``allowed_lateness``; a record
  arriving for it meanwhile updates it and the window is emitted again with ``revision`` + 1 (the
  highest revision of a window is its final result). Later still, the record is counted as too late
  for its window (:attr:`QueryStats.too_late`); it still lands in the lake, which delivery writes
  independently.
* **Idle streams** still close their windows: once no record has arrived for ``idle_timeout``, the
  watermark advances with the wall clock.

Sessions (optionally per ``key`` column) are runs of records with gaps shorter than the session gap.
A late record that joins or merges emitted sessions re-emits the merged session; the sessions it
replaced are emitted once more with ``retracted`` = true, so the latest rows per window add up to
what a batch query over the same records gives.

Window results are computed by DuckDB on an in-memory connection that can read nothing but the
window's records (no files, no network, configuration locked).

**Prepared results.** Between the moment the newest records pass a window's end and the moment the
watermark does, ``lateness`` goes by (5 s by default) in which the window's SQL could only change by
late records. :meth:`ContinuousQuery.prepare` uses that time: it runs the SQL of windows whose end
is at least ``min(1 s, lateness / 2)`` behind the newest record and keeps the result; a record for
such a window arriving afterwards throws the prepared result away. When the watermark passes, an
intact prepared result is emitted at once, so the emission does not wait for the SQL over a busy
minute (seconds at 250,000 records/s). :meth:`ContinuousQuery.emit_prepared` goes one step further
for tumbling and hopping windows: given the event times of records parsed but not yet processed
(nor committed), it emits the prepared windows they close and do not fall in. The emitted result
is the same either way (decision 0009).

Records too late for every window they fall in are counted, not used; records too late for some of
their windows only (hopping) count for the others.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from loglake.analytics.anomaly import RobustZ
from loglake.config.queries import QuerySpec
from loglake.errors import ConfigError, LoglakeError, QueryError
from loglake.query.policy import check_read_only

TS = "ts"
_T = "__ts_us"  # event time as integer microseconds, the engine's working column
_NONE_KEY = "\x00"  # group key of unkeyed sessions
log = logging.getLogger(__name__)
MAX_PREPARES = 2  # preparations of one window's result at most (late records undo them)


class ContinuousQueryError(LoglakeError):
    """A continuous query's SQL failed on a window's records."""


@dataclass
class QueryStats:
    """Counters of one continuous query."""

    records: int = 0  # records taken into windows
    too_late: int = 0  # records whose windows had closed (kept in the lake, not in results)
    no_time: int = 0  # records without a ts
    windows: int = 0  # window results emitted (first revision)
    corrections: int = 0  # windows emitted again after late records
    retractions: int = 0  # sessions replaced by a merged session
    watermark: int | None = None  # microseconds
    failed_windows: int = 0  # windows whose SQL failed twice: logged, no result, the query goes on
    errors: list[str] = field(default_factory=list)  # the latest 10 failures
    prepared: int = 0  # window results computed before the watermark passed (see prepare())
    prepared_used: int = 0  # of them, emitted as they were (no record arrived for them since)
    emitted_early: int = 0  # of them, emitted before the records closing them were processed
    # Seconds from the parse of the batch that moved the watermark past a window's end to the
    # window's result (latest 1,024 first emissions; idle-timeout emissions are not counted).
    emit_delays: deque[float] = field(default_factory=lambda: deque(maxlen=1024))


#: fetch(start, end, key) -> the records with start <= ts < end (and the session key = key).
Source = Callable[[int, int, "str | None"], pl.DataFrame]


class ContinuousQuery:
    """The state of one continuous query; not thread-safe (one caller feeds it)."""

    def __init__(
        self, spec: QuerySpec, source: Source | None = None, execute: Source | None = None
    ) -> None:
        """Give one of ``source``, which fetches a window's records for the query's SQL to run
        on here, or ``execute``, which runs the query's SQL over a window where the records are
        (the lake, in the server) and returns its result."""
        if source is None and execute is None:
            raise ValueError("ContinuousQuery needs a source or an execute function")
        self.spec = spec
        self.stats = QueryStats()
        self._source = source
        self._execute = execute
        self._max_ts: int | None = None
        self._idle_from: tuple[float, int] | None = None  # (wall time, max_ts) of the last record
        # Tumbling/hopping: starts of windows with records not emitted yet, and emitted windows
        # still accepting corrections: start -> (end, revision); touched = emitted, records since.
        self._pending: set[int] = set()
        self._emitted: dict[int, tuple[int, int]] = {}
        self._touched: set[int] = set()
        # Sessions: per key, sorted [start, last, revision (-1: never emitted), changed] lists.
        self._sessions: dict[str, list[list[Any]]] = {}
        self._retractions: list[tuple[str, int, int, int]] = []  # (key, start, end, revision)
        # Every window ending at or before this has had its final result: never emitted again.
        self._final_until: int | None = None
        # Prepared results: (session key, start) -> (stop, the SQL's result), see prepare().
        # A result is None once records arrived for the window after it was prepared; the count
        # of preparations bounds the work a steady trickle of late records can cause.
        self._prepared: dict[tuple[str | None, int], tuple[int, pl.DataFrame | None, int]] = {}
        # Parse times of the batches that emitted windows, for the emission delays (see emitted()).
        self._emit_origins: list[float] = []
        self._sql = Sandbox(spec.sql, spec.name)
        self._detector = RobustZ(spec.anomaly) if spec.anomaly else None

    # -- feeding ---------------------------------------------------------------------------------

    @property
    def watermark(self) -> int | None:
        """Highest ts seen minus lateness (advanced by the wall clock when idle), microseconds."""
        return self.stats.watermark

    def process(self, frame: pl.DataFrame, wall: float) -> pl.DataFrame | None:
        """Take a parsed batch; return the result rows it completes or corrects (None if none).

        ``frame`` needs the ``ts`` column (event time, zone-less UTC) and, for keyed sessions,
        the key column; rows without a ts are counted and skipped. Its records must already be
        visible to the source. ``wall`` is the current time.time().
        """
        spec = self.spec
        columns = [pl.col(TS).cast(pl.Datetime("us")).cast(pl.Int64).alias(_T)]
        if spec.key:
            columns.append(pl.col(spec.key).cast(pl.String).fill_null("").alias("__key"))
        elif spec.window.is_session:
            columns.append(pl.lit(_NONE_KEY).alias("__key"))
        frame = frame.select(columns)
        missing = frame.get_column(_T).null_count()
        if missing:
            self.stats.no_time += missing
            frame = frame.filter(pl.col(_T).is_not_null())
        before = self.stats.watermark
        if before is not None and frame.height:
            late = self._reach(frame.get_column(_T)) + spec.allowed_lateness <= before
            n_late = int(late.sum())
            if n_late:
                self.stats.too_late += n_late
                frame = frame.filter(~late)
        if frame.height == 0:
            return self.tick(wall)
        self.stats.records += frame.height
        if spec.window.is_session:
            self._add_sessions(frame)
        else:
            self._add_windows(frame.get_column(_T))
        newest = int(frame.get_column(_T).max())  # type: ignore[arg-type]
        if self._max_ts is None or newest > self._max_ts:
            self._max_ts = newest
        self._idle_from = (wall, self._max_ts)
        self._set_watermark(self._max_ts - spec.lateness)
        firsts = self.stats.windows
        out = self._emit()
        if self.stats.windows > firsts:
            self._emit_origins.extend([wall] * (self.stats.windows - firsts))
        return out

    def emitted(self, now: float | None = None) -> None:
        """Record the emission delays of the windows emitted since the last call: call it once
        their results are out (written and published); ``now`` defaults to the current time."""
        if self._emit_origins:
            now = time.time() if now is None else now
            self.stats.emit_delays.extend(now - origin for origin in self._emit_origins)
            self._emit_origins.clear()

    def emit_prepared(self, unseen: pl.Series, wall: float) -> pl.DataFrame | None:
        """Emit prepared windows that records parsed but not yet processed close; the result rows.

        ``unseen`` holds the event times (``ts``) of every record parsed after those given to
        :meth:`process` so far, not necessarily in the lake yet. Tumbling and hopping windows
        whose end the watermark *will* pass once they are processed, whose result is prepared
        (:meth:`prepare`) and which none of them falls in, are final already: their results
        need no SQL and no wait for the records' commit. Windows go in order, up to the first
        that does not qualify. The watermark itself moves only in :meth:`process`, which later
        takes the same records as usual (they do not touch the windows emitted here).
        """
        spec = self.spec
        if spec.window.is_session or not self._prepared or unseen.len() == 0:
            return None
        t = unseen.cast(pl.Datetime("us")).cast(pl.Int64).drop_nulls()
        if t.len() == 0:
            return None
        newest = int(t.max())  # type: ignore[arg-type]
        watermark = max(newest, self._max_ts or newest) - spec.lateness
        size = spec.window.size
        results = []
        for start in sorted(self._pending):
            stop = start + size
            if stop > watermark:
                break
            held = self._prepared.get((None, start))
            if (
                held is None
                or held[1] is None
                or held[0] != stop
                or bool(((t >= start) & (t < stop)).any())
            ):
                break
            self._pending.discard(start)
            if (got := self._run(start, stop, 0, None)) is not None:  # the prepared result
                results.append(got)
            self._emitted[start] = (stop, 0)
            self.stats.windows += 1
            self.stats.emitted_early += 1
            self._emit_origins.append(wall)
        if not results:
            return None
        out = pl.concat(results, how="diagonal_relaxed")
        return self._score(out) if self._detector is not None else out

    def prepare(self) -> int:
        """Run the SQL of windows that only late records can still change; the number run.

        A window qualifies once the newest record is ``min(1 s, lateness / 2)`` past its end
        (records arrive a little out of order; the margin keeps most prepared results intact)
        and the watermark has not passed it yet. Its records must be visible to the source, as
        for :meth:`process`. Does nothing when lateness is 0 (windows close as they end).
        """
        spec = self.spec
        if self._max_ts is None or spec.lateness <= 0 or self.stats.watermark is None:
            return 0
        ready = self._max_ts - min(1_000_000, spec.lateness // 2)
        watermark = self.stats.watermark
        todo: list[tuple[str | None, int, int, int]] = []  # key, start, stop, end
        if spec.window.is_session:
            gap = spec.window.gap
            for session_key, sessions in sorted(self._sessions.items()):
                for start, last, revision, changed in sessions:
                    end = last + gap
                    if revision < 0 and changed and watermark < end <= ready:
                        todo.append((session_key, start, last + 1, end))
        else:
            size = spec.window.size
            for start in sorted(self._pending):
                if watermark < start + size <= ready:
                    todo.append((None, start, start + size, start + size))
        done = 0
        for key, start, stop, _ in todo:
            held = self._prepared.get((key, start))
            if held is not None and held[1] is not None and held[0] == stop:
                continue  # prepared and intact
            tries = held[2] if held is not None else 0
            if tries >= MAX_PREPARES:
                continue  # late records keep coming: computed when the watermark passes
            try:
                result: pl.DataFrame | None = self._result(start, stop, key)
            except ContinuousQueryError:
                result = None  # the emission runs it again, and counts a second failure
            self._prepared[(key, start)] = (stop, result, tries + 1)
            done += 1
        self.stats.prepared += done
        return done

    def tick(self, wall: float) -> pl.DataFrame | None:
        """Advance the watermark by the wall clock when the stream has been idle for idle_timeout."""
        if self._idle_from is None:
            return None
        since, max_ts = self._idle_from
        idle_us = int((wall - since) * 1_000_000)
        if idle_us < self.spec.idle_timeout:
            return None
        watermark = max_ts - self.spec.lateness + idle_us
        if self.stats.watermark is not None and watermark <= self.stats.watermark:
            return None
        self._set_watermark(watermark)
        return self._emit()

    def _set_watermark(self, value: int) -> None:
        if self.stats.watermark is None or value > self.stats.watermark:
            self.stats.watermark = value

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """The query's whole state as plain JSON values (a few numbers per open window)."""
        return {
            "max_ts": self._max_ts,
            "watermark": self.stats.watermark,
            "final_until": self._final_until,
            "pending": sorted(self._pending),
            "emitted": [[s, e, r] for s, (e, r) in sorted(self._emitted.items())],
            "touched": sorted(self._touched),
            "sessions": {k: v for k, v in sorted(self._sessions.items())},
            "retractions": [list(r) for r in self._retractions],
            "anomaly": self._detector.checkpoint() if self._detector is not None else None,
        }

    def restore(self, state: dict[str, Any], wall: float) -> None:
        """Continue from :meth:`checkpoint`'s state; the idle clock restarts at ``wall``."""
        self._max_ts = state["max_ts"]
        self.stats.watermark = state["watermark"]
        self._final_until = state["final_until"]
        self._pending = set(state["pending"])
        self._emitted = {s: (e, r) for s, e, r in state["emitted"]}
        self._touched = set(state["touched"])
        self._sessions = {k: [list(x) for x in v] for k, v in state["sessions"].items()}
        self._retractions = [tuple(r) for r in state["retractions"]]
        self._idle_from = None if self._max_ts is None else (wall, self._max_ts)
        if self._detector is not None and state.get("anomaly"):
            self._detector.restore(state["anomaly"])

    # -- windows ---------------------------------------------------------------------------------

    def _reach(self, t: pl.Series) -> pl.Series:
        """Per record, the end of the last window it belongs to (a session: ts + gap)."""
        w = self.spec.window
        if w.is_session:
            return t + w.gap
        return t - t % w.slide + w.size

    def _add_windows(self, t: pl.Series) -> None:
        """Note the windows the records fall in (one set operation per distinct window)."""
        w = self.spec.window
        last = (t - t % w.slide).unique()
        starts: set[int] = set()
        for hop in range(w.size // w.slide):
            starts.update((last - hop * w.slide).to_list())
        final = self._final_until
        for start in starts:
            if final is not None and start + w.size <= final:
                continue  # past correction: the record is too late for this one of its windows
            if start in self._emitted:
                self._touched.add(start)
            else:
                self._pending.add(start)
                self._drop_prepared(None, start)  # new records: the result must be redone

    def _add_sessions(self, frame: pl.DataFrame) -> None:
        """Merge the batch's sessions (runs of records closer than the gap) into each key's."""
        gap = self.spec.window.gap
        runs = (
            frame.sort("__key", _T)
            .with_columns(
                (pl.col(_T).diff().over("__key").fill_null(gap) >= gap)
                .cum_sum()
                .over("__key")
                .alias("__run")
            )
            .group_by("__key", "__run")
            .agg(pl.col(_T).min().alias("start"), pl.col(_T).max().alias("last"))
        )
        for key, _, start, last in runs.iter_rows():
            self._merge_session(key, start, last)

    def _drop_prepared(self, key: str | None, start: int) -> None:
        held = self._prepared.get((key, start))
        if held is not None:
            self._prepared[(key, start)] = (held[0], None, held[2])

    def _merge_session(self, key: str, start: int, last: int) -> None:
        gap = self.spec.window.gap
        sessions = self._sessions.setdefault(key, [])
        merged = [start, last, -1, True]
        keep = []
        for s in sessions:
            if s[0] - merged[1] < gap and merged[0] - s[1] < gap:  # closer than the gap: one
                self._drop_prepared(key, s[0])  # its records changed
                if s[2] >= 0 and s[0] != min(s[0], merged[0]):
                    # An emitted session now starts earlier under another identity: retract it.
                    self._retractions.append((key, s[0], s[1] + gap, s[2] + 1))
                elif s[2] >= 0:
                    merged[2] = s[2]  # same start: the emitted session is corrected
                merged[0] = min(merged[0], s[0])
                merged[1] = max(merged[1], s[1])
            else:
                keep.append(s)
        # A session that kept its start but absorbed earlier-starting emitted ones (handled above)
        # or was itself emitted keeps its revision; an emitted one whose start moved was retracted.
        keep.append(merged)
        keep.sort(key=lambda s: s[0])
        self._sessions[key] = keep

    def _emit(self) -> pl.DataFrame | None:
        if self.stats.watermark is None:
            return None
        results = self._emit_sessions() if self.spec.window.is_session else self._emit_windows()
        self._evict()
        if not results:
            return None
        out = pl.concat(results, how="diagonal_relaxed")
        return self._score(out) if self._detector is not None else out

    def _score(self, out: pl.DataFrame) -> pl.DataFrame:
        """Add ``anomaly_score`` and ``is_anomaly`` (one detector step per result row)."""
        assert self._detector is not None and self.spec.anomaly is not None
        spec = self.spec.anomaly
        if spec.column not in out.columns:
            raise ContinuousQueryError(
                f"continuous query {self.spec.name}: anomaly column {spec.column!r} is not in the "
                f"results (columns: {', '.join(out.columns)})"
            )
        scores: list[float | None] = []
        flags: list[bool] = []
        starts = out.get_column("window_start").cast(pl.Int64).to_list()
        values = out.get_column(spec.column).cast(pl.Float64, strict=False).to_list()
        retracted = out.get_column("retracted").to_list()
        by = out.select(spec.by).rows() if spec.by else [()] * out.height
        for start, value, gone, series in zip(starts, values, retracted, by, strict=True):
            if gone:
                scores.append(None)
                flags.append(False)
                continue
            score, flag = self._detector.score(json.dumps(series, default=str), start, value)
            scores.append(score)
            flags.append(flag)
        return out.with_columns(
            pl.Series("anomaly_score", scores, dtype=pl.Float64),
            pl.Series("is_anomaly", flags, dtype=pl.Boolean),
        )

    def _emit_windows(self) -> list[pl.DataFrame]:
        assert self.stats.watermark is not None
        size = self.spec.window.size
        watermark = self.stats.watermark
        results = []
        for start in sorted(s for s in self._pending if s + size <= watermark):
            self._pending.discard(start)
            if (got := self._run(start, start + size, 0, None)) is not None:
                results.append(got)
            self._emitted[start] = (start + size, 0)
            self.stats.windows += 1
        for start in sorted(self._touched):
            end, revision = self._emitted[start]
            if (got := self._run(start, end, revision + 1, None)) is not None:
                results.append(got)
            self._emitted[start] = (end, revision + 1)
            self.stats.corrections += 1
        self._touched.clear()
        return results

    def _emit_sessions(self) -> list[pl.DataFrame]:
        assert self.stats.watermark is not None
        gap = self.spec.window.gap
        watermark = self.stats.watermark
        results = []
        for key, start, end, revision in self._retractions:
            results.append(self._retraction(start, end, revision, key))
            self.stats.retractions += 1
        self._retractions.clear()
        for key in sorted(self._sessions):
            for s in self._sessions[key]:
                start, last, revision, changed = s
                if not changed or last + gap > watermark:
                    continue
                revision += 1
                if (got := self._run(start, last + 1, revision, key, end=last + gap)) is not None:
                    results.append(got)
                s[2], s[3] = revision, False
                if revision:
                    self.stats.corrections += 1
                else:
                    self.stats.windows += 1
        return results

    def _evict(self) -> None:
        """Forget windows and sessions that can no longer change."""
        assert self.stats.watermark is not None
        horizon = self.stats.watermark - self.spec.allowed_lateness
        if self.spec.window.is_session:
            gap = self.spec.window.gap
            for key in list(self._sessions):
                alive = [s for s in self._sessions[key] if s[3] or s[1] + gap > horizon]
                if alive:
                    self._sessions[key] = alive
                else:
                    del self._sessions[key]
        else:
            for start in [s for s, (end, _) in self._emitted.items() if end <= horizon]:
                del self._emitted[start]
        if self._final_until is None or horizon > self._final_until:
            self._final_until = horizon
        # Prepared results of sessions merged away (or anything else past any change).
        reach = self.spec.window.gap if self.spec.window.is_session else 0
        for k in [k for k, (stop, _, _) in self._prepared.items() if stop + reach <= horizon]:
            del self._prepared[k]

    # -- results ---------------------------------------------------------------------------------

    def _run(
        self,
        start: int,
        stop: int,
        revision: int,
        key: str | None,
        end: int | None = None,
    ) -> pl.DataFrame | None:
        """The SQL over the records with ``start <= ts < stop``; the window ends at ``end``.

        None when the SQL fails twice on the window (a runtime error of the query such as a
        failed cast, or the lake unreadable): the failure is counted and logged, and the query
        goes on with its next windows rather than stopping the stream's delivery.
        """
        held = self._prepared.pop((key, start), None)
        if held is not None and held[1] is not None and held[0] == stop and revision == 0:
            result = held[1]
            self.stats.prepared_used += 1
        else:
            try:
                try:
                    result = self._result(start, stop, key)
                except ContinuousQueryError:
                    result = self._result(start, stop, key)  # once more: it may be transient
            except ContinuousQueryError as exc:
                self._failed(start, key, exc)
                return None
        front = [
            pl.lit(start).cast(pl.Datetime("us")).alias("window_start"),
            pl.lit(stop if end is None else end).cast(pl.Datetime("us")).alias("window_end"),
            pl.lit(revision, pl.Int32).alias("revision"),
            pl.lit(False).alias("retracted"),
        ]
        if self.spec.key:
            front.append(pl.lit(key, pl.String).alias("window_key"))
        if result.height == 0:
            # An empty answer still says the window closed.
            return pl.DataFrame().with_columns(front)
        return result.select(*front, pl.all())

    def _failed(self, start: int, key: str | None, exc: ContinuousQueryError) -> None:
        window = _iso(start) + (f" ({self.spec.key} = {key})" if self.spec.key else "")
        self.stats.failed_windows += 1
        self.stats.errors.append(f"window {window}: {exc}")
        del self.stats.errors[:-10]
        log.warning(
            "continuous query %s: no result for the window at %s: %s",
            self.spec.name,
            window,
            exc,
            extra={"fields": {"query": self.spec.name, "window": window, "reason": str(exc)}},
        )

    def _result(self, start: int, stop: int, key: str | None) -> pl.DataFrame:
        """The query's SQL over the records with ``start <= ts < stop`` (and session ``key``)."""
        if self._execute is not None:
            return _plain_numbers(self._execute(start, stop, key))
        assert self._source is not None
        return self._sql.run(self._source(start, stop, key))

    def _retraction(self, start: int, end: int, revision: int, key: str) -> pl.DataFrame:
        row: dict[str, Any] = {
            "window_start": pl.Series([start]).cast(pl.Datetime("us")),
            "window_end": pl.Series([end]).cast(pl.Datetime("us")),
            "revision": pl.Series([revision], dtype=pl.Int32),
            "retracted": [True],
        }
        if self.spec.key:
            row["window_key"] = [key]
        return pl.DataFrame(row)


class Sandbox:
    """DuckDB for one query's SQL: sees only the relation ``stream`` (no files, no network)."""

    def __init__(self, sql: str, name: str) -> None:
        import duckdb

        self.sql = sql
        self.name = name
        self._lock = threading.Lock()
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET threads = 1")  # many small windows: one thread each is cheaper
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            check_read_only(
                con, sql, ["stream"], ": a continuous query reads only the relation `stream`"
            )
        except QueryError as exc:
            raise ConfigError(
                f"queries.{name}.sql: {exc}; write one SELECT over the relation `stream`"
            ) from exc
        self._con = con

    def run(self, rows: pl.DataFrame) -> pl.DataFrame:
        import duckdb

        table = rows.to_arrow(compat_level=pl.CompatLevel.oldest())
        with self._lock:
            try:
                self._con.register("stream", table)
                try:
                    out: pa.Table = self._con.sql(self.sql).to_arrow_table()
                finally:
                    self._con.unregister("stream")
            except duckdb.Error as exc:
                raise ContinuousQueryError(
                    f"continuous query {self.name} failed on a window: {exc}"
                ) from exc
        return _plain_numbers(pl.DataFrame(pl.from_arrow(out)))


def _plain_numbers(result: pl.DataFrame) -> pl.DataFrame:
    """Types the results table can hold: DuckDB sums integers into HUGEINT (Arrow decimal128(38,
    0)), stored as plain integers; a column that is NULL by type (``max(CASE ... END)`` without
    values) becomes text, since Iceberg v2 has no null type."""
    return result.with_columns(
        [
            pl.col(name).cast(pl.Int64 if dtype.scale == 0 else pl.Float64)
            for name, dtype in result.schema.items()
            if isinstance(dtype, pl.Decimal)
        ]
        + [
            pl.col(name).cast(pl.String)
            for name, dtype in result.schema.items()
            if dtype == pl.Null
        ]
    )


def _iso(micros: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(micros / 1_000_000, UTC).replace(tzinfo=None).isoformat()
