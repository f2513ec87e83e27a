"""Anomaly detectors on generated traffic: injected spikes and drops found vs false alarms.

    python benchmarks/anomaly_bench.py            # 7 days of per-minute request counts
    python benchmarks/anomaly_bench.py --days 3 --seed 2

The series is requests per minute with a daily wave (1,000 +- 400), a weekly dip, Poisson-like noise
and some overdispersion; 40 single-minute anomalies are injected after the first day: spikes of
1.5-4x and drops to 0-50 %. Each detector sees the points in order (no look-ahead) and is judged on
recall (injected minutes flagged) and false-positive rate (normal minutes flagged), from the second
day on. Detectors:

* ``robust_z``: loglake's (rolling median and MAD of the last 60 windows, |z| >= 4);
* ``mean_z``: the same with mean and standard deviation;
* ``rcf``: a robust random cut forest (``rrcf``, as Kinesis Data Analytics' RANDOM_CUT_FOREST:
  shingles of 4 points, 40 trees of 256), flagged above the 99.5th percentile of its scores on the
  first, clean day. Only when ``pip install rrcf`` was done; skipped otherwise.

Prints a table, then one JSON line. Never asserts.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from common import emit_json, print_table
from loglake.analytics.anomaly import AnomalySpec, RobustZ

MINUTE = 60_000_000


def series(days: int, seed: int, incident_minutes: int = 1) -> tuple[list[float], dict[int, float]]:
    rng = random.Random(seed)
    values = []
    for m in range(days * 1440):
        day = m // 1440
        mean = (1000 + 400 * math.sin(2 * math.pi * (m % 1440) / 1440)) * (
            0.8 if day % 7 in (5, 6) else 1.0
        )
        mean *= math.exp(rng.gauss(0, 0.03))  # overdispersion: real traffic is burstier
        values.append(max(0.0, rng.gauss(mean, math.sqrt(mean))))
    injected: dict[int, float] = {}
    count = 0
    while count < 40:
        count += 1
        m = rng.randrange(1440, days * 1440)
        if any(abs(m - k) < 90 for k in injected):
            count -= 1
            continue
        factor = rng.uniform(1.5, 4.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.5)
        length = rng.randint(3, incident_minutes) if incident_minutes > 1 else 1
        for k in range(m, min(m + length, len(values))):
            injected[k] = factor
            values[k] *= factor
    return values, injected


def robust_z(values: list[float], threshold: float) -> list[bool]:
    detector = RobustZ(AnomalySpec(column="x", threshold=threshold))
    return [detector.score("", i * MINUTE, v)[1] for i, v in enumerate(values)]


def mean_z(values: list[float], threshold: float, history: int = 60) -> list[bool]:
    out = []
    for i, v in enumerate(values):
        past = np.asarray(values[max(0, i - history) : i])
        if len(past) < 10:
            out.append(False)
            continue
        sd = max(float(past.std()), 1.0)
        out.append(abs(v - float(past.mean())) / sd >= threshold)
    return out


def rcf(values: list[float]) -> list[bool] | None:
    try:
        import rrcf
    except ImportError:
        return None
    shingle, trees, size = 4, 40, 256
    forest = [rrcf.RCTree() for _ in range(trees)]
    scores = []
    points = [values[max(0, i - shingle + 1) : i + 1] for i in range(len(values))]
    for i, p in enumerate(points):
        point = np.asarray((p * shingle)[-shingle:]) if len(p) < shingle else np.asarray(p)
        total = 0.0
        for tree in forest:
            if len(tree.leaves) > size:
                tree.forget_point(i - size)
            tree.insert_point(point, index=i)
            total += tree.codisp(i)
        scores.append(total / trees)
    cut = float(np.percentile(scores[shingle:1440], 99.5))
    return [s > cut for s in scores]


def judge(flags: list[bool], injected: dict[int, float]) -> dict[str, Any]:
    normal = [i for i in range(1440, len(flags)) if i not in injected]
    found = sum(1 for m in injected if flags[m])
    false = sum(1 for i in normal if flags[i])
    return {
        "recall": found / len(injected),
        "false_positive_rate": false / len(normal),
        "false_positives_per_day": false / (len(normal) / 1440),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-rcf", action="store_true", help="skip the (slow) random cut forest")
    args = parser.parse_args()
    rows = []
    report: dict[str, Any] = {"bench": "anomaly", "days": args.days}
    for scenario, incident in (("single minutes", 1), ("incidents of 3-10 minutes", 10)):
        values, injected = series(args.days, args.seed, incident)
        report[scenario] = run_scenario(values, injected, rows, scenario, args.no_rcf)
    print_table(["scenario", "detector", "recall", "false positives", "per day", "us/point"], rows)
    emit_json(report)


def run_scenario(
    values: list[float],
    injected: dict[int, float],
    rows: list[list[str]],
    scenario: str,
    no_rcf: bool,
) -> dict[str, Any]:
    report: dict[str, Any] = {"injected_minutes": len(injected)}
    for name, run in (
        ("robust_z |z|>=4 (loglake)", lambda: robust_z(values, 4.0)),
        ("robust_z |z|>=3", lambda: robust_z(values, 3.0)),
        ("mean_z |z|>=4", lambda: mean_z(values, 4.0)),
        ("mean_z |z|>=3", lambda: mean_z(values, 3.0)),
        ("rcf (rrcf, 99.5th pct)", lambda: None if no_rcf else rcf(values)),
    ):
        t0 = time.perf_counter()
        flags = run()
        seconds = time.perf_counter() - t0
        if flags is None:
            rows.append([scenario, name, "skipped", "", "", ""])
            continue
        j = judge(flags, injected)
        report[name] = {**j, "us_per_point": seconds / len(values) * 1e6}
        rows.append(
            [
                scenario,
                name,
                f"{j['recall']:.0%}",
                f"{j['false_positive_rate']:.3%}",
                f"{j['false_positives_per_day']:.1f}",
                f"{seconds / len(values) * 1e6:.0f}",
            ]
        )
    return report


if __name__ == "__main__":
    main()
