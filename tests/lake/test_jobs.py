"""ETL jobs over a lake built with loglake.ingest: full and incremental runs, a run killed halfway
and retried, the history, and a scheduled job inside ``loglake serve``.

The jobs are the shipped examples of docs/catalog.md, read from the page itself.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tomllib
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loglake.analytics.jobs import JobBusyError, committed_watermark, run_job
from loglake.config import load_config
from loglake.errors import ConfigError, LakeError
from loglake.ingest import ingest
from loglake.lake.catalog import open_catalog
from loglake.query.engine import Connection
from serving import Server, request
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _examples() -> str:
    """The TOML block after ``<!-- jobs-examples -->`` in docs/catalog.md."""
    text = (ROOT / "docs" / "catalog.md").read_text()
    block = text.split("<!-- jobs-examples -->", 1)[1]
    match = re.search(r"```toml\n(.*?)```", block, re.S)
    assert match
    return match.group(1)


def _by_day(shared_data: Path, out: Path) -> dict[str, Path]:
    """The 10k-line sample split into one file per day (17 to 20 May 2015)."""
    days: dict[str, list[str]] = defaultdict(list)
    for line in (shared_data / "apache_combined_10k.log").read_text().splitlines(keepends=True):
        days[line.split("[", 1)[1][:2]].append(line)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for day, lines in days.items():
        files[day] = out / f"access-{day}.log"
        files[day].write_text("".join(lines))
    assert sorted(files) == ["17", "18", "19", "20"]
    return files


def _home(tmp_path: Path, name: str, config: str | None = None) -> Path:
    home = tmp_path / name
    home.mkdir()
    (home / "loglake.toml").write_text(config if config is not None else _examples())
    return home


def _ingest(home: Path, *files: Path) -> None:
    stats = ingest(load_config(home=home, environ={}), [str(f) for f in files], format="combined")
    assert stats.failed == [] or not stats.failed


def _sql(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with Connection(load_config(home=home, environ={})) as con:
        return con.sql(sql).fetchall()


def _cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    env.pop("LOGLAKE_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "loglake.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _history(home: Path, job: str) -> list[dict[str, Any]]:
    out = _cli(home, "job", "list", job, "--json", "--runs", "50").stdout
    return list(json.loads(out)["runs"])


DAILY = "SELECT day, requests, bytes, clients, errors_4xx, errors_5xx FROM analytics.daily_traffic"
DAILY_DIRECT = """
SELECT date_trunc('day', ts) AS day, count(*), sum(bytes)::BIGINT, count(DISTINCT client),
       count(*) FILTER (WHERE status >= 400 AND status < 500), count(*) FILTER (WHERE status >= 500)
FROM logs.access WHERE ts < TIMESTAMP '{upto}' GROUP BY 1 ORDER BY 1
"""


def test_incremental_rollup_takes_each_whole_day_once(tmp_path: Path, shared_data: Path) -> None:
    days = _by_day(shared_data, tmp_path / "input")
    home = _home(tmp_path, "lake")
    config = load_config(home=home, environ={})
    _ingest(home, days["17"], days["18"])
    first = run_job(config, "daily_traffic")
    # The 18th is not over (no later row yet): only the 17th is rolled up.
    assert first.rows == 1
    assert _sql(home, DAILY + " ORDER BY day") == _sql(home, DAILY_DIRECT.format(upto="2015-05-18"))
    again = run_job(config, "daily_traffic")
    assert again.rows == 0 and "no new complete bucket" in again.note
    _ingest(home, days["19"], days["20"])
    second = run_job(config, "daily_traffic")
    assert second.rows == 2
    got = _sql(home, DAILY + " ORDER BY day")
    assert got == _sql(home, DAILY_DIRECT.format(upto="2015-05-20"))
    assert [row[1] for row in got] == [1632, 2893, 2896]
    table = open_catalog(config).load_table("analytics.daily_traffic")
    midnight = (datetime(2015, 5, 20) - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    assert committed_watermark(table, "daily_traffic") == midnight


def test_bot_split_matches_the_enrichment_columns(tmp_path: Path, shared_data: Path) -> None:
    days = _by_day(shared_data, tmp_path / "input")
    home = _home(tmp_path, "lake")
    config = load_config(home=home, environ={})
    _ingest(home, days["17"])
    run_job(config, "bot_split")
    _ingest(home, days["18"])
    run_job(config, "bot_split")
    got = _sql(
        home,
        "SELECT hour, visitor, requests, clients, bytes FROM analytics.bot_split ORDER BY 1, 2",
    )
    newest_hour = _sql(home, "SELECT date_trunc('hour', max(ts)) FROM logs.access")[0][0]
    direct = _sql(
        home,
        "SELECT date_trunc('hour', ts), CASE WHEN is_bot THEN 'bot' ELSE 'human' END, count(*), "
        "count(DISTINCT client), sum(bytes)::BIGINT FROM logs.access "
        f"WHERE ts < TIMESTAMP '{newest_hour}' GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert got == direct
    assert {row[1] for row in got} == {"bot", "human"}
    assert sum(row[2] for row in got if row[1] == "bot") > 100


def test_sessions_split_on_a_30_minute_gap(tmp_path: Path, shared_data: Path) -> None:
    days = _by_day(shared_data, tmp_path / "input")
    home = _home(tmp_path, "lake")
    config = load_config(home=home, environ={})
    _ingest(home, days["17"], days["18"])
    result = run_job(config, "sessions")
    # The sessions computed here, from the raw rows.
    times: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for client, agent, ts in _sql(home, "SELECT client, user_agent, ts FROM logs.access"):
        times[(client, agent)].append(ts)
    expected: dict[tuple[str, str], int] = {}
    for key, stamps in times.items():
        stamps.sort()
        gaps = sum(b - a > timedelta(minutes=30) for a, b in itertools.pairwise(stamps))
        expected[key] = gaps + 1
    got = dict(
        ((c, a), n)
        for c, a, n in _sql(
            home, "SELECT client, user_agent, count(*) FROM analytics.sessions GROUP BY 1, 2"
        )
    )
    assert got == expected
    assert result.rows == sum(expected.values())
    assert any(n > 1 for n in expected.values())  # the gap rule was exercised
    total = _sql(home, "SELECT sum(requests), min(seconds) FROM analytics.sessions")[0]
    assert total == (1632 + 2893, 0)
    # Full mode replaces: a second run over more data leaves only the new result.
    _ingest(home, days["19"])
    again = run_job(config, "sessions")
    assert _sql(home, "SELECT count(*), sum(requests) FROM analytics.sessions")[0] == (
        again.rows,
        1632 + 2893 + 2896,
    )


def _hold_catalog_writes(home: Path) -> sqlite3.Connection:
    """Take the catalog's write lock (readers go on): a commit to it waits, then fails."""
    db = sqlite3.connect(home / "catalog.db", isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    return db


def _data_files(home: Path, table: str) -> set[Path]:
    namespace, name = table.split(".")
    return set((home / "warehouse" / namespace / name).rglob("*.parquet"))


@pytest.mark.slow
def test_a_run_killed_before_its_commit_is_retried_exactly_once(
    tmp_path: Path, shared_data: Path
) -> None:
    days = _by_day(shared_data, tmp_path / "input")
    clean = _home(tmp_path, "clean")
    faulty = _home(tmp_path, "faulty")
    # The clean lake's runs go through run_job in this process (the CLI is tested on the other).
    clean_config = load_config(home=clean, environ={})
    for home in (clean, faulty):
        _ingest(home, days["17"], days["18"])
        if home == clean:
            run_job(clean_config, "daily_traffic")
        else:
            _cli(home, "job", "run", "daily_traffic")
        _ingest(home, days["19"], days["20"])
    run_job(clean_config, "daily_traffic")

    # 1. The commit fails (the catalog stays locked past its busy timeout): the run fails cleanly.
    lock = _hold_catalog_writes(faulty)
    try:
        failed = _cli(faulty, "job", "run", "daily_traffic", check=False)
    finally:
        lock.close()
    assert failed.returncode != 0 and "daily_traffic" in failed.stderr
    # 2. The process is killed while its data files are written and its commit waits.
    before = _data_files(faulty, "analytics.daily_traffic")
    lock = _hold_catalog_writes(faulty)
    env = {**os.environ, "LOGLAKE_HOME": str(faulty)}
    env.pop("LOGLAKE_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglake.cli", "job", "run", "daily_traffic"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: _data_files(faulty, "analytics.daily_traffic") - before or proc.poll(),
            "the job's data files written before its commit",
            interval=0.01,
        )
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        lock.close()
    runs = _history(faulty, "daily_traffic")
    assert [r["status"] for r in runs[:2]] == ["interrupted", "failed"]
    assert "locked" in runs[1]["error"]
    # Nothing of either attempt is visible; the retry processes the two days once.
    assert _sql(faulty, "SELECT count(*) FROM analytics.daily_traffic")[0][0] == 1
    _cli(faulty, "job", "run", "daily_traffic")
    _cli(faulty, "job", "run", "daily_traffic")  # nothing new: adds nothing
    assert _sql(faulty, DAILY + " ORDER BY day") == _sql(clean, DAILY + " ORDER BY day")
    assert [r[1] for r in _sql(faulty, DAILY + " ORDER BY day")] == [1632, 2893, 2896]
    runs = _history(faulty, "daily_traffic")
    assert [(r["status"], r["rows"]) for r in runs[:2]] == [("ok", 0), ("ok", 2)]
    assert all(r["seconds"] is not None and r["seconds"] > 0 for r in runs if r["status"] == "ok")
    assert runs[1]["watermark_to"] > runs[1]["watermark_from"]


@pytest.mark.slow
def test_job_list_and_errors(tmp_path: Path, shared_data: Path) -> None:
    home = _home(
        tmp_path,
        "lake",
        _examples()
        + '\n[jobs.broken]\nsql = "SELECT count(*) AS n FROM logs.nope"\nschedule = "every 5m"\n',
    )
    _ingest(home, _by_day(shared_data, tmp_path / "input")["17"])
    bad = _cli(home, "job", "run", "broken", check=False)
    assert bad.returncode != 0 and "logs.nope" in bad.stderr and "Traceback" not in bad.stderr
    unknown = _cli(home, "job", "run", "nope", check=False)
    assert (
        unknown.returncode == 2 and "bot_split, broken, daily_traffic, sessions" in unknown.stderr
    )
    _cli(home, "job", "run", "sessions")
    listed = json.loads(_cli(home, "job", "list", "--json").stdout)
    jobs = {j["name"]: j for j in listed["jobs"]}
    assert jobs["daily_traffic"]["mode"] == "incremental"
    assert jobs["daily_traffic"]["schedule"] == "daily 00:30"
    assert jobs["broken"]["target"] == "analytics.broken"
    assert [(r["job"], r["status"]) for r in listed["runs"]] == [
        ("sessions", "ok"),
        ("broken", "failed"),
    ]
    assert "logs.nope" in listed["runs"][1]["error"]
    text = _cli(home, "job", "list").stdout
    assert "sessions" in text and "failed" in text and "every 1h" in text


def test_one_run_at_a_time(tmp_path: Path, shared_data: Path) -> None:
    import fcntl

    home = _home(tmp_path, "lake")
    config = load_config(home=home, environ={})
    (config.state_dir / "jobs").mkdir(parents=True)
    with open(config.state_dir / "jobs" / "sessions.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a run in another process holds it
        with pytest.raises(JobBusyError, match="running already"):
            run_job(config, "sessions")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('schedule = "weekly"', "jobs.j.schedule: 'weekly' is not a schedule"),
        ('schedule = "daily 25:00"', "is not a schedule"),
        ('mode = "append"', "jobs.j.mode = 'append'; choose one of full, incremental"),
        ('bucket = "1w"', "jobs.j.bucket: '1w' is not a duration"),
        ('target = "nodot"', "jobs.j.target = 'nodot' must be NAMESPACE.NAME"),
        ('sqlx = "SELECT 1"', "unknown key jobs.j.sqlx"),
    ],
)
def test_job_settings_are_checked_at_load(tmp_path: Path, settings: str, message: str) -> None:
    (tmp_path / "loglake.toml").write_text(f'[jobs.j]\nsql = "SELECT 1"\n{settings}\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(home=tmp_path, environ={})


def test_examples_parse() -> None:
    jobs = tomllib.loads(_examples())["jobs"]
    assert sorted(jobs) == ["bot_split", "daily_traffic", "sessions"]


def test_serve_runs_scheduled_jobs_and_survives_a_failing_one(
    tmp_path: Path, shared_data: Path
) -> None:
    config = (
        _examples()
        + '\n[jobs.broken]\nsql = "SELECT count(*) AS n FROM logs.nope"\nschedule = "every 1s"\n'
    )
    home = _home(tmp_path, "lake", config)
    _ingest(home, _by_day(shared_data, tmp_path / "input")["17"])
    server = Server.started(home, config)
    try:
        # sessions (every 1h) runs at once, never having run.
        wait_for(
            lambda: _table_rows(server, "analytics.sessions"), "the scheduled sessions job's rows"
        )
        assert server.query("SELECT sum(requests) AS n FROM analytics.sessions") == [{"n": 1632}]
        sessions = _table_rows(server, "analytics.sessions")
        wait_for(
            lambda: sum(r["status"] == "failed" for r in _history(home, "broken")) >= 2,
            "the failing job tried again",
        )
        assert request("GET", f"{server.url}/readyz")[0] == 200
        metrics = _metrics(server)
        assert metrics['loglake_job_failures_total{job="broken"}'] >= 2
        assert metrics['loglake_job_runs_total{job="sessions"}'] == 1
        assert metrics['loglake_job_rows_total{job="sessions"}'] == sessions
        assert "job broken failed" in (home / "server.log").read_text()
        assert [r["status"] for r in _history(home, "sessions")] == ["ok"]
    finally:
        server.stop()


def _metrics(server: Server) -> dict[str, float]:
    """The samples of ``/metrics`` as ``name{labels}`` -> value."""
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _table_rows(server: Server, table: str) -> int:
    try:
        return int(server.query(f"SELECT count(*) AS n FROM {table}")[0]["n"])
    except Exception:
        return 0


def test_a_result_that_no_longer_fits_the_target_is_refused_by_column(tmp_path: Path) -> None:
    home = _home(tmp_path, "lake", '[jobs.shape]\nsql = "SELECT 1 AS y, 2 AS z"\n')
    run_job(load_config(home=home, environ={}), "shape")
    (home / "loglake.toml").write_text('[jobs.shape]\nsql = "SELECT 1.5 AS y"\n')
    with pytest.raises(LakeError) as refused:
        run_job(load_config(home=home, environ={}), "shape")
    assert "the table has 1: y: optional int, the result 1: y: optional decimal(2, 1)" in str(
        refused.value
    )
    assert _sql(home, "SELECT y, z FROM analytics.shape") == [(1, 2)]  # the old result stays
