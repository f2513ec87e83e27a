"""ETL jobs: SQL over lake tables, its result written to a lake table, by hand or on a schedule.

A job (``[jobs.NAME]``, :class:`loglake.config.JobConfig`) runs its SQL through the sandboxed query
engine (:class:`loglake.query.engine.Connection`: read-only, the query limits apply) and writes the
result to its target table in ONE Iceberg commit:

- ``full``: the commit replaces every row of the target (an overwrite snapshot), so readers see the
  old result or the new one, never a mix.
- ``incremental``: each lake table the SQL reads that has the ``watermark_column`` is narrowed to the
  rows from the previous watermark (inclusive) up to the start of the ``bucket`` holding its newest
  row (exclusive); the result is appended, and the new watermark goes into the summary of the same
  snapshot (``loglake.job.NAME.watermark``), as stream offsets do (lake/consumer.py). A run that
  dies before its commit leaves the watermark where it was, so its retry reads exactly the same
  rows again; one that dies after it left them done. Either way each row is processed once.

Two runs of one job never overlap: each holds a lock file (``state/jobs/NAME.lock``), and the commit
is refused by the catalog if the target moved since the run read its watermark.

Each run is recorded in ``state/jobs.db`` (:class:`JobHistory`): start, end, status, rows, the
watermark range and the error. That file is bookkeeping only, like the ingest ledger: progress
itself lives in the target's snapshots, so losing the history loses no data and repeats no rows.
The server runs scheduled jobs in one supervised thread (:class:`JobSchedule`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loglake.errors import ConfigError, LakeError, LoglakeError, QueryError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table

    from loglake.config import Config, JobConfig
    from loglake.lake.tables import Tables

log = logging.getLogger("loglake.jobs")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NoSuchJobError(LoglakeError):
    """A job name that the config does not declare."""

    status = 404
    code = "no_such_job"
    exit_code = 2


class JobBusyError(LoglakeError):
    """The job is running already (in this or another process)."""

    status = 409
    code = "job_running"


def watermark_property(job: str) -> str:
    """Snapshot-summary key holding the watermark (µs) an incremental job's target covers."""
    return f"loglake.job.{job}.watermark"


def run_property(job: str) -> str:
    """Snapshot-summary key holding the id of the job run that made the snapshot."""
    return f"loglake.job.{job}.run"


def committed_watermark(table: Table | None, job: str) -> int | None:
    """The watermark of the newest snapshot of ``table`` written by ``job`` (None: none yet)."""
    if table is None:
        return None
    key = watermark_property(job)
    best: tuple[int, int] | None = None
    for snap in table.snapshots():
        value = snap.summary.additional_properties.get(key) if snap.summary is not None else None
        sequence = snap.sequence_number or 0
        if value is not None and (best is None or sequence > best[0]):
            best = (sequence, int(value))
    return best[1] if best else None


# -- history -----------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    mode TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    rows INTEGER NOT NULL DEFAULT 0,
    watermark_from INTEGER,
    watermark_to INTEGER,
    error TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job, started);
"""


@dataclass(frozen=True)
class RunRecord:
    """One run of a job as :class:`JobHistory` keeps it. Times are Unix seconds."""

    id: str
    job: str
    mode: str
    started: float
    finished: float | None
    status: str  # running | ok | failed | interrupted (its process died during the run)
    rows: int
    watermark_from: int | None
    watermark_to: int | None
    error: str

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class JobHistory:
    """The runs of every job: a SQLite file under the state folder (``state/jobs.db``).

    A file of its own rather than the catalog's database: the catalog may be PostgreSQL, REST or
    Glue, and the history must work with all of them. A run still marked ``running`` whose process
    is gone is shown (and stored) as ``interrupted``.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def start(self, job: str, mode: str) -> str:
        """Record a run of ``job`` starting now in this process; returns its id."""
        run_id = uuid.uuid4().hex
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (id, job, mode, started, status, pid) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, job, mode, time.time(), "running", os.getpid()),
            )
        return run_id

    def finish(
        self,
        run_id: str,
        status: str,
        rows: int = 0,
        error: str = "",
        watermark: tuple[int | None, int | None] = (None, None),
    ) -> None:
        """Record the end of run ``run_id``: ``ok`` or ``failed`` with the error's message."""
        with self._lock:
            self._db.execute(
                "UPDATE runs SET finished = ?, status = ?, rows = ?, error = ?, "
                "watermark_from = ?, watermark_to = ? WHERE id = ?",
                (time.time(), status, rows, error, watermark[0], watermark[1], run_id),
            )

    def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest ``limit`` runs (of ``job``, or of every job), newest first."""
        self._settle()
        where, args = ("WHERE job = ?", [job]) if job else ("", [])
        with self._lock:
            rows = self._db.execute(
                "SELECT id, job, mode, started, finished, status, rows, watermark_from, "
                f"watermark_to, error FROM runs {where} ORDER BY started DESC LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [RunRecord(*row) for row in rows]

    def last_start(self, job: str) -> datetime | None:
        """When the newest run of ``job`` started, whatever its outcome (None: never ran)."""
        with self._lock:
            row = self._db.execute("SELECT max(started) FROM runs WHERE job = ?", (job,)).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    def _settle(self) -> None:
        """Mark ``interrupted`` the running runs whose process no longer exists."""
        with self._lock:
            running = self._db.execute(
                "SELECT id, pid FROM runs WHERE status = 'running'"
            ).fetchall()
            for run_id, pid in running:
                if pid != os.getpid() and not _alive(pid):
                    self._db.execute(
                        "UPDATE runs SET status = 'interrupted', error = ? WHERE id = ?",
                        (
                            "its process ended before the run finished; nothing was committed "
                            "unless the target's snapshot names this run",
                            run_id,
                        ),
                    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- one run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """What a run did: rows written to ``target`` and the watermark range it covered."""

    job: str
    run_id: str
    target: str
    rows: int
    seconds: float
    watermark_from: int | None = None
    watermark_to: int | None = None
    note: str = ""  # why nothing was written, when nothing was


class _JobLock:
    """An exclusive lock file per job (``state/jobs/NAME.lock``); JobBusyError when held."""

    def __init__(self, config: Config, name: str):
        folder = config.state_dir / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        self._fh = open(folder / f"{name}.lock", "a+")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise JobBusyError(
                f"job {name} is running already (another `loglake job run` or the server); "
                "wait for it to finish"
            ) from None

    def release(self) -> None:
        self._fh.close()  # closing drops the lock


def get_job(config: Config, name: str) -> JobConfig:
    """The job ``name`` of ``config``; NoSuchJobError listing the jobs there are."""
    job = config.jobs.get(name)
    if job is None:
        known = ", ".join(sorted(config.jobs)) or "none; declare one as [jobs.NAME] in loglake.toml"
        raise NoSuchJobError(f"no job named {name!r}; jobs: {known}")
    return job


def run_job(
    config: Config, name: str, tables: Tables | None = None, history: JobHistory | None = None
) -> RunResult:
    """Run job ``name`` once and record the run in the history; returns what it wrote.

    ``tables``: the server's shared tables (its commit locks and post-commit hooks). Raises
    NoSuchJobError, JobBusyError, QueryError (the SQL fails or its result is cut by a query
    limit), ConfigError (an incremental job reads no table with its watermark column) or LakeError
    (the target cannot be written); the failure is recorded before it is raised.
    """
    job = get_job(config, name)
    lock = _JobLock(config, name)
    own_history = history is None
    hist = history or JobHistory(config.state_dir / "jobs.db")
    run_id = hist.start(name, job.mode)
    started = time.monotonic()
    try:
        result = _run(config, name, job, run_id, tables, started)
    except BaseException as exc:
        hist.finish(run_id, "failed", error=f"{exc}"[:2000] or type(exc).__name__)
        raise
    else:
        hist.finish(
            run_id, "ok", result.rows, result.note, (result.watermark_from, result.watermark_to)
        )
        return result
    finally:
        lock.release()
        if own_history:
            hist.close()


def _run(
    config: Config,
    name: str,
    job: JobConfig,
    run_id: str,
    tables: Tables | None,
    started: float,
) -> RunResult:
    from loglake.lake.catalog import open_catalog
    from loglake.lake.writer import load_existing
    from loglake.query.engine import Connection

    target = job.target_of(name)
    catalog = open_catalog(config)
    before = load_existing(catalog, target)
    sources = _sources(config, job.sql)
    if target.lower() in {s.lower() for s in sources}:
        raise ConfigError(f"jobs.{name}: the SQL reads its own target {target}; write elsewhere")
    low = hi = None
    with Connection(config) as con:
        sql = job.sql
        if job.mode == "incremental":
            low = committed_watermark(before, name)
            hi = _high_watermark(con, config, name, job, sources)
            if hi is None or (low is not None and hi <= low):
                return RunResult(
                    name,
                    run_id,
                    target,
                    0,
                    time.monotonic() - started,
                    low,
                    low,
                    "no new complete bucket in the sources",
                )
            sql = _bounded(job.sql, _timed(config, sources, job.watermark_column), job, low, hi)
        result = con.sql(sql)
    if result.truncated:
        raise QueryError(
            f"jobs.{name}: the result was cut at its query.{'max_' + (result.cut_by or 'rows')} "
            "limit, so nothing was written; raise [query] max_rows / max_result_bytes, or let "
            "the job aggregate more"
        )
    data = _storable(result.arrow())
    if job.mode == "incremental" and data.num_rows == 0:
        # Nothing to append: the watermark stays, and the next run reads this range again (with
        # any late rows it gets meanwhile); an empty range costs one query.
        return RunResult(
            name,
            run_id,
            target,
            0,
            time.monotonic() - started,
            low,
            low,
            "the SQL returned no rows for the new range",
        )
    props = {run_property(name): run_id}
    if hi is not None:
        props[watermark_property(name)] = str(hi)
    table = _commit(config, catalog, target, before, data, props, job.mode, tables)
    from loglake.query.plan import refresh_plans

    if tables is None:
        refresh_plans(config, {target: table})
    log.info(
        "job %s: %d rows written to %s",
        name,
        data.num_rows,
        target,
        extra={"fields": {"job": name, "rows": data.num_rows, "target": target, "run": run_id}},
    )
    return RunResult(name, run_id, target, data.num_rows, time.monotonic() - started, low, hi)


def _sources(config: Config, sql: str) -> list[str]:
    """The lake tables ``sql`` names (``namespace.table``), as the catalog spells them."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    from loglake.query.plan import table_names

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except ParseError as exc:
        raise QueryError(f"cannot parse the job's SQL: {exc}") from exc
    known = {n.lower(): n for n in table_names(config)}
    found: list[str] = []
    for table in tree.find_all(exp.Table):
        name = f"{table.db}.{table.name}".lower() if table.db else ""
        if name in known and known[name] not in found:
            found.append(known[name])
    return found


def _timed(config: Config, sources: list[str], column: str) -> list[str]:
    """The tables of ``sources`` that have ``column`` (the ones an incremental run narrows)."""
    from loglake.query.plan import current_locations, get_plan

    locations = current_locations(config) or {}
    return [
        name
        for name in sources
        if column.lower()
        in {c.lower() for c, _ in get_plan(config, name, locations.get(name)).columns}
    ]


def _high_watermark(
    con: Any, config: Config, name: str, job: JobConfig, sources: list[str]
) -> int | None:
    """The start of the bucket holding the newest row, the earliest over the narrowed sources
    (so a lagging source is never skipped); None when they hold no rows."""
    from loglake.query.engine import to_micros
    from loglake.sqltext import ident, qualified

    timed = _timed(config, sources, job.watermark_column)
    if not timed:
        raise ConfigError(
            f"jobs.{name}: an incremental job needs a lake table with column "
            f"{job.watermark_column!r} in its SQL (it reads: {', '.join(sources) or 'none'}); "
            'set watermark_column, or use mode = "full"'
        )
    highs = []
    for table in timed:
        value = con.sql(f"SELECT max({ident(job.watermark_column)}) FROM {qualified(table)}")
        newest = value.fetchall()[0][0]
        if newest is None:
            return None
        if not isinstance(newest, datetime):
            raise ConfigError(
                f"jobs.{name}.watermark_column: {table}.{job.watermark_column} is not a timestamp"
            )
        us = to_micros(newest)
        highs.append(us - us % job.bucket_us)
    return min(highs)


def _timestamp(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M:%S.%f")


def _bounded(sql: str, timed: list[str], job: JobConfig, low: int | None, hi: int) -> str:
    """``sql`` with each table of ``timed`` replaced by its rows in ``[low, hi)`` of the watermark
    column (a subquery keeping the table's alias or name, so column references still resolve)."""
    import sqlglot
    from sqlglot import exp

    from loglake.sqltext import ident, literal, qualified

    wanted = {t.lower() for t in timed}
    tree = sqlglot.parse_one(sql, read="duckdb")
    column = ident(job.watermark_column)
    cond = f"{column} < TIMESTAMP {literal(_timestamp(hi))}"
    if low is not None:
        cond = f"{column} >= TIMESTAMP {literal(_timestamp(low))} AND {cond}"
    for table in list(tree.find_all(exp.Table)):
        name = f"{table.db}.{table.name}"
        if not table.db or name.lower() not in wanted:
            continue
        alias = table.alias_or_name
        sub = sqlglot.parse_one(
            f"(SELECT * FROM {qualified(name)} WHERE {cond}) AS {ident(alias)}", read="duckdb"
        )
        table.replace(sub)
    return tree.sql(dialect="duckdb")


def _storable(data: pa.Table) -> pa.Table:
    """``data`` with the Arrow types Iceberg cannot store cast to ones it can (unsigned to signed
    integers, nanoseconds to microseconds, views and nulls to strings)."""
    import pyarrow as pa

    fields = []
    for field in data.schema:
        t = field.type
        if pa.types.is_unsigned_integer(t):
            t = pa.int64()
        elif pa.types.is_timestamp(t) and t.unit != "us":
            t = pa.timestamp("us", tz=t.tz)
        elif pa.types.is_null(t) or pa.types.is_string_view(t) or pa.types.is_large_string(t):
            t = pa.string()
        elif pa.types.is_time(t):
            t = pa.time64("us")
        fields.append(pa.field(field.name, t, nullable=True))
    return data.cast(pa.schema(fields))


def _commit(
    config: Config,
    catalog: Any,
    target: str,
    before: Table | None,
    data: pa.Table,
    props: dict[str, str],
    mode: str,
    tables: Tables | None,
) -> Table:
    """Write ``data`` to ``target`` in one snapshot carrying ``props``: an overwrite (full) or an
    append (incremental). The target is created, or given the result's new columns, first; a
    target that another writer moved since ``before`` was read is refused (nothing written)."""
    from contextlib import nullcontext

    from pyiceberg.exceptions import CommitFailedException

    from loglake.lake.catalog import ensure_table

    lock = tables.get(target).lock if tables is not None else nullcontext()
    with lock:
        table = ensure_table(catalog, target, data.schema, config.table(target).partition, "ts")
        was = before.current_snapshot() if before is not None else None
        now = table.current_snapshot()
        if (was.snapshot_id if was else None) != (now.snapshot_id if now else None):
            raise LakeError(
                f"{target} changed while the job ran (another writer committed to it); "
                "nothing was written: run the job again"
            )
        location = table.metadata_location
        try:
            if mode == "full":
                with warnings.catch_warnings():
                    # pyiceberg warns when the overwrite finds no rows to delete (a new target).
                    warnings.filterwarnings("ignore", "Delete operation did not match")
                    table.overwrite(data, snapshot_properties=props)
            else:
                table.append(data, snapshot_properties=props)
        except CommitFailedException as exc:
            raise LakeError(
                f"{target} changed while the job ran ({exc}); nothing was written: run it again"
            ) from exc
        except Exception as exc:
            raise LakeError(f"writing the job's result to {target} failed: {_short(exc)}") from exc
        if tables is not None:
            tables.committed(target, table, None if mode == "full" else location, [])
    return table


def _short(exc: Exception) -> str:
    """pyiceberg's message, with its table of a schema mismatch cut to the columns that differ."""
    text = str(exc)
    if "Mismatch in fields" not in text:
        return text
    clashes = []
    for line in text.splitlines():
        if "❌" in line:
            cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
            if len(cells) == 3:
                clashes.append(f"the table has {cells[1]}, the result {cells[2]}")
    return (
        "the result's column types do not fit the target's ("
        + "; ".join(clashes or ["see the log"])
        + "); cast them in the SQL to the table's types, or write to a new target"
    )


# -- the server's schedule ---------------------------------------------------------------------

#: How often the schedule looks at the clock at most (a job's time is met within this).
_TICK_S = 1.0


@dataclass
class JobStats:
    """Counters of one scheduled job in this server process (on ``/metrics``, label ``job``)."""

    runs: int = 0  # scheduled runs started
    failures: int = 0  # of those, the ones that failed (logged; retried at the next time)
    rows: int = 0  # rows the runs wrote to the target


class JobSchedule:
    """Runs the config's scheduled jobs inside ``loglake serve``, one at a time, in one thread.

    A run that fails is logged (and recorded as failed); the job is tried again at its next
    scheduled time. :meth:`run` never raises for a job's failure; the supervisor restarts it if
    something else makes it raise.
    """

    def __init__(self, config: Config, tables: Tables | None = None):
        self.config = config
        self.tables = tables
        self._stop = threading.Event()
        self.stats = {name: JobStats() for name in self.scheduled}
        # Whether this node runs job NAME now (several nodes: the one holding its lease).
        self.may_run: Callable[[str], bool] = lambda name: True

    @property
    def scheduled(self) -> list[str]:
        return sorted(n for n, j in self.config.jobs.items() if j.schedule_spec.scheduled)

    def run(self) -> None:
        """Run due jobs until :meth:`stop`."""
        history = JobHistory(self.config.state_dir / "jobs.db")
        try:
            while not self._stop.is_set():
                now = datetime.now(UTC)
                for name in self.scheduled:
                    if self._stop.is_set():
                        break
                    spec = self.config.jobs[name].schedule_spec
                    due = spec.next_run(history.last_start(name), now)
                    if due is not None and due <= now and self.may_run(name):
                        self._run_one(name, history)
                self._stop.wait(_TICK_S)
        finally:
            history.close()

    def _run_one(self, name: str, history: JobHistory) -> None:
        stats = self.stats[name]
        stats.runs += 1
        try:
            stats.rows += run_job(self.config, name, self.tables, history).rows
        except Exception as exc:
            stats.failures += 1
            log.error(
                "job %s failed: %s; it runs again at its next scheduled time",
                name,
                exc,
                exc_info=not isinstance(exc, LoglakeError),
                extra={"fields": {"job": name, "reason": str(exc)}},
            )

    def stop(self) -> None:
        self._stop.set()
