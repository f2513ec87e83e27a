"""Ingest throughput of ``loglake ingest`` vs ``goaccess``, lake size vs raw size, data files
written, start-up time on small inputs, and (optionally) memory while streaming ~5 GB through stdin.

Where the fixed cost goes is measured beside it (``warm_ingest.py``): the wall time of importing
what a batch ingest imports, with and without pyiceberg, and, in every round of the side-by-side
runs, the same 1M-line ingest in a process that has already imported everything (its input-bound
part alone).

    python benchmarks/ingest_bench.py                  # 1M lines, 3 alternating repetitions
    python benchmarks/ingest_bench.py --repeat 1 --copies 10
    python benchmarks/ingest_bench.py --big-gb 5       # adds the streaming run (takes minutes)

Prints a table per part, then one JSON line with every figure. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import (
    DATA_DIR,
    GIB,
    MB,
    MIB,
    SAMPLE_LOG,
    Measured,
    build_once,
    emit_json,
    ensure_bytecode,
    env_with,
    fresh_dir,
    loglake_cmd,
    median,
    note,
    print_table,
    require_time,
    run_measured,
    tree_bytes,
    verdict,
)

TARGET_LINES_PER_S = 500_000
TARGET_SPEEDUP = 8.0  # goaccess time / loglake time: the batch issue's goal
TARGET_SPEEDUP_NEXT = 4.0  # the step towards it the catalog issue set
TARGET_LAKE_RATIO = 10.0  # raw bytes / lake bytes
TARGET_BIG_RSS = GIB
TARGET_STARTUP_S = 1.0  # 10,000-line ingest into a fresh home, wall
WARM = Path(__file__).resolve().parent / "warm_ingest.py"
_READ = re.compile(r"read ([\d,]+) lines = parsed ([\d,]+) \+ rejected ([\d,]+)")


def build_repeated(copies: int, workdir: Path) -> Path:
    """SAMPLE_LOG concatenated ``copies`` times, built once and cached."""
    path = workdir / f"apache_combined_{copies}x.log"
    sample = SAMPLE_LOG.read_bytes()
    if not sample.endswith(b"\n"):
        sample += b"\n"

    def write(tmp: Path) -> None:
        note(f"building {path} ({len(sample) * copies / MB:,.0f} MB)")
        with open(tmp, "wb") as fh:
            for _ in range(copies):
                fh.write(sample)

    build_once(path, write)
    return path


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b""))


def run_goaccess(log: Path, scratch: Path) -> Measured:
    out = fresh_dir(scratch, "goaccess-")
    try:
        cmd = ["goaccess", str(log), "--log-format=COMBINED", "-o", str(out / "report.json")]
        return run_measured(cmd, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_loglake(
    source: str, scratch: Path, stdin: Any = subprocess.DEVNULL, fmt: str = "combined"
) -> tuple[Measured, int, int, int]:
    """``loglake ingest`` into a fresh empty home: (figures, rows parsed, warehouse bytes, data
    files)."""
    home = fresh_dir(scratch, "home-")
    try:
        cmd = [*loglake_cmd(), "ingest", "--format", fmt, "--no-progress", source]
        m = run_measured(cmd, env=env_with(LOGLAKE_HOME=str(home)), stdin=stdin)
        found = _READ.search(m.stdout)
        if not found:
            raise RuntimeError(f"unexpected ingest output: {m.stdout!r}")
        parsed = int(found.group(2).replace(",", ""))
        rejected = int(found.group(3).replace(",", ""))
        if rejected:
            note(f"warning: loglake rejected {rejected:,} lines")
        files = len(list((home / "warehouse").rglob("*.parquet")))
        return m, parsed, tree_bytes(home / "warehouse"), files
    finally:
        shutil.rmtree(home, ignore_errors=True)


def start_up(workdir: Path, scratch: Path, repeat: int) -> dict[str, Any]:
    """The fixed cost: ``loglake ingest --no-progress FILE`` (format detected) of the sample's
    first 10,000 lines and of its first line, each ``repeat`` times into a fresh home."""
    sample = SAMPLE_LOG.read_bytes().splitlines(keepends=True)
    figures: dict[str, Any] = {}
    for name, lines in (("10k", 10_000), ("1", 1)):
        path = workdir / f"startup_{name}.log"
        path.write_bytes(b"".join(sample[:lines]))
        runs = []
        for _ in range(repeat):
            m, parsed, _, _ = run_loglake(str(path), scratch, fmt="auto")
            if parsed != lines:
                note(f"warning: loglake parsed {parsed:,} of {lines:,} lines")
            runs.append(m)
        walls = [m.wall_s for m in runs]
        note(f"  start-up, {lines:,} line(s): wall {', '.join(f'{w:.2f}' for w in walls)} s")
        figures[name] = {
            "lines": lines,
            "wall_s": median(walls),
            "wall_s_all": walls,
            "cpu_s": median([m.cpu_s for m in runs]),
            "peak_rss_mib": max(m.peak_rss_mib for m in runs),
        }
    for name in ("imports", "imports-no-iceberg"):
        runs = [run_measured([sys.executable, str(WARM), name]) for _ in range(repeat)]
        walls = [m.wall_s for m in runs]
        note(f"  {name}: wall {', '.join(f'{w:.2f}' for w in walls)} s")
        figures[name] = {"wall_s": median(walls), "cpu_s": median([m.cpu_s for m in runs])}
    return figures


def run_warm(log: Path, scratch: Path) -> Measured:
    """The ingest of ``log`` in a process that has imported everything first (``warm_ingest.py``):
    wall and CPU seconds of the ingest call alone, peak RSS of the whole process."""
    home = fresh_dir(scratch, "warm-")
    try:
        m = run_measured([sys.executable, str(WARM), "ingest", str(home), str(log)])
        inner = json.loads(m.stdout.strip().splitlines()[-1])
        return Measured(inner["wall_s"], m.peak_rss_mib, inner["cpu_s"], m.stdout, m.stderr)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def side_by_side(log: Path, lines: int, repeat: int, scratch: Path) -> dict[str, Any]:
    """goaccess and loglake alternately, ``repeat`` times each; who goes first swaps every round.
    Each round also times the same ingest in a warm process (``warm``: imports already done)."""
    runs: dict[str, list[Measured]] = {"goaccess": [], "loglake": [], "warm": []}
    lake_bytes = files = 0
    rows: list[list[Any]] = []
    for i in range(repeat):
        order = ["goaccess", "loglake"] if i % 2 == 0 else ["loglake", "goaccess"]
        for tool in [*order, "warm"]:
            if tool == "goaccess":
                m = run_goaccess(log, scratch)
            elif tool == "warm":
                m = run_warm(log, scratch)
            else:
                m, parsed, lake_bytes, files = run_loglake(str(log), scratch)
                if parsed != lines:
                    note(f"warning: loglake parsed {parsed:,} of {lines:,} lines")
            runs[tool].append(m)
            rows.append([i + 1, tool, m.wall_s, lines / m.wall_s, m.cpu_s, m.peak_rss_mib])
            note(f"  round {i + 1}: {tool:8} {m.wall_s:7.2f} s  {m.peak_rss_mib:7.0f} MiB")
    print_table(
        ["round", "tool", "wall s", "lines/s", "cpu s", "peak RSS MiB"],
        rows,
        title=f"Runs ({lines:,} lines, {log.stat().st_size / MB:,.0f} MB)",
    )
    g = median([m.wall_s for m in runs["goaccess"]])
    ll = median([m.wall_s for m in runs["loglake"]])
    warm = median([m.wall_s for m in runs["warm"]])
    raw = log.stat().st_size
    return {
        "lines": lines,
        "raw_bytes": raw,
        "repeat": repeat,
        "goaccess_wall_s": g,
        "loglake_wall_s": ll,
        "goaccess_wall_s_all": [m.wall_s for m in runs["goaccess"]],
        "loglake_wall_s_all": [m.wall_s for m in runs["loglake"]],
        "goaccess_lines_per_s": lines / g,
        "loglake_lines_per_s": lines / ll,
        "speedup_vs_goaccess": g / ll,
        "warm_wall_s": warm,
        "warm_wall_s_all": [m.wall_s for m in runs["warm"]],
        "warm_cpu_s": median([m.cpu_s for m in runs["warm"]]),
        "speedup_warm_vs_goaccess": g / warm,
        "goaccess_peak_rss_mib": max(m.peak_rss_mib for m in runs["goaccess"]),
        "loglake_peak_rss_mib": max(m.peak_rss_mib for m in runs["loglake"]),
        "lake_bytes": lake_bytes,
        "lake_ratio": raw / lake_bytes if lake_bytes else None,
        "data_files": files,
    }


def realistic_lake(lines: int, workdir: Path, scratch: Path) -> dict[str, Any] | None:
    """Lake size for non-repeated input (``loglake generate --rate 50``), ingested once."""
    path = workdir / f"generated_{lines}_r50.log"

    def write(tmp: Path) -> None:
        note(f"generating {path}")
        cmd = [*loglake_cmd(), "generate", "--lines", str(lines), "--rate", "50"]
        cmd += ["--start", "2026-01-01T00:00:00Z", "--output", str(tmp)]
        subprocess.run(cmd, capture_output=True, text=True, check=True)

    try:
        build_once(path, write)
    except subprocess.CalledProcessError as exc:
        print(
            f"\nNOTE: `loglake generate` failed, realistic lake size skipped: {exc.stderr[-500:]}"
        )
        return None
    m, parsed, lake_bytes, files = run_loglake(str(path), scratch)
    raw = path.stat().st_size
    return {
        "lines": parsed,
        "raw_bytes": raw,
        "lake_bytes": lake_bytes,
        "lake_ratio": raw / lake_bytes if lake_bytes else None,
        "data_files": files,
        "wall_s": m.wall_s,
        "lines_per_s": parsed / m.wall_s,
        "peak_rss_mib": m.peak_rss_mib,
    }


def bytes_per_line(workdir: Path) -> float:
    generated = sorted(workdir.glob("generated_*_r50.log"))
    if generated:
        path = generated[0]
        with open(path, "rb") as fh:
            head = fh.read(50 << 20)
        return len(head) / max(head.count(b"\n"), 1)
    return 240.0


def big_stream(gb: float, workdir: Path, scratch: Path) -> dict[str, Any]:
    """``loglake generate | loglake ingest -``: ~``gb`` GB through a pipe, no big file on disk."""
    per_line = bytes_per_line(workdir)
    lines = int(gb * 1e9 / per_line)
    note(
        f"streaming {lines:,} generated lines (~{lines * per_line / 1e9:,.2f} GB) "
        "into loglake ingest -"
    )
    gen_cmd = [*loglake_cmd(), "generate", "--lines", str(lines), "--rate", "1000"]
    gen = subprocess.Popen(gen_cmd, stdout=subprocess.PIPE)
    assert gen.stdout is not None
    try:
        m, parsed, lake_bytes, files = run_loglake("-", scratch, stdin=gen.stdout)
    finally:
        gen.stdout.close()
        gen.wait()
    return {
        "lines": parsed,
        "approx_bytes": lines * per_line,
        "wall_s": m.wall_s,
        "lines_per_s": parsed / m.wall_s,
        "peak_rss_mib": m.peak_rss_mib,
        "cpu_s": m.cpu_s,
        "lake_bytes": lake_bytes,
        "data_files": files,
        "rss_pass": m.peak_rss_mib * MIB < TARGET_BIG_RSS,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool (default 3)")
    ap.add_argument(
        "--copies",
        type=int,
        default=100,
        help="copies of the 10k-line sample (default 100 = 1M lines)",
    )
    ap.add_argument(
        "--realistic-lines",
        type=int,
        default=1_000_000,
        help="lines of generated input for the realistic lake size; 0 skips it",
    )
    ap.add_argument(
        "--big-gb",
        type=float,
        default=0.0,
        help="also stream ~this many GB through stdin (default 0 = off)",
    )
    ap.add_argument(
        "--startup-repeat",
        type=int,
        default=5,
        help="runs of each start-up ingest (10,000 lines, 1 line; default 5; 0 skips them)",
    )
    ap.add_argument(
        "--workdir", type=Path, default=DATA_DIR, help="cached inputs and scratch homes"
    )
    args = ap.parse_args()
    require_time()
    ensure_bytecode()
    if not shutil.which("goaccess"):
        sys.exit("goaccess not found (Debian/Ubuntu: apt-get install goaccess)")
    workdir: Path = args.workdir.resolve()
    scratch = workdir / "scratch"

    log = build_repeated(args.copies, workdir)
    lines = count_lines(log)
    figures: dict[str, Any] = {"bench": "ingest", "loglake_cmd": loglake_cmd()}
    startup = start_up(workdir, scratch, args.startup_repeat) if args.startup_repeat else None
    figures["startup"] = startup
    s = side_by_side(log, lines, args.repeat, scratch)
    figures["repeated"] = s
    real = realistic_lake(args.realistic_lines, workdir, scratch) if args.realistic_lines else None
    figures["realistic"] = real
    big = big_stream(args.big_gb, workdir, scratch) if args.big_gb > 0 else None
    figures["big"] = big

    rows: list[list[Any]] = [
        ["loglake ingest, median wall s", s["loglake_wall_s"], ""],
        ["goaccess, median wall s", s["goaccess_wall_s"], ""],
        [
            "loglake lines/s",
            s["loglake_lines_per_s"],
            f">= {TARGET_LINES_PER_S:,}",
            verdict(s["loglake_lines_per_s"] >= TARGET_LINES_PER_S),
        ],
        ["goaccess lines/s", s["goaccess_lines_per_s"], ""],
        [
            "goaccess time / loglake time",
            s["speedup_vs_goaccess"],
            f">= {TARGET_SPEEDUP_NEXT:g}x (then {TARGET_SPEEDUP:g}x)",
            verdict(s["speedup_vs_goaccess"] >= TARGET_SPEEDUP_NEXT),
        ],
        ["the same ingest in a warm process (imports done), median wall s", s["warm_wall_s"], ""],
        ["  its CPU s", s["warm_cpu_s"], ""],
        ["goaccess time / warm ingest time", s["speedup_warm_vs_goaccess"], ""],
        ["loglake peak RSS MiB", s["loglake_peak_rss_mib"], ""],
        ["goaccess peak RSS MiB", s["goaccess_peak_rss_mib"], ""],
        ["raw MB (repeated input)", s["raw_bytes"] / MB, ""],
        ["lake MB (repeated input)", s["lake_bytes"] / MB, ""],
        ["data files (repeated input, one run)", s["data_files"], "1 per partition"],
        [
            "raw / lake (repeated; flattering)",
            s["lake_ratio"],
            f">= {TARGET_LAKE_RATIO:g}x",
            verdict(s["lake_ratio"] >= TARGET_LAKE_RATIO if s["lake_ratio"] else None),
        ],
    ]
    if startup:
        rows += [
            [
                "start-up: 10,000-line ingest, median wall s",
                startup["10k"]["wall_s"],
                f"<= {TARGET_STARTUP_S:g} s",
                verdict(startup["10k"]["wall_s"] <= TARGET_STARTUP_S),
            ],
            ["start-up: 10,000-line ingest, median CPU s", startup["10k"]["cpu_s"], ""],
            ["start-up: 1-line ingest, median wall s", startup["1"]["wall_s"], ""],
            ["start-up: 1-line ingest, median CPU s", startup["1"]["cpu_s"], ""],
            ["importing what an ingest imports, median wall s", startup["imports"]["wall_s"], ""],
            [
                "  the same without pyiceberg, median wall s",
                startup["imports-no-iceberg"]["wall_s"],
                "",
            ],
        ]
    if real:
        rows += [
            [f"raw MB (generated, {real['lines']:,} lines)", real["raw_bytes"] / MB, ""],
            ["lake MB (generated)", real["lake_bytes"] / MB, ""],
            [
                "raw / lake (generated; realistic)",
                real["lake_ratio"],
                f">= {TARGET_LAKE_RATIO:g}x",
                verdict(real["lake_ratio"] >= TARGET_LAKE_RATIO if real["lake_ratio"] else None),
            ],
            ["loglake lines/s (generated)", real["lines_per_s"], ""],
            ["loglake peak RSS MiB (generated)", real["peak_rss_mib"], ""],
        ]
    if big:
        rows += [
            [f"stdin stream: {big['lines']:,} lines, wall s", big["wall_s"], ""],
            ["stdin stream lines/s", big["lines_per_s"], ""],
            [
                "stdin stream peak RSS MiB",
                big["peak_rss_mib"],
                "< 1024 MiB",
                verdict(big["rss_pass"]),
            ],
        ]
    print_table(
        ["figure", "value", "target", ""],
        [r + [""] * (4 - len(r)) for r in rows],
        title="Summary (medians over rounds; wall = whole process incl. start-up)",
    )
    if big:
        print("note: the stream's rate is bounded by the generator sharing the same CPUs.")
    shutil.rmtree(scratch, ignore_errors=True)
    emit_json(figures)


if __name__ == "__main__":
    main()
