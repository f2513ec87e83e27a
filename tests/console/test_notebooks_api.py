"""The notebooks' HTTP API against a real server: create, list, read, replace, rename, delete,
export and import; the bounds; ids never becoming paths outside the notebooks folder; downloads
of a result byte for byte as ``loglake query`` prints them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from loglake.server.console.notebooks import (
    MAX_NAME_CHARS,
    MAX_NOTEBOOK_BYTES,
    MAX_NOTEBOOKS,
    MAX_PARAGRAPHS,
)
from serving import Server, request


def call(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    status, reply, _ = request(method, server.url + path, data, headers)
    return status, reply


def raw(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=60) as reply:
            return reply.status, reply.read(), {k.lower(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def folder(server: Server) -> Path:
    return server.home / "console" / "notebooks"


def cli_query(server: Server, sql: str, fmt: str) -> bytes:
    """What ``loglake query --format fmt`` prints over the server's lake."""
    done = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "query", "--format", fmt, sql],
        env=server.env(),
        capture_output=True,
        timeout=300,
        check=True,
    )
    return done.stdout


PARAGRAPHS = [
    {"kind": "markdown", "text": "# Errors\nWhich paths fail?"},
    {
        "kind": "sql",
        "text": "SELECT status, count(*) AS n FROM logs.access GROUP BY status ORDER BY status",
        "dialect": "duckdb",
        "view": "bar",
        "chart": {"x": "status", "y": "n", "group": ""},
    },
]


def test_create_list_read_replace_rename_delete(console_server: Server) -> None:
    status, made = call(
        console_server, "POST", "/v1/notebooks", {"name": " Errors ", "paragraphs": PARAGRAPHS}
    )
    assert status == 201, made
    nid = made["id"]
    assert re.fullmatch(r"[0-9a-f]{16}", nid)
    assert made["name"] == "Errors" and made["revision"] == 1
    assert [p["kind"] for p in made["paragraphs"]] == ["markdown", "sql"]
    assert made["paragraphs"][0] == {
        "id": made["paragraphs"][0]["id"],
        "kind": "markdown",
        "text": PARAGRAPHS[0]["text"],
    }
    assert made["paragraphs"][1]["chart"] == {"x": "status", "y": "n", "group": ""}
    stored = json.loads((folder(console_server) / f"{nid}.json").read_text())
    assert stored == made

    status, listing = call(console_server, "GET", "/v1/notebooks")
    assert status == 200 and listing["max_notebooks"] == MAX_NOTEBOOKS
    mine = next(n for n in listing["notebooks"] if n["id"] == nid)
    assert mine["name"] == "Errors" and mine["paragraphs"] == 2

    status, read = call(console_server, "GET", f"/v1/notebooks/{nid}")
    assert status == 200 and read == made

    changed = [*made["paragraphs"], {"kind": "sql", "text": "SELECT 1 AS one", "dialect": "athena"}]
    changed[1] = {
        **changed[1],
        "view": "pie",
        "chart": {"x": "status", "y": "n", "group": "status"},
    }
    status, saved = call(
        console_server, "PUT", f"/v1/notebooks/{nid}", {"paragraphs": changed, "revision": 1}
    )
    assert status == 200, saved
    assert saved["revision"] == 2 and saved["name"] == "Errors"
    assert saved["paragraphs"][1]["view"] == "pie"
    assert (
        saved["paragraphs"][2]["dialect"] == "athena" and saved["paragraphs"][2]["view"] == "table"
    )
    assert saved["updated"] > made["updated"]

    # A save from a page that read revision 1 would overwrite revision 2: refused.
    status, stale = call(
        console_server, "PUT", f"/v1/notebooks/{nid}", {"paragraphs": [], "revision": 1}
    )
    assert status == 409 and stale["error"]["code"] == "notebook_changed"
    assert "revision 2, yours 1" in stale["error"]["message"]

    status, renamed = call(
        console_server, "POST", f"/v1/notebooks/{nid}/rename", {"name": "Errors by path"}
    )
    assert status == 200 and renamed["name"] == "Errors by path" and renamed["revision"] == 3
    assert renamed["paragraphs"] == saved["paragraphs"]
    status, listing = call(console_server, "GET", "/v1/notebooks")
    assert next(n for n in listing["notebooks"] if n["id"] == nid)["name"] == "Errors by path"
    assert listing["notebooks"][0]["id"] == nid  # newest change first

    # Atomic writes leave no temporary file behind.
    assert sorted(p.name for p in folder(console_server).iterdir() if p.name.startswith(".")) == []

    status, gone = call(console_server, "DELETE", f"/v1/notebooks/{nid}")
    assert status == 200 and gone == {"deleted": nid}
    assert not (folder(console_server) / f"{nid}.json").exists()
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/export")):
        status, body = call(console_server, method, f"/v1/notebooks/{nid}{path}")
        assert status == 404 and body["error"]["code"] == "no_such_notebook", (method, path)
    status, body = call(console_server, "PUT", f"/v1/notebooks/{nid}", {"paragraphs": []})
    assert status == 404
    status, body = call(console_server, "POST", f"/v1/notebooks/{nid}/rename", {"name": "x"})
    assert status == 404
    status, listing = call(console_server, "GET", "/v1/notebooks")
    assert nid not in [n["id"] for n in listing["notebooks"]]


def test_a_new_notebook_has_one_empty_sql_paragraph(console_server: Server) -> None:
    status, made = call(console_server, "POST", "/v1/notebooks", {})
    assert status == 201
    assert made["name"] == "Untitled"
    assert [(p["kind"], p["text"], p["dialect"], p["view"]) for p in made["paragraphs"]] == [
        ("sql", "", "duckdb", "table")
    ]
    call(console_server, "DELETE", f"/v1/notebooks/{made['id']}")


def test_the_starter_notebook_runs(console_server: Server) -> None:
    status, made = call(console_server, "POST", "/v1/notebooks", {"starter": True})
    assert status == 201, made
    assert made["name"] == "Getting started with logs.access"
    sql = [p for p in made["paragraphs"] if p["kind"] == "sql"]
    assert [p["view"] for p in sql] == ["line", "bar", "pie", "table"]
    assert any(p["dialect"] == "athena" for p in sql)
    for paragraph in sql:
        body = {"sql": paragraph["text"], "dialect": paragraph["dialect"]}
        status, result = call(console_server, "POST", "/v1/sql", body)
        assert status == 200, (paragraph["text"], result)
        assert result["rows"] > 0
        names = [c["name"] for c in result["columns"]]
        chart = paragraph["chart"]
        assert all(chart[k] in names for k in ("x", "y") if chart[k]), (names, chart)
    pie = next(p for p in sql if p["view"] == "pie")
    status, result = call(console_server, "POST", "/v1/sql", {"sql": pie["text"]})
    want = console_server.query(pie["text"])
    assert result["data"] == [[r["class"] for r in want], [r["requests"] for r in want]]
    assert (
        sum(result["data"][1])
        == console_server.query("SELECT count(*) AS n FROM logs.access")[0]["n"]
    )
    call(console_server, "DELETE", f"/v1/notebooks/{made['id']}")


def test_export_and_import_round_trip(console_server: Server) -> None:
    status, made = call(
        console_server,
        "POST",
        "/v1/notebooks",
        {"name": "Errors / 5xx é", "paragraphs": PARAGRAPHS},
    )
    nid = made["id"]
    status, data, headers = raw("GET", f"{console_server.url}/v1/notebooks/{nid}/export")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert (
        headers["content-disposition"] == 'attachment; filename="Errors-5xx.loglake-notebook.json"'
    )
    exported = json.loads(data)
    assert exported["format"] == "loglake-notebook" and exported["version"] == 1
    assert exported["name"] == "Errors / 5xx é" and exported["paragraphs"] == made["paragraphs"]
    assert "id" not in exported and "revision" not in exported

    status, imported = call(console_server, "POST", "/v1/notebooks/import", exported)
    assert status == 201, imported
    assert imported["id"] != nid
    assert imported["name"] == made["name"] and imported["paragraphs"] == made["paragraphs"]

    status, body = call(
        console_server, "POST", "/v1/notebooks/import", {"name": "x", "paragraphs": []}
    )
    assert status == 400 and "not an exported notebook" in body["error"]["message"]
    status, body = call(console_server, "POST", "/v1/notebooks/import", {**exported, "version": 99})
    assert status == 400 and "export version 99" in body["error"]["message"]
    status, body = call(console_server, "POST", "/v1/notebooks/import", {**exported, "evil": 1})
    assert status == 400 and "unknown keys evil" in body["error"]["message"]
    for one in (nid, imported["id"]):
        call(console_server, "DELETE", f"/v1/notebooks/{one}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": ""}, '"name" is empty'),
        ({"name": "   "}, '"name" is empty'),
        ({"name": 7}, '"name" must be text'),
        ({"name": "a\nb"}, "control characters"),
        ({"name": "x" * (MAX_NAME_CHARS + 1)}, f"a name has at most {MAX_NAME_CHARS}"),
        ({"nmae": "x"}, "unknown keys nmae; valid: name, paragraphs, starter"),
        ({"paragraphs": {}}, '"paragraphs" must be a list'),
        ({"paragraphs": ["SELECT 1"]}, "paragraph 1 must be an object"),
        ({"paragraphs": [{"kind": "python"}]}, "kind 'python' is not one of sql, markdown"),
        ({"paragraphs": [{"text": 1}]}, 'paragraph 1: "text" must be text'),
        ({"paragraphs": [{"dialect": "cobol"}]}, "unknown dialect 'cobol'"),
        ({"paragraphs": [{"view": "radar"}]}, "view 'radar' is not one of table, line"),
        ({"paragraphs": [{"chart": {"z": "a"}}]}, "unknown chart keys z; valid: x, y, group"),
        ({"paragraphs": [{"chart": {"x": 1}}]}, "chart x must be a column name"),
        ({"paragraphs": [{"code": "x"}]}, "paragraph 1: unknown keys code"),
        ({"paragraphs": [{"id": "../x"}]}, "id must be 1 to 40 letters"),
        ({"paragraphs": [{"id": "a"}, {"id": "a"}]}, "paragraph 2: id 'a' is used twice"),
    ],
)
def test_bad_notebooks_are_400_saying_what_to_change(
    console_server: Server, body: dict[str, Any], message: str
) -> None:
    status, reply = call(console_server, "POST", "/v1/notebooks", body)
    assert status == 400, reply
    assert reply["error"]["code"] == "invalid_request"
    assert message in reply["error"]["message"]


def test_bodies_that_are_not_json_objects(console_server: Server) -> None:
    for data in (b"{nope", b"[1, 2]", b"null", b"[" * 100_000):
        status, reply, _ = request("POST", console_server.url + "/v1/notebooks", data)
        assert status == 400, (data[:10], reply)
        assert set(reply) == {"error"} and reply["error"]["code"] == "invalid_request"


def test_bounds(console_server: Server) -> None:
    many = [{"kind": "sql", "text": "SELECT 1"}] * (MAX_PARAGRAPHS + 1)
    status, reply = call(console_server, "POST", "/v1/notebooks", {"paragraphs": many})
    assert status == 413 and reply["error"]["code"] == "notebook_too_large"
    assert f"at most {MAX_PARAGRAPHS}" in reply["error"]["message"]
    status, made = call(
        console_server, "POST", "/v1/notebooks", {"paragraphs": many[:MAX_PARAGRAPHS]}
    )
    assert status == 201 and len(made["paragraphs"]) == MAX_PARAGRAPHS

    big = [{"kind": "markdown", "text": "x" * MAX_NOTEBOOK_BYTES}]
    status, reply = call(console_server, "POST", "/v1/notebooks", {"paragraphs": big})
    assert status == 413 and reply["error"]["code"] == "notebook_too_large"
    assert f"at most {MAX_NOTEBOOK_BYTES:,} bytes" in reply["error"]["message"]
    # Growing a stored notebook past the bound is refused the same way, and it is kept unchanged.
    status, reply = call(console_server, "PUT", f"/v1/notebooks/{made['id']}", {"paragraphs": big})
    assert status == 413
    assert call(console_server, "GET", f"/v1/notebooks/{made['id']}")[1] == made
    # A body far past any notebook is refused unread.
    data = json.dumps({"paragraphs": [{"text": "x" * (5 * MAX_NOTEBOOK_BYTES)}]}).encode()
    status, reply, _ = request("POST", console_server.url + "/v1/notebooks", data)
    assert status == 413 and reply["error"]["code"] == "body_too_large"
    assert "a notebook holds at most" in reply["error"]["message"]
    call(console_server, "DELETE", f"/v1/notebooks/{made['id']}")

    # The count bound: fill the folder with copies of a notebook up to the limit.
    status, one = call(console_server, "POST", "/v1/notebooks", {"name": "filler"})
    existing = len(call(console_server, "GET", "/v1/notebooks")[1]["notebooks"])
    copies = [folder(console_server) / f"{n:016x}.json" for n in range(MAX_NOTEBOOKS - existing)]
    text = (folder(console_server) / f"{one['id']}.json").read_text()
    for path in copies:
        path.write_text(text.replace(one["id"], path.stem))
    try:
        status, listing = call(console_server, "GET", "/v1/notebooks")
        assert len(listing["notebooks"]) == MAX_NOTEBOOKS
        status, reply = call(console_server, "POST", "/v1/notebooks", {"name": "one more"})
        assert status == 409 and reply["error"]["code"] == "too_many_notebooks"
        assert f"({MAX_NOTEBOOKS})" in reply["error"]["message"]
        assert "delete notebooks" in reply["error"]["message"]
        status, reply = call(
            console_server,
            "POST",
            "/v1/notebooks/import",
            {"format": "loglake-notebook", "version": 1, "name": "x"},
        )
        assert status == 409
    finally:
        for path in copies:
            path.unlink()
    call(console_server, "DELETE", f"/v1/notebooks/{one['id']}")
    status, made = call(console_server, "POST", "/v1/notebooks", {"name": "one more"})
    assert status == 201
    call(console_server, "DELETE", f"/v1/notebooks/{made['id']}")


BAD_IDS = [
    "..",
    "...",
    "%2e%2e",
    "..%2F..%2Fsecret",
    "..%5Csecret",
    "secret",
    "0123456789ABCDEF",
    "0123456789abcde",
    "0123456789abcdef0",
    "0123456789abcdef.json",
    "0123456789abcdef%00",
    "%2Fetc%2Fpasswd",
]


@pytest.mark.parametrize("nid", BAD_IDS)
def test_ids_never_become_paths_outside_the_folder(console_server: Server, nid: str) -> None:
    # A notebook file planted outside the folder, under names an id might reach.
    outside = console_server.home / "console" / "secret.json"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_text(json.dumps({"name": "secret", "paragraphs": []}))
    (console_server.home / "console" / "0123456789ABCDEF.json").write_text(outside.read_text())
    for method, path, body in (
        ("GET", "", None),
        ("PUT", "", {"name": "x"}),
        ("DELETE", "", None),
        ("POST", "/rename", {"name": "x"}),
        ("GET", "/export", None),
    ):
        status, reply = call(console_server, method, f"/v1/notebooks/{nid}{path}", body)
        assert status in (404, 405), (method, nid, status, reply)
        assert "error" in reply and "secret" not in json.dumps(reply.get("name", "")), reply
    assert outside.exists()
    assert json.loads(outside.read_text())["name"] == "secret"


def test_files_that_are_not_notebooks(console_server: Server) -> None:
    home = folder(console_server)
    home.mkdir(parents=True, exist_ok=True)
    (home / "notes.json").write_text("{}")  # not an id: never listed
    broken = home / "00000000000000ff.json"
    broken.write_text("{not json")
    try:
        status, listing = call(console_server, "GET", "/v1/notebooks")
        assert "notes" not in [n["id"] for n in listing["notebooks"]]
        shown = next(n for n in listing["notebooks"] if n["id"] == broken.stem)
        assert "cannot be read" in shown["problem"]
        status, reply = call(console_server, "GET", f"/v1/notebooks/{broken.stem}")
        assert status == 500 and reply["error"]["code"] == "notebook_unreadable"
        assert "restore it from an export, or delete the notebook" in reply["error"]["message"]
        status, _ = call(console_server, "DELETE", f"/v1/notebooks/{broken.stem}")
        assert status == 200 and not broken.exists()
    finally:
        broken.unlink(missing_ok=True)
        (home / "notes.json").unlink()


def test_unknown_notebooks_and_methods(console_server: Server) -> None:
    status, reply = call(console_server, "GET", "/v1/notebooks/00000000deadbeef")
    assert status == 404 and "GET /v1/notebooks lists them" in reply["error"]["message"]
    status, reply = call(console_server, "PATCH", "/v1/notebooks/00000000deadbeef")
    assert status == 405 and reply["error"]["code"] == "method_not_allowed"
    status, reply = call(console_server, "GET", "/v1/notebooks/import")
    assert status == 404


SQL = (
    "SELECT ts, client, method, path, status, bytes, user_agent FROM logs.access "
    "WHERE status >= 400 ORDER BY ts, client, path LIMIT 3000"
)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_downloads_are_what_loglake_query_prints(console_server: Server, fmt: str) -> None:
    want = cli_query(console_server, SQL, fmt)
    assert want.count(b"\n") > 100
    ext = {"csv": "csv", "json": "jsonl"}[fmt]
    # A form POST (what the page sends), a JSON POST and a GET give the same bytes.
    form = urllib.parse.urlencode({"sql": SQL, "format": fmt, "name": "errors"}).encode()
    status, data, headers = raw(
        "POST",
        console_server.url + "/v1/sql/download",
        form,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, data[:500]
    assert data == want
    assert headers["content-disposition"] == f'attachment; filename="errors.{ext}"'
    assert "x-loglake-truncated" not in headers
    assert headers["x-loglake-rows"] == str(len(console_server.query(SQL)))
    body = json.dumps({"sql": SQL, "format": fmt}).encode()
    status, data, headers = raw(
        "POST", console_server.url + "/v1/sql/download", body, {"Content-Type": "application/json"}
    )
    assert status == 200 and data == want
    assert headers["content-disposition"] == f'attachment; filename="result.{ext}"'
    query = urllib.parse.urlencode({"sql": SQL, "format": fmt})
    status, data, _ = raw("GET", f"{console_server.url}/v1/sql/download?{query}")
    assert status == 200 and data == want


def test_downloads_are_not_cut_at_the_console_rows(console_server: Server) -> None:
    sql = "SELECT range AS n FROM range(150000)"
    status, shown = call(console_server, "POST", "/v1/sql", {"sql": sql})
    assert status == 200 and shown["rows"] == 100_000 and shown["truncated"]
    assert "[console] max_rows" in shown["note"]
    query = urllib.parse.urlencode({"sql": sql, "format": "csv"})
    status, data, headers = raw("GET", f"{console_server.url}/v1/sql/download?{query}")
    assert status == 200
    lines = data.decode().splitlines()
    assert lines[0] == "n" and len(lines) == 150_001 and lines[-1] == "149999"
    assert headers["x-loglake-rows"] == "150000" and "x-loglake-truncated" not in headers


def test_download_errors_are_json(console_server: Server) -> None:
    url = console_server.url + "/v1/sql/download"
    cases = [
        ({"sql": "SELECT nope FROM logs.access"}, 400, "nope"),
        ({"sql": "DROP TABLE logs.access"}, 403, "DROP statements are not allowed"),
        ({"sql": "SELECT 1", "format": "xml"}, 400, "format 'xml': use csv or json"),
        ({"sql": ""}, 400, "the SQL is empty"),
        ({"sql": "SELECT 1", "dialect": "cobol"}, 400, "unknown dialect 'cobol'"),
        ({"format": "csv"}, 400, '"sql": "SELECT ..."'),
    ]
    for fields, want_status, message in cases:
        query = urllib.parse.urlencode(fields)
        status, data, headers = raw("GET", f"{url}?{query}")
        assert status == want_status, (fields, data)
        assert headers["content-type"] == "application/json"
        assert message in json.loads(data)["error"]["message"], (fields, data)
    status, data, _ = raw("POST", url, b"{nope", {"Content-Type": "application/json"})
    assert status == 400 and "must be JSON" in json.loads(data)["error"]["message"]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("keyed-notebooks") / "home"
    server = Server.started(home, '[auth]\napi_keys = ["k3y"]\n[syslog]\nudp = ""\ntcp = ""\n')
    try:
        yield server
    finally:
        if server.proc is not None:
            server.stop()


def test_with_api_keys_notebooks_and_downloads_need_one(keyed_server: Server) -> None:
    url = keyed_server.url
    for method, path in (("GET", "/v1/notebooks"), ("GET", "/v1/sql/download?sql=SELECT+1")):
        status, _, _ = raw(method, url + path)
        assert status == 401, path
    # The page's download is a form POST that carries the sign-in cookie, not a header.
    form = urllib.parse.urlencode({"sql": "SELECT 1 AS one", "format": "csv"}).encode()
    kind = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = raw("POST", url + "/v1/sql/download", form, kind)
    assert status == 401
    cookie = {"Cookie": f"loglake_key={b'k3y'.hex()}", **kind}
    status, data, _ = raw("POST", url + "/v1/sql/download", form, cookie)
    assert status == 200 and data == b"one\r\n1\r\n"
    bearer = {"Authorization": "Bearer k3y", "Content-Type": "application/json"}
    status, made, _ = request("POST", url + "/v1/notebooks", b'{"name": "keyed"}', bearer)
    assert status == 201 and made["name"] == "keyed"
