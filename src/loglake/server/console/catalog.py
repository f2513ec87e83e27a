"""The console's Catalog page: its API (the page is static/catalog.js; see docs/console.md).

- ``GET /v1/catalog/tables``: every lake table with rows, files, size and last commit, from the
  plan cache that ``loglake tables`` reads (the server keeps it current after each commit).
- ``GET /v1/catalog/tables/{table}``: schema (field ids, types, nullability), partition specs,
  sort order, properties, location, current snapshot and totals, through pyiceberg.
- ``GET /v1/catalog/tables/{table}/snapshots?offset=0&limit=50``: snapshots, newest first.
- ``GET /v1/catalog/tables/{table}/files?offset=0&limit=50``: the current snapshot's data files
  (path, partition, rows, size, first and last time), newest data first, from the plan cache.
- ``GET /v1/catalog/streams``: every stream with its lag, its rates in and out (records per second
  between the samples this module takes when the page polls) and the sources that feed it.
- ``GET /v1/catalog/rejected``: ``logs.rejected`` grouped by reason, newest first;
  ``GET /v1/catalog/rejected/samples?reason=...&offset=0&limit=20``: a group's raw lines.
- ``GET /v1/catalog/queries``: continuous queries (SQL, window, state, last result) and alerts.

Catalog reads run in worker threads (pyiceberg reads files and the catalog database); SQL over
``logs.rejected`` goes through the console's sandboxed query pool. Lists are paged: ``limit`` is at
most :data:`MAX_PAGE` and every answer says how many there are in total.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route

from loglake.errors import LakeError, NoSuchTableError
from loglake.lake.rejected import REJECTED_TABLE
from loglake.server.console.encode import column_values
from loglake.server.errors import BadRequestError
from loglake.sqltext import literal

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from loglake.config import Config
    from loglake.lake.external import ExternalTable
    from loglake.query.plan import FilePlan, TablePlan
    from loglake.server.console.context import Console
    from loglake.server.runtime import Runtime

#: Most items one page of snapshots, files or rejected lines may ask for.
MAX_PAGE = 500
DEFAULT_PAGE = 50
#: Reasons of ``logs.rejected`` listed at most (the newest; the answer says how many there are).
MAX_GROUPS = 200
#: Characters of a rejected line's text shown (its byte length is given too).
SAMPLE_CHARS = 4096
#: Characters of one snapshot summary value shown (a results table's checkpoint can be long).
SUMMARY_CHARS = 400
#: Tables whose data-file listing is kept in memory (each until its table changes).
FILE_CACHE_TABLES = 4
#: Rates are measured over the samples of at most this many seconds back.
RATE_WINDOW_S = 60.0
CATALOG_WAIT_S = 30.0


class CatalogNotReadyError(LakeError):
    """The server is still opening the catalog (503: retry in a moment)."""

    status = 503
    code = "not_ready"
    transient = True


def routes(console: Console) -> list[BaseRoute]:
    """The routes of this page's API (see the module docstring)."""
    config, runtime = console.config, console.runtime
    files = FileListings(config)
    meter = RateMeter()

    async def list_tables(request: Request) -> Response:
        return JSONResponse({"tables": await run_in_threadpool(table_list, config, runtime)})

    async def table_detail(request: Request) -> Response:
        name = await run_in_threadpool(known_table, config, request.path_params["table"])
        outside = await run_in_threadpool(_external, config, name)
        if outside is not None:
            return JSONResponse(describe_external(outside))
        table = await run_in_threadpool(_load, runtime, name)
        return JSONResponse(describe_table(name, table))

    async def snapshots(request: Request) -> Response:
        offset, limit = page_bounds(request, DEFAULT_PAGE)
        name = await run_in_threadpool(known_table, config, request.path_params["table"])
        if await run_in_threadpool(_external, config, name) is not None:
            # An external table (CSV/TSV in place) has no snapshots: its definition is replaced.
            return JSONResponse({"total": 0, "offset": offset, "limit": limit, "snapshots": []})
        table = await run_in_threadpool(_load, runtime, name)
        return JSONResponse(snapshot_page(table, offset, limit))

    async def data_files(request: Request) -> Response:
        offset, limit = page_bounds(request, DEFAULT_PAGE)
        name = await run_in_threadpool(known_table, config, request.path_params["table"])
        listing = await run_in_threadpool(files.get, name)
        return JSONResponse(
            {
                "table": name,
                "snapshot_id": _id(listing.snapshot_id),
                "time_column": listing.time_column,
                "total": len(listing.files),
                "rows": listing.rows,
                "size": listing.size,
                "offset": offset,
                "limit": limit,
                "files": listing.page(offset, limit),
            }
        )

    async def streams(request: Request) -> Response:
        # In a thread: a log's offsets are read under its lock, which appends hold through fsync.
        return JSONResponse({"streams": await run_in_threadpool(stream_list, runtime, meter)})

    async def rejected(request: Request) -> Response:
        if not await run_in_threadpool(_has_rejected, config):
            return JSONResponse(_no_rejected())
        result = await console.pool.arun(rejected_groups_sql(MAX_GROUPS), max_rows=MAX_GROUPS)
        return JSONResponse(rejected_groups(result.table))

    async def rejected_samples(request: Request) -> Response:
        offset, limit = page_bounds(request, 20, most=100)
        reason = request.query_params.get("reason")
        if reason is None:
            raise BadRequestError(
                "name the group: ?reason=TEXT (a reason as GET /v1/catalog/rejected lists it)"
            )
        if "\x00" in reason:
            raise BadRequestError("the reason must not contain a NUL character")
        if not await run_in_threadpool(_has_rejected, config):
            return JSONResponse({**_no_rejected(), "reason": reason, "samples": []})
        result = await console.pool.arun(
            rejected_samples_sql(reason, offset, limit), max_rows=limit
        )
        rows = _records(result.table)
        for row in rows:
            row["text_cut"] = bool(row.pop("chars") > SAMPLE_CHARS)
        return JSONResponse({"reason": reason, "offset": offset, "limit": limit, "samples": rows})

    async def queries(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(query_list, runtime))

    return [
        Route("/v1/catalog/tables", list_tables),
        Route("/v1/catalog/tables/{table}", table_detail),
        Route("/v1/catalog/tables/{table}/snapshots", snapshots),
        Route("/v1/catalog/tables/{table}/files", data_files),
        Route("/v1/catalog/streams", streams),
        Route("/v1/catalog/rejected", rejected),
        Route("/v1/catalog/rejected/samples", rejected_samples),
        Route("/v1/catalog/queries", queries),
    ]


# -- paging ----------------------------------------------------------------------------------------


def page_bounds(request: Request, default: int, most: int = MAX_PAGE) -> tuple[int, int]:
    """``?offset=`` (≥ 0) and ``?limit=`` (1..``most``) of a paged route; BadRequestError (400)
    saying what is allowed for anything else."""
    values = []
    for key, fallback, low, high in (
        ("offset", 0, 0, 10**12),
        ("limit", default, 1, most),
    ):
        raw = request.query_params.get(key)
        if raw is None or raw == "":
            values.append(fallback)
            continue
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise BadRequestError(
                f"?{key}={raw[:40]!r} is not allowed: {key} is a whole number from {low} to {high}"
            )
        values.append(value)
    return values[0], values[1]


# -- tables ----------------------------------------------------------------------------------------


def _catalog(runtime: Runtime) -> Catalog:
    """The server's open catalog; CatalogNotReadyError while it is still being opened."""
    try:
        return runtime.catalog.result(timeout=CATALOG_WAIT_S)
    except TimeoutError as exc:
        raise CatalogNotReadyError(
            f"the catalog is still being opened after {CATALOG_WAIT_S:g} s; retry shortly "
            "(see the server log if this lasts)"
        ) from exc


def known_table(config: Config, name: str) -> str:
    """``name`` if the catalog has that table; NoSuchTableError (404) naming the tables there are."""
    from loglake.query.plan import table_names

    names = table_names(config)
    if name not in names:
        raise NoSuchTableError(
            f"table {name!r} does not exist; the tables are: {', '.join(names) or 'none yet'} "
            "(GET /v1/catalog/tables lists them)"
        )
    return name


def _load(runtime: Runtime, name: str) -> Table:
    from loglake.lake.catalog import load_table

    return load_table(_catalog(runtime), name)


def table_list(config: Config, runtime: Runtime) -> list[dict[str, Any]]:
    """Every table with rows, files, size and last commit (as ``loglake tables`` lists them), and
    which streams and continuous queries write it. A table that cannot be planned is listed with
    its ``error``."""
    from loglake.query.plan import current_locations, get_plan, table_names

    writers: dict[str, list[str]] = {}
    for stream in list(runtime.streams.values()):
        writers.setdefault(stream.delivery.table, []).append(f"stream {stream.name}")
    for query, (_, q) in runtime.running_queries().items():
        writers.setdefault(q.table, []).append(f"query {query}")
    locations = current_locations(config) or {}
    out: list[dict[str, Any]] = []
    for name in table_names(config):
        entry: dict[str, Any] = {"name": name, "writers": sorted(writers.get(name, []))}
        try:
            plan = get_plan(config, name, locations.get(name))
        except Exception as exc:  # one broken table must not hide the others: shown with it
            entry["error"] = str(exc) or type(exc).__name__
            out.append(entry)
            continue
        entry.update(
            rows=plan.rows,
            files=len(plan.files),
            size=plan.size,
            columns=len(plan.columns),
            time_column=plan.time_column,
            snapshot_id=_id(plan.snapshot_id),
            last_commit=_ms_text(plan.last_commit_ms),
        )
        out.append(entry)
    return out


def _id(snapshot_id: int | None) -> str | None:
    """A snapshot id as text: ids are 64-bit, and JavaScript's numbers hold 53 bits exactly."""
    return None if snapshot_id is None else str(snapshot_id)


def _ms_text(ms: int | None) -> str | None:
    """A time in epoch milliseconds as ``YYYY-MM-DD HH:MM:SS.mmm`` UTC text."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _us_text(us: int | None) -> str | None:
    if us is None:
        return None
    try:
        return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    except (OverflowError, OSError, ValueError):
        return str(us)


def schema_fields(schema: Any) -> list[dict[str, Any]]:
    """The fields of an Iceberg schema, nested ones after their parent with dotted names."""
    from pyiceberg.types import ListType, MapType, StructType

    out: list[dict[str, Any]] = []

    def walk(fields: Any, prefix: str, depth: int) -> None:
        for f in fields:
            name = prefix + f.name
            kind = f.field_type
            out.append(
                {
                    "id": f.field_id,
                    "name": name,
                    "type": str(kind),
                    "required": bool(f.required),
                    "doc": f.doc,
                    "depth": depth,
                }
            )
            if isinstance(kind, StructType):
                walk(kind.fields, name + ".", depth + 1)
            elif isinstance(kind, ListType):
                walk([kind.element_field], name + ".", depth + 1)
            elif isinstance(kind, MapType):
                walk([kind.key_field, kind.value_field], name + ".", depth + 1)

    walk(schema.fields, "", 0)
    return out


def _spec(table: Table, spec: Any) -> dict[str, Any]:
    schema = table.schema()
    fields = []
    for pf in spec.fields:
        try:
            source = schema.find_column_name(pf.source_id)
        except ValueError:
            source = None  # a column dropped since
        fields.append(
            {
                "name": pf.name,
                "field_id": pf.field_id,
                "source_id": pf.source_id,
                "source": source,
                "transform": str(pf.transform),
            }
        )
    return {"spec_id": spec.spec_id, "fields": fields}


def _external(config: Config, name: str) -> ExternalTable | None:
    from loglake.lake import external

    return external.load(config, name)


def describe_external(table: ExternalTable) -> dict[str, Any]:
    """An external table (CSV/TSV files registered in place, lake/external.py) in the shape of
    :func:`describe_table`: its columns and path partitions; no Iceberg metadata or snapshots."""
    partitions = [
        {"name": k, "field_id": None, "source_id": None, "source": k, "transform": "identity"}
        for k in table.partition_keys
    ]
    return {
        "name": table.name,
        "external": True,
        "format": ", ".join(sorted({f.kind for f in table.files})) or None,
        "uuid": None,
        "format_version": None,
        "location": None,
        "metadata_location": None,
        "last_updated": _ms_text(table.updated_ms or None),
        "current_snapshot_id": None,
        "snapshots": 0,
        "rows": sum(f.rows for f in table.files),
        "files": len(table.files),
        "size": sum(f.size for f in table.files),
        "delete_files": 0,
        "schema_id": None,
        "schemas": 1,
        "schema": [
            {"id": i, "name": c, "type": t.lower(), "required": False, "doc": None, "depth": 0}
            for i, (c, t) in enumerate(table.columns, 1)
        ],
        "partition_spec": {"spec_id": None, "fields": partitions},
        "partition_specs": [],
        "sort_order": [],
        "properties": {},
    }


def describe_table(name: str, table: Table) -> dict[str, Any]:
    """What the table's metadata says: schema, partitioning, sort order, properties, totals."""
    meta = table.metadata
    current = table.current_snapshot()
    summary = _summary(current)
    sort = table.sort_order()
    schema = table.schema()
    return {
        "name": name,
        "uuid": str(meta.table_uuid),
        "format_version": meta.format_version,
        "location": table.location(),
        "metadata_location": table.metadata_location,
        "last_updated": _ms_text(meta.last_updated_ms),
        "current_snapshot_id": _id(current.snapshot_id if current else None),
        "snapshots": len(meta.snapshots),
        "rows": _int(summary.get("total-records")),
        "files": _int(summary.get("total-data-files")),
        "size": _int(summary.get("total-files-size")),
        "delete_files": _int(summary.get("total-delete-files")),
        "schema_id": schema.schema_id,
        "schemas": len(meta.schemas),
        "schema": schema_fields(schema),
        "partition_spec": _spec(table, table.spec()),
        "partition_specs": [_spec(table, s) for s in sorted(meta.partition_specs, key=_spec_id)],
        "sort_order": [
            {
                "source": _column(schema, f.source_id),
                "transform": str(f.transform),
                "direction": str(f.direction),
                "null_order": str(f.null_order),
            }
            for f in sort.fields
        ],
        "properties": dict(sorted(table.properties.items())),
    }


def _spec_id(spec: Any) -> int:
    return int(spec.spec_id)


def _column(schema: Any, field_id: int) -> str | None:
    try:
        return str(schema.find_column_name(field_id))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _summary(snapshot: Any) -> dict[str, str]:
    if snapshot is None or snapshot.summary is None:
        return {}
    return {str(k): str(v) for k, v in snapshot.summary.additional_properties.items()}


def snapshot_page(table: Table, offset: int, limit: int) -> dict[str, Any]:
    """Snapshots ``offset``..``offset + limit`` of the table, newest first, and how many there are.

    Each has its time, operation, rows and files added and removed, the totals after it, and its
    whole summary (values longer than :data:`SUMMARY_CHARS` cut, with their length).
    """
    current = table.current_snapshot()
    current_id = current.snapshot_id if current else None
    ordered = sorted(
        table.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0), reverse=True
    )
    items = []
    for snap in ordered[offset : offset + limit]:
        summary = _summary(snap)
        operation = snap.summary.operation.value if snap.summary is not None else None
        items.append(
            {
                "snapshot_id": _id(snap.snapshot_id),
                "parent_id": _id(snap.parent_snapshot_id),
                "sequence_number": snap.sequence_number,
                "time": _ms_text(snap.timestamp_ms),
                "timestamp_ms": snap.timestamp_ms,
                "operation": operation,
                "current": snap.snapshot_id == current_id,
                "added_rows": _int(summary.get("added-records")) or 0,
                "deleted_rows": _int(summary.get("deleted-records")) or 0,
                "added_files": _int(summary.get("added-data-files")) or 0,
                "deleted_files": _int(summary.get("deleted-data-files")) or 0,
                "added_size": _int(summary.get("added-files-size")) or 0,
                "total_rows": _int(summary.get("total-records")),
                "total_files": _int(summary.get("total-data-files")),
                "summary": {k: _cut(v) for k, v in sorted(summary.items())},
            }
        )
    return {"total": len(ordered), "offset": offset, "limit": limit, "snapshots": items}


def _cut(value: str) -> str:
    if len(value) <= SUMMARY_CHARS:
        return value
    return f"{value[:SUMMARY_CHARS]}… ({len(value):,} characters)"


class Listing:
    """The data files of one table snapshot, sorted as the files route pages them."""

    def __init__(self, plan: TablePlan) -> None:
        self.location = plan.metadata_location
        self.snapshot_id = plan.snapshot_id
        self.time_column = plan.time_column
        self.rows = plan.rows
        self.size = plan.size
        # Newest data first (the latest time in each file), then by path, newest partition first.
        files = sorted(plan.files, key=lambda f: f.path, reverse=True)
        self.files = sorted(files, key=_newest, reverse=True)

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        return [
            {
                "path": f.path,
                "partition": partition_of(f.path),
                "rows": f.rows,
                "size": f.size,
                "ts_min": _us_text(f.ts_min),
                "ts_max": _us_text(f.ts_max),
            }
            for f in self.files[offset : offset + limit]
        ]


def _newest(f: FilePlan) -> float:
    return f.ts_max if f.ts_max is not None else -math.inf


def partition_of(path: str) -> str:
    """The partition of a data file as its path shows it: the ``name=value`` folders after the
    table's ``data/`` folder (Iceberg's location providers write them; "" when unpartitioned)."""
    folders = path.split("/")[:-1]
    if "data" in folders:
        folders = folders[len(folders) - folders[::-1].index("data") :]
    return "/".join(f for f in folders if "=" in f)


class FileListings:
    """The sorted data files of the last :data:`FILE_CACHE_TABLES` tables asked for, each sorted
    again when its table changed. Files come from the plan cache (query/plan.py), which the
    server keeps current after every commit: reading a large table's manifests takes seconds
    (9,871 files: 2.2 s warm), the cached plan 50 ms."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Listing] = OrderedDict()

    def get(self, name: str) -> Listing:
        """The listing of table ``name``'s current snapshot (blocking: reads the catalog)."""
        from loglake.query.plan import current_locations, get_plan

        plan = get_plan(self.config, name, (current_locations(self.config) or {}).get(name))
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached.location == plan.metadata_location:
                self._cache.move_to_end(name)
                return cached
        listing = Listing(plan)
        with self._lock:
            self._cache[name] = listing
            self._cache.move_to_end(name)
            while len(self._cache) > FILE_CACHE_TABLES:
                self._cache.popitem(last=False)
        return listing


# -- streams ---------------------------------------------------------------------------------------


class RateMeter:
    """Records per second into and out of each stream, between samples of its counters taken when
    the page asks (at most one a second, those of the last :data:`RATE_WINDOW_S` seconds kept).
    The first look at a stream has no rate yet (None); the page polls and has one the next time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}

    def rates(
        self, stream: str, appended: int, delivered: int, now: float | None = None
    ) -> tuple[float | None, float | None, float | None]:
        """(records appended per second, records delivered per second, seconds measured over)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            samples = self._samples.setdefault(stream, deque(maxlen=int(RATE_WINDOW_S) + 1))
            while samples and now - samples[0][0] > RATE_WINDOW_S:
                samples.popleft()
            if not samples or now - samples[-1][0] >= 1.0:
                samples.append((now, appended, delivered))
            first = samples[0]
        span = now - first[0]
        if span < 1.0:
            return None, None, None
        return (
            round(max(0, appended - first[1]) / span, 3),
            round(max(0, delivered - first[2]) / span, 3),
            round(span, 1),
        )

    def forget_except(self, streams: set[str]) -> None:
        with self._lock:
            for name in set(self._samples) - streams:
                del self._samples[name]


def stream_list(runtime: Runtime, meter: RateMeter) -> list[dict[str, Any]]:
    """Every stream: format, table, offsets, lag, rates, delivery counters, state, sources."""
    sources: dict[str, list[dict[str, Any]]] = {}
    for source in runtime.sources:
        fed = set(source.feeds())
        for fed_stream, counters in dict(source.counters()).items():
            c = counters.snapshot()
            fed.discard(fed_stream)
            sources.setdefault(fed_stream, []).append(
                {
                    "name": source.name,
                    "received": c.received,
                    "accepted": c.accepted,
                    "rejected": c.rejected,
                    "dropped": dict(sorted(c.dropped.items())),
                }
            )
        for fed_stream in fed:  # configured to feed it, nothing received yet
            sources.setdefault(fed_stream, []).append(
                {"name": source.name, "received": 0, "accepted": 0, "rejected": 0, "dropped": {}}
            )
    out = []
    streams = sorted(list(runtime.streams.values()), key=lambda s: s.name)
    meter.forget_except({s.name for s in streams})
    for stream in streams:
        stats = stream.delivery.stats
        appended = stream.log.next_offset
        position = stats.position
        rate_in, rate_out, over = meter.rates(stream.name, appended, position)
        lag = max(0, appended - position)
        errors = list(stream.delivery.errors)
        if not stream.delivery.alive:
            state = "stopped"
        elif not stream.delivery.ready.is_set():
            state = "resuming"
        elif lag:
            state = "delivering"
        else:
            state = "caught up"
        out.append(
            {
                "name": stream.name,
                "format": stream.config.format,
                "table": stream.delivery.table,
                "state": state,
                "first_offset": stream.log.start_offset,
                "next_offset": appended,
                "delivered_offset": position,
                "lag": lag,
                "rate_in": rate_in,
                "rate_out": rate_out,
                "rate_seconds": over,
                "delivered": stats.delivered,
                "rejected": stats.rejected,
                "commits": stats.commits,
                "last_commit_seconds": round(stats.last_commit_seconds, 4),
                "last_error": errors[-1] if errors else None,
                "sources": sorted(sources.get(stream.name, []), key=lambda s: s["name"]),
                "queries": sorted(
                    n for n, (st, _) in runtime.running_queries().items() if st == stream.name
                ),
            }
        )
    return out


# -- rejected records ------------------------------------------------------------------------------


def _has_rejected(config: Config) -> bool:
    from loglake.query.plan import table_names

    return REJECTED_TABLE in table_names(config)


def _no_rejected() -> dict[str, Any]:
    return {
        "groups": [],
        "reasons": 0,
        "records": 0,
        "note": f"{REJECTED_TABLE} does not exist yet: nothing was rejected",
    }


def rejected_groups_sql(most: int) -> str:
    """The newest ``most`` reasons of logs.rejected with their counts, times, sources and tables;
    every row also carries the number of reasons and of records in all."""
    return f"""
        SELECT coalesce(reason, '') AS reason,
               count(*) AS records,
               min(ingested_at) AS first_seen,
               max(ingested_at) AS last_seen,
               count(DISTINCT source) AS source_count,
               list_sort(list(DISTINCT source))[1:5] AS sources,
               list_sort(list(DISTINCT target_table))[1:5] AS tables,
               list_sort(list(DISTINCT format))[1:5] AS formats,
               count(*) OVER () AS reasons,
               sum(count(*)) OVER () AS total
        FROM logs.rejected
        GROUP BY coalesce(reason, '')
        ORDER BY last_seen DESC, reason
        LIMIT {int(most)}
    """


def rejected_groups(table: Any) -> dict[str, Any]:
    """The answer of ``GET /v1/catalog/rejected`` from the result of :func:`rejected_groups_sql`."""
    rows = _records(table)
    reasons = int(rows[0]["reasons"]) if rows else 0
    records = int(rows[0]["total"]) if rows else 0
    for row in rows:
        del row["reasons"], row["total"]
    note = None
    if reasons > len(rows):
        note = (
            f"the {len(rows)} reasons seen last of {reasons:,} are shown; query {REJECTED_TABLE} "
            "for the others"
        )
    return {"groups": rows, "reasons": reasons, "records": records, "note": note}


def rejected_samples_sql(reason: str, offset: int, limit: int) -> str:
    """The lines rejected for ``reason``, newest first (text cut to :data:`SAMPLE_CHARS`)."""
    return f"""
        SELECT ingested_at, source, line, format, target_table,
               octet_length(raw) AS bytes,
               length(text) AS chars,
               left(text, {SAMPLE_CHARS}) AS text
        FROM logs.rejected
        WHERE coalesce(reason, '') = {literal(reason)}
        ORDER BY ingested_at DESC, source, line DESC
        LIMIT {int(limit)} OFFSET {int(offset)}
    """


def _records(table: Any) -> list[dict[str, Any]]:
    """An Arrow table as a list of row objects, values as the console's JSON gives them."""
    names = table.column_names
    columns = [column_values(c) for c in table.columns]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


# -- continuous queries and alerts -----------------------------------------------------------------


def query_list(runtime: Runtime) -> dict[str, Any]:
    """Every continuous query (stream, SQL, window, state, watermark, last result) and alert."""
    settings = runtime.config.queries
    running = runtime.running_queries()
    queries = []
    alerts = []
    for name, (stream_name, q) in sorted(running.items()):
        stats = q.engine.stats
        cfg = settings.get(name)
        stream = runtime.streams.get(stream_name)
        latest = q.latest(1)
        last = latest[-1] if latest else {}
        if stream is not None and not stream.delivery.alive:
            state = "stopped"
        elif stats.windows == 0:
            state = "waiting"
        else:
            state = "running"
        queries.append(
            {
                "name": name,
                "stream": stream_name,
                "table": q.table,
                "sql": q.spec.sql,
                "window": cfg.window if cfg is not None else q.spec.window.kind,
                "lateness": cfg.lateness if cfg is not None else None,
                "key": q.spec.key,
                "state": state,
                "watermark": _us_text(stats.watermark),
                "records": stats.records,
                "windows": stats.windows,
                "corrections": stats.corrections,
                "too_late": stats.too_late,
                "failed_windows": stats.failed_windows,
                "result_rows": q.results,
                "last_result_at": _iso_text(last.get("emitted_at")),
                "last_window_start": _iso_text(last.get("window_start")),
                "last_error": stats.errors[-1] if stats.errors else None,
                "alerts": [a.spec.name for a in q.alerts],
            }
        )
        for alert in q.alerts:
            st = alert.status
            alerts.append(
                {
                    "name": alert.spec.name,
                    "query": name,
                    "when": alert.spec.when,
                    "for": alert.spec.for_windows,
                    "severity": alert.spec.severity,
                    "state": st.state,
                    "since": _iso_text(st.since),
                    "consecutive": st.consecutive,
                    "fired": st.fired,
                    "resolved": st.resolved,
                    "suppressed": st.suppressed,
                }
            )
    return {"queries": queries, "alerts": alerts}


def _iso_text(value: Any) -> str | None:
    """An ISO time (``2024-03-01T10:01:00``) as the console shows times (space, not ``T``)."""
    if value is None:
        return None
    return str(value).replace("T", " ")
