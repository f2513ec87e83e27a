"""Writing parsed batches into an Iceberg table: buffered Parquet files, one snapshot per commit.

A :class:`TableWriter` collects Polars frames, writes them as Parquet data files when the buffer is full
(memory stays bounded by ``flush_rows``), and on :meth:`TableWriter.commit` adds all files written since
the last commit in ONE Iceberg snapshot whose summary carries the caller's properties (e.g. the ingest
run id), so readers never see half an ingest and the bookkeeping commits atomically with the data.
Batch ingest's writers hold each time partition's file open across flushes (``hold_files``): one
run writes one file per partition, with memory still bounded by ``flush_rows``. Every writer starts
a new file when one reaches the table's target size (``write.target-file-size-bytes``), so a run or
a commit into a single partition never makes one unbounded file.

Rows enter through :meth:`TableWriter.add`, which conforms them to the table first
(:mod:`loglake.lake.conform`): rows that cannot be stored come back to the caller as rejected, so
no value can make a write fail, and the table gains new columns and object members as they come.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import polars as pl

from loglake.errors import FencedError, LakeError
from loglake.lake.conform import conform, reshape, table_columns, union_type

if TYPE_CHECKING:
    import pyarrow as pa
    from polars._typing import PolarsDataType
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

    from loglake.lake.tables import Tables

log = logging.getLogger(__name__)


def align(frame: pl.DataFrame, target: pa.Schema) -> pl.DataFrame:
    """``frame`` in the column order and types of ``target``; missing columns and members are null.

    For conformed rows (:func:`loglake.lake.conform.conform`) and rows read back from the table's
    own files (compaction); anything else that does not fit raises LakeError naming the column.
    """
    exprs: list[pl.Series] = []
    for name, dtype in table_columns(target).items():
        if name in frame.columns:
            exprs.append(reshape(frame.get_column(name), dtype).alias(name))
        else:
            exprs.append(pl.repeat(None, frame.height, dtype=dtype, eager=True).alias(name))
    return pl.DataFrame(exprs, height=frame.height) if exprs else frame.clear()


_EVOLVE_ATTEMPTS = 5  # schema changes lost to a concurrent commit are retried this often
# Commits lost to another process's commit (``loglake maintain`` beside a server) are retried on
# the refreshed table this often, after pyiceberg's own retries of each attempt.
_COMMIT_ATTEMPTS = 5
# Most rows written per Parquet write (one row group) when a partition's rows may exceed the target
# file size: the file's size is looked at between writes, and a new file started once it reached
# the target.
_ROLL_ROWS = 131_072

# Files a writer with ``hold_files`` keeps open per table; beyond, the least recently written close
# (a later row of that partition then starts a new file). Each open file holds about 1 MiB of
# buffers, so this also caps the memory they take.
_MAX_HELD = 128
# A held file that no flush wrote to for this many flushes closes: in time-ordered input its
# partition is over, and keeping it open would only hold memory until the commit.
_IDLE_FLUSHES = 2


class _HeldFile:
    """One partition's Parquet data file, open for more row groups until :meth:`finish`."""

    def __init__(self, path: str, out: Any, writer: Any, partition_key: Any, spec_id: int):
        self.written = 0  # the writer's flush count when this file was last written to
        self.path = path
        self.out = out
        self.writer = writer
        self.partition_key = partition_key
        self.spec_id = spec_id

    def size(self) -> int:
        """Bytes written to the file so far (its row groups; the footer comes at :meth:`finish`)."""
        return _bytes_written(self.writer)

    def finish(self) -> DataFile:
        """Close the file; the DataFile (statistics from its Parquet footer) to commit."""
        from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

        stats = self.writer.close()
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=self.path,
            file_format=FileFormat.PARQUET,
            partition=self.partition_key.partition,
            file_size_in_bytes=len(self.out),
            sort_order_id=None,
            spec_id=self.spec_id,
            equality_ids=None,
            key_metadata=None,
            **stats.to_serialized_dict(),
        )

    def abandon(self) -> None:
        """Close the file without using it (a run that failed: the file becomes an orphan)."""
        # The file is discarded either way, and the run's own error is what gets raised.
        with contextlib.suppress(Exception):
            self.writer.close()


def _has_new_members(have: PolarsDataType, got: PolarsDataType) -> bool:
    """Whether objects of type ``got`` have members (at any depth) that ``have`` lacks; other
    differences are not schema changes (a column's type never changes)."""
    if isinstance(have, pl.Struct) and isinstance(got, pl.Struct):
        members = {f.name: f.dtype for f in have.fields}
        return any(
            f.name not in members or _has_new_members(members[f.name], f.dtype) for f in got.fields
        )
    if isinstance(have, pl.List) and isinstance(got, pl.List):
        return _has_new_members(have.inner, got.inner)
    return False


def _bytes_written(writer: Any) -> int:
    """Bytes a pyiceberg Parquet writer has written to its file so far (0 before its first write).

    Every write ends in whole row groups, so this is the compressed size the file has reached."""
    stream = getattr(writer, "_fos", None)
    return int(stream.tell()) if stream is not None else 0


def target_file_bytes(properties: dict[str, str]) -> int:
    """The size at which a writer starts a new data file: the table's
    ``write.target-file-size-bytes`` (loglake creates tables with 512 MiB), else Iceberg's default."""
    from pyiceberg.table import TableProperties
    from pyiceberg.utils.properties import property_as_int

    size = property_as_int(
        properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    return max(1, size or TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)


#: A table's columns and partition field names (None for a table that does not exist).
TablePeek = tuple[dict[str, "PolarsDataType"], list[str] | None]

_ICEBERG_TYPES: dict[str, PolarsDataType] = {
    "boolean": pl.Boolean(),
    "int": pl.Int32(),
    "long": pl.Int64(),
    "float": pl.Float32(),
    "double": pl.Float64(),
    "date": pl.Date(),
    "timestamp": pl.Datetime("us"),
    "timestamptz": pl.Datetime("us", "UTC"),
    "string": pl.String(),
    "binary": pl.Binary(),
}


def peek_table(metadata_location: str | None) -> TablePeek | None:
    """A table's columns (as :func:`~loglake.lake.conform.table_columns` gives them) and partition
    field names, read from its metadata file without pyiceberg, which takes about a second to
    import: batch ingest conforms its first rows meanwhile. ``metadata_location`` None means the
    table does not exist. None when the file cannot be read or holds a type not handled here
    (the caller then opens the table)."""
    if metadata_location is None:
        return {}, None
    from urllib.parse import unquote, urlparse

    parsed = urlparse(metadata_location)
    if parsed.scheme not in ("", "file") or not metadata_location.endswith(".metadata.json"):
        return None
    try:
        with open(unquote(parsed.path), "rb") as f:
            meta = json.load(f)
        schema = next(s for s in meta["schemas"] if s["schema-id"] == meta["current-schema-id"])
        spec = next(s for s in meta["partition-specs"] if s["spec-id"] == meta["default-spec-id"])
        columns = {f["name"]: _iceberg_type(f["type"]) for f in schema["fields"]}
        return columns, [f["name"] for f in spec["fields"]]
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None


def _iceberg_type(spec: Any) -> PolarsDataType:
    """A type of Iceberg's JSON schema as Polars has it; ValueError for a type not handled."""
    if isinstance(spec, str):
        if spec in _ICEBERG_TYPES:
            return _ICEBERG_TYPES[spec]
        raise ValueError(f"type {spec} not handled")
    if spec["type"] == "struct":
        return pl.Struct({f["name"]: _iceberg_type(f["type"]) for f in spec["fields"]})
    if spec["type"] == "list":
        return pl.List(_iceberg_type(spec["element"]))
    raise ValueError(f"type {spec['type']} not handled")


def load_existing(catalog: Catalog, name: str) -> Table | None:
    """Table ``name``, or None when it does not exist (yet)."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return catalog.load_table(name)
    except NoSuchTableError:
        return None


class TableWriter:
    """Buffers frames for one table and writes them as Parquet data files, committed together.

    Every frame given to :meth:`add` is conformed to the table first (its rows that cannot be
    stored come back to the caller, who keeps them as rejected lines); the table is created from
    the first conformed rows when it does not exist yet, partitioned by ``partition(sort_by)``.
    Not thread-safe, except that :meth:`add` may run in one thread while :meth:`write_frames` and
    :meth:`commit` run in another. If :meth:`commit` fails, nothing of this writer's files becomes
    visible (they are orphans for maintenance to remove), and the caller's bookkeeping (which is in
    the same snapshot) is not advanced either.
    """

    def __init__(
        self,
        open_table: Callable[[], tuple[Catalog, Table | None]],
        name: str,
        flush_rows: int,
        sort_by: str | None = "ts",
        commit_lock: AbstractContextManager[Any] | None = None,
        partition: str = "none",
        peek: Callable[[], TablePeek | None] | None = None,
        tables: Tables | None = None,
        hold_files: bool = False,
    ):
        # The catalog and table are opened on first use; ``open_table`` gives None for a table
        # that does not exist yet, which is then created from the first rows added.
        self._open_table = open_table
        # Until the table is opened (the first write), rows may be conformed to what ``peek``
        # reads of it, so the caller goes on parsing while pyiceberg loads.
        self._peek = peek
        self._peeked: TablePeek | None = None
        self._catalog: Catalog | None = None
        self._table: Table | None = None
        self._opened = False
        self._name = name
        self.flush_rows = flush_rows
        self.sort_by = sort_by
        self.partition = partition
        # Held around schema changes and commits when other threads also commit to the table
        # (other streams, maintenance): the table's lock of ``tables``, which also runs the
        # post-commit hooks and shares the newest table object among its writers.
        self._tables = tables
        self._shared = tables.get(name) if tables is not None else None
        if self._shared is not None:
            commit_lock = self._shared.lock
        self._commit_lock = commit_lock or nullcontext()
        # Columns (and object members) of rows added but perhaps not yet in the table's schema,
        # which evolves only when their files are written: later rows must conform to them too.
        self._pending: dict[str, PolarsDataType] = {}
        self._columns_of: tuple[object, dict[str, PolarsDataType]] | None = None
        self._buffer: list[pl.DataFrame] = []
        self._buffered_rows = 0
        self._files: list[DataFile] = []
        self.last_committed: list[DataFile] = []  # files of the latest commit (for plan updates)
        self._counter = itertools.count(0)
        self.rows_written = 0
        self.files_written = 0
        # Parquet files are written in a background thread while the caller parses the next batch;
        # at most one write is in flight, so memory holds at most two buffers.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loglake-write")
        self._pending_write: Future[None] | None = None
        # With ``hold_files`` (batch ingest), a flush appends row groups to the file its time
        # partition already has open instead of starting a new file, so one run writes one file per
        # partition however many times its buffer fills; the files close (and become DataFiles) at
        # :meth:`flush`, on a schema change, or when more than _MAX_HELD are open.
        self.hold_files = hold_files
        self._held: dict[Any, _HeldFile] = {}
        self._held_schema: Any = None
        self._held_flushes = 0

    @property
    def name(self) -> str:
        return self._name

    def _open(self) -> None:
        if not self._opened:
            self._catalog, self._table = self._open_table()
            self._opened = True

    @property
    def catalog(self) -> Catalog:
        self._open()
        assert self._catalog is not None
        return self._catalog

    @property
    def exists(self) -> bool:
        """Whether the table exists (it is created when the first conformed rows are written)."""
        self._open()
        return self._table is not None

    @property
    def table(self) -> Table:
        """The table; created now from the columns of the rows added so far if it does not exist."""
        self._open()
        if self._table is None:
            self._create()
        assert self._table is not None
        return self._table

    @table.setter
    def table(self, value: Table) -> None:
        self._table = value

    def columns(self) -> dict[str, PolarsDataType]:
        """The columns rows must fit: the table's, with those of rows added but not yet written."""
        peeked = self._peek_table()
        if peeked is not None:
            known: dict[str, PolarsDataType] = dict(peeked[0])
        elif (table := self._opened_table()) is None:
            known = {}
        else:
            schema = table.schema()
            if self._columns_of is None or self._columns_of[0] is not schema:
                from pyiceberg.io.pyarrow import schema_to_pyarrow

                arrow = schema_to_pyarrow(schema, include_field_ids=False)
                self._columns_of = (schema, dict(table_columns(arrow)))
            known = dict(self._columns_of[1])
        for name, dtype in self._pending.items():
            known[name] = union_type(known[name], dtype) or known[name] if name in known else dtype
        return known

    def _peek_table(self) -> TablePeek | None:
        """What ``peek`` read of the table, while the table is not opened yet."""
        if self._opened or self._peek is None:
            return None
        if self._peeked is None:
            self._peeked = self._peek()
            if self._peeked is None:
                self._peek = None  # it cannot tell: open the table
        return self._peeked

    def _opened_table(self) -> Table | None:
        self._open()
        return self._table

    def reserved(self) -> list[str]:
        """Names a new column may not take: the table's partition fields (or the planned one)."""
        peeked = self._peek_table()
        if peeked is not None and peeked[1] is not None:
            return peeked[1]
        if peeked is None and (table := self._opened_table()) is not None:
            return [field.name for field in table.spec().fields]
        if self.partition != "none" and self.sort_by:
            return [f"{self.sort_by}_{self.partition}"]
        return []

    def add(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Conform ``frame`` to the table and queue the rows that fit; returns the others as
        ``line`` (from ``frame``) and ``reason``, for the caller to keep as rejected lines.

        Writes Parquet files when ``flush_rows`` rows are buffered. Raises LakeError only when
        the lake cannot be written (never for the rows' content).
        """
        refusals = pl.DataFrame(schema={"line": pl.Int64, "reason": pl.String})
        if frame.height == 0:
            return refusals
        result = conform(frame, self.columns(), self.reserved())
        if result.refused.any():
            if "line" not in frame.columns:
                raise LakeError(f"internal error: rows refused by {self.name} carry no line number")
            refusals = pl.DataFrame(
                [
                    frame.get_column("line").filter(result.refused).cast(pl.Int64),
                    result.reasons.filter(result.refused).alias("reason"),
                ]
            )
        rows = result.rows
        known = self.columns()
        for name, dtype in rows.schema.items():
            if known.get(name) != dtype:
                have = self._pending.get(name)
                self._pending[name] = union_type(have, dtype) or have if have else dtype
        if rows.height == 0:
            return refusals
        self._buffer.append(rows)
        self._buffered_rows += rows.height
        if self._buffered_rows >= self.flush_rows:
            self._wait()
            frames, self._buffer, self._buffered_rows = self._buffer, [], 0
            self._pending_write = self._pool.submit(self._write, frames, self.hold_files)
        return refusals

    def _wait(self) -> None:
        """Wait for the write in flight; re-raises its error here, in the caller's thread."""
        if self._pending_write is not None:
            pending, self._pending_write = self._pending_write, None
            pending.result()

    def _create(self, frame: pl.DataFrame | None = None) -> None:
        """Create the table from the columns of the rows added so far (and of ``frame``)."""
        from loglake.lake.catalog import ensure_table

        columns = dict(self._pending)
        for name, dtype in (frame.schema if frame is not None else {}).items():
            columns.setdefault(name, dtype)
        if not columns:
            raise LakeError(f"table {self.name} does not exist and no rows were added to it")
        empty = pl.DataFrame(schema=columns).to_arrow(compat_level=pl.CompatLevel.oldest())
        with self._commit_lock:
            self._table = ensure_table(
                self.catalog, self.name, empty.schema, self.partition, self.sort_by or "ts"
            )

    def _ensure_columns(self, frame: pl.DataFrame) -> None:
        """Evolve the table schema when ``frame`` brings columns or object members it lacks."""
        self._open()
        if self._table is None:
            self._create(frame)
        have = table_columns(self._arrow_schema())
        grown = [
            name
            for name, dtype in frame.schema.items()
            if name not in have or _has_new_members(have[name], dtype)
        ]
        if not grown:
            return
        from pyiceberg.exceptions import CommitFailedException

        new = frame.select(grown).to_arrow(compat_level=pl.CompatLevel.oldest()).schema
        with self._commit_lock:
            for attempt in range(_EVOLVE_ATTEMPTS):
                table = self.catalog.load_table(self.name)
                try:
                    # By name, object members included: existing columns keep their types.
                    with table.update_schema() as update:
                        update.union_by_name(new)
                    break
                except CommitFailedException as exc:
                    # Another writer changed the table since it was loaded: reload and retry.
                    if attempt + 1 == _EVOLVE_ATTEMPTS:
                        raise LakeError(f"cannot add new columns to {self.name}: {exc}") from exc
                    time.sleep(0.05 * 2**attempt)
                except Exception as exc:
                    raise LakeError(f"cannot add new columns to {self.name}: {exc}") from exc
            self.table = self.catalog.load_table(self.name)
            if self._shared is not None:
                self._shared.seen(self.table)

    def _arrow_schema(self) -> pa.Schema:
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        return schema_to_pyarrow(self.table.schema(), include_field_ids=False)

    def flush(self) -> None:
        """Write all buffered rows as Parquet data files (not yet visible to readers) and wait;
        files held open for more rows (``hold_files``) are closed too."""
        self._wait()
        if self._buffer:
            frames, self._buffer, self._buffered_rows = self._buffer, [], 0
            self._write(frames)
        if self._held:
            files = self._close_held(list(self._held))
            self._files.extend(files)
            self.files_written += len(files)

    def close(self) -> None:
        """Stop the background writer thread (after waiting for a write in flight). Files still
        held open are abandoned: never committed, they are orphans for maintenance to remove."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            for held in self._held.values():
                held.abandon()
            self._held.clear()

    def _write(self, frames: list[pl.DataFrame], hold: bool = False) -> None:
        """Write ``frames`` as data files; with ``hold``, into the held-open files of their
        partitions (see ``hold_files``), which then stay open."""
        # The table first: whoever opens the catalog may still be importing pyiceberg, and two
        # threads importing its (circular) modules at once can deadlock.
        self._open()
        from pyiceberg.io.pyarrow import _dataframe_to_data_files

        frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
        self._ensure_columns(frame)
        if (
            self.sort_by
            and self.sort_by in frame.columns
            and not frame.get_column(self.sort_by).is_sorted()
        ):
            # Sorted files give tight per-row-group time ranges, so time filters skip more data,
            # and the time partitions become contiguous slices.
            frame = frame.sort(self.sort_by)
        target = self._arrow_schema()
        aligned = align(frame, target)
        split = self._time_partitioning(aligned)
        if split is None:
            arrow = aligned.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(target)
            try:
                files = list(
                    _dataframe_to_data_files(
                        table_metadata=self.table.metadata,
                        df=arrow,
                        io=self.table.io,
                        counter=self._counter,
                    )
                )
            except Exception as exc:
                raise LakeError(f"cannot write data files for {self.name}: {exc}") from exc
        else:
            files = self._write_time_partitions(aligned, target, *split, hold=hold)
        self._files.extend(files)
        self.rows_written += aligned.height
        self.files_written += len(files)

    def _time_partitioning(self, frame: pl.DataFrame) -> tuple[Any, str, str] | None:
        """(partition field, source column, truncation) for a table partitioned by one time transform."""
        from pyiceberg.transforms import DayTransform, HourTransform, MonthTransform

        spec = self.table.spec()
        if len(spec.fields) != 1:
            return None
        field = spec.fields[0]
        every = {HourTransform: "1h", DayTransform: "1d", MonthTransform: "1mo"}.get(
            type(field.transform)
        )
        column = self.table.schema().find_column_name(field.source_id)
        if every is None or column is None or column not in frame.columns:
            return None
        if frame.get_column(column).null_count():
            return None  # rare; let pyiceberg handle null partition values
        return field, column, every

    def _write_time_partitions(
        self,
        frame: pl.DataFrame,
        target: pa.Schema,
        field: Any,
        column: str,
        every: str,
        hold: bool = False,
    ) -> list[DataFile]:
        """Write one Parquet file per time partition (another each time one reaches the table's
        target file size), all partitions in parallel.

        pyiceberg's own path splits a batch by filtering it once per partition (partitions x rows,
        0.75 s for 566k rows over 84 hours) and, per file, re-reads its config file and re-projects
        the schema; here the batch is sorted by time, projected once, and the partitions are
        contiguous zero-copy slices, each written by pyiceberg's Parquet writer (which computes the
        column statistics Iceberg needs).
        """
        import uuid

        import pyarrow as pa
        from pyiceberg.io.fileformat import FileFormatFactory
        from pyiceberg.io.pyarrow import _to_requested_schema, pyarrow_to_schema
        from pyiceberg.manifest import FileFormat
        from pyiceberg.partitioning import PartitionFieldValue, PartitionKey

        col = frame.get_column(column)
        if not col.is_sorted():
            frame = frame.sort(column)
            col = frame.get_column(column)
        key = col.dt.truncate(every)
        starts = (key != key.shift(1)).fill_null(True).arg_true().to_list()
        bounds = [*starts, frame.height]
        arrow = frame.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(target)
        meta = self.table.metadata
        schema = meta.schema()
        source_type = schema.find_field(field.source_id).field_type
        firsts = arrow.column(column).take(pa.array(starts, pa.int64()))
        values = field.transform.pyarrow_transform(source_type)(firsts).to_pylist()
        task_schema = pyarrow_to_schema(
            arrow.schema, name_mapping=schema.name_mapping, format_version=meta.format_version
        )
        # Projected batch by batch: no copy of the data, only the schema gains Iceberg field ids.
        fmt = FileFormatFactory.get(FileFormat.PARQUET)
        projected = pa.Table.from_batches(
            [
                _to_requested_schema(
                    requested_schema=schema,
                    file_schema=task_schema,
                    batch=batch,
                    include_field_ids=True,
                    format_model=fmt,
                )
                for batch in arrow.to_batches()
            ]
        )
        del arrow
        spec = meta.spec()
        keys = [
            PartitionKey(
                field_values=[PartitionFieldValue(field=field, value=value)],
                partition_spec=spec,
                schema=schema,
            )
            for value in values
        ]
        write_uuid = uuid.uuid4()
        slices = [
            (next(self._counter), projected.slice(lo, hi - lo), k)
            for lo, hi, k in zip(bounds[:-1], bounds[1:], keys, strict=True)
        ]
        try:
            if self.hold_files and (hold or self._held):
                return self._write_held(write_uuid, slices, values, schema.schema_id, hold)
            return self._write_files(write_uuid, slices)
        except Exception as exc:
            raise LakeError(f"cannot write data files for {self.name}: {exc}") from exc

    def _write_held(
        self,
        write_uuid: Any,
        slices: list[tuple[int, Any, Any]],
        values: list[Any],
        schema_id: int,
        hold: bool,
    ) -> list[DataFile]:
        """Append each slice to its partition's held-open file (opened now if it has none).

        Returns the files this closed: all of them unless ``hold``; those of the previous schema
        when the table's schema changed (a Parquet file has one schema); those idle for
        _IDLE_FLUSHES flushes; the least recently written beyond _MAX_HELD (each open file costs
        a file handle and its writer's buffers).
        """
        from pyiceberg.utils.concurrent import ExecutorFactory

        closed: list[DataFile] = []
        if self._held and self._held_schema != schema_id:
            closed += self._close_held(list(self._held))
        self._held_schema = schema_id
        self._held_flushes += 1
        for (task_id, _, key), value in zip(slices, values, strict=True):
            if value not in self._held:
                self._held[value] = self._open_held(write_uuid, task_id, key)
            else:
                self._held[value] = self._held.pop(value)  # most recently written last
            self._held[value].written = self._held_flushes

        def append(item: tuple[tuple[int, Any, Any], Any]) -> None:
            (_, batch, _), value = item
            self._held[value].writer.write(batch)

        list(ExecutorFactory.get_or_create().map(append, zip(slices, values, strict=True)))
        if not hold:
            return closed + self._close_held(list(self._held))
        # A partition written at every flush (a run, or a stream, into one hour or day) would
        # otherwise grow its one file until the commit: it rolls over at the target size.
        target = target_file_bytes(self.table.metadata.properties)
        closed += self._close_held([v for v, f in self._held.items() if f.size() >= target])
        idle = [v for v, f in self._held.items() if f.written <= self._held_flushes - _IDLE_FLUSHES]
        closed += self._close_held(idle)
        excess = len(self._held) - _MAX_HELD
        if excess > 0:
            closed += self._close_held(list(self._held)[:excess])
        return closed

    def _open_held(self, write_uuid: Any, task_id: int, partition_key: Any) -> _HeldFile:
        from pyiceberg.io.fileformat import FileFormatFactory
        from pyiceberg.manifest import FileFormat
        from pyiceberg.table.locations import load_location_provider

        meta = self.table.metadata
        model = FileFormatFactory.get(FileFormat.PARQUET)
        locations = load_location_provider(
            table_location=meta.location, table_properties=meta.properties
        )
        path = locations.new_data_location(
            data_file_name=f"00000-{task_id}-{write_uuid}.{model.file_extension()}",
            partition_key=partition_key,
        )
        out = self.table.io.new_output(path)
        writer = model.create_writer(out, meta.schema(), meta.properties)
        return _HeldFile(path, out, writer, partition_key, meta.default_spec_id)

    def _close_held(self, values: list[Any]) -> list[DataFile]:
        """Close the held files of partitions ``values`` (in parallel); their DataFiles.

        When called outside a write (:meth:`flush`), the DataFiles join the uncommitted files."""
        from pyiceberg.utils.concurrent import ExecutorFactory

        held = [self._held.pop(v) for v in values if v in self._held]
        if not held:
            return []
        try:
            files = list(ExecutorFactory.get_or_create().map(_HeldFile.finish, held))
        except Exception as exc:
            raise LakeError(f"cannot write data files for {self.name}: {exc}") from exc
        return files

    def _write_files(self, write_uuid: Any, slices: list[tuple[int, Any, Any]]) -> list[DataFile]:
        """Write each (task id, record batch, partition key) as one Parquet data file, in parallel."""
        from pyiceberg.io.fileformat import FileFormatFactory
        from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
        from pyiceberg.table.locations import load_location_provider
        from pyiceberg.utils.concurrent import ExecutorFactory

        meta = self.table.metadata
        schema = meta.schema()
        file_format = FileFormat.PARQUET
        model = FileFormatFactory.get(file_format)
        locations = load_location_provider(
            table_location=meta.location, table_properties=meta.properties
        )
        io = self.table.io
        target = target_file_bytes(meta.properties)

        def write_one(item: tuple[int, Any, Any]) -> list[DataFile]:
            """The slice's rows as one file, or several when they exceed the target size."""
            task_id, batch, partition_key = item  # batch: a zero-copy slice of the projected table
            files: list[DataFile] = []
            writer: Any = None
            out: Any = None
            path = ""

            def finish() -> None:
                stats = writer.close()
                files.append(
                    DataFile.from_args(
                        content=DataFileContent.DATA,
                        file_path=path,
                        file_format=file_format,
                        partition=partition_key.partition,
                        file_size_in_bytes=len(out),
                        sort_order_id=None,
                        spec_id=meta.default_spec_id,
                        equality_ids=None,
                        key_metadata=None,
                        **stats.to_serialized_dict(),
                    )
                )

            # Chunks of at most the target in memory (so at most about that on disk, where
            # Parquet compresses): a file ends within one chunk past the target.
            per_row = max(1, batch.nbytes // max(batch.num_rows, 1))
            step = max(1024, min(_ROLL_ROWS, target // per_row))
            try:
                for start in range(0, max(batch.num_rows, 1), step):
                    if writer is None:
                        path = locations.new_data_location(
                            data_file_name=(
                                f"00000-{task_id}-{len(files)}-{write_uuid}.{model.file_extension()}"
                            ),
                            partition_key=partition_key,
                        )
                        out = io.new_output(path)
                        writer = model.create_writer(out, schema, meta.properties)
                    writer.write(batch.slice(start, step))
                    if _bytes_written(writer) >= target and start + step < batch.num_rows:
                        finish()
                        writer = None
                if writer is not None:
                    finish()
            except BaseException:
                if writer is not None:
                    with contextlib.suppress(Exception):  # the file is an orphan either way
                        writer.close()
                raise
            return files

        written = ExecutorFactory.get_or_create().map(write_one, slices)
        return [data_file for files in written for data_file in files]

    def write_files(self, frame: pl.DataFrame) -> list[DataFile]:
        """Write ``frame`` as data files now and return them, uncommitted (for compaction)."""
        return self.write_frames([frame])

    def seal(self) -> list[pl.DataFrame]:
        """Take the buffered frames, leaving the buffer empty: the rows of a commit that another
        thread writes (:meth:`write_frames`) and commits (:meth:`commit` with ``files``) while
        this one goes on adding rows."""
        frames, self._buffer, self._buffered_rows = self._buffer, [], 0
        return frames

    def write_frames(self, frames: list[pl.DataFrame]) -> list[DataFile]:
        """Write ``frames`` as data files now and return them, uncommitted."""
        self._wait()
        if not frames:
            return []
        before = len(self._files)
        self._write(frames)
        new_files = self._files[before:]
        del self._files[before:]
        return new_files

    def commit(
        self,
        properties: dict[str, Any] | None = None,
        files: list[DataFile] | None = None,
        expect: tuple[str, int | None] | None = None,
    ) -> bool:
        """Flush, then add every file written since the last commit in one snapshot.

        ``expect`` = (summary key, value) fences a stream's commit: it lands only if the newest
        snapshot carrying that key still holds that value (None: no snapshot has it), checked by
        the catalog inside its compare-and-swap, so two nodes delivering one stream never both
        commit the same records; the loser gets :class:`FencedError` and nothing of its commit
        lands. SQL catalogs only (the check runs in pyiceberg's commit there; other catalogs
        commit unfenced).

        With ``files`` (from :meth:`write_frames`), commit exactly those instead, without flushing.
        ``properties`` go into the snapshot summary (values JSON-encoded unless strings). Returns
        False when there was nothing to commit. A commit that another process's commit beat
        (``loglake maintain`` compacting or expiring beside a server) is retried on the refreshed
        table with the same files and properties: the files are written once, and the properties
        (a stream's offset) still land in the same snapshot as the rows. Raises LakeError if the
        catalog still refuses the commit after :data:`_COMMIT_ATTEMPTS` attempts, or for any
        other error (nothing of the commit is visible then).
        """
        if files is None:
            self.flush()
            files, self._files = self._files, []
        if not files:
            return False
        from pyiceberg.exceptions import CommitFailedException

        props = {
            k: v if isinstance(v, str) else json.dumps(v) for k, v in (properties or {}).items()
        }
        with self._commit_lock:
            if self._shared is not None:
                # On top of the newest metadata another writer of this process committed.
                self.table = self._shared.newest(self.table) or self.table
            before: str | None = self.table.metadata_location
            for attempt in range(_COMMIT_ATTEMPTS):
                try:
                    started = self.table.current_snapshot()
                    tx = self.table.transaction()
                    if expect is not None and _fences(self.catalog):
                        # pyiceberg keeps a transaction's requirements across its own commit
                        # retries (it rebuilds only the snapshot ones), and its SQL catalog
                        # validates them against the metadata it swaps.
                        tx._requirements += (_offset_requirement(*expect),)
                    with tx.update_snapshot(snapshot_properties=props).merge_append() as append:
                        for data_file in files:
                            append.append_data_file(data_file)
                    self.table = tx.commit_transaction()
                    committed = self.table.current_snapshot()
                    parent = committed.parent_snapshot_id if committed is not None else None
                    if parent != (started.snapshot_id if started is not None else None):
                        # pyiceberg's retry put the append on top of another process's commit
                        # (a compaction, say): the hooks must not take it for an append to the
                        # state they know, so they re-read the table, as after a rewrite.
                        before = None
                    break
                except CommitFailedException as exc:
                    # pyiceberg's own retries ran out: the table keeps moving (another process
                    # commits to it). Start over from its newest metadata.
                    if attempt + 1 == _COMMIT_ATTEMPTS:
                        raise LakeError(
                            f"commit to {self.name} failed {_COMMIT_ATTEMPTS} times because "
                            f"other writers kept committing to it: {exc}; delivery retries it"
                        ) from exc
                    log.info(
                        "commit to %s lost to another writer's commit; retrying on the newest "
                        "metadata (%d/%d)",
                        self.name,
                        attempt + 1,
                        _COMMIT_ATTEMPTS,
                        extra={"fields": {"table": self.name, "reason": str(exc)}},
                    )
                    time.sleep(0.05 * 2**attempt)
                    try:
                        self.table = self.catalog.load_table(self.name)
                        before = self.table.metadata_location
                    except Exception as again:
                        raise LakeError(f"commit to {self.name} failed: {again}") from again
                except Exception as exc:
                    if _FENCED in str(exc):
                        raise FencedError(
                            f"commit to {self.name} fenced: {exc}; another writer committed "
                            "these records of the stream, delivery resumes from the lake"
                        ) from exc
                    raise LakeError(f"commit to {self.name} failed: {exc}") from exc
            self.last_committed = files
            if self._tables is not None:
                self._tables.committed(self.name, self.table, before, files)
        return True


_FENCED = "loglake fence:"


def _fences(catalog: Catalog) -> bool:
    from pyiceberg.catalog.sql import SqlCatalog

    return isinstance(catalog, SqlCatalog)


def latest_property(snapshots: Any, key: str) -> int | None:
    """The value of summary property ``key`` in the newest snapshot (by sequence) that has it."""
    best: tuple[int, int] | None = None
    for snap in snapshots:
        summary = snap.summary
        value = summary.additional_properties.get(key) if summary is not None else None
        sequence = snap.sequence_number or 0
        if value is not None and (best is None or sequence > best[0]):
            best = (sequence, int(value))
    return best[1] if best else None


_REQUIREMENT: Any = None


def _offset_requirement(key: str, expected: int | None) -> Any:
    """A pyiceberg table requirement: the newest ``key`` of the table's snapshots is
    ``expected``; else ValidationException (never retried by pyiceberg: the commit is lost)."""
    global _REQUIREMENT
    if _REQUIREMENT is None:
        from pyiceberg.exceptions import ValidationException
        from pyiceberg.table.update import ValidatableTableRequirement

        class AssertStreamOffset(ValidatableTableRequirement):
            type: str = "loglake-assert-stream-offset"
            key: str
            expected: int | None = None

            def validate(self, base_metadata: Any) -> None:  # type: ignore[override]
                have = latest_property(base_metadata.snapshots if base_metadata else [], self.key)
                if have != self.expected:
                    raise ValidationException(
                        f"{_FENCED} {self.key} is {have} in the table, this writer expected "
                        f"{self.expected}"
                    )

        _REQUIREMENT = AssertStreamOffset
    return _REQUIREMENT(key=key, expected=expected)
