"""The streamed table with maintenance on: does it keep its file count, and do its queries stay fast?

    python benchmarks/stream_soak.py                  # 30 min at 10,000 records/s
    python benchmarks/stream_soak.py --minutes 1      # smoke test: about 3 minutes in all

1. Server: ``loglake serve`` on a fresh ``LOGLAKE_HOME`` whose ``loglake.toml`` declares
   ``[streams.web]`` (``format = "combined"``, default buffering: a commit about every second),
   turns the syslog listeners off and runs the maintenance of every table every
   ``--maintain-every`` s (default 60; ``[maintenance] interval_s``), besides the streamed
   table's own small-file compaction.
2. Load: ``--senders`` threads (default 4) POST bodies of 500 real access-log lines (the sample
   log) to ``/v1/streams/web/records`` over keep-alive connections, paced together to ``--rate``
   records/s (default 10,000) for ``--minutes`` (default 30). Record i is sample line i mod 10,000
   with its timestamp set so the whole run covers ``--days`` days (default 3) from ``--start``
   (2026-01-01), in order: history replayed at speed, so the table holds several whole days and a
   day-range query selects a third of it. A refused body (503) is sent again after Retry-After.
3. Every ``--every`` s (default 60): the table's live data files, bytes and rows from the catalog
   (pyiceberg, current snapshot), and from ``/metrics`` what delivery committed and what
   maintenance did.
4. End: senders stop; wait until delivery has caught up; one last sample.
5. Batch side: the same records (regenerated from the acknowledged bodies' numbers) piped into
   ``loglake ingest --format combined -`` on a second fresh home, in one run.
6. Day-range query (per minute of the middle day: count, sum and p95 of bytes) through
   ``POST /v1/sql`` of a ``loglake serve`` on each home (the streamed one still maintaining),
   alternated, one warm-up then ``--runs`` (5) each; medians; the two answers' counts and sums
   compared. Also one ``loglake query`` of each (a cold process, start-up included).

Prints the samples, a summary, then one JSON line. Never asserts. Target (issue 13): the file
count levels off, and the day-range query on the streamed table is within 2x of the batch one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    DATA_DIR,
    MB,
    SAMPLE_LOG,
    emit_json,
    fresh_dir,
    loglake_cmd,
    median,
    note,
    print_table,
    split_at_stamps,
    verdict,
)

BATCH = 500
STREAM = "web"
TABLE = "logs.access"
TARGET_RATIO = 2.0
TOML = """[streams.web]
format = "combined"

[syslog]
udp = ""
tcp = ""

[maintenance]
interval_s = {interval}
"""
BATCH_TOML = '[syslog]\nudp = ""\ntcp = ""\n'
QUERY = (
    "SELECT date_trunc('minute', ts) AS minute, count(*) AS n, sum(bytes) AS bytes, "
    "approx_quantile(bytes, 0.95) AS p95 FROM logs.access "
    "WHERE ts >= TIMESTAMPTZ '{day} 00:00:00+00' AND ts < TIMESTAMPTZ '{next} 00:00:00+00' "
    "GROUP BY 1 ORDER BY 1"
)
_METRIC = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")


# --- records -------------------------------------------------------------------------------------


class Records:
    """Record i: sample line i mod 10,000 with its timestamp placed so that ``total`` records
    cover ``days`` days from ``start`` in order. Bodies are numbered: body b holds records
    b*BATCH .. b*BATCH+BATCH-1."""

    def __init__(self, start: datetime, days: float, total: int):
        pieces = [split_at_stamps(line) for line in SAMPLE_LOG.read_bytes().splitlines()]
        self.lines = [(p[0], p[1]) for p in pieces if len(p) == 2]  # one timestamp per line
        self.start = int(start.timestamp())
        self.span = int(days * 86400)
        self.total = max(total, 1)

    def body(self, b: int) -> bytes:
        out = []
        stamps: dict[int, bytes] = {}
        n = len(self.lines)
        for i in range(b * BATCH, (b + 1) * BATCH):
            second = self.start + min(i * self.span // self.total, self.span - 1)
            stamp = stamps.get(second)
            if stamp is None:
                stamp = stamps[second] = time.strftime(
                    "[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(second)
                ).encode()
            pre, post = self.lines[i % n]
            out.append(pre + stamp + post)
        return b"\n".join(out) + b"\n"


class Senders:
    """``count`` threads sending bodies 0, 1, 2... (thread j those with b mod count == j), paced
    together to ``rate`` records/s until ``seconds`` pass."""

    def __init__(self, port: int, records: Records, count: int, rate: float, seconds: float):
        self.port, self.records, self.count = port, records, count
        self.rate, self.seconds = rate, seconds
        self.acked: list[int] = []  # numbers of the acknowledged bodies
        self.sent = self.refused = self.errors = 0
        self.ack_seconds: list[float] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(j,)) for j in range(count)]

    def start(self) -> None:
        self._t0 = time.perf_counter()
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join()

    def _run(self, j: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        b = j
        while True:
            due = self._t0 + b * BATCH / self.rate
            if due - self._t0 >= self.seconds:
                break
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            body = self.records.body(b)
            while True:  # until acknowledged (or the run is over)
                t0 = time.perf_counter()
                try:
                    conn.request("POST", f"/v1/streams/{STREAM}/records", body)
                    resp = conn.getresponse()
                    reply = resp.read()
                except (OSError, http.client.HTTPException):
                    with self._lock:
                        self.sent += BATCH
                        self.errors += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    time.sleep(1)
                    continue
                with self._lock:
                    self.sent += BATCH
                    if resp.status == 200 and json.loads(reply)["accepted"] == BATCH:
                        self.acked.append(b)
                        self.ack_seconds.append(time.perf_counter() - t0)
                        break
                    self.refused += 1
                if time.perf_counter() - self._t0 > self.seconds + 60:
                    break  # give up on this body; it is not counted as acknowledged
                time.sleep(float(resp.getheader("Retry-After") or 1))
            b += self.count
        conn.close()


# --- server and lake -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def serve(home: Path, toml: str) -> tuple[subprocess.Popen[bytes], int]:
    """``loglake serve`` on ``home`` with ``toml``, ready; the process and its port."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "loglake.toml").write_text(toml)
    port = _free_port()
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    env.pop("LOGLAKE_CONFIG", None)
    proc = subprocess.Popen(
        [*loglake_cmd(), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "server.log", "ab"),  # noqa: SIM115
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"loglake serve exited with {proc.returncode}; see {home}/server.log")
        try:
            if _http(port, "GET", "/readyz")[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("loglake serve did not become ready")


def metrics(port: int) -> dict[str, float]:
    """``{name: value summed over labels}`` from ``/metrics`` (the bench stream, the table)."""
    _status, text = _http(port, "GET", "/metrics")
    values: dict[str, float] = {}
    for line in text.decode().splitlines():
        m = _METRIC.match(line.strip())
        if m and not line.startswith("#"):
            labels = m.group(2) or ""
            if STREAM in labels or TABLE in labels or not labels:
                values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(3))
    return values


def table_files(home: Path) -> tuple[int, int, int]:
    """(live data files, their bytes, their rows) of the table's current snapshot (pyiceberg)."""
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "loglake",
        uri=f"sqlite:///{home / 'catalog.db'}",
        warehouse=(home / "warehouse").resolve().as_uri(),
    )
    try:
        files = [t.file for t in catalog.load_table(TABLE).scan().plan_files()]
    except Exception:  # not created yet
        return 0, 0, 0
    finally:
        catalog.engine.dispose()
    return (
        len(files),
        sum(f.file_size_in_bytes for f in files),
        sum(f.record_count for f in files),
    )


def sql(port: int, statement: str) -> tuple[float, Any]:
    """Seconds ``POST /v1/sql`` took, and its JSON answer."""
    t0 = time.perf_counter()
    status, body = _http(port, "POST", "/v1/sql", json.dumps({"sql": statement}).encode())
    seconds = time.perf_counter() - t0
    if status != 200:
        raise SystemExit(f"/v1/sql answered {status}: {body[:500]!r}")
    return seconds, json.loads(body)


def _totals(answer: Any) -> tuple[int, int, int]:
    """(minutes, total count, total bytes) of a day-range answer, to compare the two lakes."""
    columns = [c["name"] for c in answer["columns"]]
    data = dict(zip(columns, answer["data"], strict=True))  # column by column
    return answer["rows"], sum(map(int, data["n"])), sum(int(v or 0) for v in data["bytes"])


def batch_ingest(home: Path, records: Records, bodies: list[int]) -> float:
    """The acknowledged bodies piped into one ``loglake ingest``; its wall seconds."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "loglake.toml").write_text(BATCH_TOML)
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    env.pop("LOGLAKE_CONFIG", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*loglake_cmd(), "ingest", "--format", "combined", "--no-progress", "-"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    for b in bodies:
        proc.stdin.write(records.body(b))
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit(f"loglake ingest failed with {proc.returncode}")
    return time.perf_counter() - t0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _every(seconds: float, until: threading.Event) -> Iterator[float]:
    t0 = time.perf_counter()
    k = 1
    while not until.wait(max(0.0, t0 + k * seconds - time.perf_counter())):
        yield time.perf_counter() - t0
        k += 1


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=10_000.0, help="records/s, all senders")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--days", type=float, default=3.0, help="days of event time the run covers")
    ap.add_argument("--start", default="2026-01-01", help="first day of event time (UTC)")
    ap.add_argument("--maintain-every", type=float, default=60.0, help="[maintenance] interval_s")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of the query on each side")
    ap.add_argument("--workdir", type=Path, default=DATA_DIR)
    args = ap.parse_args()

    work = fresh_dir(args.workdir, "stream-soak")
    seconds = args.minutes * 60
    start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    records = Records(start, args.days, int(args.rate * seconds))
    day = start + timedelta(days=int(args.days) // 2)  # a whole day in the middle
    query = QUERY.format(day=day.date(), next=(day + timedelta(days=1)).date())
    load_start = _load()
    note(f"load average at start: {load_start}; work folder {work}")

    streamed = work / "streamed"
    server, port = serve(streamed, TOML.format(interval=args.maintain_every))
    samples: list[dict[str, Any]] = []

    def sample(at: float) -> None:
        m = metrics(port)
        files, size, rows = table_files(streamed)
        samples.append(
            {
                "minute": round(at / 60, 1),
                "acked": len(senders.acked) * BATCH,
                "delivered": int(m.get("loglake_stream_records_delivered_total", 0)),
                "files": files,
                "MB": round(size / MB, 1),
                "avg_file_MB": round(size / files / MB, 2) if files else 0.0,
                "rows": rows,
                "compacted": int(m.get("loglake_table_compacted_files_total", 0)),
                "deferred": int(m.get("loglake_table_compactions_deferred_total", 0)),
                "passes": int(m.get("loglake_table_maintenance_passes_total", 0)),
                "maint_failures": int(m.get("loglake_table_maintenance_failures_total", 0)),
                "delivery_failures": int(m.get("loglake_consumer_failures_total", 0)),
            }
        )
        note(f"sample {samples[-1]}")

    try:
        senders = Senders(port, records, args.senders, args.rate, seconds)
        done = threading.Event()
        senders.start()
        t0 = time.perf_counter()
        watcher = threading.Thread(
            target=lambda: [sample(at) for at in _every(args.every, done)], daemon=True
        )
        watcher.start()
        senders.join()
        send_seconds = time.perf_counter() - t0
        done.set()
        watcher.join()
        acked = len(senders.acked) * BATCH
        note(f"sent for {send_seconds:.0f} s; waiting for delivery to catch up")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            m = metrics(port)
            if m.get("loglake_stream_consumer_lag_records", 1) == 0:
                break
            time.sleep(1)
        sample(time.perf_counter() - t0)
        lake_rows = int(sql(port, f"SELECT count(*) AS n FROM {TABLE}")[1]["data"][0][0])
        rejected = int(metrics(port).get("loglake_stream_records_rejected_total", 0))

        note("batch side: the same records through one loglake ingest")
        batch = work / "batch"
        ingest_s = batch_ingest(batch, records, sorted(senders.acked))
        batch_files, batch_bytes, batch_rows = table_files(batch)
        other, other_port = serve(batch, BATCH_TOML)
        try:
            times: dict[str, list[float]] = {"streamed": [], "batch": []}
            answers: dict[str, Any] = {}
            ports = {"streamed": port, "batch": other_port}
            for side, p in ports.items():
                answers[side] = sql(p, query)[1]  # warm-up
            for run in range(args.runs):
                order = ["streamed", "batch"] if run % 2 == 0 else ["batch", "streamed"]
                for side in order:
                    times[side].append(sql(ports[side], query)[0])
            cold: dict[str, float] = {}
            for side, home in (("streamed", streamed), ("batch", batch)):
                env = {**os.environ, "LOGLAKE_HOME": str(home)}
                env.pop("LOGLAKE_CONFIG", None)
                t = time.perf_counter()
                subprocess.run(
                    [*loglake_cmd(), "query", "--format", "json", query],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    check=True,
                )
                cold[side] = time.perf_counter() - t
        finally:
            _stop(other)
        failures = int(metrics(port).get("loglake_consumer_failures_total", 0))
    finally:
        _stop(server)
    load_end = _load()

    print_table(
        list(samples[0].keys()) if samples else ["minute"],
        [list(s.values()) for s in samples],
        title=f"{TABLE} while streaming {args.rate:,.0f} records/s (maintenance every "
        f"{args.maintain_every:.0f} s)",
    )
    files_over_time = [s["files"] for s in samples[:-1]] or [0]
    final = samples[-1]
    s_med, b_med = median(times["streamed"]), median(times["batch"])
    ratio = s_med / b_med if b_med else float("nan")
    same = _totals(answers["streamed"]) == _totals(answers["batch"])
    ack_ms = sorted(senders.ack_seconds)
    figures: dict[str, Any] = {
        "minutes": args.minutes,
        "rate": args.rate,
        "senders": args.senders,
        "records_sent": senders.sent,
        "records_acknowledged": acked,
        "bodies_refused": senders.refused,
        "send_errors": senders.errors,
        "achieved_rate": round(acked / send_seconds),
        "ack_p99_ms": round(ack_ms[int(0.99 * (len(ack_ms) - 1))] * 1000, 1) if ack_ms else None,
        "records_in_lake": lake_rows,
        "records_rejected": rejected,
        "delivery_failures": failures,
        "files_min": min(files_over_time),
        "files_max": max(files_over_time),
        "files_final": final["files"],
        "bytes_final": final["MB"] * MB,
        "avg_file_mb": final["avg_file_MB"],
        "compacted_files": final["compacted"],
        "maintenance_failures": final["maint_failures"],
        "batch_ingest_s": round(ingest_s, 1),
        "batch_files": batch_files,
        "batch_mb": round(batch_bytes / MB, 1),
        "batch_rows": batch_rows,
        "query_streamed_ms": round(s_med * 1000, 1),
        "query_batch_ms": round(b_med * 1000, 1),
        "query_ratio": round(ratio, 2),
        "query_cold_cli_s": {k: round(v, 2) for k, v in cold.items()},
        "answers_equal": same,
        "load_start": load_start,
        "load_end": load_end,
        "started_at": start.isoformat(),
        "query_day": str(day.date()),
    }
    print_table(
        ["figure", "value", "target"],
        [
            [
                "records sent / acknowledged / in the lake",
                f"{senders.sent:,} / {acked:,} / {lake_rows:,} (+{rejected:,} rejected)",
                "equal",
            ],
            ["achieved rate", f"{figures['achieved_rate']:,} records/s", f"{args.rate:,.0f}"],
            ["delivery failures", failures, "0"],
            [
                "data files min / max / final",
                f"{figures['files_min']} / {figures['files_max']} / {figures['files_final']}",
                "levels off",
            ],
            ["final size, average file", f"{final['MB']} MB, {final['avg_file_MB']} MB", ""],
            ["batch-loaded: files, size", f"{batch_files}, {batch_bytes / MB:.1f} MB", ""],
            [
                "day-range query streamed / batch (median)",
                f"{s_med * 1000:.0f} ms / {b_med * 1000:.0f} ms = {ratio:.2f}x",
                f"<= {TARGET_RATIO}x {verdict(ratio <= TARGET_RATIO)}",
            ],
            ["answers (minutes, count, sum) equal", same, "True"],
            ["machine load (1/5/15 min) start / end", f"{load_start} / {load_end}", ""],
        ],
        title="summary",
    )
    emit_json(figures)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
