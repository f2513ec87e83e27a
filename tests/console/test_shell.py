"""The console's shell: every page loads offline, errors show as text, sign-in with API keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from browsing import chromium_path, open_page, watch_hosts

from serving import Server, request


def test_every_page_loads_from_the_server_alone(page: Any, console_server: Server) -> None:
    for name in ("explore", "live", "notebooks", "catalog"):
        open_page(page, console_server, f"/console/{name}")
        assert page.get_attribute("#page", "data-page") == name
        assert page.get_attribute(f"#nav a[data-page='{name}']", "class") == "active"
        assert page.is_hidden("#error"), page.text_content("#error")
    assert page.console_errors == []


def test_console_root_and_unknown_pages(console_server: Server) -> None:
    import urllib.request

    with urllib.request.urlopen(console_server.url + "/console") as reply:
        assert reply.status == 200
        assert b'<main id="page">' in reply.read()
    status, body, _ = request("GET", console_server.url + "/console/nope")
    assert status == 404
    assert "pages are explore, live, notebooks, catalog" in body["error"]["message"]


def test_sql_api_answers_in_the_console_shape(console_server: Server) -> None:
    sql = "SELECT status, count(*) AS n FROM logs.access GROUP BY status ORDER BY status"
    status, body, _ = request(
        "POST", console_server.url + "/v1/sql", json.dumps({"sql": sql}).encode()
    )
    assert status == 200, body
    want = console_server.query(sql)
    assert [c["name"] for c in body["columns"]] == ["status", "n"]
    assert body["data"] == [[r["status"] for r in want], [r["n"] for r in want]]
    assert body["rows"] == len(want) and body["truncated"] is False


def test_sql_api_refuses_writes_and_bad_bodies(console_server: Server) -> None:
    url = console_server.url + "/v1/sql"
    status, body, _ = request("POST", url, json.dumps({"sql": "DROP TABLE logs.access"}).encode())
    assert status == 403 or status == 400, body
    assert "DROP statements are not allowed" in body["error"]["message"]
    status, body, _ = request("POST", url, b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_request"
    status, body, _ = request("POST", url, json.dumps({"sql": "SELECT 1", "x": 1}).encode())
    assert status == 400 and "unknown keys x" in body["error"]["message"]
    sql = {"sql": "SELECT 1", "dialect": "cobol"}
    status, body, _ = request("POST", url, json.dumps(sql).encode())
    assert status == 400 and "unknown dialect 'cobol'" in body["error"]["message"]


def test_athena_dialect_is_transpiled(console_server: Server) -> None:
    sql = {
        "sql": "SELECT date_format(TIMESTAMP '2024-03-01 10:01:00', '%Y-%m') AS m",
        "dialect": "athena",
    }
    status, body, _ = request("POST", console_server.url + "/v1/sql", json.dumps(sql).encode())
    assert status == 200, body
    assert body["data"] == [["2024-03"]]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("keyed") / "home"
    server = Server.started(
        home, '[auth]\napi_keys = ["s3cret key"]\n[syslog]\nudp = ""\ntcp = ""\n'
    )
    try:
        yield server
    finally:
        if server.proc is not None:
            server.stop()


def test_with_api_keys_every_page_and_api_needs_one(keyed_server: Server) -> None:
    url = keyed_server.url
    for path in ("/console/static/app.js", "/console/vendor/uPlot.iife.js", "/v1/console"):
        status, _, _ = _raw("GET", url + path)
        assert status == 401, path
    status, _, headers = _raw("GET", url + "/console/explore")
    assert status == 303 and headers["location"] == "/console/login"
    status, body, _ = request("POST", url + "/v1/sql", json.dumps({"sql": "SELECT 1"}).encode())
    assert status == 401
    status, _, _ = _raw("GET", url + "/console/login")
    assert status == 200
    auth = {"Authorization": "Bearer s3cret key"}
    status, body, _ = request(
        "POST", url + "/v1/sql", json.dumps({"sql": "SELECT 1 AS one"}).encode(), auth
    )
    assert status == 200 and body["data"] == [[1]]


def test_the_console_asks_for_a_key_and_keeps_it_for_the_session(
    browser: Any, keyed_server: Server, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    foreign = watch_hosts(context, keyed_server.url)
    page = context.new_page()
    try:
        page.goto(keyed_server.url + "/console/notebooks")
        page.wait_for_selector("#signin")
        page.fill("#key", "wrong")
        page.click("button[type=submit]")
        page.wait_for_function("document.getElementById('problem').textContent.length > 0")
        assert "wrong API key" in page.text_content("#problem")
        page.fill("#key", "s3cret key")
        page.click("button[type=submit]")
        page.wait_for_selector("#page[data-ready='true']")
        cookie = next(c for c in context.cookies() if c["name"] == "loglake_key")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] == -1
        page.goto(keyed_server.url + "/console/catalog")  # a new page load: still signed in
        page.wait_for_selector("#page[data-ready='true']")
        assert page.get_attribute("#page", "data-page") == "catalog"
        assert page.is_visible("#signout button")
    finally:
        context.close()
    assert not foreign, f"the page made requests to other hosts: {foreign[:5]}"


def _raw(method: str, url: str) -> tuple[int, bytes, dict[str, str]]:
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method=method), timeout=30) as reply:
            return reply.status, reply.read(), {k.lower(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def test_chromium_is_debians(browser: Any) -> None:
    assert chromium_path().startswith("/usr/")
    assert int(browser.version.split(".")[0]) >= 120


def test_serve_prints_the_console_url(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from serving import free_port

    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    (home / "loglake.toml").write_text('[syslog]\nudp = ""\ntcp = ""\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglake.cli", "serve", "--port", str(port)],
        env={**os.environ, "LOGLAKE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()  # blocks until the server has started
        assert first == f"loglake console: http://127.0.0.1:{port}/console\n"
    finally:
        proc.terminate()
        proc.wait(60)
