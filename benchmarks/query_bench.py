"""Warm query latency of ``loglake.connect(home).sql()`` vs plain DuckDB over the same Parquet
files, and the cold start of the ``loglake query`` CLI.

    python benchmarks/query_bench.py                   # 10M rows (builds the lake once: minutes)
    python benchmarks/query_bench.py --rows 1000000    # smaller lake, cached separately
    python benchmarks/query_bench.py --rebuild         # regenerate and re-ingest the lake

Prints a table, then one JSON line with every figure. Never asserts.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

import loglake
from common import (
    DATA_DIR,
    MB,
    emit_json,
    env_with,
    loglake_cmd,
    median,
    note,
    percentile,
    print_table,
    require_time,
    run_measured,
    timed,
    verdict,
)
from loglake.config import load_config
from loglake.query.plan import TablePlan, current_locations, get_plan

TARGET_RATIO = 1.5  # loglake median / DuckDB median
TARGET_CLI_S = 1.0
START = "2026-01-01T00:00:00Z"
DAY = date(2026, 1, 1)
SPAN_S = 86_200  # the generated lines span a little under one day


def label(rows: int) -> str:
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if rows >= size and rows % size == 0:
            return f"{rows // size}{unit}"
    return str(rows)


def access_plan(home: Path) -> TablePlan | None:
    config = load_config(home=home)
    locations = current_locations(config) or {}
    if "logs.access" not in locations:
        return None
    return get_plan(config, "logs.access", locations["logs.access"])


def build_lake(home: Path, rows: int) -> dict[str, Any]:
    """``loglake generate --rate rows/86200 --start START | loglake ingest -`` into a fresh home."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    rate = rows / SPAN_S
    note(f"building {home}: {rows:,} generated lines at {rate:.3f}/s from {START}")
    gen_cmd = [*loglake_cmd(), "generate", "--lines", str(rows), "--rate", f"{rate:.3f}"]
    gen_cmd += ["--start", START]
    ingest_cmd = [*loglake_cmd(), "ingest", "--format", "combined", "--no-progress", "-"]
    start = time.perf_counter()
    gen = subprocess.Popen(gen_cmd, stdout=subprocess.PIPE)
    assert gen.stdout is not None
    env = env_with(LOGLAKE_HOME=str(home))
    ingest = subprocess.run(ingest_cmd, stdin=gen.stdout, env=env, capture_output=True, text=True)
    gen.stdout.close()
    note(ingest.stdout.strip() + ingest.stderr.strip())
    if gen.wait() != 0 or ingest.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        raise SystemExit("building the lake failed (see the messages above)")
    return {"build_s": time.perf_counter() - start, "rate": rate}


def queries(day: date, hour: int) -> dict[str, str]:
    """The three benchmark queries; ORDER BY tie-breakers make both engines' output comparable."""
    # The lake stores UTC times without a zone (docs/decisions/0005), so UTC TIMESTAMP literals.
    h0, h1 = f"{day} {hour:02}:00:00", f"{day} {hour + 1:02}:00:00"
    if hour == 23:
        h1 = f"{day + timedelta(days=1)} 00:00:00"
    return {
        "Q1 count by status": (
            "SELECT status, count(*) FROM logs.access GROUP BY status ORDER BY 2 DESC, 1"
        ),
        "Q2 top 10 paths in 1 h": (
            "SELECT path, count(*) AS n FROM logs.access "
            f"WHERE ts >= TIMESTAMP '{h0}' AND ts < TIMESTAMP '{h1}' "
            "GROUP BY path ORDER BY n DESC, path LIMIT 10"
        ),
        "Q3 p95 bytes per hour": (
            "SELECT date_trunc('hour', ts) AS hour, quantile_cont(bytes, 0.95) AS p95 "
            f"FROM logs.access WHERE ts >= TIMESTAMP '{day}' "
            f"AND ts < TIMESTAMP '{day + timedelta(days=1)}' GROUP BY 1 ORDER BY 1"
        ),
    }


def fetch_arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """The whole result as Arrow, whatever this DuckDB version calls that."""
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        if hasattr(relation, name):
            return getattr(relation, name)()
    raise RuntimeError("this duckdb has no Arrow fetch method")


def plain_duckdb(plan: TablePlan) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    paths = ", ".join("'" + f.path.replace("'", "''") + "'" for f in plan.files)
    con.execute(f"CREATE VIEW access AS SELECT * FROM read_parquet([{paths}])")
    return con


def same(a: pa.Table, b: pa.Table) -> str:
    if a.equals(b, check_metadata=False):
        return "identical"
    if a.num_rows == b.num_rows and sorted(map(repr, a.to_pylist())) == sorted(
        map(repr, b.to_pylist())
    ):
        return "same rows, other order"
    return "MISMATCH"


def time_pair(
    a: Callable[[], object], b: Callable[[], object], warmup: int, runs: int
) -> tuple[list[float], list[float]]:
    """Alternate ``a`` and ``b`` (who goes first swaps each round); seconds of the timed runs."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(warmup + runs):
        order = [(a, ta), (b, tb)] if i % 2 == 0 else [(b, tb), (a, ta)]
        for fn, sink in order:
            elapsed, _ = timed(fn)
            if i >= warmup:
                sink.append(elapsed)
    return ta, tb


def busiest_hour(con: duckdb.DuckDBPyConnection, day: date, wanted: int = 12) -> int:
    counts = dict(
        con.execute(
            "SELECT hour(ts), count(*) FROM access WHERE ts >= ? AND ts < ? GROUP BY 1",
            [f"{day} 00:00:00+00", f"{day + timedelta(days=1)} 00:00:00+00"],
        ).fetchall()
    )
    return wanted if counts.get(wanted) else max(counts, key=lambda h: counts[h])


def cli_cold_start(home: Path, day: date, hour: int, runs: int) -> dict[str, Any]:
    t0, t1 = f"{day} {hour:02}:00:00", f"{day} {hour:02}:01:00"
    where = f"ts >= TIMESTAMP '{t0}' AND ts < TIMESTAMP '{t1}'"
    sql = f"SELECT count(*) FROM logs.access WHERE {where}"
    cmd = [*loglake_cmd(), "query", sql, "--format", "csv"]
    env = env_with(LOGLAKE_HOME=str(home))
    results = [
        run_measured(cmd, env=env, stdin=subprocess.DEVNULL, check=False) for _ in range(runs)
    ]
    failed = [m for m in results if m.returncode != 0]
    if failed:
        last = failed[-1]
        print(
            f"\n!!! CLI: {len(failed)} of {runs} runs exited non-zero (last: {last.returncode}, "
            f"stderr {last.stderr.strip()[-300:]!r}); median over the successful runs !!!"
        )
    ok = [m for m in results if m.returncode == 0] or results
    walls = [m.wall_s for m in ok]
    return {
        "sql": sql,
        "output": ok[-1].stdout.strip().replace("\r", "").replace("\n", " | "),
        "median_s": median(walls),
        "all_s": [m.wall_s for m in results],
        "returncodes": [m.returncode for m in results],
        "peak_rss_mib": max(m.peak_rss_mib for m in results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of logs.access (10M)")
    ap.add_argument("--workdir", type=Path, default=DATA_DIR, help="where the lake is cached")
    ap.add_argument("--rebuild", action="store_true", help="regenerate and re-ingest the lake")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per engine and query")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    ap.add_argument("--cli-runs", type=int, default=7, help="CLI cold-start runs")
    args = ap.parse_args()
    require_time()
    home: Path = args.workdir.resolve() / f"q{label(args.rows)}"

    figures: dict[str, Any] = {"bench": "query", "rows_wanted": args.rows, "home": str(home)}
    plan = None if args.rebuild else access_plan(home)
    if plan is None or plan.rows != args.rows:
        figures["build"] = build_lake(home, args.rows)
        plan = access_plan(home)
        assert plan is not None
    figures.update(rows=plan.rows, files=len(plan.files), parquet_bytes=plan.size)

    duck = plain_duckdb(plan)
    hour = busiest_hour(duck, DAY)
    qs = queries(DAY, hour)
    lake = loglake.connect(str(home))

    rows: list[list[Any]] = []
    figures["queries"] = {}
    for name, q in qs.items():
        plain_q = q.replace("logs.access", "access")
        match = same(lake.sql(q).arrow(), fetch_arrow(duck.sql(plain_q)))
        if match == "MISMATCH":
            print(f"\n!!! MISMATCH: {name}: loglake and DuckDB return different results !!!\n")
        t_ll, t_dk = time_pair(
            lambda q=q: lake.sql(q).arrow(),
            lambda q=plain_q: fetch_arrow(duck.sql(q)),
            args.warmup,
            args.runs,
        )
        ll_ms, dk_ms = median(t_ll) * 1e3, median(t_dk) * 1e3
        ratio = ll_ms / dk_ms
        figures["queries"][name] = {
            "sql": q,
            "loglake_median_ms": ll_ms,
            "loglake_p90_ms": percentile(t_ll, 90) * 1e3,
            "duckdb_median_ms": dk_ms,
            "duckdb_p90_ms": percentile(t_dk, 90) * 1e3,
            "ratio": ratio,
            "results": match,
        }
        r = figures["queries"][name]
        rows.append(
            [name, ll_ms, r["loglake_p90_ms"], dk_ms, r["duckdb_p90_ms"], ratio,
             verdict(ratio <= TARGET_RATIO), match]
        )  # fmt: skip
        note(f"  {name}: loglake {ll_ms:.1f} ms, duckdb {dk_ms:.1f} ms")

    cli = cli_cold_start(home, DAY, hour, args.cli_runs)
    figures["cli_cold_start"] = cli

    print(
        f"\nlogs.access: {plan.rows:,} rows in {len(plan.files):,} Parquet files, "
        f"{plan.size / MB:,.1f} MB ({plan.size / max(plan.rows, 1):.1f} bytes/row); "
        f"day {DAY}, hour {hour:02}:00 UTC"
    )
    headers = ["query", "loglake ms", "p90", "duckdb ms", "p90", "ratio", "<= 1.5x", "results"]
    print_table(headers, rows, title=f"Warm queries (median of {args.runs}, {args.warmup} warm-up)")
    print_table(
        ["figure", "value", "target", ""],
        [
            [
                f"CLI cold start s (median of {args.cli_runs})",
                cli["median_s"],
                f"<= {TARGET_CLI_S:g} s",
                verdict(cli["median_s"] <= TARGET_CLI_S),
            ],
            ["CLI peak RSS MiB", cli["peak_rss_mib"], "", ""],
        ],
        title=f"CLI: loglake query ... --format csv -> {cli['output']}",
    )
    emit_json(figures)


if __name__ == "__main__":
    main()
