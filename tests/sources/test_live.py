"""Live sources behind one contract: a source added with one module and one registry line
(tests/sources/example_source.py) runs in the real server app in-process: it is started after the
streams, its records reach the stream, its HTTP route is mounted (on the ingest fast path), its
counters reach /metrics, its health and its crashed thread reach /readyz, a full stream is a 503
with Retry-After, and the stream it feeds cannot be deleted. The app is driven through ASGI calls
(no HTTP client library is needed)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import example_source
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loglake.config import load_config
from loglake.errors import StreamBusyError
from loglake.server.app import IngestFastPath, create_app
from loglake.server.runtime import Runtime
from loglake.sources.live import REGISTRY, load_sources

DEADLINE_S = 60.0

CONFIG = """
[syslog]
udp = ""
tcp = ""

[streams.tiny]
format = "json"
max_log_bytes = 65536
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def call(
    app: Any, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through the ASGI app: (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # the client waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer, b"".join(m.get("body", b"") for m in sent[1:])


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{name}{labels} is not on /metrics")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one registry line that adds the example source (for this test only)."""
    monkeypatch.setitem(REGISTRY, "example", "example_source:sources")


@pytest.fixture
def served(tmp_path: Path, registered: None) -> Iterator[tuple[Any, Runtime]]:
    """The server's app and its runtime, started; always stopped."""
    (tmp_path / "loglake.toml").write_text(CONFIG)
    app = create_app(load_config(home=tmp_path, environ={}))
    assert isinstance(app, IngestFastPath)  # no credentials: no auth middleware in front
    runtime: Runtime = app.app.state.runtime
    runtime.start()
    try:
        yield app, runtime
    finally:
        runtime.stop()


def test_a_source_is_one_module_and_one_registry_line(tmp_path: Path, registered: None) -> None:
    config = load_config(home=tmp_path, environ={"LOGLAKE_HOME": str(tmp_path)})
    names = [source.name for source in load_sources(config)]
    # The built-in protocols, in registry order, then the one the test registered.
    builtin = ["http", "kinesis", "firehose", "syslog", "elasticsearch", "otlp", "loki"]
    assert names == [*builtin, "example"]


def test_the_example_source_runs_in_the_server(served: tuple[Any, Runtime]) -> None:
    app, runtime = served
    source = next(s for s in runtime.sources if s.name == "example")
    assert isinstance(source, example_source.ExampleSource)

    # Started after the streams: it created its stream and appended its records from its thread.
    wait_for(lambda: runtime.ingested("example").accepted == 3, "the start-up records")
    assert runtime.streams["example"].log.next_offset == 3
    assert runtime.streams["example"].config.table == "logs.example"

    # Its route is mounted, on the fast path, in front of Starlette's router.
    assert any(pattern.match("/v1/example/example") for pattern, _, _ in app.hot)
    status, _, body = call(app, "POST", "/v1/example/example", b'{"n": 3}\n{"n": 4}\n')
    assert status == 200 and json.loads(body) == {"accepted": 2}
    assert runtime.streams["example"].log.next_offset == 5

    # A stream without room: StreamFullError becomes 503 + Retry-After, counted as dropped.
    pad = b'{"pad": "%s"}\n' % (b"x" * 1000)
    status, _, body = call(app, "POST", "/v1/example/tiny", pad * 50)  # 51 KiB of 64 KiB
    assert status == 200, body
    status, headers, body = call(app, "POST", "/v1/example/tiny", pad * 20)
    assert status == 503, body
    assert json.loads(body)["error"]["code"] == "stream_full"
    assert int(headers["retry-after"]) >= 1

    counters = dict(source.counters())
    assert (counters["example"].received, counters["example"].accepted) == (5, 5)
    assert (counters["tiny"].received, counters["tiny"].accepted) == (70, 50)
    assert counters["tiny"].dropped == {"stream_full": 20}

    # Its counters are on /metrics, per source and in the stream's totals.
    status, _, body = call(app, "GET", "/metrics")
    text = body.decode()
    assert status == 200
    labels = {"source": "example", "stream": "example"}
    assert metric(text, "loglake_source_records_received_total", **labels) == 5
    assert metric(text, "loglake_source_records_accepted_total", **labels) == 5
    assert (
        metric(
            text,
            "loglake_source_records_dropped_total",
            source="example",
            stream="tiny",
            reason="stream_full",
        )
        == 20
    )
    assert metric(text, "loglake_stream_records_accepted_total", stream="example") == 5
    assert metric(text, "loglake_source_up", source="example") == 1

    # Its health reaches /readyz (503 naming the problem) and /metrics.
    wait_for(lambda: runtime.ready, "the server to be ready")
    source.problem = "listener down"
    assert runtime.source_problems() == ["example: listener down"]
    assert not runtime.ready
    status, _, body = call(app, "GET", "/readyz")
    assert status == 503 and "example: listener down" in json.loads(body)["error"]["message"]
    assert (
        metric(call(app, "GET", "/metrics")[2].decode(), "loglake_source_up", source="example") == 0
    )
    source.problem = ""
    assert call(app, "GET", "/readyz")[0] == 200

    # The stream it feeds cannot be deleted through the API; the message names the source.
    with pytest.raises(StreamBusyError, match="fed by example"):
        runtime.delete("example")


def test_a_crashed_source_thread_keeps_the_server_unready(tmp_path: Path, registered: None) -> None:
    (tmp_path / "loglake.toml").write_text(CONFIG)
    app = create_app(load_config(home=tmp_path, environ={}))
    runtime: Runtime = app.app.state.runtime
    source = next(s for s in runtime.sources if s.name == "example")
    assert isinstance(source, example_source.ExampleSource)
    source.fail = True
    runtime.start()
    try:
        wait_for(lambda: bool(runtime.supervisor.dead()), "the example thread to die")
        assert runtime.source_problems() == [
            "worker example-feed stopped after an error (RuntimeError: the example feed failed "
            "on purpose); see the log"
        ]
        status, _, body = call(app, "GET", "/readyz")
        assert status == 503 and "example-feed" in json.loads(body)["error"]["message"]
    finally:
        runtime.stop()
