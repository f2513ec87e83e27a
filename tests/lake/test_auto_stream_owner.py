"""Which table an ``auto`` stream's formats go to, across a restart: the stream's table keeps the
family of formats of its first batch even when the stream's own first commit never happened (a
crash after another format's table committed), so no record is written to two tables."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from test_lake_consumer import Lake, query

from loglake.config import Config, load_config
from loglake.lake.catalog import list_tables, open_catalog
from waiting import wait_for


@pytest.fixture()
def config(home: Path) -> Config:
    return load_config(home, environ={})


@pytest.fixture()
def catalog(config: Config) -> Iterator[Future[Any]]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool.submit(open_catalog, config)
    pool.shutdown()


def _access(i: int) -> bytes:
    return (
        f'10.0.0.{i} - - [17/May/2015:10:05:00 +0000] "GET /{i} HTTP/1.1" 200 {i} "-" "c"'.encode()
    )


def _syslog(i: int) -> bytes:
    return f"<34>1 2015-05-17T10:06:00.000Z h{i}.example.com su {i} ID - record {i}".encode()


def test_the_owner_survives_a_crash_before_the_stream_tables_first_commit(
    config: Config, catalog: Future[Any], tmp_path: Path
) -> None:
    lake = Lake(config, catalog, tmp_path / "streams")
    try:
        mix = lake.stream("mix", format="auto")
        first = [_access(i) for i in range(6)] + [_syslog(i) for i in range(6, 9)]
        lake.logs["mix"].append(first)
        wait_for(lambda: mix.stats.position >= 9, "the first batch committed")
        lake.stop()
        # As if the server died after logs.syslog's commit and before logs.mix's: the stream's
        # table never got its rows. A restart reads the records again, now with a syslog
        # majority among them; the access formats must stay the owner.
        catalog.result().drop_table("logs.mix")
        lake.logs["mix"].append([_syslog(i) for i in range(9, 20)])
        again = lake.stream("mix", format="auto")
        wait_for(lambda: again.stats.position >= 20, "every record delivered again")
    finally:
        lake.close()
    assert "logs.access" not in list_tables(catalog.result())
    assert query(config, "SELECT list(line ORDER BY line) AS l FROM logs.mix") == [
        {"l": list(range(6))}
    ]
    assert query(config, "SELECT list(line ORDER BY line) AS l FROM logs.syslog") == [
        {"l": list(range(6, 20))}
    ]
