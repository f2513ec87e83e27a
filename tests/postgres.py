"""A real PostgreSQL server for the tests of a shared catalog: Debian's ``postgresql`` binaries,
a fresh cluster in a temporary folder, started on a free loopback port and always stopped.

Imported as a plain module (like tests/serving.py). PostgreSQL refuses to run as root, so when the
tests run as root the cluster belongs to the ``postgres`` user and its commands run through
``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving import free_port
from waiting import wait_for


def _bin(name: str) -> str:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} was not found: install it with `apt-get install postgresql`"
        )
    return found if isinstance(found, str) else found[0]


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(_as_owner(cmd), capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


@contextmanager
def postgres_server(database: str = "lake") -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster; yield the SQLAlchemy URL of ``database`` in it.

    Trust authentication on 127.0.0.1 only. The cluster is stopped (fast shutdown, then killed if
    need be) and its folder removed on exit.
    """
    # pytest's tmp folders are private to root; the cluster needs one its owner can enter.
    base = Path(tempfile.mkdtemp(prefix="loglake-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    port = free_port()
    _run([_bin("initdb"), "-D", str(data), "-U", user, "--auth=trust", "--no-sync", "-E", "UTF8"])
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    _run([_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "start"])
    try:
        psql = [_bin("psql"), "-h", str(sock), "-p", str(port), "-U", user, "-d", "postgres"]
        wait_for(
            lambda: (
                subprocess.run(_as_owner([*psql, "-c", "SELECT 1"]), capture_output=True).returncode
                == 0
            ),
            timeout=60,
            what="PostgreSQL accepting connections",
        )
        _run([*psql, "-c", f"CREATE DATABASE {database}"])
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{database}"
    finally:
        stop = _as_owner([_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        if subprocess.run(stop, capture_output=True, timeout=120).returncode:
            subprocess.run(
                _as_owner([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)
