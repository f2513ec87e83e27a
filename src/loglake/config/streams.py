"""Streams and the live sources that feed them: ``[streams.NAME]``, ``[syslog]``, ``[tail.NAME]``.

A stream's settings come from three places, all parsed by :func:`stream_config`: the config file
(every key), the HTTP API (``PUT /v1/streams/NAME``: the keys of :data:`API_STREAM_SETTINGS`) and
the server's saved state (``state/streams.json``: what the API created, written by
:func:`saved_stream_settings`). Each object checks its own ranges when built, so a source receives
a config it can trust.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from loglake.config.parse import SettingError, build, is_loopback, parse_address
from loglake.errors import ConfigError

if TYPE_CHECKING:
    from loglake.config import AuthConfig

# Stream names are folder names (streams/NAME) and Kinesis names: letters, digits, '_', '-', '.',
# but never only dots ("." and ".." would name the streams folder or the data home itself).
STREAM_NAME = re.compile(r"(?!\.+\Z)[a-zA-Z0-9_.-]{1,128}")
STREAM_NAME_RULE = "1-128 letters, digits, '_', '-' or '.' (not only dots)"
TABLE_NAME = re.compile(r"[a-zA-Z0-9_-]+\.[a-zA-Z0-9_-]+")
MAX_BUFFER_SECONDS = 3600.0
MIN_LOG_BYTES = 1 << 16
#: The stream settings the HTTP API (and so the saved state) may set; the others (ready_queries)
#: are the config file's.
API_STREAM_SETTINGS = ("format", "table", "buffer_seconds", "buffer_records", "max_log_bytes")

Origin = Literal["file", "api", "state"]
STREAM_BACKENDS = ("local", "nats")


@dataclass(frozen=True)
class StreamBackendConfig:
    """``[stream]``: where the durable logs of the streams live.

    ``local`` (the default): a log folder per stream under ``$LOGLAKE_HOME/streams``, owned by one
    process. ``nats``: a JetStream stream per stream on the NATS servers of ``servers`` (any node
    of a cluster), shared by every loglake node of the config; ``replicas`` copies of each (3 in a
    3-node JetStream cluster), ``duplicate_window_seconds`` in which a publish retried with the
    same ``Nats-Msg-Id`` is stored once. Credentials: a ``creds_file`` (NATS decentralised auth), a
    ``user`` and ``password``, or a ``token``. Raises :class:`SettingError` for values out of range.
    """

    backend: str = "local"
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    creds_file: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    replicas: int = 1
    duplicate_window_seconds: float = 120.0
    prefix: str = "loglake"  # JetStream stream PREFIX_NAME, subject PREFIX.NAME

    def __post_init__(self) -> None:
        if self.backend not in STREAM_BACKENDS:
            raise SettingError(
                "stream", "backend", f" = {self.backend!r}; choose {' or '.join(STREAM_BACKENDS)}"
            )
        if not self.servers:
            raise SettingError("stream", "servers", " is empty; name at least one NATS URL")
        if not 1 <= self.replicas <= 5:
            raise SettingError("stream", "replicas", f" = {self.replicas}; JetStream allows 1-5")
        if not 0 < self.duplicate_window_seconds <= 86400:
            raise SettingError(
                "stream",
                "duplicate_window_seconds",
                f" = {self.duplicate_window_seconds}; choose 0 < seconds <= 86400",
            )
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,32}", self.prefix):
            raise SettingError(
                "stream", "prefix", f" = {self.prefix!r}; use 1-32 letters, digits, '_' or '-'"
            )


@dataclass(frozen=True)
class StreamConfig:
    """One named stream: its format, target table and Firehose-like buffering hints.

    Records are delivered to the lake when ``buffer_seconds`` have passed since the last commit or
    ``buffer_records`` are waiting, whichever comes first. Raises :class:`SettingError` when built
    with a value out of range.
    """

    format: str = "auto"
    table: str = ""  # "" = the format's default table (auto: logs.<stream name>)
    buffer_seconds: float = 1.0
    buffer_records: int = 250_000
    max_log_bytes: int = 4 << 30  # disk budget of the stream's durable log (503 beyond)
    ready_queries: bool = False  # access logs: run the ready-made continuous queries on it

    def __post_init__(self) -> None:
        where = "streams.NAME"
        if self.table and not TABLE_NAME.fullmatch(self.table):
            raise SettingError(
                where,
                "table",
                f" {self.table[:200]!r} must be NAMESPACE.NAME of letters, digits, '_', '-'",
            )
        if not 0 < self.buffer_seconds <= MAX_BUFFER_SECONDS:
            raise SettingError(
                where,
                "buffer_seconds",
                f" = {self.buffer_seconds!r}; use more than 0 and at most "
                f"{MAX_BUFFER_SECONDS:g} seconds",
            )
        if self.buffer_records < 1:
            raise SettingError(
                where, "buffer_records", f" = {self.buffer_records!r}; use 1 or more"
            )
        if self.max_log_bytes < MIN_LOG_BYTES:
            raise SettingError(
                where, "max_log_bytes", f" = {self.max_log_bytes!r}; use at least {MIN_LOG_BYTES}"
            )


def stream_config(name: str, settings: Mapping[str, Any], origin: Origin = "file") -> StreamConfig:
    """``[streams.NAME]`` from the config file, the API or the server's saved state, checked.

    The one place a stream's settings are parsed: the name must be one safe folder name, values
    must have the exact type (``true`` is not a number), ``buffer_seconds`` in (0, 3600],
    ``buffer_records`` >= 1, ``max_log_bytes`` >= 65536, ``table`` NAMESPACE.NAME. ``origin``
    ``"api"`` and ``"state"`` accept only :data:`API_STREAM_SETTINGS` (state also the
    ``ready_queries = false`` that earlier versions saved). Raises :class:`ConfigError` naming the
    setting. The format name is checked where formats are known (the server).
    """
    if not STREAM_NAME.fullmatch(name):
        raise ConfigError(f"stream name {name[:200]!r}: use {STREAM_NAME_RULE}, as Kinesis does")
    where = f"streams.{name}"
    if origin == "file":
        return build(StreamConfig, where, settings)
    if (
        origin == "state"
        and isinstance(settings, Mapping)
        and settings.get("ready_queries") is False
    ):
        settings = {k: v for k, v in settings.items() if k != "ready_queries"}
    if isinstance(settings, Mapping) and "ready_queries" in settings:
        raise ConfigError(
            f"{where}.ready_queries cannot be set through the API: ready_queries is set in the "
            f"config file ([streams.{name}]); the API sets {', '.join(API_STREAM_SETTINGS)}"
        )
    return build(StreamConfig, where, settings, keys=API_STREAM_SETTINGS)


def saved_stream_settings(stream: StreamConfig) -> dict[str, Any]:
    """What the server saves of a stream created through the API (read back by
    ``stream_config(name, settings, "state")``)."""
    return {key: getattr(stream, key) for key in API_STREAM_SETTINGS}


@dataclass(frozen=True)
class SyslogConfig:
    """Syslog receivers of ``loglake serve`` (RFC 3164 and 5424); "" turns a listener off.

    Syslog has no authentication: a listener beyond loopback needs ``[auth]`` credentials (see
    :func:`check_syslog_exposure`). A TCP connection silent for ``idle_timeout_seconds`` is closed
    (0: never); at ``max_connections`` the longest-idle connection makes room for a new one.
    Raises :class:`ConfigError` when built with an invalid address or a value out of range.
    """

    udp: str = "127.0.0.1:5514"
    tcp: str = "127.0.0.1:5514"
    stream: str = "syslog"
    max_message_bytes: int = 64 << 10
    max_connections: int = 1024
    idle_timeout_seconds: float = 300.0

    def __post_init__(self) -> None:
        for kind in ("udp", "tcp"):
            if getattr(self, kind).strip():
                parse_address(getattr(self, kind), f"syslog.{kind}")
        if not STREAM_NAME.fullmatch(self.stream):
            raise SettingError(
                "syslog", "stream", f" {self.stream[:200]!r}: use {STREAM_NAME_RULE}"
            )
        for key in ("max_message_bytes", "max_connections"):
            if getattr(self, key) < 1:
                raise SettingError("syslog", key, f" must be positive, got {getattr(self, key)!r}")
        if self.idle_timeout_seconds < 0:
            raise SettingError(
                "syslog",
                "idle_timeout_seconds",
                f" must be 0 (never) or more, got {self.idle_timeout_seconds!r}",
            )


def check_syslog_exposure(syslog: SyslogConfig, auth: AuthConfig) -> None:
    """Refuse a syslog listener beyond loopback unless ``[auth]`` has credentials.

    The server's rule (no credentials: loopback only) applied to syslog, which has no
    authentication of its own: anyone who reaches its port can write to its stream. Raises
    :class:`ConfigError` for an invalid or exposed address.
    """
    for kind in ("udp", "tcp"):
        value = getattr(syslog, kind)
        if not value.strip():
            continue
        host, _ = parse_address(value, f"syslog.{kind}")
        if not auth.enabled and not is_loopback(host):
            raise ConfigError(
                f"refusing to listen for syslog on {value!r} (syslog.{kind}): it is not a loopback "
                "address and no [auth] credentials are configured, so loglake listens on loopback "
                f'only. Either bind syslog to loopback (syslog.{kind} = "127.0.0.1:5514") and '
                "relay from other machines through rsyslog or syslog-ng, or configure [auth] "
                "api_keys; syslog itself stays unauthenticated then (anyone who reaches the port "
                "can write to the stream), so allow only trusted senders with a firewall or a "
                "private network"
            )


@dataclass(frozen=True)
class TailConfig:
    """One file-tail source of ``loglake serve``: files or globs followed like a log shipper.

    Raises :class:`ConfigError` when built without paths or stream, or with a value out of range.
    """

    paths: tuple[str, ...] = ()
    stream: str = ""
    start_at: str = "beginning"  # beginning | end (for files seen for the first time)
    poll_seconds: float = 0.25

    def __post_init__(self) -> None:
        where = "tail.NAME"
        if not self.paths:
            raise SettingError(where, "paths", " is empty: list files or globs to follow")
        if not self.stream:
            raise SettingError(where, "stream", " is missing: name the stream its lines go to")
        if not STREAM_NAME.fullmatch(self.stream):
            raise SettingError(where, "stream", f" {self.stream[:200]!r}: use {STREAM_NAME_RULE}")
        if self.start_at not in ("beginning", "end"):
            raise SettingError(where, "start_at", f" = {self.start_at!r}; choose beginning or end")
        if not self.poll_seconds > 0:
            raise SettingError(
                where, "poll_seconds", f" = {self.poll_seconds!r}; use more than 0 seconds"
            )
