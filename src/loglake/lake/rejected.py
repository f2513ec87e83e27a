"""``logs.rejected``: every line or record loglake could not store, raw and with the reason.

Batch ingest and every stream write it; its rows say where a record came from (``source``), which
format refused it, which table it was meant for, its line number or stream offset, and its bytes
exactly as received (``raw``; ``text`` is them decoded for reading, invalid UTF-8 as ``\\xNN``).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

REJECTED_TABLE = "logs.rejected"

#: The table's columns, for creating it empty (it exists once anything was ingested, so the
#: README's queries over it work after a clean run).
SCHEMA: dict[str, pl.DataType] = {
    "ingested_at": pl.Datetime("us"),
    "source": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),
    "format": pl.String(),
    "target_table": pl.String(),
    "text": pl.String(),
    "raw": pl.Binary(),
}


def time_column(table: str) -> str:
    """The column a table is sorted and partitioned by: rejected records by their arrival."""
    return "ingested_at" if table == REJECTED_TABLE or table.endswith(".rejected") else "ts"


def rejected_frame(
    rejected: pl.DataFrame, source: str, fmt: str, table: str, at: datetime
) -> pl.DataFrame:
    """Rows of ``logs.rejected`` for ``rejected`` (``line``, ``raw``, ``reason``)."""
    # Rejected lines are few: decoding them one by one for the readable `text` column is cheap.
    text = pl.Series(
        "text",
        [
            b.decode("utf-8", errors="backslashreplace")
            for b in rejected.get_column("raw").to_list()
        ],
        dtype=pl.String,
    )
    return rejected.with_columns(text).select(
        pl.lit(at).alias("ingested_at"),
        pl.lit(source).alias("source"),
        pl.col("line"),
        pl.col("reason"),
        pl.lit(fmt).alias("format"),
        pl.lit(table).alias("target_table"),
        pl.col("text"),
        pl.col("raw"),
    )


def empty_rejected() -> pl.DataFrame:
    """No rejected rows, with the table's columns."""
    return pl.DataFrame(schema=SCHEMA)
