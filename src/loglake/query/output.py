"""Query results as CSV or JSON lines, the same bytes from ``loglake query`` and the console's
downloads.

CSV: Python's csv module (a header row, then one row per record); timestamps ISO 8601
(``2024-03-01T10:01:00``), bytes as UTF-8 text with undecodable bytes escaped, NULL empty.
JSON lines: one object per record, keys in column order, the same value rules.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


def json_default(value: Any) -> Any:
    """The text of a value JSON has no type for."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def write_rows(
    out: IO[str], fmt: str, names: list[str], rows: Iterable[tuple[Any, ...]], header: bool = True
) -> int:
    """Write ``rows`` to ``out`` as ``csv`` (with a header row unless ``header`` is false) or
    ``json`` (lines); returns how many rows were written."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        if header:
            writer.writerow(names)
        for row in rows:
            writer.writerow(
                [
                    "" if v is None else json_default(v) if isinstance(v, datetime | bytes) else v
                    for v in row
                ]
            )
            count += 1
    elif fmt == "json":
        for row in rows:
            out.write(json.dumps(dict(zip(names, row, strict=True)), default=json_default))
            out.write("\n")
            count += 1
    else:
        raise ValueError(f"unknown output format {fmt!r}: use csv or json")
    return count


def python_values(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """A column's values as Python objects, as DuckDB's own fetch gives them: an integer sum
    (HUGEINT, Arrow decimal with scale 0) is an int, not a Decimal."""
    import pyarrow as pa

    values = column.to_pylist()
    if pa.types.is_decimal(column.type) and column.type.scale == 0:
        return [None if v is None else int(v) for v in values]
    return values


def table_rows(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    """The rows of an Arrow table as tuples of Python values (see :func:`python_values`)."""
    for batch in table.to_batches():
        columns = [python_values(c) for c in batch.columns]
        yield from zip(*columns, strict=True)


def chunks(tables: Iterable[pa.Table], fmt: str) -> Iterator[bytes]:
    """``tables`` (pages of one result, in order) as ``csv`` or ``json`` bytes, one chunk per
    table: a download streams page by page and never holds the whole result. The CSV header comes
    with the first page (or alone, when there are no pages)."""
    first = True
    names: list[str] = []
    for table in tables:
        names = table.column_names
        out = io.StringIO()
        write_rows(out, fmt, names, table_rows(table), header=first)
        first = False
        yield out.getvalue().encode()
    if first and fmt == "csv":
        yield b""
