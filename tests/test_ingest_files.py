"""Batch ingest writes few files and starts light: one data file per time partition per run however
often its buffer fills, the same rows as a run that never flushes early, and no pandas imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import loglake

RunCli = Any  # the run_cli fixture from conftest.py

_LINES = 100_000


def _files_per_partition(home: Path, table: str) -> Counter[str]:
    """How many data files the table's current snapshot has per partition (read by pyiceberg)."""
    from loglake.config import load_config
    from loglake.lake.catalog import open_catalog

    catalog = open_catalog(load_config(home=str(home)))
    files = catalog.load_table(table).inspect.files().to_pylist()
    return Counter(json.dumps(f["partition"], default=str, sort_keys=True) for f in files)


def _rows(home: Path) -> list[tuple[object, ...]]:
    """Every stored row of logs.access but the ingest time, in a stable order."""
    con = loglake.connect(str(home))
    columns = [
        name
        for (name,) in con.sql(
            "SELECT column_name FROM (DESCRIBE logs.access) WHERE column_name <> 'ingested_at'"
        ).fetchall()
    ]
    listed = ", ".join(f'"{c}"' for c in columns)
    return con.sql(f"SELECT {listed} FROM logs.access ORDER BY line").fetchall()


def _ingest(home: Path, src: Path, flush_rows: int) -> str:
    (home / "loglake.toml").write_text(f"[ingest]\nflush_rows = {flush_rows}\n")
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    env.pop("LOGLAKE_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "ingest", "--no-progress", str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_one_file_per_partition_per_run(run_cli: RunCli, tmp_path: Path) -> None:
    src = tmp_path / "access.log"
    # 5 lines/s: 100,000 lines span about 5.6 hours, i.e. 6 or 7 hour partitions of logs.access.
    run_cli("generate", "--lines", str(_LINES), "--rate", "5", "--output", str(src))
    flushed, whole = tmp_path / "flushed", tmp_path / "whole"
    flushed.mkdir()
    whole.mkdir()
    # The buffer fills 10 times in the first lake, never before the end in the second.
    assert f"parsed {_LINES:,}" in _ingest(flushed, src, flush_rows=10_000)
    assert f"parsed {_LINES:,}" in _ingest(whole, src, flush_rows=10_000_000)

    per_partition = _files_per_partition(flushed, "logs.access")
    assert len(per_partition) >= 5, per_partition
    assert set(per_partition.values()) == {1}, per_partition
    assert per_partition == _files_per_partition(whole, "logs.access")
    rows = _rows(flushed)
    assert len(rows) == _LINES
    assert rows == _rows(whole)

    # A second run (forced: same input) adds one more file per partition, no more.
    more = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "ingest", "--no-progress", "--force", str(src)],
        env={**os.environ, "LOGLAKE_HOME": str(flushed)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert more.returncode == 0, more.stderr
    after = _files_per_partition(flushed, "logs.access")
    assert after == Counter({k: 2 for k in per_partition}), after


_NO_PANDAS = """
import json, sys
from loglake.cli import cli
before = sorted(m for m in sys.modules if m.split(".")[0] == "pandas")
try:
    cli.main(["ingest", "--no-progress", sys.argv[1]], standalone_mode=False)
finally:
    after = sorted(m for m in sys.modules if m.split(".")[0] == "pandas")
    print(json.dumps({"before": before, "after": after}))
"""


def test_cli_ingest_does_not_import_pandas(shared_data: Path, home: Path, tmp_path: Path) -> None:
    import importlib.util

    assert importlib.util.find_spec("pandas") is not None, "pandas must be installed to test this"
    src = tmp_path / "three.log"
    lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines(keepends=True)
    src.write_bytes(b"".join(lines[:3]))
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    env.pop("LOGLAKE_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", _NO_PANDAS, str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert modules == {"before": [], "after": []}
    rows = loglake.connect(str(home)).sql("SELECT count(*) FROM logs.access").fetchall()
    assert rows == [(3,)]
