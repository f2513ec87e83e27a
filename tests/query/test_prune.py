"""Time pruning: which data files a query's time filter keeps, and that it never drops a file
holding a row the query matches.

A real Iceberg table (pyiceberg, SQL catalog in tmp) holds one data file per hour with known ``ts``
ranges. Every query runs twice: through loglake (the pruner picks the files) and through DuckDB over
every file of the table (no pruning); the results must be equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from loglake.config import Config, load_config
from loglake.lake.catalog import ensure_namespace, open_catalog
from loglake.query.engine import Connection, _overlaps
from loglake.query.plan import TablePlan, current_locations, get_plan
from loglake.query.prune import referenced_tables

KNOWN = {"logs.access", "logs.rejected"}
DAY = datetime(2024, 1, 1)
EPOCH = datetime(1970, 1, 1)


def us(value: datetime) -> int:
    """Microseconds since the epoch of a naive UTC datetime (exact, also before 1970)."""
    return (value - EPOCH) // timedelta(microseconds=1)


# One data file each: label -> event times. Hours 0..3 of DAY hold a row every minute; "pre1970"
# holds the two rows around the epoch's last second (bounds where float seconds mislead).
FILES: dict[str, list[datetime]] = {
    "pre1970": [datetime(1969, 12, 31, 23, 59, 59, 500_000), datetime(1969, 12, 31, 23, 59, 59)],
    **{
        f"h{h}": [DAY + timedelta(hours=h, minutes=m, seconds=7) for m in range(60)]
        for h in range(4)
    },
}
SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("us")),
        pa.field("line", pa.int64()),
        pa.field("status", pa.int32()),
    ]
)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """logs.access with one file per entry of FILES, and logs.rejected with two files."""
    config = load_config(home=tmp_path_factory.mktemp("prune"), environ={})
    catalog = open_catalog(config)
    ensure_namespace(catalog, "logs")
    table = catalog.create_table("logs.access", schema=SCHEMA)
    line = 0
    for times in FILES.values():
        rows = {
            "ts": times,
            "line": list(range(line, line + len(times))),
            "status": [200 if i % 3 else 500 for i in range(len(times))],
        }
        line += len(times)
        table.append(pa.Table.from_pydict(rows, schema=SCHEMA))
    rejected_schema = pa.schema(
        [pa.field("ingested_at", pa.timestamp("us")), pa.field("ts", pa.timestamp("us"))]
    )
    rejected = catalog.create_table("logs.rejected", schema=rejected_schema)
    for h in (0, 5):
        at = [DAY + timedelta(hours=h, minutes=m) for m in range(3)]
        # ts runs the other way round: pruning by it instead of ingested_at would lose rows.
        ts = [DAY + timedelta(hours=5 - h, minutes=m) for m in range(3)]
        rejected.append(pa.Table.from_pydict({"ingested_at": at, "ts": ts}, schema=rejected_schema))
    return config


@pytest.fixture(scope="module")
def con(lake: Config) -> Iterator[Connection]:
    with Connection(lake) as c:
        yield c


@pytest.fixture(scope="module")
def unpruned(lake: Config) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB with each lake table as a view over ALL its files (what loglake must agree with)."""
    db = duckdb.connect(":memory:")
    db.execute("SET TimeZone = 'UTC'")
    db.execute("CREATE SCHEMA logs")
    for name in sorted(KNOWN):
        files = ", ".join(f"'{f.path}'" for f in plan(lake, name).files)
        db.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{files}])")
    yield db
    db.close()


def plan(lake: Config, name: str) -> TablePlan:
    locations = current_locations(lake)
    assert locations is not None
    return get_plan(lake, name, locations[name])


def kept(lake: Config, sql: str, table: str = "logs.access") -> set[str] | None:
    """Labels of the files of ``table`` the query would read; None when it is not pruned."""
    ranges = referenced_tables(sql, KNOWN)[table]
    if ranges is None:
        return None
    p = plan(lake, table)
    return {label(f.ts_min) for f in p.files if _overlaps(f.ts_min, f.ts_max, ranges)}


def label(ts_min: int | None) -> str:
    assert ts_min is not None
    for name, times in FILES.items():
        if us(min(times)) == ts_min:
            return name
    raise AssertionError(f"no file starts at {ts_min}")


def same_rows(con: Connection, unpruned: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    """The rows of ``sql`` through loglake, asserted equal to those of an unpruned scan."""
    got = sorted(con.sql(sql).fetchall(), key=repr)
    want = sorted(unpruned.execute(sql).fetchall(), key=repr)
    assert got == want, sql
    return got


def test_the_table_has_one_file_per_range(lake: Config) -> None:
    p = plan(lake, "logs.access")
    bounds = sorted((f.ts_min, f.ts_max) for f in p.files)
    assert bounds == sorted((us(min(t)), us(max(t))) for t in FILES.values())
    assert p.time_column == "ts" and p.rows == sum(len(t) for t in FILES.values())


HOURS = {"h0", "h1", "h2", "h3"}

# (WHERE clause, labels of the files kept). Bounds are inclusive on both sides whatever the
# operator (a file that only touches a strict bound is kept: it costs a read, never a row).
PRUNED = [
    ("ts >= '2024-01-01 01:00:00'", {"h1", "h2", "h3"}),
    ("ts > '2024-01-01 01:59:07'", {"h1", "h2", "h3"}),
    ("ts > '2024-01-01 01:59:07.000001'", {"h2", "h3"}),
    ("ts < '2024-01-01 01:00:00'", {"pre1970", "h0"}),
    ("ts <= '2024-01-01 01:00:07'", {"pre1970", "h0", "h1"}),
    ("ts = '2024-01-01 02:30:07'", {"h2"}),
    ("ts = TIMESTAMP '2024-01-01 02:30:07'", {"h2"}),
    ("ts BETWEEN '2024-01-01 01:30:00' AND '2024-01-01 02:30:00'", {"h1", "h2"}),
    ("ts BETWEEN TIMESTAMP '2024-01-01 03:00' AND TIMESTAMP '2024-01-02'", {"h3"}),
    ("'2024-01-01 02:00:00' <= ts", {"h2", "h3"}),  # constant on the left
    ("'2024-01-01 02:00:00' > ts", {"pre1970", "h0", "h1"}),
    ("ts >= '2024-01-01 01:00:00' AND ts < '2024-01-01 02:00:00'", {"h1"}),
    ("status = 500 AND ts >= '2024-01-01 03:00:00'", {"h3"}),  # with other conjuncts
    ("(ts >= '2024-01-01 03:00:00') AND (status = 200)", {"h3"}),
    ("ts >= '2024-01-01 01:00' AND ts >= '2024-01-01 03:00'", {"h3"}),  # the tighter wins
    ("ts >= DATE '2024-01-01'", HOURS),
    ("ts < DATE '2024-01-01'", {"pre1970"}),
    ("ts >= CAST('2024-01-01 02:00:00' AS TIMESTAMP)", {"h2", "h3"}),
    ("ts >= '2024-01-01 02:00:00'::TIMESTAMP", {"h2", "h3"}),
    ("ts >= TIMESTAMPTZ '2024-01-01 04:00:00+02'", {"h2", "h3"}),  # 02:00 UTC
    ("ts >= '2024-01-01T02:00:00Z'", {"h2", "h3"}),
    ("ts >= '2024-01-01 02:00:00 UTC'", {"h2", "h3"}),
    ("ts > '2024-01-01 02:00:00+00:00'", {"h2", "h3"}),
    ("ts >= '1969-12-31 23:59:59.5'", {"pre1970", *HOURS}),
    ("ts < '1970-01-01'", {"pre1970"}),
]


@pytest.mark.parametrize(("where", "files"), PRUNED)
def test_time_filters_keep_the_files_that_can_match(
    lake: Config, con: Connection, unpruned: duckdb.DuckDBPyConnection, where: str, files: set[str]
) -> None:
    sql = f"SELECT count(*) AS n, sum(line) AS s FROM logs.access WHERE {where}"
    assert kept(lake, sql) == files
    [(n, _)] = same_rows(con, unpruned, sql)
    assert n > 0  # every case matches rows: a dropped file would show


@pytest.mark.parametrize(
    "sql",
    [
        # Qualified by the table's alias, by its name, or its full name.
        "SELECT count(*) FROM logs.access a WHERE a.ts >= '2024-01-01 03:00'",
        "SELECT count(*) FROM logs.access AS a WHERE a.ts >= '2024-01-01 03:00'",
        "SELECT count(*) FROM logs.access WHERE access.ts >= '2024-01-01 03:00'",
        "SELECT count(*) FROM logs.access WHERE logs.access.ts >= '2024-01-01 03:00'",
        # The filter of a CTE or a derived table, read by an outer query.
        "WITH x AS (SELECT * FROM logs.access WHERE ts >= '2024-01-01 03:00') SELECT count(*) FROM x",
        "SELECT count(*) FROM (SELECT line FROM logs.access WHERE ts >= '2024-01-01 03:00') t",
    ],
)
def test_pruning_follows_aliases_and_nested_selects(
    lake: Config, con: Connection, unpruned: duckdb.DuckDBPyConnection, sql: str
) -> None:
    assert kept(lake, sql) == {"h3"}
    assert same_rows(con, unpruned, sql) == [(60,)]


def test_several_reads_of_a_table_keep_the_union_of_their_ranges(
    lake: Config, con: Connection, unpruned: duckdb.DuckDBPyConnection
) -> None:
    union = (
        "SELECT count(*) FROM (SELECT line FROM logs.access WHERE ts < '2024-01-01 00:30' "
        "UNION ALL SELECT line FROM logs.access WHERE ts >= '2024-01-01 03:30')"
    )
    assert kept(lake, union) == {"pre1970", "h0", "h3"}
    assert same_rows(con, unpruned, union) == [(2 + 30 + 30,)]
    join = (
        "SELECT count(*) FROM logs.access a JOIN logs.access b ON a.line + 60 = b.line "
        "WHERE a.ts < '2024-01-01 01:00' AND b.ts >= '2024-01-01 01:00'"
    )
    assert kept(lake, join) == {"pre1970", "h0", "h1", "h2", "h3"}
    assert same_rows(con, unpruned, join) == [(60,)]


UNPRUNED = [
    "ts >= '2024-01-01 03:00' OR status = 500",
    "NOT ts < '2024-01-01 03:00'",
    "ts NOT BETWEEN '2024-01-01 00:00' AND '2024-01-01 02:59'",
    "date_trunc('hour', ts) = TIMESTAMP '2024-01-01 03:00'",
    "ts + INTERVAL 1 HOUR >= TIMESTAMP '2024-01-01 04:00'",
    "ts >= (SELECT max(ts) - INTERVAL 1 HOUR FROM logs.access)",
    "ts >= TIMESTAMP '2024-01-01 03:00' - INTERVAL 1 MINUTE",
    "ts IN (TIMESTAMP '2024-01-01 03:00:07')",
    "ts >= strptime('2024-01-01 03', '%Y-%m-%d %H')",
    "TS >= '2024-01-01 03:00'",  # not the column's own spelling: left alone
    "line >= 0 AND (ts >= '2024-01-01 03:00' OR line = 1)",
]


@pytest.mark.parametrize("where", UNPRUNED)
def test_filters_the_pruner_does_not_understand_read_every_file(
    lake: Config, con: Connection, unpruned: duckdb.DuckDBPyConnection, where: str
) -> None:
    sql = f"SELECT count(*) AS n, sum(line) AS s FROM logs.access WHERE {where}"
    assert kept(lake, sql) is None
    [(n, _)] = same_rows(con, unpruned, sql)
    assert n > 0


def test_unqualified_time_column_of_a_join_prunes_neither_side(
    lake: Config, con: Connection, unpruned: duckdb.DuckDBPyConnection
) -> None:
    sql = (
        "SELECT count(*) FROM logs.access a JOIN logs.rejected r ON a.line = 0 "
        "WHERE ingested_at >= '2024-01-01 05:00'"
    )
    assert referenced_tables(sql, KNOWN) == {"logs.access": None, "logs.rejected": None}
    assert same_rows(con, unpruned, sql) == [(3,)]


def test_rejected_is_pruned_by_ingested_at_not_ts(
    lake: Config, con: Connection, unpruned: duckdb.DuckDBPyConnection
) -> None:
    by_ingested = "SELECT count(*) FROM logs.rejected WHERE ingested_at >= '2024-01-01 05:00'"
    ranges = referenced_tables(by_ingested, KNOWN)["logs.rejected"]
    assert ranges == [(us(DAY + timedelta(hours=5)), None)]
    assert same_rows(con, unpruned, by_ingested) == [(3,)]
    by_ts = "SELECT count(*) FROM logs.rejected WHERE ts >= '2024-01-01 05:00'"
    assert referenced_tables(by_ts, KNOWN)["logs.rejected"] is None
    assert same_rows(con, unpruned, by_ts) == [(3,)]


def test_ranges_are_exact_microseconds_in_utc() -> None:
    def ranges(where: str) -> Any:
        return referenced_tables(f"SELECT 1 FROM logs.access WHERE {where}", KNOWN)["logs.access"]

    at = us(datetime(2024, 1, 1, 2, 0, 0, 123_456))
    assert ranges("ts >= '2024-01-01 02:00:00.123456'") == [(at, None)]
    assert ranges("ts <= '2024-01-01 02:00:00.123456'") == [(None, at)]
    assert ranges("ts = '2024-01-01 02:00:00.123456'") == [(at, at)]
    assert ranges("ts >= TIMESTAMPTZ '2024-01-01 04:00:00.123456+02:00'") == [(at, None)]
    assert ranges("ts >= '1969-12-31 23:59:59.5'") == [(-500_000, None)]
    start = us(datetime(2024, 1, 1, 1))
    assert ranges("ts BETWEEN '2024-01-01 01:00' AND '2024-01-01 02:00:00.123456'") == [(start, at)]
    assert datetime.fromtimestamp(at / 1e6, UTC).hour == 2


# Filters whose constant means something else to DuckDB than its text read as a timestamp: the
# pruner must not narrow by the text (each of these dropped matching rows before).
MISREAD = [
    # A DATE cast drops the time of day: the bound is midnight, not 02:00.
    "ts >= CAST('2024-01-01 02:00:00' AS DATE)",
    "ts >= DATE '2024-01-01 02:00:00'",
    "ts >= '2024-01-01 02:00:00'::DATE",
    "ts >= CAST(CAST('2024-01-01 02:00' AS DATE) AS TIMESTAMP)",
    # A TIMESTAMP literal ignores the offset (02:00 here, not 00:00 UTC); so does a plain string
    # compared with this table's zone-less ts.
    "ts <= TIMESTAMP '2024-01-01 02:00:00+02'",
    "ts <= '2024-01-01 02:00:00+02'",
    # Second and millisecond precision round up: 02:00:07 here.
    "ts <= TIMESTAMP_S '2024-01-01 02:00:06.5'",
    "ts <= CAST('2024-01-01 02:00:06.9999' AS TIMESTAMP_MS)",
]


@pytest.mark.parametrize("where", MISREAD)
def test_constants_duckdb_reads_differently_never_drop_rows(
    lake: Config, con: Connection, unpruned: duckdb.DuckDBPyConnection, where: str
) -> None:
    sql = f"SELECT count(*) AS n, sum(line) AS s FROM logs.access WHERE {where}"
    [(n, _)] = same_rows(con, unpruned, sql)
    assert n > 0


def test_a_table_aliased_like_another_is_not_pruned_by_the_others_filter(
    lake: Config, con: Connection, unpruned: duckdb.DuckDBPyConnection
) -> None:
    # `access` is the alias of the second read only; the first (alias `a`) has no time filter.
    sql = (
        "SELECT count(*) FROM logs.access a, logs.access access "
        "WHERE access.ts >= '2024-01-01 03:00'"
    )
    total = sum(len(t) for t in FILES.values())
    assert same_rows(con, unpruned, sql) == [(total * 60,)]
