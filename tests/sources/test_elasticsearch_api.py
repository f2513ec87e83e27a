"""The Elasticsearch-compatible API against a real ``loglake serve``: the official Python client
(``info()``, ``helpers.bulk``) and raw HTTP for what shippers send (gzip, malformed lines, set-up
calls, a full stream). Every accepted document lands once in the lake table."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from serving import Server

CONFIG = """
[streams.events]
format = "json"
table = "logs.events"
buffer_seconds = 0.2

[streams.other]
format = "json"
table = "logs.other"
buffer_seconds = 0.2

[syslog]
udp = ""
tcp = ""
"""

FULL_CONFIG = """
[streams.full]
format = "json"
buffer_seconds = 600   # no delivery commit (and so no trim) during the test
max_log_bytes = 65536

[streams.roomy]
format = "json"

[syslog]
udp = ""
tcp = ""
"""

NDJSON = "application/x-ndjson"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server.started(tmp_path_factory.mktemp("es") / "home", CONFIG)
    try:
        yield srv
    finally:
        srv.stop(signal.SIGKILL)


def call(
    server: Server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """One raw request: (status, body as sent, headers with lower-case names)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def ndjson(*lines: Any) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def count(server: Server, table: str, where: str = "true") -> int:
    return int(server.query(f"SELECT count(*) AS n FROM logs.{table} WHERE {where}")[0]["n"])


def test_the_client_reads_the_version_and_bulk_loads_every_document_once(server: Server) -> None:
    client = Elasticsearch(server.url, request_timeout=60)
    info = client.info()
    assert info["version"]["number"].startswith("8.")
    assert info["tagline"] == "You Know, for Search"
    assert client.cluster.health()["status"] == "green"
    actions = ({"_index": "events", "_source": {"n": n, "msg": f"event {n}"}} for n in range(2000))
    ok, errors = helpers.bulk(client, actions, chunk_size=500)
    assert (ok, errors) == (2000, [])
    server.wait_rows("SELECT count(*) AS n FROM logs.events WHERE msg LIKE 'event %'", 2000)
    rows = server.query(
        "SELECT count(DISTINCT n) AS d, min(n) AS lo, max(n) AS hi, sum(n) AS s "
        "FROM logs.events WHERE msg LIKE 'event %'"
    )
    assert rows == [{"d": 2000, "lo": 0, "hi": 1999, "s": sum(range(2000))}]
    client.close()


def test_every_reply_carries_the_product_header(server: Server) -> None:
    requests: list[tuple[str, str, bytes | None]] = [
        ("GET", "/", None),
        ("HEAD", "/", None),
        ("GET", "/_license", None),
        ("GET", "/_cluster/health", None),
        ("GET", "/_cat/health", None),
        ("PUT", "/_index_template/logs", b'{"index_patterns": ["logs-*"]}'),
        ("GET", "/_index_template/logs", None),
        ("PUT", "/_template/logs", b"{}"),
        ("GET", "/_ilm/policy/logs", None),
        ("PUT", "/_ilm/policy/logs", b'{"policy": {}}'),
        ("PUT", "/_ingest/pipeline/p", b"{}"),
        ("POST", "/_bulk", ndjson({"index": {"_index": "other"}}, {"a": 1})),
        ("POST", "/_bulk", b"{not json\n"),
    ]
    for method, path, body in requests:
        status, raw, headers = call(server, method, path, body, {"Content-Type": NDJSON})
        assert headers.get("x-elastic-product") == "Elasticsearch", (method, path, status)
        plain = path == "/_cat/health"  # _cat answers text unless asked for JSON
        assert headers["content-type"].startswith("text/plain" if plain else "application/json")
        if method == "HEAD":
            assert status == 200 and raw == b""
    status, raw, _ = call(server, "GET", "/_license")
    assert status == 200 and json.loads(raw)["license"]["status"] == "active"
    status, raw, headers = call(server, "GET", "/_cat/health?v")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    head, line = raw.decode().splitlines()
    assert head.split()[:4] == ["epoch", "timestamp", "cluster", "status"]
    assert line.split()[2:4] == ["loglake", "green"]
    status, raw, _ = call(server, "GET", "/_cat/health?format=json")
    assert status == 200 and json.loads(raw)[0]["status"] == "green"
    status, raw, _ = call(server, "PUT", "/_index_template/logs", b"{}")
    assert (status, json.loads(raw)) == (200, {"acknowledged": True})


def test_bulk_answers_per_item_and_stores_only_the_good_documents(server: Server) -> None:
    body = ndjson(
        {"index": {"_index": "other", "_id": "a"}},
        {"kind": "mixed", "v": 1},
        {"create": {}},  # the index of the path
        {"kind": "mixed", "v": 2},
        {"index": {}},
        b"[1, 2]",  # not an object: this item fails, the others go on
        {"delete": {"_id": "a"}},
        {"update": {"_id": "a"}},
        {"doc": {"v": 9}},
        {"index": {"_index": "nope"}},
        {"kind": "mixed", "v": 3},
        {"index": {}},
        {"kind": "mixed", "v": 4},
    )
    status, raw, _ = call(server, "POST", "/other/_bulk", body, {"Content-Type": NDJSON})
    assert status == 200
    assert raw.startswith(b'{"errors":true,"items":[')
    items = json.loads(raw)["items"]
    summary = [(next(iter(i)), i[next(iter(i))]["status"]) for i in items]
    assert summary == [
        ("index", 201),
        ("create", 201),
        ("index", 400),
        ("delete", 400),
        ("update", 400),
        ("index", 404),
        ("index", 201),
    ]
    assert items[0]["index"]["_id"] == "a" and items[0]["index"]["result"] == "created"
    assert items[2]["index"]["error"]["type"] == "document_parsing_exception"
    assert items[5]["index"]["error"]["type"] == "index_not_found_exception"
    assert "append-only" in items[3]["delete"]["error"]["reason"]
    server.wait_rows("SELECT count(*) AS n FROM logs.other WHERE kind = 'mixed'", 3)
    values = server.query("SELECT v FROM logs.other WHERE kind = 'mixed' ORDER BY v")
    assert [r["v"] for r in values] == [1, 2, 4]


def test_all_good_is_the_text_fluent_bit_looks_for_and_gzip_is_inflated(server: Server) -> None:
    docs = [{"kind": "gz", "n": n} for n in range(300)]
    lines: list[Any] = []
    for doc in docs:
        lines += [{"create": {"_index": "other"}}, doc]
    body = gzip.compress(ndjson(*lines))
    headers = {"Content-Type": NDJSON, "Content-Encoding": "gzip"}
    status, raw, _ = call(server, "POST", "/_bulk", body, headers)
    assert status == 200 and raw.startswith(b'{"errors":false,"items":[{"create":{')
    assert len(json.loads(raw)["items"]) == 300
    server.wait_rows("SELECT count(*) AS n FROM logs.other WHERE kind = 'gz'", 300)
    assert server.query("SELECT sum(n) AS s FROM logs.other WHERE kind = 'gz'") == [
        {"s": sum(range(300))}
    ]


@pytest.mark.parametrize(
    ("body", "kind", "says"),
    [
        (b"{not json\n{}\n", "x_content_parse_exception", "malformed action/metadata line"),
        (ndjson({"index": {}, "create": {}}, {}), "illegal_argument_exception", "only key"),
        (ndjson({"upsert": {}}, {}), "illegal_argument_exception", "found [upsert]"),
        (ndjson({"index": []}, {}), "illegal_argument_exception", "expected an object"),
        (ndjson({"index": {}}, {"a": 1}), "action_request_validation_exception", "index"),
        (ndjson({"index": {"_index": "other"}}), "illegal_argument_exception", "document line"),
    ],
)
def test_a_malformed_request_is_a_400_in_the_elasticsearch_shape(
    server: Server, body: bytes, kind: str, says: str
) -> None:
    before = server.next_offset("other")
    status, raw, headers = call(server, "POST", "/_bulk", body, {"Content-Type": NDJSON})
    reply = json.loads(raw)
    assert (status, reply["status"]) == (400, 400), reply
    assert reply["error"]["type"] == kind and says in reply["error"]["reason"]
    assert reply["error"]["root_cause"][0]["type"] == kind
    assert headers["x-elastic-product"] == "Elasticsearch"
    assert server.next_offset("other") == before  # nothing of a refused request is kept


def test_a_body_in_an_unknown_encoding_is_refused(server: Server) -> None:
    headers = {"Content-Type": NDJSON, "Content-Encoding": "br"}
    status, raw, _ = call(server, "POST", "/_bulk", b"x", headers)
    reply = json.loads(raw)
    assert status == 415 and reply["status"] == 415 and reply["error"]["reason"]


def test_a_full_stream_answers_429_with_retry_after(tmp_path: Path) -> None:
    srv = Server.started(tmp_path / "home", FULL_CONFIG)
    try:
        doc = {"msg": "x" * 900}
        body = ndjson(*([{"index": {"_index": "full"}}, doc] * 10))
        for _ in range(200):  # fill the 64 KiB budget
            status, raw, headers = call(srv, "POST", "/_bulk", body, {"Content-Type": NDJSON})
            if status != 200:
                break
            assert json.loads(raw)["errors"] is False
        assert status == 429, raw
        reply = json.loads(raw)
        assert reply["error"]["type"] == "es_rejected_execution_exception"
        assert int(headers["retry-after"]) >= 1
        assert headers["x-elastic-product"] == "Elasticsearch"
        # The bulk answer too, for shippers that read items and not the status (rsyslog 8.2302)
        assert reply["errors"] is True and len(reply["items"]) == 10
        assert {i["index"]["status"] for i in reply["items"]} == {429}
        assert reply["items"][0]["index"]["error"]["type"] == "es_rejected_execution_exception"
        # Documents of another stream in the same request are stored and answered 201.
        before = srv.next_offset("roomy")
        mixed = ndjson(
            {"index": {"_index": "roomy"}}, {"n": 1}, *([{"index": {"_index": "full"}}, doc] * 10)
        )
        status, raw, headers = call(srv, "POST", "/_bulk", mixed, {"Content-Type": NDJSON})
        assert status == 429 and "retry-after" in headers
        items = json.loads(raw)["items"]
        assert [i["index"]["status"] for i in items] == [201] + [429] * 10
        assert srv.next_offset("roomy") == before + 1
    finally:
        srv.stop(signal.SIGKILL)


def test_counters_on_metrics(server: Server) -> None:
    body = ndjson({"index": {"_index": "other"}}, b'"text"', {"delete": {"_index": "other"}})
    status, _, _ = call(server, "POST", "/_bulk", body, {"Content-Type": NDJSON})
    assert status == 200
    status, raw, _ = call(server, "GET", "/metrics")
    metrics = raw.decode()
    labels = '{source="elasticsearch",stream="other"}'
    for name in ("received", "accepted", "rejected"):
        assert f"loglake_source_records_{name}_total{labels}" in metrics, name
    rejected = next(
        line
        for line in metrics.splitlines()
        if line.startswith(f"loglake_source_records_rejected_total{labels}")
    )
    assert float(rejected.split()[-1]) >= 2


AUTH_CONFIG = """
[streams.secured]
format = "json"
table = "logs.secured"
buffer_seconds = 0.2

[auth]
api_keys = ["k-123"]

[syslog]
udp = ""
tcp = ""
"""


def test_with_api_keys_the_client_sends_its_key_as_bearer_basic_or_api_key(tmp_path: Path) -> None:
    srv = Server.started(tmp_path / "home", AUTH_CONFIG)
    try:
        body = ndjson({"index": {"_index": "secured"}}, {})
        assert call(srv, "POST", "/_bulk", body)[0] == 401
        wrong = [
            {"Authorization": "Basic " + base64.b64encode(b"elastic:nope").decode()},
            {"Authorization": "ApiKey " + base64.b64encode(b"id:nope").decode()},
            {"Authorization": "ApiKey nope"},
            {"Authorization": "Basic k-123"},  # not base64 of user:password
        ]
        for headers in wrong:
            assert call(srv, "POST", "/_bulk", body, headers)[0] == 401, headers
        clients = [
            Elasticsearch(srv.url, bearer_auth="k-123", request_timeout=60),
            Elasticsearch(srv.url, basic_auth=("elastic", "k-123"), request_timeout=60),
            Elasticsearch(srv.url, api_key=("key-id", "k-123"), request_timeout=60),
            Elasticsearch(srv.url, api_key="k-123", request_timeout=60),
        ]
        for number, client in enumerate(clients):
            assert client.info()["version"]["number"] == "8.11.0"
            actions = ({"_index": "secured", "_source": {"c": number, "n": n}} for n in range(50))
            assert helpers.bulk(client, actions) == (50, [])
            client.close()
        srv.wait_rows("SELECT count(*) AS n FROM logs.secured", 200)
        rows = srv.query("SELECT c, count(*) AS n FROM logs.secured GROUP BY c ORDER BY c")
        assert rows == [{"c": c, "n": 50} for c in range(4)]
    finally:
        srv.stop(signal.SIGKILL)
