"""``loglake crawl`` registers local Parquet files where they lie (no copy): Iceberg data files that
point at the user's files, Hive and date folders as identity partitions whose values live only in
the manifests. Checked against the files themselves read with pyarrow, through the CLI, the Python
API and pyiceberg's own reader; the sandbox reads those files and nothing else; maintenance never
touches them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import loglake
from loglake.errors import QueryError, QueryRefusedError


def _parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _sales(root: Path) -> Path:
    """A Hive-partitioned folder as Spark leaves it: region=eu (two files), region=us."""
    sales = root / "sales"
    ts = pa.timestamp("us")
    _parquet(
        sales / "region=eu" / "part-0.parquet",
        pa.table(
            {
                "id": pa.array([1, 2], pa.int32()),
                "amount": [10.5, 20.0],
                "ts": pa.array([datetime(2020, 1, 1, 10), datetime(2020, 1, 1, 11)], ts),
            }
        ),
    )
    _parquet(
        sales / "region=eu" / "part-1.parquet",
        pa.table(
            {
                "id": pa.array([6], pa.int32()),
                "amount": [0.5],
                "ts": pa.array([datetime(2020, 1, 2, 9)], ts),
            }
        ),
    )
    _parquet(
        sales / "region=us" / "part-0.parquet",
        pa.table(
            {
                "id": pa.array([3, 4, 5], pa.int64()),
                "amount": [1.0, 2.0, 3.0],
                "ts": pa.array([datetime(2020, 1, 3, h) for h in (1, 2, 3)], ts),
            }
        ),
    )
    (sales / "_SUCCESS").write_bytes(b"")
    return sales


def _direct(folder: Path) -> list[tuple[object, ...]]:
    """(region, id, amount) of every row, read from the files with pyarrow: the truth."""
    rows = []
    for path in sorted(folder.rglob("*.parquet")):
        region = path.parent.name.split("=", 1)[1]
        for r in pq.read_table(path).to_pylist():
            rows.append((region, r["id"], r["amount"]))
    return sorted(rows)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _data_files(home: Path) -> list[Path]:
    """Parquet files the lake itself holds in its warehouse."""
    return sorted((home / "warehouse").rglob("*.parquet"))


@pytest.mark.slow
def test_parquet_registered_in_place(
    tmp_path: Path,
    home: Path,
    run_cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sales = _sales(tmp_path)
    planned = run_cli("crawl", str(sales), "--plan").stdout
    assert "3 file(s) in place (the files stay where they are; nothing is copied)" in planned

    out = run_cli("crawl", str(sales)).stdout
    assert "registered 6 row(s)" in out, out
    assert _data_files(home) == []  # nothing copied: the warehouse holds metadata only

    truth = _direct(sales)
    sql = "SELECT region, id, amount FROM crawled.sales ORDER BY 1, 2, 3"
    con = loglake.connect(str(home))  # one sandbox worker for the whole test
    api = con.sql(sql).fetchall()
    assert sorted(api) == truth
    cli = run_cli("query", sql, "--format", "json").stdout.splitlines()
    assert [tuple(json.loads(line).values()) for line in cli] == api
    assert con.sql("SELECT typeof(id), typeof(region) FROM crawled.sales LIMIT 1").fetchall() == [
        ("BIGINT", "VARCHAR")
    ]
    # A filter on the partition column reads that partition's files only, right either way.
    assert con.sql(
        "SELECT count(*), sum(amount) FROM crawled.sales WHERE region = 'us'"
    ).fetchall() == [(3, 6.0)]

    # Tables of many partitions are read joined to a VALUES list of partition values instead of
    # one branch per partition: the same rows (here from two partitions on).
    import loglake.query.engine as engine

    monkeypatch.setattr(engine, "UNION_PARTITIONS", 1)
    assert con.sql(sql).fetchall() == api
    assert con.sql(
        "SELECT count(*), sum(amount) FROM crawled.sales WHERE region = 'us'"
    ).fetchall() == [(3, 6.0)]
    monkeypatch.undo()

    # The table is right by the Iceberg spec, not only for loglake's engine: pyiceberg reads the
    # files by name (name mapping) and fills region, which no file holds, from the manifests.
    from loglake.config import load_config
    from loglake.lake.catalog import open_catalog

    table = open_catalog(load_config(home=str(home))).load_table("crawled.sales")
    paths = sorted(task.file.file_path for task in table.scan().plan_files())
    assert paths == sorted("file://" + str(p.resolve()) for p in sales.rglob("*.parquet"))
    scanned = table.scan(selected_fields=("region", "id", "amount")).to_arrow().to_pylist()
    assert sorted((r["region"], r["id"], r["amount"]) for r in scanned) == truth
    eu = table.scan(row_filter="region = 'eu'").to_arrow()
    assert sorted(eu.column("id").to_pylist()) == [1, 2, 6]
    assert set(eu.column("region").to_pylist()) == {"eu"}

    # Re-crawl: a new partition's file and a new column are picked up, nothing else is read.
    _parquet(
        sales / "region=apac" / "part-0.parquet",
        pa.table({"id": [7], "amount": [7.0], "ts": [datetime(2020, 1, 4)], "channel": ["web"]}),
    )
    again = run_cli("crawl", str(sales)).stdout
    assert "1 table(s), 1 new file(s), 3 already crawled" in again, again
    assert "new columns: channel" in again and "1 file(s) in place" in again
    assert con.sql(
        "SELECT region, channel, count(*) FROM crawled.sales GROUP BY ALL ORDER BY 1"
    ).fetchall() == [("apac", "web", 1), ("eu", None, 3), ("us", None, 3)]
    assert _data_files(home) == []

    # A file rewritten in place (another size and time) replaces its entry: no row twice.
    _parquet(sales / "region=us" / "part-0.parquet", pa.table({"id": [30], "amount": [30.0]}))
    run_cli("crawl", str(sales))
    assert con.sql("SELECT id, amount FROM crawled.sales WHERE region = 'us'").fetchall() == [
        (30, 30.0)
    ]


@pytest.mark.slow
def test_date_folders_and_convert(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    metrics = tmp_path / "metrics"
    _parquet(metrics / "2024" / "01" / "22" / "a.parquet", pa.table({"v": [1, 2]}))
    _parquet(metrics / "2024" / "01" / "23" / "b.parquet", pa.table({"v": [5]}))
    run_cli("crawl", str(metrics))
    con = loglake.connect(str(home))
    assert con.sql(
        "SELECT year, month, day, sum(v) FROM crawled.metrics GROUP BY ALL ORDER BY 3"
    ).fetchall() == [(2024, 1, 22, 3), (2024, 1, 23, 5)]
    assert _data_files(home) == []

    # A file inside the data home (config with keys, state) is never left for user SQL to read.
    _parquet(home / "mine" / "m.parquet", pa.table({"v": [7]}))
    out = run_cli("crawl", str(home / "mine")).stdout
    assert "1 file(s) copied into the lake: the file lies inside the lake's data home" in out, out
    assert con.sql("SELECT v FROM crawled.mine").fetchall() == [(7,)]
    assert str(home / "mine") not in "".join(con.settings.paths)

    # --convert copies the rows into the lake, as every crawl did before (another lake: the
    # ingest ledger of this one knows these files already).
    other = tmp_path / "other"
    env = {"LOGLAKE_HOME": str(other)}
    out = run_cli("crawl", str(metrics), "--convert", env=env).stdout
    assert "2 file(s) copied into the lake" in out, out
    assert len(_data_files(other)) == 2
    assert loglake.connect(str(other)).sql(
        "SELECT day, sum(v) FROM crawled.metrics GROUP BY 1 ORDER BY 1"
    ).fetchall() == [(22, 3), (23, 5)]


@pytest.mark.slow
def test_sandbox_reads_registered_files_only(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    sales = _sales(tmp_path)
    stray = tmp_path / "secret.parquet"  # beside the crawled folder, never registered
    _parquet(stray, pa.table({"x": [1]}))
    odd = sales / "region=eu" / "notes.bin"  # inside it, left out of the table
    odd.write_bytes(b"\x00\x01\x02 not data\n\xff\xfe\n")
    assert "notes.bin: no format fits it" in run_cli("crawl", str(sales)).stdout
    con = loglake.connect(str(home))
    assert con.sql("SELECT count(*) FROM crawled.sales").fetchall() == [(6,)]
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_parquet('{stray}')",
        f"SELECT * FROM read_parquet('{sales}/region=eu/part-0.parquet')",
    ):
        with pytest.raises(QueryRefusedError):
            con.sql(sql)
    proc = run_cli("query", "SELECT * FROM read_csv('/etc/passwd')", check=False)
    assert proc.returncode != 0 and "root:" not in proc.stdout

    # Below the SQL policy, the sandbox itself: it may read the registered files, and no other.
    from loglake.query.worker import Limits, open_sandbox, run

    settings = con.settings
    assert sorted(settings.paths) == sorted(str(p.resolve()) for p in sales.rglob("*.parquet"))
    sandbox = open_sandbox(settings, bound_process=False)
    limits = Limits(timeout_s=30, max_rows=100, max_bytes=1 << 20)
    try:
        table, _ = run(
            sandbox, [], f"SELECT count(*) AS n FROM read_parquet('{settings.paths[0]}')", limits
        )
        assert table.column("n").to_pylist()[0] > 0
        for path in ("/etc/passwd", str(stray), str(odd.resolve()), str(sales.resolve()) + "/*/*"):
            with pytest.raises(QueryRefusedError):
                run(sandbox, [], f"SELECT * FROM read_text('{path}')", limits)
        with pytest.raises(QueryError, match="locked"):
            run(sandbox, [], "SET allowed_paths = ['/etc/passwd']", limits)
    finally:
        sandbox.close()


@pytest.mark.slow
def test_maintenance_never_touches_files_in_place(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    # Retention of one day and no grace: everything here (2020) is past it, and any unreferenced
    # file would be removed at once; compaction would merge region=eu's two small files.
    (home / "loglake.toml").write_text(
        "[maintenance]\nretention_days = 1\ngrace_s = 0\nkeep_snapshots = 1\n"
    )
    sales = _sales(tmp_path)
    run_cli("crawl", str(sales))
    _parquet(sales / "region=us" / "part-1.parquet", pa.table({"id": [8], "amount": [8.0]}))
    run_cli("crawl", str(sales))  # a second snapshot, for expiry to expire
    before = _digests(sales)
    con = loglake.connect(str(home))
    truth = con.sql("SELECT region, id, amount FROM crawled.sales ORDER BY 1, 2").fetchall()

    out = run_cli("maintain").stdout
    assert "crawled.sales: files 4 -> 4" in out, out
    assert "drop 0 partitions" in out and "merge 0 files" in out
    assert "4 files registered in place left alone" in out
    assert "expire 1 snapshots" in out  # expiry and orphan removal did run
    run_cli("maintain", "crawled.sales")
    assert _digests(sales) == before  # every file still there, byte for byte
    assert con.sql("SELECT region, id, amount FROM crawled.sales ORDER BY 1, 2").fetchall() == truth

    # The streamed tables' own compaction leaves them alone too.
    from loglake.config import load_config
    from loglake.lake.catalog import open_catalog
    from loglake.lake.maintenance import plan_compaction

    table = open_catalog(load_config(home=str(home))).load_table("crawled.sales")
    assert plan_compaction(table) == []


def test_csv_in_place_as_an_external_table(tmp_path: Path, home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    import gzip

    prices = tmp_path / "prices"
    (prices / "dt=2024-01-22").mkdir(parents=True)
    (prices / "dt=2024-01-22" / "p.csv").write_text("sku,price\na1,1.5\nb2,2\n")
    (prices / "dt=2024-01-23").mkdir()
    (prices / "dt=2024-01-23" / "p.tsv.gz").write_bytes(
        gzip.compress(b"sku\tprice\nc3\t3\nd4\t4\n")
    )
    # A value past the sampled 1 MiB that does not fit the column: found when the file is read
    # whole at the crawl, so the file is left out instead of failing every later query.
    late = "".join(f"x{i},{i}\n" for i in range(100_000)) + "bad,not-a-number\n"
    (prices / "dt=2024-01-24").mkdir()
    (prices / "dt=2024-01-24" / "late.csv").write_text("sku,price\n" + late)
    stray = tmp_path / "other.csv"
    stray.write_text("sku,price\nzz,9\nyy,8\n")

    out = run_cli("crawl", str(prices)).stdout
    assert "table crawled.prices (new, csv): 2 new file(s)" in out, out
    assert "2 file(s) in place (the files stay where they are; nothing is copied)" in out
    assert "late.csv: type conflict: a value does not fit the table's column types" in out
    assert _data_files(home) == [] and not (home / "catalog.db").exists()

    sql = "SELECT dt, sku, price FROM crawled.prices ORDER BY sku"
    rows = [
        ("2024-01-22", "a1", 1.5),
        ("2024-01-22", "b2", 2.0),
        ("2024-01-23", "c3", 3.0),
        ("2024-01-23", "d4", 4.0),
    ]
    con = loglake.connect(str(home))
    assert con.sql(sql).fetchall() == rows
    cli = run_cli("query", sql, "--format", "json").stdout.splitlines()
    assert [tuple(json.loads(line).values()) for line in cli] == rows
    assert con.sql("SELECT count(*) FROM crawled.prices WHERE dt = '2024-01-23'").fetchall() == [
        (2,)
    ]
    listed = run_cli("tables").stdout
    assert "crawled.prices" in listed and "4" in listed
    for sql in (f"SELECT * FROM read_csv('{stray}')", "SELECT * FROM read_csv('/etc/passwd')"):
        with pytest.raises(QueryRefusedError):
            con.sql(sql)
    assert sorted(con.settings.paths) == sorted(str(p.resolve()) for p in prices.rglob("p.*"))

    # Re-crawl: a new file with a new column; the left-out file is reported again.
    (prices / "dt=2024-01-25").mkdir()
    (prices / "dt=2024-01-25" / "q.csv").write_text("sku,price,shop\ne5,5,web\nf6,6,app\n")
    again = run_cli("crawl", str(prices)).stdout
    assert "table crawled.prices (existing, csv): 1 new file(s)" in again, again
    assert "new columns: shop" in again and "late.csv: type conflict" in again
    assert con.sql(
        "SELECT dt, count(*), count(shop) FROM crawled.prices GROUP BY 1 ORDER BY 1"
    ).fetchall() == [("2024-01-22", 2, 0), ("2024-01-23", 2, 0), ("2024-01-25", 2, 2)]
    # The fixed file is registered; --convert into this table is refused, not mixed in.
    (prices / "dt=2024-01-24" / "late.csv").write_text("sku,price\n" + late[:-17])
    proc = run_cli("crawl", str(prices), "--convert", check=False)
    assert proc.returncode != 0 and "registered in place" in proc.stderr
    run_cli("crawl", str(prices))
    assert con.sql("SELECT count(*) FROM crawled.prices WHERE dt = '2024-01-24'").fetchall() == [
        (100_000,)
    ]


def test_served_console_lists_and_queries_tables_in_place(
    tmp_path: Path, home: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    from serving import Server, request

    sales = _sales(tmp_path)
    prices = tmp_path / "prices"
    prices.mkdir()
    (prices / "p.csv").write_text("sku,price\na1,1.5\nb2,2\n")
    run_cli("crawl", str(sales), str(prices))
    server = Server.started(home, '[syslog]\nudp = ""\ntcp = ""\n')
    try:

        def sql(text: str) -> list[list[object]]:
            status, body, _ = request(
                "POST", server.url + "/v1/sql", json.dumps({"sql": text}).encode()
            )
            assert status == 200, body
            return [list(r) for r in zip(*body["data"], strict=True)]

        status, body, _ = request("GET", server.url + "/v1/catalog/tables")
        assert status == 200, body
        listed = {t["name"]: t for t in body["tables"]}
        assert (listed["crawled.sales"]["rows"], listed["crawled.sales"]["files"]) == (6, 3)
        assert (listed["crawled.prices"]["rows"], listed["crawled.prices"]["files"]) == (2, 1)
        status, detail, _ = request("GET", server.url + "/v1/catalog/tables/crawled.prices")
        assert status == 200 and detail["external"] is True and detail["format"] == "csv"
        assert [c["name"] for c in detail["schema"]] == ["sku", "price"]
        status, snaps, _ = request(
            "GET", server.url + "/v1/catalog/tables/crawled.prices/snapshots"
        )
        assert status == 200 and snaps["total"] == 0
        status, files, _ = request("GET", server.url + "/v1/catalog/tables/crawled.sales/files")
        assert status == 200 and files["total"] == 3
        # Explore knows the external table, and why it cannot show it (no time column).
        status, explore, _ = request("GET", server.url + "/v1/explore/tables")
        assert status == 200, explore
        shown = {t["name"]: t for t in explore["tables"]}
        assert "no timestamp column" in shown["crawled.prices"]["error"]
        assert "error" not in shown["crawled.sales"], shown["crawled.sales"]

        # One long-lived sandbox: it is widened to each table's files as queries need them.
        assert sql("SELECT region, count(*) FROM crawled.sales GROUP BY 1 ORDER BY 1") == [
            ["eu", 3],
            ["us", 3],
        ]
        assert sql("SELECT sku, price FROM crawled.prices ORDER BY 1") == [["a1", 1.5], ["b2", 2.0]]
        # A file crawled while the server runs is read by the next query.
        _parquet(sales / "region=sa" / "part-0.parquet", pa.table({"id": [9], "amount": [9.0]}))
        run_cli("crawl", str(sales))
        assert sql("SELECT count(*), sum(id) FILTER (WHERE region = 'sa') FROM crawled.sales") == [
            [7, 9]
        ]
        status, body, _ = request(
            "POST",
            server.url + "/v1/sql",
            json.dumps({"sql": "SELECT * FROM read_csv('/etc/passwd')"}).encode(),
        )
        assert status in (400, 403) and "root:" not in json.dumps(body)
    finally:
        server.stop()


@pytest.mark.slow
def test_files_that_are_gone_are_removed_by_the_next_crawl(
    tmp_path: Path, home: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    import shutil

    sales = _sales(tmp_path)
    (sales / "region=eu" / "extra.csv").write_text("k,v\na,1\nb,2\n")  # a CSV table beside
    run_cli("crawl", str(sales))
    moved = tmp_path / "moved"
    shutil.move(str(sales / "region=us"), moved)  # the user moves a partition away
    (sales / "region=eu" / "extra.csv").unlink()
    proc = run_cli("query", "SELECT count(*) FROM crawled.sales_parquet", check=False)
    assert proc.returncode != 0 and "run loglake crawl on its folder again" in proc.stderr

    planned = run_cli("crawl", str(sales), "--plan").stdout
    assert (
        "table crawled.sales_parquet: 1 file(s) registered in place are gone, would be" in planned
    )
    out = run_cli("crawl", str(sales)).stdout
    assert "table crawled.sales_csv: 1 file(s) registered in place are gone, removed" in out, out
    con = loglake.connect(str(home))
    assert con.sql("SELECT region, count(*) FROM crawled.sales_parquet GROUP BY 1").fetchall() == [
        ("eu", 3)
    ]
    assert con.sql("SELECT count(*) FROM crawled.sales_csv").fetchall() == [(0,)]
    # Moved back as it was (same size and time): registered again, since the crawl forgot it.
    shutil.move(str(moved), sales / "region=us")
    again = run_cli("crawl", str(sales)).stdout
    assert "1 new file(s)" in again, again
    assert con.sql(
        "SELECT region, count(*) FROM crawled.sales_parquet GROUP BY 1 ORDER BY 1"
    ).fetchall() == [("eu", 3), ("us", 3)]
