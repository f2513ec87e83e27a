"""What ``loglake serve`` runs: the streams, each a durable log plus its delivery into the lake.

Streams come from ``[streams.NAME]`` in the config and from the API (kept in
``state/streams.json`` so they survive restarts; at most ``server.max_streams``). Each has a
:class:`LocalLog` under ``$LOGLAKE_HOME/streams/NAME`` and a :class:`Delivery` thread. The catalog
is opened in the background at start; ``/readyz`` answers 200 once every delivery has resumed from
its offset. Saved streams and queries are checked like the config file's; an entry that fails is
logged, skipped and listed (``skipped``), never a reason to stay unready.

Records reach the streams through the live sources (``sources/``: http, kinesis, firehose, syslog,
tail), built from the registry (:func:`loglake.sources.live.load_sources`), started once the
streams are open and stopped first at shutdown. The runtime is their :class:`Streams`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loglake import __version__
from loglake.analytics.jobs import JobSchedule
from loglake.config import (
    ContinuousQueryConfig,
    Origin,
    StreamConfig,
    continuous_query,
    query_spec,
    read_saved,
    saved_stream_settings,
    stream_config,
)
from loglake.crawl_schedule import CrawlSchedule
from loglake.errors import (
    ConfigError,
    FormatError,
    LoglakeError,
    NoSuchStreamError,
    StreamBusyError,
    TooManyStreamsError,
)
from loglake.formats import get_format
from loglake.lake.catalog import open_catalog
from loglake.lake.maintenance import MaintenanceSchedule
from loglake.lake.tables import Tables
from loglake.query.plan import plan_hook
from loglake.server import sigv4
from loglake.server.delivery import Delivery
from loglake.sources.live import LiveSource, SourceContext, SourceCounters, StreamInfo, load_sources
from loglake.stream.local import LocalLog, StreamLimits
from loglake.stream.log import StreamLog
from loglake.supervise import Supervisor

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from loglake.config import Config
    from loglake.server.cluster import Cluster
    from loglake.stream.nats import NatsClient


log = logging.getLogger("loglake.serve")


class NoSuchQueryError(LoglakeError):
    """A continuous query name that the server does not run (HTTP 404)."""

    status = 404
    code = "no_such_query"


class QueryExistsError(LoglakeError):
    """A continuous query of that name exists with other settings (HTTP 409)."""

    status = 409
    code = "query_exists"


_COMPACT_MAX_LAG = 100_000  # records a lake writer may be behind before compaction waits

#: How long DELETE /v1/streams/NAME waits, by default, for delivery to commit what was acknowledged.
DELETE_WAIT_S = 60.0


@dataclass
class Stream:
    """A running stream: its settings, durable log and delivery."""

    name: str
    config: StreamConfig
    log: StreamLog
    delivery: Delivery
    # Whether this node delivers the stream: always on one node; with NATS, while it holds the
    # stream's lease (server/cluster.py). Other nodes only accept its appends.
    owned: bool = True
    started: bool = False  # delivery was started once (a new one is built to start again)
    _gate: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _appending: int = 0  # appends of the sources in progress
    _closed: bool = False  # being deleted: the sources append no more

    def append(self, records: Sequence[bytes]) -> tuple[int, int]:
        """Append for a source: :meth:`LocalLog.append`, or NoSuchStreamError once the stream is
        being deleted (so every acknowledged record is one the deletion waits for)."""
        with self._gate:
            if self._closed:
                raise NoSuchStreamError(f"stream {self.name!r} is being deleted")
            self._appending += 1
        try:
            return self.log.append(records)
        finally:
            with self._gate:
                self._appending -= 1
                self._gate.notify_all()

    def close_appends(self) -> None:
        """Refuse further appends and wait for those in progress (they are acknowledged)."""
        with self._gate:
            self._closed = True
            self._gate.wait_for(lambda: self._appending == 0)

    def reopen_appends(self) -> None:
        with self._gate:
            self._closed = False

    @property
    def undelivered(self) -> int:
        """Acknowledged records not yet committed to the lake (by this node; 0 when another node
        delivers the stream)."""
        if not self.owned:
            return 0
        return self.log.backlog(self.delivery.stats.position)


class Runtime:
    """All streams of one server process and the live sources that feed them. Thread-safe for
    stream lookup and creation. It is the sources' :class:`loglake.sources.live.Streams`."""

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
        # Every configured live source; built now (the app mounts their routes before start).
        self.sources: list[LiveSource] = load_sources(config)
        self.supervisor = Supervisor()  # every worker thread runs under it
        # One commit lock per table for every writer of this process (streams, queries,
        # maintenance), the plan cache kept current after each commit, one maintenance schedule.
        self.tables = Tables()
        self.tables.on_commit(plan_hook(config))
        self.maintenance = MaintenanceSchedule(
            lambda: self.catalog.result(), self.tables, behind=self._ingest_behind, config=config
        )
        # The config's scheduled ETL jobs (analytics/jobs.py), committing through the same tables.
        self.jobs = JobSchedule(config, self.tables)
        # The config's scheduled crawls (crawl_schedule.py), in a thread of their own: a long
        # crawl never delays a job. They start once the catalog is open.
        self.crawls = CrawlSchedule(config, lambda: self.catalog.result())
        self._nats: NatsClient | None = None  # [stream] backend = "nats": the connection
        # With NATS: the leases that say which node delivers each stream and runs each job.
        self.cluster: Cluster | None = None
        # Saved entries that failed their checks at start: what /readyz and the start-up event
        # show, and the raw settings, kept in the saved files until someone fixes or deletes them.
        self.skipped: list[dict[str, str]] = []
        self._skipped_streams: dict[str, Any] = {}
        self._skipped_queries: dict[str, Any] = {}
        self._deleting: set[str] = set()

    def start(self) -> None:
        """Open every configured and previously created stream and start its delivery, then the
        live sources that feed streams; then log "loglake serve started" with the version,
        address, data home, auth mode, streams, syslog listeners and tails.
        """
        self._load_saved_queries()
        # Before any schedule starts: with NATS, jobs run only on the node holding their lease.
        if self.config.stream.backend == "nats":
            from loglake.server.cluster import Cluster
            from loglake.stream.nats import NatsClient

            self._nats = NatsClient(self.config.stream)
            self.cluster = Cluster(
                self._nats, node_id(self.config), self._lease_keys, self._acquired, self._released
            )
            cluster = self.cluster
            self.jobs.may_run = lambda name: cluster.owns(f"job.{name}")
        self.supervisor.spawn("loglake-maintenance", self.maintenance.run, restart=True)
        if self.jobs.scheduled:
            self.supervisor.spawn("loglake-jobs", self.jobs.run, restart=True)
        if self.crawls.scheduled:
            self.supervisor.spawn("loglake-crawls", self.crawls.run, restart=True)
        declared = dict(self._load_saved())
        declared.update(self.config.streams)
        for name, stream in declared.items():
            self._open(name, stream)
        if self.cluster is not None:
            self._cluster_worker = self.supervisor.spawn(
                "loglake-cluster", self.cluster.run, restart=True
            )
        verify_aws = sigv4.verifier(self.config)
        for source in self.sources:
            kind = source.name.partition(".")[0]
            context = SourceContext(
                self.config, self, self.supervisor, self.config.state_dir / kind, verify_aws
            )
            source.start(context)
        log.info("loglake serve started", extra={"fields": self._started_fields()})

    def _started_fields(self) -> dict[str, Any]:
        """What the start-up event reports: version, address, data home, auth, streams, feeders,
        scheduled crawls."""
        server, auth = self.config.server, self.config.auth
        host = f"[{server.host}]" if ":" in server.host else server.host
        modes = [
            m for m, on in (("api keys", auth.api_keys), ("sigv4", auth.aws_credentials)) if on
        ]
        syslog: Any = "off"
        bound = next((getattr(s, "addresses", {}) for s in self.sources if s.name == "syslog"), {})
        if bound:
            syslog = {k: "{}:{}".format(*bound[k]) if k in bound else "off" for k in ("udp", "tcp")}
            syslog["stream"] = self.config.syslog.stream
        return {
            "version": __version__,
            "listen": f"{host}:{server.port}",
            "url": f"http://{host}:{server.port}",
            "console": f"http://{host}:{server.port}/console"
            if self.config.console.enabled
            else "off",
            "home": str(self.config.home),
            "auth": (" + ".join(modes) or "none, loopback only")
            + ("" if auth.api_keys or not auth.enabled else " (native API closed: no api_keys)"),
            "streams": {
                name: {"format": s.config.format, "table": s.delivery.table}
                for name, s in sorted(self.streams.items())
            },
            "syslog": syslog,
            "tails": {
                name: {"paths": list(t.paths), "stream": t.stream}
                for name, t in sorted(self.config.tail.items())
            },
            "crawls": {
                name: {"paths": list(c.paths), "table": c.table, "schedule": c.schedule}
                for name, c in sorted(self.config.crawls.items())
            },
            "skipped": self.skipped,
        }

    def stop(self) -> None:
        """Graceful shutdown: stop the sources (they append what they hold), deliver and commit
        every acknowledged record, then close the logs and log "loglake serve stopped" with each
        stream's counts of this run (a WARNING first for a stream whose delivery did not finish).
        """
        self.supervisor.stop()  # a worker that crashes from here on is not restarted
        if self.cluster is not None:
            # It stops the deliveries this node owns (committing what they hold), then gives the
            # leases up so that other nodes take over at once.
            self.cluster.stop()
            if self._cluster_worker.thread is not None:
                self._cluster_worker.thread.join(60)
        self.maintenance.stop()
        self.jobs.stop()
        self.crawls.stop()
        for source in reversed(self.sources):
            source.stop()
        report = {}
        for stream in list(self.streams.values()):
            if stream.owned:
                stream.delivery.stop()
            stats = stream.delivery.stats
            left = stream.log.backlog(stats.position)
            if left:  # delivery did not finish in time (or never started): they are not lost
                errors = stream.delivery.errors
                reason = errors[-1] if errors else "delivery did not finish in time"
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
                "appended": stream.log.records_appended,
                "accepted": self.ingested(stream.name).accepted,
                "delivered": stats.delivered,
                "rejected": stats.rejected,
                "undelivered": left,
            }
            stream.log.close()
        if self._nats is not None:
            self._nats.close()
        log.info("loglake serve stopped", extra={"fields": {"streams": report}})

    # -- what the sources may do (sources.live.Streams) ------------------------------------------

    def append(self, stream: str, records: Sequence[bytes]) -> tuple[int, int]:
        """Append ``records`` to ``stream`` once durable: (first offset, next offset). Raises
        NoSuchStreamError, StreamFullError or RecordTooLargeError."""
        return self.get(stream).append(records)

    def ensure(self, stream: str, default: StreamConfig) -> None:
        """Open ``stream`` with ``default`` settings when it was not declared."""
        with self._lock:
            if stream not in self.streams:
                self._open(stream, default)

    def running_queries(self) -> dict[str, tuple[str, Any]]:
        """Every continuous query of the server: name -> (stream name, its RunningQuery)."""
        out: dict[str, tuple[str, Any]] = {}
        for stream in list(self.streams.values()):
            runner = stream.delivery.runner
            if runner is not None:
                for name, q in runner.queries.items():
                    out[name] = (stream.name, q)
        return out

    def info(self, stream: str) -> StreamInfo:
        opened = self.get(stream)
        log_ = opened.log
        return StreamInfo(stream, log_.created, log_.start_offset, log_.next_offset)

    def names(self) -> list[str]:
        return sorted(self.streams.copy())  # a copy is atomic; iterating races a stream's creation

    def ingested(self, stream: str) -> SourceCounters:
        """What every source did for ``stream`` since start, summed."""
        total = SourceCounters()
        for source in self.sources:
            counters = dict(source.counters()).get(stream)
            if counters is None:
                continue
            counters = counters.snapshot()
            total.add(counters.received, counters.accepted, counters.rejected)
            for reason, n in counters.dropped.items():
                total.drop(reason, n)
        return total

    @property
    def ready(self) -> bool:
        return (
            all(s.delivery.ready.is_set() or not s.owned for s in self.streams.values())
            and self.catalog.done()
            and not self.dead_workers()
            and not self.source_problems()
        )

    def _ingest_behind(self) -> bool:
        """Whether a stream's lake writer is far behind its log (compaction waits then)."""
        return any(
            s.owned and s.log.backlog(s.delivery.consumer.stats.position) > _COMPACT_MAX_LAG
            for s in list(self.streams.values())
        )

    def source_problems(self) -> list[str]:
        """What keeps /readyz at 503 besides the streams: a source's health problems and every
        supervised worker that died."""
        problems = [p for source in self.sources for p in source.health()]
        return problems + self.supervisor.dead()

    def dead_workers(self) -> list[str]:
        """Worker threads that died (delivery, maintenance, alert notifiers), for /readyz."""
        dead = []
        for stream in list(self.streams.values()):
            if not stream.delivery.alive:
                dead.append(
                    f"stream {stream.name}: a delivery thread stopped (see the log); "
                    "records are acknowledged but not delivered until the server restarts"
                )
            runner = stream.delivery.runner
            notifier = runner.notifier if runner is not None else None
            if notifier is not None and not notifier.alive:
                dead.append(
                    f"stream {stream.name}: the alert notifier stopped (see the log); "
                    "alerts are not sent until the server restarts"
                )
        return dead

    def get(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            known = ", ".join(sorted(self.streams)) or "none"
            raise NoSuchStreamError(
                f"stream {name!r} does not exist (streams: {known}); declare it under [streams.{name}] "
                "or create it with PUT /v1/streams/{name}"
            )
        return stream

    def stream_settings(
        self, name: str, settings: Mapping[str, Any], origin: Origin = "api"
    ) -> StreamConfig:
        """``settings`` of stream ``name`` from the API or saved state, parsed as the config
        file's are (:func:`loglake.config.stream_config`), and its format known.

        Raises ConfigError or FormatError naming what is wrong.
        """
        stream = stream_config(name, settings, origin)
        if stream.format != "auto":
            get_format(stream.format, self.config.formats)  # refuse unknown formats now
        return stream

    def create(self, name: str, settings: Mapping[str, Any]) -> bool:
        """Create a stream from API settings; False when it exists already.

        Raises ConfigError / FormatError (bad settings), TooManyStreamsError (``server.max_streams``
        reached) or StreamBusyError (a stream of that name is being deleted).
        """
        stream = self.stream_settings(name, settings)
        with self._lock:
            if name in self.streams:
                return False
            if name in self._deleting:
                raise StreamBusyError(f"stream {name!r} is being deleted; create it again later")
            limit = self.config.server.max_streams
            if len(self.streams) >= limit:
                raise TooManyStreamsError(
                    f"the server has {len(self.streams)} streams, its limit (server.max_streams = "
                    f"{limit}); delete one (DELETE /v1/streams/NAME) or raise server.max_streams"
                )
            self._open(name, stream)
            self._skipped_streams.pop(name, None)  # replaced by valid settings
            self._save()
            return True

    def delete(
        self, name: str, force: bool = False, wait_s: float = DELETE_WAIT_S
    ) -> dict[str, Any]:
        """Delete a stream created through the API: stop its delivery and forget it.

        Appends stop first (in-flight ones finish and are acknowledged). Without ``force`` it waits
        up to ``wait_s`` seconds for delivery to commit every acknowledged record, and refuses
        (StreamBusyError, the stream goes on) if some are still undelivered then. With ``force``
        it stops at once (delivery still commits what it can on the way out). The log folder is
        kept: its next offset keeps a re-created stream of that name from reusing offsets (the
        lake's exactly-once bookkeeping counts on them), and records left in it are delivered if
        the stream is created again. Its table and rows stay in the lake. Raises
        NoSuchStreamError, or StreamBusyError for a stream of the config file, one that syslog or
        a tail feeds, or one that continuous queries read.
        """
        with self._lock:
            stream = self.get(name)
            if name in self.config.streams:
                raise StreamBusyError(
                    f"stream {name!r} is declared in the config file; remove [streams.{name}] "
                    "there and restart"
                )
            fed = [source.name for source in self.sources if name in source.feeds()]
            if fed:
                raise StreamBusyError(
                    f"stream {name!r} is fed by {', '.join(fed)} of the config file; change "
                    "that first"
                )
            readers = sorted(q for q, c in self.config.queries.items() if c.stream == name)
            if readers:
                raise StreamBusyError(
                    f"continuous queries read stream {name!r} ({', '.join(readers)}); delete "
                    "them first (DELETE /v1/queries/NAME)"
                )
            del self.streams[name]
            self._deleting.add(name)
        try:
            return self._delete(stream, force, wait_s)
        finally:
            with self._lock:
                self._deleting.discard(name)

    def _delete(self, stream: Stream, force: bool, wait_s: float) -> dict[str, Any]:
        stream.close_appends()
        if not force:
            deadline = time.monotonic() + wait_s
            while stream.undelivered and time.monotonic() < deadline:
                time.sleep(0.05)
            if stream.undelivered:
                errors = stream.delivery.errors
                why = f" (delivery: {errors[-1]})" if errors else ""
                with self._lock:
                    self.streams[stream.name] = stream
                stream.reopen_appends()
                raise StreamBusyError(
                    f"stream {stream.name!r} holds {stream.undelivered} acknowledged records not "
                    f"delivered to the lake after {wait_s:g} s{why}; it goes on. Retry "
                    "later, or add ?force=true to stop it now (those records stay in its log "
                    "folder and are delivered if a stream of that name is created again)"
                )
        stream.delivery.stop()  # commits what it can first, as at shutdown
        left = stream.undelivered
        position = stream.delivery.stats.position
        stream.log.close()
        with self._lock:
            self._save()
        fields = {"stream": stream.name, "delivered_offset": position, "undelivered": left}
        if left:
            log.warning(
                "stream %s deleted with %d acknowledged records not delivered (force); they stay "
                "in %s and are delivered if the stream is created again",
                stream.name,
                left,
                stream.log.path,
                extra={"fields": fields},
            )
        else:
            log.info("stream %s deleted", stream.name, extra={"fields": fields})
        return {"deleted": stream.name, "delivered_offset": position, "undelivered": left}

    # -- continuous queries created through the API ---------------------------------------------

    def create_query(self, name: str, settings: dict[str, Any]) -> bool:
        """Create ``[queries.NAME]`` from API settings and start it; False if it already existed
        with the same settings. Raises ConfigError (bad settings), NoSuchStreamError, or
        QueryExistsError (same name, other settings)."""
        query = self._checked_query(name, settings)
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
            self._skipped_queries.pop(name, None)  # replaced by valid settings
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

    def _checked_query(self, name: str, settings: Any) -> ContinuousQueryConfig:
        """``[queries.NAME]`` from API or saved settings, parsed as the config file's are, and its
        SQL by the sandbox. Raises ConfigError (or the sandbox's error) naming the problem."""
        from loglake.analytics.engine import Sandbox

        query = continuous_query(name, settings)
        trial = dataclasses.replace(self.config, queries={**self.config.queries, name: query})
        query_spec(trial, name)  # settings checked before anything else
        Sandbox(query.sql, name)  # refuses SQL that is not one SELECT, now
        return query

    def _load_saved_queries(self) -> None:
        saved = {}
        for name, values in read_saved(self._saved_queries).items():
            if name in self.config.queries:
                continue  # the config file's declaration wins
            try:
                saved[name] = self._checked_query(name, values)
            except Exception as exc:  # whatever the check raises, one entry never stops the start
                self._skip("query", name, exc, self._saved_queries)
                self._skipped_queries[name] = values
        if saved:
            self.config = dataclasses.replace(self.config, queries={**saved, **self.config.queries})

    def _skip(self, kind: str, name: str, exc: Exception, path: Any) -> None:
        """Log and list a saved entry that failed its checks; it stays in its file."""
        reason = str(exc)
        log.error(
            "saved %s %r skipped: %s (fix or remove it in %s and restart)",
            kind,
            name,
            reason,
            path,
            extra={"fields": {kind: name, "reason": reason, "path": str(path)}},
        )
        self.skipped.append({"kind": kind, "name": name, "reason": reason, "file": str(path)})

    def _save_queries(self) -> None:
        created = {
            **self._skipped_queries,
            **{
                name: dataclasses.asdict(q)
                for name, q in self.config.queries.items()
                if name not in self._file_queries
            },
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
        log: StreamLog
        if self.config.stream.backend == "nats":
            from loglake.stream.nats import NatsClient, NatsLog

            if self._nats is None:
                self._nats = NatsClient(self.config.stream)
            log = NatsLog(self._nats, name, limits, consumer=f"lake-{node_id(self.config)}")
        else:
            log = LocalLog(self.config.home / "streams" / name, limits)
        opened = Stream(name, stream, log, self._delivery(name, stream, log))
        self.streams[name] = opened
        if self.cluster is None:
            opened.delivery.start()
            opened.started = True
        else:
            opened.owned = False  # until this node takes the stream's lease
        return opened

    def _delivery(self, name: str, stream: StreamConfig, log: StreamLog) -> Delivery:
        return Delivery(
            self.config,
            name,
            stream,
            log,
            self.catalog,
            self.tables,
            self.maintenance,
            self.supervisor,
        )

    # -- the cluster's leases (NATS) --------------------------------------------------------------

    def _lease_keys(self) -> list[str]:
        streams = [f"owner.{name}" for name in sorted(self.streams.copy())]
        return streams + [f"job.{name}" for name in self.jobs.scheduled]

    def _acquired(self, key: str) -> None:
        """This node took a stream's lease: start delivering it (resuming from the lake)."""
        kind, _, name = key.partition(".")
        if kind != "owner":
            return  # a job: the schedule asks cluster.owns() before each run
        with self._lock:
            stream = self.streams.get(name)
            if stream is None or stream.owned:
                return
            if stream.started:  # a stopped delivery does not start again: a new one does
                stream.delivery = self._delivery(name, stream.config, stream.log)
            stream.owned = stream.started = True
            stream.delivery.start()

    def _released(self, key: str) -> None:
        """This node lost or gave up a stream's lease: stop delivering it. What it commits on
        the way out is fenced, so records another node committed meanwhile are not written."""
        kind, _, name = key.partition(".")
        if kind != "owner":
            return
        with self._lock:
            stream = self.streams.get(name)
            if stream is None or not stream.owned:
                return
            stream.owned = False
        stream.delivery.stop()

    def _load_saved(self) -> dict[str, StreamConfig]:
        saved = {}
        for name, values in read_saved(self._saved).items():
            if name in self.config.streams:
                continue  # the config file's declaration wins
            try:
                saved[name] = self.stream_settings(name, values, "state")
            except (ConfigError, FormatError) as exc:
                self._skip("stream", name, exc, self._saved)
                self._skipped_streams[name] = values
        return saved

    def _save(self) -> None:
        created = {
            **self._skipped_streams,
            **{
                name: saved_stream_settings(s.config)
                for name, s in self.streams.items()
                if name not in self.config.streams
            },
        }
        self._saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._saved.with_suffix(".tmp")
        tmp.write_text(json.dumps(created, indent=2))
        os.replace(tmp, self._saved)


def node_id(config: Config) -> str:
    """This node's name among the nodes sharing streams: stable across restarts of the same
    data home on the same host, distinct for two homes (two nodes on one machine)."""
    import hashlib
    import re
    import socket

    host = socket.gethostname()
    digest = hashlib.sha1(f"{host}:{config.home}".encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '-', host)[:20]}-{digest}"
