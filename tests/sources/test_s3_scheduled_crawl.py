"""A scheduled crawl of an ``s3://`` prefix inside a real ``loglake serve``, against a real local
S3-compatible server (moto): objects uploaded after the server started reach the table at the next
run, each once."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from serving import Server
from waiting import wait_for


def _lines(first: int, n: int) -> bytes:
    line = (
        '198.51.100.{i} - - [22/Jan/2024:10:00:{s:02d} +0000] "GET /{i} HTTP/1.1" 200 {i} "-" "x"\n'
    )
    return "".join(line.format(i=i, s=i % 60) for i in range(first, first + n)).encode()


def _count(server: Server) -> int:
    try:
        return int(server.query("SELECT count(*) AS n FROM crawled.web")[0]["n"])
    except Exception:  # the table is not there yet
        return 0


@pytest.mark.slow
def test_serve_crawls_new_objects_of_an_s3_prefix(
    tmp_path: Path, s3_env: dict[str, str], s3_client: Any, s3_bucket: str
) -> None:
    config = (
        f'[crawls.bucket]\npaths = ["s3://{s3_bucket}/web/"]\ntable = "crawled.web"\n'
        'schedule = "every 1s"\n'
    )
    server = Server.started(tmp_path / "home", config)  # its environment has s3_env's
    try:
        s3_client.put_object(Bucket=s3_bucket, Key="web/a.log.gz", Body=gzip.compress(_lines(1, 5)))
        wait_for(lambda: _count(server) >= 5, "the first object's rows")
        s3_client.put_object(Bucket=s3_bucket, Key="web/b.log", Body=_lines(6, 3))
        wait_for(lambda: _count(server) >= 8, "the second object's rows")
        runs = _runs(server)
        wait_for(lambda: _runs(server) >= runs + 2, "two more crawl runs")
        assert server.query(
            "SELECT count(*) AS n, count(DISTINCT client) AS clients, sum(bytes) AS bytes "
            "FROM crawled.web"
        ) == [{"n": 8, "clients": 8, "bytes": sum(range(1, 9))}]
    finally:
        server.stop()


def _runs(server: Server) -> int:
    from loglake.config import load_config
    from loglake.crawl_schedule import crawl_history

    history = crawl_history(load_config(home=server.home, environ={}))
    try:
        return len(history.runs("bucket", 1000))
    finally:
        history.close()
