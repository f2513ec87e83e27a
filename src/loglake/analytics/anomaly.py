"""Anomaly detection on a numeric column of a continuous query's results: a rolling robust z-score.

Each new window's value is scored against the values of the previous ``history`` windows of the
same series: ``score = (value - median) / (1.4826 * MAD)``, the median absolute deviation scaled to
match a standard deviation on normal data. Median and MAD ignore the occasional outlier that would
drag a mean and a standard deviation along with it, so one spike neither hides the next one nor
makes normal points look odd afterwards. A point is an anomaly when ``|score| >= threshold`` and at
least ``min_history`` earlier windows are known. Spikes score high, drops score low (negative).

Why this and not a random cut forest (Kinesis Data Analytics' RANDOM_CUT_FOREST): see
docs/decisions/0008-anomaly-detection.md for the measured comparison on generated traffic.

A window emitted again (a correction) replaces its earlier value in the history instead of adding one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loglake.config.queries import AnomalySpec

__all__ = ["AnomalySpec", "RobustZ"]

MAD_TO_SIGMA = 1.4826


class RobustZ:
    """Rolling robust z-score per series; state is the recent values (JSON-able)."""

    def __init__(self, spec: AnomalySpec) -> None:
        self.spec = spec
        # series key (JSON text of the `by` values) -> list of [window_start, value]
        self._history: dict[str, list[list[float]]] = {}

    def score(
        self, series: str, window_start: int, value: float | None
    ) -> tuple[float | None, bool]:
        """Score ``value`` for the window starting at ``window_start`` and remember it."""
        if value is None or not np.isfinite(value):
            return None, False
        points = self._history.setdefault(series, [])
        earlier = [v for start, v in points if start != window_start]
        score: float | None = None
        flagged = False
        if len(earlier) >= self.spec.min_history:
            values = np.asarray(earlier, dtype=np.float64)
            median = float(np.median(values))
            mad = float(np.median(np.abs(values - median))) * MAD_TO_SIGMA
            # A flat history (MAD 0) would make any change infinitely odd: floor the spread at 1 %
            # of the median, and at 1 (counts are integers).
            spread = max(mad, abs(median) * 0.01, 1.0)
            score = (value - median) / spread
            flagged = abs(score) >= self.spec.threshold
        for point in points:
            if point[0] == window_start:
                point[1] = value  # a correction replaces the window's value
                break
        else:
            points.append([window_start, value])
            if len(points) > self.spec.history:
                del points[: len(points) - self.spec.history]
        return score, flagged

    def checkpoint(self) -> dict[str, Any]:
        return {"history": self._history}

    def restore(self, state: dict[str, Any]) -> None:
        self._history = {k: [list(p) for p in v] for k, v in state.get("history", {}).items()}
