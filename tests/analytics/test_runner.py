"""The continuous-query runner in-process: records committed to a real lake table are fed to it as
a stream's delivery does; its windows equal batch SQL over the same rows, its results commit with
the state and offset they cover, and a restarted runner resumes from the lake without emitting a
window twice or missing one.

The wall clock handed to the runner is fixed, so windows close by event time alone (no idle
timeout fires) until the test moves that clock on: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from loglake.analytics.runner import STATE_PROPERTY, QueryRunner
from loglake.config import Config, load_config
from loglake.lake.catalog import ensure_namespace, open_catalog
from loglake.lake.consumer import offset_property
from loglake.lake.tables import Tables
from loglake.query.engine import Connection
from loglake.query.plan import plan_hook, refresh_plans

STREAM = "web"
SOURCE = "logs.web"
T0 = datetime(2024, 3, 1, 10, 0, 0)
WALL = 1_700_000_000.0  # the runner's clock: fixed, so only event time closes windows
LATER = WALL + 3600  # far past every idle timeout: closes whatever is still open
CONFIG = """
[streams.web]
format = "combined"

[queries.tumbling]
stream = "web"
window = "tumbling 10s"
sql = "SELECT status, count(*) AS hits, sum(bytes) AS bytes FROM stream GROUP BY status"
lateness = "2s"
allowed_lateness = "1m"
idle_timeout = "5s"
"""
HOPPING = """
[queries.hopping]
stream = "web"
window = "hopping 20s every 10s"
sql = "SELECT count(*) AS hits, sum(bytes) AS bytes FROM stream"
lateness = "2s"
allowed_lateness = "1m"
idle_timeout = "5s"
"""
SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("us")),
        pa.field("line", pa.int64()),
        pa.field("source", pa.string()),
        pa.field("status", pa.int32()),
        pa.field("bytes", pa.int64()),
    ]
)


def recorded_stream(seed: int = 3, seconds: int = 60) -> pl.DataFrame:
    """Records over ``seconds`` of event time, in arrival order (``line`` = arrival position):
    jittered by up to 1.5 s, and 4 % held back 15-25 s (after their window was emitted, within
    the allowed lateness), so windows are corrected."""
    rng = random.Random(seed)
    arrivals = []
    for i in range(seconds * 4):
        ts = T0 + timedelta(milliseconds=250 * i + rng.randint(0, 249))
        delay = rng.uniform(15, 25) if rng.random() < 0.04 else rng.uniform(0, 1.5)
        arrivals.append((ts + timedelta(seconds=delay), ts))
    arrivals.sort()
    return pl.DataFrame(
        {
            "ts": [ts for _, ts in arrivals],
            "line": list(range(len(arrivals))),
            "source": [f"stream:{STREAM}"] * len(arrivals),
            "status": [rng.choice([200, 200, 304, 404, 500]) for _ in arrivals],
            "bytes": [rng.randint(0, 5000) for _ in arrivals],
        },
        schema={
            "ts": pl.Datetime("us"),
            "line": pl.Int64,
            "source": pl.String,
            "status": pl.Int32,
            "bytes": pl.Int64,
        },
    )


class Lake:
    """The lake of one test: the source table the stream's delivery writes, and runners on it."""

    def __init__(self, home: Path, config: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "loglake.toml").write_text(config)
        self.config: Config = load_config(home=home, environ={})
        self.catalog = open_catalog(self.config)
        ensure_namespace(self.catalog, "logs")
        self.table = self.catalog.create_table(SOURCE, schema=SCHEMA)
        # An other stream's rows in the same table: the queries must not see them.
        other = recorded_stream(seed=99).with_columns(pl.lit("stream:other").alias("source"))
        self.commit(other)
        self.runners: list[QueryRunner] = []

    def commit(self, rows: pl.DataFrame) -> None:
        """Commit ``rows`` to the source table, as delivery does before it feeds the queries."""
        self.table.append(rows.to_arrow().cast(SCHEMA))
        refresh_plans(self.config, {SOURCE: self.table})

    def runner(self) -> QueryRunner:
        """A new runner on the stream, as delivery makes one (with the plan-cache hook)."""
        future: Future[Any] = Future()
        future.set_result(self.catalog)
        tables = Tables()
        tables.on_commit(plan_hook(self.config))
        runner = QueryRunner(self.config, STREAM, SOURCE, future, tables)
        self.runners.append(runner)
        return runner

    def sql(self, sql: str) -> list[tuple[Any, ...]]:
        with Connection(self.config) as con:
            return sorted(con.sql(sql).fetchall())

    def stop(self, runner: QueryRunner) -> None:
        self.runners.remove(runner)
        runner.close()

    def close(self) -> None:
        for runner in list(self.runners):
            self.stop(runner)


@pytest.fixture()
def lake(tmp_path: Path) -> Iterator[Lake]:
    lake = Lake(tmp_path / "lake", CONFIG)
    yield lake
    lake.close()


def deliver(
    lake: Lake, runner: QueryRunner, records: pl.DataFrame, batch: int = 20
) -> list[int | None]:
    """Commit ``records`` batch by batch and feed each batch once committed; min_offset after
    each feed."""
    offsets = []
    for start in range(0, records.height, batch):
        rows = records.slice(start, batch)
        lake.commit(rows)
        position = int(rows.get_column("line").max()) + 1  # type: ignore[arg-type]
        runner.feed([(rows.select("line", "ts"), WALL)], position, WALL)
        offsets.append(runner.min_offset())
    return offsets


def batch(records: pl.DataFrame, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` over ``records`` (the relation ``records``) in DuckDB, rows sorted."""
    con = duckdb.connect()
    try:
        con.register("records", records.to_arrow())
        return sorted(con.execute(sql).fetchall())
    finally:
        con.close()


def batch_tumbling(records: pl.DataFrame) -> list[tuple[Any, ...]]:
    """The tumbling query's SQL per 10 s window, run in batch over all of the stream's rows."""
    return batch(
        records,
        "SELECT time_bucket(INTERVAL 10 SECOND, ts) AS ws, status, count(*) AS hits, "
        "sum(bytes)::BIGINT AS bytes FROM records GROUP BY ALL",
    )


def batch_hopping(records: pl.DataFrame) -> list[tuple[Any, ...]]:
    """Per 20 s window starting every 10 s: count and sum over all of the stream's rows."""
    return batch(
        records,
        "WITH starts AS (SELECT DISTINCT unnest([b, b - INTERVAL 10 SECOND]) AS ws FROM "
        "(SELECT time_bucket(INTERVAL 10 SECOND, ts) AS b FROM records)) "
        "SELECT ws, count(*) AS hits, sum(bytes)::BIGINT AS bytes FROM starts "
        "JOIN records r ON r.ts >= ws AND r.ts < ws + INTERVAL 20 SECOND GROUP BY ws",
    )


def final_tumbling(lake: Lake) -> list[tuple[Any, ...]]:
    """The latest revision of each window of analytics.tumbling, as the lake holds it."""
    return lake.sql(
        "SELECT window_start, status, hits, bytes::BIGINT FROM analytics.tumbling "
        "QUALIFY revision = max(revision) OVER (PARTITION BY window_start)"
    )


def test_windows_equal_batch_sql_over_the_same_rows(lake: Lake) -> None:
    records = recorded_stream()
    runner = lake.runner()
    q = runner.queries["tumbling"]
    offsets = deliver(lake, runner, records)
    assert q.engine.stats.windows == 5  # the last window waits for the watermark
    runner.feed([], records.height, LATER)  # the stream goes idle: the last window closes
    stats = q.engine.stats
    assert (stats.windows, stats.records, stats.too_late) == (6, records.height, 0)
    assert stats.corrections > 0  # late records re-emitted their windows
    assert final_tumbling(lake) == batch_tumbling(records)
    # The results in memory are the lake's rows.
    in_memory = {(r["window_start"], r["status"], r["revision"], r["hits"]) for r in q.latest(1000)}
    in_lake = lake.sql("SELECT window_start, status, revision, hits FROM analytics.tumbling")
    assert in_memory == {(ws.isoformat(), s, rev, h) for ws, s, rev, h in in_lake}
    assert q.results == len(in_lake)
    # The log may be trimmed up to the records every query's committed state covers; feeds that
    # emitted nothing leave that point where it was.
    assert offsets[0] is None  # nothing committed yet: the queries need everything
    assert [o for o in offsets if o is not None] == sorted(o for o in offsets if o is not None)
    assert len(set(offsets)) < len(offsets)
    assert runner.min_offset() == records.height


def test_each_results_commit_carries_its_offset_and_state(lake: Lake) -> None:
    records = recorded_stream()
    runner = lake.runner()
    deliver(lake, runner, records)
    table = lake.catalog.load_table("analytics.tumbling")
    offsets = []
    for snap in table.snapshots():
        props = snap.summary.additional_properties if snap.summary else {}
        if offset_property(STREAM) in props:
            assert STATE_PROPERTY in props
            offsets.append(int(props[offset_property(STREAM)]))
    assert offsets == sorted(offsets) and offsets[-1] == runner.min_offset()
    assert all(o % 20 == 0 or o == records.height for o in offsets)  # batch ends only


def test_a_restarted_runner_resumes_from_the_lake(lake: Lake) -> None:
    records = recorded_stream()
    first = lake.runner()
    assert first.resume() is None  # no results yet: start wherever delivery starts
    # Deliver until a feed that emitted nothing: records the committed state does not cover are
    # then in the lake, and a crash here must neither lose nor repeat their windows.
    cut = 0
    for start in range(0, records.height, 20):
        rows = records.slice(start, 20)
        lake.commit(rows)
        cut = start + rows.height
        first.feed([(rows.select("line", "ts"), WALL)], cut, WALL)
        committed = first.min_offset()
        if start >= 80 and committed is not None and committed < cut:
            break
    assert committed is not None and committed < cut < records.height
    before = set(lake.sql("SELECT window_start, status, revision FROM analytics.tumbling"))
    lake.stop(first)

    second = lake.runner()  # a restart: the new runner knows only what the lake holds
    assert second.resume() == committed == second.min_offset()
    q = second.queries["tumbling"]
    # Delivery reads the log again from that offset; records below `cut` are in the lake already.
    replay = records.filter(pl.col("line") >= committed)
    older = records.filter(pl.col("line") == committed - 1).select("line", "ts")
    for start in range(0, replay.height, 20):
        rows = replay.slice(start, 20)
        if (new := rows.filter(pl.col("line") >= cut)).height:
            lake.commit(new)
        position = int(rows.get_column("line").max()) + 1  # type: ignore[arg-type]
        # With an older record too: a query takes only the records its state does not cover.
        second.feed([(older, WALL), (rows.select("line", "ts"), WALL)], position, WALL)
    second.feed([], records.height, LATER)
    assert q.engine.stats.records == records.height - committed
    assert final_tumbling(lake) == batch_tumbling(records)
    after = lake.sql("SELECT window_start, status, revision FROM analytics.tumbling")
    assert len(after) == len(set(after))  # no window emitted twice
    assert before <= set(after)


@pytest.mark.slow
def test_several_queries_of_a_stream_each_equal_batch(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake", CONFIG + HOPPING)
    try:
        records = recorded_stream(seed=5)
        runner = lake.runner()
        assert sorted(runner.queries) == ["hopping", "tumbling"]
        deliver(lake, runner, records)
        runner.feed([], records.height, LATER)
        assert final_tumbling(lake) == batch_tumbling(records)
        hopping = lake.sql(
            "SELECT window_start, hits, bytes::BIGINT FROM analytics.hopping "
            "QUALIFY revision = max(revision) OVER (PARTITION BY window_start)"
        )
        assert hopping == batch_hopping(records)
        assert runner.queries["hopping"].engine.stats.windows == 7  # 20 s every 10 s over 60 s
    finally:
        lake.close()


def test_a_window_end_crossed_by_new_records_asks_for_a_commit_now(lake: Lake) -> None:
    runner = lake.runner()

    def micros(seconds: float) -> int:
        return int((T0 + timedelta(seconds=seconds) - datetime(1970, 1, 1)).total_seconds() * 1e6)

    # Window ends at 10 s, lateness 2 s: the watermark passes it once records reach 12 s.
    assert runner.window_closes(micros(3)) is False  # the first records set where it stands
    assert runner.window_closes(micros(11.9)) is False
    assert runner.window_closes(micros(12)) is True
    assert runner.window_closes(micros(12.5)) is False  # that end was already crossed
    assert runner.window_closes(micros(5)) is False  # an older record moves nothing back
    assert runner.window_closes(micros(22)) is True


def in_order(seconds: int = 60) -> pl.DataFrame:
    """Four records a second, in event-time order (``line`` = position)."""
    return (
        recorded_stream(seconds=seconds)
        .sort("ts")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("line"))
    )


def test_windows_are_prepared_before_they_close_and_emitted_as_prepared(lake: Lake) -> None:
    records = in_order(seconds=30)
    runner = lake.runner()
    q = runner.queries["tumbling"]
    # One second of records per commit: after the one that ends 1-2 s past a window's end, the
    # window's SQL runs (prepare); the next one moves the watermark past it: emitted as prepared.
    deliver(lake, runner, records, batch=4)
    runner.feed([], records.height, LATER)
    stats = q.engine.stats
    assert (stats.windows, stats.corrections) == (3, 0)
    assert stats.prepared == stats.prepared_used == 2  # all but the last, closed by the clock
    assert final_tumbling(lake) == batch_tumbling(records)


def test_prepared_windows_go_out_before_the_records_closing_them_are_committed(
    lake: Lake,
) -> None:
    records = in_order(seconds=30)
    runner = lake.runner()
    q = runner.queries["tumbling"]
    early = []
    for start in range(0, records.height, 4):
        rows = records.slice(start, 4)
        # As delivery does: records just parsed (not committed) that cross a window's end are
        # shown to the runner first; a window prepared and untouched by them goes out now.
        if runner.window_closes(int(rows.get_column("ts").cast(pl.Int64).max())):  # type: ignore[arg-type]
            before = q.engine.stats.emitted_early
            runner.emit_prepared([rows.select("line", "ts")], WALL)
            early.append(q.engine.stats.emitted_early - before)
            if early[-1]:  # committed with the offset the query's state covers: not these records
                assert runner.min_offset() == start
        lake.commit(rows)
        runner.feed([(rows.select("line", "ts"), WALL)], start + rows.height, WALL)
    runner.feed([], records.height, LATER)
    # Each window as soon as the watermark would pass it (the first crossing is the end of the
    # empty window before the first record).
    assert early == [0, 1, 1]
    stats = q.engine.stats
    assert (stats.windows, stats.emitted_early, stats.corrections) == (3, 2, 0)
    assert final_tumbling(lake) == batch_tumbling(records)
    revisions = lake.sql("SELECT DISTINCT window_start, revision FROM analytics.tumbling")
    assert len(revisions) == 3  # once each
