"""End-to-end batch ingest through the real CLI: files, folders, globs, stdin, compression, ledger."""

from __future__ import annotations

import bz2
import gzip
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

RunCli = Any  # the run_cli fixture from conftest.py


def query_json(run_cli: RunCli, sql: str) -> list[dict[str, object]]:
    out = run_cli("query", "--format", "json", sql).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _naive(ts: datetime) -> str:
    """How the lake shows a time: UTC wall time without a zone."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat()


def counts(stdout: str) -> tuple[int, int, int]:
    m = re.search(r"read ([\d,]+) lines = parsed ([\d,]+) \+ rejected ([\d,]+)", stdout)
    assert m, stdout
    return tuple(int(g.replace(",", "")) for g in m.groups())  # type: ignore[return-value]


@pytest.mark.slow
def test_sample_ingest_matches_file(run_cli: RunCli, shared_data: Path) -> None:
    src = shared_data / "apache_combined_10k.log"
    out = run_cli("ingest", str(src)).stdout
    assert counts(out) == (10_000, 10_000, 0)
    rows = query_json(
        run_cli,
        "SELECT count(*) AS n, sum(bytes) AS b, count(bytes) AS nb, "
        "min(ts) AS first, max(ts) AS last, count(DISTINCT line) AS lines "
        "FROM logs.access",
    )
    text = src.read_text()
    total = sum(int(p) for p in re.findall(r'" \d{3} (\d+) "', text))
    stamps = [
        datetime.strptime(t, "%d/%b/%Y:%H:%M:%S %z") for t in re.findall(r"\[([^]]+)\]", text)
    ]
    assert rows == [
        {
            "n": 10_000,
            "b": total,
            "nb": 10_000 - 669,
            "first": _naive(min(stamps)),
            "last": _naive(max(stamps)),
            "lines": 10_000,
        }
    ]
    status = query_json(
        run_cli, "SELECT status, count(*) AS n FROM logs.access GROUP BY 1 ORDER BY 1"
    )
    expected: dict[int, int] = {}
    for s in re.findall(r'" (\d{3}) (?:\d+|-) "', src.read_text()):
        expected[int(s)] = expected.get(int(s), 0) + 1
    assert {r["status"]: r["n"] for r in status} == expected
    enriched = query_json(
        run_cli,
        "SELECT count(*) FILTER (WHERE is_bot) AS bots, "
        "count(DISTINCT ua_browser) AS browsers, any_value(source) AS source "
        "FROM logs.access",
    )[0]
    assert 0 < enriched["bots"] < 10_000 and enriched["browsers"] > 5  # type: ignore[operator]
    assert enriched["source"] == str(src)


@pytest.mark.slow
def test_same_file_twice_is_a_noop_unless_forced(
    run_cli: RunCli, shared_data: Path, tmp_path: Path
) -> None:
    src = tmp_path / "a.log"
    shutil.copy(shared_data / "apache_combined_10k.log", src)
    run_cli("ingest", str(src))
    again = run_cli("ingest", str(src)).stdout
    assert counts(again) == (0, 0, 0) and "1 already ingested" in again
    run_cli("ingest", "--force", str(src))
    assert query_json(run_cli, "SELECT count(*) AS n FROM logs.access") == [{"n": 20_000}]
    with src.open("a") as fh:  # changed content (size, mtime): ingested again
        fh.write('1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"\n')
    assert counts(run_cli("ingest", str(src)).stdout) == (10_001, 10_001, 0)


@pytest.mark.slow
def test_compressed_folder_glob_and_stdin(
    run_cli: RunCli, shared_data: Path, tmp_path: Path
) -> None:
    raw = (shared_data / "apache_combined_10k.log").read_bytes()
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    (folder / "a.log.gz").write_bytes(gzip.compress(raw))
    (folder / "b.log.bz2").write_bytes(bz2.compress(raw))
    (folder / "c.log.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    out = run_cli("ingest", str(tmp_path / "in")).stdout
    assert counts(out) == (30_000, 30_000, 0)
    by_source = query_json(
        run_cli, "SELECT source, count(*) AS n FROM logs.access GROUP BY 1 ORDER BY 1"
    )
    assert [r["n"] for r in by_source] == [10_000] * 3
    assert counts(run_cli("ingest", str(tmp_path / "in" / "**" / "*.gz")).stdout) == (0, 0, 0)
    out = run_cli("ingest", "--format", "combined", "-", input=raw[:5000]).stdout
    n = raw[:5000].count(b"\n") + (0 if raw[:5000].endswith(b"\n") else 1)
    assert counts(out)[0] == n


def test_rejected_lines_are_kept_raw(run_cli: RunCli, shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "mixed.log"
    good = (shared_data / "access_bad_lines.log").read_bytes()
    src.write_bytes(good + b"\xff\xfe garbage \x00 line\n\n")
    out = run_cli("ingest", "--format", "combined", str(src)).stdout
    assert counts(out) == (5, 2, 3)
    rows = query_json(
        run_cli,
        "SELECT line, reason, raw, format, target_table, source FROM logs.rejected ORDER BY line",
    )
    assert [r["line"] for r in rows] == [2, 4, 5]
    assert [r["reason"] for r in rows] == ["does not match the combined format"] * 2 + [
        "empty line"
    ]
    assert rows[0]["target_table"] == "logs.access" and rows[0]["source"] == str(src)
    raw = run_cli(
        "query", "--format", "csv", "SELECT hex(raw) AS h FROM logs.rejected WHERE line = 4"
    ).stdout.splitlines()
    assert bytes.fromhex(raw[1]) == b"\xff\xfe garbage \x00 line"


def test_unrecognized_format_goes_to_rejected(run_cli: RunCli, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("hello\nworld\n")
    proc = run_cli("ingest", str(src))
    assert counts(proc.stdout) == (2, 0, 2) and "format not recognized" in proc.stderr
    rows = query_json(run_cli, "SELECT reason FROM logs.rejected")
    assert {r["reason"] for r in rows} == {"format not recognized; pass --format"}


def test_table_option_and_tables_listing(run_cli: RunCli, shared_data: Path) -> None:
    run_cli("ingest", "--table", "web.site", str(shared_data / "apache_combined_10k.log"))
    listing = run_cli("tables").stdout
    assert "web.site" in listing and "10,000" in listing
    assert query_json(run_cli, "SELECT count(*) AS n FROM web.site") == [{"n": 10_000}]


def test_user_errors_exit_nonzero_with_a_hint(run_cli: RunCli, tmp_path: Path) -> None:
    proc = run_cli("ingest", str(tmp_path / "missing.log"), check=False)
    assert proc.returncode != 0 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("ingest", "--format", "bogus", str(tmp_path), check=False)
    assert proc.returncode == 2 and "unknown format 'bogus'" in proc.stderr
    proc = run_cli("ingest", "--table", "nodots", "x", check=False)
    assert proc.returncode == 2 and "NAMESPACE.NAME" in proc.stderr


def test_same_input_twice_in_one_run_counts_once(run_cli: RunCli, shared_data: Path) -> None:
    src = str(shared_data / "access_bad_lines.log")
    out = run_cli("ingest", "--format", "combined", src, src).stdout
    assert counts(out) == (3, 2, 1) and "1 already ingested" in out


def test_new_columns_extend_the_table(run_cli: RunCli, tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    a.write_text('1.2.3.4 - - [01/Jan/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 1 "-" "x"\n')
    b = tmp_path / "b.log"
    b.write_text(
        'shop.example:443 1.2.3.4 - - [01/Jan/2024:11:00:00 +0000] "GET /b HTTP/1.1" 200 2 "-" "y"\n'
    )
    run_cli("ingest", "--format", "combined", str(a))
    run_cli("ingest", "--format", "vhost_combined", str(b))
    rows = query_json(run_cli, "SELECT path, vhost, port FROM logs.access ORDER BY path")
    assert rows == [
        {"path": "/a", "vhost": None, "port": None},
        {"path": "/b", "vhost": "shop.example", "port": 443},
    ]


def test_empty_input_and_an_endless_line(run_cli: RunCli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert counts(run_cli("ingest", "--format", "combined", str(empty)).stdout) == (0, 0, 0)
    long = tmp_path / "long.log"
    ok = b'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"\n'
    long.write_bytes(ok + b"x" * (5 << 20) + b"\n" + ok)
    cfg = tmp_path / "small-chunks.toml"
    cfg.write_text("[ingest]\nchunk_bytes = 1048576\n")  # lines over 4 MiB get cut
    out = run_cli("--config", str(cfg), "ingest", "--format", "combined", str(long)).stdout
    assert counts(out) == (3, 2, 1) and "logs.rejected: +2 rows" in out
    pieces = query_json(
        run_cli,
        "SELECT line, octet_length(raw) AS n, reason, replace(text, 'x', '') = '' AS xs "
        "FROM logs.rejected ORDER BY n DESC",
    )
    assert pieces == [  # every byte of the endless line is kept, in two pieces of line 2
        {
            "line": 2,
            "n": 4 << 20,
            "reason": "line longer than 4,194,304 bytes, kept in pieces: piece 1 from byte 0",
            "xs": True,
        },
        {
            "line": 2,
            "n": 1 << 20,
            "reason": "line longer than 4,194,304 bytes, kept in pieces: piece 2 from byte "
            "4,194,304 (the last)",
            "xs": True,
        },
    ]
    assert query_json(run_cli, "SELECT line FROM logs.access ORDER BY line") == [
        {"line": 1},
        {"line": 3},
    ]


@pytest.mark.slow
def test_killed_ingest_loses_and_duplicates_nothing(
    run_cli: RunCli, home: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    lines = 200_000
    # Small data files, so that the run writes several before it could commit.
    (home / "loglake.toml").write_text("[ingest]\nflush_rows = 20000\n")
    src = tmp_path / "big.log"
    run_cli("generate", "--lines", str(lines), "--rate", "20", "--output", str(src))
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    env.pop("LOGLAKE_CONFIG", None)
    # The file, then standard input, which this test keeps open: a run commits once all of its
    # inputs are read, so it cannot have committed when it is killed, however fast the machine.
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglake.cli", "ingest", "--format", "combined", str(src), "-"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Kill it mid-run: once it has written data files (not committed: no snapshot has them).
        deadline = time.monotonic() + 300
        while len(list((home / "warehouse").rglob("*.parquet"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the ingest wrote no data file in 300 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    out = run_cli("ingest", "--format", "combined", str(src)).stdout
    # The first run never committed: all of it is read again.
    assert counts(out) == (lines, lines, 0)
    rows = query_json(run_cli, "SELECT count(*) AS n, count(DISTINCT line) AS d FROM logs.access")
    assert rows == [{"n": lines, "d": lines}]
