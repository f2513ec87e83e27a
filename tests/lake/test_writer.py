"""TableWriter against a real catalog: conformed rows, tables created from them, schema evolution."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from loglake.config import load_config
from loglake.lake.catalog import open_catalog
from loglake.lake.writer import TableWriter, load_existing, peek_table

MakeWriter = Callable[..., TableWriter]


@pytest.fixture()
def catalog(home: Path) -> Any:
    return open_catalog(load_config(home))


@pytest.fixture()
def make_writer(catalog: Any) -> Iterator[MakeWriter]:
    made: list[TableWriter] = []

    def make(name: str = "logs.t", partition: str = "day") -> TableWriter:
        writer = TableWriter(
            lambda: (catalog, load_existing(catalog, name)), name, 1000, partition=partition
        )
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.close()


def rows(**columns: list[Any]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    return pl.DataFrame(
        {
            "ts": [datetime(2024, 5, 1, 12, 0, i) for i in range(n)],
            **columns,
            "line": list(range(1, n + 1)),
        }
    )


def stored(catalog: Any, name: str = "logs.t") -> list[dict[str, Any]]:
    """The table's rows as Iceberg reads them (by field id), in line order."""
    table = catalog.load_table(name)
    frame = pl.from_arrow(table.scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("line").drop("ts", "line").to_dicts()


def test_new_object_members_are_added_not_dropped(catalog: Any, make_writer: MakeWriter) -> None:
    """A member an object brings in a later commit was silently dropped (only top-level new
    columns evolved the schema, and the struct cast kept the table's members)."""
    writer = make_writer()
    writer.add(rows(p=[{"a": 1}]))
    writer.commit()
    later = pl.Series(
        [{"b": "x"}, {"a": 2, "b": "y"}], dtype=pl.Struct({"b": pl.String, "a": pl.Int64})
    )
    writer.add(rows(p=later.to_list()).with_columns(later.alias("p"), pl.col("line") + 1))
    writer.commit()
    assert stored(catalog) == [
        {"p": {"a": 1, "b": None}},
        {"p": {"a": None, "b": "x"}},
        {"p": {"a": 2, "b": "y"}},
    ]


def test_refused_rows_come_back_with_their_line_and_reason(
    catalog: Any, make_writer: MakeWriter
) -> None:
    writer = make_writer()
    assert writer.add(rows(n=[1])).height == 0
    writer.commit()
    refused = writer.add(rows(n=["2", "abc", "3.5"]).with_columns(pl.col("line") + 10))
    assert refused.to_dicts() == [
        {"line": 12, "reason": 'type drift: column "n" is BIGINT, this record has string "abc"'},
        {"line": 13, "reason": 'type drift: column "n" is BIGINT, this record has string "3.5"'},
    ]
    writer.commit()
    assert stored(catalog) == [{"n": 1}, {"n": 2}]


def test_the_table_is_created_from_conformed_rows(catalog: Any, make_writer: MakeWriter) -> None:
    # Two spellings of one key, an empty object and a key named like the partition field: the
    # table had `ip` and `IP` (unreachable in SQL), or could not be created at all.
    writer = make_writer()
    writer.add(rows(ip=["a", None], IP=[None, "B"], ts_day=[1, 2], p=[{}, {}]))
    writer.commit()
    assert catalog.load_table("logs.t").schema().column_names == [
        "ts",
        "ip",
        "ts_day_raw",
        "line",
    ]
    assert stored(catalog) == [{"ip": "a", "ts_day_raw": 1}, {"ip": "B", "ts_day_raw": 2}]
    # Later rows keep to the table's spelling and find the renamed column.
    writer.add(rows(Ip=["c"], TS_DAY=[3]).with_columns(pl.col("line") + 2))
    writer.commit()
    assert stored(catalog)[-1] == {"ip": "c", "ts_day_raw": 3}


def test_rows_buffered_but_not_written_bind_later_rows(
    catalog: Any, make_writer: MakeWriter
) -> None:
    """A new column's type is set by the first rows that bring it, even before their files are
    written: later rows in the same commit must fit it too."""
    writer = make_writer()
    writer.add(rows(n=[1]))
    refused = writer.add(rows(n=["x"]).with_columns(pl.col("line") + 1))
    assert refused.get_column("reason").to_list() == [
        'type drift: column "n" is BIGINT, this record has string "x"'
    ]
    writer.commit()
    assert stored(catalog) == [{"n": 1}]


def test_a_table_is_not_created_for_nothing(catalog: Any, make_writer: MakeWriter) -> None:
    writer = make_writer()
    assert not writer.commit()
    assert not catalog.table_exists("logs.t")


def test_peeked_columns_are_the_opened_tables(catalog: Any, make_writer: MakeWriter) -> None:
    """Batch ingest conforms its first rows to what the metadata file says, before pyiceberg is
    loaded: that must be exactly what the opened table says, or rows would be refused wrongly."""
    writer = make_writer()
    writer.add(
        rows(
            n=[1],
            f=[1.5],
            b=[True],
            s=["x"],
            p=[{"a": 1, "l": [{"q": "z"}]}],
            tags=[["a"]],
        ).with_columns(pl.col("n").cast(pl.Int32).alias("small"))
    )
    writer.commit()
    peeked = peek_table(catalog.load_table("logs.t").metadata_location)
    opened = make_writer()
    assert peeked is not None
    assert peeked == (opened.columns(), ["ts_day"])
    assert peek_table(None) == ({}, None)
