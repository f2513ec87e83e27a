"""Shared helpers for the benchmarks: subprocess timing with peak RSS, sizes, statistics, output.

Benchmarks print figures (a readable table, then one JSON line with every figure); they never
assert.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"  # git-ignored
SAMPLE_LOG = BENCH_DIR.parent.parent / "shared" / "data" / "apache_combined_10k.log"
TIME_BIN = "/usr/bin/time"
MB = 1_000_000  # file sizes in decimal MB
MIB = 1024 * 1024  # memory in MiB
GIB = 1024 * MIB


# --- commands ------------------------------------------------------------------------------------


def loglake_cmd() -> list[str]:
    """The ``loglake`` console script of this interpreter (not a pyenv shim, which adds ~50 ms)."""
    script = Path(sys.executable).parent / "loglake"
    if script.exists():
        return [str(script)]
    found = shutil.which("loglake")
    return [found] if found else [sys.executable, "-m", "loglake.cli"]


def ensure_bytecode() -> None:
    """Compile loglake's modules to bytecode where they are installed (an editable install under
    PYTHONDONTWRITEBYTECODE has none), so a command's start costs what it costs after
    ``pip install``, which compiles them (~0.2 s of a batch ingest's start otherwise)."""
    import importlib.util

    spec = importlib.util.find_spec("loglake")
    if spec is None or not spec.submodule_search_locations:
        return
    for where in spec.submodule_search_locations:
        subprocess.run([sys.executable, "-m", "compileall", "-q", where], check=False)


def require_time() -> None:
    """Exit with an install hint when GNU time (for peak RSS) is missing."""
    if not os.access(TIME_BIN, os.X_OK):
        sys.exit(f"{TIME_BIN} not found; install GNU time (Debian/Ubuntu: apt-get install time)")


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


@dataclass
class Measured:
    """One finished subprocess: wall seconds (perf_counter), peak RSS (MiB), CPU seconds, output."""

    wall_s: float
    peak_rss_mib: float
    cpu_s: float
    stdout: str
    stderr: str
    returncode: int = 0


def run_measured(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | int | None = None,
    stdout: IO[bytes] | int | None = subprocess.PIPE,
    check: bool = True,
) -> Measured:
    """Run ``cmd`` under ``/usr/bin/time -f "%e %M %U %S"`` and return its figures.

    Wall time is taken around the whole call with ``time.perf_counter`` (finer than ``%e``); peak
    RSS is GNU time's ``%M`` (KB) of that one process, so figures of earlier children never leak
    in, as they would with ``getrusage(RUSAGE_CHILDREN)``. Raises ``RuntimeError`` when ``cmd``
    fails, unless ``check`` is false (then see ``returncode``).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = [TIME_BIN, "-f", "%e %M %U %S", "-o", tf.name, *cmd]
        start = time.perf_counter()
        proc = subprocess.run(full, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        out = proc.stdout.decode(errors="replace") if isinstance(proc.stdout, bytes) else ""
        err = proc.stderr.decode(errors="replace")
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-2000:]}")
        _elapsed, rss_kb, user, system = parse_time_output(Path(tf.name).read_text())
    return Measured(wall, rss_kb * 1024 / MIB, user + system, out, err, proc.returncode)


def parse_time_output(text: str) -> tuple[float, int, float, float]:
    """Parse the last line of ``/usr/bin/time -f "%e %M %U %S"``: (elapsed s, KB, user s, sys s).

    GNU time writes "Command exited with non-zero status N" before it when the command failed.
    """
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    elapsed, rss, user, system = last.split()
    return float(elapsed), int(rss), float(user), float(system)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call of ``fn`` takes, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# --- files ---------------------------------------------------------------------------------------


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under ``path`` (what ``du -sb`` prints)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def build_once(path: Path, write: Callable[[Path], None]) -> bool:
    """Create ``path`` with ``write(tmp)`` unless it exists (atomic: no half file after a kill).

    Returns True when the file was built now, False when the cached one was reused.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.replace(tmp, path)
    return True


def fresh_dir(parent: Path, prefix: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


# --- statistics and output -----------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default method), ``p`` in 0..100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    """Print a plain aligned text table (numbers right-aligned)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    numeric = [
        all(isinstance(r[i], int | float) for r in rows) if rows else False
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    if title:
        print(f"\n{title}")
    print(line(list(headers)))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 10_000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def emit_json(figures: dict[str, Any]) -> None:
    """The final line of a benchmark: every figure, machine-readable."""
    print(json.dumps(figures, sort_keys=True, default=str), flush=True)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- live access-log load --------------------------------------------------------------------------

_STAMP = re.compile(rb"\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]")


def split_at_stamps(text: bytes) -> list[bytes]:
    """``text`` (access-log lines) cut around its bracketed timestamps: ``stamp.join(pieces)`` is
    the text with every timestamp set to ``stamp``, one C-level join, so a client costs little."""
    return _STAMP.split(text)


def batch_templates(batch: int) -> list[list[bytes]]:
    """The sample log in bodies of ``batch`` lines, each split around its timestamps."""
    lines = SAMPLE_LOG.read_bytes().splitlines()
    bodies = [
        b"\n".join(lines[i : i + batch]) + b"\n" for i in range(0, len(lines) - batch + 1, batch)
    ]
    return [split_at_stamps(body) for body in bodies]


class LiveStamp:
    """The current second as an access-log timestamp, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = b""

    def now(self) -> bytes:
        wall = time.time()
        if int(wall) != self._second:
            self._second = int(wall)
            self._stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(wall)).encode()
        return self._stamp
