"""One typed, frozen configuration, read once at start-up from a TOML file and the environment.

Where it comes from, later wins: built-in defaults, ``$LOGLAKE_HOME/loglake.toml`` (or the file named by
``--config`` / ``$LOGLAKE_CONFIG``), then ``LOGLAKE_HOME``. Unknown keys are errors that name the key and
the valid ones. Components receive the objects defined here and never read ``os.environ`` themselves.
The reference for every key is ``docs/config.md``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loglake.errors import ConfigError

PARTITIONS = ("hour", "day", "month", "none")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Stream names are folder names (streams/NAME) and Kinesis names: letters, digits, '_', '-', '.',
# but never only dots ("." and ".." would name the streams folder or the data home itself).
STREAM_NAME = re.compile(r"(?!\.+\Z)[a-zA-Z0-9_.-]{1,128}")
STREAM_NAME_RULE = "1-128 letters, digits, '_', '-' or '.' (not only dots)"
# Query names also name their results table (analytics.NAME), so no dots at all.
QUERY_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
TABLE_NAME = re.compile(r"[a-zA-Z0-9_-]+\.[a-zA-Z0-9_-]+")
MAX_BUFFER_SECONDS = 3600.0
MIN_LOG_BYTES = 1 << 16


@dataclass(frozen=True)
class CatalogConfig:
    """Where the Iceberg catalog lives. Embedded default: SQLite file + local warehouse under home.

    ``type`` and ``properties`` are handed to pyiceberg's ``load_catalog`` unchanged, so any catalog
    pyiceberg supports (``sql`` on PostgreSQL, ``rest``, ``glue``...) works.
    """

    name: str = "loglake"
    type: str = "sql"
    uri: str = ""  # "" = sqlite:///<home>/catalog.db
    warehouse: str = ""  # "" = file://<home>/warehouse
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class S3Config:
    """Access to S3 or an S3-compatible store, for batch sources (and an S3 warehouse).

    Empty values fall back to the usual AWS chain (``AWS_ACCESS_KEY_ID``, ``~/.aws``...), read by the
    S3 client itself; ``endpoint_url`` also defaults to ``$AWS_ENDPOINT_URL`` when set.
    """

    endpoint_url: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""


@dataclass(frozen=True)
class TableConfig:
    """Per-table settings: the partition granularity on event time (``hour``, ``day``, ``month``)."""

    partition: str = "day"


@dataclass(frozen=True)
class IngestConfig:
    """Batch ingest tuning: bytes read per chunk, and rows buffered before Parquet files are written."""

    chunk_bytes: int = 8 << 20
    flush_rows: int = 250_000
    json_ts_field: str = "ts"
    syslog_timezone: str = "UTC"


@dataclass(frozen=True)
class QueryConfig:
    """Limits applied to every user query (and every window of a continuous query).

    ``memory_limit`` bounds the process the query runs in, not only DuckDB's buffers; results stop
    at ``max_rows`` rows or ``max_result_bytes`` bytes, whichever comes first.
    """

    timeout_s: float = 60.0
    max_rows: int = 1_000_000
    max_result_bytes: int = 256 << 20
    memory_limit: str = "4GB"


@dataclass(frozen=True)
class ServerConfig:
    """``loglake serve``: where it listens, its request limits and how it logs.

    Without any credential (``[auth]``) it only binds to loopback addresses.

    ``log_format`` (``json`` or ``text``) and ``log_level`` shape its stderr events.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 << 20  # of a request body, after gzip decompression (413 beyond)
    max_records_per_request: int = 100_000  # lines of one request (413 beyond)
    max_header_bytes: int = 64 << 10  # request line and headers of one request (431 beyond)
    header_timeout_s: float = 20.0  # the request line and headers must arrive within this (408)
    body_timeout_s: float = 60.0  # a request body must arrive within this (408)
    max_streams: int = 64  # streams of the server; creating one more is refused (409)
    log_format: str = "json"
    log_level: str = "info"


@dataclass(frozen=True)
class StreamConfig:
    """One named stream: its format, target table and Firehose-like buffering hints.

    Records are delivered to the lake when ``buffer_seconds`` have passed since the last commit or
    ``buffer_records`` are waiting, whichever comes first.
    """

    format: str = "auto"
    table: str = ""  # "" = the format's default table (auto: logs.<stream name>)
    buffer_seconds: float = 1.0
    buffer_records: int = 250_000
    max_log_bytes: int = 4 << 30  # disk budget of the stream's durable log (503 beyond)
    ready_queries: bool = False  # access logs: run the ready-made continuous queries on it


@dataclass(frozen=True)
class AuthConfig:
    """API keys. Empty: no authentication, and the server binds to loopback only.

    ``api_keys``: bearer tokens accepted by the native API. ``aws_credentials``: access key id ->
    secret access key pairs against which SigV4 signatures of the AWS-compatible API are verified.
    """

    api_keys: tuple[str, ...] = ()
    aws_credentials: Mapping[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys or self.aws_credentials)


@dataclass(frozen=True)
class SyslogConfig:
    """Syslog receivers of ``loglake serve`` (RFC 3164 and 5424); "" turns a listener off.

    Syslog has no authentication: a listener beyond loopback needs ``[auth]`` credentials (see
    :func:`check_syslog_exposure`). A TCP connection silent for ``idle_timeout_seconds`` is closed
    (0: never); at ``max_connections`` the longest-idle connection makes room for a new one.
    """

    udp: str = "127.0.0.1:5514"
    tcp: str = "127.0.0.1:5514"
    stream: str = "syslog"
    max_message_bytes: int = 64 << 10
    max_connections: int = 1024
    idle_timeout_seconds: float = 300.0


def parse_address(value: str, key: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[ipv6]:port`` (e.g. ``"[::1]:5514"``) into ``(host, port)``.

    ``key`` names the setting in messages. An empty host means every IPv4 interface (``0.0.0.0``).
    Raises :class:`ConfigError` when the port is missing or not in 0-65535, or an IPv6 address is
    written without brackets.
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(
                f"{key} = {value!r}: write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:5514"
            )
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{key} = {value!r}: missing port; use HOST:PORT, e.g. 0.0.0.0:5514")
        if ":" in host:
            raise ConfigError(
                f"{key} = {value!r}: write an IPv6 address in brackets, e.g. [{host}]:{port}"
            )
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key} = {value!r}: the port must be a number from 0 to 65535")
    return host or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address; a name is not."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name may resolve to anything
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


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
    """One file-tail source of ``loglake serve``: files or globs followed like a log shipper."""

    paths: tuple[str, ...] = ()
    stream: str = ""
    start_at: str = "beginning"  # beginning | end (for files seen for the first time)
    poll_seconds: float = 0.25


@dataclass(frozen=True)
class ContinuousQueryConfig:
    """One continuous query of ``loglake serve`` (``[queries.NAME]``); see docs/analytics.md.

    Durations are strings such as ``"5s"`` or ``"1m"``; they and ``window`` are checked once, at load.
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


DEFAULT_TABLES: Mapping[str, TableConfig] = {
    "logs.access": TableConfig(partition="hour"),
    "logs.syslog": TableConfig(partition="day"),
    "logs.json": TableConfig(partition="day"),
    "logs.rejected": TableConfig(partition="day"),
}


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration. Build it with :func:`load_config`."""

    home: Path
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    s3: S3Config = field(default_factory=S3Config)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    tables: Mapping[str, TableConfig] = field(default_factory=lambda: dict(DEFAULT_TABLES))
    # name -> Apache LogFormat / nginx log_format string
    formats: Mapping[str, str] = field(default_factory=dict)
    server: ServerConfig = field(default_factory=ServerConfig)
    streams: Mapping[str, StreamConfig] = field(default_factory=dict)
    syslog: SyslogConfig = field(default_factory=SyslogConfig)
    tail: Mapping[str, TailConfig] = field(default_factory=dict)
    auth: AuthConfig = field(default_factory=AuthConfig)
    queries: Mapping[str, ContinuousQueryConfig] = field(default_factory=dict)
    alerts: Mapping[str, AlertConfig] = field(default_factory=dict)

    @property
    def catalog_uri(self) -> str:
        return self.catalog.uri or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def warehouse(self) -> str:
        return self.catalog.warehouse or (self.home / "warehouse").resolve().as_uri()

    @property
    def state_dir(self) -> Path:
        """Local bookkeeping (ingest ledger, query plan cache); never the source of truth."""
        return self.home / "state"

    def table(self, name: str) -> TableConfig:
        return self.tables.get(name, TableConfig())


_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(text: str) -> int:
    """Bytes in a size such as ``512MB``, ``4GB`` or ``1.5GiB`` (DuckDB's units: KB = 1000 bytes).

    Raises ValueError for anything else.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = (match.group(2).lower() or "b") if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size like 512MB or 4GB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def continuous_query(name: str, settings: Mapping[str, Any]) -> ContinuousQueryConfig:
    """``[queries.NAME]`` from TOML or JSON settings (lists become tuples); ConfigError if bad."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"[queries.{name}] must be a table, got {type(settings).__name__}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    built: ContinuousQueryConfig = _build(ContinuousQueryConfig, f"queries.{name}", fixed)
    return built


def _build(cls: type[Any], section: str, raw: Any) -> Any:
    """Build dataclass ``cls`` from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key {section}.{key}; valid keys in [{section}]: {valid}")
        default = getattr(cls(), key) if key != "home" else None
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{section}.{key} must be a table")
            value = {str(k): str(v) for k, v in value.items()}
        elif isinstance(value, bool) and not isinstance(default, bool):
            # bool is a subclass of int in Python; `true` is not a number in a config.
            raise ConfigError(f"{section}.{key} must be {type(default).__name__}, got {value!r}")
        elif default is not None and not isinstance(value, type(default)):
            if isinstance(default, float) and isinstance(value, int):
                value = float(value)
            else:
                raise ConfigError(
                    f"{section}.{key} must be {type(default).__name__}, got {value!r}"
                )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{key} must be a finite number, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def stream_config(name: str, settings: Mapping[str, Any]) -> StreamConfig:
    """``[streams.NAME]`` from the config file, the API or the server's saved state, checked.

    The one place a stream's settings are built: the name must be one safe folder name, values
    must have the exact type (``true`` is not a number), ``buffer_seconds`` in (0, 3600],
    ``buffer_records`` >= 1, ``max_log_bytes`` >= 65536, ``table`` NAMESPACE.NAME. Raises
    :class:`ConfigError` naming the setting. The format name is checked where formats are known.
    """
    if not STREAM_NAME.fullmatch(name):
        raise ConfigError(f"stream name {name[:200]!r}: use {STREAM_NAME_RULE}, as Kinesis does")
    where = f"streams.{name}"
    stream: StreamConfig = _build(StreamConfig, where, settings)
    if stream.table and not TABLE_NAME.fullmatch(stream.table):
        raise ConfigError(
            f"{where}.table {stream.table!r} must be NAMESPACE.NAME of letters, digits, '_', '-'"
        )
    if not 0 < stream.buffer_seconds <= MAX_BUFFER_SECONDS:
        raise ConfigError(
            f"{where}.buffer_seconds = {stream.buffer_seconds!r}; use more than 0 and at most "
            f"{MAX_BUFFER_SECONDS:g} seconds"
        )
    if stream.buffer_records < 1:
        raise ConfigError(f"{where}.buffer_records = {stream.buffer_records!r}; use 1 or more")
    if stream.max_log_bytes < MIN_LOG_BYTES:
        raise ConfigError(
            f"{where}.max_log_bytes = {stream.max_log_bytes!r}; use at least {MIN_LOG_BYTES}"
        )
    return stream


def _validate(cfg: Config) -> None:
    for name, table in cfg.tables.items():
        if table.partition not in PARTITIONS:
            raise ConfigError(
                f"tables.{name!r}.partition = {table.partition!r}; choose one of {', '.join(PARTITIONS)}"
            )
        if name.count(".") != 1:
            raise ConfigError(f"table name {name!r} must be NAMESPACE.TABLE, e.g. logs.web")
    if cfg.ingest.chunk_bytes < 1 << 16:
        raise ConfigError("ingest.chunk_bytes must be at least 65536")
    if cfg.query.max_rows < 1 or cfg.query.timeout_s <= 0 or cfg.query.max_result_bytes < 1:
        raise ConfigError(
            "query.max_rows, query.max_result_bytes and query.timeout_s must be positive"
        )
    try:
        if parse_size(cfg.query.memory_limit) < 64 << 20:
            raise ConfigError("query.memory_limit must be at least 64MB")
    except ValueError as exc:
        raise ConfigError(f"query.memory_limit: {exc}") from exc
    if cfg.server.log_format not in LOG_FORMATS:
        raise ConfigError(
            f"server.log_format = {cfg.server.log_format!r}; choose one of {', '.join(LOG_FORMATS)}"
        )
    if cfg.server.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"server.log_level = {cfg.server.log_level!r}; choose one of {', '.join(LOG_LEVELS)}"
        )
    server = cfg.server
    for key in ("max_body_bytes", "max_records_per_request", "max_header_bytes", "max_streams"):
        if getattr(server, key) < 1:
            raise ConfigError(f"server.{key} = {getattr(server, key)!r}; use 1 or more")
    if server.max_header_bytes < 1024:
        raise ConfigError("server.max_header_bytes must be at least 1024")
    if server.header_timeout_s <= 0 or server.body_timeout_s <= 0:
        raise ConfigError("server.header_timeout_s and server.body_timeout_s must be positive")
    check_syslog_exposure(cfg.syslog, cfg.auth)
    if cfg.syslog.max_message_bytes < 1 or cfg.syslog.max_connections < 1:
        raise ConfigError("syslog.max_message_bytes and syslog.max_connections must be positive")
    if cfg.syslog.idle_timeout_seconds < 0:
        raise ConfigError("syslog.idle_timeout_seconds must be 0 (never) or more")
    for name, tail in cfg.tail.items():
        if not tail.paths:
            raise ConfigError(f"tail.{name}.paths is empty: list files or globs to follow")
        if tail.start_at not in ("beginning", "end"):
            raise ConfigError(f"tail.{name}.start_at = {tail.start_at!r}; choose beginning or end")
        if not tail.stream:
            raise ConfigError(f"tail.{name}.stream is missing: name the stream its lines go to")
        if not STREAM_NAME.fullmatch(tail.stream):
            raise ConfigError(f"tail.{name}.stream {tail.stream[:200]!r}: use {STREAM_NAME_RULE}")
    if not STREAM_NAME.fullmatch(cfg.syslog.stream):
        raise ConfigError(f"syslog.stream {cfg.syslog.stream[:200]!r}: use {STREAM_NAME_RULE}")
    for name in cfg.queries:
        query_spec(cfg, name)  # raises ConfigError naming the setting that is wrong
    for name in cfg.alerts:
        alert_spec(cfg, name)


def alert_spec(cfg: Config, name: str) -> Any:
    """The checked :class:`loglake.analytics.alerts.AlertSpec` of ``[alerts.NAME]``."""
    from loglake.analytics.alerts import AlertSpec
    from loglake.analytics.windows import parse_duration

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
        cooldown=_duration_or_zero(a.cooldown, f"{where}.cooldown", parse_duration) / 1e6,
        webhook=a.webhook,
        severity=a.severity,
    )


def query_spec(cfg: Config, name: str) -> Any:
    """The checked :class:`loglake.analytics.engine.QuerySpec` of ``[queries.NAME]``."""
    from loglake.analytics.engine import QuerySpec
    from loglake.analytics.windows import WindowSpec, parse_duration

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
        from loglake.analytics.anomaly import AnomalySpec

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
        lateness=_duration_or_zero(q.lateness, f"{where}.lateness", parse_duration),
        allowed_lateness=_duration_or_zero(
            q.allowed_lateness, f"{where}.allowed_lateness", parse_duration
        ),
        idle_timeout=parse_duration(q.idle_timeout, f"{where}.idle_timeout"),
        key=q.key or None,
    )


def _duration_or_zero(text: str, what: str, parse: Any) -> int:
    return 0 if str(text).strip() in ("0", "0s") else int(parse(text, what))


def load_config(
    home: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve the configuration once: defaults, then the TOML file, then the environment.

    Raises :class:`ConfigError` for a missing ``--config`` file, invalid TOML, unknown keys or values.
    """
    env = os.environ if environ is None else environ
    home_path = Path(home or env.get("LOGLAKE_HOME") or "loglake-data").expanduser()
    explicit = config_file or env.get("LOGLAKE_CONFIG")
    path = Path(explicit) if explicit else home_path / "loglake.toml"
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    elif explicit:
        raise ConfigError(f"config file {path} does not exist; check --config / LOGLAKE_CONFIG")

    sections: dict[str, type[Any]] = {
        "catalog": CatalogConfig,
        "s3": S3Config,
        "ingest": IngestConfig,
        "query": QueryConfig,
        "server": ServerConfig,
        "syslog": SyslogConfig,
    }
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in sections:
            kwargs[key] = _build(sections[key], key, value)
        elif key == "tables":
            tables = dict(DEFAULT_TABLES)
            for name, tvalue in value.items():
                tables[name] = _build(TableConfig, f"tables.{name}", tvalue)
            kwargs["tables"] = tables
        elif key == "streams":
            if not isinstance(value, Mapping):
                raise ConfigError("[streams] maps a stream name to a table, e.g. [streams.web]")
            kwargs["streams"] = {
                name: stream_config(name, svalue) for name, svalue in value.items()
            }
        elif key == "auth":
            fixed = dict(value) if isinstance(value, Mapping) else value
            if isinstance(fixed, dict) and isinstance(fixed.get("api_keys"), list):
                fixed["api_keys"] = tuple(str(k) for k in fixed["api_keys"])
            kwargs["auth"] = _build(AuthConfig, "auth", fixed)
        elif key == "tail":
            if not isinstance(value, Mapping):
                raise ConfigError("[tail] maps a name to files to follow, e.g. [tail.nginx]")
            tails = {}
            for name, tvalue in value.items():
                if not isinstance(tvalue, Mapping):
                    raise ConfigError(f"[tail.{name}] must be a table")
                fixed = dict(tvalue)
                if isinstance(fixed.get("paths"), list):
                    fixed["paths"] = tuple(str(p) for p in fixed["paths"])
                tails[name] = _build(TailConfig, f"tail.{name}", fixed)
            kwargs["tail"] = tails
        elif key == "queries":
            if not isinstance(value, Mapping) or not all(
                isinstance(v, Mapping) for v in value.values()
            ):
                raise ConfigError(
                    "[queries] maps a query name to its settings, e.g. [queries.hits]"
                )
            kwargs["queries"] = {
                name: continuous_query(name, qvalue) for name, qvalue in value.items()
            }
        elif key == "alerts":
            if not isinstance(value, Mapping) or not all(
                isinstance(v, Mapping) for v in value.values()
            ):
                raise ConfigError("[alerts] maps an alert name to its rule, e.g. [alerts.errors]")
            kwargs["alerts"] = {
                name: _build(
                    AlertConfig,
                    f"alerts.{name}",
                    {("for_windows" if k == "for" else k): v for k, v in avalue.items()},
                )
                for name, avalue in value.items()
            }
        elif key == "formats":
            if not all(isinstance(v, str) for v in value.values()):
                raise ConfigError("[formats] maps a name to a LogFormat or log_format string")
            kwargs["formats"] = dict(value)
        elif key == "home":
            if not home and not env.get("LOGLAKE_HOME"):
                home_path = Path(str(value)).expanduser()
        else:
            valid = ", ".join(
                sorted(
                    [
                        *sections,
                        *("tables", "formats", "streams", "tail", "auth", "queries", "alerts"),
                        "home",
                    ]
                )
            )
            raise ConfigError(f"unknown section or key {key!r} in {path}; valid: {valid}")

    s3 = kwargs.get("s3", S3Config())
    if not s3.endpoint_url and env.get("AWS_ENDPOINT_URL"):
        kwargs["s3"] = dataclasses.replace(s3, endpoint_url=env["AWS_ENDPOINT_URL"])
    streams = kwargs.get("streams", {})
    if any(st.ready_queries for st in streams.values()):
        from loglake.analytics.ready import ready_queries

        queries = {}
        for name, st in streams.items():
            if st.ready_queries:
                queries.update(ready_queries(name))
        queries.update(kwargs.get("queries", {}))  # a query of the file wins over a ready one
        kwargs["queries"] = queries
    cfg = Config(home=home_path.resolve(), **kwargs)
    _validate(cfg)
    return cfg
