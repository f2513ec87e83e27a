"""What ``loglake serve`` runs: the streams, each a durable log plus its delivery into the lake.

Streams come from ``[streams.NAME]`` in the config and from the API (kept in
``state/streams.json`` so they survive restarts). Each has a :class:`LocalLog` under
``$LOGLAKE_HOME/streams/NAME`` and a :class:`Delivery` thread. The catalog is opened in the
background at start; ``/readyz`` answers 200 once every delivery has resumed from its offset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loglake import __version__
from loglake.config import STREAM_NAME, StreamConfig, SyslogConfig
from loglake.errors import ConfigError, LoglakeError
from loglake.formats import get_format
from loglake.lake.catalog import open_catalog
from loglake.lake.delivery import Delivery
from loglake.stream.local import LocalLog, StreamLimits

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from loglake.config import Config


log = logging.getLogger("loglake.serve")


class NoSuchStreamError(LoglakeError):
    """A request names a stream that does not exist (HTTP 404)."""


class NoSuchQueryError(LoglakeError):
    """A continuous query name that the server does not run (HTTP 404)."""


class QueryExistsError(LoglakeError):
    """A continuous query of that name exists with other settings (HTTP 409)."""


@dataclass
class IngestCounters:
    """What the ingest APIs did for one stream (the delivery keeps its own counters)."""

    received: int = 0  # records (lines) that arrived
    accepted: int = 0  # appended to the durable log and acknowledged
    rejected: int = 0  # refused at the API (e.g. not a JSON object on an NDJSON stream)
    refused_full: int = 0  # refused because the stream's disk budget was used up


@dataclass
class Stream:
    """A running stream: its settings, durable log and delivery."""

    name: str
    config: StreamConfig
    log: LocalLog
    delivery: Delivery
    counters: IngestCounters = field(default_factory=IngestCounters)


class Runtime:
    """All streams of one server process. Thread-safe for stream lookup and creation."""

    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self.streams: dict[str, Stream] = {}
        self.catalog: Future[Catalog] = ThreadPoolExecutor(max_workers=1).submit(
            open_catalog, config
        )
        self._saved = config.state_dir / "streams.json"
        self._saved_queries = config.state_dir / "queries.json"  # created through the API
        self._file_queries = set(config.queries)
        self.feeders: list[Any] = []  # syslog receiver and file tails: started after the streams
        self.syslog: Any = None
        self._first_offsets: dict[str, int] = {}  # each log's next offset when opened

    def start(self) -> None:
        """Open every configured and previously created stream and start its delivery, then the
        syslog receivers and file tails that feed streams; then log "loglake serve started" with
        the version, address, data home, auth mode, streams, syslog listeners and tails.
        """
        self._load_saved_queries()
        declared = dict(self._load_saved())
        declared.update(self.config.streams)
        for name, stream in declared.items():
            self._open(name, stream)
        self._start_syslog()
        for name, tail in self.config.tail.items():
            from loglake.sources.tail import Tailer

            target = self._ensure(tail.stream, StreamConfig())
            tailer = Tailer(
                name,
                tail,
                target.log.append,
                self.config.state_dir / "tail" / f"{name}.json",
            )
            tailer.start()
            self.feeders.append(tailer)
        log.info("loglake serve started", extra={"fields": self._started_fields()})

    def _started_fields(self) -> dict[str, Any]:
        """What the start-up event reports: version, address, data home, auth, streams, feeders."""
        server, auth = self.config.server, self.config.auth
        host = f"[{server.host}]" if ":" in server.host else server.host
        modes = [
            m for m, on in (("api keys", auth.api_keys), ("sigv4", auth.aws_credentials)) if on
        ]
        syslog: Any = "off"
        if self.syslog is not None:
            bound = self.syslog.addresses
            syslog = {k: "{}:{}".format(*bound[k]) if k in bound else "off" for k in ("udp", "tcp")}
            syslog["stream"] = self.config.syslog.stream
        return {
            "version": __version__,
            "listen": f"{host}:{server.port}",
            "url": f"http://{host}:{server.port}",
            "home": str(self.config.home),
            "auth": " + ".join(modes) or "none, loopback only",
            "streams": {
                name: {"format": s.config.format, "table": s.delivery.table}
                for name, s in sorted(self.streams.items())
            },
            "syslog": syslog,
            "tails": {
                name: {"paths": list(t.paths), "stream": t.stream}
                for name, t in sorted(self.config.tail.items())
            },
        }

    def _start_syslog(self) -> None:
        cfg = self.config.syslog
        if not (cfg.udp or cfg.tcp):
            return
        from loglake.sources.syslog import SyslogReceiver

        target = self._ensure(cfg.stream, StreamConfig(format="syslog", table="logs.syslog"))
        receiver = SyslogReceiver(cfg, target.log.append)
        try:
            receiver.start()
        except ConfigError as exc:
            if cfg == SyslogConfig():
                # Zero-config default ports taken (another syslog daemon, another loglake): run
                # without syslog rather than refuse to start; configured addresses must bind.
                log.warning(
                    "syslog receiver not started: %s (set [syslog] to choose ports)",
                    exc,
                    extra={"fields": {"stream": cfg.stream, "reason": str(exc)}},
                )
                return
            raise
        self.syslog = receiver
        self.feeders.append(receiver)

    def stop(self) -> None:
        """Graceful shutdown: stop the feeders (they append what they hold), deliver and commit
        every acknowledged record, then close the logs and log "loglake serve stopped" with each
        stream's counts of this run (a WARNING first for a stream whose delivery did not finish).
        """
        for feeder in reversed(self.feeders):
            feeder.stop()
        report = {}
        for stream in list(self.streams.values()):
            stream.delivery.stop()
            stats = stream.delivery.stats
            left = max(0, stream.log.next_offset - stats.position)
            if left:  # delivery did not finish in time (or never started): they are not lost
                reason = stats.errors[-1] if stats.errors else "delivery did not finish in time"
                log.warning(
                    "stream %s: %d records past the last commit at shutdown (%s); "
                    "the next start delivers them",
                    stream.name,
                    left,
                    reason,
                    extra={
                        "fields": {"stream": stream.name, "undelivered": left, "reason": reason}
                    },
                )
            report[stream.name] = {
                "appended": stream.log.next_offset - self._first_offsets.get(stream.name, 0),
                "accepted": stream.counters.accepted,
                "delivered": stats.delivered,
                "rejected": stats.rejected,
                "undelivered": left,
            }
            stream.log.close()
        log.info("loglake serve stopped", extra={"fields": {"streams": report}})

    def _ensure(self, name: str, default: StreamConfig) -> Stream:
        """The stream ``name``, created with ``default`` settings when it was not declared."""
        with self._lock:
            if name in self.streams:
                return self.streams[name]
            return self._open(name, default)

    @property
    def ready(self) -> bool:
        return all(s.delivery.ready.is_set() for s in self.streams.values()) and self.catalog.done()

    def get(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            known = ", ".join(sorted(self.streams)) or "none"
            raise NoSuchStreamError(
                f"stream {name!r} does not exist (streams: {known}); declare it under [streams.{name}] "
                "or create it with PUT /v1/streams/{name}"
            )
        return stream

    def create(self, name: str, stream: StreamConfig) -> tuple[Stream, bool]:
        """Create a stream (or return the existing one). Returns (stream, created)."""
        if not STREAM_NAME.fullmatch(name):
            raise ConfigError(f"stream name {name!r}: use 1-128 letters, digits, '_', '-' or '.'")
        if stream.format != "auto":
            get_format(stream.format, self.config.formats)  # refuse unknown formats now
        if stream.table and stream.table.count(".") != 1:
            raise ConfigError(f"table {stream.table!r} must be NAMESPACE.NAME")
        with self._lock:
            if name in self.streams:
                return self.streams[name], False
            opened = self._open(name, stream)
            self._save()
            return opened, True

    # -- continuous queries created through the API ---------------------------------------------

    def create_query(self, name: str, settings: dict[str, Any]) -> bool:
        """Create ``[queries.NAME]`` from API settings and start it; False if it already existed
        with the same settings. Raises ConfigError (bad settings), NoSuchStreamError, or
        QueryExistsError (same name, other settings)."""
        from loglake.analytics.engine import Sandbox
        from loglake.config import continuous_query, query_spec

        query = continuous_query(name, settings)

        trial = dataclasses.replace(self.config, queries={**self.config.queries, name: query})
        query_spec(trial, name)  # settings checked before anything else
        Sandbox(query.sql, name)  # refuses SQL that is not one SELECT, now
        with self._lock:
            stream = self.get(query.stream)
            existing = self.config.queries.get(name)
            if existing is not None:
                if existing == query:
                    return False
                raise QueryExistsError(
                    f"continuous query {name!r} exists with other settings; DELETE it first"
                    + (" (it is declared in the config file)" if name in self._file_queries else "")
                )
            config = dataclasses.replace(self.config, queries={**self.config.queries, name: query})
            self.config = config
            self._save_queries()
        stream.delivery.add_query(name, config)
        return True

    def delete_query(self, name: str) -> None:
        """Stop and forget a query created through the API (its results table stays)."""
        with self._lock:
            query = self.config.queries.get(name)
            if query is None:
                raise NoSuchQueryError(f"continuous query {name!r} does not exist")
            if name in self._file_queries:
                raise ConfigError(
                    f"continuous query {name!r} is declared in the config file; remove it there"
                )
            queries = {k: v for k, v in self.config.queries.items() if k != name}
            self.config = dataclasses.replace(self.config, queries=queries)
            self._save_queries()
            stream = self.streams.get(query.stream)
        if stream is not None:
            stream.delivery.remove_query(name, self.config)

    def _load_saved_queries(self) -> None:
        try:
            raw = json.loads(self._saved_queries.read_text())
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise ConfigError(
                f"{self._saved_queries} is not valid JSON ({exc}); fix or remove it"
            ) from exc
        from loglake.config import continuous_query

        saved = {
            name: continuous_query(name, values)
            for name, values in raw.items()
            if name not in self.config.queries
        }
        if saved:
            self.config = dataclasses.replace(self.config, queries={**saved, **self.config.queries})

    def _save_queries(self) -> None:
        created = {
            name: dataclasses.asdict(q)
            for name, q in self.config.queries.items()
            if name not in self._file_queries
        }
        self._saved_queries.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._saved_queries.with_suffix(".tmp")
        tmp.write_text(json.dumps(created, indent=2))
        os.replace(tmp, self._saved_queries)

    # -- internals -------------------------------------------------------------------------------

    def _open(self, name: str, stream: StreamConfig) -> Stream:
        # Segments no larger than a quarter of the budget, so trimming can free space in steps.
        limits = StreamLimits(
            max_bytes=stream.max_log_bytes,
            segment_bytes=max(1 << 16, min(64 << 20, stream.max_log_bytes // 4)),
        )
        log = LocalLog(self.config.home / "streams" / name, limits)
        self._first_offsets[name] = log.next_offset
        delivery = Delivery(self.config, name, stream, log, self.catalog)
        opened = Stream(name, stream, log, delivery)
        self.streams[name] = opened
        delivery.start()
        return opened

    def _load_saved(self) -> dict[str, StreamConfig]:
        try:
            raw = json.loads(self._saved.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ConfigError(f"{self._saved} is not valid JSON ({exc}); fix or remove it") from exc
        return {name: StreamConfig(**values) for name, values in raw.items()}

    def _save(self) -> None:
        created = {
            name: dataclasses.asdict(s.config)
            for name, s in self.streams.items()
            if name not in self.config.streams
        }
        self._saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._saved.with_suffix(".tmp")
        tmp.write_text(json.dumps(created, indent=2))
        os.replace(tmp, self._saved)
