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
    # The query engine does not read S3 yet (issue 14): objects are copied, and the crawl says so.
    assert "2 file(s) copied into the lake: s3:// objects are copied until" in out
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
