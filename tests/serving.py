"""A real ``loglake serve`` subprocess for the server tests, and a tiny HTTP client.

Shared by tests/server/ and tests/console/ (imported as a plain module, not a conftest).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loglake.errors import QueryError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null"), _lower(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), _lower(exc.headers)


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


#: Servers started and not stopped yet: tests/server/conftest.py kills those a test leaves behind.
RUNNING: list[Server] = []


@dataclass(eq=False)  # compared by identity (RUNNING)
class Server:
    """``loglake serve`` as a subprocess with LOGLAKE_HOME = ``home``; ``start`` waits for /readyz."""

    home: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    host: str | None = None  # --host; the tests still connect through 127.0.0.1
    _lake: Any = field(default=None, repr=False)  # the Connection of query(), opened on first use

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def started(cls, home: Path, config: str, host: str | None = None) -> Server:
        """A server on a free port with ``config`` as ``home``/loglake.toml, started."""
        home.mkdir(parents=True, exist_ok=True)
        (home / "loglake.toml").write_text(config)
        srv = cls(home, free_port(), host=host)
        srv.start()
        return srv

    def env(self) -> dict[str, str]:
        env = {**os.environ, "LOGLAKE_HOME": str(self.home)}
        env.pop("LOGLAKE_CONFIG", None)
        return env

    def start(self) -> None:
        host = [] if self.host is None else ["--host", self.host]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loglake.cli", "serve", "--port", str(self.port), *host],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=open(self.home / "server.log", "ab"),  # noqa: SIM115
        )
        RUNNING.append(self)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise AssertionError((self.home / "server.log").read_text())
            try:
                if request("GET", f"{self.url}/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(
            "server did not become ready:\n" + (self.home / "server.log").read_text()[-5000:]
        )

    def kill(self) -> None:
        """SIGKILL the server if it still runs (the safety net of tests/server/conftest.py)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(60)
        self.proc = None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.proc = None
        if self in RUNNING:
            RUNNING.remove(self)
        if self._lake is not None:
            self._lake.close()
            self._lake = None
        return code

    def query(self, sql: str) -> list[dict[str, Any]]:
        """The rows of ``sql`` over the server's lake, as ``loglake query --format json`` prints
        them. Run from this process, in a sandbox worker kept between calls: tests poll the lake
        often, and a CLI process per query cost a second of CPU each, taken from the server under
        test. Raises QueryError (also for a table not created yet: not in scope)."""
        from loglake.config import load_config
        from loglake.query.engine import Connection
        from loglake.query.output import json_default as _json_default

        if self._lake is None:
            self._lake = Connection(load_config(home=self.home, environ={}))
        names, rows = self._lake.rows(sql)
        return [
            json.loads(json.dumps(dict(zip(names, row, strict=True)), default=_json_default))
            for row in rows
        ]

    def wait_rows(self, sql: str, want: int, timeout: float = 120) -> None:
        """Poll ``sql`` (a count named n) until it reaches ``want``; more than that is a failure."""
        start = time.monotonic()
        failed = ""
        while True:
            try:
                n = self.query(sql)[0]["n"]
            except QueryError as exc:
                n, failed = -1, f" (the query failed: {exc})"  # the table may not exist yet
            if n == want:
                return
            assert n <= want, f"{n} rows > {want}: duplicates"
            assert time.monotonic() - start < timeout, (
                f"{n} rows after {timeout} s, want {want}{failed}"
            )
            time.sleep(0.1)

    def next_offset(self, stream: str) -> int:
        """How many records the stream's log holds (native API)."""
        status, listing, _ = request("GET", f"{self.url}/v1/streams")
        assert status == 200, listing
        return int(next(s for s in listing["streams"] if s["name"] == stream)["next_offset"])
