"""The Explore page's API over real HTTP, and the SQL it builds: the filter language and its
quoting, bucket sizes, keyset paging that returns every record once across pages full of ties,
histogram, top values, tail, records around one and downloads against the same SQL run by the
query engine or by ``loglake query``, and 4xx answers for bad input."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loglake.server.console.explore import (
    BUCKETS,
    MAX_BUCKETS,
    BadViewError,
    Cursor,
    TableInfo,
    Term,
    check_where,
    choose_bucket,
    from_micros,
    micros,
    next_cursor,
    parse_filter,
    term_text,
    window_starts,
)
from serving import Server, request

ACCESS = "logs.access"
ORDER = "ts DESC, source DESC NULLS LAST, line DESC NULLS LAST"
#: Records posted to the stream with a few time stamps shared by many (in 2020, apart from the
#: generated ones): 450 at :01, 7 at :02, 330 at :03, and 13 a minute later one second apart.
TIE_GROUPS = [("00:00:01", 450), ("00:00:02", 7), ("00:00:03", 330)]
TIE_DAY = ("2020-01-01 00:00:00", "2020-01-01 00:05:00")
ODD_AGENT = 'odd "agent": with quotes, colons\\ and a backslash'


# -- the filter, bucket and cursor, without a server ------------------------------------------------


def test_filter_terms_negation_quotes_and_free_text() -> None:
    terms = parse_filter('status:404 -method:POST path:"/a b" "free text" word -"not this"')
    assert terms == [
        Term("status", "404"),
        Term("method", "POST", negated=True),
        Term("path", "/a b"),
        Term(None, "free text"),
        Term(None, "word"),
        Term(None, "not this", negated=True),
    ]
    assert parse_filter("bytes:>=500 bytes:<9 ua_device:* -user:* path:/api/*") == [
        Term("bytes", "500", ">="),
        Term("bytes", "9", "<"),
        Term("ua_device", None),
        Term("user", None, negated=True),
        Term("path", "/api/*", wildcard=True),
    ]
    # a quoted value is literal: no wildcard, no operator
    assert parse_filter('path:"/api/*" q:">=5"') == [Term("path", "/api/*"), Term("q", ">=5")]
    assert parse_filter('a:"x \\"y\\" \\\\z"') == [Term("a", 'x "y" \\z')]
    assert parse_filter("   ") == []


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'with "quotes"',
        "colon: here",
        "a:b:c",
        "back\\slash",
        "-leading-dash",
        ">=5",
        "star*",
        "",
        " spaces ",
        "ünïcode ✓",
        ODD_AGENT,
        '\\"',
    ],
)
def test_a_value_is_quoted_so_that_it_parses_back_to_itself(value: str) -> None:
    text = term_text("user_agent", value)
    assert text is not None
    assert parse_filter(text) == [Term("user_agent", value)]
    assert parse_filter("-" + text) == [Term("user_agent", value, negated=True)]
    # next to other terms too
    assert parse_filter(f"status:200 {text} x")[1] == Term("user_agent", value)


def test_term_text_of_other_values() -> None:
    assert term_text("status", 404) == "status:404"
    assert term_text("is_bot", True) == "is_bot:true"
    assert term_text("ts", "2026-01-01 10:00:00.000000") == 'ts:"2026-01-01 10:00:00.000000"'
    assert term_text("user", None) == "-user:*"
    assert term_text("has space", "x") is None  # cannot be written as a term: use the WHERE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('path:"/never closed', "never closed"),
        ("status:", "has no value"),
        ('"a"b', "right after a closing quote"),
        ('path:"x"y', "right after a closing quote"),
        ("x" * 5000, "longer than"),
        (" ".join(["a"] * 70), "more than 64 terms"),
    ],
)
def test_bad_filters_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(BadViewError, match=message):
        parse_filter(text)


def test_bucket_is_a_round_size_giving_60_to_120_buckets_for_usual_ranges() -> None:
    minute, hour, day = 60_000_000, 3_600_000_000, 86_400_000_000
    expected = {
        15 * minute: "10s",
        hour: "30s",
        4 * hour: "2m",
        day: "15m",
        7 * day: "2h",
        30 * day: "6h",
        90 * day: "1d",
    }
    for span, name in expected.items():
        label, size = choose_bucket(span)
        assert label == name
        assert 60 <= -(-span // size) <= MAX_BUCKETS
    sizes = [size for _, size in BUCKETS]
    assert sizes == sorted(sizes)
    for span in (1, 999, 10**6, 10**9, 10**12, 10**15):
        label, size = choose_bucket(span)
        assert -(-span // size) <= MAX_BUCKETS or size == sizes[-1]
        smaller = [s for s in sizes if s < size]
        assert not smaller or -(-span // smaller[-1]) > MAX_BUCKETS  # the smallest that fits


def test_cursor_counts_the_records_of_its_time() -> None:
    assert next_cursor([], None) is None
    assert next_cursor([5, 4, 4, 3], None) == Cursor(3, 1)
    assert next_cursor([5, 3, 3, 3], None) == Cursor(3, 3)
    # a page wholly within the cursor's time adds to its count; a page that moves on restarts it
    assert next_cursor([3, 3], Cursor(3, 3)) == Cursor(3, 5)
    assert next_cursor([3, 2], Cursor(3, 3)) == Cursor(2, 1)
    cursor = Cursor(1_577_836_801_000_000, 451)
    assert Cursor.parse(cursor.text()) == cursor
    for bad in ("", "x~1", "2020-01-01 00:00:00", "2020-01-01~-1", "2020-01-01~1e3"):
        with pytest.raises(BadViewError):
            Cursor.parse(bad)


def test_a_page_reads_a_narrow_window_before_its_cursor_first() -> None:
    hour = 3_600_000_000
    day = datetime(2026, 1, 1)
    base = micros(day)
    # 24 hourly files of 3,600 rows (one a second), the 12th also overlapped by a small late file
    files = tuple((base + h * hour, base + (h + 1) * hour - 1, 3600) for h in range(24))
    files += ((base + 11 * hour, base + 12 * hour - 1, 360),)
    table = TableInfo("t", [("ts", "TIMESTAMP")], "ts", [], None, None, [], [], files=files)
    top = day + timedelta(hours=12)
    bounds = window_starts(table, day, top, 100)
    assert bounds[-1] == day and bounds == sorted(bounds, reverse=True)
    # about 400 rows, then 6,400, then 102,400 (past the start: the start itself)
    seconds = [(top - b).total_seconds() for b in bounds[:2]]
    # 1.1 rows a second in the 12th hour; one a second before it
    assert seconds == [pytest.approx(400 / 1.1), pytest.approx(3600 + 6400 - 3960)]
    assert len(bounds) == 3
    # no file statistics: the whole range at once
    bare = TableInfo("t", [("ts", "TIMESTAMP")], "ts", [], None, None, [], [])
    assert window_starts(bare, day, top, 100) == [day]
    assert from_micros(micros(top)) == top


def test_where_must_be_one_condition() -> None:
    assert check_where(" status = 200 AND (a OR b) ") == "status = 200 AND (a OR b)"
    assert check_where('path = \')(;--\' AND x = "a""b"') == 'path = \')(;--\' AND x = "a""b"'
    for bad, message in [
        ("1=1) UNION SELECT * FROM logs.access WHERE (1=1", "never opened"),
        ("(1=1", "never closes"),
        ("1=1; SELECT 1", "no ;"),
        ("1=1 -- rest", "no comments"),
        ("1=1 /* x */", "no comments"),
        ("path = 'open", "never closed"),
    ]:
        with pytest.raises(BadViewError, match=message):
            check_where(bad)


# -- over HTTP ------------------------------------------------------------------------------------


def get(server: Server, route: str, **params: Any) -> tuple[int, Any]:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    status, body, _ = request("GET", f"{server.url}/v1/explore/{route}?{query}")
    return status, body


def ok(server: Server, route: str, **params: Any) -> Any:
    status, body = get(server, route, **params)
    assert status == 200, body
    return body


def rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    names = [c["name"] for c in answer["columns"]]
    return [dict(zip(names, values, strict=True)) for values in zip(*answer["data"], strict=True)]


def post_lines(server: Server, lines: list[str]) -> None:
    body = ("\n".join(lines) + "\n").encode()
    status, reply, _ = request(
        "POST", f"{server.url}/v1/streams/web/records", body, {"Content-Type": "text/plain"}
    )
    assert status == 200, reply
    assert reply["accepted"] == len(lines), reply


def combined(client: str, stamp: str, path: str, status: int = 200, agent: str = "curl/8") -> str:
    agent_text = agent.replace("\\", "\\\\").replace('"', '\\"')
    return f'{client} - - [{stamp}] "GET {path} HTTP/1.1" {status} 123 "-" "{agent_text}"'


@pytest.fixture(scope="module")
def lake(console_server: Server) -> Server:
    """The shared server with the tie records and one odd user agent posted to the stream."""
    lines = []
    n = 0
    for clock, count in TIE_GROUPS:
        for _ in range(count):
            lines.append(combined(f"10.0.0.{n % 7}", f"01/Jan/2020:{clock} +0000", f"/tie/{n}"))
            n += 1
    for second in range(13):
        stamp = f"01/Jan/2020:00:01:{second:02} +0000"
        lines.append(combined("10.0.0.1", stamp, f"/tie/{n}", 404))
        n += 1
    lines.append(combined("10.9.9.9", "01/Jan/2020:00:02:00 +0000", "/odd", 200, ODD_AGENT))
    post_lines(console_server, lines)
    console_server.wait_rows(
        f"SELECT count(*) AS n FROM {ACCESS} WHERE ts >= TIMESTAMP '2020-01-01' "
        "AND ts < TIMESTAMP '2020-01-02'",
        n + 1,
    )
    return console_server


def span(server: Server) -> tuple[str, str]:
    """An absolute range holding every generated record (they end about when the server began)."""
    row = server.query(
        f"SELECT min(ts) AS lo, max(ts) AS hi FROM {ACCESS} WHERE ts >= TIMESTAMP '2021-01-01'"
    )[0]
    lo = datetime.fromisoformat(row["lo"]).replace(microsecond=0)
    hi = datetime.fromisoformat(row["hi"]).replace(microsecond=0) + timedelta(seconds=1)
    return lo.isoformat(" "), hi.isoformat(" ")


def test_tables_lists_the_lake_with_roles(lake: Server) -> None:
    body = ok(lake, "tables")
    assert body["default"] == ACCESS
    access = next(t for t in body["tables"] if t["name"] == ACCESS)
    assert access["time_column"] == "ts"
    assert access["raw"] == "combined"
    assert access["source_field"] == "client"
    assert access["default_fields"] == ["status", "method", "path", "client", "ua_browser"]
    assert "user_agent" in access["text_columns"] and "path" in access["text_columns"]
    rejected = next(t for t in body["tables"] if t["name"] == "logs.rejected")
    assert rejected["time_column"] == "ingested_at"
    assert rejected["text_columns"] == ["text"]


def test_histogram_counts_match_sql(lake: Server) -> None:
    lo, hi = span(lake)
    q = "status:200 -method:GET"
    body = ok(lake, "histogram", table=ACCESS, **{"from": lo, "to": hi}, q=q)
    want = lake.query(
        f"SELECT ts FROM {ACCESS} WHERE ts >= TIMESTAMP '{lo}' AND ts < TIMESTAMP '{hi}' "
        "AND status = 200 AND method IS DISTINCT FROM 'GET'"
    )
    assert body["total"] == len(want) > 0
    assert body["bucket"] == "30m"  # two days: 96 buckets
    size = body["bucket_seconds"]
    got = Counter()
    for row in want:
        at = datetime.fromisoformat(row["ts"]).replace(tzinfo=UTC).timestamp()
        got[int((at - body["times"][0]) // size)] += 1
    assert body["counts"] == [got[i] for i in range(len(body["times"]))]
    assert 60 <= len(body["times"]) <= 121
    assert body["times"][0] <= datetime.fromisoformat(lo).replace(tzinfo=UTC).timestamp()


def page_through(server: Server, limit: int, **view: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        body = ok(server, "records", limit=limit, cursor=cursor, **view)
        assert body["rows"] <= limit
        out.extend(rows(body))
        cursor = body["next"]
        if cursor is None:
            return out
    raise AssertionError("paging never ended")


@pytest.mark.parametrize("limit", [7, 100, 449, 451])
def test_keyset_paging_returns_every_record_once_across_ties(lake: Server, limit: int) -> None:
    view = {"table": ACCESS, "from": TIE_DAY[0], "to": TIE_DAY[1]}
    got = page_through(lake, limit, **view)
    want = lake.query(
        f"SELECT path, line FROM {ACCESS} WHERE ts >= TIMESTAMP '{TIE_DAY[0]}' "
        f"AND ts < TIMESTAMP '{TIE_DAY[1]}' ORDER BY {ORDER}"
    )
    assert len(want) == sum(n for _, n in TIE_GROUPS) + 14
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert len({r["path"] for r in got}) == len(got)


def test_paging_through_two_days_follows_the_sql_order(lake: Server) -> None:
    lo, hi = span(lake)
    got = page_through(lake, 1000, table=ACCESS, **{"from": lo, "to": hi}, q="-status:304")
    want = lake.query(
        f"SELECT line FROM {ACCESS} WHERE ts >= TIMESTAMP '{lo}' AND ts < TIMESTAMP '{hi}' "
        f"AND status IS DISTINCT FROM 304 ORDER BY {ORDER}"
    )
    assert len(got) == len(want) > 10_000
    assert [r["line"] for r in got] == [r["line"] for r in want]


def test_first_page_and_its_equivalent_sql(lake: Server) -> None:
    lo, hi = span(lake)
    body = ok(lake, "records", table=ACCESS, **{"from": lo, "to": hi}, q='"firefox"')
    assert body["rows"] == 100 and body["next"]
    assert body["from"] == lo + ".000000" and body["to"] == hi + ".000000"
    want = lake.query(body["sql"] + " LIMIT 100")
    assert [r["line"] for r in rows(body)] == [r["line"] for r in want]
    agents = [r["user_agent"] for r in rows(body)]
    assert all("firefox" in a.lower() for a in agents)


def test_top_values_are_exact_with_shares_and_terms(lake: Server) -> None:
    lo, hi = span(lake)
    view = {"table": ACCESS, "from": lo, "to": hi, "q": "-status:200"}
    body = ok(lake, "top", **view, fields="status,method,ua_device")
    where = f"ts >= TIMESTAMP '{lo}' AND ts < TIMESTAMP '{hi}' AND status IS DISTINCT FROM 200"
    total = lake.query(f"SELECT count(*) AS n FROM {ACCESS} WHERE {where}")[0]["n"]
    assert body["total"] == total
    assert [f["field"] for f in body["fields"]] == ["status", "method", "ua_device"]
    for field in body["fields"]:
        name = field["field"]
        want = lake.query(
            f"SELECT {name} AS v, count(*) AS n FROM {ACCESS} WHERE {where} "
            f"GROUP BY {name} ORDER BY n DESC, v NULLS LAST LIMIT 10"
        )
        assert [(v["value"], v["count"]) for v in field["values"]] == [
            (r["v"], r["n"]) for r in want
        ]
        distinct = lake.query(
            f"SELECT count(DISTINCT {name}) + max(CASE WHEN {name} IS NULL THEN 1 ELSE 0 END) "
            f"AS d FROM {ACCESS} WHERE {where}"
        )
        assert field["distinct"] == distinct[0]["d"]
        for value in field["values"]:
            assert value["share"] == pytest.approx(value["count"] / total)
    # include and exclude terms filter to the counts shown
    device = next(f for f in body["fields"] if f["field"] == "ua_device")
    null = next(v for v in device["values"] if v["value"] is None)
    assert null["include"] == "-ua_device:*" and null["exclude"] == "ua_device:*"
    for value in (device["values"][0], null):
        pairs = ((value["include"], value["count"]), (value["exclude"], total - value["count"]))
        for term, count in pairs:
            again = ok(lake, "histogram", **{**view, "q": f"{view['q']} {term}"})
            assert again["total"] == count, term


def test_a_value_with_quotes_and_colons_filters_exactly(lake: Server) -> None:
    view = {"table": ACCESS, "from": TIE_DAY[0], "to": TIE_DAY[1]}
    top = ok(lake, "top", **view, fields="user_agent")
    odd = next(v for v in top["fields"][0]["values"] if v["value"] == ODD_AGENT)
    assert odd["include"] == term_text("user_agent", ODD_AGENT)
    found = rows(ok(lake, "records", **view, q=odd["include"]))
    assert [r["path"] for r in found] == ["/odd"]
    # and as free text
    found = rows(ok(lake, "records", **view, q='"AGENT\\": with"'))
    assert [r["path"] for r in found] == ["/odd"]


def test_where_is_anded_and_its_errors_are_400s(lake: Server) -> None:
    view = {"table": ACCESS, "from": TIE_DAY[0], "to": TIE_DAY[1]}
    body = ok(lake, "histogram", **view, q="status:404", where="client = '10.0.0.1' AND bytes > 0")
    assert body["total"] == 13
    status, body = get(lake, "histogram", **view, where="no_such_column > 1")
    assert status == 400 and "no_such_column" in body["error"]["message"], body
    status, body = get(lake, "records", **view, where="1=1) UNION SELECT 1 WHERE (1=1")
    assert status == 400 and "never opened" in body["error"]["message"]


@pytest.mark.parametrize(
    ("route", "params", "status", "message"),
    [
        ("histogram", {"table": "logs.nope"}, 404, "no lake table 'logs.nope'"),
        ("histogram", {"from": "yesterday"}, 400, "is not a time"),
        ("histogram", {"from": "now-999999999w"}, 400, "before the year 1"),
        ("histogram", {"from": "2026-01-02", "to": "2026-01-01"}, 400, "the range is empty"),
        ("histogram", {"q": "nosuchfield:1"}, 400, "has no field 'nosuchfield'"),
        ("histogram", {"q": "status:abc"}, 400, "whole numbers"),
        ("histogram", {"q": "is_bot:maybe"}, 400, "true or false"),
        ("histogram", {"q": 'path:"open'}, 400, "never closed"),
        ("histogram", {"bogus": "1"}, 400, "unknown parameters bogus"),
        ("records", {"limit": "0"}, 400, "limit must be a whole number from 1 to 1000"),
        ("records", {"limit": "100000"}, 400, "limit must be"),
        ("records", {"cursor": "garbage"}, 400, "is not one the API gave"),
        ("top", {"fields": "nosuch"}, 400, "has no field 'nosuch'"),
        ("top", {"fields": ",".join(["status"] * 21)}, 400, "at most 20 fields"),
        ("download", {"format": "xml"}, 400, "format must be csv or json"),
        ("download", {"page": "5"}, 400, "page must be"),
        ("tail", {}, 400, "after"),
        ("around", {"at": "2020-01-01"}, 400, "give at"),
    ],
)
def test_bad_input_is_a_4xx_saying_what_to_do(
    lake: Server, route: str, params: dict[str, str], status: int, message: str
) -> None:
    got, body = get(lake, route, **params)
    assert got == status, body
    assert set(body) == {"error"} and message in body["error"]["message"], body


def test_download_is_what_loglake_query_prints(lake: Server) -> None:
    lo, hi = span(lake)
    sql = (
        f"SELECT * FROM {ACCESS} WHERE ts >= TIMESTAMP '{lo}' AND ts < TIMESTAMP '{hi}' "
        f"AND status = 200 AND NOT coalesce(method = 'GET', false) ORDER BY {ORDER}"
    )
    for fmt in ("csv", "json"):
        want = cli_query(lake, sql, fmt)
        view = {"table": ACCESS, "from": lo, "to": hi, "q": "status:200 -method:GET"}
        for page in (None, 100):  # one query, and pages of 100 in slices
            got = fetch(lake, "download", **view, format=fmt, page=page)
            assert got == want, (fmt, page)
    # ties across pages
    sql = (
        f"SELECT * FROM {ACCESS} WHERE ts >= TIMESTAMP '{TIE_DAY[0]}' "
        f"AND ts < TIMESTAMP '{TIE_DAY[1]}' ORDER BY {ORDER}"
    )
    got = fetch(lake, "download", table=ACCESS, **{"from": TIE_DAY[0], "to": TIE_DAY[1]}, page=100)
    assert got == cli_query(lake, sql, "csv")
    assert got.count(b"\n") == sum(n for _, n in TIE_GROUPS) + 15  # and the header


def test_download_of_nothing_is_the_header(lake: Server) -> None:
    got = fetch(lake, "download", table=ACCESS, **{"from": "2000-01-01", "to": "2000-01-02"})
    assert got == cli_query(
        lake, f"SELECT * FROM {ACCESS} WHERE ts < TIMESTAMP '2000-01-01'", "csv"
    )
    assert got.startswith(b"ts,client,")


def fetch(server: Server, route: str, **params: Any) -> bytes:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    with urllib.request.urlopen(f"{server.url}/v1/explore/{route}?{query}", timeout=60) as reply:
        assert reply.status == 200
        return reply.read()


def cli_query(server: Server, sql: str, fmt: str) -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "query", "--format", fmt, sql],
        env=server.env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_tail_shows_records_after_the_newest(lake: Server) -> None:
    view = {"table": ACCESS, "from": "now-3d", "to": "now"}
    newest = rows(ok(lake, "records", **view, limit=1))[0]["ts"]
    before = ok(lake, "tail", **view, after=newest)  # seen: counted by the server
    assert before["rows"] == 0 and before["more"] is False
    stamp = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    paths = [f"/tail/{time.time_ns()}/{i}" for i in range(3)]
    post_lines(lake, [combined("10.7.7.7", stamp, p) for p in paths])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    after, seen = before["after"], before["seen"]
    while len(found) < 3 and time.monotonic() < deadline:
        body = ok(lake, "tail", **view, after=after, seen=seen)
        found.extend(rows(body))
        after, seen = body["after"], body["seen"]
        time.sleep(0.2)
    assert [r["path"] for r in found] == list(reversed(paths))  # newest first
    # nothing twice
    assert ok(lake, "tail", **view, after=after, seen=seen)["rows"] == 0


def test_records_around_one_of_a_source(lake: Server) -> None:
    lo, hi = span(lake)
    mid = rows(ok(lake, "records", table=ACCESS, **{"from": lo, "to": hi}, q="status:200"))[50]
    client = mid["client"]
    body = ok(lake, "around", table=ACCESS, at=mid["ts"], field="client", value=client, n=5)
    got = rows(body)
    assert all(r["client"] == client for r in got)
    assert mid["line"] in [r["line"] for r in got]
    at = mid["ts"]
    newer = lake.query(
        f"SELECT line FROM {ACCESS} WHERE client = '{client}' AND ts > TIMESTAMP '{at}' "
        f"AND ts <= TIMESTAMP '{at}' + INTERVAL 1 DAY ORDER BY ts, source, line LIMIT 5"
    )
    older = lake.query(
        f"SELECT line FROM {ACCESS} WHERE client = '{client}' AND ts < TIMESTAMP '{at}' "
        f"AND ts >= TIMESTAMP '{at}' - INTERVAL 1 DAY ORDER BY {ORDER} LIMIT 5"
    )
    same = lake.query(
        f"SELECT line FROM {ACCESS} WHERE client = '{client}' AND ts = TIMESTAMP '{at}' "
        f"ORDER BY {ORDER} LIMIT 5"
    )
    lines = [r["line"] for r in reversed(newer)] + [r["line"] for r in same + older]
    assert [r["line"] for r in got] == lines
