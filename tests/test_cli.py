"""The CLI contract: generate, demo, tables, progress, config; and other engines reading the lake."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from pyiceberg.catalog import load_catalog

RunCli = Any  # the run_cli fixture from conftest.py


def test_generate_writes_parseable_combined_logs(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "gen.log"
    run_cli(
        "generate",
        "--lines",
        "2000",
        "--rate",
        "10",
        "--start",
        "2026-03-01T00:00:00Z",
        "--output",
        str(out),
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 2000
    first = re.search(r"\[([^]]+)\]", lines[0]).group(1)  # type: ignore[union-attr]
    assert datetime.strptime(first, "%d/%b/%Y:%H:%M:%S %z") >= datetime(2026, 3, 1, tzinfo=UTC)
    stdout = run_cli("generate", "--lines", "5", "--seed", "3").stdout
    assert len(stdout.splitlines()) == 5
    ingested = run_cli("ingest", str(out)).stdout
    assert "read 2,000 lines = parsed 2,000 + rejected 0" in ingested


def test_demo_reports(run_cli: RunCli) -> None:
    out = run_cli("demo", "--lines", "20000").stdout
    assert "read 20,000 lines = parsed 20,000 + rejected 0" in out
    for title in ("Requests per hour", "Status mix", "Top paths", "Bots vs people"):
        assert title in out
    hours = re.findall(r"│ (\d{4}-\d{2}-\d{2} \d{2}):00 │ +(\d+)", out)
    # A day of traffic; the last few requests may spill into the next day's first hour.
    assert 24 <= len(hours) <= 25 and sum(int(n) for _, n in hours) == 20_000


def test_progress_bar_on_request(run_cli: RunCli, shared_data: Path) -> None:
    proc = run_cli("ingest", "--progress", str(shared_data / "apache_combined_10k.log"))
    assert "parsed 10,000" in proc.stdout and "lines/s" in proc.stderr


def test_catalog_elsewhere_and_other_engines_read_the_tables(
    run_cli: RunCli, shared_data: Path, tmp_path: Path
) -> None:
    catalog_db = tmp_path / "shared-catalog.db"
    warehouse = tmp_path / "wh"
    warehouse.mkdir()
    cfg = tmp_path / "loglake.toml"
    cfg.write_text(
        f'[catalog]\nname = "team"\nuri = "sqlite:///{catalog_db}"\nwarehouse = "{warehouse.as_uri()}"\n'
    )
    run_cli("--config", str(cfg), "ingest", str(shared_data / "apache_combined_10k.log"))
    # pyiceberg, knowing nothing of loglake, opens the same catalog and reads the table.
    catalog = load_catalog(
        "team", type="sql", uri=f"sqlite:///{catalog_db}", warehouse=warehouse.as_uri()
    )
    table = catalog.load_table("logs.access")
    arrow = table.scan(selected_fields=("status", "bytes")).to_arrow()
    assert arrow.num_rows == 10_000
    assert str(table.spec().fields[0].transform) == "hour"
    assert table.properties["write.parquet.compression-codec"] == "zstd"
    # DuckDB reads the Parquet files directly.
    files = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet({files})").fetchall() == [(10_000,)]
    listing = run_cli("--config", str(cfg), "tables").stdout
    assert "logs.access" in listing and "10,000" in listing


def test_serve_refuses_addresses_beyond_loopback_without_credentials(
    run_cli: RunCli, home: Path
) -> None:
    """The rule lives where the server starts: every address but loopback needs a credential."""
    for host in ("0.0.0.0", "", "::", "10.1.2.3", "my-host.example"):
        proc = run_cli("serve", "--host", host, "--port", "0", check=False)
        assert proc.returncode == 2, (host, proc.stderr)
        assert "loopback only" in proc.stderr and "[auth] api_keys" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_home_and_config_are_accepted_after_every_subcommand(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`loglake serve --config FILE` (as the streaming docs write it) was refused: No such option."""
    import loglake.cli

    missing = str(tmp_path / "missing.toml")
    args = {
        "ingest": [str(tmp_path)],
        "crawl": [str(tmp_path)],
        "query": ["SELECT 1"],
        "job": ["list"],
    }
    for name in sorted(loglake.cli.cli.commands):
        if name == "generate":
            continue  # reads no config
        out = run_cli(name, *args.get(name, []), "--config", missing, check=False)
        assert out.returncode == 2 and "does not exist" in out.stderr, (name, out.stderr)
    conf = tmp_path / "limits.toml"
    conf.write_text("[query]\nmax_rows = 1\n")
    lake = tmp_path / "other-home"
    out = run_cli("query", "--home", str(lake), "--config", str(conf), "SELECT * FROM range(5)")
    assert out.stdout.count("\n") < 8 and "query.max_rows = 1" in out.stderr
