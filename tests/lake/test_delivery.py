"""Stream delivery in-process: a real durable log, a real catalog, the real consumer thread.

A record that does not fit its table (type drift) is rejected with its raw bytes and a reason,
and the records behind it land: one record can never stall a stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pyiceberg.types import IntegerType

from loglake.config import Config, load_config, stream_config
from loglake.errors import is_transient
from loglake.lake.catalog import open_catalog
from loglake.lake.tables import Tables
from loglake.query.engine import Connection
from loglake.server.delivery import Delivery
from loglake.stream.local import LocalLog
from waiting import wait_for


@pytest.fixture()
def config(home: Path) -> Config:
    return load_config(home)


@pytest.fixture()
def stream_log(tmp_path: Path) -> Iterator[LocalLog]:
    log = LocalLog(tmp_path / "stream", fsync=False)
    yield log
    log.close()


@pytest.fixture()
def deliver(config: Config, stream_log: LocalLog) -> Iterator[Callable[..., Delivery]]:
    """``deliver(**settings)``: a started Delivery of stream ``app`` on ``stream_log``."""
    started: list[Delivery] = []
    pool = ThreadPoolExecutor(max_workers=1)

    def start(**settings: Any) -> Delivery:
        catalog: Future[Any] = pool.submit(open_catalog, config)
        stream = stream_config("app", {"format": "json", "buffer_seconds": 0.1, **settings})
        delivery = Delivery(config, "app", stream, stream_log, catalog, Tables())
        delivery.start()
        started.append(delivery)
        return delivery

    yield start
    for delivery in started:
        delivery.stop()
    pool.shutdown()


def query(config: Config, sql: str) -> list[dict[str, Any]]:
    with Connection(config) as con:
        return con.sql(sql).pl().to_dicts()


def line(**fields: Any) -> bytes:
    return json.dumps({"ts": "2024-05-01T12:00:00Z", **fields}).encode()


def test_a_drifting_record_is_rejected_and_the_stream_goes_on(
    config: Config, stream_log: LocalLog, deliver: Callable[..., Delivery]
) -> None:
    delivery = deliver()
    stream_log.append([line(n=1)])
    wait_for(lambda: delivery.stats.position >= 1, "the first record's commit")
    # `n` is a BIGINT column now; "abc" cannot be stored in it.
    stream_log.append([line(n="abc", why="drift")])
    stream_log.append([line(n=i, seq=i) for i in range(1000)])
    end = stream_log.next_offset
    wait_for(lambda: delivery.stats.position >= end, "every record's commit")

    assert delivery.stats.delivered == 1001 and delivery.stats.rejected == 1
    assert query(config, 'SELECT count(*) AS n, count(seq) AS seq FROM "logs"."json"') == [
        {"n": 1001, "seq": 1000}
    ]
    assert query(config, "SELECT line, reason, raw, target_table FROM logs.rejected") == [
        {
            "line": 1,
            "reason": 'type drift: column "n" is BIGINT, this record has string "abc"',
            "raw": line(n="abc", why="drift"),
            "target_table": "logs.json",
        }
    ]


def test_keys_differing_only_in_case_fill_one_column(
    config: Config, stream_log: LocalLog, deliver: Callable[..., Delivery]
) -> None:
    delivery = deliver()
    stream_log.append([line(ip="10.0.0.1")])
    wait_for(lambda: delivery.stats.position >= 1, "the first commit")
    stream_log.append([line(IP="10.0.0.2"), line(Ip="10.0.0.3", ip="10.0.0.3")])
    stream_log.append([line(IP="10.0.0.4", ip="10.0.0.5")])  # two values for one column
    end = stream_log.next_offset
    wait_for(lambda: delivery.stats.position >= end, "every record's commit")

    rows = query(config, 'SELECT ip FROM "logs"."json" ORDER BY line')
    assert rows == [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}]
    with Connection(config) as con:
        names = con.sql('SELECT * FROM "logs"."json" LIMIT 0').columns
    assert [n for n in names if n.lower() == "ip"] == ["ip"]
    assert query(config, "SELECT line, reason FROM logs.rejected") == [
        {
            "line": 3,
            "reason": 'keys "IP" and "ip" differ only in case and hold different values '
            "(column names are case-insensitive)",
        }
    ]


def test_rows_a_data_file_cannot_hold_are_rejected_one_by_one(
    config: Config, stream_log: LocalLog, deliver: Callable[..., Delivery]
) -> None:
    """The safety net behind conformance: a write that fails for its data is not retried
    forever; the rows that fail alone are rejected with their raw bytes, the others written."""
    delivery = deliver()
    records = [line(small=i) for i in range(8)]
    first, _ = stream_log.append(records)
    end = stream_log.next_offset
    wait_for(lambda: delivery.stats.position >= end, "the records' commit")
    lake = delivery.lake
    writer = lake._writers["logs.json"]
    with lake._tables.get("logs.json").lock:
        with writer.table.update_schema() as update:
            update.add_column("tiny", IntegerType())
        writer.table = writer.catalog.load_table("logs.json")
    # Rows that did not pass conformance: one value is beyond the INTEGER column's range.
    frame = pl.DataFrame(
        {
            "tiny": pl.Series([1, 2, 3, 2**40, 5, 6, 7, 8], dtype=pl.Int64),
            "line": pl.int_range(first, first + 8, eager=True),
        }
    )
    delivered = delivery.stats.delivered
    lake._commit_sealed({"logs.json": [frame]}, end, None)

    assert query(config, 'SELECT sum(tiny)::BIGINT AS s FROM "logs"."json"') == [{"s": 32}]
    rejected = query(config, "SELECT line, reason, raw FROM logs.rejected")
    assert [(r["line"], r["raw"]) for r in rejected] == [(first + 3, records[3])]
    assert rejected[0]["reason"].startswith("cannot be written to logs.json: ")
    # Counted once committed: the 7 rows written as delivered, the refused one as rejected.
    assert (delivery.stats.delivered, delivery.stats.rejected) == (delivered + 7, 1)


def test_transient_errors_are_told_from_data_errors() -> None:
    import sqlite3

    assert is_transient(OSError(28, "No space left on device"))
    assert is_transient(sqlite3.OperationalError("database is locked"))
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as exc:
            raise ValueError("commit failed") from exc
    except ValueError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(ValueError("cannot cast"))
    assert not is_transient(KeyError("element_type"))
