"""An ingest never aborts on input, and never ingests an input twice after a catalog error.

Any bytes, lines over the chunk size, inputs that cannot be read (the others are committed), inputs
whose reading fails part-way (resumed after their stored lines), and a pending run whose commit
cannot be checked (kept pending, settled later without duplicates).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zstandard

from loglake.config import load_config
from loglake.errors import LakeError
from loglake.ingest import run_committed
from loglake.lake.catalog import open_catalog
from loglake.lake.ledger import Ledger

RunCli = Any  # the run_cli fixture from conftest.py

OK = b'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"\n'


def query_json(run_cli: RunCli, sql: str) -> list[dict[str, Any]]:
    out = run_cli("query", "--format", "json", sql).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def counts(stdout: str) -> tuple[int, int, int]:
    m = re.search(r"read ([\d,]+) lines = parsed ([\d,]+) \+ rejected ([\d,]+)", stdout)
    assert m, stdout
    read, parsed, rejected = (int(g.replace(",", "")) for g in m.groups())
    return read, parsed, rejected


def _ledger_states(home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "state" / "ledger.db") as db:
        return db.execute("SELECT name, state FROM inputs ORDER BY name").fetchall()


def test_unit_separator_next_to_invalid_utf8_does_not_lose_the_good_files(
    run_cli: RunCli, shared_data: Path, tmp_path: Path
) -> None:
    # Finding 7: this line aborted the run with ArrowInvalid and 0 of the 20,000 lines were stored.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.log", "b.log"):
        shutil.copy(shared_data / "apache_combined_10k.log", folder / name)
    (folder / "c.log").write_bytes(b"a\x1fb\xff\n")
    proc = run_cli("ingest", str(folder))
    assert counts(proc.stdout) == (20_001, 20_000, 1)
    assert query_json(run_cli, "SELECT count(*) AS n FROM logs.access") == [{"n": 20_000}]
    rows = query_json(run_cli, "SELECT hex(raw) AS h, text, line, source FROM logs.rejected")
    assert rows == [
        {"h": "611F62FF", "text": "a\x1fb\\xff", "line": 1, "source": str(folder / "c.log")}
    ]


def test_a_line_over_the_chunk_size_is_one_rejected_line(run_cli: RunCli, tmp_path: Path) -> None:
    # Finding 7: a line over ingest.chunk_bytes (8 MiB) aborted ("straddles two block boundaries").
    src = tmp_path / "huge.log"
    src.write_bytes(OK + b"y" * (9 << 20) + b"\r\n" + OK)
    out = run_cli("ingest", "--format", "combined", str(src)).stdout
    assert counts(out) == (3, 2, 1)
    rows = query_json(
        run_cli,
        "SELECT line, octet_length(raw) AS n, reason, replace(text, 'y', '') = '' AS ys "
        "FROM logs.rejected",
    )
    assert rows == [
        {"line": 2, "n": 9 << 20, "reason": "does not match the combined format", "ys": True}
    ]


@pytest.mark.slow
def test_unreadable_inputs_are_reported_and_the_others_committed(
    run_cli: RunCli, home: Path, shared_data: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_data / "apache_combined_10k.log", folder / "good.log")
    (folder / "broken.gz").write_bytes(b"\x1f\x8b" + b"not gzip at all " * 50)
    missing = tmp_path / "missing.log"
    proc = run_cli("ingest", "--format", "combined", str(folder), str(missing), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert counts(proc.stdout) == (10_000, 10_000, 0) and "2 failed" in proc.stdout
    errors = sorted(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {folder / 'broken.gz'}: cannot read input: ")
    assert errors[0].endswith("(nothing of it is stored)")
    assert errors[1] == f"error: {missing}: no such file, folder or glob match: {missing}"
    assert query_json(run_cli, "SELECT count(*) AS n FROM logs.access") == [{"n": 10_000}]
    assert _ledger_states(home) == [(str(folder / "good.log"), "done")]
    again = run_cli("ingest", "--format", "combined", str(folder), check=False)
    assert again.returncode == 1 and counts(again.stdout) == (0, 0, 0)
    assert "1 already ingested" in again.stdout and "1 failed" in again.stdout


@pytest.mark.slow
def test_an_input_that_fails_part_way_is_resumed_after_its_stored_lines(
    run_cli: RunCli, home: Path, shared_data: Path, tmp_path: Path
) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines(keepends=True)
    z = zstandard.ZstdCompressor()
    first, second = z.compress(b"".join(lines[:4000])), z.compress(b"".join(lines[4000:]))
    src = tmp_path / "access.log.zst"
    src.write_bytes(first + b"\x00\x00\x00\x00" + second[4:])  # frame 2's magic is damaged
    cfg = tmp_path / "small-chunks.toml"
    cfg.write_text("[ingest]\nchunk_bytes = 65536\n")  # frame 1 spans several chunks
    run = ("--config", str(cfg), "ingest", "--format", "combined", str(src))
    proc = run_cli(*run, check=False)
    assert proc.returncode == 1
    stored = counts(proc.stdout)[0]
    assert 3000 < stored <= 4000 and counts(proc.stdout) == (stored, stored, 0)
    assert (
        f"(lines 1 to {stored:,} are stored; the next ingest of it goes on after them)"
        in proc.stderr
    )
    # The same input (path, size, modification time) readable again, as after a lost connection.
    st = src.stat()
    src.write_bytes(first + second)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    proc = run_cli(*run)
    assert counts(proc.stdout) == (10_000 - stored,) * 2 + (0,) and "1 resumed" in proc.stdout
    rows = query_json(
        run_cli,
        "SELECT count(*) AS n, count(DISTINCT line) AS d, min(line) AS lo, max(line) AS hi "
        "FROM logs.access",
    )
    assert rows == [{"n": 10_000, "d": 10_000, "lo": 1, "hi": 10_000}]
    assert counts(run_cli(*run).stdout) == (0, 0, 0)


def _pending_after_commit(run_cli: RunCli, home: Path, src: Path) -> None:
    """Ingest ``src``, then put its ledger row back to pending: the state a crash between the
    commit and the ledger update leaves."""
    run_cli("ingest", "--format", "combined", str(src))
    with sqlite3.connect(home / "state" / "ledger.db") as db:
        db.execute("UPDATE inputs SET state = 'pending'")
    assert _ledger_states(home) == [(str(src), "pending")]


@pytest.mark.slow
def test_an_unreadable_table_during_the_commit_check_keeps_the_run_pending(
    run_cli: RunCli, home: Path, shared_data: Path, tmp_path: Path
) -> None:
    # Finding 13: any error while checking counted as "not committed"; the ledger dropped the
    # pending input and the next run ingested it twice.
    src = tmp_path / "a.log"
    shutil.copy(shared_data / "apache_combined_10k.log", src)
    _pending_after_commit(run_cli, home, src)
    with sqlite3.connect(home / "catalog.db") as db:
        (location,) = db.execute(
            "SELECT metadata_location FROM iceberg_tables WHERE table_name = 'access'"
        ).fetchone()
    metadata = Path(location.removeprefix("file://"))
    hidden = metadata.with_name("hidden.json")
    metadata.rename(hidden)  # the table's storage cannot be read for now
    proc = run_cli("ingest", "--format", "combined", str(src), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot check whether the interrupted ingest run" in proc.stderr
    assert "stay pending" in proc.stderr
    assert _ledger_states(home) == [(str(src), "pending")]
    hidden.rename(metadata)
    again = run_cli("ingest", "--format", "combined", str(src)).stdout
    assert counts(again) == (0, 0, 0) and "1 already ingested" in again
    assert _ledger_states(home) == [(str(src), "done")]
    assert query_json(run_cli, "SELECT count(*) AS n FROM logs.access") == [{"n": 10_000}]


_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # held until the test closes stdin
db.execute("ROLLBACK")
"""


@pytest.mark.slow
def test_a_catalog_locked_by_another_process_keeps_the_run_pending(
    run_cli: RunCli, home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "a.log"
    src.write_bytes(OK * 10)
    _pending_after_commit(run_cli, home, src)
    config = load_config(home=home, environ={})
    catalog = open_catalog(config)
    ledger = Ledger(config.state_dir / "ledger.db")
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCK, str(home / "catalog.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        with pytest.raises(LakeError, match="stay pending in the ledger"):
            ledger.settle(lambda t, rid: run_committed(catalog, t, rid))
        assert ledger.has_pending()
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        locker.wait(timeout=60)
    ledger.settle(lambda t, rid: run_committed(catalog, t, rid))
    ledger.close()
    assert _ledger_states(home) == [(str(src), "done")]
    out = run_cli("ingest", "--format", "combined", str(src)).stdout
    assert counts(out) == (0, 0, 0)
    assert query_json(run_cli, "SELECT count(*) AS n FROM logs.access") == [{"n": 10}]
