"""The lake writer consumer in-process: real logs, a real catalog, real runners; several streams
writing one table and logs.rejected at once; resuming after a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from loglake.config import Config, load_config, stream_config
from loglake.lake.catalog import open_catalog
from loglake.lake.consumer import LakeConsumer, committed_offset
from loglake.lake.maintenance import COMPACT_EVERY, MaintenanceSchedule
from loglake.lake.tables import Tables
from loglake.query.engine import Connection
from loglake.stream.consumer import ConsumerGroup, ConsumerRunner
from loglake.stream.local import LocalLog
from loglake.supervise import Supervisor
from waiting import wait_for


@pytest.fixture()
def config(home: Path) -> Config:
    return load_config(home)


@pytest.fixture()
def catalog(config: Config) -> Iterator[Future[Any]]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool.submit(open_catalog, config)
    pool.shutdown()


class Lake:
    """Streams with their lake writers, sharing one Tables (as one server process does)."""

    def __init__(self, config: Config, catalog: Future[Any], root: Path) -> None:
        self.config = config
        self.catalog = catalog
        self.root = root
        self.tables = Tables()
        self.runners: list[ConsumerRunner] = []
        self.logs: dict[str, LocalLog] = {}

    def stream(
        self,
        name: str,
        tables: Tables | None = None,
        maintenance: MaintenanceSchedule | None = None,
        **settings: Any,
    ) -> LakeConsumer:
        log = self.logs.get(name) or LocalLog(self.root / name, fsync=False)
        self.logs[name] = log
        group = ConsumerGroup(name, log)
        stream = stream_config(name, {"format": "json", "buffer_seconds": 0.05, **settings})
        consumer = LakeConsumer(
            self.config,
            name,
            stream,
            log,
            self.catalog,
            tables or self.tables,
            maintenance=maintenance,
            on_progress=group.progress,
        )
        runner = group.add(consumer)
        runner.start()
        self.runners.append(runner)
        return consumer

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop()
        self.runners.clear()

    def close(self) -> None:
        self.stop()
        for log in self.logs.values():
            log.close()


@pytest.fixture()
def lake(config: Config, catalog: Future[Any], tmp_path: Path) -> Iterator[Lake]:
    lake = Lake(config, catalog, tmp_path / "streams")
    yield lake
    lake.close()


def query(config: Config, sql: str) -> list[dict[str, Any]]:
    with Connection(config) as con:
        return con.sql(sql).pl().to_dicts()


def records(stream: str, count: int, bad_every: int = 0) -> list[bytes]:
    out = []
    for i in range(count):
        if bad_every and i % bad_every == 0:
            out.append(b"not json " + str(i).encode())  # rejected: goes to logs.rejected
        else:
            out.append(json.dumps({"ts": "2024-05-01T12:00:00Z", "from": stream, "i": i}).encode())
    return out


def test_streams_writing_one_table_and_rejected_commit_without_conflicts(
    config: Config, lake: Lake
) -> None:
    """Four streams write logs.shared and logs.rejected at the same time, in small appends (many
    commits): every commit takes its table's one lock and builds on the newest metadata, so none
    is refused and no stream restarts."""
    names = ["a", "b", "c", "d"]
    consumers = {n: lake.stream(n, table="logs.shared") for n in names}
    for _ in range(15):
        for n in names:
            lake.logs[n].append(records(n, 40, bad_every=10))
    for n in names:
        end = lake.logs[n].next_offset
        wait_for(lambda n=n, end=end: consumers[n].stats.position >= end, f"stream {n} delivered")
    assert [r.stats.failures for r in lake.runners] == [0, 0, 0, 0]
    assert {n: c.stats.delivered for n, c in consumers.items()} == dict.fromkeys(names, 540)
    assert {n: c.stats.rejected for n, c in consumers.items()} == dict.fromkeys(names, 60)
    rows = query(config, 'SELECT "from" AS s, count(*) AS n FROM logs.shared GROUP BY 1 ORDER BY 1')
    assert rows == [{"s": n, "n": 540} for n in names]
    rejected = query(
        config, "SELECT source, count(*) AS n FROM logs.rejected GROUP BY 1 ORDER BY 1"
    )
    assert rejected == [{"source": f"stream:{n}", "n": 60} for n in names]


def test_a_restarted_writer_resumes_exactly_and_reports_no_lag(
    config: Config, catalog: Future[Any], lake: Lake
) -> None:
    consumer = lake.stream("app", table="logs.app")
    log = lake.logs["app"]
    log.append(records("app", 500))  # no rejected record: logs.rejected has no offset of "app"
    wait_for(lambda: consumer.stats.position == 500, "the first commit")
    lake.stop()
    table = catalog.result().load_table("logs.app")
    assert committed_offset(table, "app") == 500
    assert not catalog.result().table_exists("logs.rejected")

    again = lake.stream("app", table="logs.app")  # a restart with nothing new
    wait_for(lambda: lake.runners[0].ready.is_set(), "the writer resumed")
    # Everything is delivered: no lag (it used to count the whole log again as undelivered).
    assert again.stats.position == 500
    assert again.committed() == 500
    log.append(records("app", 10))
    wait_for(lambda: again.stats.position == 510, "the new records")
    assert again.stats.delivered == 10
    assert query(config, "SELECT count(*) AS n, count(DISTINCT line) AS d FROM logs.app") == [
        {"n": 510, "d": 510}
    ]


@pytest.mark.slow
def test_one_maintenance_schedule_compacts_a_table_two_streams_write(
    config: Config, catalog: Future[Any], lake: Lake
) -> None:
    tables = Tables()
    schedule = MaintenanceSchedule(lambda: catalog.result(), tables)
    supervisor = Supervisor()
    supervisor.spawn("maintenance", schedule.run)
    try:
        left = lake.stream("left", tables, schedule, table="logs.both", buffer_records=10)
        right = lake.stream("right", tables, schedule, table="logs.both", buffer_records=10)
        commits = 3 * COMPACT_EVERY
        for i in range(commits):
            for name, consumer in (("left", left), ("right", right)):
                log = lake.logs[name]
                log.append(records(name, 10))
                end = log.next_offset
                wait_for(lambda c=consumer, e=end: c.stats.position >= e, f"commit {i} of {name}")
        stats = schedule.stats()
        assert set(stats) == {"logs.both"}  # one schedule entry, however many streams write it
        wait_for(lambda: stats["logs.both"].compacted_files > 0, "a compaction of logs.both")
        assert stats["logs.both"].failures == 0
    finally:
        schedule.stop()
        supervisor.stop()
    assert query(config, "SELECT count(*) AS n FROM logs.both") == [{"n": 2 * commits * 10}]
