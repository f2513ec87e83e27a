"""Query plans: the data files of a table snapshot, with per-file time bounds, cached on disk.

Planning a table with pyiceberg (importing it alone takes about 0.6 s) is too slow for a CLI query
that should answer in well under a second, and warm repeated queries should not re-plan either. So the
plan of a snapshot (its files, row counts and ``ts`` bounds, and the column types) is stored as JSON
under ``state/plans/``, keyed by the table's metadata location. For the embedded SQLite catalog the
current metadata location is read with the standard library; only when it changed is pyiceberg loaded.
The cache is never the source of truth: a plan whose metadata location is not current is rebuilt.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loglake.lake.catalog import local_path, registered_in_place

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from loglake.config import Config

_PLAN_VERSION = 3  # 2: field ids; 3: files registered in place (read by name)


@dataclass(frozen=True)
class FilePlan:
    """One Parquet data file: local path, rows, size, and the min/max of the time column (µs UTC).

    ``fields`` is None for files the lake wrote (their columns carry Iceberg field ids). For a file
    registered where it lies (``loglake crawl`` without ``--convert``, Iceberg ``add_files``), whose
    columns have no field ids, it lists the field ids the file holds (mapped by name when it was
    registered), and ``partition`` holds ``[field id, value]`` of the table's identity partitions:
    columns the file lacks take that value, as the Iceberg spec says readers must.
    """

    path: str
    rows: int
    size: int
    ts_min: int | None
    ts_max: int | None
    fields: list[int] | None = None
    partition: list[list[Any]] = dataclass_field(default_factory=list)

    @property
    def in_place(self) -> bool:
        """Whether this is a user's file registered where it lies (read by column name)."""
        return self.fields is not None


@dataclass(frozen=True)
class TablePlan:
    """The files and columns of one table snapshot."""

    name: str
    metadata_location: str
    snapshot_id: int | None
    columns: list[tuple[str, str]]  # (name, DuckDB type) in table order
    time_column: str | None
    evolved: bool  # more than one schema: files may lack newer columns
    files: list[FilePlan]
    last_commit_ms: int | None = None
    version: int = _PLAN_VERSION
    # Iceberg field id of each column (same order): files are read by id, as Iceberg readers do,
    # so a column that a file predates reads as NULL instead of failing the query.
    field_ids: list[int] = dataclass_field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _duckdb_type(iceberg_type: Any) -> str:
    from pyiceberg import types as t

    simple = {
        t.StringType: "VARCHAR",
        t.IntegerType: "INTEGER",
        t.LongType: "BIGINT",
        t.FloatType: "FLOAT",
        t.DoubleType: "DOUBLE",
        t.BooleanType: "BOOLEAN",
        t.TimestamptzType: "TIMESTAMPTZ",
        t.TimestampType: "TIMESTAMP",
        t.DateType: "DATE",
        t.BinaryType: "BLOB",
        t.UUIDType: "UUID",
    }
    for cls, name in simple.items():
        if isinstance(iceberg_type, cls):
            return name
    if isinstance(iceberg_type, t.StructType):
        inner = ", ".join(f'"{f.name}" {_duckdb_type(f.field_type)}' for f in iceberg_type.fields)
        return f"STRUCT({inner})"
    if isinstance(iceberg_type, t.ListType):
        return f"{_duckdb_type(iceberg_type.element_type)}[]"
    if isinstance(iceberg_type, t.DecimalType):
        return f"DECIMAL({iceberg_type.precision}, {iceberg_type.scale})"
    return "VARCHAR"


def _time_field(table: Table, time_column: str | None) -> Any:
    schema = table.schema()
    if time_column and time_column in schema.column_names:
        return schema.find_field(time_column)
    for candidate in ("ts", "ingested_at"):
        if candidate in schema.column_names:
            return schema.find_field(candidate)
    return None


def _identity_values(table: Table, data_file: Any) -> list[list[Any]]:
    """``[source field id, value]`` of each identity partition field of ``data_file``'s spec."""
    from pyiceberg.transforms import IdentityTransform

    spec = table.specs().get(data_file.spec_id)
    out: list[list[Any]] = []
    if spec is None:
        return out
    for i, spec_field in enumerate(spec.fields):
        if isinstance(spec_field.transform, IdentityTransform):
            value = data_file.partition[i]
            if value is not None and not isinstance(value, (str, int, float, bool)):
                value = str(value)
            out.append([spec_field.source_id, value])
    return out


def _file_plan(data_file: Any, field: Any, table: Table | None = None) -> FilePlan:
    """The plan entry of one Iceberg DataFile (path, rows, size, time bounds; for a file
    registered in place, the field ids it holds and its identity partition values)."""
    from pyiceberg.conversions import from_bytes
    from pyiceberg.types import PrimitiveType

    lo = hi = None
    if field is not None:
        lb = (data_file.lower_bounds or {}).get(field.field_id)
        ub = (data_file.upper_bounds or {}).get(field.field_id)
        ftype = field.field_type
        assert isinstance(ftype, PrimitiveType)
        lo = int(from_bytes(ftype, lb)) if lb is not None else None
        hi = int(from_bytes(ftype, ub)) if ub is not None else None
    fields: list[int] | None = None
    partition: list[list[Any]] = []
    if table is not None and registered_in_place(table.location(), data_file.file_path):
        # Which columns the file holds: registering computes a size for every column it maps.
        held = set(data_file.column_sizes or {}) | set(data_file.value_counts or {})
        fields = sorted(held) if held else [f.field_id for f in table.schema().fields]
        partition = _identity_values(table, data_file)
    return FilePlan(
        local_path(data_file.file_path),
        data_file.record_count,
        data_file.file_size_in_bytes,
        lo,
        hi,
        fields,
        partition,
    )


def _table_plan(name: str, table: Table, field: Any, files: list[FilePlan]) -> TablePlan:
    schema = table.schema()
    snapshot = table.current_snapshot()
    return TablePlan(
        name=name,
        metadata_location=table.metadata_location,
        snapshot_id=snapshot.snapshot_id if snapshot else None,
        columns=[(f.name, _duckdb_type(f.field_type)) for f in schema.fields],
        time_column=field.name if field is not None else None,
        evolved=len(table.schemas()) > 1,
        files=files,
        last_commit_ms=snapshot.timestamp_ms if snapshot else None,
        field_ids=[f.field_id for f in schema.fields],
    )


def build_plan(name: str, table: Table, time_column: str | None = "ts") -> TablePlan:
    """Plan every data file of the table's current snapshot (needs pyiceberg)."""
    field = _time_field(table, time_column)
    files: list[FilePlan] = []
    if table.current_snapshot() is not None:
        for task in table.scan().plan_files():
            if task.delete_files:
                from loglake.errors import LakeError

                raise LakeError(f"{name} has row-level deletes, which loglake cannot read yet")
            files.append(_file_plan(task.file, field, table))
    return _table_plan(name, table, field, files)


def extend_plan(
    config: Config, name: str, table: Table, previous_location: str, added: list[Any]
) -> None:
    """After an append that added ``added`` DataFiles on top of ``previous_location``, store the new
    plan as the cached one plus those files, without re-planning the whole table; falls back to a
    full plan when the cache is not that previous state (or the schema changed).

    Planning a table from its manifests costs more with every commit of a stream; extending the plan
    costs the same each time.
    """
    time_column = "ingested_at" if name == "logs.rejected" else "ts"
    cached = _read_cached(_plan_file(config, name))
    field = _time_field(table, time_column)
    columns = [(f.name, _duckdb_type(f.field_type)) for f in table.schema().fields]
    if cached is None or cached.metadata_location != previous_location or cached.columns != columns:
        save_plan(config, build_plan(name, table, time_column))
        return
    files = [*cached.files, *(_file_plan(f, field, table) for f in added)]
    save_plan(config, _table_plan(name, table, field, files))


def _plan_file(config: Config, name: str) -> Path:
    return config.state_dir / "plans" / f"{name}.json"


def _embedded_sqlite(config: Config) -> Path | None:
    """The SQLite file of the catalog when it is pyiceberg's SQL catalog on SQLite."""
    if config.catalog.type != "sql":
        return None
    uri = config.catalog_uri
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def current_locations(config: Config) -> dict[str, str] | None:
    """``{table: metadata location}`` read straight from an SQLite catalog, else None (unknown)."""
    db = _embedded_sqlite(config)
    if db is None:
        return None
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute(
                "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables "
                "WHERE catalog_name = ?",
                (config.catalog.name,),
            ).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return {}  # catalog file exists but no table was ever created
    return {f"{ns}.{tbl}": loc for ns, tbl, loc in rows if loc}


def _read_cached(path: Path) -> TablePlan | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if raw.get("version") != _PLAN_VERSION:
        return None
    raw["files"] = [FilePlan(**f) for f in raw["files"]]
    raw["columns"] = [tuple(c) for c in raw["columns"]]
    return TablePlan(**raw)


def save_plan(config: Config, plan: TablePlan) -> None:
    path = _plan_file(config, plan.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One temporary file per thread: query threads of one process may store the same table's
    # plan at the same moment, and a shared one would be replaced away under another's feet.
    tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(asdict(plan)))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old plan or the new one


def refresh_plans(config: Config, tables: dict[str, Table]) -> None:
    """Store fresh plans for tables just committed, so the next query starts without pyiceberg."""
    for name, table in tables.items():
        time_column = "ingested_at" if name == "logs.rejected" else "ts"
        save_plan(config, build_plan(name, table, time_column))


def plan_hook(config: Config) -> Any:
    """A post-commit hook (:meth:`loglake.lake.tables.Tables.on_commit`) keeping the plan cache of
    ``config``'s lake current: an append extends the cached plan, a rewrite re-plans the table."""

    def hook(name: str, table: Table, before: str | None, added: list[Any]) -> None:
        if before is None:
            refresh_plans(config, {name: table})
        else:
            extend_plan(config, name, table, before, added)

    return hook


PLAN_WAIT_S = 0.5  # how long a query waits for a writer to store the plan of its new commit


def external_plan(config: Config, name: str) -> TablePlan | None:
    """The plan of external table ``name`` (CSV/TSV registered in place: lake/external.py), or
    None when there is none: its files with the rows counted when they were registered."""
    from loglake.lake import external

    table = external.load(config, name)
    if table is None:
        return None
    files = [FilePlan(f.path, f.rows, f.size, None, None) for f in table.files]
    return TablePlan(
        name=name,
        metadata_location=f"external:{name}:{table.updated_ms}",
        snapshot_id=None,
        columns=[(c, t) for c, t in table.columns],
        time_column=None,
        evolved=False,
        files=files,
        last_commit_ms=table.updated_ms or None,
    )


def get_plan(config: Config, name: str, location: str | None) -> TablePlan:
    """The plan of table ``name`` at metadata ``location`` (None: ask the catalog through pyiceberg;
    an external table's plan when ``name`` is one)."""
    if location is None:
        plan = external_plan(config, name)
        if plan is not None:
            return plan
    path = _plan_file(config, name)
    cached = _read_cached(path)
    if cached is not None and location is not None and cached.metadata_location != location:
        # A writer (loglake serve) updates the plan right after each commit: a query that lands
        # between the two waits a moment for it instead of planning the table itself (importing
        # pyiceberg and reading manifests takes a second or more).
        deadline = time.monotonic() + PLAN_WAIT_S
        while time.monotonic() < deadline and cached is not None:
            time.sleep(0.02)
            cached = _read_cached(path)
            if cached is not None and cached.metadata_location == location:
                break
    if cached is not None and location is not None and cached.metadata_location == location:
        return cached
    from loglake.lake.catalog import load_table, open_catalog

    table = load_table(open_catalog(config), name)
    if cached is not None and cached.metadata_location == table.metadata_location:
        return cached
    plan = build_plan(name, table, "ingested_at" if name == "logs.rejected" else "ts")
    save_plan(config, plan)
    return plan


def table_names(config: Config) -> list[str]:
    """Names of all tables: the catalog's (fast path for the embedded SQLite catalog) and the
    external tables (CSV/TSV registered in place)."""
    from loglake.lake import external

    locations = current_locations(config)
    if locations is not None:
        return sorted(set(locations) | set(external.names(config)))
    from loglake.lake.catalog import list_tables, open_catalog

    return sorted(set(list_tables(open_catalog(config))) | set(external.names(config)))
