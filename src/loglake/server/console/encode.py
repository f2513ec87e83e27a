"""Query results as the console's JSON (downloads: :func:`loglake.query.output.chunks`).

One JSON shape for every result the pages show (columnar: charts and the virtual table read a
column at a time)::

    {"columns": [{"name": "status", "type": "int32"}, ...],
     "data": [[200, 404, ...], ...],          # one list per column, in column order
     "rows": 2, "truncated": false, "note": null}

Values as :func:`loglake.analytics.alerts.json_value` gives them, except that timestamps are
``YYYY-MM-DD HH:MM:SS[.ffffff]`` text in UTC (as ``loglake query`` prints them; a zone offset is
kept when the column has one), so the page shows what the CLI shows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from loglake.analytics.alerts import json_value

if TYPE_CHECKING:
    from loglake.query.engine import Result


def column_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """One column's values as JSON data (see the module docstring)."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        # 2024-03-01 10:01:00.123456 (+0000 with a zone): DuckDB's and pyarrow's own text.
        return column.cast(pa.string()).to_pylist()
    if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.to_pylist()
    if pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return column.to_pylist()
    if pa.types.is_floating(kind):
        return [v if v is None or math.isfinite(v) else None for v in column.to_pylist()]
    return [json_value(v) for v in column.to_pylist()]


def result_json(result: Result, note: str | None = None) -> dict[str, Any]:
    """A query result in the console's JSON shape; ``note`` (or the result's own cut notice)
    tells the page why rows are missing."""
    table = result.table
    return {
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "data": [column_values(c) for c in table.columns],
        "rows": table.num_rows,
        "truncated": result.truncated,
        "note": note or _cut_note(result),
    }


def _cut_note(result: Result) -> str | None:
    if not result.truncated:
        return None
    limit = "[console] max_rows" if result.cut_by == "rows" else "[query] max_result_bytes"
    return (
        f"only the first {result.table.num_rows:,} rows are shown ({limit}); download the result "
        "for every row, or narrow the query"
    )
