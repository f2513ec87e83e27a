"""Writing parsed batches into an Iceberg table: buffered Parquet files, one snapshot per commit.

A :class:`TableWriter` collects Polars frames, writes them as Parquet data files when the buffer is full
(memory stays bounded by ``flush_rows``), and on :meth:`TableWriter.commit` adds all files written since
the last commit in ONE Iceberg snapshot whose summary carries the caller's properties (e.g. the ingest
run id), so readers never see half an ingest and the bookkeeping commits atomically with the data.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import polars as pl

from loglake.errors import LakeError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table


def _to_json_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Struct):
        return expr.struct.json_encode()
    if isinstance(dtype, pl.List):
        return pl.struct(expr.alias("v")).struct.json_encode().str.slice(5).str.strip_suffix("}")
    return expr.cast(pl.String)


def align(frame: pl.DataFrame, target: pa.Schema) -> pl.DataFrame:
    """Cast ``frame`` to the column order and types of ``target``; missing columns become null.

    A value that cannot be cast to a string column (a nested object where the table has text) is
    written as JSON text; any other impossible cast raises LakeError naming the column.
    """
    target_frame = pl.from_arrow(target.empty_table())
    assert isinstance(target_frame, pl.DataFrame)
    exprs: list[pl.Expr] = []
    for name, dtype in target_frame.schema.items():
        if name not in frame.columns:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
            continue
        have = frame.schema[name]
        if have == dtype:
            exprs.append(pl.col(name))
        elif dtype == pl.String:
            exprs.append(_to_json_text(pl.col(name), have).alias(name))
        else:
            exprs.append(pl.col(name).cast(dtype, strict=True))
    try:
        return frame.select(exprs)
    except pl.exceptions.PolarsError as exc:
        raise LakeError(f"a batch does not fit the table's columns: {exc}") from exc


class TableWriter:
    """Buffers frames for one table and writes them as Parquet data files, committed together.

    Not thread-safe; one writer per table per process. If :meth:`commit` fails, nothing of this
    writer's files becomes visible (they are orphans for maintenance to remove), and the caller's
    bookkeeping (which is in the same snapshot) is not advanced either.
    """

    def __init__(self, catalog: Catalog, table: Table, flush_rows: int, sort_by: str | None = "ts"):
        self.catalog = catalog
        self.table = table
        self.flush_rows = flush_rows
        self.sort_by = sort_by
        self._buffer: list[pl.DataFrame] = []
        self._buffered_rows = 0
        self._files: list[DataFile] = []
        self._counter = itertools.count(0)
        self.rows_written = 0
        self.files_written = 0

    @property
    def name(self) -> str:
        return ".".join(self.table.name())

    def add(self, frame: pl.DataFrame) -> None:
        """Queue rows; writes Parquet files when ``flush_rows`` rows are buffered."""
        if frame.height == 0:
            return
        self._buffer.append(frame)
        self._buffered_rows += frame.height
        if self._buffered_rows >= self.flush_rows:
            self.flush()

    def _ensure_columns(self, frame: pl.DataFrame) -> None:
        """Evolve the table schema when ``frame`` brings columns the table does not have yet."""
        have = set(self.table.schema().column_names)
        if all(c in have for c in frame.columns):
            return
        from loglake.lake.catalog import ensure_table

        new = frame.select([c for c in frame.columns if c not in have]).to_arrow(
            compat_level=pl.CompatLevel.oldest()
        )
        self.table = ensure_table(self.catalog, self.name, new.schema, partition="none")

    def flush(self) -> None:
        """Write the buffered rows as Parquet data files (not yet visible to readers)."""
        if not self._buffer:
            return
        from pyiceberg.io.pyarrow import _dataframe_to_data_files, schema_to_pyarrow

        frame = pl.concat(self._buffer, how="diagonal_relaxed")
        self._buffer.clear()
        self._buffered_rows = 0
        self._ensure_columns(frame)
        if (
            self.sort_by
            and self.sort_by in frame.columns
            and not frame.get_column(self.sort_by).is_sorted()
        ):
            # Sorted files give tight per-row-group time ranges, so time filters skip more data.
            frame = frame.sort(self.sort_by)
        target = schema_to_pyarrow(self.table.schema(), include_field_ids=False)
        arrow = align(frame, target).to_arrow(compat_level=pl.CompatLevel.oldest())
        arrow = arrow.cast(target)
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
        self._files.extend(files)
        self.rows_written += arrow.num_rows
        self.files_written += len(files)

    def commit(self, properties: dict[str, Any] | None = None) -> bool:
        """Flush, then add every file written since the last commit in one snapshot.

        ``properties`` go into the snapshot summary (values JSON-encoded unless strings). Returns
        False when there was nothing to commit. Raises LakeError if the catalog refuses the commit.
        """
        self.flush()
        if not self._files:
            return False
        props = {
            k: v if isinstance(v, str) else json.dumps(v) for k, v in (properties or {}).items()
        }
        try:
            tx = self.table.transaction()
            with tx.update_snapshot(snapshot_properties=props).merge_append() as append:
                for data_file in self._files:
                    append.append_data_file(data_file)
            self.table = tx.commit_transaction()
        except Exception as exc:
            raise LakeError(f"commit to {self.name} failed: {exc}") from exc
        self._files = []
        return True
