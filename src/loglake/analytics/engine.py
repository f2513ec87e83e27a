"""Continuous queries: SQL over event-time windows of a stream, emitted as the watermark passes.

One :class:`ContinuousQuery` holds the state of one query: the records of windows still open (or
still accepting corrections) and which windows have been emitted. It is fed parsed batches
(:meth:`ContinuousQuery.process`) and a clock (:meth:`ContinuousQuery.tick`), and returns result
rows: the query's SQL run over each window's records, visible as the relation ``stream``, with
``window_start``, ``window_end`` and ``revision`` in front.

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
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from loglake.analytics.windows import WindowSpec
from loglake.errors import ConfigError, LoglakeError

TS = "ts"
_T = "__ts_us"  # event time as integer microseconds, the engine's working column
_NONE_KEY = "\x00"  # group key of unkeyed sessions


class ContinuousQueryError(LoglakeError):
    """A continuous query's SQL failed on a window's records."""


@dataclass(frozen=True)
class QuerySpec:
    """What a continuous query computes. Durations are microseconds."""

    name: str
    sql: str
    window: WindowSpec
    lateness: int = 5_000_000
    allowed_lateness: int = 60_000_000
    idle_timeout: int = 10_000_000
    key: str | None = None  # session windows: one session per value of this column

    def __post_init__(self) -> None:
        if self.key and not self.window.is_session:
            raise ConfigError(
                f"queries.{self.name}: key is for session windows; tumbling and hopping windows "
                "group with GROUP BY in the SQL"
            )
        if self.lateness < 0 or self.allowed_lateness < 0 or self.idle_timeout <= 0:
            raise ConfigError(
                f"queries.{self.name}: lateness and allowed_lateness must be >= 0, idle_timeout > 0"
            )


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
    errors: list[str] = field(default_factory=list)


class ContinuousQuery:
    """The state of one continuous query; not thread-safe (one caller feeds it)."""

    def __init__(self, spec: QuerySpec) -> None:
        self.spec = spec
        self.stats = QueryStats()
        self._rows: pl.DataFrame | None = None  # records of open and correctable windows
        self._max_ts: int | None = None
        self._idle_from: tuple[float, int] | None = None  # (wall time, max_ts) of the last record
        # Emitted windows still accepting corrections: (start, key) -> (end, revision).
        self._emitted: dict[tuple[int, str], tuple[int, int]] = {}
        self._counts: dict[tuple[int, str], int] = {}  # records of emitted sessions
        # Every window ending at or before this has had its final result (emitted, then forgotten
        # once past correction): it is never emitted again, whatever its records.
        self._final_until: int | None = None
        self._sql = _Sandbox(spec.sql, spec.name)

    # -- feeding ---------------------------------------------------------------------------------

    @property
    def watermark(self) -> int | None:
        """Highest ts seen minus lateness (advanced by the wall clock when idle), microseconds."""
        return self.stats.watermark

    def process(self, frame: pl.DataFrame, wall: float) -> pl.DataFrame | None:
        """Take a parsed batch; return the result rows it completes or corrects (None if none).

        ``frame`` must have a ``ts`` column (event time, zone-less UTC microseconds or a datetime);
        rows without one are counted and skipped. ``wall`` is the current time.time().
        """
        if frame.height == 0:
            return self.tick(wall)
        ts = frame.get_column(TS).cast(pl.Datetime("us")).cast(pl.Int64)
        frame = frame.with_columns(ts.alias(_T))
        missing = frame.get_column(_T).null_count()
        if missing:
            self.stats.no_time += missing
            frame = frame.filter(pl.col(_T).is_not_null())
        if frame.height == 0:
            return self.tick(wall)
        spec = self.spec
        before = self.stats.watermark
        if before is not None:
            reach = self._reach(frame)  # the latest moment each record's window can still close
            late = reach + spec.allowed_lateness <= before
            n_late = int(late.sum())
            if n_late:
                self.stats.too_late += n_late
                frame = frame.filter(~late)
        if frame.height == 0:
            return self.tick(wall)
        self.stats.records += frame.height
        touched = self._touched(frame)
        self._rows = frame if self._rows is None else pl.concat([self._rows, frame], how="diagonal")
        newest = int(frame.get_column(_T).max())  # type: ignore[arg-type]
        if self._max_ts is None or newest > self._max_ts:
            self._max_ts = newest
        self._idle_from = (wall, self._max_ts)
        self._set_watermark(self._max_ts - spec.lateness)
        return self._emit(touched)

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
        return self._emit(set())

    def _set_watermark(self, value: int) -> None:
        if self.stats.watermark is None or value > self.stats.watermark:
            self.stats.watermark = value

    # -- windows ---------------------------------------------------------------------------------

    def _reach(self, frame: pl.DataFrame) -> pl.Series:
        """Per record, the end of the last window it belongs to (a session: ts + gap)."""
        t = frame.get_column(_T)
        w = self.spec.window
        if w.is_session:
            return t + w.gap
        return t - t % w.slide + w.size

    def _touched(self, frame: pl.DataFrame) -> set[tuple[int, str]]:
        """Emitted windows that the records of ``frame`` fall into (they need a correction)."""
        if not self._emitted:
            return set()
        w = self.spec.window
        if w.is_session:
            return set()  # sessions are recomputed from their records (see _emit_sessions)
        starts = set()
        for ts in frame.get_column(_T).unique().to_list():
            for start in w.starts(ts):
                if (start, _NONE_KEY) in self._emitted:
                    starts.add((start, _NONE_KEY))
        return starts

    def _emit(self, touched: set[tuple[int, str]]) -> pl.DataFrame | None:
        if self._rows is None or self.stats.watermark is None:
            return None
        out = self._emit_sessions() if self.spec.window.is_session else self._emit_windows(touched)
        self._evict()
        return out

    def _emit_windows(self, touched: set[tuple[int, str]]) -> pl.DataFrame | None:
        assert self._rows is not None and self.stats.watermark is not None
        w = self.spec.window
        watermark = self.stats.watermark
        t = self._rows.get_column(_T)
        # Every window start any buffered record belongs to, then those that have closed.
        last = t - t % w.slide
        starts: set[int] = set()
        for hop in range(w.size // w.slide):
            starts.update((last - hop * w.slide).unique().to_list())
        final = self._final_until
        due = sorted(
            s
            for s in starts
            if s + w.size <= watermark
            and (final is None or s + w.size > final)
            and ((s, _NONE_KEY) not in self._emitted or (s, _NONE_KEY) in touched)
        )
        results = []
        for start in due:
            end = start + w.size
            rows = self._rows.filter((pl.col(_T) >= start) & (pl.col(_T) < end))
            previous = self._emitted.get((start, _NONE_KEY))
            revision = 0 if previous is None else previous[1] + 1
            results.append(self._run(rows, start, end, revision, None))
            self._emitted[(start, _NONE_KEY)] = (end, revision)
            if revision:
                self.stats.corrections += 1
            else:
                self.stats.windows += 1
        return pl.concat(results, how="diagonal_relaxed") if results else None

    def _emit_sessions(self) -> pl.DataFrame | None:
        """Recompute the sessions of the buffered records; emit the closed ones that changed."""
        assert self._rows is not None and self.stats.watermark is not None
        spec = self.spec
        gap = spec.window.gap
        key = spec.key
        keyed = (
            self._rows.with_columns(
                pl.col(key).cast(pl.String).fill_null("").alias("__key")
                if key
                else pl.lit(_NONE_KEY).alias("__key")
            )
            .sort("__key", _T)
            .with_columns(
                (
                    (pl.col(_T).diff().over("__key").fill_null(gap) >= gap).cum_sum().over("__key")
                ).alias("__session")
            )
        )
        bounds = (
            keyed.group_by("__key", "__session")
            .agg(
                pl.col(_T).min().alias("start"), pl.col(_T).max().alias("last"), pl.len().alias("n")
            )
            .sort("start", "__key")
        )
        results = []
        current: dict[tuple[int, str], tuple[int, int]] = {}
        for k, session, start, last, n in bounds.iter_rows():
            end = last + gap
            if end > self.stats.watermark:
                continue  # still open
            ident = (start, k)
            current[ident] = (end, n)
            previous = self._emitted.get(ident)
            if previous is not None and previous[0] == end and self._counts.get(ident) == n:
                continue  # emitted already, unchanged
            rows = keyed.filter((pl.col("__key") == k) & (pl.col("__session") == session))
            revision = 0 if previous is None else previous[1] + 1
            results.append(self._run(rows.drop("__key", "__session"), start, end, revision, k))
            self._emitted[ident] = (end, revision)
            self._counts[ident] = n
            if revision:
                self.stats.corrections += 1
            else:
                self.stats.windows += 1
        # Emitted sessions that a late record merged into another one: retract them.
        for ident in [i for i in self._emitted if i not in current]:
            end, revision = self._emitted[ident]
            if end + spec.allowed_lateness <= self.stats.watermark:
                continue  # expired normally (its records were evicted): nothing changed
            start, k = ident
            results.append(self._retraction(start, end, revision + 1, k))
            del self._emitted[ident]
            self._counts.pop(ident, None)
            self.stats.retractions += 1
        return pl.concat(results, how="diagonal_relaxed") if results else None

    def _evict(self) -> None:
        """Forget records and emitted windows that can no longer change."""
        assert self._rows is not None and self.stats.watermark is not None
        horizon = self.stats.watermark - self.spec.allowed_lateness
        if self.spec.window.is_session:
            # A session's records go once its end (last record + gap) is past correction.
            gap = self.spec.window.gap
            key = self.spec.key
            ends = self._rows.with_columns(
                (pl.col(key).cast(pl.String).fill_null("") if key else pl.lit(_NONE_KEY)).alias(
                    "__key"
                )
            ).sort("__key", _T)
            ends = ends.with_columns(
                (
                    (pl.col(_T).diff().over("__key").fill_null(gap) >= gap).cum_sum().over("__key")
                ).alias("__session")
            )
            ends = ends.with_columns(
                (pl.col(_T).max().over("__key", "__session") + gap).alias("__end")
            )
            self._rows = ends.filter(pl.col("__end") > horizon).drop("__key", "__session", "__end")
        else:
            self._rows = self._rows.filter(self._reach(self._rows) > horizon)
        for ident in [i for i, (end, _) in self._emitted.items() if end <= horizon]:
            del self._emitted[ident]
            self._counts.pop(ident, None)
        if self._final_until is None or horizon > self._final_until:
            self._final_until = horizon

    # -- results ---------------------------------------------------------------------------------

    def _run(
        self, rows: pl.DataFrame, start: int, end: int, revision: int, key: str | None
    ) -> pl.DataFrame:
        result = self._sql.run(rows.drop(_T))
        front = [
            pl.lit(start).cast(pl.Datetime("us")).alias("window_start"),
            pl.lit(end).cast(pl.Datetime("us")).alias("window_end"),
            pl.lit(revision, pl.Int32).alias("revision"),
            pl.lit(False).alias("retracted"),
        ]
        if self.spec.key:
            front.append(pl.lit(key, pl.String).alias("window_key"))
        if result.height == 0:
            # An empty answer still says the window closed (a correction may empty a group).
            return pl.DataFrame().with_columns(front)
        return result.select(*front, pl.all())

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


class _Sandbox:
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
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise ConfigError(f"queries.{name}: the SQL does not parse: {exc}") from exc
        if len(statements) != 1 or statements[0].type.name != "SELECT":
            raise ConfigError(
                f"queries.{name}: the SQL must be one SELECT over the relation `stream`"
            )
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
        return pl.DataFrame(pl.from_arrow(out))
