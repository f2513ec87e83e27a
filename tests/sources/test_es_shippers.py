"""Real log shippers through loglake's Elasticsearch API: rsyslog's omelasticsearch and
syslog-ng's http() and elasticsearch-http() destinations tail a file into a real ``loglake serve``
with the configurations of docs/elasticsearch.md (read from it, only the port, the file and the
key replaced), and the Python client's ``helpers.bulk``; behind API keys, through a stream too
small for what they send (429 + Retry-After) and, for rsyslog, across loglake being down, every
line lands in the lake exactly once. rsyslog with a wrong key keeps its batches in its error file.

rsyslog and syslog-ng are Debian 12's packages, unpacked into /opt/loglake-shippers by .ci/run
(``LOGLAKE_SHIPPERS`` to use another folder); each runs as a subprocess of the test with its own
configuration, state and pid files, never as a system service.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch, helpers

from loglake.errors import QueryError
from serving import Server, free_port
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "elasticsearch.md"
SHIPPERS = Path(os.environ.get("LOGLAKE_SHIPPERS", "/opt/loglake-shippers"))
KEY = "k-123"

CONFIG = """
[streams.events]
format = "json"
table = "logs.events"
buffer_seconds = 0.2

[syslog]
udp = ""
tcp = ""
"""

AUTH_CONFIG = CONFIG + f'\n[auth]\napi_keys = ["{KEY}"]\n'

# A budget that a few batches fill (about a thousand of the documents below) and delivery that
# commits, and so frees it, only every 3 s: the shippers meet 429s and have to retry.
SMALL_CONFIG = CONFIG.replace("buffer_seconds = 0.2", "buffer_seconds = 3\nmax_log_bytes = 262144")


def documented(name: str) -> str:
    """The configuration docs/elasticsearch.md shows under ``<!-- tested: name -->``."""
    match = re.search(
        rf"<!-- tested: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", DOCS.read_text(), re.S
    )
    assert match, f"docs/elasticsearch.md has no configuration marked tested: {name}"
    return match.group(1)


def replaced(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text, f"the documented configuration has no {old!r} to replace"
        text = text.replace(old, new)
    return text


def shipper(*parts: str) -> Path:
    path = SHIPPERS.joinpath(*parts)
    assert path.exists(), (
        f"{path} is missing: .ci/run unpacks Debian's rsyslog, rsyslog-elasticsearch, "
        f"syslog-ng-core, syslog-ng-mod-http and syslog-ng-scl into {SHIPPERS}"
    )
    return path


@contextlib.contextmanager
def running(argv: list[str], work: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """``argv`` as a subprocess for the block; stopped with SIGTERM (it flushes) afterwards."""
    err = work / "stderr.txt"
    with err.open("wb") as sink:
        proc = subprocess.Popen(
            argv, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, env=env, cwd=work
        )
    try:
        yield
    except BaseException:
        print(err.read_text(errors="replace")[-5000:])  # shown with the failure
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


@contextlib.contextmanager
def rsyslog(config: str, work: Path, gives_up: bool = False) -> Iterator[None]:
    """rsyslogd in the foreground with ``config`` (plus its own work directory and error file);
    its error file, where omelasticsearch puts the requests it gave up on, must stay absent
    unless ``gives_up``."""
    modules = shipper("usr", "lib", "x86_64-linux-gnu", "rsyslog")
    errors = work / "errors.json"
    config = replaced(config, ("/var/log/rsyslog-loglake-errors.json", str(errors)))
    conf = work / "rsyslog.conf"
    conf.write_text(f'global(workDirectory="{work}")\n{config}')
    argv = [str(shipper("usr", "sbin", "rsyslogd")), "-n", "-f", str(conf)]
    with running([*argv, "-i", str(work / "rsyslogd.pid"), "-M", str(modules)], work):
        yield
    if not gives_up:
        assert not errors.exists(), errors.read_text()[:5000]


@contextlib.contextmanager
def syslog_ng(config: str, work: Path) -> Iterator[None]:
    """syslog-ng in the foreground with ``config`` after what Debian's syslog-ng.conf starts with
    (``@version``, the configuration library), its persist, pid and control files in ``work``."""
    lib = shipper("usr", "lib", "syslog-ng")
    includes = f"{shipper('etc', 'syslog-ng')}:{shipper('usr', 'share', 'syslog-ng', 'include')}"
    conf = work / "syslog-ng.conf"
    conf.write_text(
        f'@version: 3.38\n@define include-path "{includes}"\n@include "scl.conf"\n\n{config}'
    )
    argv = [str(shipper("usr", "sbin", "syslog-ng")), "-F", "-f", str(conf)]
    argv += ["-R", str(work / "persist"), "-p", str(work / "pid"), "-c", str(work / "ctl")]
    argv += ["--module-path", str(lib / "3.38")]
    with running(argv, work, {**os.environ, "LD_LIBRARY_PATH": str(lib)}):
        yield


def write_lines(path: Path, tag: str, count: int, pad: int = 0) -> list[str]:
    lines = [f"{tag} {n}" + (" " + "x" * pad if pad else "") for n in range(count)]
    path.write_text("".join(line + "\n" for line in lines))
    return lines


def landed_once(server: Server, tag: str, lines: list[str]) -> None:
    """Every line is in logs.events exactly once (and nothing else of ``tag``). The tests also
    check, once the shipper has stopped, that the stream took exactly as many documents (no
    duplicate arrived after this)."""

    def count() -> int:
        try:
            rows = server.query(
                f"SELECT count(*) AS n FROM logs.events WHERE message LIKE '{tag} %'"
            )
        except QueryError:
            return 0  # no table before the first delivery
        n = int(rows[0]["n"])
        assert n <= len(lines), f"{n} rows for {len(lines)} lines: duplicates"
        return n

    wait_for(lambda: count() == len(lines), f"{len(lines)} lines of {tag} in the lake", 180, 0.25)
    rows = server.query(
        f"SELECT count(*) AS n, count(DISTINCT message) AS d, min(host) AS h, "
        f"count(\"@timestamp\") AS t FROM logs.events WHERE message LIKE '{tag} %'"
    )
    ((row,),) = (rows,)
    assert (row["n"], row["d"], row["t"]) == (len(lines), len(lines), len(lines))
    assert row["h"]  # the host the shipper names
    stored = {
        r["message"]
        for r in server.query(f"SELECT message FROM logs.events WHERE message LIKE '{tag} %'")
    }
    assert stored == set(lines)


def metric(server: Server, name: str, headers: dict[str, str] | None = None) -> float:
    """The Elasticsearch source's counter ``name`` for the stream events (0 when absent)."""
    req = urllib.request.Request(f"{server.url}/metrics", headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"loglake_source_records_{name}_total{{") and (
            'source="elasticsearch"' in line and 'stream="events"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    path = tmp_path / "shipper"
    path.mkdir()
    return path


def test_rsyslog_ships_every_line_once_with_its_api_key(tmp_path: Path, work: Path) -> None:
    server = Server.started(tmp_path / "home", AUTH_CONFIG)
    try:
        lines = write_lines(tmp_path / "app.log", "rsyslog-auth", 3000)
        config = replaced(
            documented("rsyslog"),
            ('serverport="8080"', f'serverport="{server.port}"'),
            ("/var/log/app.log", str(tmp_path / "app.log")),
            ('# uid="loglake" pwd="KEY"', f'uid="loglake" pwd="{KEY}"'),
        )
        with rsyslog(config, work):
            landed_once(server, "rsyslog-auth", lines)
        assert metric(server, "accepted", {"Authorization": f"Bearer {KEY}"}) == 3000
    finally:
        server.stop(signal.SIGKILL)


def test_rsyslog_with_a_wrong_key_keeps_its_requests_in_its_error_file(
    tmp_path: Path, work: Path
) -> None:
    # What docs/elasticsearch.md warns of: rsyslog 8.2302 drops a batch answered without items
    # (here the 401), and its errorfile is where the documents are kept.
    server = Server.started(tmp_path / "home", AUTH_CONFIG)
    try:
        write_lines(tmp_path / "app.log", "rsyslog-wrong", 50)
        config = replaced(
            documented("rsyslog"),
            ('serverport="8080"', f'serverport="{server.port}"'),
            ("/var/log/app.log", str(tmp_path / "app.log")),
            ('# uid="loglake" pwd="KEY"', 'uid="loglake" pwd="wrong"'),
        )
        errors = work / "errors.json"
        with rsyslog(config, work, gives_up=True):
            wait_for(
                lambda: "rsyslog-wrong 49" in errors.read_text() if errors.exists() else False,
                "the last line in rsyslog's error file",
            )
        assert '"code": "unauthorized"' in errors.read_text()  # loglake's 401, as answered
        assert metric(server, "received", {"Authorization": f"Bearer {KEY}"}) == 0
    finally:
        server.stop(signal.SIGKILL)


def test_rsyslog_resumes_once_loglake_answers_again(tmp_path: Path, work: Path) -> None:
    # rsyslog meets a port that hangs up every connection unanswered (loglake down): it suspends
    # the action, and resumes once GET /_cat/health answers, sending again the batch that
    # nothing stored.
    home = tmp_path / "home"
    home.mkdir()
    (home / "loglake.toml").write_text(CONFIG)
    server = Server(home, free_port())
    lines = write_lines(tmp_path / "app.log", "rsyslog-down", 2000)
    config = replaced(
        documented("rsyslog"),
        ('serverport="8080"', f'serverport="{server.port}"'),
        ("/var/log/app.log", str(tmp_path / "app.log")),
    )
    try:
        with socket.create_server(("127.0.0.1", server.port)) as down:

            def hang_up() -> None:
                conn, _ = down.accept()
                conn.close()

            hung_up = threading.Thread(target=hang_up, daemon=True)
            hung_up.start()
            with rsyslog(config, work):
                wait_for(lambda: not hung_up.is_alive(), "rsyslog to meet loglake down", 60)
                down.close()
                server.start()
                landed_once(server, "rsyslog-down", lines)
        assert metric(server, "accepted") == 2000
    finally:
        if server.proc is not None:
            server.stop(signal.SIGKILL)


@pytest.mark.slow
def test_rsyslog_retries_what_a_full_stream_refused(tmp_path: Path, work: Path) -> None:
    server = Server.started(tmp_path / "home", SMALL_CONFIG)
    try:
        lines = write_lines(tmp_path / "app.log", "rsyslog-full", 5000, pad=80)
        config = replaced(
            documented("rsyslog"),
            ('serverport="8080"', f'serverport="{server.port}"'),
            ("/var/log/app.log", str(tmp_path / "app.log")),
        )
        with rsyslog(config, work):
            landed_once(server, "rsyslog-full", lines)
        assert metric(server, "dropped") > 0  # the stream did refuse batches (429)
        assert metric(server, "accepted") == 5000
    finally:
        server.stop(signal.SIGKILL)


def test_syslog_ng_http_ships_every_line_once_with_its_api_key(tmp_path: Path, work: Path) -> None:
    server = Server.started(tmp_path / "home", AUTH_CONFIG)
    try:
        lines = write_lines(tmp_path / "app.log", "syslog-ng-auth", 3000)
        config = replaced(
            documented("syslog-ng-http"),
            ("127.0.0.1:8080", f"127.0.0.1:{server.port}"),
            ("/var/log/app.log", str(tmp_path / "app.log")),
            ('# user("loglake") password("KEY")', f'user("loglake") password("{KEY}")'),
        )
        with syslog_ng(config, work):
            landed_once(server, "syslog-ng-auth", lines)
        assert metric(server, "accepted", {"Authorization": f"Bearer {KEY}"}) == 3000
    finally:
        server.stop(signal.SIGKILL)


def test_syslog_ng_elasticsearch_http_ships_every_line_once(tmp_path: Path, work: Path) -> None:
    server = Server.started(tmp_path / "home", CONFIG)
    try:
        lines = write_lines(tmp_path / "app.log", "syslog-ng-es", 3000)
        config = replaced(
            documented("syslog-ng-elasticsearch-http"),
            ("127.0.0.1:8080", f"127.0.0.1:{server.port}"),
            ("/var/log/app.log", str(tmp_path / "app.log")),
        )
        with syslog_ng(config, work):
            landed_once(server, "syslog-ng-es", lines)
        assert metric(server, "accepted") == 3000
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.slow
def test_syslog_ng_retries_what_a_full_stream_refused(tmp_path: Path, work: Path) -> None:
    server = Server.started(tmp_path / "home", SMALL_CONFIG)
    try:
        lines = write_lines(tmp_path / "app.log", "syslog-ng-full", 5000, pad=80)
        config = replaced(
            documented("syslog-ng-http"),
            ("127.0.0.1:8080", f"127.0.0.1:{server.port}"),
            ("/var/log/app.log", str(tmp_path / "app.log")),
        )
        with syslog_ng(config, work):
            landed_once(server, "syslog-ng-full", lines)
        assert metric(server, "dropped") > 0
        assert metric(server, "accepted") == 5000
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.slow
def test_python_bulk_helper_retries_what_a_full_stream_refused(tmp_path: Path) -> None:
    server = Server.started(tmp_path / "home", SMALL_CONFIG)
    try:
        # The documented settings: the transport retries a 429 at once, a few times; the helper
        # then retries the refused documents with growing pauses.
        client = Elasticsearch(
            server.url, request_timeout=60, max_retries=3, retry_on_status=(429, 502, 503, 504)
        )
        now = datetime.now(UTC).isoformat()
        lines = [f"python-full {n} " + "x" * 80 for n in range(5000)]
        actions = (
            {"_index": "events", "_source": {"@timestamp": now, "message": m, "host": "py"}}
            for m in lines
        )
        ok, errors = helpers.bulk(
            client, actions, chunk_size=500, max_retries=30, initial_backoff=0.5, max_backoff=2
        )
        assert (ok, errors) == (5000, [])
        client.close()
        landed_once(server, "python-full", lines)
        assert metric(server, "dropped") > 0
        assert metric(server, "accepted") == 5000
    finally:
        server.stop(signal.SIGKILL)
