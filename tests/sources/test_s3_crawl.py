"""``loglake crawl s3://...`` against a real local S3-compatible server (moto): the same crawl as
over folders, keys as paths."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import loglake
from loglake.config import load_config
from loglake.lake.catalog import open_catalog


def _loglake(home: Path, env: dict[str, str], *args: str) -> str:
    full = {**os.environ, **env, "LOGLAKE_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "loglake.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def test_crawl_s3_prefixes(
    tmp_path: Path, s3_env: dict[str, str], s3_client: Any, s3_bucket: str
) -> None:
    put = s3_client.put_object
    put(Bucket=s3_bucket, Key="sales/2024/01/22/a.parquet", Body=_parquet(pa.table({"v": [1, 2]})))
    put(Bucket=s3_bucket, Key="sales/2024/01/23/b.parquet", Body=_parquet(pa.table({"v": [5]})))
    line = '198.51.100.{i} - - [22/Jan/2024:10:00:0{i} +0000] "GET / HTTP/1.1" 200 {i} "-" "x"\n'
    body = "".join(line.format(i=i) for i in range(1, 4)).encode()
    put(Bucket=s3_bucket, Key="web/access.log.gz", Body=gzip.compress(body))
    home = tmp_path / "lake"
    out = _loglake(home, s3_env, "crawl", f"s3://{s3_bucket}/sales/", f"s3://{s3_bucket}/web/")
    assert "table crawled.sales (new, parquet): 2 new file(s)" in out, out
    assert "partitions: year=2024/month=1/day=22, year=2024/month=1/day=23" in out
    assert "table crawled.web (new, access): 1 new file(s)" in out
    # Parquet objects stay where they are: the query engine reads them from S3.
    assert "2 file(s) in place (the files stay where they are; nothing is copied)" in out, out
    assert "1 file(s) converted through the ingest pipeline" in out
    con = loglake.connect(str(home))
    assert con.sql("SELECT day, sum(v) FROM crawled.sales GROUP BY 1 ORDER BY 1").fetchall() == [
        (22, 3),
        (23, 5),
    ]
    assert con.sql("SELECT count(*), sum(bytes) FROM crawled.web").fetchall() == [(3, 6)]
    # A new partition: only its object is read and registered.
    put(Bucket=s3_bucket, Key="sales/2024/01/24/c.parquet", Body=_parquet(pa.table({"v": [7]})))
    again = _loglake(home, s3_env, "crawl", f"s3://{s3_bucket}/sales/")
    assert "1 table(s), 1 new file(s), 2 already crawled, 0 left out" in again, again
    assert loglake.connect(str(home)).sql("SELECT sum(v) FROM crawled.sales").fetchall() == [(15,)]


def test_s3_parquet_stays_in_place(
    tmp_path: Path, s3_env: dict[str, str], s3_client: Any, s3_bucket: str
) -> None:
    """Parquet crawled from S3 is read where it lies: the table's data files are the objects,
    partition values fill the columns the objects lack, a deleted object leaves the table at the
    next crawl, and maintenance never deletes or rewrites an object."""
    put = s3_client.put_object
    rows = {"a": [1, 2, 3], "b": [10], "c": [100, 200]}
    for day, part in zip((1, 2, 3), "abc", strict=True):
        body = _parquet(pa.table({"v": rows[part], "name": [f"{part}{i}" for i in rows[part]]}))
        put(Bucket=s3_bucket, Key=f"events/site=x/day={day}/{part}.parquet", Body=body)
    home = tmp_path / "lake"
    out = _loglake(home, s3_env, "crawl", f"s3://{s3_bucket}/events/", "--table", "ext.events")
    assert "3 file(s) in place" in out, out
    config = load_config(home=home, environ={**os.environ, **s3_env})
    table = open_catalog(config).load_table("ext.events")
    paths = sorted(t.file.file_path for t in table.scan().plan_files())
    assert paths == [
        f"s3://{s3_bucket}/events/site=x/day={d}/{p}.parquet"
        for d, p in zip("123", "abc", strict=True)
    ]
    con = loglake.connect(str(home))
    got = con.sql("SELECT site, day, sum(v), min(name) FROM ext.events GROUP BY 1, 2 ORDER BY 2")
    # Hive partition values are strings, as in Glue.
    assert got.fetchall() == [("x", "1", 6, "a1"), ("x", "2", 10, "b10"), ("x", "3", 300, "c100")]
    assert con.sql("SELECT count(*) FROM ext.events WHERE day = '3'").fetchall() == [(2,)]
    _loglake(home, s3_env, "maintain")
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert len(keys) == 3
    s3_client.delete_object(Bucket=s3_bucket, Key="events/site=x/day=2/b.parquet")
    again = _loglake(home, s3_env, "crawl", f"s3://{s3_bucket}/events/", "--table", "ext.events")
    assert "table ext.events: 1 file(s) registered in place are gone" in again, again
    con = loglake.connect(str(home))
    assert con.sql("SELECT sum(v), count(*) FROM ext.events").fetchall() == [(306, 5)]
