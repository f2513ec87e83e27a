"""Scheduled crawls inside a real ``loglake serve``: files dropped into a crawled folder after the
server started reach the table at the next run, each exactly once; a crawl that fails is logged,
counted and recorded, and the server goes on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import loglake
from loglake.config import load_config
from loglake.crawl_schedule import crawl_history
from loglake.errors import ConfigError
from serving import Server, request
from waiting import wait_for


def _metrics(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _count(server: Server, table: str) -> int:
    try:
        return int(server.query(f"SELECT count(*) AS n FROM {table}")[0]["n"])
    except Exception:  # the table is not there yet
        return 0


def _drop(folder: Path, name: str, lines: list[str]) -> None:
    """Write a file the way a shipper should: under a dot name (crawls ignore those), then
    renamed into place, so a crawl never reads half of it."""
    tmp = folder / f".{name}.part"
    tmp.write_text("".join(lines))
    os.replace(tmp, folder / name)


def _bytes(line: str) -> int:
    """The response size of a combined log line (``-`` for none)."""
    size = line.split('" ', 2)[1].split()[1]
    return 0 if size == "-" else int(size)


def _runs(home: Path, crawl: str) -> list[str]:
    history = crawl_history(load_config(home=home, environ={}))
    try:
        return [r.status for r in history.runs(crawl, 1000)]
    finally:
        history.close()


@pytest.mark.slow
def test_serve_crawls_new_files_on_schedule_exactly_once(tmp_path: Path, shared_data: Path) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_text().splitlines(keepends=True)
    landing = tmp_path / "landing" / "web"
    landing.mkdir(parents=True)
    (landing / "odd.bin").write_bytes(b"\x00\xff" * 500)  # no format fits: left out each run
    # Two include paths with one folder name would become one table: every run is refused.
    for side in ("a", "b"):
        (tmp_path / side / "logs").mkdir(parents=True)
        (tmp_path / side / "logs" / "x.log").write_text("".join(lines[:3]))
    config = (
        f'[crawls.landing]\npaths = ["{landing}"]\ntable = "crawled.web"\nschedule = "every 1s"\n'
        f'\n[crawls.broken]\npaths = ["{tmp_path / "a" / "logs"}", "{tmp_path / "b" / "logs"}"]\n'
        'schedule = "every 1s"\n'
    )
    home = tmp_path / "home"
    server = Server.started(home, config)
    try:
        _drop(landing, "access-1.log", lines[:120])
        wait_for(lambda: _count(server, "crawled.web") >= 120, "the first dropped file's rows")
        assert _count(server, "crawled.web") == 120

        _drop(landing, "access-2.log", lines[120:200])
        wait_for(lambda: _count(server, "crawled.web") >= 200, "the second dropped file's rows")
        # Later runs find nothing new: the two files stay registered once.
        done = len(_runs(home, "landing"))
        wait_for(lambda: len(_runs(home, "landing")) >= done + 3, "three more crawl runs")
        assert server.query(
            "SELECT count(*) AS n, count(DISTINCT source || ':' || line) AS distinct_lines, "
            "sum(bytes) AS bytes FROM crawled.web"
        ) == [
            {
                "n": 200,
                "distinct_lines": 200,
                "bytes": sum(_bytes(x) for x in lines[:200]),
            }
        ]

        assert set(_runs(home, "landing")) - {"running"} == {"ok"}  # one may be under way
        wait_for(lambda: _runs(home, "broken").count("failed") >= 2, "the broken crawl retried")
        assert request("GET", f"{server.url}/readyz")[0] == 200
        metrics = _metrics(server)
        assert metrics['loglake_crawl_files_total{crawl="landing"}'] == 2
        assert metrics['loglake_crawl_rows_total{crawl="landing"}'] == 200
        assert metrics['loglake_crawl_failures_total{crawl="landing"}'] == 0
        assert metrics['loglake_crawl_runs_total{crawl="landing"}'] >= 5
        assert metrics['loglake_crawl_failures_total{crawl="broken"}'] >= 2
        assert _count(server, "crawled.logs") == 0  # the refused crawl wrote nothing
        log = (home / "server.log").read_text()
        assert "crawl broken failed: include paths" in log
        assert "crawl landing: 1 new file(s), 1 left out (first: " in log
        assert log.count("crawl landing left out") == 1  # once per server run, not per run
        started = next(
            json.loads(x) for x in log.splitlines() if '"msg": "loglake serve started"' in x
        )
        assert started["crawls"]["landing"] == {
            "paths": [str(landing)],
            "table": "crawled.web",
            "schedule": "every 1s",
        }
    finally:
        server.stop()

    env = {**os.environ, "LOGLAKE_HOME": str(home), "COLUMNS": "250"}
    env.pop("LOGLAKE_CONFIG", None)
    listed = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "crawl", "--list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"landing .*crawled\.web .*every 1s", listed), listed
    assert re.search(r"broken .*failed .*include paths", listed), listed
    # The newest runs: the crawls that found nothing new since, the refused ones.
    assert re.search(r"landing +│ ok +│ 0 +│ .* 0 new file\(s\), 1 left out", listed), listed


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('schedule = "every 1h"', "crawls.c.paths is empty"),
        ('paths = ["/x"]', "crawls.c.schedule is missing"),
        ('paths = ["/x"]\nschedule = "weekly"', "crawls.c.schedule = 'weekly' is not a schedule"),
        ('paths = ["logs"]\nschedule = "every 1h"', "crawls.c.paths: 'logs' is relative"),
        (
            'paths = ["/x"]\nschedule = "every 1h"\ntable = "Logs"',
            "crawls.c.table = 'Logs'; write NAMESPACE.NAME",
        ),
        ('paths = ["/x"]\nschedule = "every 1h"\nevery = 1', "unknown key crawls.c.every"),
    ],
)
def test_scheduled_crawl_settings_are_checked_at_load(
    tmp_path: Path, settings: str, message: str
) -> None:
    (tmp_path / "loglake.toml").write_text(f"[crawls.c]\n{settings}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(home=tmp_path, environ={})


def test_scheduled_crawl_settings_load(tmp_path: Path) -> None:
    (tmp_path / "loglake.toml").write_text(
        '[crawls.c]\npaths = ["/data/in", "s3://b/p/"]\nschedule = "daily 02:00"\n'
    )
    crawl = load_config(home=tmp_path, environ={}).crawls["c"]
    assert crawl.paths == ("/data/in", "s3://b/p/")
    assert crawl.table == ""
    assert crawl.schedule_spec.daily == (2, 0)


def test_crawl_list_without_scheduled_crawls_says_how_to_declare_one(tmp_path: Path) -> None:
    env = {**os.environ, "LOGLAKE_HOME": str(tmp_path)}
    env.pop("LOGLAKE_CONFIG", None)
    listed = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "crawl", "--list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed == "no scheduled crawls; declare one as [crawls.NAME] in loglake.toml\n"
    refused = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "crawl"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert "give one or more PATHS to crawl, or --list" in refused.stderr


def test_a_scheduled_crawl_registers_parquet_in_place_or_copies_it_with_convert(
    tmp_path: Path,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from loglake.crawl_schedule import run_crawl

    for name in ("kept", "copied"):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"v": [1, 2, 3]}), tmp_path / name / "part-0.parquet")
    home = tmp_path / "home"
    home.mkdir()
    (home / "loglake.toml").write_text(
        f'[crawls.kept]\npaths = ["{tmp_path / "kept"}"]\nschedule = "every 1h"\n\n'
        f'[crawls.copied]\npaths = ["{tmp_path / "copied"}"]\nschedule = "every 1h"\n'
        "convert = true\n"
    )
    config = load_config(home=home, environ={})
    history = crawl_history(config)
    try:
        for name in ("kept", "copied"):
            assert run_crawl(config, name, history).files == 1
            assert run_crawl(config, name, history).files == 0  # nothing new the second time
    finally:
        history.close()
    from loglake.lake.catalog import open_catalog

    catalog = open_catalog(config)
    kept = [t.file.file_path for t in catalog.load_table("crawled.kept").scan().plan_files()]
    copied = [t.file.file_path for t in catalog.load_table("crawled.copied").scan().plan_files()]
    assert kept == [(tmp_path / "kept" / "part-0.parquet").as_uri()]  # the user's file itself
    assert len(copied) == 1 and str(home / "warehouse") in copied[0], copied
    con = loglake.connect(str(home))
    assert con.sql("SELECT sum(v) FROM crawled.kept").fetchall() == [(6,)]
    assert con.sql("SELECT sum(v) FROM crawled.copied").fetchall() == [(6,)]
