"""A stream log damaged on disk while the server was down (issue 9, finding 10), end to end:
every intact record reaches the lake, the lost ones are counted on /metrics, no offset is reused."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from loglake.stream.local import HEADER, MAGIC, LocalLog
from serving import Server, free_port, request


def line(n: int) -> bytes:
    return (
        f'10.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "GET /r{n} HTTP/1.1" 200 5 "-" "curl/8"'
    ).encode()


def frame_starts(segment: Path) -> list[int]:
    data = segment.read_bytes()
    starts, pos = [], 0
    while pos < len(data):
        magic, _first, _count, size, _, _ = HEADER.unpack_from(data, pos)
        assert magic == MAGIC
        starts.append(pos)
        pos += HEADER.size + size
    return starts


def test_a_damaged_frame_loses_only_its_records_and_is_counted(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    home.mkdir()
    with LocalLog(home / "streams" / "web") as log:
        for n in range(8):
            log.append([line(n * 100 + i) for i in range(100)])
    segment = sorted((home / "streams" / "web").glob("*.log"))[0]
    starts = frame_starts(segment)
    assert len(starts) == 8
    # One bit flipped in the payload of frame 2 of 8, as a failing sector does it.
    with segment.open("r+b") as fh:
        fh.seek(starts[1] + HEADER.size + 40)
        byte = fh.read(1)[0]
        fh.seek(starts[1] + HEADER.size + 40)
        fh.write(bytes([byte ^ 0x08]))

    config = (
        '[streams.web]\nformat = "combined"\nbuffer_seconds = 0.2\n[syslog]\nudp = ""\ntcp = ""\n'
    )
    (home / "loglake.toml").write_text(config)
    srv = Server(home, free_port())
    srv.start()
    try:
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 700, timeout=120)
        paths = {r["path"] for r in srv.query("SELECT path FROM logs.access")}
        assert paths == {f"/r{n}" for n in (*range(100), *range(200, 800))}
        status, metrics, _ = _text(f"{srv.url}/metrics")
        assert status == 200
        assert re.search(
            r'^loglake_stream_lost_records_total\{stream="web"\} 100\.0$', metrics, re.M
        )
        # The next record gets an offset after every old one: none is reused.
        status, reply, _ = request("POST", f"{srv.url}/v1/streams/web/records", line(9999) + b"\n")
        assert status == 200 and reply["first_offset"] == 800
        srv.wait_rows("SELECT count(*) AS n FROM logs.access", 701, timeout=120)
        assert "disk" in (home / "server.log").read_text()
    finally:
        srv.stop(signal.SIGKILL)


def _text(url: str) -> tuple[int, str, None]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as resp:
        return resp.status, resp.read().decode(), None
