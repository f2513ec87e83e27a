"""The logs of ``loglake serve``: JSON or text lines with structured fields, start and stop events."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import serving
from loglake.server.logs import configure_logging
from serving import Server, free_port

_TOUCHED = ("loglake", "uvicorn.error", "uvicorn.access", "")


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the other tests."""
    saved = [
        (lg, list(lg.handlers), lg.level, lg.propagate)
        for lg in (logging.getLogger(name) for name in _TOUCHED)
    ]
    hook = threading.excepthook
    yield
    threading.excepthook = hook
    for lg, handlers, level, propagate in saved:
        lg.handlers = handlers
        lg.setLevel(level)
        lg.propagate = propagate


TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_fields() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = logging.getLogger("loglake.test")
    log.info(
        "append to %s failed",
        "web",
        extra={"fields": {"stream": "web", "reason": "disk full", "n": 3, "msg": "clash"}},
    )
    log.debug("not shown at info")
    try:
        raise OSError("no space left")
    except OSError:
        log.error("commit failed", exc_info=True, extra={"fields": {"stream": "web"}})
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert TS.fullmatch(first.pop("ts"))
    assert first == {
        "level": "info",
        "logger": "loglake.test",
        "msg": "append to web failed",
        "stream": "web",
        "reason": "disk full",
        "n": 3,
        "msg_": "clash",  # a field never replaces the event's own keys
    }
    assert second["level"] == "error" and second["stream"] == "web"
    assert second["exc"].startswith("Traceback") and "OSError: no space left" in second["exc"]


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_and_uvicorn_and_crashed_threads() -> None:
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    configure_logging("text", "debug", stream=out)  # again: replaces the handler, no duplicates
    logging.getLogger("loglake.test").debug(
        "tail %s: cannot read", "app", extra={"fields": {"path": "/var/log/a b.log", "n": 2}}
    )
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("some.library").info("below WARNING: not shown")
    crash = threading.Thread(target=lambda: 1 / 0, name="loglake-deliver-web")
    crash.start()
    crash.join()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(
        TS.pattern + r' debug loglake.test: tail app: cannot read path="/var/log/a b.log" n=2',
        lines[0],
    )
    assert lines[1].endswith(" info uvicorn.error: Uvicorn running")
    assert " error loglake.serve: thread loglake-deliver-web stopped by an error" in lines[2]
    assert 'reason="ZeroDivisionError: division by zero"' in lines[2]
    assert lines[-1] == "ZeroDivisionError: division by zero"  # the traceback follows


def test_configure_logging_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="xml"):
        configure_logging("xml", "info")


def _events(path: Path) -> list[dict[str, Any]]:
    """Every line of the server's stderr, each of which must be one JSON object."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_serve_logs_start_errors_and_stop_as_json(tmp_path: Path, shared_data: Path) -> None:
    home = tmp_path / "lake"
    home.mkdir()
    (home / "plain").write_text("a file, not a folder\n")
    (home / "loglake.toml").write_text(
        '[streams.web]\nformat = "combined"\nbuffer_seconds = 0.3\n\n'
        '[syslog]\nudp = ""\ntcp = ""\n\n'
        f'[tail.broken]\npaths = ["{home}/plain/app.log"]\nstream = "web"\npoll_seconds = 0.1\n'
    )
    srv = Server(home, free_port())
    srv.start()
    try:
        lines = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:300]
        status, reply, _ = serving.request(
            "POST", f"{srv.url}/v1/streams/web/records", b"\n".join(lines) + b"\n"
        )
        assert status == 200 and reply["accepted"] == 300
    finally:
        srv.stop(signal.SIGTERM)
    events = _events(home / "server.log")
    by_msg = {e["msg"]: e for e in events}

    started = by_msg["loglake serve started"]
    assert started["level"] == "info" and started["logger"] == "loglake.serve"
    assert started["listen"] == f"127.0.0.1:{srv.port}" and started["url"] == srv.url
    assert started["home"] == str(home.resolve())
    assert started["auth"] == "none, loopback only" and started["syslog"] == "off"
    assert started["streams"] == {"web": {"format": "combined", "table": "logs.access"}}
    assert started["tails"] == {"broken": {"paths": [f"{home}/plain/app.log"], "stream": "web"}}

    problem = next(e for e in events if e.get("tail") == "broken")
    assert problem["level"] == "warning" and problem["stream"] == "web"
    assert problem["path"] == f"{home}/plain/app.log"
    assert problem["reason"].startswith("cannot stat")

    stopped = by_msg["loglake serve stopped"]
    assert stopped["streams"] == {
        "web": {"appended": 300, "accepted": 300, "delivered": 300, "rejected": 0, "undelivered": 0}
    }
    assert events.index(started) < events.index(stopped)
    assert any(m.startswith(f"Uvicorn running on {srv.url} ") for m in by_msg)  # uvicorn's, too


def test_serve_text_logs_name_the_url(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    home.mkdir()
    (home / "loglake.toml").write_text(
        '[server]\nlog_format = "text"\nlog_level = "warning"\n\n[syslog]\nudp = ""\ntcp = ""\n'
    )
    srv = Server(home, free_port())
    srv.start()
    srv.stop(signal.SIGTERM)
    text = (home / "server.log").read_text()
    assert text == ""  # nothing at WARNING or above happened

    (home / "loglake.toml").write_text(
        '[server]\nlog_format = "text"\n\n[syslog]\nudp = ""\ntcp = ""\n'
    )
    srv.start()
    srv.stop(signal.SIGTERM)
    started = next(x for x in (home / "server.log").read_text().splitlines() if "started" in x)
    assert re.fullmatch(
        TS.pattern + r" info loglake.serve: loglake serve started version=\S+ "
        rf"listen=127.0.0.1:{srv.port} url={re.escape(srv.url)} .*auth=\"none, loopback only\".*",
        started,
    )
