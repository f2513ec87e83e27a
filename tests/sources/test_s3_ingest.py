"""``loglake ingest s3://...`` end to end against a real local S3-compatible server (moto)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def _loglake(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "LOGLAKE_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "loglake.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_ingest_from_s3_prefix_then_noop(
    tmp_path: Path, s3_env: dict[str, str], s3_client: Any, s3_bucket: str, shared_data: Path
) -> None:
    raw = (shared_data / "apache_combined_10k.log").read_bytes()
    s3_client.put_object(Bucket=s3_bucket, Key="web/2015/05/a.log", Body=raw)
    s3_client.put_object(Bucket=s3_bucket, Key="web/2015/05/b.log.gz", Body=gzip.compress(raw))
    s3_client.put_object(Bucket=s3_bucket, Key="other/c.log", Body=raw)
    home = tmp_path / "lake"
    out = _loglake(home, s3_env, "ingest", f"s3://{s3_bucket}/web/").stdout
    assert "read 20,000 lines = parsed 20,000 + rejected 0 from 2 input(s)" in out
    rows = _loglake(
        home,
        s3_env,
        "query",
        "--format",
        "json",
        "SELECT source, count(*) AS n, sum(bytes) AS b FROM logs.access GROUP BY 1 ORDER BY 1",
    ).stdout.splitlines()
    got = [json.loads(r) for r in rows]
    assert [g["source"] for g in got] == [
        f"s3://{s3_bucket}/web/2015/05/a.log",
        f"s3://{s3_bucket}/web/2015/05/b.log.gz",
    ]
    assert got[0]["n"] == got[1]["n"] == 10_000 and got[0]["b"] == got[1]["b"] > 0
    again = _loglake(home, s3_env, "ingest", f"s3://{s3_bucket}/web/").stdout
    assert "read 0 lines" in again and "2 already ingested" in again
