"""The anomaly detector flags injected spikes and drops and stays quiet on normal traffic."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import polars as pl

from loglake.analytics.anomaly import AnomalySpec, RobustZ
from loglake.analytics.engine import ContinuousQuery, QuerySpec
from loglake.analytics.windows import WindowSpec

MINUTE = 60_000_000


def traffic(minutes: int, seed: int) -> list[float]:
    """Requests per minute: a slow daily wave around 1,000 with Poisson-like noise."""
    rng = random.Random(seed)
    out = []
    for m in range(minutes):
        mean = 1000 + 400 * math.sin(2 * math.pi * m / 1440)
        out.append(max(0.0, rng.gauss(mean, math.sqrt(mean))))
    return out


def test_spikes_and_drops_are_flagged_and_normal_minutes_are_not() -> None:
    series = traffic(24 * 60, seed=5)
    injected = {300: 3.0, 700: 0.2, 1100: 2.5, 1300: 0.0}  # minute -> factor
    for minute, factor in injected.items():
        series[minute] *= factor
    detector = RobustZ(AnomalySpec(column="hits"))
    flagged = {m for m, value in enumerate(series) if detector.score("", m * MINUTE, value)[1]}
    assert set(injected) <= flagged  # every spike and drop found
    false_positives = flagged - set(injected)
    assert len(false_positives) / (len(series) - len(injected)) < 0.005


def test_a_correction_replaces_the_windows_value_in_the_history() -> None:
    detector = RobustZ(AnomalySpec(column="hits", min_history=3))
    for m in range(5):
        detector.score("", m * MINUTE, 100.0)
    score, _ = detector.score("", 5 * MINUTE, 100.0)
    assert score == 0.0
    assert len(detector.checkpoint()["history"][""]) == 6
    detector.score("", 5 * MINUTE, 101.0)  # the same window again
    assert len(detector.checkpoint()["history"][""]) == 6


def test_a_query_with_an_anomaly_column_marks_its_results() -> None:
    t0 = datetime(2024, 1, 1)
    counts = [50] * 20 + [400] + [50] * 3
    rows = [
        {"ts": t0 + timedelta(minutes=m, seconds=(k * 59) // max(1, n))}
        for m, n in enumerate(counts)
        for k in range(n)
    ]
    frame = pl.DataFrame(rows)
    spec = QuerySpec(
        "rpm",
        "SELECT count(*) AS hits FROM stream",
        WindowSpec.parse("tumbling 1m"),
        lateness=0,
        anomaly=AnomalySpec(column="hits"),
    )
    engine = ContinuousQuery(
        spec,
        lambda start, stop, key: frame.filter(
            (pl.col("ts").cast(pl.Int64) >= start) & (pl.col("ts").cast(pl.Int64) < stop)
        ),
    )
    out = engine.process(frame, wall=0)
    assert out is not None
    flagged = out.filter(pl.col("is_anomaly")).get_column("hits").to_list()
    assert flagged == [400]
    assert out.get_column("anomaly_score").null_count() == 10  # no score before 10 windows
