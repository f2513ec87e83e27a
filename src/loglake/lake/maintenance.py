"""Table maintenance that keeps frequently committed tables fast.

Measured (ARCHITECTURE.md): one small append every 2 s, plain, took 0.85 s per append and 94 MB of
metadata after 500 commits; with manifest merging, metadata clean-up after commit and expiring
snapshots every 50 commits (keeping the last 10), appends stayed near 60 ms. Manifest merging and
metadata clean-up are table properties (lake/catalog.py); snapshot expiry is done here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

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

    from loglake.lake.writer import TableWriter
    from loglake.query.plan import _local_path

    frames = [pl.DataFrame(pq.read_table(_local_path(f.file_path))) for f in files]
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
