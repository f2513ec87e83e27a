"""``logs.rejected`` exists once anything was ingested, empty after a clean run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def test_a_clean_ingest_leaves_an_empty_rejected_table(run_cli: Any, tmp_path: Path) -> None:
    log = tmp_path / "clean.log"
    log.write_text(
        '127.0.0.1 - - [10/Oct/2023:13:55:36 +0000] "GET / HTTP/1.1" 200 2326 "-" "curl/8"\n'
        '127.0.0.2 - - [10/Oct/2023:13:55:37 +0000] "GET /a HTTP/1.1" 404 12 "-" "curl/8"\n'
    )
    out = run_cli("ingest", str(log), "--format", "combined").stdout
    assert "rejected 0" in out
    # The README's tour asks the table what was rejected: "nothing", not "no such table".
    rows = run_cli(
        "query", "--format", "json", "SELECT count(*) AS n FROM logs.rejected"
    ).stdout.splitlines()
    assert [json.loads(r) for r in rows] == [{"n": 0}]
    columns = run_cli("query", "--format", "json", "SELECT * FROM logs.rejected LIMIT 0")
    assert columns.returncode == 0
    access = run_cli("query", "--format", "json", "SELECT count(*) AS n FROM logs.access")
    assert [json.loads(r) for r in access.stdout.splitlines()] == [{"n": 2}]
