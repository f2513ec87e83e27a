"""Table maintenance that keeps frequently committed tables fast.

Measured (ARCHITECTURE.md): one small append every 2 s, plain, took 0.85 s per append and 94 MB of
metadata after 500 commits; with manifest merging, metadata clean-up after commit and expiring
snapshots every 50 commits (keeping the last 10), appends stayed near 60 ms. Manifest merging and
metadata clean-up are table properties (lake/catalog.py); snapshot expiry is done here.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from loglake.config import Config
    from loglake.lake.tables import Tables

log = logging.getLogger(__name__)

OFFSET_PREFIX = "loglake.offset."


def expire_snapshots(table: Table, keep_last: int = 10) -> int:
    """Expire all but the ``keep_last`` newest snapshots; returns how many were expired.

    The newest snapshot carrying each stream's offset (``loglake.offset.*`` in its summary) is always
    kept too, because delivery resumes from it after a restart: expiring it would lose the position.
    """
    expired = expirable(table, keep_last, 0.0, 0)
    if expired:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    return len(expired)


#: Files at or above this size are left alone by compaction.
SMALL_FILE_BYTES = 4 << 20
#: Size tiers: files merge only with files of the same tier, so a row is rewritten once per tier
#: (three times at most), not every time a growing merged file absorbs a few new small ones.
TIERS = (64 << 10, 512 << 10, SMALL_FILE_BYTES)
#: A tier of a partition is compacted once it holds this many files ...
COMPACT_MIN_FILES = 8
#: ... or once its files reach this much compressed input, which also bounds one merge's memory
#: (log rows compress ~25x: 8 MiB of zstd Parquet is ~800k rows, several hundred MB in memory).
MERGE_INPUT_BYTES = 8 << 20


def plan_compaction(table: Table) -> list[list[Any]]:
    """Groups of small data files to merge: per partition and size tier, the smallest first.

    A group is returned when it has :data:`COMPACT_MIN_FILES` files, or at least two files that
    together reach :data:`MERGE_INPUT_BYTES`. Reads the table's manifests only.
    """
    from loglake.lake.catalog import registered_in_place

    groups: dict[Any, list[Any]] = defaultdict(list)
    location = table.location()
    for task in table.scan().plan_files():
        data_file = task.file
        size = data_file.file_size_in_bytes
        if task.delete_files or size >= SMALL_FILE_BYTES:
            continue
        if registered_in_place(location, data_file.file_path):
            continue  # a user's file registered where it lies: never rewritten
        tier = next(i for i, limit in enumerate(TIERS) if size < limit)
        groups[(data_file.spec_id, str(data_file.partition), tier)].append(data_file)
    plans = []
    for files in groups.values():
        files.sort(key=lambda f: f.file_size_in_bytes)
        chosen: list[Any] = []
        size = 0
        for f in files:
            if chosen and size + f.file_size_in_bytes > MERGE_INPUT_BYTES:
                break
            chosen.append(f)
            size += f.file_size_in_bytes
        full = len(chosen) < len(files)  # stopped at the byte cap
        if len(chosen) >= COMPACT_MIN_FILES or (full and len(chosen) >= 2):
            plans.append(chosen)
    return plans


def write_merged(
    catalog: Catalog, table: Table, name: str, files: list[Any], time_column: str = "ts"
) -> list[Any]:
    """Write the rows of ``files`` as new data files (not committed yet); returns the new files.

    The heavy part of compaction (reading and writing Parquet); safe to run while another thread
    commits to the table, because nothing becomes visible until :func:`commit_replace`.
    """
    import polars as pl
    import pyarrow.parquet as pq

    from loglake.lake.writer import TableWriter

    def read(path: str) -> pl.DataFrame:
        # Through the table's FileIO: a warehouse on S3 is read with the catalog's S3 settings.
        with table.io.new_input(path).open() as stream:
            return pl.DataFrame(pq.read_table(stream))

    frames = [read(f.file_path) for f in files]
    frame = pl.concat(frames, how="diagonal_relaxed")
    writer = TableWriter(_opener(catalog, table), name, 10**12, sort_by=time_column)
    try:
        return writer.write_files(frame)
    finally:
        writer.close()


def commit_replace(table: Table, old_files: list[Any], new_files: list[Any]) -> Table:
    """One OVERWRITE snapshot that removes ``old_files`` and adds ``new_files``; the new table.

    A reader sees either all old files or all new ones, never both or neither, so no row is seen
    twice or missed. ``table`` must be the latest state (commits to it must not run concurrently).
    Raises LakeError if the catalog refuses the commit.
    """
    from loglake.errors import LakeError

    try:
        tx = table.transaction()
        with tx.update_snapshot(
            snapshot_properties={"loglake.compacted-files": str(len(old_files))}
        ).overwrite() as overwrite:
            for data_file in old_files:
                overwrite.delete_data_file(data_file)
            for data_file in new_files:
                overwrite.append_data_file(data_file)
        return tx.commit_transaction()
    except Exception as exc:
        raise LakeError(f"compaction commit to {table.name()} failed: {exc}") from exc


def compact(catalog: Catalog, table: Table, name: str, time_column: str = "ts") -> tuple[int, int]:
    """Merge the small files of each partition that has many (see :func:`plan_compaction`).

    Streaming commits leave one small file per partition per commit; a scan over many small files
    is several times slower than over few (ARCHITECTURE.md: 116 ms vs 13 ms for 2M rows). Each
    merge is its own OVERWRITE snapshot (:func:`commit_replace`). Must not run concurrently with
    another writer of the table (delivery runs the steps itself, committing under its lock).
    Returns (files removed, files written).
    """
    removed = written = 0
    current = table
    for files in plan_compaction(table):
        new_files = write_merged(catalog, current, name, files, time_column)
        current = commit_replace(current, files, new_files)
        removed += len(files)
        written += len(new_files)
    return removed, written


def _opener(catalog: Catalog, table: Table) -> Callable[[], tuple[Catalog, Table]]:
    return lambda: (catalog, table)


#: Files no snapshot references any more are deleted once they are this old: older than any query
#: still reading an earlier snapshot (query.timeout_s is 60 s by default) and than any write in
#: flight (data files are written before their commit).
ORPHAN_AGE_S = 600.0


def remove_orphans(
    table: Table, older_than_s: float = ORPHAN_AGE_S, dry_run: bool = False
) -> tuple[int, int]:
    """Delete data files, manifests and manifest lists that no snapshot of ``table`` references.

    Snapshot expiry (pyiceberg) only drops snapshots from the metadata; files replaced by
    compaction and the manifests of expired snapshots stay on disk until removed here, like
    Iceberg's ``remove_orphan_files``. Metadata JSON files are left to the table's
    ``write.metadata.delete-after-commit`` setting. Files younger than ``older_than_s`` are kept
    (a commit in flight has not referenced its files yet). Returns (files deleted, bytes freed);
    with ``dry_run``, what would be deleted, deleting nothing.
    """

    from pyarrow.fs import FileSelector, FileSystem

    # Taken before the walk: a file another process writes while this walks the manifests (a
    # stream's next commit) is younger than the cutoff however long the walk takes.
    cutoff_ns = (time.time() - older_than_s) * 1e9
    io = table.io
    referenced: set[str] = set()
    manifests_seen: set[str] = set()
    for snap in table.snapshots():
        referenced.add(_norm(snap.manifest_list))
        for manifest in snap.manifests(io):
            if manifest.manifest_path in manifests_seen:
                continue
            manifests_seen.add(manifest.manifest_path)
            referenced.add(_norm(manifest.manifest_path))
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                referenced.add(_norm(entry.data_file.file_path))
    fs, root = FileSystem.from_uri(table.location())
    deleted = freed = 0
    for folder in ("data", "metadata"):
        try:
            infos = fs.get_file_info(FileSelector(f"{root}/{folder}", recursive=True))
        except (FileNotFoundError, OSError):
            continue
        for info in infos:
            if not info.is_file or info.path.endswith((".metadata.json", "version-hint.text")):
                continue
            if not info.path.endswith((".parquet", ".avro")):
                continue  # only the kinds of file the table writes
            if _norm(info.path) in referenced or info.mtime_ns is None:
                continue
            if info.mtime_ns > cutoff_ns:
                continue
            if dry_run:
                deleted += 1
                freed += info.size or 0
                continue
            try:
                fs.delete_file(info.path)
            except FileNotFoundError:
                continue
            deleted += 1
            freed += info.size or 0
    return deleted, freed


def _norm(uri: str) -> str:
    """A file's location without its scheme, so catalog URIs and listed paths compare equal."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    return f"{parsed.netloc}{unquote(parsed.path)}"


# -- the schedule: one per process, one entry per table ---------------------------------------

#: Commits to a table between looks for partitions with many small files to compact.
COMPACT_EVERY = 10
#: Commits between snapshot expiries: every commit copies the table metadata, whose size grows
#: with the snapshots kept (pyiceberg deep-copies it), so expiring often keeps commits cheap.
EXPIRE_EVERY = 10
ORPHANS_EVERY_S = 300.0  # seconds between removals of unreferenced files (they wait 10 min anyway)
MAINTAIN_IDLE_S = 30.0  # a pass at least this often while commits happen


@dataclass
class MaintenanceStats:
    """What maintenance did to one table (read any time)."""

    passes: int = 0
    compacted_files: int = 0
    compactions_deferred: int = 0  # passes that skipped compaction because ingest was behind
    expired_snapshots: int = 0
    removed_files: int = 0  # files no snapshot references any more, deleted
    removed_bytes: int = 0
    retention_dropped_files: int = 0  # files dropped whole because their data was past retention
    retention_dropped_rows: int = 0
    failures: int = 0


@dataclass
class _Entry:
    name: str
    time_column: str
    commits: int = 0  # commits seen (the post-commit hook counts them)
    compacted_at: int = 0  # `commits` at the last compaction look
    expired_at: int = 0
    orphans_at: float = field(default_factory=time.monotonic)
    stats: MaintenanceStats = field(default_factory=MaintenanceStats)


class MaintenanceSchedule:
    """Compaction, snapshot expiry and removal of unreferenced files for the tables streams write,
    one schedule per table however many streams write it (two streams writing ``logs.access``,
    every stream writing ``logs.rejected``).

    Counts each table's commits through a post-commit hook of ``tables``; :meth:`run` (the body of
    one supervised worker thread) makes a pass every :data:`COMPACT_EVERY` commits of a table, or
    after a quiet spell when commits came since. Commits to a table take turns under its lock; the
    heavy part of compaction (reading and writing Parquet) runs outside it. ``behind()`` says
    whether ingest is behind: compaction (which rewrites rows once more) then waits for a later
    pass instead of taking CPU from it. A failed pass is logged and counted; the next one retries.
    """

    def __init__(
        self,
        catalog: Callable[[], Catalog],
        tables: Tables,
        behind: Callable[[], bool] = lambda: False,
        config: Config | None = None,
    ) -> None:
        self._catalog = catalog
        self._tables = tables
        self._behind = behind
        # With a config, every table of the catalog is also maintained every
        # ``maintenance.interval_s`` (:func:`maintain_table`): batch-written and crawled tables too.
        self._config = config
        interval = config.maintenance.interval_s if config is not None else 0.0
        self._interval = interval
        self._full_at = time.monotonic() + interval
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._due = threading.Event()
        self._stop = threading.Event()
        tables.on_commit(self._committed)

    def manage(self, name: str, time_column: str) -> MaintenanceStats:
        """Maintain table ``name`` from now on (idempotent); its counters."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Entry(name, time_column)
            return entry.stats

    def stats(self) -> dict[str, MaintenanceStats]:
        with self._lock:
            return {name: e.stats for name, e in self._entries.items()}

    def _committed(self, name: str, table: Table, before: str | None, added: list[Any]) -> None:
        entry = self._entries.get(name)
        if entry is not None and before is not None:  # an append (rewrites are ours)
            entry.commits += 1
            if entry.commits - entry.compacted_at >= COMPACT_EVERY:
                self._due.set()

    def run(self) -> None:
        """Make passes until :meth:`stop`. Never raises for a table's failure."""
        seen: dict[str, int] = {}
        while not self._stop.is_set():
            wait = MAINTAIN_IDLE_S
            if self._interval > 0:
                wait = max(0.0, min(wait, self._full_at - time.monotonic()))
            kicked = self._due.wait(wait)
            self._due.clear()
            if self._stop.is_set():
                return
            if self._interval > 0 and time.monotonic() >= self._full_at:
                self._maintain_all()
                self._full_at = time.monotonic() + self._interval
                continue
            with self._lock:
                entries = list(self._entries.values())
            for entry in entries:
                changed = entry.commits != seen.get(entry.name, 0)
                if not changed:
                    continue
                if kicked and entry.commits - entry.compacted_at < COMPACT_EVERY:
                    continue  # another table's turn; this one after a quiet spell
                seen[entry.name] = entry.commits
                self._pass(entry)
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        """End :meth:`run` soon (a compaction still writing is abandoned: its files were never
        committed, no row is lost)."""
        self._stop.set()
        self._due.set()

    def _pass(self, entry: _Entry) -> None:
        try:
            entry.stats.passes += 1
            entry.compacted_at = entry.commits
            self._compact(entry)
            if entry.commits - entry.expired_at >= EXPIRE_EVERY:
                self._expire(entry)
        except BaseException as exc:  # report, never stop maintaining the other tables
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            entry.stats.failures += 1
            log.warning(
                "maintenance of %s failed: %s",
                entry.name,
                exc,
                exc_info=True,
                extra={"fields": {"table": entry.name, "reason": str(exc)}},
            )

    def _maintain_all(self) -> None:
        """One :func:`maintain_table` of every table in the catalog, partitions still being
        written (time range not yet over) excepted. A table's failure is logged and counted."""
        from loglake.lake.catalog import list_tables
        from loglake.lake.rejected import time_column

        assert self._config is not None
        try:
            catalog = self._catalog()
            names = list_tables(catalog)
        except Exception as exc:
            log.warning("maintenance: cannot list the tables: %s", exc, exc_info=True)
            return
        for name in names:
            if self._stop.is_set():
                return
            with self._lock:
                entry = self._entries.get(name)
                if entry is None:
                    entry = self._entries[name] = _Entry(name, time_column(name))
            stats = entry.stats
            try:
                stats.passes += 1
                report = maintain_table(
                    catalog, name, self._config, tables=self._tables, closed_only=True
                )
            except Exception as exc:  # report, never stop maintaining the other tables
                stats.failures += 1
                log.warning(
                    "maintenance of %s failed: %s",
                    name,
                    exc,
                    exc_info=True,
                    extra={"fields": {"table": name, "reason": str(exc)}},
                )
                continue
            stats.compacted_files += report.compacted_files
            stats.expired_snapshots += report.snapshots_expired
            stats.removed_files += report.orphans_removed
            stats.removed_bytes += report.orphan_bytes
            stats.retention_dropped_files += report.files_dropped
            stats.retention_dropped_rows += report.rows_dropped
            if report.compacted_files or report.files_dropped or report.snapshots_expired:
                log.info(
                    "maintained %s: files %d -> %d, %d partitions dropped, %d snapshots expired",
                    name,
                    report.files_before,
                    report.files_after,
                    len(report.partitions_dropped),
                    report.snapshots_expired,
                    extra={"fields": {"table": name, **report.as_dict()}},
                )

    def _compact(self, entry: _Entry) -> None:
        catalog = self._catalog()
        shared = self._tables.get(entry.name)
        with shared.lock:
            # A table object of its own: pyiceberg caches lazily inside table metadata, so a
            # writer's object, read by its committer thread meanwhile, is not shared here.
            table = _load_latest(catalog, entry.name)
        for files in plan_compaction(table):
            if self._stop.is_set():
                return
            if self._behind():
                entry.stats.compactions_deferred += 1
                return
            new_files = write_merged(catalog, table, entry.name, files, entry.time_column)
            # On the newest metadata, refused when `loglake maintain` in another process
            # replaced one of these files meanwhile (then the next pass plans again).
            _commit_files(
                catalog,
                entry.name,
                self._tables,
                files,
                new_files,
                {"loglake.compacted-files": str(len(files))},
            )
            entry.stats.compacted_files += len(files)

    def _expire(self, entry: _Entry) -> None:
        catalog = self._catalog()
        entry.expired_at = entry.commits
        shared = self._tables.get(entry.name)
        with shared.lock:
            ids = expirable(_load_latest(catalog, entry.name), 10, 0.0, 0)
        table = _expire_ids(catalog, entry.name, self._tables, ids)
        entry.stats.expired_snapshots += len(ids)
        if time.monotonic() - entry.orphans_at >= ORPHANS_EVERY_S:
            entry.orphans_at = time.monotonic()
            deleted, freed = remove_orphans(table)
            entry.stats.removed_files += deleted
            entry.stats.removed_bytes += freed


# -- maintenance of any table to a target file size, with retention ----------------------------
# `loglake maintain` and the server's periodic pass over every table of the catalog (batch-written,
# crawled and streamed alike). Unlike the streaming tiers above, which keep freshly committed
# partitions cheap to scan, this brings every partition to few files of about the target size.

#: Rows merged per write: bounds a merge's memory whatever the target file size.
MERGE_BATCH_ROWS = 131_072
#: Commit attempts when another writer moved the table on meanwhile.
COMMIT_ATTEMPTS = 5


@dataclass
class MaintainReport:
    """What one maintenance of one table did (or, with ``dry_run``, would do)."""

    table: str
    dry_run: bool = False
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0
    compacted_files: int = 0  # small files merged away
    written_files: int = 0  # files the merges wrote
    partitions_dropped: list[str] = field(default_factory=list)
    files_dropped: int = 0
    rows_dropped: int = 0
    snapshots_expired: int = 0
    orphans_removed: int = 0
    orphan_bytes: int = 0
    # Users' files registered where they lie (loglake crawl without --convert): retention and
    # compaction leave them alone, and orphan removal never looks outside the table's folder.
    in_place_files: int = 0

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def time_field(table: Table) -> tuple[str | None, Any]:
    """The table's event-time column and the partition field on it (hour, day or month), either
    None when the table has none: the partition spec's time transform first, else ``ts`` or
    ``ingested_at`` (rejected lines) when the schema has one."""
    from pyiceberg.transforms import DayTransform, HourTransform, MonthTransform

    schema = table.schema()
    for spec_field in table.spec().fields:
        if isinstance(spec_field.transform, HourTransform | DayTransform | MonthTransform):
            return schema.find_column_name(spec_field.source_id), spec_field
    names = set(schema.column_names)
    for column in ("ts", "ingested_at"):
        if column in names:
            return column, None
    return None, None


def _live_files(table: Table) -> list[Any]:
    """The data files of the table's current snapshot (files with row deletes are left alone)."""
    return [task.file for task in table.scan().plan_files() if not task.delete_files]


def _partition_end(table: Table, data_file: Any, column: str) -> datetime | None:
    """When the time range of ``data_file`` ends: the end of its time partition, else the upper
    bound of its time column's statistics (exact for timestamps); None when unknown."""
    from pyiceberg.conversions import from_bytes
    from pyiceberg.transforms import DayTransform, HourTransform, MonthTransform

    schema = table.schema()
    source = schema.find_field(column)
    spec = table.specs().get(data_file.spec_id)
    if spec is not None:
        for i, spec_field in enumerate(spec.fields):
            if spec_field.source_id != source.field_id:
                continue
            value = data_file.partition[i]
            if value is None:
                break
            start = datetime(1970, 1, 1, tzinfo=UTC)
            if isinstance(spec_field.transform, HourTransform):
                return start + timedelta(hours=value + 1)
            if isinstance(spec_field.transform, DayTransform):
                return start + timedelta(days=value + 1)
            if isinstance(spec_field.transform, MonthTransform):
                year, month = divmod(value + 1, 12)
                return datetime(1970 + year, month + 1, 1, tzinfo=UTC)
    bound = (data_file.upper_bounds or {}).get(source.field_id)
    if bound is None:
        return None
    try:
        micros = from_bytes(source.field_type, bound)  # type: ignore[arg-type]
    except Exception:
        return None  # not a timestamp column: no time range
    if not isinstance(micros, int):
        return None
    # The newest row is at `micros`; the range ends just after it.
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros + 1)


def _partition_name(table: Table, data_file: Any) -> str:
    spec = table.specs().get(data_file.spec_id)
    if spec is None or not spec.fields:
        return "(unpartitioned)"
    return spec.partition_to_path(data_file.partition, table.schema())


def plan_retention(
    table: Table, column: str | None, days: int, now: datetime
) -> tuple[list[Any], list[str]]:
    """The files whose whole time range is older than ``days`` days before ``now``, and the names
    of their partitions. Nothing for ``days`` 0 or a table without a time column. A file whose
    range reaches past the cutoff is kept whole: no row is rewritten. Files registered in place
    (a user's files, outside the table's folder) are never dropped: they are the user's data."""
    from loglake.lake.catalog import registered_in_place

    if days <= 0 or column is None:
        return [], []
    cutoff = now - timedelta(days=days)
    files = []
    partitions: set[str] = set()
    location = table.location()
    for data_file in _live_files(table):
        if registered_in_place(location, data_file.file_path):
            continue  # the user's file: its data is theirs to keep (see in_place_files)
        end = _partition_end(table, data_file, column)
        if end is not None and end <= cutoff:
            files.append(data_file)
            partitions.add(_partition_name(table, data_file))
    return files, sorted(partitions)


def plan_target_compaction(
    table: Table,
    target_bytes: int,
    closed_before: datetime | None = None,
    column: str | None = None,
) -> list[list[Any]]:
    """Groups of files to merge, each into one file of at most about ``target_bytes``.

    Per partition, the files smaller than three quarters of the target are packed, smallest
    first, into groups whose sizes add up to at most the target; a group of one file is left
    alone, and so are files outside the table's location (registered where they were). With
    ``closed_before``, partitions whose time range has not ended by then are skipped (streams
    still write them; their own tiers keep them fast).
    """
    from loglake.lake.catalog import registered_in_place

    by_partition: dict[Any, list[Any]] = defaultdict(list)
    location = table.location()
    for data_file in _live_files(table):
        if data_file.file_size_in_bytes >= target_bytes * 3 // 4:
            continue
        if registered_in_place(location, data_file.file_path):
            continue  # registered in place (Iceberg add_files): the user's file, never rewritten
        if closed_before is not None and column is not None:
            end = _partition_end(table, data_file, column)
            if end is not None and end > closed_before:
                continue
        by_partition[(data_file.spec_id, str(data_file.partition))].append(data_file)
    plans: list[list[Any]] = []
    for files in by_partition.values():
        files.sort(key=lambda f: f.file_size_in_bytes)
        group: list[Any] = []
        size = 0
        for data_file in files:
            if group and size + data_file.file_size_in_bytes > target_bytes:
                if len(group) > 1:
                    plans.append(group)
                group, size = [], 0
            group.append(data_file)
            size += data_file.file_size_in_bytes
        if len(group) > 1:
            plans.append(group)
    return plans


def merge_files(table: Table, files: list[Any], column: str | None) -> Any:
    """Write the rows of ``files`` (one partition) as one new data file, uncommitted; returns it.

    Streams the input :data:`MERGE_BATCH_ROWS` rows at a time, so memory stays bounded whatever
    the target size; each chunk is sorted by ``column``. Rows of files written under an older
    schema get nulls for the columns added since. Raises LakeError when a file cannot be read or
    written (the partly written file is an orphan, removed later).
    """
    import uuid

    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.io.fileformat import FileFormatFactory
    from pyiceberg.io.pyarrow import _to_requested_schema, pyarrow_to_schema, schema_to_pyarrow
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

    from loglake.errors import LakeError
    from loglake.lake.writer import align

    meta = table.metadata
    schema = meta.schema()
    target = schema_to_pyarrow(schema, include_field_ids=False)
    model = FileFormatFactory.get(FileFormat.PARQUET)
    first = files[0]
    path = f"{first.file_path.rsplit('/', 1)[0]}/compacted-{uuid.uuid4()}.parquet"
    out = table.io.new_output(path)
    writer = model.create_writer(out, schema, meta.properties)
    pending: list[pl.DataFrame] = []
    rows = 0

    def write_pending() -> None:
        frame = pl.concat(pending, how="diagonal_relaxed") if len(pending) > 1 else pending[0]
        pending.clear()
        if column is not None and column in frame.columns:
            frame = frame.sort(column)
        arrow = align(frame, target).to_arrow(compat_level=pl.CompatLevel.oldest()).cast(target)
        file_schema = pyarrow_to_schema(
            arrow.schema, name_mapping=schema.name_mapping, format_version=meta.format_version
        )
        batches = [
            _to_requested_schema(
                requested_schema=schema,
                file_schema=file_schema,
                batch=batch,
                include_field_ids=True,
                format_model=model,
            )
            for batch in arrow.to_batches()
        ]
        writer.write(pa.Table.from_batches(batches))

    try:
        with writer:
            for data_file in files:
                with table.io.new_input(data_file.file_path).open() as stream:
                    for batch in pq.ParquetFile(stream).iter_batches(batch_size=MERGE_BATCH_ROWS):
                        pending.append(pl.DataFrame(pl.from_arrow(batch)))
                        rows += batch.num_rows
                        if rows >= MERGE_BATCH_ROWS:
                            write_pending()
                            rows = 0
            if pending:
                write_pending()
        stats = writer.result()
    except Exception as exc:
        raise LakeError(f"cannot merge data files of {table.name()}: {exc}") from exc
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=first.partition,
        file_size_in_bytes=len(out),
        sort_order_id=None,
        spec_id=first.spec_id,
        equality_ids=None,
        key_metadata=None,
        **stats.to_serialized_dict(),
    )


def expirable(table: Table, keep_last: int, min_age_s: float, now_ms: int) -> list[int]:
    """Ids of the snapshots :func:`expire_snapshots` rules allow to expire, and only those that
    stopped being current (their successor was committed) at least ``min_age_s`` ago: a query
    planned on a snapshot reads its files for up to ``query.timeout_s``."""
    snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number or 0)
    keep = {s.snapshot_id for s in snapshots[-keep_last:]}
    current = table.current_snapshot()
    if current is not None:
        keep.add(current.snapshot_id)
    latest_by_key: dict[str, int] = {}
    for snap in snapshots:
        props = snap.summary.additional_properties if snap.summary is not None else {}
        for key in props:
            if key.startswith(OFFSET_PREFIX):
                latest_by_key[key] = snap.snapshot_id
    keep.update(latest_by_key.values())
    if min_age_s > 0:
        cutoff_ms = now_ms - min_age_s * 1000
        for older, newer in itertools.pairwise(snapshots):
            if newer.timestamp_ms > cutoff_ms:
                keep.add(older.snapshot_id)
    return [s.snapshot_id for s in snapshots if s.snapshot_id not in keep]


def _load_latest(catalog: Catalog, name: str) -> Table:
    """Table ``name`` as the catalog has it now.

    Retried when the metadata file the catalog pointed at is gone before it could be read: a
    writer of another process (a server's stream) committed several times meanwhile, and each
    commit deletes metadata files past ``write.metadata.previous-versions-max``. Raises LakeError
    when that keeps happening.
    """
    from loglake.errors import LakeError

    for attempt in range(COMMIT_ATTEMPTS):
        try:
            return catalog.load_table(name)
        except FileNotFoundError as exc:
            if attempt + 1 == COMMIT_ATTEMPTS:
                raise LakeError(
                    f"cannot read the metadata of {name}: {exc}; other writers kept replacing "
                    "it, run it again"
                ) from exc
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _lock(tables: Tables | None, name: str) -> AbstractContextManager[Any]:
    """The commit lock of table ``name`` among the process's writers (none in the CLI)."""
    return tables.get(name).lock if tables is not None else nullcontext()


def _commit_files(
    catalog: Catalog,
    name: str,
    tables: Tables | None,
    old_files: list[Any],
    new_files: list[Any],
    properties: dict[str, str],
) -> None:
    """One OVERWRITE snapshot removing ``old_files`` and adding ``new_files``, on the newest table.

    Retried when another writer committed meanwhile (a stream's append: the rewrite does not
    change what those rows are, so it goes on top of them); refused (LakeError) when one of
    ``old_files`` is no longer live (another maintenance replaced it): committing then would
    bring rows back or count them twice. With ``tables`` (the server), under the table's lock.
    """
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    from loglake.errors import LakeError

    wanted = {f.file_path for f in old_files}
    for attempt in range(COMMIT_ATTEMPTS):
        if attempt:
            time.sleep(0.05 * 2**attempt)
        with _lock(tables, name):
            table = _load_latest(catalog, name)
            live = {f.file_path for f in _live_files(table)}
            gone = wanted - live
            if gone:
                raise LakeError(
                    f"maintenance of {name}: {len(gone)} planned files were replaced by another "
                    "writer meanwhile; run it again"
                )
            try:
                tx = table.transaction()
                with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
                    for data_file in old_files:
                        overwrite.delete_data_file(data_file)
                    for data_file in new_files:
                        overwrite.append_data_file(data_file)
                table = tx.commit_transaction()
            except (CommitFailedException, ValidationException) as exc:
                # Another process (a server's stream) committed between the load and this
                # commit; pyiceberg's retry of an overwrite then refuses any file added meanwhile
                # (serializable isolation), which for a rewrite of the same rows is no conflict.
                # Start over from the newest metadata, where the liveness check above decides.
                if attempt + 1 < COMMIT_ATTEMPTS:
                    continue
                raise LakeError(
                    f"maintenance commit to {name} failed {COMMIT_ATTEMPTS} times because other "
                    f"writers kept committing to it: {exc}; run it again"
                ) from exc
            except Exception as exc:  # e.g. pyiceberg's check that every file to delete is live
                raise LakeError(
                    f"maintenance commit to {name} failed: {exc}; run it again"
                ) from exc
            if tables is not None:
                tables.committed(name, table, None, [])
            return


def _expire_ids(catalog: Catalog, name: str, tables: Tables | None, ids: list[int]) -> Table:
    """Expire snapshots ``ids`` of table ``name`` (those still there); the table afterwards.

    Expiry changes only the snapshot list, so a commit another process made meanwhile (a
    stream's append) is no conflict: the expiry is retried on the newest metadata. With
    ``tables`` (the server), under the table's lock. Raises LakeError when it keeps failing.
    """
    from pyiceberg.exceptions import CommitFailedException

    from loglake.errors import LakeError

    for attempt in range(COMMIT_ATTEMPTS):
        if attempt:
            time.sleep(0.05 * 2**attempt)
        with _lock(tables, name):
            table = _load_latest(catalog, name)
            there = {s.snapshot_id for s in table.snapshots()}
            live = [i for i in ids if i in there]  # another maintenance may have expired some
            try:
                if live:
                    table.maintenance.expire_snapshots().by_ids(live).commit()
                table = _load_latest(catalog, name)
            except CommitFailedException as exc:
                if attempt + 1 < COMMIT_ATTEMPTS:
                    continue
                raise LakeError(
                    f"snapshot expiry of {name} failed {COMMIT_ATTEMPTS} times because other "
                    f"writers kept committing to it: {exc}; run it again"
                ) from exc
            if tables is not None:
                tables.committed(name, table, None, [])
            return table
    raise AssertionError("unreachable")


def maintain_table(
    catalog: Catalog,
    name: str,
    config: Config,
    *,
    tables: Tables | None = None,
    dry_run: bool = False,
    closed_only: bool = False,
    now: datetime | None = None,
) -> MaintainReport:
    """Retention, compaction to ``maintenance.target_file_mb``, snapshot expiry and orphan removal
    of table ``name``, in that order; what was done (or, with ``dry_run``, would be done).

    Queries running meanwhile keep their answers: each step commits one snapshot that replaces
    files atomically, and replaced files stay on disk until their snapshots are expired, which
    waits ``maintenance.grace_s`` after they stopped being current. ``closed_only`` (the server's
    schedule) leaves partitions whose time range has not ended alone. ``tables``: the process's
    writers, whose lock the commits take. Raises LakeError when a commit fails (nothing of that
    step is visible then).
    """
    from loglake.lake.catalog import load_table, registered_in_place

    settings = config.maintenance
    now = now or datetime.now(UTC)
    report = MaintainReport(name, dry_run=dry_run)
    try:
        table = load_table(catalog, name)  # NoSuchTableError naming the tables there are
    except FileNotFoundError:
        table = _load_latest(catalog, name)
    before = _live_files(table)
    report.files_before = len(before)
    report.bytes_before = sum(f.file_size_in_bytes for f in before)
    report.in_place_files = sum(registered_in_place(table.location(), f.file_path) for f in before)
    column, _ = time_field(table)

    dropped, report.partitions_dropped = plan_retention(
        table, column, config.retention_days(name), now
    )
    report.files_dropped = len(dropped)
    report.rows_dropped = sum(f.record_count for f in dropped)
    if dropped and not dry_run:
        _commit_files(
            catalog,
            name,
            tables,
            dropped,
            [],
            {"loglake.retention-dropped-files": str(len(dropped))},
        )
        table = _load_latest(catalog, name)

    target = settings.target_file_mb << 20
    gone = {f.file_path for f in dropped}
    groups = [
        g
        for g in plan_target_compaction(table, target, now if closed_only else None, column)
        if not gone.intersection(f.file_path for f in g)
    ]
    report.compacted_files = sum(len(g) for g in groups)
    if dry_run:
        report.written_files = len(groups)
    elif groups:
        new_files = [merge_files(table, group, column) for group in groups]
        report.written_files = len(new_files)
        _commit_files(
            catalog,
            name,
            tables,
            [f for g in groups for f in g],
            new_files,
            {"loglake.compacted-files": str(report.compacted_files)},
        )
    table = _load_latest(catalog, name)

    ids = expirable(table, settings.keep_snapshots, settings.grace_s, int(now.timestamp() * 1000))
    report.snapshots_expired = len(ids)
    if ids and not dry_run:
        table = _expire_ids(catalog, name, tables, ids)

    report.orphans_removed, report.orphan_bytes = remove_orphans(
        table, settings.grace_s, dry_run=dry_run
    )

    after = _live_files(table)
    if dry_run:
        report.files_after = report.files_before - report.files_dropped
        report.files_after -= report.compacted_files - report.written_files
        report.bytes_after = report.bytes_before - sum(f.file_size_in_bytes for f in dropped)
    else:
        report.files_after = len(after)
        report.bytes_after = sum(f.file_size_in_bytes for f in after)
    return report
