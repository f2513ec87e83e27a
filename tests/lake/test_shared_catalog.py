"""Several loglake nodes share one catalog on a real PostgreSQL server and one warehouse: their
ingests into the same table run at once, their commits race and are retried, and the table holds
every row exactly once, the same answers as one local lake given all the files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyiceberg.catalog import load_catalog

import loglake
from postgres import postgres_server

QUERIES = [
    "SELECT count(*), count(DISTINCT (source, line)) FROM logs.access",
    "SELECT status, count(*), sum(bytes) FROM logs.access GROUP BY 1 ORDER BY 1",
    "SELECT date_trunc('day', ts) AS d, count(*) FROM logs.access GROUP BY 1 ORDER BY 1",
    "SELECT count(*) FROM logs.rejected",
]


def _ingest(home: Path, *files: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "loglake.cli", "ingest", "--no-progress", *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOGLAKE_HOME": str(home)},
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


@pytest.mark.slow  # about 15 s: a PostgreSQL cluster, four ingests
def test_three_nodes_ingest_into_one_table_at_once(tmp_path: Path, shared_data: Path) -> None:
    lines = (shared_data / "apache_combined_10k.log").read_text().splitlines(keepends=True)
    # Three files of different lines (a name each: the rows' source tells them apart), and one
    # line per file that is no log line, for logs.rejected.
    files = []
    for i in range(3):
        path = tmp_path / f"part{i}.log"
        path.write_text("".join(lines[i * 3000 : (i + 1) * 3000]) + f"junk {i}\n")
        files.append(path)
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    with postgres_server() as url:
        nodes = []
        for i in range(3):
            node = tmp_path / f"node{i}"
            node.mkdir()
            (node / "loglake.toml").write_text(
                f'[catalog]\nuri = "{url}"\nwarehouse = "{warehouse.as_uri()}"\n'
            )
            nodes.append(node)
        # The three ingests start together and commit to logs.access and logs.rejected while the
        # others do; the local lake gets all three files in one run.
        running = [_ingest(node, f) for node, f in zip(nodes, files, strict=True)]
        outs = [_finish(proc) for proc in running]
        local = tmp_path / "local"
        _finish(_ingest(local, *files))
        for out in outs:
            assert "parsed 3,000 + rejected 1" in out, out

        # Nothing in the nodes' homes: the catalog is PostgreSQL, the data the shared warehouse.
        assert not any((node / "catalog.db").exists() for node in nodes)
        assert len(list(warehouse.rglob("*.parquet"))) >= 3
        with loglake.connect(str(local)) as one:
            want = [one.sql(sql).fetchall() for sql in QUERIES]
        assert want[0] == [(9000, 9000)]
        assert want[3] == [(3,)]
        # Every node reads the same table, and it is the local lake's answer: no row lost or
        # written twice.
        for node in nodes:
            with loglake.connect(str(node)) as lake:
                assert [lake.sql(sql).fetchall() for sql in QUERIES] == want
        # As any Iceberg client sees it: one append per node at least, from the shared catalog.
        catalog = load_catalog("loglake", type="sql", uri=url, warehouse=warehouse.as_uri())
        table = catalog.load_table("logs.access")
        appends = [
            s for s in table.snapshots() if s.summary and s.summary.operation.value == "append"
        ]
        assert len(appends) >= 3
        assert table.scan().to_arrow().num_rows == 9000
