"""The crawler over local folders built here: formats, partitions, schemas, conflicts, re-crawls.

Each test builds a folder the way users have them (Parquet in Hive partitions, JSON lines under
date folders, access logs, an odd file among good ones), crawls it with the real CLI, and asks the
lake what it registered through ``loglake.connect(home).sql``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import loglake
from loglake.crawl import path_partitions, widen

ACCESS = '203.0.113.{i} - - [22/Jan/2024:10:{m:02d}:00 +0000] "GET /p{i} HTTP/1.1" 200 {size} "-" "curl/8"\n'


def _parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _sql(home: Path, sql: str) -> list[tuple[object, ...]]:
    return loglake.connect(str(home)).sql(sql).fetchall()


def test_path_partitions_hive_and_dates() -> None:
    assert path_partitions(["region=eu", "dt=2024-01-22"]) == {"region": "eu", "dt": "2024-01-22"}
    assert path_partitions(["2024", "01", "22"]) == {"year": 2024, "month": 1, "day": 22}
    assert path_partitions(["app", "2024", "01", "22", "10"]) == {
        "year": 2024,
        "month": 1,
        "day": 22,
        "hour": 10,
    }
    assert path_partitions(["2024", "13", "22"]) == {}  # no month 13: not a date path
    assert path_partitions(["logs", "misc"]) == {}


def test_widening_is_safe_only() -> None:
    assert widen(pa.int32(), pa.int64()) == pa.int64()
    assert widen(pa.int64(), pa.float64()) == pa.float64()
    assert widen(pa.null(), pa.string()) == pa.string()
    assert widen(pa.int64(), pa.string()) is None
    assert widen(pa.string(), pa.int64()) is None
    assert widen(pa.bool_(), pa.int64()) is None


@pytest.mark.slow
def test_crawl_mixed_folders(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    sales = tmp_path / "sales"
    _parquet(
        sales / "region=eu" / "part-0.parquet",
        pa.table({"id": pa.array([1, 2], pa.int32()), "amount": [10.5, 20.0]}),
    )
    _parquet(
        sales / "region=us" / "part-0.parquet",
        pa.table({"id": pa.array([3, 4, 5], pa.int64()), "amount": [1.0, 2.0, 3.0]}),
    )
    (sales / "_SUCCESS").write_bytes(b"")  # a writer's marker: ignored, neither data nor odd
    _parquet(sales / "_temporary" / "0" / "t.parquet", pa.table({"id": [99], "amount": [9.0]}))
    # The same column as text: a conflict, reported with this file, which is left out.
    _parquet(sales / "region=us" / "bad.parquet", pa.table({"id": ["x"], "amount": [9.0]}))
    events = tmp_path / "events"
    for day, n in ((21, 3), (22, 2)):
        folder = events / "2024" / "01" / f"{day:02d}"
        folder.mkdir(parents=True)
        lines = [
            json.dumps({"ts": f"2024-01-{day}T10:00:0{i}Z", "user": f"u{i}", "n": i})
            for i in range(n)
        ]
        (folder / "events.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    web = tmp_path / "web"
    web.mkdir()
    (web / "access.log").write_text(
        "".join(ACCESS.format(i=i, m=i, size=100 + i) for i in range(5))
    )
    prices = tmp_path / "prices"
    (prices / "dt=2024-01-22").mkdir(parents=True)
    (prices / "dt=2024-01-22" / "p.csv").write_text("sku,price\na1,1.5\nb2,2\n")
    (prices / "dt=2024-01-23").mkdir()
    (prices / "dt=2024-01-23" / "p.tsv.gz").write_bytes(
        gzip.compress(b"sku\tprice\nc3\t3\nd4\t4\n")
    )
    # Prose with one comma per line is no CSV table: left out like any odd file.
    (web / "README.txt").write_text("Web tier, rotated daily.\nAsk ops, not dev.\nOr, me.\n")
    (web / "notes.bin").write_bytes(b"\x00\x01\x02 not a log\n\xff\xfe\n")  # the odd file

    planned = run_cli("crawl", str(sales), str(events), str(web), str(prices), "--plan").stdout
    assert "table crawled.sales (new, parquet): 2 new file(s)" in planned
    assert "partitions: region=eu, region=us" in planned
    assert "table crawled.events (new, json): 2 new file(s)" in planned
    assert "table crawled.web (new, access): 1 new file(s)" in planned
    assert "bad.parquet: type conflict: column 'id'" in planned
    assert "notes.bin: no format fits it" in planned
    assert "_SUCCESS" not in planned and "2 ignored (names starting with _ or .)" in planned
    assert "README.txt: no format fits it" in planned
    assert "schema: id int64, amount double, region string" in planned
    # A CSV and a (compressed) TSV file of one path: rows of fields both, so one table.
    assert "table crawled.prices (new, csv): 2 new file(s)" in planned
    assert list(home.iterdir()) == []  # a plan writes nothing

    out = run_cli("crawl", str(sales), str(events), str(web), str(prices)).stdout
    assert "registered 5 row(s)" in out, out
    assert _sql(
        home, "SELECT region, count(*), sum(amount) FROM crawled.sales GROUP BY 1 ORDER BY 1"
    ) == [
        ("eu", 2, 30.5),
        ("us", 3, 6.0),
    ]
    assert _sql(home, "SELECT typeof(id) FROM crawled.sales LIMIT 1") == [("BIGINT",)]
    assert _sql(home, "SELECT count(*), count(DISTINCT user) FROM crawled.events") == [(5, 3)]
    assert _sql(home, "SELECT count(*), sum(bytes) FROM crawled.web") == [(5, 510)]
    # price: a double in one file, an integer in the other: widened to double.
    assert _sql(home, "SELECT dt, sku, price FROM crawled.prices ORDER BY sku") == [
        ("2024-01-22", "a1", 1.5),
        ("2024-01-22", "b2", 2.0),
        ("2024-01-23", "c3", 3.0),
        ("2024-01-23", "d4", 4.0),
    ]

    # Re-crawl: nothing new is read or registered.
    again = run_cli("crawl", str(sales), str(events), str(web), str(prices)).stdout
    assert "0 table(s), 0 new file(s), 7 already crawled" in again, again
    assert _sql(home, "SELECT count(*) FROM crawled.sales") == [(5,)]

    # A new partition and an added column are picked up (policy update adds the column).
    _parquet(
        sales / "region=apac" / "part-0.parquet",
        pa.table({"id": [6], "amount": [7.0], "channel": ["web"]}),
    )
    third = run_cli("crawl", str(sales)).stdout
    assert "table crawled.sales (existing, parquet): 1 new file(s)" in third
    assert "new columns: channel" in third
    assert _sql(
        home, "SELECT region, channel, count(*) FROM crawled.sales GROUP BY ALL ORDER BY 1"
    ) == [
        ("apac", "web", 1),
        ("eu", None, 2),
        ("us", None, 3),
    ]


@pytest.mark.slow
def test_schema_change_log_only_reports(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    (home / "loglake.toml").write_text('[crawl]\nschema_change = "log"\n')
    data = tmp_path / "metrics"
    _parquet(data / "2024" / "01" / "22" / "a.parquet", pa.table({"v": [1, 2]}))
    run_cli("crawl", str(data))
    _parquet(data / "2024" / "01" / "23" / "b.parquet", pa.table({"v": [3], "extra": ["x"]}))
    out = run_cli("crawl", str(data)).stdout
    assert "new columns: extra" in out
    assert _sql(home, "SELECT day, sum(v) FROM crawled.metrics GROUP BY 1 ORDER BY 1") == [
        (22, 3),
        (23, 3),
    ]
    columns = [r[0] for r in _sql(home, "SELECT column_name FROM (DESCRIBE crawled.metrics)")]
    assert "extra" not in columns and {"year", "month", "day"} <= set(columns)


def test_table_threshold_refuses(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    (home / "loglake.toml").write_text("[crawl]\nmax_tables = 1\n")
    for name in ("a", "b"):
        _parquet(tmp_path / name / "x.parquet", pa.table({"v": [1]}))
    proc = run_cli("crawl", str(tmp_path / "a"), str(tmp_path / "b"), check=False)
    assert proc.returncode != 0
    assert "more than crawl.max_tables = 1" in proc.stderr
    assert not (home / "catalog.db").exists()
    # One named table takes both paths.
    run_cli("crawl", str(tmp_path / "a"), str(tmp_path / "b"), "--table", "crawled.both")
    assert _sql(home, "SELECT count(*) FROM crawled.both") == [(2,)]


def test_same_folder_names_never_merge(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    for side in ("a", "b"):
        _parquet(tmp_path / side / "logs" / "x.parquet", pa.table({"v": [1]}))
    proc = run_cli("crawl", str(tmp_path / "a" / "logs"), str(tmp_path / "b" / "logs"), check=False)
    assert proc.returncode != 0
    assert "would both become table crawled.logs" in proc.stderr
    assert list(home.iterdir()) == []


def test_json_conflict_and_new_key_on_recrawl(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    events = tmp_path / "ev"
    events.mkdir()
    (events / "1.jsonl").write_text('{"ts": "2024-01-22T10:00:00Z", "a": 1}\n')
    run_cli("crawl", str(events))
    (events / "2.jsonl").write_text('{"ts": "2024-01-22T10:00:01Z", "a": "x"}\n')
    (events / "3.jsonl").write_text('{"ts": "2024-01-22T10:00:02Z", "a": 3, "c": true}\n')
    out = run_cli("crawl", str(events)).stdout
    assert "2.jsonl: type conflict: column 'a' is string here but int64 in the table" in out
    assert "new columns: c" in out
    assert _sql(home, "SELECT a, c FROM crawled.ev ORDER BY a") == [(1, None), (3, True)]
