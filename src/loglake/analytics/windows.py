"""Window specifications of continuous queries: ``tumbling 1m``, ``hopping 5m every 1m``, ``session 30m``.

The types and their parsing live in the config layer (:mod:`loglake.config.queries`), which checks
every window when the config loads; they are named here for the analytics code that uses them.

Times are integers of microseconds since the epoch (UTC), the unit of the lake's ``ts`` column, so
window arithmetic is exact. Tumbling and hopping windows are aligned to the epoch (a ``1h`` window
starts on the hour, like ``date_trunc``); a hopping window of size S every P covers ``[s, s + S)`` for
every ``s`` that is a multiple of P, so each record lies in S / P windows.
"""

from __future__ import annotations

from loglake.config.queries import MAX_DURATION_US, WindowSpec, parse_duration

__all__ = ["MAX_DURATION_US", "WindowSpec", "parse_duration"]
