"""Syslog and JSON lines end to end: auto-detected, ingested, queried by their table names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RunCli = Any  # the run_cli fixture from conftest.py


def query_json(run_cli: RunCli, sql: str) -> list[dict[str, Any]]:
    out = run_cli("query", "--format", "json", sql).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_syslog_sample_auto_detected(run_cli: RunCli, shared_data: Path) -> None:
    src = shared_data / "syslog_linux_2k.log"
    out = run_cli("ingest", str(src)).stdout
    assert "read 2,000 lines = parsed 2,000 + rejected 0" in out and "logs.syslog: +2,000" in out
    first = query_json(run_cli, "SELECT host, app, pid, message FROM logs.syslog WHERE line = 1")[0]
    line1 = src.read_text().splitlines()[0]
    assert first["host"] == "combo" and first["app"] == "sshd(pam_unix)" and first["pid"] == 19939
    assert line1.endswith(first["message"])
    apps = query_json(
        run_cli,
        "SELECT count(DISTINCT app) AS n, count(*) FILTER (WHERE pid IS NULL) "
        "AS nopid FROM logs.syslog",
    )[0]
    expected_nopid = sum(
        1
        for ln in src.read_text().splitlines()
        if not re.match(r"^\w{3} [ \d]\d \S+ \S+ \S+?\[\d+\]:", ln)
    )
    assert apps["nopid"] == expected_nopid and apps["n"] > 5


def test_json_sample_nested_fields_queryable(
    run_cli: RunCli, shared_data: Path, tmp_path: Path
) -> None:
    src = shared_data / "gharchive_50.jsonl"
    home_cfg = tmp_path / "cfg.toml"
    home_cfg.write_text('[ingest]\njson_ts_field = "created_at"\n')
    out = run_cli("--config", str(home_cfg), "ingest", str(src)).stdout
    assert "read 50 lines = parsed 50 + rejected 0" in out
    first = json.loads(src.read_text().splitlines()[0])
    row = query_json(
        run_cli, "SELECT actor.login AS login, type, ts, ts_missing FROM logs.json WHERE line = 1"
    )[0]
    assert row["login"] == first["actor"]["login"] and row["type"] == first["type"]
    assert row["ts"] + "Z" == first["created_at"] and row["ts_missing"] is False
    assert query_json(run_cli, 'SELECT count(*) AS n FROM "logs"."json"') == [{"n": 50}]
