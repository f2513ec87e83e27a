"""Athena (Trino) functions answer as Athena answers, or are refused naming the function.

Expected values are written from Trino's function documentation (URL, string and regular
expression functions) and the Java rules it cites (java.net.URI, java.net.URLEncoder), not
computed by loglake. Every query runs through ``loglake.connect(home).sql(sql, dialect="athena")``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import loglake
from loglake.config import load_config
from loglake.errors import QueryError, QueryRefusedError
from loglake.ingest import ingest
from loglake.query.engine import Connection
from serving import Server, request

RunCli = Any  # the run_cli fixture from conftest.py

DOC_URL = "http://example.com/path1/p.php?k1=v1&k2=v2&k3&k4#Ref1"

REQUESTS = [
    "https://shop.example.com:8443/cart/add?item=42&qty=2#top",
    "http://user:pw@www.example.org/search?q=a%20b&q=second",
    "/health",
]


@pytest.fixture(scope="module")
def lake_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("athena")
    path = home / "requests.jsonl"
    lines = [
        json.dumps({"ts": f"2026-12-01T10:00:0{i}Z", "n": i, "url": url})
        for i, url in enumerate(REQUESTS)
    ]
    path.write_text("\n".join(lines) + "\n")
    stats = ingest(
        load_config(home=home, environ={}), [str(path)], format="json", table="logs.requests"
    )
    assert stats.parsed == len(REQUESTS) and stats.rejected == 0
    return home


@pytest.fixture(scope="module")
def con(lake_home: Path) -> Iterator[Connection]:
    with loglake.connect(str(lake_home)) as c:
        yield c


def one(con: Connection, expression: str) -> Any:
    rows = con.sql(f"SELECT {expression}", dialect="athena").fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1
    return rows[0][0]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # url_extract_protocol (Trino docs' examples)
        ("url_extract_protocol('http://localhost:8080/req_path')", "http"),
        ("url_extract_protocol('https://127.0.0.1:8080/req_path')", "https"),
        ("url_extract_protocol('ftp://path/file')", "ftp"),
        ("url_extract_protocol('/just/a/path')", None),
        # url_extract_host
        (f"url_extract_host('{DOC_URL}')", "example.com"),
        ("url_extract_host('https://user:pw@www.example.com:8080/a')", "www.example.com"),
        ("url_extract_host('http://[::1]:8080/a')", "[::1]"),
        ("url_extract_host('/relative/path')", None),
        # url_extract_port
        ("url_extract_port('http://localhost:8080/req_path')", 8080),
        (f"url_extract_port('{DOC_URL}')", None),
        # url_extract_path
        (f"url_extract_path('{DOC_URL}')", "/path1/p.php"),
        ("url_extract_path('http://example.com')", ""),
        ("url_extract_path('http://example.com/a%20b/c')", "/a b/c"),
        ("url_extract_path('/health?x=1')", "/health"),
        # url_extract_query
        (f"url_extract_query('{DOC_URL}')", "k1=v1&k2=v2&k3&k4"),
        ("url_extract_query('http://example.com/p')", None),
        ("url_extract_query('http://example.com/p?')", ""),
        # url_extract_fragment
        (f"url_extract_fragment('{DOC_URL}')", "Ref1"),
        ("url_extract_fragment('http://example.com/p?x=1')", None),
        # url_extract_parameter: first match wins, a key without '=' is '', absent is NULL,
        # the value is not decoded
        (f"url_extract_parameter('{DOC_URL}', 'k1')", "v1"),
        (f"url_extract_parameter('{DOC_URL}', 'k2')", "v2"),
        (f"url_extract_parameter('{DOC_URL}', 'k3')", ""),
        (f"url_extract_parameter('{DOC_URL}', 'k4')", ""),
        (f"url_extract_parameter('{DOC_URL}', 'k5')", None),
        (f"url_extract_parameter('{DOC_URL}', 'Ref1')", None),
        ("url_extract_parameter('http://e.com/?a=1&a=2', 'a')", "1"),
        ("url_extract_parameter('http://e.com/?q=a%20b+c', 'q')", "a%20b+c"),
        ("url_extract_parameter('http://e.com/?a.b=1&axb=2', 'a.b')", "1"),
        ("url_extract_parameter('http://e.com/?xa=1&a=2', 'a')", "2"),
        ("url_extract_parameter('http://e.com/p', 'a')", None),
        # url_encode: letters, digits and . - * _ kept; space is '+'; the rest %XX of UTF-8
        ("url_encode('hello world')", "hello+world"),
        ("url_encode('a.b-c*d_e')", "a.b-c*d_e"),
        ("url_encode('~é')", "%7E%C3%A9"),
        (
            "url_encode('http://username:password@host:8080/index?parameterName=parameterValue#fragment')",
            "http%3A%2F%2Fusername%3Apassword%40host%3A8080%2Findex%3F"
            "parameterName%3DparameterValue%23fragment",
        ),
        # url_decode: the inverse of url_encode ('+' is a space)
        ("url_decode('hello+world')", "hello world"),
        ("url_decode('a%2Bb%20c')", "a+b c"),
        ("url_decode('%7E%C3%A9')", "~é"),
        ("url_decode(url_encode('a b&c=d/é*'))", "a b&c=d/é*"),
    ],
)
def test_url_functions(con: Connection, expression: str, expected: object) -> None:
    assert one(con, expression) == expected


def test_url_functions_over_a_lake_column(con: Connection) -> None:
    rows = con.sql(
        "SELECT url_extract_host(url), url_extract_port(url), url_extract_path(url), "
        "url_extract_parameter(url, 'q'), url_extract_parameter(url, 'qty') "
        "FROM logs.requests ORDER BY n",
        dialect="athena",
    ).fetchall()
    assert rows == [
        ("shop.example.com", 8443, "/cart/add", None, "2"),
        ("www.example.org", None, "/search", "a%20b", None),
        (None, None, "/health", None, None),
    ]
    counted = con.sql(
        "SELECT url_extract_host(url) AS host, count(*) AS n FROM logs.requests "
        "GROUP BY 1 ORDER BY 1 NULLS LAST",
        dialect="athena",
    ).fetchall()
    assert counted == [("shop.example.com", 1), ("www.example.org", 1), (None, 1)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # split_part: "If the index is larger than the number of fields, then null is returned."
        ("split_part('a,b,c', ',', 2)", "b"),
        ("split_part('a,b,c', ',', 3)", "c"),
        ("split_part('a,b,c', ',', 4)", None),
        ("split_part('a,,c', ',', 2)", ""),
        ("split_part('2026-12-01', '-', 1)", "2026"),
        ("split_part('abc', ',', 2)", None),
        # regexp_extract: NULL without a match (Trino docs' examples otherwise)
        ("regexp_extract('1a 2b 14m', '\\d+')", "1"),
        ("regexp_extract('1a 2b 14m', '(\\d+)([a-z]+)', 2)", "a"),
        ("regexp_extract('abc', '\\d+')", None),
        ("regexp_extract('abc', '(\\d+)', 1)", None),
        # ... NULL for a group that took no part in the match, '' for one that matched nothing
        ("regexp_extract('ab', 'a(\\d+)?', 1)", None),
        ("regexp_extract('a12b', 'a(\\d+)?', 1)", "12"),
        ("regexp_extract('ab', 'a(\\d*)b', 1)", ""),
        ("regexp_extract('b', '(a)|(b)', 1)", None),
        ("regexp_extract('b', '(a)|(b)', 2)", "b"),
        ("regexp_extract('GET /x', '^(GET|POST) (?:/api/(\\w+))?', 2)", None),
        ("regexp_extract('GET /api/v1', '^(GET|POST) (?:/api/(\\w+))?', 2)", "v1"),
        ("regexp_extract('e1', '\\p{L}(\\d+)?', 1)", "1"),
        ("regexp_extract('e', '\\p{L}(\\d+)?', 1)", None),
        # a group that can both match nothing and take no part
        ("regexp_extract('ab', 'a(\\d*)?', 1)", ""),
        ("regexp_extract('a', '(?:a(x*))?b|a', 1)", None),
        # Trino's own tests (AbstractTestRegexpFunctions.testRegexpExtract)
        ("regexp_extract('rat cat\nbat dog', 'ra(.)|blah(.)(.)', 2)", None),
        ("regexp_extract('Hello world bye', '\\b[a-z]([a-z]*)', 1)", "orld"),
        ("regexp_extract('Baby X', 'by ([A-Z].*)\\b[a-z]')", None),
        # regexp_replace: Java's $n group references and \\$ for a dollar (Trino docs' examples)
        ("regexp_replace('1a 2b 14m', '\\d+[ab] ')", "14m"),
        ("regexp_replace('1a 2b 14m', '(\\d+)([ab]) ', '3c$2 ')", "3ca 3cb 14m"),
        ("regexp_replace('abc', '(b)', '[$1$1]')", "a[bb]c"),
        ("regexp_replace('abc', 'b', '\\$')", "a$c"),
        ("regexp_replace('a-b', '(\\w)-(\\w)', '$2-$1')", "b-a"),
    ],
)
def test_null_semantics_and_group_references(
    con: Connection, expression: str, expected: object
) -> None:
    assert one(con, expression) == expected


def test_regexp_extract_of_an_optional_group_over_a_lake_column(con: Connection) -> None:
    rows = con.sql(
        "SELECT regexp_extract(url, '^https?://[^/:]+(?::(\\d+))?/', 1) FROM logs.requests "
        "ORDER BY n",
        dialect="athena",
    ).fetchall()
    # A port; a URL without one (the group took no part); a path that does not match.
    assert rows == [("8443",), (None,), (None,)]
    # A pattern known only at run time: the same answers.
    rows = con.sql(
        "SELECT regexp_extract(url, concat('^https?://[^/:]+', '(?::(\\d+))?/'), 1) "
        "FROM logs.requests ORDER BY n",
        dialect="athena",
    ).fetchall()
    assert rows == [("8443",), (None,), (None,)]


def test_split_part_past_the_last_field_over_a_lake_column(con: Connection) -> None:
    rows = con.sql(
        "SELECT split_part(url, '/', 4) FROM logs.requests ORDER BY n", dialect="athena"
    ).fetchall()
    # 'https:' '' 'shop.example.com:8443' 'cart' ...; '/health' has only two fields.
    assert rows == [("cart",), ("search?q=a%20b&q=second",), (None,)]


def test_regexp_replace_group_reference_from_a_column(con: Connection) -> None:
    rows = con.sql(
        "SELECT regexp_replace(url, '^(https?)://([^/:]+).*$', '$2 via $1') "
        "FROM logs.requests WHERE n < 2 ORDER BY n",
        dialect="athena",
    ).fetchall()
    assert rows == [("shop.example.com via https",), ("user via http",)]


@pytest.mark.parametrize(
    ("sql", "named", "alternative"),
    [
        ("SELECT strpos('abcabc', 'c', 2)", "strpos()", "strpos(s, sub)"),
        (
            "SELECT approx_percentile(n, n, 0.5) FROM logs.requests",
            "approx_percentile()",
            "UNNEST(sequence(1, w))",
        ),
        ("SELECT approx_set(n) FROM logs.requests", "approx_set()", "approx_count_distinct(x)"),
        ("SELECT json_array_get('[1, 2]', 0)", "json_array_get()", "json_extract(json, '$[i]')"),
        (
            "SELECT zip_with(ARRAY[1], ARRAY[2], (x, y) -> x + y)",
            "zip_with()",
            "transform(sequence(1, cardinality(a))",
        ),
        ("SELECT no_such_function(1)", "no_such_function()", "Athena dialect"),
    ],
)
def test_untranslated_functions_are_refused_by_name(
    con: Connection, sql: str, named: str, alternative: str
) -> None:
    with pytest.raises(QueryRefusedError) as caught:
        con.sql(sql, dialect="athena")
    message = str(caught.value)
    assert f"Athena function {named}" in message
    assert alternative in message
    assert "lake tables" not in message


def test_wrong_argument_count_is_refused(con: Connection) -> None:
    with pytest.raises(QueryRefusedError, match=r"url_extract_parameter\(\) takes 2"):
        con.sql("SELECT url_extract_parameter('http://e.com/?a=1')", dialect="athena")


def test_a_missing_function_in_duckdb_sql_has_no_table_hint(con: Connection) -> None:
    with pytest.raises(Exception) as caught:
        con.sql("SELECT no_such_function(1)")
    assert "no_such_function" in str(caught.value)
    assert "lake tables" not in str(caught.value)


def test_other_dialects_are_not_rewritten(con: Connection) -> None:
    # Spark's split_part is its own; only Athena/Trino/Presto get Trino's NULL semantics.
    assert con.sql("SELECT split_part('a,b', ',', 1)", dialect="spark").fetchall() == [("a",)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # count_if: "the number of TRUE input values", a bigint
        ("SELECT count_if(x > 1) FROM (VALUES 1, 2, 3, NULL) t(x)", [(2,)]),
        ("SELECT count_if(x > 1) FILTER (WHERE x < 3) FROM (VALUES 1, 2, 3) t(x)", [(1,)]),
        (
            "SELECT x, count_if(x > 1) OVER (ORDER BY x) FROM (VALUES 1, 2, 3) t(x) ORDER BY x",
            [(1, 0), (2, 1), (3, 2)],
        ),
        # cardinality: the size of an array or a map
        ("SELECT cardinality(ARRAY[1, 2, 3]), cardinality(ARRAY[])", [(3, 0)]),
        ("SELECT cardinality(MAP(ARRAY['a', 'b'], ARRAY[1, 2]))", [(2,)]),
        # element_at: 1-based, negative from the end, NULL past the end or for an absent key
        (
            "SELECT element_at(ARRAY[1, 2, 3], 2), element_at(ARRAY[1, 2, 3], -1), "
            "element_at(ARRAY[1, 2, 3], 5)",
            [(2, 3, None)],
        ),
        (
            "SELECT element_at(MAP(ARRAY['a', 'b'], ARRAY[1, 2]), 'b'), "
            "element_at(MAP(ARRAY['a'], ARRAY[1]), 'z')",
            [(2, None)],
        ),
    ],
)
def test_collection_functions(con: Connection, sql: str, expected: list[tuple[Any, ...]]) -> None:
    assert con.sql(sql, dialect="athena").fetchall() == expected


def test_count_if_and_cardinality_are_bigint(con: Connection) -> None:
    table = con.sql(
        "SELECT count_if(n > 0) AS c, cardinality(ARRAY[1]) AS k FROM logs.requests",
        dialect="athena",
    ).arrow()
    assert table.to_pylist() == [{"c": 2, "k": 1}]
    assert [str(t) for t in table.schema.types] == ["int64", "int64"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Trino: "/ Division (integer division performs truncation)"
        ("SELECT 7 / 2, -7 / 2, 9 / 3", [(3, -3, 3)]),
        ("SELECT CAST(7 AS bigint) / 2, CAST(-9 AS bigint) / CAST(4 AS bigint)", [(3, -2)]),
        ("SELECT 7.0 / 2, 7 / 2.0, CAST(7 AS double) / 2", [(Decimal("3.5"), Decimal("3.5"), 3.5)]),
        ("WITH t AS (SELECT 9 AS a) SELECT a / 2 FROM t", [(4,)]),
        ("SELECT n / 2 FROM logs.requests ORDER BY n", [(0,), (0,), (1,)]),
        ("SELECT max(n) / count(*), avg(n) / 2 FROM logs.requests", [(0, 0.5)]),
        ("SELECT count(*) * 100 / 3 FROM logs.requests", [(100,)]),
    ],
)
def test_integer_division_truncates(con: Connection, sql: str, expected: list[Any]) -> None:
    rows = con.sql(sql, dialect="athena").fetchall()
    assert rows == expected
    # An integer answer is an integer, not 3.0.
    for row, want in zip(rows, expected, strict=True):
        for value, wanted in zip(row, want, strict=True):
            assert isinstance(value, int) == isinstance(wanted, int), (sql, row)


def test_duckdb_sql_keeps_duckdb_division(con: Connection) -> None:
    assert con.sql("SELECT 7 / 2").fetchall() == [(3.5,)]


def test_cli_query_with_the_athena_dialect(run_cli: RunCli) -> None:
    out = run_cli(
        "query",
        "--dialect",
        "athena",
        "--format",
        "json",
        f"SELECT url_extract_parameter('{DOC_URL}', 'k2') AS k2, "
        "url_decode('a+b') AS decoded, split_part('a,b', ',', 3) AS past, 7 / 2 AS half",
    )
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"k2": "v2", "decoded": "a b", "past": None, "half": 3}
    ]
    refused = run_cli("query", "--dialect", "athena", "SELECT approx_set(1)", check=False)
    assert refused.returncode != 0
    assert "Athena function approx_set() is not translated" in refused.stderr
    assert "approx_count_distinct" in refused.stderr and "lake tables" not in refused.stderr
    assert "Traceback" not in refused.stderr


def test_null_in_null_out(con: Connection) -> None:
    functions = [
        "url_extract_host(NULL)",
        "url_extract_path(NULL)",
        "url_extract_port(NULL)",
        "url_extract_protocol(NULL)",
        "url_extract_query(NULL)",
        "url_extract_fragment(NULL)",
        "url_extract_parameter(NULL, 'a')",
        "url_extract_parameter('http://e.com/?a=1', NULL)",
        "url_encode(NULL)",
        "url_decode(NULL)",
        "split_part(NULL, ',', 1)",
        "regexp_extract(NULL, 'a')",
    ]
    rows = con.sql(f"SELECT {', '.join(functions)}", dialect="athena").fetchall()
    assert rows == [(None,) * len(functions)]


@pytest.mark.parametrize("index", ["0", "-1"])
def test_split_part_index_below_one_is_an_error(con: Connection, index: str) -> None:
    with pytest.raises(QueryError, match="index must be greater than zero"):
        con.sql(f"SELECT split_part('a,b', ',', {index})", dialect="athena")


def test_console_sql_api_with_the_athena_dialect(tmp_path: Path) -> None:
    server = Server.started(tmp_path / "home", '[syslog]\nudp = ""\ntcp = ""\n')
    try:
        url = server.url + "/v1/sql"
        sql = (
            "SELECT url_extract_host('https://user@shop.example.com:8443/a?b=c') AS host, "
            "url_encode('a b~') AS encoded, regexp_extract('abc', '\\d') AS digit, 9 / 2 AS half"
        )
        status, body, _ = request(
            "POST", url, json.dumps({"sql": sql, "dialect": "athena"}).encode()
        )
        assert status == 200, body
        assert [c["name"] for c in body["columns"]] == ["host", "encoded", "digit", "half"]
        assert body["data"] == [["shop.example.com"], ["a+b%7E"], [None], [4]]
        refused = {"sql": "SELECT approx_set(1)", "dialect": "athena"}
        status, body, _ = request("POST", url, json.dumps(refused).encode())
        assert status in (400, 403), body
        message = body["error"]["message"]
        assert "Athena function approx_set() is not translated" in message
        assert "approx_count_distinct(x)" in message and "lake tables" not in message
    finally:
        server.stop()


def test_rewritten_columns_keep_the_name_of_the_call(con: Connection) -> None:
    result = con.sql(
        "SELECT url_extract_host(url), split_part(url, '/', 2) AS part, count(*) "
        "FROM logs.requests GROUP BY url_extract_host(url), split_part(url, '/', 2) "
        "ORDER BY url_extract_host(url) NULLS LAST",
        dialect="athena",
    )
    assert result.columns == ["url_extract_host(url)", "part", "count_star()"]
    assert result.fetchall() == [
        ("shop.example.com", "", 1),
        ("www.example.org", "", 1),
        (None, "health", 1),
    ]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Trino's DecimalOperators: 100.0 is decimal(4,1); a division has the larger scale,
        # rounded HALF_UP.
        (
            "SELECT 100.0 / 3, 200.0 / 3, -200.0 / 3, 1 / 3.00",
            [(Decimal("33.3"), Decimal("66.7"), Decimal("-66.7"), Decimal("0.33"))],
        ),
        ("SELECT count(*) * 100.0 / 3 FROM logs.requests", [(Decimal("100.0"),)]),
        ("SELECT count_if(n > 0) * 100.0 / count(*) FROM logs.requests", [(Decimal("66.7"),)]),
        ("SELECT 0.5 * 3 / 2, 2.5 / 0.5", [(Decimal("0.8"), Decimal("5.0"))]),
        (
            "WITH t AS (SELECT count(*) * 100.0 AS pct FROM logs.requests) SELECT pct / 7 FROM t",
            [(Decimal("42.9"),)],
        ),
        ("SELECT avg(x) FROM (VALUES 1.5, 2.0, 2.25) t(x)", [(Decimal("1.92"),)]),
        ("SELECT sum(x) / count(x) FROM (VALUES 1.5, 2.25) t(x)", [(Decimal("1.88"),)]),
        ("SELECT CAST(NULL AS decimal(4,1)) / 2", [(None,)]),
        ("SELECT 1.5E0 / 2, 1.0 / CAST(4 AS double)", [(0.75, 0.25)]),
        # bigint / decimal(5,1) has scale 1: 1 / 1000.0 is 0.0 in Athena
        ("SELECT n / 1000.0 FROM logs.requests WHERE n = 1", [(Decimal("0.0"),)]),
        # the common type of COALESCE, CASE and greatest arguments
        (
            "SELECT coalesce(n, 0) / 2.0, CASE WHEN n > 0 THEN n ELSE 0 END / 2.0, "
            "greatest(n, 1.25) / 2 FROM logs.requests WHERE n = 1",
            [(Decimal("0.5"), Decimal("0.5"), Decimal("0.63"))],
        ),
        ("SELECT x / 2.0 FROM (VALUES 1, 2.5) t(x)", [(Decimal("0.5"),), (Decimal("1.3"),)]),
        # a NULLIF denominator (zero becomes NULL, not an error)
        (
            "SELECT count(*) * 100.0 / nullif(sum(n), 0), count(*) * 100.0 / nullif(0, 0) "
            "FROM logs.requests",
            [(Decimal("100.0"), None)],
        ),
        ("SELECT try(100.0 / 0)", [(None,)]),
    ],
)
def test_decimal_literals_and_division(
    con: Connection, sql: str, expected: list[tuple[Any, ...]]
) -> None:
    rows = con.sql(sql, dialect="athena").fetchall()
    assert rows == expected
    for row, want in zip(rows, expected, strict=True):
        assert [type(v) for v in row] == [type(w) for w in want], sql


@pytest.mark.parametrize(
    "sql", ["SELECT 100.0 / 0", "SELECT 7 / 0", "SELECT n / 0 FROM logs.requests"]
)
def test_division_by_zero_is_an_error(con: Connection, sql: str) -> None:
    with pytest.raises(QueryError, match="Division by zero"):
        con.sql(sql, dialect="athena").fetchall()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # String.valueOf(double): plain from 10^-3 to 10^7, else scientific (Java's format).
        (
            "SELECT CAST(1.0E0 AS varchar), CAST(1e7 AS varchar), CAST(12345678.9E0 AS varchar), "
            "CAST(-1.5E-5 AS varchar), CAST(0.001E0 AS varchar), CAST(0.0001E0 AS varchar), "
            "CAST(1e100 AS varchar), CAST(0E0 AS varchar)",
            [("1.0", "1.0E7", "1.23456789E7", "-1.5E-5", "0.001", "1.0E-4", "1.0E100", "0.0")],
        ),
        (
            "SELECT CAST(nan() AS varchar), CAST(-infinity() AS varchar), CAST(true AS varchar), "
            "CAST(1.50 AS varchar), CAST(REAL '2.5' AS varchar)",
            [("NaN", "-Infinity", "true", "1.50", "2.5")],
        ),
        # timestamp(p) text has p fractional digits; a lake's Iceberg timestamp is (6).
        (
            "SELECT CAST(TIMESTAMP '2020-01-01 00:00:00' AS varchar), "
            "CAST(TIMESTAMP '2020-01-01 00:00:00.120' AS varchar), CAST(ts AS varchar) "
            "FROM logs.requests WHERE n = 0",
            [("2020-01-01 00:00:00", "2020-01-01 00:00:00.120", "2026-12-01 10:00:00.000000")],
        ),
        # DoubleOperators.castToLong: HALF_UP (away from zero); DuckDB rounds half to even.
        (
            "SELECT CAST(2.5E0 AS bigint), CAST(-2.5E0 AS bigint), CAST(3.5E0 AS integer), "
            "CAST(2.4E0 AS bigint), try_cast(0.5E0 AS bigint), CAST(2.5 AS bigint)",
            [(3, -3, 4, 2, 1, 3)],
        ),
        # round(double, n): Math.round(x * 10^n) / 10^n, symmetric around zero.
        (
            "SELECT round(2.5E0), round(-2.5E0), round(1.005E0, 2), round(-0.125E0, 2), "
            "round(123.456E0, -1), round(2.45, 1)",
            [(3.0, -3.0, 1.0, -0.13, 120.0, Decimal("2.5"))],
        ),
    ],
)
def test_casts_and_rounding(con: Connection, sql: str, expected: list[tuple[Any, ...]]) -> None:
    assert con.sql(sql, dialect="athena").fetchall() == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # map_agg: NULL keys skipped; one value of a repeated key (which one is arbitrary)
        (
            "SELECT map_agg(k, v) FROM (VALUES ('a', 1), ('b', 2), (NULL, 3)) t(k, v)",
            [([("a", 1), ("b", 2)],)],
        ),
        ("SELECT map_agg(k, v) FROM (VALUES ('a', 1)) t(k, v) WHERE v > 5", [(None,)]),
        # histogram: map(K, bigint), NULL not counted
        (
            "SELECT histogram(x) FROM (VALUES 'a', 'b', 'a', NULL) t(x)",
            [([("a", 2), ("b", 1)],)],
        ),
        # approximate aggregates answered exactly
        ("SELECT approx_distinct(x) FROM (VALUES 'a', 'b', 'a', NULL) t(x)", [(2,)]),
        (
            "SELECT approx_percentile(x, 0.5), approx_percentile(x, ARRAY[0.25, 0.75]) "
            "FROM (VALUES 1, 2, 3, 4) t(x)",
            [(2, [1, 3])],
        ),
        (
            "SELECT approx_most_frequent(2, x, 100) FROM (VALUES 'a', 'b', 'a', 'c', 'c', 'c') t(x)",
            [([("c", 3), ("a", 2)],)],
        ),
        # max_by/min_by: the x of the row with the largest y, NULL included; NULL y skipped
        (
            "SELECT max_by(x, y), min_by(x, y), max_by(x, y, 2) "
            "FROM (VALUES ('a', NULL), (NULL, 3), ('b', 1), ('c', 2)) t(x, y)",
            [(None, "b", [None, "c"])],
        ),
        ("SELECT arbitrary(x) FROM (VALUES NULL, 7) t(x)", [(7,)]),
        # contains: not found in an array holding NULL is NULL
        (
            "SELECT contains(ARRAY[1, NULL], 2), contains(ARRAY[1, NULL], 1), "
            "contains(ARRAY[1], 2)",
            [(None, True, False)],
        ),
        # try, try_cast: NULL instead of the error
        (
            "SELECT try(7 / 0), try(CAST('x' AS integer)), try_cast('12' AS integer)",
            [(None, None, 12)],
        ),
        (
            "SELECT x, i FROM UNNEST(ARRAY['a', 'b']) WITH ORDINALITY AS t(x, i)",
            [("a", 1), ("b", 2)],
        ),
        # NULL in, NULL out: concat, ||, greatest/least
        (
            "SELECT concat('a', NULL) AS c, 'a' || NULL AS p, greatest(1, NULL, 3) AS g, "
            "least(1, NULL) AS l",
            [(None, None, None, None)],
        ),
        (
            "SELECT array_join(ARRAY['a', NULL, 'b'], ','), array_join(ARRAY['a', NULL], ',', 'x'), "
            "regexp_like('abc', 'b'), regexp_extract_all('1a 2b 14m', '\\d+'), strpos('abc', 'c'), "
            "length('héllo'), upper('àb')",
            [("a,b", "a,x", True, ["1", "2", "14"], 3, 5, "ÀB")],
        ),
        (
            "SELECT x, grouping(x), count(*) FROM (VALUES 'a', 'b', 'a') t(x) "
            "GROUP BY ROLLUP (x) ORDER BY x",
            [("a", 0, 2), ("b", 0, 1), (None, 1, 3)],
        ),
        (
            "SELECT x, rank() OVER (ORDER BY y DESC), row_number() OVER (ORDER BY y), "
            "lag(x) OVER (ORDER BY y) FROM (VALUES ('a', 1), ('b', 2)) t(x, y) ORDER BY x",
            [("a", 2, 1, None), ("b", 1, 2, "a")],
        ),
        (
            'SELECT "user-agent", count(DISTINCT n) FROM (SELECT \'ua\' AS "user-agent", n '
            "FROM logs.requests WHERE n BETWEEN 1 AND 2) GROUP BY 1 LIMIT 5",
            [("ua", 2)],
        ),
        # ORDER BY: NULLS LAST for ASC and DESC alike
        ("SELECT x FROM (VALUES 1, NULL, 2) t(x) ORDER BY x DESC", [(2,), (1,), (None,)]),
        ("SELECT 'a' < 'B', 'a_c' LIKE 'a\\_c' ESCAPE '\\', 2 IN (1, NULL)", [(False, True, None)]),
    ],
)
def test_aggregates_and_functions(
    con: Connection, sql: str, expected: list[tuple[Any, ...]]
) -> None:
    assert con.sql(sql, dialect="athena").fetchall() == expected


def test_a_decimal_division_of_unknown_types_is_refused(con: Connection) -> None:
    with pytest.raises(QueryRefusedError, match="cast the operands"):
        con.sql("SELECT sign(x * 1.0) / 3 FROM (VALUES 1) t(x)", dialect="athena")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        # Trino's subscript operator fails where element_at gives NULL (functions/array.html).
        ("SELECT ARRAY[1, 2][5]", "Array subscript must be less than or equal to array length"),
        ("SELECT ARRAY[1, 2][0]", "SQL array indices start at 1"),
        ("SELECT ARRAY[1, 2][-1]", "Array subscript is negative"),
        ("SELECT split('a.b', '.')[3]", "Array subscript must be less than or equal"),
        ("SELECT element_at(ARRAY[1, 2], 0)", "SQL array indices start at 1"),
        ("SELECT MAP(ARRAY['a'], ARRAY[1])['z']", "Key not present in map"),
    ],
)
def test_subscripts_fail_as_in_athena(con: Connection, sql: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        con.sql(sql, dialect="athena").fetchall()


def test_subscripts_within_bounds(con: Connection) -> None:
    rows = con.sql(
        "SELECT ARRAY[1, 2][2] AS a, split('a.b', '.')[1] AS b, element_at(ARRAY[1, 2], 5) AS c, "
        "element_at(ARRAY[1, 2], -1) AS d, MAP(ARRAY['a'], ARRAY[1])['a'] AS e, "
        "element_at(MAP(ARRAY['a'], ARRAY[1]), 'z') AS f",
        dialect="athena",
    ).fetchall()
    assert rows == [(2, "a", None, 2, 1, None)]


def test_try_makes_failed_subscripts_and_arguments_null(con: Connection) -> None:
    rows = con.sql(
        "SELECT try(ARRAY[1, 2][5]) AS a, try(split_part('a,b', ',', 0)) AS b, "
        "try(trim_array(ARRAY[1], 3)) AS c, try(element_at(ARRAY[1], 0)) AS d, "
        "try(split('a.b', '.', 0)) AS e, try(MAP(ARRAY['a'], ARRAY[1])['z']) AS f, "
        "try(MAP(ARRAY['a'], ARRAY[1])['a']) AS g",
        dialect="athena",
    ).fetchall()
    assert rows == [(None, None, None, None, None, None, 1)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # ArraySliceFunction: a start (negative from the end) and a length
        (
            "SELECT slice(ARRAY[1, 2, 3, 4], 2, 2) AS a, slice(ARRAY[1, 2, 3, 4], -2, 2) AS b, "
            "slice(ARRAY[1, 2, 3, 4], 3, 10) AS c, slice(ARRAY[1, 2], -5, 2) AS d",
            [([2, 3], [3, 4], [3, 4], [])],
        ),
        # sequence(): counts down without a step when start > stop
        (
            "SELECT sequence(1, 5) AS a, sequence(5, 1) AS b, sequence(1, 5, 2) AS c, "
            "sequence(5, 1, -2) AS d",
            [([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [1, 3, 5], [5, 3, 1])],
        ),
        # array_distinct/array_union keep first occurrences in order; array_max with a NULL
        (
            "SELECT array_distinct(ARRAY[2, 1, 2, NULL, 1, NULL]) AS a, "
            "array_union(ARRAY[3, 1], ARRAY[1, 2]) AS b, array_max(ARRAY[1, NULL]) AS c, "
            "array_min(ARRAY[3, 1]) AS d",
            [([2, 1, None], [3, 1, 2], None, 1)],
        ),
        ("SELECT reverse(ARRAY[1, 2, 3]) AS a, reverse('abc') AS b", [([3, 2, 1], "cba")]),
        # StringFunctions.substr: start 0 or before the beginning, or a length below 1, is ''
        (
            "SELECT substr('abc', 0) AS a, substr('abc', -5) AS b, substr('abcdef', -3, 2) AS c, "
            "substr('abc', 2, 0) AS d, substring('abcdef', 2, 3) AS e, substr(NULL, 0) AS f",
            [("", "", "de", "", "bcd", None)],
        ),
        (
            "SELECT is_finite(1E0) AS a, is_infinite(infinity()) AS b, "
            "arrays_overlap(ARRAY[1, 2], ARRAY[2, 3]) AS c, arrays_overlap(ARRAY[1, NULL], "
            "ARRAY[3]) AS d, arrays_overlap(ARRAY[1], ARRAY[3]) AS e, round(e(), 5) AS f",
            [(True, True, True, None, False, 2.71828)],
        ),
    ],
)
def test_array_and_string_edges(con: Connection, sql: str, expected: list[tuple[Any, ...]]) -> None:
    assert con.sql(sql, dialect="athena").fetchall() == expected


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT slice(ARRAY[1], 0, 1)", "SQL array indices start at 1"),
        ("SELECT sequence(1, 5, -1)", "sequence stop value should be greater"),
        ("SELECT sequence(1, 10001)", "must not have more than 10000 entries"),
    ],
)
def test_array_argument_errors(con: Connection, sql: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        con.sql(sql, dialect="athena").fetchall()


def test_a_volatile_operand_is_evaluated_once(con: Connection) -> None:
    # The rewrites repeat their operand; rand() is bound once per row so every repetition sees
    # the same value.
    from loglake.query.engine import transpile

    for sql in (
        "SELECT CAST(rand() AS varchar)",
        "SELECT round(rand(), 2)",
        "SELECT CAST(rand() * 10 AS bigint)",
        "SELECT CAST(rand() AS decimal(4, 2)) / 3",
    ):
        assert "LIST_TRANSFORM" in transpile(sql, "athena").upper(), sql
    rows = con.sql(
        "SELECT regexp_like(CAST(rand() * 1000 AS varchar), '^[0-9]+[.][0-9]+(E-?[0-9]+)?$'), "
        "CAST(rand() * 10 AS bigint) BETWEEN 0 AND 10, round(rand(), 2) BETWEEN 0 AND 1 "
        "FROM UNNEST(sequence(1, 200)) AS t(i)",
        dialect="athena",
    ).fetchall()
    assert rows == [(True, True, True)] * 200
