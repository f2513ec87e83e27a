"""The streaming soak: ``loglake serve`` fed a steady rate for a long time, and how the table ages.

    python benchmarks/soak_bench.py                          # 60 min at 10,000 records/s
    python benchmarks/soak_bench.py --minutes 2 --every 20   # smoke test: about 3 minutes

1. Server: ``python -m loglake.cli serve`` in a fresh ``LOGLAKE_HOME`` whose ``loglake.toml``
   declares ``[streams.web]`` with ``format = "combined"`` (default buffering: a commit about every
   second) and turns the syslog listeners off (other runs may hold their ports).
2. Load: 2 client processes POST batches of 500 combined lines (the sample log, every line's
   timestamp rewritten to the UTC second of sending, so the data looks live) to
   ``/v1/streams/web/records`` over keep-alive connections, paced to ``--rate`` records/s in total
   (default 10,000), for ``--minutes`` (default 60). Every acknowledged body is appended to
   ``sent-N.log`` (one file per client) in the work folder, so the same data can be batch-loaded.
3. Samples every ``--every`` s (default 60): counters and gauges of ``GET /metrics``; the Iceberg
   commit latency (``loglake_stream_commit_seconds``, the latest commit's duration, polled every
   second: median and max of the commits seen in the interval); live data files, bytes and rows
   of ``logs.access`` (pyiceberg plan of the current snapshot) and the files on disk under the
   table's ``data/`` folder (files replaced by compaction stay on disk); the metadata folder's
   bytes and files, and the metadata still reachable from the table (metadata JSON, manifest
   lists and manifests of the snapshots kept); acknowledgement latency p50/p99 and the achieved
   rate of the interval; the server's RSS (now and peak) and CPU.
4. End: clients stop; wait until the consumer lag is 0 (one last sample), then SIGTERM the server.
5. Day-range query (minute buckets over the UTC day the run started: count, sum and
   ``approx_quantile`` of bytes) with ``loglake.connect(home).sql(q).fetchall()`` on the streamed
   lake and on a lake batch-loaded from the sent files by ``python -m loglake.cli ingest --format
   combined --no-progress sent-0.log sent-1.log``: one cold run each (first query of a new
   connection), then ``--runs`` warm runs each (default 5), alternated; medians. Row counts of
   both lakes are printed and compared with what the server acknowledged (WARNING when not equal).

Prints a table of the samples, a summary table, then one JSON line. Never asserts.
Targets: the day-range query on the streamed table within 2x of the batch-loaded one; the rate is
held (``--rate`` records/s acknowledged); file count, metadata size and commit latency level off
instead of growing with the run.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from common import (
    DATA_DIR,
    MB,
    MIB,
    LiveStamp,
    batch_templates,
    emit_json,
    fresh_dir,
    median,
    note,
    percentile,
    print_table,
    timed,
    tree_bytes,
    verdict,
)

if TYPE_CHECKING:
    from loglake.query.engine import Connection

BATCH = 500
CLIENTS = 2
STREAM = "web"
TABLE = "logs.access"
TARGET_QUERY_RATIO = 2.0  # streamed-table query time / batch-loaded-table query time
DRAIN_TIMEOUT_S = 600.0
TOML = '[streams.web]\nformat = "combined"\n\n[syslog]\nudp = ""\ntcp = ""\n'
_METRIC = re.compile(r'^(\w+)\{stream="([^"]*)"\} (\S+)$')


# --- load ----------------------------------------------------------------------------------------


def _client(
    port: int, rate: float, seconds: float, sent_path: str, stop: Any, out: Any, index: int
) -> None:
    """POST paced batches until ``seconds`` pass or ``stop`` is set; ``rate`` in records/s.

    Every second puts ``(index, [(wall time, ack seconds, status), ...])`` on ``out``; at the end
    ``(index, totals)``. Only acknowledged bodies are appended to ``sent_path``.
    """
    templates = batch_templates(BATCH)
    clock = LiveStamp()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    chunk: list[tuple[float, float, int]] = []
    accepted = refused = errors = attempts = 0
    start = time.perf_counter()
    last_flush = start
    with open(sent_path, "ab") as sink:
        while not stop.is_set() and (now := time.perf_counter()) - start < seconds:
            due = start + attempts * BATCH / rate
            if due > now:
                time.sleep(due - now)
                continue  # re-check stop and the deadline after sleeping
            body = clock.now().join(templates[attempts % len(templates)])
            attempts += 1
            t0 = time.perf_counter()
            try:
                conn.request(
                    "POST", f"/v1/streams/{STREAM}/records", body, {"Content-Type": "text/plain"}
                )
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                chunk.append((time.time(), time.perf_counter() - t0, 0))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                time.sleep(1)
                continue
            chunk.append((time.time(), time.perf_counter() - t0, resp.status))
            if resp.status == 200:
                sink.write(body)
                accepted += BATCH
            else:
                refused += 1
                time.sleep(float(resp.getheader("Retry-After") or 1))
            if time.perf_counter() - last_flush >= 1.0:
                out.put((index, chunk))
                chunk = []
                last_flush = time.perf_counter()
    conn.close()
    out.put((index, chunk))
    out.put(
        (
            index,
            {
                "accepted": accepted,
                "refused": refused,
                "errors": errors,
                "seconds": time.perf_counter() - start,
            },
        )
    )


# --- server --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, timeout: float = 10) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready")
        try:
            if _get(port, "/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def metrics(port: int) -> dict[str, float]:
    """``{metric name: value}`` of the bench stream from the Prometheus text of ``/metrics``."""
    _status, text = _get(port, "/metrics")
    values: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if m and m.group(2) == STREAM:
            values[m.group(1)] = float(m.group(3))
    return values


@dataclass
class ProcStat:
    """Resident memory now and at its peak (MiB), CPU seconds so far, of one process (``/proc``)."""

    rss_mib: float
    peak_rss_mib: float
    cpu_s: float


def proc_stat(pid: int) -> ProcStat:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ProcStat(float("nan"), float("nan"), float("nan"))
    kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Vm")}
    ticks = os.sysconf("SC_CLK_TCK")
    return ProcStat(
        kb.get("VmRSS", 0) * 1024 / MIB,
        kb.get("VmHWM", 0) * 1024 / MIB,
        (int(fields[11]) + int(fields[12])) / ticks,
    )


# --- the lake ------------------------------------------------------------------------------------


@dataclass
class LakeFigures:
    """The table as pyiceberg sees it (live) and as the file system holds it (on disk)."""

    live_files: int = 0
    live_bytes: int = 0
    live_rows: int = 0
    disk_data_files: int = 0
    disk_data_bytes: int = 0
    metadata_files: int = 0
    metadata_bytes: int = 0
    live_metadata_bytes: int = 0
    snapshots: int = 0
    table_dir: str = ""


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def _folder(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = sum(len(names) for _root, _dirs, names in os.walk(path))
    return files, tree_bytes(path)


class Lake:
    """Reads one home's ``logs.access`` with pyiceberg, while the server may be committing to it."""

    def __init__(self, home: Path):
        from loglake.config import load_config

        self.config = load_config(home=home)
        self._catalog: Any = None

    def figures(self) -> LakeFigures:
        from loglake.lake.catalog import open_catalog
        from loglake.query.plan import build_plan

        if self._catalog is None:
            self._catalog = open_catalog(self.config)
        if not self._catalog.table_exists(TABLE):
            return LakeFigures()
        last: Exception | None = None
        for _attempt in range(3):  # a commit can delete the metadata we were reading: retry
            try:
                table = self._catalog.load_table(TABLE)
                plan = build_plan(TABLE, table, "ts")
                live_meta = {table.metadata_location: 0}
                for snap in table.snapshots():
                    live_meta[snap.manifest_list] = 0
                    for manifest in snap.manifests(table.io):
                        live_meta[manifest.manifest_path] = manifest.manifest_length
                live_meta_bytes = sum(
                    size or _size(_local(path)) for path, size in live_meta.items()
                )
                snapshots = len(table.snapshots())
                break
            except Exception as exc:  # FileNotFoundError or a catalog race: try again
                last = exc
                time.sleep(0.5)
        else:
            note(f"cannot read {TABLE}: {last}")
            return LakeFigures()
        table_dir = _local(table.location())
        disk_files, disk_bytes = _folder(table_dir / "data")
        meta_files, meta_bytes = _folder(table_dir / "metadata")
        return LakeFigures(
            live_files=len(plan.files),
            live_bytes=plan.size,
            live_rows=plan.rows,
            disk_data_files=disk_files,
            disk_data_bytes=disk_bytes,
            metadata_files=meta_files,
            metadata_bytes=meta_bytes,
            live_metadata_bytes=live_meta_bytes,
            snapshots=snapshots,
            table_dir=str(table_dir),
        )

    def cached_plan_files(self) -> int | None:
        """Files in the query plan cache the server keeps (``state/plans``), None when absent."""
        import json

        path = self.config.state_dir / "plans" / f"{TABLE}.json"
        try:
            return len(json.loads(path.read_text())["files"])
        except (OSError, ValueError, KeyError):
            return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Sample:
    minute: float
    accepted: int
    delivered: int
    records_per_s: float
    ack_p50_ms: float
    ack_p99_ms: float
    refused: int
    commits: int
    commit_ms: float  # median of the commits seen in the interval
    commit_max_ms: float
    consumer_lag: int
    max_lag: int
    buffered_mb: float
    compacted_files: int
    server_rss_mib: float
    server_peak_rss_mib: float  # since the server started
    server_cpu_pct: float
    lake: LakeFigures = field(default_factory=LakeFigures)


class Monitor:
    """Collects client acknowledgements and server metrics between samples."""

    def __init__(self, port: int, server: subprocess.Popen[bytes], lake: Lake):
        self.port = port
        self.server = server
        self.lake = lake
        self.start = time.perf_counter()
        self.acks: list[tuple[float, float, int]] = []  # this interval's (wall, s, status)
        self.all_acks: list[float] = []
        self.commit_s: list[float] = []  # this interval's commit durations
        self.all_commit_s: list[float] = []
        self.max_lag = 0
        self.last_commits = 0.0
        self.last: dict[str, float] = {}
        self.totals: dict[int, dict[str, Any]] = {}
        self.samples: list[Sample] = []
        self._cpu = (time.perf_counter(), proc_stat(server.pid).cpu_s)

    def drain(self, q: Any, until: float) -> None:
        """Take client messages until ``until`` (perf_counter), polling /metrics once a second."""
        next_poll = time.perf_counter()
        while (now := time.perf_counter()) < until:
            if now >= next_poll:
                self.poll()
                next_poll = now + 1.0
            try:
                index, payload = q.get(timeout=max(0.01, min(until, next_poll) - now))
            except queue.Empty:
                continue
            if isinstance(payload, dict):
                self.totals[index] = payload
            else:
                self.acks.extend(payload)
                self.all_acks.extend(s for _w, s, status in payload if status == 200)

    def poll(self) -> None:
        try:
            m = metrics(self.port)
        except OSError:
            return
        commits = m.get("loglake_stream_commits_total", 0.0)
        if commits > self.last_commits and "loglake_stream_commit_seconds" in m:
            self.commit_s.append(m["loglake_stream_commit_seconds"])
            self.all_commit_s.append(m["loglake_stream_commit_seconds"])
        self.last_commits = commits
        self.max_lag = max(self.max_lag, int(m.get("loglake_stream_consumer_lag_records", 0)))
        self.last = m

    def sample(self, after_drain: bool = False) -> Sample:
        """Figures of the interval since the last sample (its rate is NaN ``after_drain``)."""
        self.poll()
        m = self.last
        ok = [s for _w, s, status in self.acks if status == 200]
        span = [w for w, _s, _st in self.acks]
        interval = max(span) - min(span) if len(span) > 1 and not after_drain else float("nan")
        now, stat = time.perf_counter(), proc_stat(self.server.pid)
        cpu_pct = 100 * (stat.cpu_s - self._cpu[1]) / max(1e-9, now - self._cpu[0])
        self._cpu = (now, stat.cpu_s)
        s = Sample(
            minute=(now - self.start) / 60,
            accepted=int(m.get("loglake_stream_records_accepted_total", 0)),
            delivered=int(m.get("loglake_stream_records_delivered_total", 0)),
            records_per_s=len(ok) * BATCH / interval if interval > 0 else float("nan"),
            ack_p50_ms=percentile(ok, 50) * 1000,
            ack_p99_ms=percentile(ok, 99) * 1000,
            refused=sum(1 for _w, _s, status in self.acks if status != 200),
            commits=int(m.get("loglake_stream_commits_total", 0)),
            commit_ms=median(self.commit_s) * 1000,
            commit_max_ms=max(self.commit_s, default=float("nan")) * 1000,
            consumer_lag=int(m.get("loglake_stream_consumer_lag_records", 0)),
            max_lag=self.max_lag,
            buffered_mb=m.get("loglake_stream_buffered_bytes", 0.0) / MB,
            compacted_files=int(m.get("loglake_stream_compacted_files_total", 0)),
            server_rss_mib=stat.rss_mib,
            server_peak_rss_mib=stat.peak_rss_mib,
            server_cpu_pct=cpu_pct,
            lake=self.lake.figures(),
        )
        self.acks, self.commit_s, self.max_lag = [], [], 0
        self.samples.append(s)
        note(
            f"{s.minute:5.1f} min: delivered {s.delivered:,}, {s.records_per_s:,.0f} records/s, "
            f"{s.lake.live_files} files, metadata {s.lake.metadata_bytes / MB:.1f} MB, "
            f"commit {s.commit_ms:.0f} ms, lag {s.consumer_lag:,}"
        )
        return s


def wait_drained(monitor: Monitor, q: Any) -> float:
    """Seconds until the consumer lag is 0 (NaN when it never was within DRAIN_TIMEOUT_S)."""
    start = time.perf_counter()
    while time.perf_counter() - start < DRAIN_TIMEOUT_S:
        monitor.drain(q, time.perf_counter() + 1.0)
        m = monitor.last
        if m and m.get("loglake_stream_consumer_lag_records", 1) == 0:
            return time.perf_counter() - start
        if monitor.server.poll() is not None:
            break
    return float("nan")


# --- the day-range query -------------------------------------------------------------------------


def day_query(day: datetime) -> str:
    # The lake stores UTC times without a zone (docs/decisions/0005), so UTC TIMESTAMP literals.
    lo, hi = day.strftime("%Y-%m-%d"), (day + timedelta(days=1)).strftime("%Y-%m-%d")
    return (
        "SELECT date_trunc('minute', ts) AS m, count(*), sum(bytes), approx_quantile(bytes, 0.95) "
        f"FROM {TABLE} WHERE ts >= TIMESTAMP '{lo} 00:00:00' AND ts < TIMESTAMP '{hi} 00:00:00' "
        "GROUP BY 1 ORDER BY 1"
    )


def _fetch(con: Connection, sql: str) -> list[tuple[Any, ...]]:
    return con.sql(sql).fetchall()


def time_queries(homes: dict[str, Path], sql: str, runs: int) -> dict[str, dict[str, Any]]:
    """One cold run per home (first query of a new connection), then ``runs`` alternated warm runs."""
    import loglake

    cons = {name: loglake.connect(str(home)) for name, home in homes.items()}
    out: dict[str, dict[str, Any]] = {}
    for name, con in cons.items():
        cold, rows = timed(partial(_fetch, con, sql))
        count = con.sql(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
        out[name] = {"cold_ms": cold * 1000, "warm": [], "result": rows, "table_rows": count}
    names = list(cons)
    for i in range(runs):
        for name in names if i % 2 == 0 else names[::-1]:
            elapsed, _ = timed(partial(_fetch, cons[name], sql))
            out[name]["warm"].append(elapsed)
    for figures in out.values():
        figures["warm_ms"] = median(figures.pop("warm")) * 1000
        figures["query_rows"] = sum(r[1] for r in figures["result"])
    return out


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="streaming time (default 60)")
    parser.add_argument("--rate", type=float, default=10_000.0, help="records/s, all clients")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--runs", type=int, default=5, help="warm query runs per lake")
    parser.add_argument("--workdir", type=Path, default=DATA_DIR, help="parent of the work folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (lakes, logs)")
    args = parser.parse_args()

    work = fresh_dir(args.workdir, "soak-")
    home, batch_home = work / "streamed", work / "batch"
    home.mkdir()
    batch_home.mkdir()
    (home / "loglake.toml").write_text(TOML)
    sent = [work / f"sent-{i}.log" for i in range(CLIENTS)]
    port = _free_port()
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    server_log = (work / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "loglake.cli", "serve", "--port", str(port)],
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    seconds = args.minutes * 60
    try:
        wait_ready(port, server)
        run_start = datetime.now(UTC)
        day = run_start.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        note(f"work folder {work}; server on port {port}")
        note("metrics of the stream: " + ", ".join(sorted(metrics(port))))
        note(f"streaming {args.rate:,.0f} records/s for {args.minutes:g} min, {CLIENTS} clients")
        monitor = Monitor(port, server, Lake(home))
        ctx = mp.get_context("spawn")  # no inherited pyiceberg/DuckDB state in the clients
        q: Any = ctx.Queue()
        stop = ctx.Event()
        clients = [
            ctx.Process(
                target=_client,
                args=(port, args.rate / CLIENTS, seconds, str(sent[i]), stop, q, i),
                daemon=True,  # ended with this script if it fails
            )
            for i in range(CLIENTS)
        ]
        for p in clients:
            p.start()
        next_sample = monitor.start + args.every
        while time.perf_counter() - monitor.start < seconds:
            monitor.drain(q, min(next_sample, monitor.start + seconds))
            if server.poll() is not None:
                note(f"WARNING: the server exited with {server.returncode} during the run")
                break
            if time.perf_counter() >= next_sample:
                monitor.sample()
                next_sample += args.every
        stop.set()
        deadline = time.perf_counter() + 120
        while len(monitor.totals) < CLIENTS and time.perf_counter() < deadline:
            monitor.drain(q, time.perf_counter() + 1.0)
        for p in clients:
            p.join(30)
        note("clients stopped; waiting for the consumer lag to reach 0")
        drain_s = wait_drained(monitor, q)
        final = monitor.sample(after_drain=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            note("WARNING: the server did not stop within 120 s of SIGTERM; killing it")
            server.kill()
            server.wait()
        server_log.close()
    server_exit = server.returncode
    plan_cache_files = monitor.lake.cached_plan_files()
    log_text = (work / "server.log").read_text(errors="replace")
    tracebacks = log_text.count("Traceback")
    if tracebacks:
        note(f"WARNING: {tracebacks} traceback(s) in the server's output ({work / 'server.log'})")

    accepted = sum(t["accepted"] for t in monitor.totals.values())
    client_seconds = max((t["seconds"] for t in monitor.totals.values()), default=float("nan"))
    refused = sum(t["refused"] for t in monitor.totals.values())
    errors = sum(t["errors"] for t in monitor.totals.values())

    note(
        f"batch-loading {sum(_size(p) for p in sent) / MB:,.0f} MB of sent lines into {batch_home}"
    )
    ingest_cmd = [sys.executable, "-m", "loglake.cli", "ingest", "--format", "combined"]
    ingest_cmd += ["--no-progress", *map(str, sent)]
    ingest_s, ingest = timed(
        lambda: subprocess.run(
            ingest_cmd, env={**os.environ, "LOGLAKE_HOME": str(batch_home)}, capture_output=True
        )
    )
    if ingest.returncode != 0:
        note(f"WARNING: batch ingest exited {ingest.returncode}: {ingest.stderr.decode()[-2000:]}")
    batch_lake = Lake(batch_home).figures()

    sql = day_query(day)
    note(f"day-range query: {sql}")
    q_figures = time_queries({"streamed": home, "batch": batch_home}, sql, args.runs)
    streamed_q, batch_q = q_figures["streamed"], q_figures["batch"]
    ratio = streamed_q["warm_ms"] / batch_q["warm_ms"]
    same_result = [r[:3] for r in streamed_q.pop("result")] == [
        r[:3] for r in batch_q.pop("result")
    ]
    counts = {
        "acknowledged": accepted,
        "streamed table": streamed_q["table_rows"],
        "batch table": batch_q["table_rows"],
        "streamed query": streamed_q["query_rows"],
        "batch query": batch_q["query_rows"],
    }
    if len(set(counts.values())) != 1:
        note("WARNING: row counts differ: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if not same_result:
        note("WARNING: the minute buckets (count, sum of bytes) differ between the two lakes")
    if plan_cache_files is not None and plan_cache_files != final.lake.live_files:
        note(
            f"WARNING: the server's plan cache lists {plan_cache_files} files, "
            f"the table {final.lake.live_files}"
        )

    samples = monitor.samples
    print_table(
        [
            "min",
            "delivered",
            "rec/s",
            "ack p99 ms",
            "commit ms",
            "max ms",
            "lag",
            "files",
            "data MB",
            "disk files",
            "meta MB",
            "meta files",
            "RSS MiB",
            "peak MiB",
            "CPU %",
        ],
        [
            [
                round(s.minute, 1),
                s.delivered,
                s.records_per_s,
                s.ack_p99_ms,
                s.commit_ms,
                s.commit_max_ms,
                s.consumer_lag,
                s.lake.live_files,
                s.lake.live_bytes / MB,
                s.lake.disk_data_files,
                s.lake.metadata_bytes / MB,
                s.lake.metadata_files,
                s.server_rss_mib,
                s.server_peak_rss_mib,
                s.server_cpu_pct,
            ]
            for s in samples
        ],
        title="Samples (commit ms: median of the interval's commits; lag: at the sample; files: in "
        "the table; disk files: under data/; meta: the metadata/ folder; last row: after the drain)",
    )
    during = samples[:-1] or samples  # the last sample is the one after the drain
    first_commit = next((s.commit_ms for s in during if s.commit_ms == s.commit_ms), float("nan"))
    rate_ok = accepted / client_seconds >= 0.98 * args.rate if client_seconds > 0 else None
    print_table(
        ["figure", "value", "target"],
        [
            [
                "records acknowledged (rate)",
                f"{accepted:,} in {client_seconds:,.0f} s ({accepted / client_seconds:,.0f}/s)",
                f"{args.rate:,.0f}/s (>= 98%): {verdict(rate_ok)}",
            ],
            ["503 answers / client errors", f"{refused} / {errors}", "0 / 0"],
            [
                "ack latency p50 / p99 ms (whole run)",
                f"{percentile(monitor.all_acks, 50) * 1000:.1f} / "
                f"{percentile(monitor.all_acks, 99) * 1000:.1f}",
                "",
            ],
            [
                "commit latency p50 / p99 / max ms",
                f"{percentile(monitor.all_commit_s, 50) * 1000:.0f} / "
                f"{percentile(monitor.all_commit_s, 99) * 1000:.0f} / "
                f"{max(monitor.all_commit_s, default=float('nan')) * 1000:.0f}",
                "",
            ],
            [
                "commit latency, first / last interval ms",
                f"{first_commit:.0f} / {during[-1].commit_ms:.0f}",
                "flat",
            ],
            [
                "commits / files compacted away",
                f"{final.commits:,} / {final.compacted_files:,}",
                "",
            ],
            [
                "data files: table / on disk",
                f"{final.lake.live_files:,} / {final.lake.disk_data_files:,}",
                "levels off",
            ],
            [
                "data MB: table / on disk",
                f"{final.lake.live_bytes / MB:,.1f} / {final.lake.disk_data_bytes / MB:,.1f}",
                "",
            ],
            [
                "metadata MB: folder / reachable",
                f"{final.lake.metadata_bytes / MB:,.2f} / {final.lake.live_metadata_bytes / MB:,.2f}",
                "levels off",
            ],
            [
                "metadata files / snapshots kept",
                f"{final.lake.metadata_files:,} / {final.lake.snapshots:,}",
                "",
            ],
            [
                "max consumer lag / drain s",
                f"{max((s.max_lag for s in samples), default=0):,} / {drain_s:.1f}",
                "",
            ],
            [
                "server RSS first / last / peak MiB",
                f"{samples[0].server_rss_mib:,.0f} / {final.server_rss_mib:,.0f} / "
                f"{final.server_peak_rss_mib:,.0f}",
                "flat",
            ],
            [
                "server exit code / tracebacks",
                f"{server_exit} / {tracebacks}",
                "-15 (uvicorn re-raises SIGTERM after a graceful stop) / 0",
            ],
            [
                "batch ingest of the sent lines",
                f"{ingest_s:.1f} s, {batch_lake.live_files} files",
                "",
            ],
            [
                "day query, streamed: cold / warm ms",
                f"{streamed_q['cold_ms']:.0f} / {streamed_q['warm_ms']:.0f}",
                "",
            ],
            [
                "day query, batch: cold / warm ms",
                f"{batch_q['cold_ms']:.0f} / {batch_q['warm_ms']:.0f}",
                "",
            ],
            [
                "day query streamed / batch (warm)",
                f"{ratio:.2f}x",
                f"<= {TARGET_QUERY_RATIO:g}x: {verdict(ratio <= TARGET_QUERY_RATIO)}",
            ],
            [
                "rows: acknowledged / streamed / batch",
                f"{accepted:,} / {streamed_q['table_rows']:,} / {batch_q['table_rows']:,}",
                "equal",
            ],
            ["minute buckets equal (count, bytes)", str(same_result), "True"],
        ],
        title="Summary",
    )
    if args.keep:
        note(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    emit_json(
        {
            "bench": "soak",
            "minutes": args.minutes,
            "rate": args.rate,
            "every": args.every,
            "clients": CLIENTS,
            "accepted": accepted,
            "client_seconds": client_seconds,
            "refused_503": refused,
            "client_errors": errors,
            "ack_p50_ms": percentile(monitor.all_acks, 50) * 1000,
            "ack_p99_ms": percentile(monitor.all_acks, 99) * 1000,
            "commit_p50_ms": percentile(monitor.all_commit_s, 50) * 1000,
            "commit_p99_ms": percentile(monitor.all_commit_s, 99) * 1000,
            "drain_s": drain_s,
            "server_exit": server_exit,
            "server_tracebacks": tracebacks,
            "plan_cache_files": plan_cache_files,
            "samples": [asdict(s) for s in samples],
            "batch_ingest_s": ingest_s,
            "batch_lake": asdict(batch_lake),
            "query": sql,
            "streamed_query": streamed_q,
            "batch_query": batch_q,
            "query_ratio": ratio,
            "same_minute_buckets": same_result,
            "row_counts": counts,
        }
    )


if __name__ == "__main__":
    main()
