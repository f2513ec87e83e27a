"""Catalog creation under races: threads and processes creating the same namespace and tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa

from loglake.config import load_config
from loglake.lake.catalog import ensure_table, list_tables, open_catalog

ROUNDS_THREADS = 12
ROUNDS_PROCESSES = 12
WORKERS = 4


def _schema(*extra: str) -> pa.Schema:
    return pa.schema(
        [("ts", pa.timestamp("us")), ("msg", pa.string())] + [(c, pa.int64()) for c in extra]
    )


def _check_lake(home: Path, extra_columns: set[str]) -> None:
    catalog = open_catalog(load_config(home=home, environ={}))
    assert catalog.list_namespaces() == [("logs",)]
    assert list_tables(catalog) == ["logs.a", "logs.b"]
    columns = set(catalog.load_table("logs.a").schema().column_names)
    assert columns == {"ts", "msg"} | extra_columns
    assert catalog.load_table("logs.b").spec().fields[0].name == "ts_day"


def _race_in_threads(home: Path) -> list[BaseException]:
    """WORKERS threads released at once, each creating both tables; each adds a column of its own
    to logs.a, so creation and schema evolution race too. Returns the errors they raised."""
    catalog = open_catalog(load_config(home=home, environ={}))
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait(timeout=60)
            ensure_table(catalog, "logs.b", _schema(), "day")
            ensure_table(catalog, "logs.a", _schema(f"w{worker}"), "day")
        except BaseException as exc:  # reported by the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_threads_create_the_same_namespace_and_tables_at_once(tmp_path: Path) -> None:
    # Before the fix 3 rounds in 5 failed: UNIQUE constraint failed: iceberg_namespace_properties.
    for round_no in range(ROUNDS_THREADS):
        home = tmp_path / f"round-{round_no}"
        assert _race_in_threads(home) == []
        _check_lake(home, {f"w{w}" for w in range(WORKERS)})


# One process of the race: for each round, wait until its peer is ready too, then open the fresh
# catalog and create both tables from two threads at once (what one ingest does).
_PEER = r"""
import json, sys, threading, time
from pathlib import Path
import pyarrow as pa
from loglake.config import load_config
from loglake.lake.catalog import ensure_table, open_catalog

root, me, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for r in range(rounds):
    (root / f"ready-{r}-{me}").touch()
    deadline = time.monotonic() + 120
    while len(list(root.glob(f"ready-{r}-*"))) < 2:
        if (root / "failed").exists() or time.monotonic() > deadline:
            sys.exit("the peer failed or never became ready")
        time.sleep(0.001)
    errors = []
    catalog = open_catalog(load_config(home=root / f"round-{r}", environ={}))

    def make(name, column):
        try:
            schema = pa.schema([("ts", pa.timestamp("us")), ("msg", pa.string()), (column, pa.int64())])
            ensure_table(catalog, name, schema, "day")
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [
        threading.Thread(target=make, args=("logs.a", f"p{me}")),
        threading.Thread(target=make, args=("logs.b", f"p{me}")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        (root / "failed").touch()
        print(json.dumps({"round": r, "errors": errors}))
        sys.exit(1)
"""


def test_two_processes_create_the_same_fresh_catalog_namespace_and_tables(tmp_path: Path) -> None:
    env = {**os.environ}
    env.pop("LOGLAKE_CONFIG", None)
    env.pop("LOGLAKE_HOME", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PEER, str(tmp_path), str(me), str(ROUNDS_PROCESSES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for me in (1, 2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    report = [
        (p.returncode, out.decode(), err.decode()[-2000:])
        for p, (out, err) in zip(procs, outputs, strict=True)
    ]
    assert [code for code, _, _ in report] == [0, 0], report
    for r in range(ROUNDS_PROCESSES):
        catalog = open_catalog(load_config(home=tmp_path / f"round-{r}", environ={}))
        assert catalog.list_namespaces() == [("logs",)]
        assert list_tables(catalog) == ["logs.a", "logs.b"]
        for name in ("logs.a", "logs.b"):
            columns = set(catalog.load_table(name).schema().column_names)
            assert columns == {"ts", "msg", "p1", "p2"}, (r, name, json.dumps(sorted(columns)))
