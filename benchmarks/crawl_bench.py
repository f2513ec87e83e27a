"""Crawl of a folder of 1,000 files: how long it takes and what it registers.

The folder: ``--parquet`` Parquet files in Hive partitions (``region=R/dt=D/``), ``--json`` gzipped
JSON-lines files under date folders (``YYYY/MM/DD/HH/``) and ``--access`` access logs, each with
``--rows`` rows. Three runs of ``loglake crawl`` as subprocesses on a fresh lake: ``--plan`` (samples
every file, writes nothing), the crawl itself, and a re-crawl after ``--new`` more Parquet files
arrive in a new partition (incremental: only those are read). Then the tables are counted with
``loglake query``, and two queries of the Parquet table are timed (all of it; one partition).
Parquet is registered in place (nothing copied) unless ``--convert`` passes ``--convert`` to every
crawl. Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DATA_DIR,
    emit_json,
    env_with,
    fresh_dir,
    loglake_cmd,
    note,
    print_table,
    require_time,
    run_measured,
)

ACCESS = '203.0.113.{a} - - [22/Jan/2024:10:{m:02d}:{s:02d} +0000] "GET /p{a} HTTP/1.1" 200 {b} "-" "x"\n'


def build(folder: Path, parquet: int, json_files: int, access: int, rows: int, seed: int) -> None:
    """Write the crawled folder (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    regions = ["eu", "us", "apac", "sa"]
    for i in range(parquet):
        path = folder / "sales" / f"region={regions[i % 4]}" / f"dt=2024-01-{1 + i % 28:02d}"
        path.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "id": pa.array(range(i * rows, (i + 1) * rows), pa.int64()),
                "amount": [rng.random() * 100 for _ in range(rows)],
                "sku": [f"s{rng.randrange(1000)}" for _ in range(rows)],
            }
        )
        pq.write_table(table, path / f"part-{i:05d}.parquet")
    for i in range(json_files):
        path = folder / "events" / "2024" / "01" / f"{1 + i % 28:02d}" / f"{i % 24:02d}"
        path.mkdir(parents=True, exist_ok=True)
        lines = (
            json.dumps({"ts": f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:00:{j % 60:02d}Z", "n": j})
            for j in range(rows)
        )
        (path / f"e-{i:05d}.jsonl.gz").write_bytes(
            gzip.compress(("\n".join(lines) + "\n").encode())
        )
    web = folder / "web"
    web.mkdir(parents=True, exist_ok=True)
    for i in range(access):
        text = "".join(ACCESS.format(a=j % 250, m=j % 60, s=j % 60, b=100 + j) for j in range(rows))
        (web / f"access-{i:05d}.log").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parquet", type=int, default=800)
    parser.add_argument("--json", type=int, default=150)
    parser.add_argument("--access", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1000, help="rows per file")
    parser.add_argument("--new", type=int, default=20, help="Parquet files added before re-crawl")
    parser.add_argument("--workdir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--convert", action="store_true", help="crawl with --convert (copy Parquet rows)"
    )
    args = parser.parse_args()
    require_time()
    work = fresh_dir(args.workdir, "crawl-")
    folder, home = work / "data", work / "lake"
    note(f"building {args.parquet + args.json + args.access} files under {folder}")
    build(folder, args.parquet, args.json, args.access, args.rows, seed=1)
    env = env_with(LOGLAKE_HOME=str(home))
    paths = [str(folder / "sales"), str(folder / "events"), str(folder / "web")]
    crawl = [*loglake_cmd(), "crawl", *paths, *(["--convert"] if args.convert else [])]
    note("crawl --plan")
    planned = run_measured([*crawl, "--plan"], env=env)
    note("crawl")
    first = run_measured(crawl, env=env)
    import pyarrow as pa
    import pyarrow.parquet as pq

    new = folder / "sales" / "region=eu" / "dt=2024-02-01"
    new.mkdir(parents=True)
    for i in range(args.new):
        pq.write_table(pa.table({"id": [i], "amount": [1.0], "sku": ["n"]}), new / f"n{i}.parquet")
    note("re-crawl")
    again = run_measured(crawl, env=env)
    sql = (
        "SELECT 'sales' AS t, count(*) AS n FROM crawled.sales UNION ALL "
        "SELECT 'events', count(*) FROM crawled.events UNION ALL "
        "SELECT 'web', count(*) FROM crawled.web"
    )
    counted = run_measured([*loglake_cmd(), "query", "--format", "json", sql], env=env)
    rows = {r["t"]: r["n"] for r in map(json.loads, counted.stdout.splitlines())}
    timed = {}
    for label, query in (
        ("query all sales", "SELECT count(*), sum(amount) FROM crawled.sales"),
        (
            "query one partition",
            "SELECT count(*) FROM crawled.sales WHERE region = 'eu' AND dt = '2024-01-05'",
        ),
    ):
        # Best of 3: the figure of the query, not of a slow start on a shared machine.
        runs = [run_measured([*loglake_cmd(), "query", query], env=env) for _ in range(3)]
        timed[label] = min(runs, key=lambda r: r.wall_s)
    files = args.parquet + args.json + args.access
    print(first.stdout)
    print_table(
        ["run", "files", "wall s", "CPU s", "peak RSS MiB"],
        [
            ["crawl --plan", files, planned.wall_s, planned.cpu_s, planned.peak_rss_mib],
            ["crawl", files, first.wall_s, first.cpu_s, first.peak_rss_mib],
            ["re-crawl", args.new, again.wall_s, again.cpu_s, again.peak_rss_mib],
            *([label, "", r.wall_s, r.cpu_s, r.peak_rss_mib] for label, r in timed.items()),
        ],
        title=f"loglake crawl of {files:,} files ({args.rows:,} rows each)"
        + (" with --convert" if args.convert else ", Parquet in place"),
    )
    print_table(["table", "rows"], sorted(rows.items()), title="registered")
    emit_json(
        {
            "files": files,
            "rows_per_file": args.rows,
            "plan_wall_s": planned.wall_s,
            "crawl_wall_s": first.wall_s,
            "crawl_cpu_s": first.cpu_s,
            "crawl_peak_rss_mib": first.peak_rss_mib,
            "recrawl_files": args.new,
            "recrawl_wall_s": again.wall_s,
            "convert": args.convert,
            "query_all_wall_s": timed["query all sales"].wall_s,
            "query_partition_wall_s": timed["query one partition"].wall_s,
            "rows": rows,
        }
    )


if __name__ == "__main__":
    main()
