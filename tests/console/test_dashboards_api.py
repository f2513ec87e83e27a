"""The Live page's dashboards: ``[dashboards.NAME]`` in the config file (strict parser, bounds,
documentation) and the API against a real server: list, read, save, delete, read-only dashboards,
the one event stream of several queries and a query's windows from the lake."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loglake.config import load_config
from loglake.config.dashboards import (
    MAX_PANELS,
    DashboardConfig,
    PanelConfig,
    ready_dashboard,
)
from loglake.config.ready import ready_queries
from loglake.errors import ConfigError, QueryError
from serving import RUNNING, Server, request
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

DASHBOARD = """
[dashboards.traffic]
title = "Traffic"
description = "hits per second"

[[dashboards.traffic.panels]]
query = "hits"
kind = "timeseries"
y = ["hits"]
group = "status"
width = 12

[[dashboards.traffic.panels]]
title = "Errors now"
query = "hits"
kind = "stat"
y = ["errors"]
windows = 1
width = 3
"""


def test_dashboards_of_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "loglake.toml").write_text(DASHBOARD)
    cfg = load_config(home=tmp_path, environ={})
    assert cfg.dashboards == {
        "traffic": DashboardConfig(
            title="Traffic",
            description="hits per second",
            panels=(
                PanelConfig(query="hits", y=("hits",), group="status", width=12),
                PanelConfig(
                    query="hits", kind="stat", title="Errors now", y=("errors",), windows=1, width=3
                ),
            ),
        )
    }
    assert load_config(home=tmp_path / "none", environ={}).dashboards == {}


PANEL = '[[dashboards.d.panels]]\nquery = "q"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[dashboards.d]\ntitel = "x"\n',
            "unknown key dashboards.d.titel; valid keys in [dashboards.d]: description, title, "
            "and the panels as [[dashboards.d.panels]]",
        ),
        (
            PANEL + 'y = ["a"]\ncolour = "red"\n',
            "unknown key dashboards.d.panels[0].colour; valid keys in [dashboards.d.panels[0]]: "
            "group, kind, query, title, width, windows, x, y",
        ),
        (PANEL + 'y = "hits"\n', "dashboards.d.panels[0].y must be a list of strings, got 'hits'"),
        (PANEL + 'y = ["a"]\nwidth = "6"\n', "dashboards.d.panels[0].width must be int"),
        (PANEL + 'y = ["a"]\nwindows = true\n', "dashboards.d.panels[0].windows must be int"),
        (
            PANEL + 'y = ["a"]\nkind = "donut"\n',
            "dashboards.d.panels[0].kind = 'donut'; choose one of timeseries, bar, table, stat, "
            "pie",
        ),
        ('[[dashboards.d.panels]]\ny = ["a"]\n', "dashboards.d.panels[0].query is missing"),
        (PANEL, "dashboards.d.panels[0].y is missing: a timeseries panel needs a value column"),
        (
            PANEL + 'kind = "stat"\ny = ["a", "b"]\n',
            "dashboards.d.panels[0].y of a stat panel must name exactly one column",
        ),
        (PANEL + 'y = ["a"]\nwindows = 0\n', "dashboards.d.panels[0].windows = 0; use 1 to 1000"),
        (PANEL + 'y = ["a"]\nwidth = 13\n', "dashboards.d.panels[0].width = 13; use 1 to 12"),
        (
            '[dashboards.d]\npanels = "all"\n',
            "dashboards.d.panels must be a list of tables ([[dashboards.d.panels]] in the file)",
        ),
        ('[dashboards."my board"]\n', "dashboard name 'my board': use 1-64 letters, digits"),
        ("dashboards = 5\n", "[dashboards] must be a table, got 5 (an integer)"),
        ("[dashboards]\nd = 5\n", "[dashboards.d] must be a table of settings, got 5"),
        (
            (PANEL + 'y = ["a"]\n') * (MAX_PANELS + 1),
            f"dashboards.d.panels: {MAX_PANELS + 1} panels; a dashboard holds at most {MAX_PANELS}",
        ),
    ],
)
def test_bad_dashboards_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "loglake.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(home=tmp_path, environ={})


def test_the_server_does_not_start_with_a_bad_dashboard(tmp_path: Path) -> None:
    import subprocess
    import sys

    from serving import free_port

    (tmp_path / "loglake.toml").write_text(
        '[syslog]\nudp = ""\ntcp = ""\n' + PANEL + 'y = ["a"]\nkind = "donut"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "serve", "--port", str(free_port())],
        env={**os.environ, "LOGLAKE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "dashboards.d.panels[0].kind = 'donut'; choose one of" in done.stderr


def test_every_dashboard_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    keys = [f"dashboards.NAME.{f.name}" for f in dataclasses.fields(DashboardConfig)]
    keys += [f"dashboards.NAME.panels[].{f.name}" for f in dataclasses.fields(PanelConfig)]
    assert [k for k in keys if f"`{k}`" not in doc] == []


def test_the_ready_made_dashboard_shows_the_ready_made_queries() -> None:
    name, board = ready_dashboard("web")
    assert name == "web_access"
    assert {p.query for p in board.panels} == set(ready_queries("web"))


# -- the API, against a real server -----------------------------------------------------------

CONFIG = (
    """
[syslog]
udp = ""
tcp = ""

[streams.web]
format = "combined"
buffer_seconds = 0.2
ready_queries = true

[queries.hits]
stream = "web"
window = "tumbling 1s"
sql = '''SELECT status, count(*) AS hits, count(*) FILTER (WHERE status >= 500) AS errors
FROM stream GROUP BY status'''
lateness = "0s"
idle_timeout = "1s"

[streams.quiet]
format = "combined"
table = "logs.quiet"

[queries.quiet_hits]
stream = "quiet"
window = "tumbling 1s"
sql = "SELECT count(*) AS hits FROM stream"
"""
    + DASHBOARD
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server.started(tmp_path_factory.mktemp("dashboards") / "home", CONFIG)
    try:
        yield srv
    finally:
        if srv.proc is not None:
            srv.stop()
        if srv in RUNNING:
            RUNNING.remove(srv)


def call(srv: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    status, reply, _ = request(method, srv.url + path, raw)
    return status, reply


def board(title: str, panels: int = 1) -> dict[str, Any]:
    panel = {"query": "hits", "kind": "timeseries", "y": ["hits"], "group": "status"}
    return {"title": title, "description": "", "panels": [panel] * panels}


def test_the_list_holds_the_config_files_the_ready_made_and_saved_dashboards(
    server: Server,
) -> None:
    status, reply = call(server, "PUT", "/v1/console/dashboards/listed", board("Listed"))
    assert status == 201, reply
    status, listing = call(server, "GET", "/v1/console/dashboards")
    assert status == 200, listing
    items = {d["name"]: d for d in listing["dashboards"]}
    assert items["traffic"] == {
        "name": "traffic",
        "title": "Traffic",
        "source": "config",
        "panels": 2,
        "read_only": True,
    }
    assert items["web_access"]["source"] == "ready"
    assert items["web_access"]["panels"] == len(ready_dashboard("web")[1].panels)
    assert items["listed"]["source"] == "saved" and items["listed"]["read_only"] is False
    assert listing["default"] == "web_access"  # the ready-made dashboard is shown first
    assert [d["source"] for d in listing["dashboards"]][:2] == ["config", "ready"]


def test_a_config_dashboard_reads_back_and_is_read_only(server: Server) -> None:
    status, reply = call(server, "GET", "/v1/console/dashboards/traffic")
    assert status == 200, reply
    want = load_config(home=server.home, environ={}).dashboards["traffic"].as_json()
    assert {k: reply[k] for k in want} == want
    assert reply["source"] == "config" and reply["read_only"] is True
    for method in ("PUT", "DELETE"):
        status, reply = call(server, method, "/v1/console/dashboards/traffic", board("x"))
        assert status == 409, reply
        assert reply["error"]["code"] == "read_only"
        assert "save a copy under another name" in reply["error"]["message"]
    status, reply = call(server, "PUT", "/v1/console/dashboards/web_access", board("x"))
    assert status == 409 and "ready-made queries" in reply["error"]["message"]


def test_save_replace_and_delete_a_dashboard(server: Server) -> None:
    path = server.home / "console" / "dashboards" / "mine.json"
    status, reply = call(server, "PUT", "/v1/console/dashboards/mine", board("Mine"))
    assert status == 201, reply
    assert reply["source"] == "saved" and reply["title"] == "Mine"
    assert json.loads(path.read_text()) == {
        "title": "Mine",
        "description": "",
        "panels": [
            {
                "title": "",
                "query": "hits",
                "kind": "timeseries",
                "x": "window_start",
                "y": ["hits"],
                "group": "status",
                "windows": 60,
                "width": 6,
            }
        ],
    }
    status, reply = call(server, "PUT", "/v1/console/dashboards/mine", board("Mine too", 3))
    assert status == 200, reply
    status, reply = call(server, "GET", "/v1/console/dashboards/mine")
    assert status == 200 and reply["title"] == "Mine too" and len(reply["panels"]) == 3
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    status, reply = call(server, "DELETE", "/v1/console/dashboards/mine")
    assert (status, reply) == (200, {"deleted": "mine"})
    assert not path.exists()
    status, reply = call(server, "GET", "/v1/console/dashboards/mine")
    assert status == 404 and reply["error"]["code"] == "no_such_dashboard"
    status, reply = call(server, "DELETE", "/v1/console/dashboards/mine")
    assert status == 404 and reply["error"]["code"] == "no_such_dashboard"


@pytest.mark.parametrize(
    ("name", "body", "status", "message"),
    [
        ("x", b"{not json", 400, "the body must be JSON"),
        ("x", [1], 400, "[dashboards.x] must be a table of settings, got [1] (a list)"),
        ("x", {"titel": "a"}, 400, "unknown key dashboards.x.titel"),
        (
            "x",
            {"panels": [{"query": "hits", "y": "hits"}]},
            400,
            "dashboards.x.panels[0].y must be a list of strings",
        ),
        ("x", {"panels": [{"y": ["a"]}]}, 400, "dashboards.x.panels[0].query is missing"),
        (
            "x",
            board("many", MAX_PANELS + 1),
            400,
            f"{MAX_PANELS + 1} panels; a dashboard holds at most {MAX_PANELS}",
        ),
        ("x", {"title": "t" * 201}, 400, "dashboards.x.title is longer than 200 characters"),
        ("bad%20name", board("x"), 400, "dashboard name 'bad name': use 1-64 letters"),
        ("x" * 65, board("x"), 400, "use 1-64 letters, digits"),
        ("x", b"{" + b" " * (70 << 10) + b"}", 413, ""),
    ],
)
def test_bad_dashboards_get_a_4xx_naming_the_problem(
    server: Server, name: str, body: Any, status: int, message: str
) -> None:
    got, reply = call(server, "PUT", f"/v1/console/dashboards/{name}", body)
    assert got == status, reply
    assert set(reply) == {"error"} and set(reply["error"]) == {"code", "message"}
    assert message in reply["error"]["message"]
    assert not (server.home / "console" / "dashboards" / f"{name}.json").exists()


def test_a_damaged_saved_file_is_reported_not_dropped(server: Server) -> None:
    folder = server.home / "console" / "dashboards"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.json").write_text('{"title": "B", "panels": 3}')
    _, listing = call(server, "GET", "/v1/console/dashboards")
    item = next(d for d in listing["dashboards"] if d["name"] == "broken")
    assert "fix or delete the file" in item["error"]
    status, reply = call(server, "GET", "/v1/console/dashboards/broken")
    assert status == 400
    assert "broken.json: dashboards.broken.panels must be a list" in reply["error"]["message"]
    assert call(server, "DELETE", "/v1/console/dashboards/broken")[0] == 200


def test_saved_dashboards_are_bounded(server: Server) -> None:
    from loglake.server.console.dashboards import MAX_SAVED

    folder = server.home / "console" / "dashboards"
    folder.mkdir(parents=True, exist_ok=True)
    existing = len(list(folder.glob("*.json")))
    filler = [folder / f"filler-{i}.json" for i in range(MAX_SAVED - existing)]
    for path in filler:
        path.write_text(json.dumps(board("f")))
    try:
        status, reply = call(server, "PUT", "/v1/console/dashboards/one_more", board("x"))
        assert status == 409 and reply["error"]["code"] == "too_many_dashboards", reply
        # Replacing one that exists is still allowed.
        assert call(server, "PUT", "/v1/console/dashboards/filler-0", board("y"))[0] == 200
    finally:
        for path in filler:
            path.unlink()


def post_now(srv: Server, statuses: list[int]) -> str:
    """Records stamped with the current second; returns that second as the results show it."""
    now = datetime.now(UTC).replace(microsecond=0)
    stamp = now.strftime("%d/%b/%Y:%H:%M:%S +0000")
    lines = [
        f'10.0.0.{i} - - [{stamp}] "GET /p/{i} HTTP/1.1" {s} 10 "-" "t"'
        for i, s in enumerate(statuses)
    ]
    status, body, _ = request(
        "POST", f"{srv.url}/v1/streams/web/records", "\n".join(lines).encode() + b"\n"
    )
    assert status == 200, body
    return now.replace(tzinfo=None).isoformat()


def read_events(reply: Any, until: Any) -> list[tuple[str, Any]]:
    """Server-Sent Events of ``reply`` as (event, data) until ``until(events)`` is true."""
    events: list[tuple[str, Any]] = []
    kind, data = "", ""
    while not until(events):
        line = reply.readline().decode()
        assert line, "the event stream ended"
        if line.startswith("event: "):
            kind = line[7:].strip()
        elif line.startswith("data: "):
            data = line[6:].strip()
        elif line == "\n" and kind:
            events.append((kind, json.loads(data)))
            kind, data = "", ""
    return events


def test_one_event_stream_follows_several_queries(server: Server) -> None:
    url = f"{server.url}/v1/console/live/events?query=hits&query=web_requests&query=gone"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=120) as reply:
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        hello = read_events(reply, lambda e: len(e) >= 1)
        assert hello == [("hello", {"queries": ["hits", "web_requests"], "missing": ["gone"]})]
        second = post_now(server, [200, 200, 500])

        def of_second(events: list[tuple[str, Any]]) -> list[dict[str, Any]]:
            return [
                r
                for k, d in events
                if k == "result" and d["query"] == "hits"
                for r in d["rows"]
                if r["window_start"] == second
            ]

        rows = of_second(read_events(reply, of_second))
    assert sorted((r["status"], r["hits"], r["errors"]) for r in rows) == [(200, 2, 0), (500, 1, 1)]
    # The same rows as the query's own results API and its table in the lake.
    _, results = call(server, "GET", "/v1/queries/hits/results?limit=1000")
    assert all(r in results["rows"] for r in rows)
    wait_for(lambda: lake_windows(server, second), "the window in the lake")
    assert sorted((r["status"], r["hits"], r["errors"]) for r in lake_windows(server, second)) == [
        (200, 2, 0),
        (500, 1, 1),
    ]


def lake_windows(srv: Server, start: str) -> list[dict[str, Any]]:
    """The rows of the window at ``start`` in analytics.hits ([] before the table exists)."""
    try:
        return srv.query(
            "SELECT status, hits, errors FROM analytics.hits "
            f"WHERE window_start = TIMESTAMP '{start.replace('T', ' ')}' "
            "QUALIFY revision = max(revision) OVER (PARTITION BY window_start)"
        )
    except QueryError:  # the table is created with the query's first window
        return []


def test_the_event_stream_refuses_bad_requests(server: Server) -> None:
    status, reply = call(server, "GET", "/v1/console/live/events")
    assert status == 400 and "?query=NAME" in reply["error"]["message"]
    many = "&".join(f"query=q{i}" for i in range(MAX_PANELS + 1))
    status, reply = call(server, "GET", f"/v1/console/live/events?{many}")
    assert status == 400 and f"at most {MAX_PANELS}" in reply["error"]["message"]


def test_history_gives_the_newest_windows_of_the_results_table(server: Server) -> None:
    first = post_now(server, [200, 404])
    wait_for(lambda: lake_windows(server, first), "the first window in the lake")
    second = post_now(server, [200, 200, 200])
    wait_for(lambda: lake_windows(server, second), "the second window in the lake")
    status, reply = call(server, "GET", "/v1/console/live/history?query=hits&windows=2")
    assert status == 200, reply
    assert reply["table"] == "analytics.hits" and reply["truncated"] is False
    starts = sorted({r["window_start"] for r in reply["rows"]})
    assert starts == [first, second]
    lake = server.query(
        "SELECT strftime(window_start, '%Y-%m-%dT%H:%M:%S') AS w, status, hits FROM analytics.hits "
        "QUALIFY revision = max(revision) OVER (PARTITION BY window_start) AND NOT retracted "
        "ORDER BY window_start DESC, status"
    )
    want = [(r["w"], r["status"], r["hits"]) for r in lake if r["w"] in starts]
    got = [(r["window_start"], r["status"], r["hits"]) for r in reply["rows"]]
    assert sorted(got) == sorted(want)
    status, reply = call(server, "GET", "/v1/console/live/history?query=gone")
    assert status == 404 and reply["error"]["code"] == "no_such_query"
    status, reply = call(server, "GET", "/v1/console/live/history?query=hits&windows=0")
    assert status == 400 and "use a whole number from 1 to 1000" in reply["error"]["message"]
    # A query whose table does not exist yet has no history.
    status, reply = call(server, "GET", "/v1/console/live/history?query=quiet_hits")
    assert (status, reply["rows"]) == (200, [])
