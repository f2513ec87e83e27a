"""Attacks on the SQL sandbox: injection through log data, writes through read statements, files,
settings, and limits on time, result size and memory (issue 9, findings 1, 2, 4, 5, 6)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from loglake.config import Config, load_config
from loglake.errors import QueryError, QueryRefusedError
from loglake.ingest import ingest
from loglake.query.engine import Connection
from loglake.query.policy import check_read_only

# A JSON key that, pasted unquoted into the view definition, replaced every row of the table by
# one fake row; another that hid one user's rows; one that made the table unqueryable.
FAKE_ROW_KEY = (
    "x\" FROM (SELECT TIMESTAMP '2000-01-01' AS ts, false AS ts_missing, 'nothing to see' AS x) --"
)
HIDE_KEY = 'y" FROM read_parquet([]) WHERE "user" IS DISTINCT FROM \'mallory\' --'
HOSTILE_KEYS = [
    FAKE_ROW_KEY,
    HIDE_KEY,
    'a"b',
    "it's",
    "service.name",  # OTLP / Loki attribute names
    'k8s.pod"name',
    "UPPER lower",
    "semi;colon",
    "back\\slash",
    "new\nline",
]


@pytest.fixture(scope="module")
def json_lake(tmp_path_factory: pytest.TempPathFactory) -> Config:
    home = tmp_path_factory.mktemp("jsonlake")
    lines = []
    for i in range(300):
        record: dict[str, object] = {
            "ts": f"2026-11-30T10:{i // 60:02d}:{i % 60:02d}Z",
            "user": "mallory" if i % 3 == 0 else "alice",
            "n": i,
        }
        for j, key in enumerate(HOSTILE_KEYS):
            record[key] = f"v{j}-{i}"
        lines.append(json.dumps(record))
    path = home / "app.jsonl"
    path.write_text("\n".join(lines) + "\n")
    config = load_config(home=home, environ={})
    stats = ingest(config, [str(path)], format="json")
    assert stats.parsed == 300 and stats.rejected == 0
    return config


@pytest.fixture()
def con(json_lake: Config) -> Iterator[Connection]:
    with Connection(json_lake) as c:
        yield c


def test_json_keys_cannot_inject_sql(con: Connection) -> None:
    assert con.sql("SELECT count(*) FROM logs.json").fetchall() == [(300,)]
    assert con.sql("SELECT count(*) FROM logs.json WHERE \"user\" = 'mallory'").fetchall() == [
        (100,)
    ]
    result = con.sql("SELECT * FROM logs.json ORDER BY n")
    columns = result.columns
    for j, key in enumerate(HOSTILE_KEYS):
        assert key in columns, key
        values = result.table.column(key).to_pylist()
        assert values[:2] == [f"v{j}-0", f"v{j}-1"] and len(values) == 300
    values = {v for row in result.table.to_pylist() for v in row.values() if isinstance(v, str)}
    assert "nothing to see" not in values


def test_hostile_keys_are_queryable_by_quoted_name(con: Connection) -> None:
    rows = con.sql('SELECT "a""b", "it\'s", "service.name" FROM logs.json WHERE n = 7').fetchall()
    assert rows == [("v2-7", "v3-7", "v4-7")]


def _warehouse_files(config: Config) -> dict[str, str]:
    root = Path(config.warehouse[len("file://") :])
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# One sample of every statement type DuckDB's parser knows, as a user might send it.
STATEMENTS = [
    "INSERT INTO logs.json SELECT * FROM logs.json",
    "UPDATE logs.json SET n = 0",
    "DELETE FROM logs.json",
    "MERGE INTO logs.json USING logs.json AS s ON false WHEN NOT MATCHED THEN INSERT *",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "CREATE OR REPLACE VIEW logs.json AS SELECT 1 AS n",
    "CREATE SCHEMA s",
    "CREATE MACRO m(a) AS a",
    "CREATE SEQUENCE seq",
    "CREATE TYPE mood AS ENUM ('a')",
    "CREATE INDEX i ON logs.json (n)",
    "CREATE SECRET (TYPE s3)",
    "DROP VIEW logs.json",
    "DROP SCHEMA logs CASCADE",
    "ALTER VIEW logs.json RENAME TO j",
    "COPY (SELECT 1) TO '{warehouse_file}'",
    "COPY (SELECT 1) TO '/tmp/loglake-sandbox-escape.csv'",
    "COPY logs.json FROM '/etc/passwd'",
    "EXPORT DATABASE '/tmp/loglake-sandbox-export'",
    "IMPORT DATABASE '/tmp/loglake-sandbox-export'",
    "ATTACH '/tmp/loglake-sandbox.db' AS x",
    "DETACH x",
    "USE x",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA enable_profiling",
    "CALL duckdb_settings()",
    "LOAD httpfs",
    "INSTALL httpfs",
    "UPDATE EXTENSIONS",
    "VACUUM",
    "ANALYZE",
    "CHECKPOINT",
    "BEGIN TRANSACTION",
    "COMMIT",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "DEALLOCATE p",
    "PIVOT logs.json ON n USING count(*)",
    "COMMENT ON VIEW logs.json IS 'x'",
    "DESCRIBE pg_catalog.pg_settings",
    "SET VARIABLE x = 1",
    "COPY FROM DATABASE memory TO x",
]


@pytest.mark.parametrize("prefix", ["", "EXPLAIN ", "EXPLAIN ANALYZE ", "EXPLAIN (FORMAT json) "])
def test_no_statement_but_a_read_runs(con: Connection, json_lake: Config, prefix: str) -> None:
    before = _warehouse_files(json_lake)
    warehouse_file = next(p for p in before if p.endswith(".parquet"))
    for statement in STATEMENTS:
        sql = prefix + statement.format(warehouse_file=warehouse_file)
        with pytest.raises(QueryError):
            con.sql(sql)
    assert _warehouse_files(json_lake) == before
    assert not Path("/tmp/loglake-sandbox-escape.csv").exists()
    assert not Path("/tmp/loglake-sandbox-export").exists()
    assert con.sql("SELECT count(*) FROM logs.json").fetchall() == [(300,)]


def test_explain_of_a_select_is_allowed(con: Connection) -> None:
    plan = con.sql('EXPLAIN SELECT "user", count(*) FROM logs.json GROUP BY 1').fetchall()
    assert plan[0][0] == "physical_plan" and "PARQUET" in plan[0][1].upper()
    analyzed = con.sql("EXPLAIN ANALYZE SELECT count(*) FROM logs.json").fetchall()
    assert analyzed and "Total Time" in str(analyzed)


FILE_FUNCTIONS = [
    "read_csv",
    "read_csv_auto",
    "read_json",
    "read_json_auto",
    "read_json_objects",
    "read_ndjson",
    "read_ndjson_objects",
    "read_parquet",
    "parquet_scan",
    "parquet_metadata",
    "parquet_schema",
    "parquet_file_metadata",
    "parquet_kv_metadata",
    "read_text",
    "read_blob",
    "glob",
    "sniff_csv",
    "read_duckdb",
    "query",
    "query_table",
    "duckdb_settings",
    "duckdb_databases",
    "which_secret",
]


def test_no_file_function_reads_anything(con: Connection, json_lake: Config) -> None:
    inside = next(p for p in _warehouse_files(json_lake) if p.endswith(".parquet"))
    for function in FILE_FUNCTIONS:
        for path in ("/etc/passwd", inside, str(json_lake.home / "catalog.db")):
            with pytest.raises(QueryRefusedError, match=rf"{function}\(\) is not allowed"):
                con.sql(f"SELECT * FROM {function}('{path}')")


def test_settings_and_system_views_are_out_of_reach(con: Connection, json_lake: Config) -> None:
    for sql in [
        "SELECT current_setting('allowed_directories')",
        "SELECT getvariable('x')",
        "SELECT * FROM pg_catalog.pg_settings",
        "SELECT * FROM duckdb_settings()",
        "SELECT * FROM information_schema.tables",
        # A CTE of that name elsewhere must not make the system view look like a CTE.
        "SELECT * FROM (WITH pg_settings AS (SELECT 1) SELECT 1), pg_settings",
        "WITH pg_settings AS (SELECT * FROM pg_settings) SELECT * FROM pg_settings",
    ]:
        with pytest.raises(QueryError) as caught:
            con.sql(sql)
        assert str(json_lake.home) not in str(caught.value)


def test_ctes_and_recursion_still_work(con: Connection) -> None:
    sql = (
        "WITH RECURSIVE t(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM t WHERE k < 3), "
        'u AS (SELECT "user", count(*) AS c FROM logs.json GROUP BY 1) '
        "SELECT (SELECT sum(k) FROM t), (SELECT max(c) FROM u)"
    )
    assert con.sql(sql).fetchall() == [(6, 200)]


def test_policy_uses_duckdbs_own_parser() -> None:
    con = duckdb.connect()
    # Comments between EXPLAIN and ANALYZE, options, parentheses: the inner statement is found.
    for sql in [
        "EXPLAIN /* x */ ANALYZE COPY (SELECT 1) TO 'x'",
        "explain analyze\n-- c\nCREATE TABLE x AS SELECT 1",
        "EXPLAIN (FORMAT json) DELETE FROM logs.json",
    ]:
        with pytest.raises(QueryRefusedError, match="EXPLAIN is accepted only for a SELECT"):
            check_read_only(con, sql, ["logs.json"])
    assert check_read_only(con, "EXPLAIN (SELECT 1)", []).select == "(SELECT 1)"


def test_binding_errors_are_query_errors(con: Connection) -> None:
    with pytest.raises(QueryError, match=r"lake tables: logs\.json"):
        con.sql("SELECT * FROM logs.nope")
    with pytest.raises(QueryError, match="syntax error"):
        con.sql("SELEC 1")


def limited(config: Config, **query: object) -> Config:
    return replace(config, query=replace(config.query, **query))  # type: ignore[arg-type]


def test_memory_limit_bounds_values_duckdb_does_not_count(json_lake: Config) -> None:
    """``list(range(200000000))`` grew DuckDB to 6-14 GB under memory_limit 512MB (the CLI's
    in-process path is tested in test_cli_memory_and_byte_limits)."""
    config = limited(json_lake, memory_limit="512MB", timeout_s=60.0)
    with Connection(config) as c:
        start = time.monotonic()
        with pytest.raises(QueryError, match="memory"):
            c.sql("SELECT len(list(range(200000000)))")
        assert time.monotonic() - start < 50  # it failed at the limit, not at the time limit
        # The connection is usable afterwards.
        assert c.sql("SELECT count(*) FROM logs.json").fetchall() == [(300,)]


def test_result_bytes_are_bounded(json_lake: Config) -> None:
    config = limited(json_lake, max_result_bytes=50 << 20, timeout_s=120.0)
    with Connection(config) as c:
        result = c.sql("SELECT repeat('x', 1000000) AS big FROM range(300)")
    assert result.truncated and result.cut_by == "bytes"
    assert 0 < result.table.nbytes <= 50 << 20
    assert result.table.num_rows < 300


def test_time_limit_covers_the_whole_query(json_lake: Config) -> None:
    config = limited(json_lake, timeout_s=2.0, max_rows=10_000_000, max_result_bytes=1 << 40)
    with Connection(config) as c:
        start = time.monotonic()
        with pytest.raises(QueryError, match="stopped after 2 s"):
            c.sql("SELECT count(*) FROM range(100000000000) a")
        assert time.monotonic() - start < 60


def test_cli_memory_and_byte_limits(run_cli, home: Path, json_lake: Config) -> None:  # type: ignore[no-untyped-def]
    conf = home / "limits.toml"
    conf.write_text(
        '[query]\nmemory_limit = "512MB"\ntimeout_s = 60\nmax_result_bytes = 20000000\n'
    )
    env = {"LOGLAKE_HOME": str(json_lake.home)}
    out = run_cli(
        "--config", str(conf), "query", "SELECT len(list(range(200000000)))", env=env, check=False
    )
    assert out.returncode == 1 and "query.memory_limit" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    sql = "SELECT repeat('x', 1000000) FROM range(300)"
    out = run_cli("--config", str(conf), "query", "--format", "csv", sql, env=env)
    assert len(out.stdout) <= 20_000_000 + 1000
    assert "query.max_result_bytes" in out.stderr


def test_a_column_newer_than_the_files_read_is_null(tmp_path: Path) -> None:
    """Pruning down to files written before a column existed made the table unqueryable
    ("Referenced column m not found"); files are read by Iceberg field id, so it is NULL there."""
    config = load_config(home=tmp_path, environ={})
    old = tmp_path / "old.jsonl"
    old.write_text('{"ts": "2020-01-01T00:00:00Z", "n": 1}\n')
    new = tmp_path / "new.jsonl"
    new.write_text('{"ts": "2024-01-01T00:00:00Z", "n": 2, "m": "x", "p": {"a": 1}}\n')
    assert ingest(config, [str(old)], format="json").parsed == 1
    assert ingest(config, [str(new)], format="json").parsed == 1
    with Connection(config) as c:
        assert c.sql("SELECT n, m FROM logs.json WHERE ts < '2021-01-01'").fetchall() == [(1, None)]
        assert c.sql("SELECT n, m, p FROM logs.json ORDER BY n").fetchall() == [
            (1, None, None),
            (2, "x", {"a": 1}),
        ]
        assert c.sql("SELECT count(*) FROM logs.json WHERE ts > '2030-01-01'").fetchall() == [(0,)]
