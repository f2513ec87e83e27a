"""Continuous queries and alerts: ``[queries.NAME]`` and ``[alerts.NAME]``, and their typed specs.

The settings (:class:`ContinuousQueryConfig`, :class:`AlertConfig`) come from the config file, the
HTTP API (``PUT /v1/queries/NAME``) or the server's saved state (``state/queries.json``), all parsed
by :func:`continuous_query` / :func:`alert_config`. :func:`query_spec` and :func:`alert_spec` turn
them into the frozen specs the analytics engine runs (:class:`QuerySpec`, :class:`AlertSpec`):
durations and windows parsed, every check done, so a bad window is refused when the config loads.

Durations are integers of microseconds (the unit of the lake's ``ts`` column), so window arithmetic
is exact. Tumbling and hopping windows are aligned to the epoch (a ``1h`` window starts on the hour,
like ``date_trunc``); a hopping window of size S every P covers ``[s, s + S)`` for every ``s`` that
is a multiple of P, so each record lies in S / P windows.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loglake.config.parse import build
from loglake.errors import ConfigError

if TYPE_CHECKING:
    from loglake.config import Config

# Query names also name their results table (analytics.NAME), so no dots at all.
QUERY_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")

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


def _duration_or_zero(text: str, what: str) -> int:
    return 0 if str(text).strip() in ("0", "0s") else parse_duration(text, what)


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
            f"{what}: {str(text)[:100]!r} is not a window; write 'tumbling 1m', "
            "'hopping 5m every 1m' or 'session 30m'"
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


@dataclass(frozen=True)
class AnomalySpec:
    """Which result column to watch for anomalies and how strict to be."""

    column: str
    by: tuple[str, ...] = ()  # result columns that tell series apart (e.g. status)
    threshold: float = 4.0
    history: int = 60
    min_history: int = 10


@dataclass(frozen=True)
class QuerySpec:
    """What a continuous query computes. Durations are microseconds.

    Raises :class:`ConfigError` when built with a key on a non-session window or negative
    durations.
    """

    name: str
    sql: str
    window: WindowSpec
    lateness: int = 5_000_000
    allowed_lateness: int = 60_000_000
    idle_timeout: int = 10_000_000
    key: str | None = None  # session windows: one session per value of this column
    anomaly: AnomalySpec | None = None  # score a numeric result column (anomaly_score, is_anomaly)

    def __post_init__(self) -> None:
        if self.key and not self.window.is_session:
            raise ConfigError(
                f"queries.{self.name}: key is for session windows; tumbling and hopping windows "
                "group with GROUP BY in the SQL"
            )
        if self.lateness < 0 or self.allowed_lateness < 0 or self.idle_timeout <= 0:
            raise ConfigError(
                f"queries.{self.name}: lateness and allowed_lateness must be >= 0, idle_timeout > 0"
            )


@dataclass(frozen=True)
class AlertSpec:
    """One alert rule. ``cooldown`` is in seconds. Raises :class:`ConfigError` when out of range."""

    name: str
    query: str
    when: str
    for_windows: int = 1
    cooldown: float = 300.0
    webhook: str = ""
    severity: str = "warning"

    def __post_init__(self) -> None:
        if self.for_windows < 1 or self.cooldown < 0:
            raise ConfigError(f"alerts.{self.name}: for must be >= 1 and cooldown >= 0")
        if self.webhook:
            check_webhook(self.webhook, f"alerts.{self.name}.webhook")


def check_webhook(url: str, key: str) -> None:
    """Raise :class:`ConfigError` unless ``url`` is an ``http(s)://HOST[:PORT]/...`` URL."""
    example = "e.g. https://hooks.example.com/loglake"
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{key} = {url!r} must be an http(s):// URL, {example}")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ConfigError(f"{key} = {url!r} contains spaces or control characters; %-encode them")
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018  (parsing it is the check)
    except ValueError as exc:
        raise ConfigError(f"{key} = {url!r}: the port must be a number from 0 to 65535") from exc
    if not parts.hostname:
        raise ConfigError(f"{key} = {url!r} has no host, {example}")


@dataclass(frozen=True)
class ContinuousQueryConfig:
    """One continuous query of ``loglake serve`` (``[queries.NAME]``); see docs/analytics.md.

    Durations are strings such as ``"5s"`` or ``"1m"``; they and ``window`` are checked once, at load
    (:func:`query_spec`).
    """

    stream: str = ""
    window: str = ""  # "tumbling 1m" | "hopping 5m every 1m" | "session 30m"
    sql: str = ""  # DuckDB SQL over the relation `stream` (one window's records)
    key: str = ""  # session windows: one session per value of this column ("" = one for all)
    lateness: str = "5s"  # watermark = highest ts seen minus this
    allowed_lateness: str = "1m"  # emitted windows accept late records (corrections) this long
    idle_timeout: str = "10s"  # an idle stream's watermark follows the clock after this long
    table: str = ""  # "" = analytics.<name>
    anomaly_column: str = ""  # a numeric result column to score for anomalies ("" = none)
    anomaly_by: tuple[str, ...] = ()  # result columns that tell series apart
    anomaly_threshold: float = 4.0  # |robust z-score| at or above this is an anomaly
    anomaly_history: int = 60  # windows of history per series
    prometheus: bool = False  # export the latest window's numeric results on /metrics
    prometheus_labels: tuple[str, ...] = ()  # result columns that become labels ("": text ones)


@dataclass(frozen=True)
class AlertConfig:
    """One alert rule over a continuous query's results (``[alerts.NAME]``); see docs/analytics.md.

    In the file, ``for`` sets ``for_windows`` (``for`` is a Python keyword).
    """

    query: str = ""
    when: str = ""  # SQL boolean over one result row, e.g. "status >= 500 AND hits > 100"
    for_windows: int = 1  # consecutive matching windows before it fires
    cooldown: str = "5m"  # no new firing notification this soon after the previous one
    webhook: str = ""  # http(s) URL that gets a JSON POST per notification ("" = log only)
    severity: str = "warning"


def continuous_query(name: str, settings: Mapping[str, Any]) -> ContinuousQueryConfig:
    """``[queries.NAME]`` from the config file, the API or saved state; ConfigError naming the key.

    Only the settings' keys and types are checked here; :func:`query_spec` checks the values.
    """
    return build(ContinuousQueryConfig, f"queries.{name}", settings)


def alert_config(name: str, settings: Mapping[str, Any]) -> AlertConfig:
    """``[alerts.NAME]`` from the config file (``for`` sets ``for_windows``); ConfigError if bad."""
    where = f"alerts.{name}"
    if isinstance(settings, Mapping):
        if "for_windows" in settings:
            raise ConfigError(f"unknown key {where}.for_windows; write `for` in the file")
        settings = {("for_windows" if k == "for" else k): v for k, v in settings.items()}
    return build(AlertConfig, where, settings)


def query_spec(cfg: Config, name: str) -> QuerySpec:
    """The checked :class:`QuerySpec` of ``[queries.NAME]`` of ``cfg``; ConfigError naming the key."""
    q = cfg.queries[name]
    where = f"queries.{name}"
    if not QUERY_NAME.fullmatch(name):
        raise ConfigError(f"{where}: query names are letters, digits, '_' and '-' (up to 128)")
    if not q.stream:
        raise ConfigError(f"{where}.stream is missing: name the stream the query reads")
    if not q.sql.strip():
        raise ConfigError(f"{where}.sql is missing: a SELECT over the relation `stream`")
    if q.table and q.table.count(".") != 1:
        raise ConfigError(f"{where}.table {q.table!r} must be NAMESPACE.NAME")
    anomaly = None
    if q.anomaly_column:
        if q.anomaly_threshold <= 0 or q.anomaly_history < 3:
            raise ConfigError(f"{where}: anomaly_threshold must be > 0 and anomaly_history >= 3")
        anomaly = AnomalySpec(
            column=q.anomaly_column,
            by=tuple(q.anomaly_by),
            threshold=q.anomaly_threshold,
            history=q.anomaly_history,
            min_history=min(10, q.anomaly_history),
        )
    return QuerySpec(
        name=name,
        anomaly=anomaly,
        sql=q.sql,
        window=WindowSpec.parse(q.window, f"{where}.window"),
        lateness=_duration_or_zero(q.lateness, f"{where}.lateness"),
        allowed_lateness=_duration_or_zero(q.allowed_lateness, f"{where}.allowed_lateness"),
        idle_timeout=parse_duration(q.idle_timeout, f"{where}.idle_timeout"),
        key=q.key or None,
    )


def alert_spec(cfg: Config, name: str) -> AlertSpec:
    """The checked :class:`AlertSpec` of ``[alerts.NAME]`` of ``cfg``; ConfigError naming the key."""
    a = cfg.alerts[name]
    where = f"alerts.{name}"
    if a.query not in cfg.queries:
        known = ", ".join(sorted(cfg.queries)) or "none"
        raise ConfigError(f"{where}.query {a.query!r} is not a [queries.NAME] (queries: {known})")
    if not a.when.strip():
        raise ConfigError(f"{where}.when is missing: a SQL condition over a result row")
    return AlertSpec(
        name=name,
        query=a.query,
        when=a.when,
        for_windows=a.for_windows,
        cooldown=_duration_or_zero(a.cooldown, f"{where}.cooldown") / 1e6,
        webhook=a.webhook,
        severity=a.severity,
    )
