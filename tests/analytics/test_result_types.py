"""Result columns a results table cannot store fail their window (counted and logged) with a reason
naming the column and the cast to use; they never stall the stream or the other queries."""

from __future__ import annotations

from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from loglake.analytics.runner import QueryRunner
from loglake.config import load_config
from loglake.lake.catalog import ensure_namespace, open_catalog
from loglake.lake.tables import Tables
from loglake.query.engine import Connection
from loglake.query.plan import plan_hook, refresh_plans

T0 = datetime(2024, 3, 1, 10, 0, 0)
WALL = 1_700_000_000.0
CONFIG = """
[streams.web]
format = "combined"

[queries.gap]
stream = "web"
window = "tumbling 10s"
sql = "SELECT max(ts) - min(ts) AS spread FROM stream"
lateness = "0s"

[queries.clock]
stream = "web"
window = "tumbling 10s"
sql = "SELECT max(ts)::TIME AS last_time FROM stream"
lateness = "0s"

[queries.fixed]
stream = "web"
window = "tumbling 10s"
sql = "SELECT epoch(max(ts) - min(ts)) AS spread_s, count(*) AS n FROM stream"
lateness = "0s"
"""


def test_unstorable_result_types_fail_their_window_with_the_fix(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    home.mkdir()
    (home / "loglake.toml").write_text(CONFIG)
    config = load_config(home=home, environ={})
    catalog = open_catalog(config)
    ensure_namespace(catalog, "logs")
    schema = pa.schema([("ts", pa.timestamp("us")), ("line", pa.int64()), ("source", pa.string())])
    table = catalog.create_table("logs.web", schema=schema)
    rows = pl.DataFrame(
        {
            "ts": [T0 + timedelta(seconds=s) for s in (1, 4, 12, 25)],
            "line": [0, 1, 2, 3],
            "source": ["stream:web"] * 4,
        },
        schema={"ts": pl.Datetime("us"), "line": pl.Int64, "source": pl.String},
    )
    table.append(rows.to_arrow().cast(schema))
    refresh_plans(config, {"logs.web": table})
    future: Future[Any] = Future()
    future.set_result(catalog)
    tables = Tables()
    tables.on_commit(plan_hook(config))
    runner = QueryRunner(config, "web", "logs.web", future, tables)
    try:
        runner.feed([(rows.select("line", "ts"), WALL)], 4, WALL)  # no exception: no stall
        stats = {name: q.engine.stats for name, q in runner.queries.items()}
        assert stats["gap"].failed_windows == 2 and stats["clock"].failed_windows == 2
        assert "result column 'spread' is month_day_nano_interval" in stats["gap"].errors[-1]
        assert (
            "select epoch(spread) for seconds, or spread::VARCHAR instead"
            in (stats["gap"].errors[-1])
        )
        assert "result column 'last_time' is time64[us]" in stats["clock"].errors[-1]
        # The query that casts is emitted as usual, beside the failing ones.
        assert stats["fixed"].failed_windows == 0 and stats["fixed"].windows == 2
    finally:
        runner.close()
    with Connection(config) as con:
        got = con.sql("SELECT window_start, spread_s, n FROM analytics.fixed ORDER BY 1").fetchall()
    assert got == [(T0, 3.0, 2), (T0 + timedelta(seconds=10), 0.0, 1)]
