"""Reading a lake whose warehouse is on S3: loglake's route (a pyarrow dataset over S3FileSystem,
registered in DuckDB) against the same lake on local disk and against DuckDB 1.5.5 with its httpfs
extension reading the same Parquet objects. The figures behind docs/decisions/0015.

    python benchmarks/s3_read_bench.py                         # 1M rows: a few minutes
    python benchmarks/s3_read_bench.py --rows 10000000         # 10M rows (ingest alone: minutes)
    python benchmarks/s3_read_bench.py --rows 200000 --runs 3  # smoke test

The S3 store is a moto server (``python -m moto.server``) on 127.0.0.1, started and stopped by
the script; its objects live in its memory, so every run ingests again. DuckDB 1.5.5 and
``duckdb-extension-httpfs`` (the extension's signed binary packaged as a wheel; it pins
duckdb==1.5.5, so it cannot load into loglake's DuckDB) are installed in a side virtualenv
(``--httpfs-venv``, created with ``python -m venv`` and pip when missing) and timed in a
subprocess of that interpreter. Prints a table, then one JSON line with every figure. Never
asserts.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import loglake
from common import (
    DATA_DIR,
    MB,
    SAMPLE_LOG,
    emit_json,
    env_with,
    fresh_dir,
    loglake_cmd,
    median,
    note,
    print_table,
    timed,
)
from loglake.config import load_config
from loglake.lake.catalog import load_table, open_catalog

BUCKET = "loglake-bench"
KEY = "testing"
REGION = "us-east-1"
SHIFT_DAYS = 4  # the sample spans 17-20 May 2015 (84 hours); each group of copies moves 4 days on
HTTPFS_VERSION = "1.5.5"
# Environment that could send the AWS SDK elsewhere or add a token the test keys do not go with.
FOREIGN_AWS_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION")
_STAMP = re.compile(r"\[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}) \+0000\]")
_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) /([^ ?]*)')


# --- the S3 server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextmanager
def moto_server(log_path: Path) -> Iterator[str]:
    """``python -m moto.server`` on 127.0.0.1 and a free port, output to ``log_path`` (one line
    per request, which is how requests are counted); yields the endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env_with(PYTHONUNBUFFERED="1"),  # request lines reach the log as they happen
        )
    try:
        deadline = time.monotonic() + 30
        while not answers(f"{url}/moto-api/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moto server did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_bucket(endpoint: str, name: str) -> None:
    """PUT /bucket: moto accepts the unsigned request (its default lets requests without auth)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(f"{endpoint}/{name}", method="PUT"), timeout=10):
        pass


class RequestLog:
    """Counts the GET/HEAD requests the moto server logged since the last ``take()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    def take(self) -> dict[str, int]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
            self.offset = f.tell()
        counts = {"GET": 0, "HEAD": 0}
        for m in _REQUEST.finditer(text):
            if m[1] in counts:
                counts[m[1]] += 1
        return counts


# --- the data ------------------------------------------------------------------------------------


def build_input(path: Path, rows: int, groups: int) -> None:
    """The sample log as ``rows`` lines, time-ordered: ``groups`` copies of its 84 hours, each
    moved ``SHIFT_DAYS`` days after the previous one, every sample line repeated with its
    timestamp moved 0, 1, 2... seconds on (so a partition's file is one slice of the input)."""
    sample = SAMPLE_LOG.read_text().splitlines()
    pieces = []
    for line in sample:
        m = _STAMP.search(line)
        assert m, line
        when = datetime.strptime(m[1], "%d/%b/%Y:%H:%M:%S").replace(tzinfo=UTC)
        pieces.append((line[: m.start()], int(when.timestamp()), line[m.end() :] + "\n"))
    per_group = [rows // groups + (1 if g < rows % groups else 0) for g in range(groups)]
    stamps: dict[int, str] = {}

    def stamp(epoch: int) -> str:
        s = stamps.get(epoch)
        if s is None:
            s = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(epoch))
            stamps[epoch] = s
        return s

    with open(path, "w") as out:
        for g, want in enumerate(per_group):
            shift = g * SHIFT_DAYS * 86_400
            base, extra = divmod(want, len(pieces))
            chunk: list[str] = []
            for i, (head, epoch, tail) in enumerate(pieces):
                for j in range(base + (1 if i < extra else 0)):
                    chunk.append(head + stamp(epoch + shift + j) + tail)
                if len(chunk) >= 100_000:
                    out.write("".join(chunk))
                    chunk.clear()
            out.write("".join(chunk))
            stamps.clear()


def write_config(home: Path, endpoint: str | None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    if endpoint is None:
        return
    (home / "loglake.toml").write_text(
        f'[catalog]\nwarehouse = "s3://{BUCKET}/lake"\n\n'
        f'[s3]\nendpoint_url = "{endpoint}"\nregion = "{REGION}"\n'
        f'access_key_id = "{KEY}"\nsecret_access_key = "{KEY}"\n'
    )


def ingest(home: Path, log: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [*loglake_cmd(), "ingest", "--format", "combined", "--no-progress", str(log)]
    wall, proc = timed(
        lambda: subprocess.run(
            cmd, env={**env, "LOGLAKE_HOME": str(home)}, capture_output=True, text=True
        )
    )
    if proc.returncode != 0:
        raise SystemExit(f"ingest into {home} failed:\n{proc.stderr[-3000:]}")
    note(f"  {home.name}: {proc.stdout.strip()} ({wall:.1f} s)")
    return {"wall_s": wall, "output": proc.stdout.strip()}


# --- the queries ---------------------------------------------------------------------------------


def queries(day: date, hour: int) -> dict[str, tuple[str, str, str]]:
    """name -> (SQL over ``logs.access``, first and last+1 instant of its time range)."""
    h0 = f"{day} {hour:02}:00:00"
    h1 = str(datetime.fromisoformat(h0) + timedelta(hours=1))
    d0, d1 = f"{day} 00:00:00", f"{day + timedelta(days=1)} 00:00:00"

    def where(a: str, b: str) -> str:
        return f"WHERE ts >= TIMESTAMP '{a}' AND ts < TIMESTAMP '{b}'"

    return {
        "Q1 count+sum, 1 hour": (
            f"SELECT count(*) AS n, sum(bytes) AS b FROM logs.access {where(h0, h1)}",
            h0,
            h1,
        ),
        "Q2 count+sum, 1 day": (
            f"SELECT count(*) AS n, sum(bytes) AS b FROM logs.access {where(d0, d1)}",
            d0,
            d1,
        ),
        "Q3 top paths, 1 day": (
            f"SELECT path, count(*) AS n, sum(bytes) AS b FROM logs.access {where(d0, d1)} "
            "GROUP BY path ORDER BY n DESC, path LIMIT 10",
            d0,
            d1,
        ),
    }


def pruned_files(home: Path, start: str, end: str) -> list[str]:
    """The data files pyiceberg's scan plans for ``start <= ts < end`` (partition and column
    statistics pruning), as URIs."""
    config = load_config(home=home)
    table = load_table(open_catalog(config), "logs.access")
    row_filter = f"ts >= '{start.replace(' ', 'T')}' AND ts < '{end.replace(' ', 'T')}'"
    return sorted(task.file.file_path for task in table.scan(row_filter=row_filter).plan_files())


def table_files(home: Path) -> tuple[int, int, int]:
    """(files, bytes, rows) of the table's current snapshot."""
    config = load_config(home=home)
    files = load_table(open_catalog(config), "logs.access").inspect.files()
    return (
        files.num_rows,
        sum(files["file_size_in_bytes"].to_pylist()),
        sum(files["record_count"].to_pylist()),
    )


# --- DuckDB 1.5.5 + httpfs, in a side virtualenv ------------------------------------------------

HTTPFS_CHILD = r"""
import json, sys, time
import duckdb
spec = json.loads(sys.stdin.readline())
con = duckdb.connect()
con.execute(f"LOAD '{spec['extension']}'")
con.execute("SET TimeZone = 'UTC'")
host = spec["endpoint"].split("://", 1)[1]
for stmt, value in [("s3_endpoint", host), ("s3_url_style", "path"), ("s3_use_ssl", False),
                    ("s3_region", spec["region"]), ("s3_access_key_id", spec["key"]),
                    ("s3_secret_access_key", spec["key"])]:
    con.execute(f"SET {stmt} = ?", [value])
if not spec["file_cache"]:
    con.execute("SET enable_external_file_cache = false")
    con.execute("SET parquet_metadata_cache = false")
out = {}
for name, q in spec["queries"].items():
    files = ", ".join("'" + f.replace("'", "''") + "'" for f in q["files"])
    sql = q["sql"].replace("logs.access", f"read_parquet([{files}])")
    times = []
    for i in range(spec["runs"] + 1):
        # The parent counts the server's requests up to here, then lets the run start.
        print(json.dumps({"mark": name, "run": i}), flush=True)
        sys.stdin.readline()
        t = time.perf_counter()
        rows = con.sql(sql).fetchall()
        times.append(time.perf_counter() - t)
    out[name] = {"first_s": times[0], "runs_s": times[1:], "rows": [list(r) for r in rows]}
print(json.dumps({"result": out, "version": duckdb.__version__}), flush=True)
"""


def httpfs_python(venv: Path) -> tuple[Path, Path]:
    """The side venv's interpreter and the httpfs extension file in it (created when missing)."""
    python = venv / "bin" / "python"
    if not python.exists():
        note(f"creating {venv} with duckdb=={HTTPFS_VERSION} and its httpfs extension")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    find = (
        "import duckdb_extension_httpfs, pathlib; "
        "print(next(pathlib.Path(duckdb_extension_httpfs.__file__).parent.rglob('*.duckdb_extension')))"
    )
    probe = subprocess.run([python, "-c", find], capture_output=True, text=True)
    if probe.returncode != 0:
        subprocess.run(
            [python, "-m", "pip", "install", "-q", f"duckdb=={HTTPFS_VERSION}",
             f"duckdb-extension-httpfs=={HTTPFS_VERSION}"],
            check=True,
        )  # fmt: skip
        probe = subprocess.run([python, "-c", find], capture_output=True, text=True, check=True)
    return python, Path(probe.stdout.strip())


def run_httpfs(
    python: Path, spec: dict[str, Any], requests: RequestLog
) -> tuple[dict[str, Any], dict[str, list[dict[str, int]]]]:
    """Time the queries in one DuckDB 1.5.5 process; requests per query run from the moto log."""
    proc = subprocess.Popen(
        [python, "-c", HTTPFS_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec) + "\n")
    proc.stdin.flush()
    counted: dict[str, list[dict[str, int]]] = {}
    current: str | None = None
    result: dict[str, Any] = {}
    for line in proc.stdout:
        msg = json.loads(line)
        if current is not None:
            counted.setdefault(current, []).append(requests.take())
        if "mark" in msg:
            current = msg["mark"]
            requests.take()
            proc.stdin.write("go\n")
            proc.stdin.flush()
        else:
            result = msg
            current = None
    proc.stdin.close()
    if proc.wait() != 0 or not result:
        raise SystemExit("the DuckDB 1.5.5 + httpfs process failed (see its messages above)")
    return result, counted


def clean_env() -> dict[str, str]:
    env = env_with(AWS_EC2_METADATA_DISABLED="true")
    for name in FOREIGN_AWS_VARS:
        env.pop(name, None)
    return env


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of logs.access (1M)")
    ap.add_argument("--groups", type=int, default=8, help="4-day copies of the sample's time span")
    ap.add_argument("--runs", type=int, default=7, help="timed warm runs per route and query")
    ap.add_argument("--workdir", type=Path, default=DATA_DIR, help="where the homes are made")
    ap.add_argument("--httpfs-venv", type=Path, default=Path("/tmp/loglake-duckdb155-venv"))
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    python155, extension = httpfs_python(args.httpfs_venv)
    work = fresh_dir(args.workdir.resolve(), "s3read-")
    figures: dict[str, Any] = {"bench": "s3_read", "rows": args.rows, "groups": args.groups}
    log = work / "access.log"
    wall, _ = timed(lambda: build_input(log, args.rows, args.groups))
    note(f"input: {args.rows:,} lines, {log.stat().st_size / MB:,.0f} MB in {wall:.1f} s")
    figures["input_mb"] = log.stat().st_size / MB
    env = clean_env()
    try:
        with moto_server(work / "moto.log") as endpoint:
            create_bucket(endpoint, BUCKET)
            remote, local = work / "s3-home", work / "local-home"
            write_config(remote, endpoint)
            write_config(local, None)
            note("ingesting into the S3 and the local lake")
            figures["ingest"] = {
                "s3": ingest(remote, log, env),
                "local": ingest(local, log, env),
            }
            log.unlink()  # the lakes hold it now
            files, size, rows = table_files(remote)
            figures.update(files=files, parquet_bytes=size, table_rows=rows)
            bench(figures, args, remote, local, endpoint, python155, extension, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    emit_json(figures)


def bench(
    figures: dict[str, Any],
    args: argparse.Namespace,
    remote: Path,
    local: Path,
    endpoint: str,
    python155: Path,
    extension: Path,
    work: Path,
) -> None:
    day = date(2015, 5, 18) + timedelta(days=SHIFT_DAYS * (args.groups // 2))
    qs = queries(day, 12)
    requests = RequestLog(work / "moto.log")
    routes: dict[str, dict[str, Any]] = {}

    # (a) loglake over S3 and (b) loglake over the local lake: one warm connection each.
    for route, home in (("loglake S3", remote), ("loglake local", local)):
        routes[route] = {}
        with loglake.connect(str(home)) as con:
            for name, (sql, _a, _b) in qs.items():
                requests.take()
                run = partial(fetch_all, con, sql)
                first, result = timed(run)
                one_run = requests.take()
                runs = [timed(run)[0] for _ in range(args.runs)]
                routes[route][name] = {
                    "first_s": first,
                    "runs_s": runs,
                    "rows": [list(r) for r in result],
                    "requests_first_run": one_run,
                    "requests_per_run": _per_run(requests.take(), args.runs),
                }
                note(f"  {route} {name}: median {median(runs) * 1e3:.0f} ms")

    # (c) DuckDB 1.5.5 + httpfs over the files pyiceberg plans for the same range.
    planned = {name: pruned_files(remote, a, b) for name, (_sql, a, b) in qs.items()}
    figures["files_read"] = {name: len(f) for name, f in planned.items()}
    for cache in (True, False):
        route = "httpfs S3" + ("" if cache else " no cache")
        spec = {
            "extension": str(extension),
            "endpoint": endpoint,
            "region": REGION,
            "key": KEY,
            "file_cache": cache,
            "runs": args.runs,
            "queries": {n: {"sql": s, "files": planned[n]} for n, (s, _a, _b) in qs.items()},
        }
        result, counted = run_httpfs(python155, spec, requests)
        figures["duckdb_httpfs_version"] = result["version"]
        routes[route] = {}
        for name, r in result["result"].items():
            reqs = counted.get(name, [])
            later = reqs[1:] or [{"GET": 0, "HEAD": 0}]
            r["requests_first_run"] = reqs[0] if reqs else {}
            r["requests_per_run"] = {
                k: sum(x[k] for x in later) / len(later) for k in ("GET", "HEAD")
            }
            routes[route][name] = r
            note(f"  {route} {name}: median {median(r['runs_s']) * 1e3:.0f} ms")
    figures["routes"] = routes
    report(figures, routes, qs, day, args.runs)


def fetch_all(con: Any, sql: str) -> list[tuple[Any, ...]]:
    return list(con.sql(sql).fetchall())


def _per_run(counts: dict[str, int], runs: int) -> dict[str, float]:
    return {k: v / max(runs, 1) for k, v in counts.items()}


def report(
    figures: dict[str, Any],
    routes: dict[str, dict[str, Any]],
    qs: dict[str, tuple[str, str, str]],
    day: date,
    runs: int,
) -> None:
    print(
        f"\nlogs.access: {figures['table_rows']:,} rows in {figures['files']:,} Parquet files, "
        f"{figures['parquet_bytes'] / MB:,.1f} MB; day {day}, hour 12:00 UTC. Ingest: S3 "
        f"{figures['ingest']['s3']['wall_s']:.1f} s, local {figures['ingest']['local']['wall_s']:.1f} s"
    )
    base = "loglake local"
    rows: list[list[Any]] = []
    for name in qs:
        want = routes[base][name]["rows"]
        s3_ms = median(routes["loglake S3"][name]["runs_s"]) * 1e3
        for route, by_query in routes.items():
            r = by_query[name]
            ms = median(r["runs_s"]) * 1e3
            reqs = r["requests_per_run"]
            rows.append(
                [name, route, figures["files_read"][name], r["first_s"] * 1e3,
                 min(r["runs_s"]) * 1e3, ms, ms / (median(routes[base][name]["runs_s"]) * 1e3),
                 ms / s3_ms, f"{reqs.get('GET', 0):.0f}/{reqs.get('HEAD', 0):.0f}",
                 "same" if _same(r["rows"], want) else "MISMATCH"]
            )  # fmt: skip
    print_table(
        ["query", "route", "files", "first ms", "min ms", "median ms", "/ local", "/ loglake S3",
         "GET/HEAD per run", "answer"],
        rows,
        title=f"Warm connection: first run, then {runs} runs (min, median)",
    )  # fmt: skip


def _same(a: list[list[Any]], b: list[list[Any]]) -> bool:
    def norm(rows: list[list[Any]]) -> list[list[Any]]:
        return [[float(v) if isinstance(v, int | float) else v for v in r] for r in rows]

    return norm(a) == norm(b)


if __name__ == "__main__":
    main()
