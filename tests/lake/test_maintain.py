"""`loglake maintain` and the server's maintenance of every table: compaction of batch-written
tables to few files, retention by whole partitions, orphan removal after its age threshold, and
queries that keep their answers while compaction commits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loglake.config import load_config
from loglake.ingest import ingest
from loglake.lake.catalog import open_catalog
from loglake.lake.maintenance import maintain_table
from loglake.query.engine import Connection
from serving import Server
from waiting import wait_for

LINE = '10.0.{a}.{b} - - [{ts}] "GET /p/{n} HTTP/1.1" {status} {n} "-" "agent-{b}"\n'


def _lines(start: datetime, count: int, step: timedelta) -> str:
    out = []
    for n in range(count):
        at = start + n * step
        out.append(
            LINE.format(
                a=n % 7,
                b=n % 251,
                ts=at.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                n=n,
                status=(200, 404, 500)[n % 3],
            )
        )
    return "".join(out)


def _ingest(home: Path, text: str, name: str = "in", runs: int = 4) -> None:
    """Ingest ``text`` in ``runs`` runs of every ``runs``-th line: each run writes a file per
    partition, so every partition gets ``runs`` small files, as repeated ingests leave them."""
    lines = text.splitlines(keepends=True)
    config = load_config(home=home, environ={})
    for run in range(runs):
        src = home.parent / f"{name}-{run}.log"
        src.write_text("".join(lines[run::runs]))
        ingest(config, [str(src)], format="combined")


def _home(tmp_path: Path, toml: str = "") -> Path:
    home = tmp_path / "lake"
    home.mkdir()
    (home / "loglake.toml").write_text(toml)
    return home


def _files(home: Path, table: str = "logs.access") -> int:
    catalog = open_catalog(load_config(home=home, environ={}))
    return len(list(catalog.load_table(table).scan().plan_files()))


def _sql(home: Path, sql: str) -> list[tuple[object, ...]]:
    with Connection(load_config(home=home, environ={})) as con:
        return con.sql(sql).fetchall()


ROWS = "SELECT ts, client, path, status, bytes, user_agent FROM logs.access ORDER BY ts, path"
PER_HOUR = (
    "SELECT date_trunc('hour', ts) AS h, count(*), sum(bytes), count(DISTINCT client) "
    "FROM logs.access GROUP BY h ORDER BY h"
)


@pytest.mark.slow
def test_compaction_of_a_batch_table_keeps_every_row_and_reduces_files(tmp_path: Path) -> None:
    home = _home(tmp_path)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    _ingest(home, _lines(start, 2000, timedelta(seconds=20)))  # 2000 rows over ~11 hours
    rows, per_hour = _sql(home, ROWS), _sql(home, PER_HOUR)
    assert len(rows) == 2000 and len(per_hour) == 12
    files_before = _files(home)
    assert files_before >= 3 * len(per_hour)  # several flushes wrote into every hour
    config = load_config(home=home, environ={})
    report = maintain_table(open_catalog(config), "logs.access", config)
    assert report.files_before == files_before
    assert report.files_after == _files(home) == len(per_hour)  # one file per hour partition
    assert report.compacted_files == files_before and report.written_files == len(per_hour)
    assert _sql(home, ROWS) == rows and _sql(home, PER_HOUR) == per_hour
    again = maintain_table(open_catalog(config), "logs.access", config)
    assert (again.compacted_files, again.files_after) == (0, len(per_hour))


def test_queries_running_during_compaction_keep_their_answer(tmp_path: Path) -> None:
    home = _home(tmp_path)
    _ingest(home, _lines(datetime(2024, 3, 1, tzinfo=UTC), 3000, timedelta(seconds=30)))
    files_before = _files(home)
    answers: list[tuple[object, ...]] = []
    errors: list[BaseException] = []
    done = threading.Event()
    sql = "SELECT count(*), sum(bytes), count(DISTINCT path) FROM logs.access"

    def loop() -> None:
        try:
            with Connection(load_config(home=home, environ={})) as con:
                while True:
                    answers.append(tuple(con.sql(sql).fetchall()[0]))
                    if done.is_set():
                        answers.append(tuple(con.sql(sql).fetchall()[0]))  # one more, after
                        return
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    wait_for(lambda: len(answers) >= 2 or errors, "queries before compaction")
    config = load_config(home=home, environ={})
    try:
        for _ in range(3):  # compaction, then passes that find nothing left to merge
            maintain_table(open_catalog(config), "logs.access", config)
    finally:
        done.set()
        thread.join(120)
    assert not errors, errors
    assert _files(home) < files_before
    assert len(answers) >= 3
    assert set(answers) == {(3000, sum(range(3000)), 3000)}


def test_retention_drops_exactly_the_expired_partitions(tmp_path: Path) -> None:
    toml = '[tables."logs.access"]\npartition = "day"\nretention_days = 2\n'
    home = _home(tmp_path, toml)
    _ingest(home, _lines(datetime(2024, 1, 1, tzinfo=UTC), 5 * 96, timedelta(minutes=15)))
    per_day = (
        "SELECT CAST(ts AS DATE) AS d, count(*), sum(bytes) FROM logs.access GROUP BY d ORDER BY d"
    )
    before = _sql(home, per_day)
    assert [r[1] for r in before] == [96] * 5
    config = load_config(home=home, environ={})
    now = datetime(2024, 1, 5, 12, tzinfo=UTC)  # cutoff 2024-01-03 12:00: Jan 1 and 2 expire
    dry = maintain_table(open_catalog(config), "logs.access", config, now=now, dry_run=True)
    assert dry.partitions_dropped == ["ts_day=2024-01-01", "ts_day=2024-01-02"]
    assert _sql(home, per_day) == before  # a dry run changes nothing
    report = maintain_table(open_catalog(config), "logs.access", config, now=now)
    assert report.partitions_dropped == ["ts_day=2024-01-01", "ts_day=2024-01-02"]
    assert report.rows_dropped == 192
    assert _sql(home, per_day) == before[2:]  # Jan 3 straddles the cutoff: kept whole
    assert _sql(home, "SELECT count(*) FROM logs.rejected") == [(0,)]
    again = maintain_table(open_catalog(config), "logs.access", config, now=now)
    assert again.partitions_dropped == [] and _sql(home, per_day) == before[2:]


def test_orphan_files_are_removed_only_after_their_age_threshold(tmp_path: Path) -> None:
    home = _home(tmp_path, "[maintenance]\ngrace_s = 600\n")
    _ingest(home, _lines(datetime(2024, 3, 1, tzinfo=UTC), 200, timedelta(minutes=1)))
    rows = _sql(home, ROWS)
    data = next((home / "warehouse").rglob("*.parquet")).parent
    stray = data / "left-by-a-failed-commit.parquet"
    stray.write_bytes(next(data.glob("*.parquet")).read_bytes())
    config = load_config(home=home, environ={})
    young = maintain_table(open_catalog(config), "logs.access", config)
    assert young.orphans_removed == 0 and stray.exists()
    old = time.time() - 601
    os.utime(stray, (old, old))
    dry = maintain_table(open_catalog(config), "logs.access", config, dry_run=True)
    assert dry.orphans_removed == 1 and stray.exists()
    report = maintain_table(open_catalog(config), "logs.access", config)
    assert report.orphans_removed == 1 and not stray.exists()
    assert report.orphan_bytes > 0
    assert _sql(home, ROWS) == rows  # only the unreferenced file went


def _cli(home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "--home", str(home), "maintain", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("LOGLAKE_HOME", "LOGLAKE_CONFIG")},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_prints_what_it_did(tmp_path: Path) -> None:
    toml = '[tables."logs.access"]\npartition = "day"\nretention_days = 30\n'
    home = _home(tmp_path, toml)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    old = today - timedelta(days=40)
    _ingest(home, _lines(old, 100, timedelta(minutes=1)), "old")
    _ingest(home, _lines(today, 100, timedelta(minutes=1)), "new")
    files = _files(home)
    assert files >= 4
    dry = _cli(home, "logs.access", "--dry-run")
    partition = f"ts_day={old:%Y-%m-%d}"
    assert dry.startswith(f"logs.access: files {files} -> 1, ")
    assert f"would drop 1 partitions ({files // 2} files, 100 rows): {partition};" in dry
    assert _files(home) == files
    out = _cli(home)  # every table
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["logs.access", "logs.rejected"]
    assert lines[0].startswith(f"logs.access: files {files} -> 1, ")
    assert f"merge {files // 2} files into 1; drop 1 partitions" in lines[0]
    assert "would" not in out
    assert _sql(
        home, "SELECT count(*), min(ts) >= TIMESTAMP '" + f"{today:%Y-%m-%d}" + "' FROM logs.access"
    ) == [(100, True)]
    assert _files(home) == 1


def test_the_servers_schedule_compacts_a_batch_written_table(tmp_path: Path) -> None:
    home = _home(tmp_path)
    _ingest(home, _lines(datetime(2024, 3, 1, tzinfo=UTC), 1500, timedelta(seconds=20)))
    rows, per_hour = _sql(home, ROWS), _sql(home, PER_HOUR)
    assert _files(home) > 2 * len(per_hour)
    server = Server.started(home, "[maintenance]\ninterval_s = 1\n")
    try:
        wait_for(lambda: _files(home) == len(per_hour), "the schedule to compact logs.access")
        assert server.query("SELECT count(*) AS n FROM logs.access") == [{"n": 1500}]
    finally:
        server.stop()
    assert _sql(home, ROWS) == rows and _sql(home, PER_HOUR) == per_hour


def test_a_compaction_planned_before_another_one_committed_is_refused(tmp_path: Path) -> None:
    """The server's streaming compaction and `loglake maintain` in another process may plan the
    same files: the second commit must fail (pyiceberg checks that the files it deletes are
    live), not add the rows a second time."""
    import pytest

    from loglake.errors import LakeError
    from loglake.lake.maintenance import commit_replace, merge_files, plan_target_compaction

    home = _home(tmp_path)
    _ingest(home, _lines(datetime(2024, 3, 1, tzinfo=UTC), 400, timedelta(seconds=20)))
    rows = _sql(home, ROWS)
    config = load_config(home=home, environ={})
    catalog = open_catalog(config)
    table = catalog.load_table("logs.access")
    group = plan_target_compaction(table, 64 << 20)[0]
    merged = merge_files(table, group, "ts")
    maintain_table(catalog, "logs.access", config)  # compacts the same files first
    with pytest.raises(LakeError, match="Missing required files to delete"):
        commit_replace(catalog.load_table("logs.access"), group, [merged])
    assert _sql(home, ROWS) == rows


def test_files_registered_in_place_are_never_rewritten(tmp_path: Path) -> None:
    """A file added where it lies (Iceberg add_files) belongs to the user: compaction leaves it
    where it is, and orphan removal, which only looks inside the table's folder, never sees it."""
    import pyarrow.parquet as pq

    home = _home(tmp_path)
    _ingest(home, _lines(datetime(2024, 3, 1, tzinfo=UTC), 60, timedelta(seconds=20)), runs=1)
    config = load_config(home=home, environ={})
    catalog = open_catalog(config)
    table = catalog.load_table("logs.access")
    rows = table.scan().to_arrow()
    outside = tmp_path / "theirs"
    outside.mkdir()
    for i in range(3):  # the same hour as the table's one file
        pq.write_table(rows.slice(i * 20, 20), outside / f"part-{i}.parquet")
    table.add_files([str(outside / f"part-{i}.parquet") for i in range(3)])
    assert _files(home) == 4

    def scanned() -> list[tuple[object, ...]]:
        got = open_catalog(config).load_table("logs.access").scan().to_arrow()
        return sorted(
            zip(*(got.column(c).to_pylist() for c in ("ts", "path", "bytes")), strict=True)
        )

    before = scanned()
    assert len(before) == 120
    report = maintain_table(open_catalog(config), "logs.access", config)
    assert (report.compacted_files, report.files_after) == (0, 4)
    assert sorted(p.name for p in outside.iterdir()) == [f"part-{i}.parquet" for i in range(3)]
    assert scanned() == before
