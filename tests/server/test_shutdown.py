"""An open event stream does not hold the server's shutdown (uvicorn's graceful shutdown waited 30 s
for every open Server-Sent Events response, e.g. a console page left open)."""

from __future__ import annotations

import http.client
import signal
from pathlib import Path

from serving import Server

CONFIG = """
[syslog]
udp = ""
tcp = ""

[streams.web]
format = "combined"

[queries.hits]
stream = "web"
window = "tumbling 1m"
sql = "SELECT count(*) AS hits FROM stream"
"""


def _open_stream(server: Server, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("GET", path)
    reply = conn.getresponse()
    assert reply.status == 200, reply.read()
    assert reply.headers["content-type"].startswith("text/event-stream")
    reply.readline()  # the first event or comment: the stream is open
    return reply


def test_open_event_streams_end_when_the_server_stops(tmp_path: Path) -> None:
    server = Server.started(tmp_path / "home", CONFIG)
    streams = [
        _open_stream(server, "/v1/queries/hits/events"),
        _open_stream(server, "/v1/console/live/events?query=hits"),
    ]
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once stopped
    for reply in streams:
        rest = reply.read()  # ends (EOF) instead of blocking: the server closed the stream
        assert b"event: result" not in rest
    log = (server.home / "server.log").read_text()
    assert "timeout graceful shutdown exceeded" not in log
    assert "loglake serve stopped" in log
