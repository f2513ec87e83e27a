"""Window specifications of continuous queries: ``tumbling 1m``, ``hopping 5m every 1m``, ``session 30m``.

Times are integers of microseconds since the epoch (UTC), the unit of the lake's ``ts`` column, so
window arithmetic is exact. Tumbling and hopping windows are aligned to the epoch (a ``1h`` window
starts on the hour, like ``date_trunc``); a hopping window of size S every P covers ``[s, s + S)`` for
every ``s`` that is a multiple of P, so each record lies in S / P windows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loglake.errors import ConfigError

_UNITS_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
#: The longest duration accepted: a year. Longer ones mean nothing for windows, lateness or
#: cooldowns, and event-time arithmetic with them overflows dates (year 1 / 9999 limits).
MAX_DURATION_US = 365 * _UNITS_US["d"]


def parse_duration(text: str, what: str) -> int:
    """``"90s"``, ``"1m"``, ``"1.5h"`` → microseconds; :class:`ConfigError` naming ``what`` if not.

    Durations are more than zero and at most 365 days.
    """
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(
            f"{what}: {str(text)[:100]!r} is not a duration; write a number and a unit: "
            "500ms, 10s, 5m, 1h, 1d"
        )
    value = float(match.group(1)) * _UNITS_US[match.group(2)]
    if value > MAX_DURATION_US:
        raise ConfigError(
            f"{what}: {str(text)[:100]!r} is longer than the longest duration allowed, 365d"
        )
    if round(value) <= 0:
        raise ConfigError(f"{what}: {text!r} must be longer than zero")
    return round(value)


@dataclass(frozen=True)
class WindowSpec:
    """A parsed ``window = "..."`` setting. ``size``/``slide``/``gap`` are in microseconds."""

    kind: str  # "tumbling", "hopping" or "session"
    size: int = 0  # tumbling and hopping
    slide: int = 0  # hopping (tumbling: equal to size)
    gap: int = 0  # session: a silence this long ends a session

    @classmethod
    def parse(cls, text: str, what: str = "window") -> WindowSpec:
        """Parse ``tumbling D``, ``hopping D every P`` or ``session G``; ConfigError if malformed."""
        words = str(text).split()
        kind = words[0].lower() if words else ""
        if kind == "tumbling" and len(words) == 2:
            size = parse_duration(words[1], what)
            return cls("tumbling", size=size, slide=size)
        if kind == "hopping" and len(words) == 4 and words[2].lower() == "every":
            size = parse_duration(words[1], what)
            slide = parse_duration(words[3], what)
            if slide > size or size % slide:
                raise ConfigError(
                    f"{what}: {text!r}: the hop ({words[3]}) must divide the window size "
                    f"({words[1]}), e.g. hopping 5m every 1m"
                )
            return cls("hopping", size=size, slide=slide)
        if kind == "session" and len(words) == 2:
            return cls("session", gap=parse_duration(words[1], what))
        raise ConfigError(
            f"{what}: {text!r} is not a window; write 'tumbling 1m', 'hopping 5m every 1m' or "
            "'session 30m'"
        )

    @property
    def is_session(self) -> bool:
        return self.kind == "session"

    def last_end(self, ts: int) -> int:
        """End of the last (latest-ending) window holding a record at ``ts`` (not for sessions)."""
        return ts - ts % self.slide + self.size

    def starts(self, ts: int) -> range:
        """Starts of every window holding a record at ``ts`` (not for sessions)."""
        last = ts - ts % self.slide
        return range(last - self.size + self.slide, last + 1, self.slide)
