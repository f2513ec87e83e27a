"""Table maintenance that keeps frequently committed tables fast.

Measured (ARCHITECTURE.md): one small append every 2 s, plain, took 0.85 s per append and 94 MB of
metadata after 500 commits; with manifest merging, metadata clean-up after commit and expiring
snapshots every 50 commits (keeping the last 10), appends stayed near 60 ms. Manifest merging and
metadata clean-up are table properties (lake/catalog.py); snapshot expiry is done here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from loglake.lake.tables import Tables

log = logging.getLogger(__name__)

OFFSET_PREFIX = "loglake.offset."


def expire_snapshots(table: Table, keep_last: int = 10) -> int:
    """Expire all but the ``keep_last`` newest snapshots; returns how many were expired.

    The newest snapshot carrying each stream's offset (``loglake.offset.*`` in its summary) is always
    kept too, because delivery resumes from it after a restart: expiring it would lose the position.
    """
    snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number or 0)
    keep = {s.snapshot_id for s in snapshots[-keep_last:]}
    current = table.current_snapshot()
    if current is not None:
        keep.add(current.snapshot_id)
    latest_by_key: dict[str, int] = {}
    for snap in snapshots:  # oldest first: later ones overwrite
        props = snap.summary.additional_properties if snap.summary is not None else {}
        for key in props:
            if key.startswith(OFFSET_PREFIX):
                latest_by_key[key] = snap.snapshot_id
    keep.update(latest_by_key.values())
    expired = [s.snapshot_id for s in snapshots if s.snapshot_id not in keep]
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
    groups: dict[Any, list[Any]] = defaultdict(list)
    for task in table.scan().plan_files():
        data_file = task.file
        size = data_file.file_size_in_bytes
        if task.delete_files or size >= SMALL_FILE_BYTES:
            continue
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

    from loglake.lake.catalog import local_path
    from loglake.lake.writer import TableWriter

    frames = [pl.DataFrame(pq.read_table(local_path(f.file_path))) for f in files]
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


def remove_orphans(table: Table, older_than_s: float = ORPHAN_AGE_S) -> tuple[int, int]:
    """Delete data files, manifests and manifest lists that no snapshot of ``table`` references.

    Snapshot expiry (pyiceberg) only drops snapshots from the metadata; files replaced by
    compaction and the manifests of expired snapshots stay on disk until removed here, like
    Iceberg's ``remove_orphan_files``. Metadata JSON files are left to the table's
    ``write.metadata.delete-after-commit`` setting. Files younger than ``older_than_s`` are kept
    (a commit in flight has not referenced its files yet). Returns (files deleted, bytes freed).
    """
    import time

    from pyarrow.fs import FileSelector, FileSystem

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
    cutoff_ns = (time.time() - older_than_s) * 1e9
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
    ) -> None:
        self._catalog = catalog
        self._tables = tables
        self._behind = behind
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
            kicked = self._due.wait(MAINTAIN_IDLE_S)
            self._due.clear()
            if self._stop.is_set():
                return
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

    def _compact(self, entry: _Entry) -> None:
        catalog = self._catalog()
        shared = self._tables.get(entry.name)
        with shared.lock:
            # A table object of its own: pyiceberg caches lazily inside table metadata, so a
            # writer's object, read by its committer thread meanwhile, is not shared here.
            table = catalog.load_table(entry.name)
        for files in plan_compaction(table):
            if self._stop.is_set():
                return
            if self._behind():
                entry.stats.compactions_deferred += 1
                return
            new_files = write_merged(catalog, table, entry.name, files, entry.time_column)
            with shared.lock:
                # Only this thread removes files, so the planned ones are all still live.
                table = commit_replace(catalog.load_table(entry.name), files, new_files)
                self._tables.committed(entry.name, table, None, [])
            entry.stats.compacted_files += len(files)

    def _expire(self, entry: _Entry) -> None:
        catalog = self._catalog()
        entry.expired_at = entry.commits
        shared = self._tables.get(entry.name)
        with shared.lock:
            entry.stats.expired_snapshots += expire_snapshots(catalog.load_table(entry.name))
            table = catalog.load_table(entry.name)
            self._tables.committed(entry.name, table, None, [])
        if time.monotonic() - entry.orphans_at >= ORPHANS_EVERY_S:
            entry.orphans_at = time.monotonic()
            deleted, freed = remove_orphans(table)
            entry.stats.removed_files += deleted
            entry.stats.removed_bytes += freed
