"""Server-side latency of the console's Explore API over a large lake, warm.

    python benchmarks/console_bench.py                  # 10M rows over 7 days (builds once: minutes)
    python benchmarks/console_bench.py --rows 1000000   # a smaller lake, cached separately
    python benchmarks/console_bench.py --rebuild        # regenerate and re-ingest the lake

The lake: ``--rows`` generated combined access-log lines spanning ``--days`` days from START, in
logs.access (Iceberg, partitioned by hour), cached under benchmarks/.data/. A ``loglake serve``
subprocess answers the Explore routes over real HTTP (keep-alive connections, as a browser);
each figure is the median and p90 of ``--runs`` timed runs after ``--warmup`` untimed ones:

- first page, one day: the histogram, the first 100 records and the top values of 5 fields of
  the lake's last full day, sent at once as the page does (wall time until all three answered),
  and each of the three alone (target: <= 1 s for the three);
- histogram, 7 days (target <= 1 s);
- next page of records: the 500 records after a cursor somewhere in that day (target <= 200 ms),
  early in the scroll (after 1,000 rows) and deep (the middle of the day);
- the same first page with a filter (``status:404 -method:POST``) and with free text;
- a CSV download of one hour (rows/s of the streamed body).

Prints a table, then one JSON line with every figure. Never asserts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from common import DATA_DIR, emit_json, median, note, percentile, print_table, verdict

START = datetime(2026, 1, 1)
TARGET_FIRST_S = 1.0
TARGET_HISTOGRAM_S = 1.0
TARGET_NEXT_S = 0.2
TOP_FIELDS = "status,method,path,client,ua_browser"


def label(rows: int) -> str:
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if rows >= size and rows % size == 0:
            return f"{rows // size}{unit}"
    return str(rows)


def build_lake(home: Path, rows: int, days: int) -> float:
    """``rows`` generated lines over ``days`` days from START, ingested into a fresh ``home``;
    returns the seconds it took."""
    from loglake.config import load_config
    from loglake.generate import generate_to
    from loglake.ingest import ingest

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    log = home.parent / f"{home.name}.log"
    rate = rows / (days * 86_400)
    note(f"building {home}: {rows:,} lines at {rate:.2f}/s from {START:%Y-%m-%d}")
    started = time.perf_counter()
    try:
        with log.open("wb") as fh:
            generate_to(fh, rows, rate=rate, start=START, seed=11)
        stats = ingest(load_config(home=home, environ={}), [str(log)], format="combined")
        note(f"ingested: {stats}")
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    finally:
        log.unlink(missing_ok=True)
    (home / "built.json").write_text(json.dumps({"rows": rows, "days": days}))
    return time.perf_counter() - started


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    (home / "loglake.toml").write_text('[syslog]\nudp = ""\ntcp = ""\n')
    port = free_port()
    env = {**os.environ, "LOGLAKE_HOME": str(home)}
    env.pop("LOGLAKE_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglake.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "server.log", "ab"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((home / "server.log").read_text()[-3000:])
        try:
            if get(port, "/readyz")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not become ready")


_CONNECTIONS: dict[tuple[int, int], http.client.HTTPConnection] = {}


def get(port: int, path: str, slot: int = 0) -> tuple[int, bytes]:
    """GET ``path`` over a kept-alive connection (one per ``slot``, as a browser has several);
    a connection the server closed while idle is opened again, as a browser does."""
    for attempt in (1, 2):
        conn = _CONNECTIONS.get((port, slot))
        fresh = conn is None
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            _CONNECTIONS[(port, slot)] = conn
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            return reply.status, reply.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            del _CONNECTIONS[(port, slot)]
            if fresh or attempt == 2:
                raise
    raise AssertionError("unreachable")


def api(port: int, path: str, params: dict[str, Any], slot: int = 0) -> Any:
    status, body = get(port, f"{path}?{urllib.parse.urlencode(params)}", slot)
    if status != 200:
        raise SystemExit(f"{path} answered {status}: {body[:500]!r}")
    return json.loads(body)


def measure(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of logs.access (10M)")
    ap.add_argument("--days", type=int, default=7, help="days the rows span (7)")
    ap.add_argument("--workdir", type=Path, default=DATA_DIR, help="where the lake is cached")
    ap.add_argument("--rebuild", action="store_true", help="regenerate and re-ingest the lake")
    ap.add_argument("--build-only", action="store_true", help="build the lake and stop")
    ap.add_argument("--runs", type=int, default=9, help="timed runs per figure")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    args = ap.parse_args()
    home: Path = args.workdir.resolve() / f"console-{label(args.rows)}-{args.days}d"
    built = home / "built.json"
    build_s = None
    if args.rebuild or not built.exists():
        build_s = build_lake(home, args.rows, args.days)
    if args.build_only:
        return
    run(home, args, build_s)


def run(home: Path, args: argparse.Namespace, build_s: float | None) -> None:
    proc, port = start_server(home)
    load_before = os.getloadavg()
    try:
        figures = measure_all(port, args)
    finally:
        proc.terminate()
        proc.wait(60)
    figures["load_avg_before"] = [round(v, 2) for v in load_before]
    figures["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    figures["build_s"] = build_s
    figures["rows"] = args.rows
    figures["days"] = args.days
    figures["cpus"] = os.cpu_count()
    figures["machine"] = f"{platform.machine()} {platform.system()} {platform.release()}"
    report(figures)


def measure_all(port: int, args: argparse.Namespace) -> dict[str, Any]:
    tables = api(port, "/v1/explore/tables", {})
    access = next(t for t in tables["tables"] if t["name"] == "logs.access")
    last = datetime.fromisoformat(access["time_max"])
    day_start = datetime(last.year, last.month, last.day) - timedelta(days=1)  # the last full day
    day = {"table": "logs.access", "from": str(day_start), "to": str(day_start + timedelta(days=1))}
    week = {
        "table": "logs.access",
        "from": str(day_start - timedelta(days=6)),
        "to": day["to"],
    }
    runs, warmup = args.runs, args.warmup
    out: dict[str, Any] = {"day": day["from"][:10], "week_from": week["from"][:10]}

    def first_page(view: dict[str, str]) -> Callable[[], Any]:
        """The three requests of a search, sent at once on three connections, as the page does."""
        pool = ThreadPoolExecutor(3)

        def go() -> Any:
            calls = [
                pool.submit(api, port, "/v1/explore/histogram", view, 0),
                pool.submit(api, port, "/v1/explore/records", {**view, "limit": 100}, 1),
                pool.submit(api, port, "/v1/explore/top", {**view, "fields": TOP_FIELDS}, 2),
            ]
            return [c.result() for c in calls]

        return go

    def one(path: str, view: dict[str, Any]) -> Callable[[], Any]:
        return lambda: api(port, path, view)

    out["day_records"] = first_page(day)()[0]["total"]
    out["week_records"] = api(port, "/v1/explore/histogram", week)["total"]
    after_1000 = api(port, "/v1/explore/records", {**day, "limit": 1000})["next"]
    noon = f"{day['from'][:10]} 12:00:00.000000~0"
    view_404 = {**day, "q": "status:404 -method:POST"}
    view_text = {**day, "q": "firefox"}
    cases: list[tuple[str, Callable[[], Any], float | None]] = [
        ("first page, 1 day (3 requests at once)", first_page(day), TARGET_FIRST_S),
        ("  histogram, 1 day", one("/v1/explore/histogram", day), None),
        ("  first 100 records, 1 day", one("/v1/explore/records", {**day, "limit": 100}), None),
        (
            "  top values of 5 fields, 1 day",
            one("/v1/explore/top", {**day, "fields": TOP_FIELDS}),
            None,
        ),
        ("histogram, 7 days", one("/v1/explore/histogram", week), TARGET_HISTOGRAM_S),
        (
            "next 500 records after 1,000",
            one("/v1/explore/records", {**day, "limit": 500, "cursor": after_1000}),
            TARGET_NEXT_S,
        ),
        (
            "next 500 records from mid-day",
            one("/v1/explore/records", {**day, "limit": 500, "cursor": noon}),
            TARGET_NEXT_S,
        ),
        ("first page, 1 day, status:404 -method:POST", first_page(view_404), TARGET_FIRST_S),
        ("first page, 1 day, free text 'firefox'", first_page(view_text), TARGET_FIRST_S),
        ("first page, 7 days", first_page(week), None),
    ]
    rows = []
    for name, fn, target in cases:
        note(f"timing {name.strip()}")
        times = measure(fn, runs, warmup)
        med, p90 = median(times), percentile(times, 90)
        rows.append(
            (name, med * 1000, p90 * 1000, target, None if target is None else p90 <= target)
        )
    out["cases"] = [
        {"name": n, "median_ms": m, "p90_ms": p, "target_s": t, "ok": ok} for n, m, p, t, ok in rows
    ]
    # a download: one hour of the day, streamed
    hour = {**day, "to": str(day_start + timedelta(hours=1)), "format": "csv"}
    start = time.perf_counter()
    status, body = get(port, f"/v1/explore/download?{urllib.parse.urlencode(hour)}")
    elapsed = time.perf_counter() - start
    lines = body.count(b"\n") - 1
    out["download"] = {"rows": lines, "bytes": len(body), "seconds": elapsed, "status": status}
    return out


def report(figures: dict[str, Any]) -> None:
    print(
        f"\nlogs.access: {figures['rows']:,} rows over {figures['days']} days; "
        f"the day {figures['day']} holds {figures['day_records']:,}, the 7 days from "
        f"{figures['week_from']} {figures['week_records']:,}"
    )
    print_table(
        ["case", "median ms", "p90 ms", "target ms", "p90 verdict"],
        [
            (
                c["name"],
                c["median_ms"],
                c["p90_ms"],
                "-" if c["target_s"] is None else int(c["target_s"] * 1000),
                verdict(c["ok"]),
            )
            for c in figures["cases"]
        ],
        title="Explore API, warm, over HTTP (server-side: one loglake serve, 2 query workers)",
    )
    d = figures["download"]
    rate = d["rows"] / d["seconds"] if d["seconds"] else 0
    print(
        f"\nCSV download of one hour: {d['rows']:,} rows, {d['bytes'] / 1e6:.1f} MB in "
        f"{d['seconds']:.2f} s ({rate:,.0f} rows/s)"
    )
    print(
        f"machine: {figures['cpus']} CPUs, {figures['machine']}; load average before "
        f"{figures['load_avg_before']}, after {figures['load_avg_after']}"
    )
    emit_json(figures)


if __name__ == "__main__":
    main()
