"""Data files roll over at the table's target size (``write.target-file-size-bytes``) when every row
goes to one partition: a held-open file (batch ingest) and a single large write (a stream's commit)
both start a new file once theirs reached the target, and every row is still stored once."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from loglake.config import load_config
from loglake.lake.catalog import local_path, open_catalog
from loglake.lake.writer import TableWriter, load_existing

TARGET = 256 << 10  # a small target, so a few hundred thousand rows fill several files


def _rows(first: int, count: int) -> pl.DataFrame:
    """``count`` rows in one day (2024-05-01), with random text that does not compress away."""
    rng = random.Random(first)
    start = datetime(2024, 5, 1)
    return pl.DataFrame(
        {
            "ts": [start + timedelta(milliseconds=first + i) for i in range(count)],
            "msg": [f"{rng.getrandbits(64):016x}" for _ in range(count)],
            "line": list(range(first, first + count)),
        }
    )


def _writer(home: Path, hold_files: bool, flush_rows: int) -> tuple[Any, TableWriter]:
    catalog = open_catalog(load_config(home))
    name = "logs.t"
    # Create the table with its first rows, then give it the small target.
    first = TableWriter(lambda: (catalog, load_existing(catalog, name)), name, 10, partition="day")
    first.add(_rows(0, 1))
    first.commit()
    first.close()
    table = catalog.load_table(name)
    tx = table.transaction()
    tx.set_properties({"write.target-file-size-bytes": str(TARGET)})
    tx.commit_transaction()
    writer = TableWriter(
        lambda: (catalog, load_existing(catalog, name)),
        name,
        flush_rows,
        partition="day",
        hold_files=hold_files,
    )
    return catalog, writer


@pytest.mark.parametrize(
    ("hold_files", "flush_rows", "batches"),
    [(True, 20_000, 15), (False, 10**9, 1)],
    ids=["held-file", "one-write"],
)
def test_one_partition_rolls_at_the_target_size(
    home: Path, hold_files: bool, flush_rows: int, batches: int
) -> None:
    catalog, writer = _writer(home, hold_files, flush_rows)
    total = 300_000
    per = total // batches
    try:
        for b in range(batches):
            refused = writer.add(_rows(1 + b * per, per))
            assert refused.height == 0
        assert writer.commit()
    finally:
        writer.close()
    table = catalog.load_table("logs.t")
    files = [task.file for task in table.scan().plan_files()]
    new = [f for f in files if f.record_count > 1]
    assert {str(f.partition) for f in new} == {str(new[0].partition)}  # one partition
    assert len(new) >= 4, [f.file_size_in_bytes for f in new]
    # Each file closed once it reached the target: at most one write (a flush, or a chunk of
    # about the target in memory) past it; the last one holds what was left.
    sizes = sorted(f.file_size_in_bytes for f in new)
    assert sizes[-1] < 4 * TARGET, sizes
    assert sum(sizes[:-1]) >= TARGET * (len(new) - 1), sizes
    for f in new:
        assert pq.ParquetFile(local_path(f.file_path)).metadata.num_rows == f.record_count
    stored = pl.from_arrow(table.scan(selected_fields=("line",)).to_arrow())
    assert isinstance(stored, pl.DataFrame)
    lines = stored.get_column("line").sort().to_list()
    assert lines == list(range(0, total + 1))
