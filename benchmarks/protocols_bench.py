"""Records/s through each ingest protocol with its real client, next to the native API, one server.

    python benchmarks/protocols_bench.py                   # 20 s per protocol, 2 clients each
    python benchmarks/protocols_bench.py --seconds 10 --rounds 3 --only native,elasticsearch

Every protocol carries the same records: the sample access log's lines as messages, stamped with
the current time, into its own ``json`` stream of one ``loglake serve``:

- ``native``: ``POST /v1/streams/native/records`` with 500 JSON lines per request (http.client);
- ``elasticsearch``: the Python ``elasticsearch`` client's ``helpers.bulk`` (chunks of 500
  documents, as the client batches them) into the index ``es``;
- ``otlp``: the OpenTelemetry Python SDK (``LoggerProvider`` + ``BatchLogRecordProcessor``, batches
  of 512, gzip as the exporter's default) into ``POST /v1/logs`` (stream ``otlp``);
- ``loki``: winston-loki, the Node.js Loki transport (protobuf + snappy, one batch at a time every
  50 ms: ``benchmarks/loki_winston.js``) into ``POST /loki/api/v1/push`` (stream ``loki``); it needs
  ``npm ci`` in ``tests/clients/node`` (``.ci/run`` does it).

``--clients`` processes per protocol run for ``--seconds``; ``--rounds`` repeats the protocols in
turn (the order rotates each round) and medians are printed. Figures per protocol: records
acknowledged per second (what the clients saw), sustained records/s (acknowledged *and* committed
to the lake, until the stream's consumer lag is 0), and the server's CPU seconds per million
records (all its threads, until committed): clients share the 2 cores with the server, so a slow
client lowers records/s while CPU per record shows the server's own cost of a protocol.

Prints a table, then one JSON line. Never asserts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import SAMPLE_LOG, emit_json, median, note, print_table

BATCH = 500
PROTOCOLS = ("native", "elasticsearch", "otlp", "loki")
STREAM = {"native": "native", "elasticsearch": "es", "otlp": "otlp", "loki": "loki"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines() -> list[str]:
    return SAMPLE_LOG.read_text().splitlines()


def _native(port: int, seconds: float, out: Any) -> None:
    lines = _lines()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        now = datetime.now(UTC).isoformat()
        chunk = lines[(i * BATCH) % len(lines) :][:BATCH]
        i += 1
        body = "".join(json.dumps({"@timestamp": now, "message": ln}) + "\n" for ln in chunk)
        conn.request(
            "POST", "/v1/streams/native/records", body.encode(), {"Content-Type": "text/plain"}
        )
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status == 200:
            sent += json.loads(payload)["accepted"]
        else:
            time.sleep(float(resp.getheader("Retry-After") or 1))
    out.put({"sent": sent, "seconds": time.perf_counter() - start})


def _elasticsearch(port: int, seconds: float, out: Any) -> None:
    from elasticsearch import Elasticsearch, helpers

    lines = _lines()
    client = Elasticsearch(f"http://127.0.0.1:{port}", request_timeout=60, retry_on_status=(429,))
    start = time.perf_counter()

    def documents() -> Any:
        i = 0
        while time.perf_counter() - start < seconds:
            now = datetime.now(UTC).isoformat()
            for ln in lines[(i * BATCH) % len(lines) :][:BATCH]:
                yield {"_index": "es", "@timestamp": now, "message": ln}
            i += 1

    ok, _ = helpers.bulk(client, documents(), chunk_size=BATCH, max_retries=10)
    out.put({"sent": ok, "seconds": time.perf_counter() - start})


def _otlp(port: int, seconds: float, out: Any) -> None:
    import requests
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    lines = _lines()
    sent = 0

    class Counting(OTLPLogExporter):
        """The SDK's exporter, counting the records the server acknowledged."""

        def export(self, batch: Any) -> Any:
            nonlocal sent
            result = super().export(batch)
            if result.name == "SUCCESS":
                sent += len(batch)
            return result

    session = requests.Session()
    session.trust_env = False
    provider = LoggerProvider()
    # A queue deep enough that the processor never drops: the exporter's pace is the measure.
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            Counting(endpoint=f"http://127.0.0.1:{port}/v1/logs", session=session),
            max_queue_size=1_000_000,
            max_export_batch_size=512,
            schedule_delay_millis=200,
        )
    )
    logger = provider.get_logger("bench")
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        for ln in lines[(i * BATCH) % len(lines) :][:BATCH]:
            logger.emit(body=ln)
        i += 1
        # Emitting is cheaper than exporting: stay at most 20 batches ahead of the exporter.
        while i * BATCH - sent > 20 * 512 and time.perf_counter() - start < seconds:
            time.sleep(0.005)
    provider.force_flush(120_000)
    provider.shutdown()
    out.put({"sent": sent, "seconds": time.perf_counter() - start})


def _loki(port: int, seconds: float, out: Any) -> None:
    """winston-loki (Node), the Loki transport the tests run, from tests/clients/node."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["node", str(root / "benchmarks" / "loki_winston.js"), f"http://127.0.0.1:{port}",
         str(seconds), str(SAMPLE_LOG)],
        env={**os.environ, "NODE_PATH": str(root / "tests" / "clients" / "node" / "node_modules")},
        capture_output=True, text=True, check=True, timeout=seconds + 300,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    out.put({"sent": result["sent"], "seconds": result["seconds"]})


CLIENTS: dict[str, Callable[[int, float, Any], None]] = {
    "native": _native,
    "elasticsearch": _elasticsearch,
    "otlp": _otlp,
    "loki": _loki,
}


def _metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def _lag(port: int, stream: str) -> float:
    for line in _metrics(port).splitlines():
        if line.startswith(f'loglake_stream_consumer_lag_records{{stream="{stream}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0  # a stream created on first use has no figure before its first record


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phase(port: int, pid: int, protocol: str, clients: int, seconds: float) -> dict[str, float]:
    queue: Any = mp.Queue()
    procs = [
        mp.Process(target=CLIENTS[protocol], args=(port, seconds, queue)) for _ in range(clients)
    ]
    cpu_before = _cpu_seconds(pid)
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    records = sum(r["sent"] for r in results)
    wall = max(r["seconds"] for r in results)
    t0 = time.perf_counter()
    while _lag(port, STREAM[protocol]) > 0:
        time.sleep(0.05)
    drain = time.perf_counter() - t0
    cpu = _cpu_seconds(pid) - cpu_before
    return {
        "records": records,
        "acked_per_s": records / wall,
        "sustained_per_s": records / (wall + drain),
        "server_cpu_s_per_million": cpu / max(records, 1) * 1e6,
    }


def _has_loki(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/ready")
    status = conn.getresponse().status
    conn.close()
    return status == 200


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default=",".join(PROTOCOLS), help="comma-separated protocols")
    args = parser.parse_args()
    protocols = [p for p in args.only.split(",") if p]

    home = Path(tempfile.mkdtemp(prefix="loglake-protocols-bench-"))
    (home / "loglake.toml").write_text(
        "".join(f'[streams.{STREAM[p]}]\nformat = "json"\n' for p in PROTOCOLS)
    )
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loglake.cli", "serve", "--port", str(port)],
        env={**os.environ, "LOGLAKE_HOME": str(home)},
        stderr=subprocess.DEVNULL,
    )
    figures: dict[str, list[dict[str, float]]] = {p: [] for p in protocols}
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
        if "loki" in protocols and not _has_loki(port):
            note("this server has no Loki push route: loki skipped")
            protocols.remove("loki")
        for r in range(args.rounds):
            order = protocols[r % len(protocols) :] + protocols[: r % len(protocols)]
            for protocol in order:
                note(f"round {r + 1}: {protocol}, {args.clients} clients x {args.seconds:g} s")
                figures[protocol].append(
                    _phase(port, server.pid, protocol, args.clients, args.seconds)
                )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    summary = {
        p: {k: median([f[k] for f in figures[p]]) for k in figures[p][0]}
        for p in protocols
        if figures[p]
    }
    native = summary.get("native")
    print_table(
        ["protocol", "acked rec/s", "sustained rec/s", "vs native", "server CPU s / M"],
        [
            [
                p,
                f"{s['acked_per_s']:,.0f}",
                f"{s['sustained_per_s']:,.0f}",
                f"{s['sustained_per_s'] / native['sustained_per_s']:.2f}" if native else "",
                f"{s['server_cpu_s_per_million']:.1f}",
            ]
            for p, s in summary.items()
        ],
        title=f"{args.clients} clients x {args.seconds:g} s, median of {args.rounds} round(s)",
    )
    emit_json({"clients": args.clients, "seconds": args.seconds, "protocols": summary})


if __name__ == "__main__":
    main()
