"""One typed, frozen configuration, read once at start-up from a TOML file and the environment.

Where it comes from, later wins: built-in defaults, ``$LOGLAKE_HOME/loglake.toml`` (or the file named by
``--config`` / ``$LOGLAKE_CONFIG``), then ``LOGLAKE_HOME``. Every section and key goes through one
strict parser (:mod:`loglake.config.parse`), the same one that parses the HTTP API's settings and the
server's saved state: unknown keys are errors that name the key and the valid ones, wrong types name
the key, the type and what was given. Components receive the objects defined here and never read
``os.environ`` themselves. The reference for every key is ``docs/config.md``.

The package: :mod:`~loglake.config.parse` (the parser), :mod:`~loglake.config.streams` (streams and the
live sources feeding them), :mod:`~loglake.config.queries` (continuous queries, alerts and the specs the
analytics engine runs), :mod:`~loglake.config.ready` (the ready-made queries of access-log streams),
:mod:`~loglake.config.dashboards` (the console's Live dashboards), :mod:`~loglake.config.jobs`
(ETL jobs), :mod:`~loglake.config.crawl` (the crawler and its scheduled crawls).
It imports nothing from the layers above it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loglake.config.crawl import CrawlConfig, ScheduledCrawlConfig, crawls_section
from loglake.config.dashboards import DashboardConfig, PanelConfig, dashboards_section
from loglake.config.jobs import JobConfig, Schedule, jobs_section
from loglake.config.parse import (
    SettingError,
    build,
    is_loopback,
    parse_address,
    parse_size,
    read_saved,
    shown,
    tables_of,
    value_of,
)
from loglake.config.queries import (
    QUERY_NAME,
    AlertConfig,
    AlertSpec,
    AnomalySpec,
    ContinuousQueryConfig,
    QuerySpec,
    WindowSpec,
    alert_config,
    alert_spec,
    continuous_query,
    parse_duration,
    query_spec,
)
from loglake.config.ready import ready_queries
from loglake.config.streams import (
    API_STREAM_SETTINGS,
    MAX_BUFFER_SECONDS,
    MIN_LOG_BYTES,
    STREAM_NAME,
    STREAM_NAME_RULE,
    TABLE_NAME,
    Origin,
    StreamBackendConfig,
    StreamConfig,
    SyslogConfig,
    TailConfig,
    check_syslog_exposure,
    saved_stream_settings,
    stream_config,
)
from loglake.errors import ConfigError

__all__ = [
    "API_STREAM_SETTINGS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_BUFFER_SECONDS",
    "MIN_LOG_BYTES",
    "PARTITIONS",
    "QUERY_NAME",
    "STREAM_NAME",
    "STREAM_NAME_RULE",
    "TABLE_NAME",
    "AlertConfig",
    "AlertSpec",
    "AnomalySpec",
    "AuthConfig",
    "CatalogConfig",
    "Config",
    "ContinuousQueryConfig",
    "DashboardConfig",
    "IngestConfig",
    "JobConfig",
    "MaintenanceConfig",
    "Origin",
    "PanelConfig",
    "QueryConfig",
    "QuerySpec",
    "S3Config",
    "Schedule",
    "ScheduledCrawlConfig",
    "ServerConfig",
    "StreamBackendConfig",
    "StreamConfig",
    "SyslogConfig",
    "TableConfig",
    "TailConfig",
    "WindowSpec",
    "alert_config",
    "alert_spec",
    "check_syslog_exposure",
    "continuous_query",
    "is_loopback",
    "load_config",
    "parse_address",
    "parse_duration",
    "parse_size",
    "query_spec",
    "read_saved",
    "saved_stream_settings",
    "stream_config",
]

PARTITIONS = ("hour", "day", "month", "none")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")


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
    """Per-table settings: the partition granularity on event time (``hour``, ``day``, ``month``),
    and ``retention_days``: data older than that many days is dropped by maintenance (``-1``, the
    default, uses ``maintenance.retention_days``; ``0`` keeps everything)."""

    partition: str = "day"
    retention_days: int = -1

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise SettingError(
                "tables.NAME",
                "partition",
                f" = {self.partition!r}; choose one of {', '.join(PARTITIONS)}",
            )
        if self.retention_days < -1:
            raise SettingError(
                "tables.NAME",
                "retention_days",
                f" = {self.retention_days!r}; use a number of days, 0 to keep everything, "
                "or -1 for maintenance.retention_days",
            )


@dataclass(frozen=True)
class MaintenanceConfig:
    """Table maintenance (``loglake maintain`` and the server's schedule; lake/maintenance.py).

    ``target_file_mb``: compaction merges a partition's smaller files into files of about this size.
    ``interval_s``: how often the server maintains every table of the catalog (0: never; streamed
    tables still get their own small-file compaction). ``grace_s``: a snapshot replaced less than
    this long ago, and an unreferenced file younger than this, are kept, so queries planned on an
    older snapshot keep reading its files. ``keep_snapshots``: snapshots kept in any case.
    ``retention_days``: default retention of every table (0: keep everything).
    """

    target_file_mb: int = 64
    interval_s: float = 3600.0
    grace_s: float = 600.0
    keep_snapshots: int = 10
    retention_days: int = 0

    def __post_init__(self) -> None:
        for key in ("target_file_mb", "keep_snapshots"):
            if getattr(self, key) < 1:
                raise SettingError("maintenance", key, f" = {getattr(self, key)!r}; use 1 or more")
        for key in ("interval_s", "grace_s", "retention_days"):
            if getattr(self, key) < 0:
                raise SettingError("maintenance", key, f" = {getattr(self, key)!r}; use 0 or more")


@dataclass(frozen=True)
class IngestConfig:
    """Batch ingest tuning: bytes read per chunk, and rows buffered before Parquet files are written."""

    chunk_bytes: int = 8 << 20
    flush_rows: int = 250_000
    json_ts_field: str = "ts"
    syslog_timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.chunk_bytes < 1 << 16:
            raise SettingError("ingest", "chunk_bytes", " must be at least 65536")
        if self.flush_rows < 1:
            raise SettingError("ingest", "flush_rows", f" = {self.flush_rows!r}; use 1 or more")


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

    def __post_init__(self) -> None:
        for key in ("max_rows", "max_result_bytes", "timeout_s"):
            if getattr(self, key) <= 0:
                raise SettingError("query", key, f" must be positive, got {getattr(self, key)!r}")
        try:
            memory = parse_size(self.memory_limit)
        except ValueError as exc:
            raise SettingError("query", "memory_limit", f": {exc}") from exc
        if memory < 64 << 20:
            raise SettingError("query", "memory_limit", " must be at least 64MB")


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

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingError("server", "port", f" = {self.port!r}; use 0 to 65535")
        for key in ("max_body_bytes", "max_records_per_request", "max_header_bytes", "max_streams"):
            if getattr(self, key) < 1:
                raise SettingError("server", key, f" = {getattr(self, key)!r}; use 1 or more")
        if self.max_header_bytes < 1024:
            raise SettingError("server", "max_header_bytes", " must be at least 1024")
        for key in ("header_timeout_s", "body_timeout_s"):
            if getattr(self, key) <= 0:
                raise SettingError("server", key, f" must be positive, got {getattr(self, key)!r}")
        if self.log_format not in LOG_FORMATS:
            raise SettingError(
                "server",
                "log_format",
                f" = {self.log_format!r}; choose one of {', '.join(LOG_FORMATS)}",
            )
        if self.log_level not in LOG_LEVELS:
            raise SettingError(
                "server",
                "log_level",
                f" = {self.log_level!r}; choose one of {', '.join(LOG_LEVELS)}",
            )


@dataclass(frozen=True)
class ConsoleConfig:
    """The web console of ``loglake serve`` (``/console``).

    ``enabled``: serve the console's pages and APIs. ``query_workers``: sandboxed DuckDB processes
    that answer the console's SQL, one query at a time each (more let more people query at once, at
    ``query.memory_limit`` each). ``max_rows``: rows of one result shown in the page (a notebook
    paragraph, a SQL answer); the page says when a result was cut; downloads are not cut by it.
    ``queue_timeout_s``: how long a console query waits for a free worker before the answer is 503
    with Retry-After.
    """

    enabled: bool = True
    query_workers: int = 2
    max_rows: int = 100_000
    queue_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for key in ("query_workers", "max_rows"):
            if getattr(self, key) < 1:
                raise SettingError("console", key, f" = {getattr(self, key)!r}; use 1 or more")
        if self.query_workers > 32:
            raise SettingError(
                "console", "query_workers", f" = {self.query_workers!r}; use 32 or fewer"
            )
        if self.queue_timeout_s <= 0:
            raise SettingError(
                "console", "queue_timeout_s", f" must be positive, got {self.queue_timeout_s!r}"
            )


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
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    tables: Mapping[str, TableConfig] = field(default_factory=lambda: dict(DEFAULT_TABLES))
    # name -> Apache LogFormat / nginx log_format string
    formats: Mapping[str, str] = field(default_factory=dict)
    server: ServerConfig = field(default_factory=ServerConfig)
    streams: Mapping[str, StreamConfig] = field(default_factory=dict)
    stream: StreamBackendConfig = field(default_factory=StreamBackendConfig)  # local or NATS
    syslog: SyslogConfig = field(default_factory=SyslogConfig)
    tail: Mapping[str, TailConfig] = field(default_factory=dict)
    auth: AuthConfig = field(default_factory=AuthConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    queries: Mapping[str, ContinuousQueryConfig] = field(default_factory=dict)
    alerts: Mapping[str, AlertConfig] = field(default_factory=dict)
    dashboards: Mapping[str, DashboardConfig] = field(default_factory=dict)  # the Live page's
    jobs: Mapping[str, JobConfig] = field(default_factory=dict)  # ETL jobs (analytics/jobs.py)
    # crawls loglake serve runs on a schedule (crawl_schedule.py)
    crawls: Mapping[str, ScheduledCrawlConfig] = field(default_factory=dict)

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

    def retention_days(self, name: str) -> int:
        """Days of data table ``name`` keeps (0: everything): its own setting, else the default."""
        own = self.table(name).retention_days
        return self.maintenance.retention_days if own < 0 else own


def _validate(cfg: Config) -> None:
    """The checks that span sections (each object checked its own values when it was built)."""
    check_syslog_exposure(cfg.syslog, cfg.auth)
    for name in cfg.queries:
        query_spec(cfg, name)  # raises ConfigError naming the setting that is wrong
    for name in cfg.alerts:
        alert_spec(cfg, name)


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

    home_key, kwargs = _sections(raw, path)
    if home_key is not None and not home and not env.get("LOGLAKE_HOME"):
        home_path = Path(home_key).expanduser()
    s3 = kwargs.get("s3", S3Config())
    if not s3.endpoint_url and env.get("AWS_ENDPOINT_URL"):
        kwargs["s3"] = dataclasses.replace(s3, endpoint_url=env["AWS_ENDPOINT_URL"])
    streams = kwargs.get("streams", {})
    if any(st.ready_queries for st in streams.values()):
        queries = {}
        for name, st in streams.items():
            if st.ready_queries:
                queries.update(ready_queries(name))
        queries.update(kwargs.get("queries", {}))  # a query of the file wins over a ready one
        kwargs["queries"] = queries
    cfg = Config(home=home_path.resolve(), **kwargs)
    _validate(cfg)
    return cfg


#: The sections of the file that are one config object each.
_SECTIONS: dict[str, type[Any]] = {
    "catalog": CatalogConfig,
    "s3": S3Config,
    "ingest": IngestConfig,
    "crawl": CrawlConfig,
    "query": QueryConfig,
    "maintenance": MaintenanceConfig,
    "server": ServerConfig,
    "syslog": SyslogConfig,
    "stream": StreamBackendConfig,
    "auth": AuthConfig,
    "console": ConsoleConfig,
}
_NAMED = ("tables", "streams", "tail", "queries", "alerts", "dashboards", "jobs", "crawls")


def _sections(raw: Mapping[str, Any], path: Path) -> tuple[str | None, dict[str, Any]]:
    """The parsed sections of a TOML file (``Config`` keyword arguments) and its ``home`` key."""
    kwargs: dict[str, Any] = {}
    home: str | None = None
    for key, value in raw.items():
        if key in _SECTIONS:
            kwargs[key] = build(_SECTIONS[key], key, value)
        elif key == "tables":
            tables = dict(DEFAULT_TABLES)
            for name, settings in tables_of(key, value, '[tables."logs.web"]').items():
                if name.count(".") != 1:
                    raise ConfigError(f"table name {name!r} must be NAMESPACE.TABLE, e.g. logs.web")
                tables[name] = build(TableConfig, f"tables.{name}", settings)
            kwargs["tables"] = tables
        elif key == "streams":
            kwargs["streams"] = {
                name: stream_config(name, settings)
                for name, settings in tables_of(key, value, "[streams.web]").items()
            }
        elif key == "tail":
            kwargs["tail"] = {
                name: build(TailConfig, f"tail.{name}", settings)
                for name, settings in tables_of(key, value, "[tail.nginx]").items()
            }
        elif key == "queries":
            kwargs["queries"] = {
                name: continuous_query(name, settings)
                for name, settings in tables_of(key, value, "[queries.hits]").items()
            }
        elif key == "alerts":
            kwargs["alerts"] = {
                name: alert_config(name, settings)
                for name, settings in tables_of(key, value, "[alerts.errors]").items()
            }
        elif key == "dashboards":
            kwargs["dashboards"] = dashboards_section(value)
        elif key == "jobs":
            kwargs["jobs"] = jobs_section(value)
        elif key == "crawls":
            kwargs["crawls"] = crawls_section(value)
        elif key == "formats":
            kwargs["formats"] = _build_formats(value)
        elif key == "home":
            home = value_of("home", "str", value)
        else:
            valid = ", ".join(sorted([*_SECTIONS, *_NAMED, "formats", "home"]))
            raise ConfigError(f"unknown section or key {key!r} in {path}; valid: {valid}")
    return home, kwargs


def _build_formats(raw: Any) -> dict[str, str]:
    """``[formats]``: a name -> an Apache LogFormat or nginx log_format string; ConfigError if not."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[formats] must be a table, got {shown(raw)}")
    for name, value in raw.items():
        if not isinstance(value, str):
            raise ConfigError(
                f"formats.{name} must be str (a LogFormat or log_format string), got {shown(value)}"
            )
    return dict(raw)
