"""Query plans: built from a real Iceberg table, extended after a commit, cached, and rebuilt
whenever the cache is not the table's current state."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.types import IntegerType

from loglake.config import Config, load_config
from loglake.lake.catalog import ensure_namespace, open_catalog
from loglake.lake.tables import Tables
from loglake.query.engine import Connection
from loglake.query.plan import (
    FilePlan,
    TablePlan,
    build_plan,
    current_locations,
    extend_plan,
    get_plan,
    plan_hook,
    refresh_plans,
    save_plan,
    table_names,
)

T0 = datetime(2024, 6, 1, 12, 0, 0)
EPOCH = datetime(1970, 1, 1)
SCHEMA = pa.schema([pa.field("ts", pa.timestamp("us")), pa.field("line", pa.int64())])


def us(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def rows(first: int, n: int, schema: pa.Schema = SCHEMA, **extra: list[Any]) -> pa.Table:
    """``n`` rows a second apart from ``T0 + first`` s; ``line`` = first..first+n-1."""
    data: dict[str, list[Any]] = {
        "ts": [T0 + timedelta(seconds=first + i) for i in range(n)],
        "line": list(range(first, first + n)),
        **extra,
    }
    return pa.Table.from_pydict(data, schema=schema)


@pytest.fixture()
def config(tmp_path: Path) -> Config:
    return load_config(home=tmp_path / "lake", environ={})


@pytest.fixture()
def catalog(config: Config) -> Any:
    catalog = open_catalog(config)
    ensure_namespace(catalog, "logs")
    return catalog


def added_files(table: Any) -> list[Any]:
    """The DataFiles the table's current snapshot added (what a writer passes to extend_plan)."""
    snap = table.current_snapshot()
    return [
        entry.data_file
        for manifest in snap.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io)
        if entry.snapshot_id == snap.snapshot_id
    ]


def cached(config: Config, name: str) -> dict[str, Any]:
    return json.loads((config.state_dir / "plans" / f"{name}.json").read_text())


def by_path(plan: TablePlan) -> TablePlan:
    return dataclasses.replace(plan, files=sorted(plan.files, key=lambda f: f.path))


def test_a_plan_lists_every_file_with_rows_size_and_time_bounds(catalog: Any) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    for first, n in ((0, 10), (100, 5), (50, 20)):
        table.append(rows(first, n))
    plan = build_plan("logs.access", table)
    got = sorted((f.ts_min, f.ts_max, f.rows) for f in plan.files)
    assert got == [
        (us(T0), us(T0 + timedelta(seconds=9)), 10),
        (us(T0 + timedelta(seconds=50)), us(T0 + timedelta(seconds=69)), 20),
        (us(T0 + timedelta(seconds=100)), us(T0 + timedelta(seconds=104)), 5),
    ]
    files = {Path(f.path): f.size for f in plan.files}
    assert all(path.is_file() and path.stat().st_size == size for path, size in files.items())
    snap = table.current_snapshot()
    assert (plan.name, plan.metadata_location) == ("logs.access", table.metadata_location)
    assert (plan.snapshot_id, plan.last_commit_ms) == (snap.snapshot_id, snap.timestamp_ms)
    assert plan.columns == [("ts", "TIMESTAMP"), ("line", "BIGINT")]
    assert plan.field_ids == [f.field_id for f in table.schema().fields]
    assert (plan.time_column, plan.evolved, plan.rows, plan.version) == ("ts", False, 35, 3)
    assert plan.size == sum(files.values())


def test_column_types_as_duckdb_names_them(catalog: Any) -> None:
    schema = pa.schema(
        [
            pa.field("ts", pa.timestamp("us", "UTC")),
            pa.field("i", pa.int32()),
            pa.field("f", pa.float32()),
            pa.field("d", pa.float64()),
            pa.field("b", pa.bool_()),
            pa.field("day", pa.date32()),
            pa.field("raw", pa.binary()),
            pa.field("amount", pa.decimal128(10, 2)),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("req", pa.struct([("path", pa.string()), ("n", pa.int64())])),
        ]
    )
    table = catalog.create_table("logs.typed", schema=schema)
    table.append(
        pa.Table.from_pydict(
            {
                "ts": [datetime(2024, 1, 1, tzinfo=UTC)],
                "i": [1],
                "f": [1.5],
                "d": [2.5],
                "b": [True],
                "day": [date(2024, 1, 1)],
                "raw": [b"\x00"],
                "amount": [Decimal("1.25")],
                "tags": [["a"]],
                "req": [{"path": "/", "n": 1}],
            },
            schema=schema,
        )
    )
    plan = build_plan("logs.typed", table)
    assert dict(plan.columns) == {
        "ts": "TIMESTAMPTZ",
        "i": "INTEGER",
        "f": "FLOAT",
        "d": "DOUBLE",
        "b": "BOOLEAN",
        "day": "DATE",
        "raw": "BLOB",
        "amount": "DECIMAL(10, 2)",
        "tags": "VARCHAR[]",
        "req": 'STRUCT("path" VARCHAR, "n" BIGINT)',
    }
    [file] = plan.files
    assert file.ts_min == file.ts_max == us(datetime(2024, 1, 1))


def test_the_time_column_is_ts_else_ingested_at_else_none(catalog: Any) -> None:
    schema = pa.schema([pa.field("ingested_at", pa.timestamp("us")), pa.field("x", pa.int64())])
    table = catalog.create_table("logs.rejected", schema=schema)
    table.append(pa.Table.from_pydict({"ingested_at": [T0], "x": [1]}, schema=schema))
    plan = build_plan("logs.rejected", table)
    assert plan.time_column == "ingested_at"
    assert [(f.ts_min, f.ts_max) for f in plan.files] == [(us(T0), us(T0))]
    plain = catalog.create_table("logs.plain", schema=pa.schema([pa.field("x", pa.int64())]))
    plain.append(pa.Table.from_pydict({"x": [1, 2]}))
    plan = build_plan("logs.plain", plain)
    assert plan.time_column is None
    assert [(f.ts_min, f.ts_max, f.rows) for f in plan.files] == [(None, None, 2)]


def test_a_table_without_commits_has_an_empty_plan(catalog: Any) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    plan = build_plan("logs.access", table)
    assert (plan.files, plan.snapshot_id, plan.last_commit_ms) == ([], None, None)
    assert plan.columns == [("ts", "TIMESTAMP"), ("line", "BIGINT")]


def test_extending_the_plan_after_a_commit_equals_planning_the_table(
    config: Config, catalog: Any
) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 10))
    refresh_plans(config, {"logs.access": table})
    for first in (10, 20, 30):
        before = table.metadata_location
        table.append(rows(first, 10))
        extend_plan(config, "logs.access", table, before, added_files(table))
        stored = get_plan(config, "logs.access", table.metadata_location)
        assert by_path(stored) == by_path(build_plan("logs.access", table))
    assert len(stored.files) == 4 and stored.rows == 40


def test_extending_a_plan_that_is_not_the_previous_state_plans_the_whole_table(
    config: Config, catalog: Any
) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 10))
    refresh_plans(config, {"logs.access": table})
    table.append(rows(10, 10))  # a commit whose plan was never stored (another writer's)
    before = table.metadata_location
    table.append(rows(20, 10))
    extend_plan(config, "logs.access", table, before, added_files(table))
    stored = get_plan(config, "logs.access", table.metadata_location)
    assert stored.rows == 30 and len(stored.files) == 3  # not 2: the middle commit is there too
    assert by_path(stored) == by_path(build_plan("logs.access", table))


def test_extending_without_any_cached_plan_plans_the_whole_table(
    config: Config, catalog: Any
) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 10))
    before = table.metadata_location
    table.append(rows(10, 10))
    extend_plan(config, "logs.access", table, before, added_files(table))
    assert cached(config, "logs.access")["metadata_location"] == table.metadata_location
    assert get_plan(config, "logs.access", table.metadata_location).rows == 20


def test_a_commit_that_added_a_column_replans_with_its_field_id(
    config: Config, catalog: Any
) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 3))
    refresh_plans(config, {"logs.access": table})
    with table.update_schema() as update:
        update.add_column("status", IntegerType())
    wider = pa.schema([*SCHEMA, pa.field("status", pa.int32())])
    before = table.metadata_location
    table.append(rows(3, 2, wider, status=[500, 404]))
    extend_plan(config, "logs.access", table, before, added_files(table))
    plan = get_plan(config, "logs.access", table.metadata_location)
    assert plan.columns == [("ts", "TIMESTAMP"), ("line", "BIGINT"), ("status", "INTEGER")]
    assert plan.field_ids == [f.field_id for f in table.schema().fields]
    assert plan.evolved and plan.rows == 5
    # Files are read by field id: the first file predates `status`, which is NULL there.
    with Connection(config) as con:
        got = con.sql("SELECT line, status FROM logs.access ORDER BY line").fetchall()
    assert got == [(0, None), (1, None), (2, None), (3, 500), (4, 404)]


def test_a_renamed_column_keeps_its_values_through_its_field_id(
    config: Config, catalog: Any
) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 2))
    with table.update_schema() as update:
        update.rename_column("line", "offset")
    refresh_plans(config, {"logs.access": table})
    plan = get_plan(config, "logs.access", table.metadata_location)
    assert plan.columns == [("ts", "TIMESTAMP"), ("offset", "BIGINT")]
    with Connection(config) as con:
        got = con.sql('SELECT "offset" FROM logs.access ORDER BY 1').fetchall()
    assert got == [(0,), (1,)]


def test_rejected_is_planned_by_ingested_at(config: Config, catalog: Any) -> None:
    schema = pa.schema(
        [pa.field("ts", pa.timestamp("us")), pa.field("ingested_at", pa.timestamp("us"))]
    )
    table = catalog.create_table("logs.rejected", schema=schema)
    table.append(pa.Table.from_pydict({"ts": [T0], "ingested_at": [EPOCH]}, schema=schema))
    refresh_plans(config, {"logs.rejected": table})
    plan = get_plan(config, "logs.rejected", table.metadata_location)
    assert plan.time_column == "ingested_at"
    assert [(f.ts_min, f.ts_max) for f in plan.files] == [(0, 0)]
    before = table.metadata_location
    table.append(pa.Table.from_pydict({"ts": [EPOCH], "ingested_at": [T0]}, schema=schema))
    extend_plan(config, "logs.rejected", table, before, added_files(table))
    plan = get_plan(config, "logs.rejected", table.metadata_location)
    assert sorted((f.ts_min, f.ts_max) for f in plan.files) == [(0, 0), (us(T0), us(T0))]


def test_a_cached_plan_of_the_current_state_is_used_as_stored(config: Config, catalog: Any) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 10))
    # A marker build_plan would never produce: seeing it proves the cache was used.
    marked = dataclasses.replace(build_plan("logs.access", table), last_commit_ms=1)
    save_plan(config, marked)
    assert get_plan(config, "logs.access", table.metadata_location) == marked
    assert get_plan(config, "logs.access", None) == marked  # asks the catalog: still current


def test_a_plan_the_table_moved_past_is_rebuilt_and_stored(config: Config, catalog: Any) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 10))
    refresh_plans(config, {"logs.access": table})
    old = get_plan(config, "logs.access", table.metadata_location)
    table.append(rows(10, 5))  # committed underneath, by a writer that stores no plan
    locations = current_locations(config)
    assert (
        locations
        == {"logs.access": table.metadata_location}
        != {"logs.access": old.metadata_location}
    )
    for location in (table.metadata_location, None):
        plan = get_plan(config, "logs.access", location)
        assert plan.metadata_location == table.metadata_location
        assert plan.rows == 15 and len(plan.files) == 2
        assert cached(config, "logs.access")["metadata_location"] == table.metadata_location


@pytest.mark.parametrize(
    "stored",
    [
        "{not json",
        json.dumps({"version": 1, "name": "logs.access", "files": [], "columns": []}),
        "",
    ],
)
def test_a_cache_file_of_another_version_or_unreadable_is_rebuilt(
    config: Config, catalog: Any, stored: str
) -> None:
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 10))
    path = config.state_dir / "plans" / "logs.access.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(stored)
    plan = get_plan(config, "logs.access", table.metadata_location)
    assert plan.version == 3 and plan.rows == 10 and plan.field_ids == [1, 2]
    assert cached(config, "logs.access")["version"] == 3


def test_plans_are_saved_safely_from_several_threads_at_once(config: Config) -> None:
    # Query threads of one process (the continuous queries of a stream, the HTTP queries) can
    # each find a plan stale and store the one they built at the same moment.
    files = [FilePlan(f"/w/{i}.parquet", 1, 100, i, i) for i in range(2000)]
    plans = [
        TablePlan("logs.access", f"file:///w/m{n}.json", n, [("ts", "TIMESTAMP")], "ts", False,
                  files[: 1000 + n], field_ids=[1])
        for n in range(4)
    ]  # fmt: skip
    errors: list[BaseException] = []

    def save(plan: TablePlan) -> None:
        try:
            for _ in range(25):
                save_plan(config, plan)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = cached(config, "logs.access")
    assert stored["snapshot_id"] in range(4)
    assert len(stored["files"]) == 1000 + stored["snapshot_id"]
    assert not [p.name for p in (config.state_dir / "plans").iterdir() if ".tmp" in p.name]


def test_table_names_and_locations_come_from_the_sqlite_catalog(
    config: Config, catalog: Any
) -> None:
    assert table_names(config) == []
    catalog.create_table("logs.b", schema=SCHEMA)
    a = catalog.create_table("logs.a", schema=SCHEMA)
    assert table_names(config) == ["logs.a", "logs.b"]
    locations = current_locations(config)
    assert locations is not None and locations["logs.a"] == a.metadata_location
    a.append(rows(0, 1))
    assert current_locations(config)["logs.a"] == a.metadata_location  # type: ignore[index]


def test_no_catalog_file_means_no_tables(tmp_path: Path) -> None:
    config = load_config(home=tmp_path / "nothing", environ={})
    assert current_locations(config) == {}


def test_the_post_commit_hook_keeps_the_cached_plan_current(config: Config, catalog: Any) -> None:
    tables = Tables()
    tables.on_commit(plan_hook(config))
    table = catalog.create_table("logs.access", schema=SCHEMA)
    table.append(rows(0, 10))
    tables.committed("logs.access", table, None, [])  # a rewrite: the table is planned again
    assert cached(config, "logs.access")["metadata_location"] == table.metadata_location
    before = table.metadata_location
    table.append(rows(10, 5))
    tables.committed("logs.access", table, before, added_files(table))  # an append: extended
    stored = get_plan(config, "logs.access", table.metadata_location)
    assert by_path(stored) == by_path(build_plan("logs.access", table))
    assert stored.rows == 15
