"""Batch ingest of JSON lines through the real CLI: type drift and key spellings never abort a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.test_ingest import counts, query_json

RunCli = Any  # the run_cli fixture from conftest.py


def event(i: int, **fields: Any) -> str:
    return json.dumps({"ts": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}Z", **fields})


def test_type_drift_in_a_later_chunk_rejects_only_those_records(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """`n` is a BIGINT column after the first chunk; a later chunk with text in `n` aborted the
    run (nothing stored) and left the table unqueryable ("Referenced column not found")."""
    run_cli("ingest", "--format", "json", _write(tmp_path / "first.jsonl", [event(0, n=0)]))
    good = [event(i, n=i, pad="x" * 200) for i in range(1, 1001)]  # about 4 chunks of 64 KiB
    drift = [event(i, n=f"id-{i}", m=i) for i in range(300)]
    after = [event(i, n=i, m=i) for i in range(300)]
    path = _write(tmp_path / "drift.jsonl", [*good, *drift, *after])
    cfg = tmp_path / "small-chunks.toml"
    cfg.write_text("[ingest]\nchunk_bytes = 65536\n")

    out = run_cli("--config", str(cfg), "ingest", "--format", "json", path).stdout
    assert counts(out) == (1600, 1300, 300)
    assert query_json(
        run_cli, 'SELECT count(*) AS n, count(m) AS m, sum(n)::BIGINT AS total FROM "logs"."json"'
    ) == [{"n": 1301, "m": 300, "total": sum(range(1001)) + sum(range(300))}]
    rejected = query_json(
        run_cli, "SELECT line, reason, text FROM logs.rejected ORDER BY line LIMIT 2"
    )
    assert rejected == [
        {
            "line": 1001,
            "reason": 'type drift: column "n" is BIGINT, this record has string "id-0"',
            "text": drift[0],
        },
        {
            "line": 1002,
            "reason": 'type drift: column "n" is BIGINT, this record has string "id-1"',
            "text": drift[1],
        },
    ]
    raw = query_json(run_cli, "SELECT count(*) AS n FROM logs.rejected WHERE raw = text::BLOB")
    assert raw == [{"n": 300}]


def test_keys_differing_only_in_case_are_one_column(run_cli: RunCli, tmp_path: Path) -> None:
    """`ip` and `IP` became two columns; DuckDB showed `ip` twice, both with the `ip` values."""
    lines = [
        event(0, ip="10.0.0.1"),
        event(1, IP="10.0.0.2"),
        event(2, Ip="10.0.0.3", ip="10.0.0.3"),
        event(3, IP="10.0.0.4", ip="10.0.0.5"),
    ]
    out = run_cli("ingest", "--format", "json", _write(tmp_path / "ip.jsonl", lines)).stdout
    assert counts(out) == (4, 3, 1)
    assert query_json(
        run_cli,
        'SELECT * EXCLUDE (ts, ts_missing, source, ingested_at) FROM "logs"."json" ORDER BY line',
    ) == [
        {"ip": "10.0.0.1", "line": 1},
        {"ip": "10.0.0.2", "line": 2},
        {"ip": "10.0.0.3", "line": 3},
    ]
    # A later ingest with the other spelling goes into the same column.
    run_cli("ingest", "--format", "json", _write(tmp_path / "IP.jsonl", [event(5, IP="10.0.0.6")]))
    assert query_json(run_cli, 'SELECT count(ip) AS n FROM "logs"."json"') == [{"n": 4}]
    assert query_json(run_cli, "SELECT reason FROM logs.rejected") == [
        {
            "reason": 'keys "ip" and "IP" differ only in case and hold different values '
            "(column names are case-insensitive)"
        }
    ]


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)
