"""SQL over the lake: results, sandbox refusals, time pruning, dialects, output formats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import loglake
from loglake.config import Config, load_config
from loglake.errors import QueryError, QueryRefusedError
from loglake.ingest import ingest
from loglake.query.engine import Connection
from loglake.query.prune import referenced_tables

SAMPLE_FIRST_HOUR = "2015-05-17 10:00:00"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Config:
    home = tmp_path_factory.mktemp("lake")
    config = load_config(home=home, environ={})
    stats = ingest(config, [str(shared_data / "apache_combined_10k.log")], format="combined")
    assert stats.parsed == 10_000
    return config


@pytest.fixture()
def con(lake: Config) -> Iterator[Connection]:
    with Connection(lake) as c:
        yield c


def test_python_api_converts_to_arrow_polars_pandas(lake: Config) -> None:
    con = loglake.connect(str(lake.home))
    result = con.sql("SELECT status, count(*) AS n FROM logs.access GROUP BY 1 ORDER BY 2 DESC")
    table = result.arrow()
    assert table.column_names == ["status", "n"]
    assert table.column("status")[0].as_py() == 200 and table.column("n")[0].as_py() == 9126
    assert result.pl().get_column("n").sum() == 10_000
    pandas = pytest.importorskip("pandas", reason="pandas is in the [test] extra")
    assert isinstance(result.df(), pandas.DataFrame) and int(result.df()["n"].sum()) == 10_000


def test_time_filter_prunes_files(con: Connection, lake: Config) -> None:
    sql = (
        f"SELECT count(*) FROM logs.access WHERE ts >= TIMESTAMP '{SAMPLE_FIRST_HOUR}' "
        "AND ts < TIMESTAMP '2015-05-17 11:00:00'"
    )
    ranges = referenced_tables(sql, {"logs.access"})
    start = int(datetime(2015, 5, 17, 10, tzinfo=UTC).timestamp() * 1e6)
    end = int(datetime(2015, 5, 17, 11, tzinfo=UTC).timestamp() * 1e6)
    assert ranges == {"logs.access": [(start, end)]}
    n = con.sql(sql).fetchall()[0][0]
    text = (
        Path(__file__).resolve().parents[2].parent / "shared/data/apache_combined_10k.log"
    ).read_text()
    assert n == text.count("[17/May/2015:10:") > 0
    # Only the files of that hour were bound to the view: every other file is absent.
    from loglake.query.policy import check_read_only

    locations, known = con._lake_tables()
    checked = check_read_only(con._parser, sql, known)
    bound = con._views(checked, locations, known)[-1]
    from loglake.query.plan import current_locations, get_plan

    plan = get_plan(lake, "logs.access", current_locations(lake)["logs.access"])  # type: ignore[index]
    assert len(plan.files) > 50
    assert sum(f.path in bound for f in plan.files) == 1


def test_pruning_is_not_applied_through_or_and_subqueries() -> None:
    known = {"logs.access"}
    assert referenced_tables(
        "SELECT 1 FROM logs.access WHERE ts > '2020-01-01' OR status = 1", known
    ) == {"logs.access": None}
    sql = (
        "SELECT * FROM (SELECT ts + INTERVAL 1 HOUR AS ts FROM logs.access) WHERE ts > '2020-01-01'"
    )
    assert referenced_tables(sql, known) == {"logs.access": None}
    sql = "SELECT a.ts FROM logs.access a JOIN logs.access b ON a.line = b.line WHERE ts > '2020-01-01'"
    assert referenced_tables(sql, known) == {"logs.access": None}  # unqualified ts, two tables


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY statements are not allowed"),
        ("ATTACH '/tmp/x.db' AS x", "ATTACH statements are not allowed"),
        ("INSTALL httpfs", "not allowed"),
        ("LOAD httpfs", "not allowed"),
        ("SET enable_external_access = true", "not allowed"),
        ("CREATE TABLE t AS SELECT 1", "CREATE statements are not allowed"),
        ("DROP VIEW logs.access", "not allowed"),
        ("SELECT 1; SELECT 2", "exactly one SQL statement"),
        ("SELECT * FROM read_csv('/etc/passwd')", r"read_csv\(\) is not allowed"),
        ("SELECT * FROM read_text('/etc/hostname')", r"read_text\(\) is not allowed"),
    ],
)
def test_sandbox_refusals(con: Connection, sql: str, message: str) -> None:
    with pytest.raises(QueryRefusedError, match=message):
        con.sql(sql)


def test_sandbox_cannot_be_reconfigured_through_functions(con: Connection) -> None:
    with pytest.raises(QueryError):
        con.sql("SELECT * FROM glob('/etc/*')")
    with pytest.raises(QueryError):
        con.sql("SELECT current_setting('x'), set_config('enable_external_access', 'true')")


def test_sql_errors_are_clear(con: Connection) -> None:
    with pytest.raises(QueryError, match=r"lake tables: logs\.access"):
        con.sql("SELECT * FROM logs.nope")
    with pytest.raises(QueryError, match="syntax error"):
        con.sql("SELEC 1")


def test_row_limit(lake: Config) -> None:
    from dataclasses import replace

    limited = replace(lake, query=replace(lake.query, max_rows=7))
    with Connection(limited) as c:
        result = c.sql("SELECT * FROM logs.access")
        assert len(result) == 7 and result.truncated


def test_athena_dialect(con: Connection) -> None:
    sql = (
        "SELECT date_format(ts, '%Y-%m-%d') AS day, count(*) AS n FROM logs.access "
        "WHERE from_iso8601_timestamp('2015-05-18T00:00:00Z') <= ts GROUP BY 1 ORDER BY 1 LIMIT 1"
    )
    rows = con.sql(sql, dialect="athena").fetchall()
    assert rows[0][0] == "2015-05-18" and rows[0][1] > 0
    assert con.sql('SELECT count(*) FROM "logs"."access"', dialect="athena").fetchall() == [
        (10_000,)
    ]


def test_cli_output_formats(run_cli, lake: Config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"LOGLAKE_HOME": str(lake.home)}
    sql = "SELECT status, count(*) AS n FROM logs.access GROUP BY 1 ORDER BY 2 DESC LIMIT 2"
    csv_out = run_cli("query", "--format", "csv", sql, env=env).stdout.splitlines()
    assert csv_out == ["status,n", "200,9126", "304,445"]
    js = [
        json.loads(x)
        for x in run_cli("query", "--format", "json", sql, env=env).stdout.splitlines()
    ]
    assert js == [{"status": 200, "n": 9126}, {"status": 304, "n": 445}]
    table = run_cli("query", sql, env=env).stdout
    assert "9126" in table and "status" in table
    out = tmp_path / "r.parquet"
    run_cli("query", "--format", "parquet", "--output", str(out), sql, env=env)
    assert pq.read_table(out).to_pylist() == js
    refused = run_cli("query", "DELETE FROM logs.access", env=env, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error: DELETE statements")


def test_columns_of_one_name_are_all_kept(con: Connection, lake: Config) -> None:
    """SELECT 1 AS a, 2 AS a: both values reach fetchall(), the JSON output and pandas."""
    result = con.sql("SELECT 1 AS a, 2 AS a, 3 AS b, 4 AS a_1")
    assert result.fetchall() == [(1, 2, 3, 4)]
    assert result.columns == ["a", "a_2", "b", "a_1"]
    assert result.df().to_dict("records") == [{"a": 1, "a_2": 2, "b": 3, "a_1": 4}]
    athena = con.sql("SELECT count(*), count(*) FROM logs.access", dialect="athena")
    assert len(set(athena.fetchall()[0])) == 1 and len(athena.columns) == 2
