"""A lake whose warehouse is on S3 (the local S3-compatible server): ingest writes data and
metadata there, and ``loglake query`` and the Python API read it, giving the same answers as the
same logs in a local lake."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import loglake
from serving import Server, free_port, request

QUERIES = [
    "SELECT status, count(*) AS n FROM logs.access GROUP BY 1 ORDER BY 1",
    # Time-pruned: only the files of one day, and the rows of one hour in them.
    "SELECT count(*) AS n, sum(bytes) AS b FROM logs.access "
    "WHERE ts >= TIMESTAMP '2015-05-18 10:00:00' AND ts < TIMESTAMP '2015-05-18 11:00:00'",
    "SELECT path, count(*) AS n FROM logs.access GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
    "SELECT ua_browser, is_bot, count(DISTINCT client) AS ips FROM logs.access GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT count(*) AS n, min(reason) AS r FROM logs.rejected",
]


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


@pytest.mark.slow  # about 50 s: four ingests and a compaction over the S3 test server
def test_s3_warehouse_reads_as_local(
    tmp_path: Path, s3_env: dict[str, str], s3_client: Any, s3_bucket: str, shared_data: Path
) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_text().splitlines(keepends=True)
    log = tmp_path / "access.log"
    log.write_text("".join(lines[:4000]) + "not a log line\n")
    remote, local = tmp_path / "remote", tmp_path / "local"
    remote.mkdir()
    (remote / "loglake.toml").write_text(f'[catalog]\nwarehouse = "s3://{s3_bucket}/lake"\n')
    for home in (remote, local):
        out = _loglake(home, s3_env, "ingest", "--no-progress", str(log))
        assert "parsed 4,000 + rejected 1" in out, out
    # Data and metadata went to the bucket, nothing to a local folder.
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="lake/logs/access/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith(".parquet") for k in keys), keys
    assert any(k.endswith(".metadata.json") for k in keys), keys
    assert not list(remote.rglob("*.parquet"))

    # The Python API (its query worker) and the CLI (in-process sandbox) both read S3.
    with loglake.connect(str(remote)) as on_s3, loglake.connect(str(local)) as on_disk:
        for sql in QUERIES:
            want = on_disk.sql(sql).fetchall()
            assert want, sql
            assert on_s3.sql(sql).fetchall() == want, sql
        expected = on_disk.sql(QUERIES[1]).fetchall()
    assert expected[0][0] > 0  # the hour holds rows: the pruned query is not vacuous
    out = _loglake(remote, s3_env, "query", "--format", "json", QUERIES[1])
    assert [tuple(r.values()) for r in map(json.loads, out.splitlines())] == expected

    # Maintenance compacts the files on S3 (read through the table's FileIO) without changing
    # an answer.
    for home in (remote, local):
        _loglake(home, s3_env, "ingest", "--no-progress", "--force", str(log))
    done = _loglake(remote, s3_env, "maintain", "logs.access")
    merged = re.search(r"merge (\d+) files into (\d+)", done)
    assert merged and int(merged[1]) > int(merged[2]), done
    with loglake.connect(str(remote)) as on_s3, loglake.connect(str(local)) as on_disk:
        for sql in QUERIES:
            assert on_s3.sql(sql).fetchall() == on_disk.sql(sql).fetchall(), sql
        want = on_disk.sql(QUERIES[0]).fetchall()

    # The console's SQL API of a server on the S3 lake answers the same.
    srv = Server(remote, free_port())
    srv.start()
    try:
        status, reply, _ = request(
            "POST", f"{srv.url}/v1/sql", json.dumps({"sql": QUERIES[0]}).encode()
        )
        assert status == 200, reply
        assert [list(r) for r in want] == [list(r) for r in zip(*reply["data"], strict=True)]
    finally:
        srv.stop()
