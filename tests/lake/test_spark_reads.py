"""Apache Spark reads the lake loglake wrote: Spark 3.5 with Iceberg's runtime and its JdbcCatalog,
on the same catalog database (PostgreSQL shared by nodes, or the embedded SQLite file) and the same
warehouse, gets the answers ``loglake query`` gives. The configuration is the one docs/spark.md
gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from spark_sql import iceberg_runtime_jar, rows

import loglake
from postgres import postgres_server

POSTGRESQL_JDBC = Path("/usr/share/java/postgresql.jar")  # Debian's libpostgresql-jdbc-java
SQLITE_JDBC = Path("/usr/share/java/sqlite-jdbc.jar")  # Debian's libxerial-sqlite-jdbc-java

# Each query once, with {access} and {rejected} for the tables: logs.access in loglake,
# loglake.logs.access in Spark (catalog "loglake", loglake's default catalog name).
QUERIES = [
    "SELECT count(*), count(DISTINCT client), min(ts), max(ts), sum(bytes) FROM {access}",
    "SELECT status, count(*), sum(bytes) FROM {access} GROUP BY status ORDER BY status",
    # Bytes per hour of one day: hour buckets of a timestamp without zone, a range on it.
    "SELECT date_trunc('hour', ts) AS hour, count(*), sum(bytes) FROM {access}"
    " WHERE ts >= TIMESTAMP '2015-05-18 00:00:00' AND ts < TIMESTAMP '2015-05-19 00:00:00'"
    " GROUP BY 1 ORDER BY 1",
    "SELECT path, count(*) AS hits FROM {access} GROUP BY path ORDER BY hits DESC, path LIMIT 10",
    "SELECT count(*) FROM {access}"
    " WHERE ts BETWEEN TIMESTAMP '2015-05-18 06:00:00' AND TIMESTAMP '2015-05-18 12:30:00'",
    "SELECT ua_browser, is_bot, count(*) AS n FROM {access} WHERE status = 200"
    " GROUP BY 1, 2 ORDER BY n DESC, ua_browser NULLS LAST, is_bot LIMIT 8",
    "SELECT count(*) FROM {rejected}",
]


def spark_conf(jdbc_uri: str, warehouse: str, driver: Path, user: str | None) -> dict[str, str]:
    """The Spark settings of docs/spark.md: catalog ``loglake`` is Iceberg's JdbcCatalog on the
    database that holds loglake's pyiceberg SQL catalog."""
    conf = {
        "spark.jars": f"{iceberg_runtime_jar()},{driver}",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.catalog.loglake": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.loglake.type": "jdbc",
        "spark.sql.catalog.loglake.uri": jdbc_uri,
        "spark.sql.catalog.loglake.warehouse": warehouse,
        # A reader: never create catalog tables (a wrong URI fails instead of looking empty).
        "spark.sql.catalog.loglake.jdbc.init-catalog-tables": "false",
        # A small local session: few shuffle partitions (200 by default, one task each), no web UI,
        # and the driver on loopback whatever the hostname resolves to.
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
    if user:
        conf["spark.sql.catalog.loglake.jdbc.user"] = user
    return conf


def spark_answers(conf: dict[str, str], queries: list[str]) -> list[list[list[object]]]:
    """Each query's rows from a Spark session in a subprocess (its JVM stops when it exits)."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("spark_sql.py"))],
        input=json.dumps({"conf": conf, "queries": queries}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    answers: list[list[list[object]]] = json.loads(proc.stdout.splitlines()[-1])
    return answers


@contextmanager
def _lake(kind: str, home: Path, warehouse: Path) -> Iterator[dict[str, str]]:
    """A loglake home on catalog ``kind``; yields the Spark settings that read it."""
    if kind == "sqlite":  # the embedded default: catalog.db and warehouse/ under the home
        yield spark_conf(
            f"jdbc:sqlite:{home / 'catalog.db'}", (home / "warehouse").as_uri(), SQLITE_JDBC, None
        )
        return
    with postgres_server() as url:
        (home / "loglake.toml").write_text(
            f'[catalog]\nuri = "{url}"\nwarehouse = "{warehouse.as_uri()}"\n'
        )
        # postgresql+psycopg2://USER@127.0.0.1:PORT/lake -> jdbc:postgresql://127.0.0.1:PORT/lake
        user, _, where = url.split("://", 1)[1].partition("@")
        yield spark_conf(f"jdbc:postgresql://{where}", warehouse.as_uri(), POSTGRESQL_JDBC, user)


@pytest.mark.slow  # 30-55 s each on a shared 2-core machine: a Spark session, a PostgreSQL cluster
@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_spark_answers_as_loglake_query(kind: str, tmp_path: Path, shared_data: Path) -> None:
    home, warehouse = tmp_path / "home", tmp_path / "warehouse"
    home.mkdir()
    warehouse.mkdir()
    log = shared_data / "apache_combined_10k.log"
    with _lake(kind, home, warehouse) as conf:
        ingest = subprocess.run(
            [sys.executable, "-m", "loglake.cli", "ingest", "--no-progress", str(log)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "LOGLAKE_HOME": str(home)},
        )
        assert ingest.returncode == 0, ingest.stderr
        assert "parsed 10,000 + rejected 0" in ingest.stdout, ingest.stdout
        with loglake.connect(str(home)) as lake:
            want = [
                rows(lake.sql(q.format(access="logs.access", rejected="logs.rejected")).fetchall())
                for q in QUERIES
            ]
        spark_queries = [
            q.format(access="loglake.logs.access", rejected="loglake.logs.rejected")
            for q in QUERIES
        ]
        got = spark_answers(
            conf, [*spark_queries, "SELECT typeof(ts) FROM loglake.logs.access LIMIT 1"]
        )
    # loglake's UTC times, an Iceberg timestamp without zone, are Spark's TIMESTAMP_NTZ.
    assert got.pop() == [["timestamp_ntz"]]
    assert want[0][0][0] == 10_000
    assert len(want[2]) == 24  # every hour of 2015-05-18 has requests
    for sql, spark, ours in zip(QUERIES, got, want, strict=True):
        assert spark == ours, sql
