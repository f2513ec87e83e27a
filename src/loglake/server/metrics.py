"""``GET /metrics``: every counter of the server's components in the Prometheus text format.

:class:`RuntimeCollector` reads the runtime's live objects at scrape time (streams and their logs,
delivery, continuous queries, alert notifiers, the supervisor's workers, live sources) and builds
prometheus-client metric families from them; prometheus-client renders the text, so values are
exact (a float64 holds every integer up to 2**53) and label values are escaped. Each app has a
:class:`CollectorRegistry` of its own (:func:`build_registry`), never the process-wide one.

Which field of which component becomes which metric is written down once, in the ``*_FIELDS``
maps below; ``tests/server/test_metrics.py`` checks that every numeric field of every counter
class is in its map, so a counter added later without a metric fails the tests. A numeric field
of a stats dataclass missing from its map is still shown, as ``loglake_unmapped_delivery_FIELD``
(or ``loglake_unmapped_query_FIELD``) with type ``untyped``, so nothing is invisible in between.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from loglake.server.runtime import Runtime

log = logging.getLogger(__name__)

#: The media type of the answer: the classic text format, which every Prometheus version reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: name -> (type, help, label names) of every metric family /metrics has (some with no samples,
#: e.g. when no query exports results).
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {}


def _metric(name: str, kind: str, text: str, *labels: str) -> str:
    METRICS[name] = (kind, text, labels)
    return name


# -- streams: what every live source did for the stream, summed (see SOURCE_FIELDS) ----------------

RECEIVED = _metric(
    "loglake_stream_records_received_total",
    "counter",
    "Records that arrived for the stream, from every source (HTTP, Kinesis, syslog, tails...).",
    "stream",
)
ACCEPTED = _metric(
    "loglake_stream_records_accepted_total",
    "counter",
    "Records appended to the stream's log and acknowledged (durable), from every source.",
    "stream",
)
REJECTED = _metric(
    "loglake_stream_records_rejected_total",
    "counter",
    "Records refused by a source (bad record) or rejected by the parser at delivery "
    "(kept in logs.rejected).",
    "stream",
)
REFUSED_FULL = _metric(
    "loglake_stream_records_refused_full_total",
    "counter",
    "Records refused because the stream's disk budget was used up (503, or dropped by a source "
    "as stream_full).",
    "stream",
)

# -- streams: delivery (the stream's consumer into the lake) ---------------------------------------

#: Delivery stats dataclass field -> metric (label: stream); ``position`` also gives the lag.
DELIVERY_FIELDS: dict[str, str] = {
    "delivered": _metric(
        "loglake_stream_records_delivered_total",
        "counter",
        "Rows committed to the lake.",
        "stream",
    ),
    "rejected": REJECTED,
    "commits": _metric(
        "loglake_stream_commits_total", "counter", "Iceberg commits made by delivery.", "stream"
    ),
    "last_commit_seconds": _metric(
        "loglake_stream_commit_seconds", "gauge", "Duration of the latest lake commit.", "stream"
    ),
    "position": _metric(
        "loglake_stream_delivered_offset",
        "gauge",
        "Offset below which every record of the stream's log is committed to the lake.",
        "stream",
    ),
}
LAG = _metric(
    "loglake_stream_consumer_lag_records",
    "gauge",
    "Acknowledged records not yet committed to the lake (next offset - delivered offset).",
    "stream",
)

# -- streams: the runners of the stream's consumers (stream.consumer.RunnerStats) ----------------

#: RunnerStats field -> metric (labels: stream, consumer -- ``lake`` for the lake writer).
RUNNER_FIELDS: dict[str, str] = {
    "read": _metric(
        "loglake_consumer_records_read_total",
        "counter",
        "Records read from the stream's log and handed to the consumer (again after a failure).",
        "stream",
        "consumer",
    ),
    "position": _metric(
        "loglake_consumer_position",
        "gauge",
        "The next offset the consumer's runner reads.",
        "stream",
        "consumer",
    ),
    "failures": _metric(
        "loglake_consumer_failures_total",
        "counter",
        "Failures after which the consumer resumed from its committed state (logged).",
        "stream",
        "consumer",
    ),
    "transient_failures": _metric(
        "loglake_consumer_transient_failures_total",
        "counter",
        "Of the failures, those a retry may fix (disk, network, catalog).",
        "stream",
        "consumer",
    ),
}

# -- tables: maintenance (lake.maintenance.MaintenanceStats), one schedule per table ---------------

#: MaintenanceStats field -> metric (label: table).
MAINTENANCE_FIELDS: dict[str, str] = {
    "passes": _metric(
        "loglake_table_maintenance_passes_total",
        "counter",
        "Maintenance passes made over the table.",
        "table",
    ),
    "compacted_files": _metric(
        "loglake_table_compacted_files_total",
        "counter",
        "Small data files merged away by compaction.",
        "table",
    ),
    "compactions_deferred": _metric(
        "loglake_table_compactions_deferred_total",
        "counter",
        "Passes that skipped compaction because ingest was behind.",
        "table",
    ),
    "expired_snapshots": _metric(
        "loglake_table_expired_snapshots_total", "counter", "Snapshots expired.", "table"
    ),
    "removed_files": _metric(
        "loglake_table_removed_files_total",
        "counter",
        "Files no snapshot references any more (replaced by compaction, manifests of expired "
        "snapshots), deleted.",
        "table",
    ),
    "removed_bytes": _metric(
        "loglake_table_removed_bytes_total",
        "counter",
        "Bytes of the unreferenced files deleted.",
        "table",
    ),
    "retention_dropped_files": _metric(
        "loglake_table_retention_dropped_files_total",
        "counter",
        "Data files dropped whole because all their rows were older than the table's retention.",
        "table",
    ),
    "retention_dropped_rows": _metric(
        "loglake_table_retention_dropped_rows_total",
        "counter",
        "Rows of the data files dropped for retention.",
        "table",
    ),
    "failures": _metric(
        "loglake_table_maintenance_failures_total",
        "counter",
        "Maintenance passes that failed (logged; the next pass retries).",
        "table",
    ),
}
# -- ETL jobs (analytics.jobs.JobStats): the server's scheduled runs, one entry per job -------------

#: JobStats field -> metric (label: job).
JOB_FIELDS: dict[str, str] = {
    "runs": _metric(
        "loglake_job_runs_total", "counter", "Scheduled runs of the ETL job started.", "job"
    ),
    "failures": _metric(
        "loglake_job_failures_total",
        "counter",
        "Scheduled runs of the job that failed (logged; it runs again at its next time).",
        "job",
    ),
    "rows": _metric(
        "loglake_job_rows_total", "counter", "Rows the job's runs wrote to its target.", "job"
    ),
}

# -- scheduled crawls (crawl_schedule.CrawlStats): the server's runs, one entry per crawl ------------

#: CrawlStats field -> metric (label: crawl).
CRAWL_FIELDS: dict[str, str] = {
    "runs": _metric(
        "loglake_crawl_runs_total", "counter", "Scheduled runs of the crawl started.", "crawl"
    ),
    "failures": _metric(
        "loglake_crawl_failures_total",
        "counter",
        "Scheduled runs of the crawl that failed (logged; it runs again at its next time).",
        "crawl",
    ),
    "files": _metric(
        "loglake_crawl_files_total", "counter", "Files the crawl's runs registered.", "crawl"
    ),
    "rows": _metric(
        "loglake_crawl_rows_total", "counter", "Rows of the files the crawl registered.", "crawl"
    ),
}

#: The same figures per stream, of the table the stream writes (streams sharing a table show the
#: same numbers): the names /metrics had before maintenance was per table.
STREAM_MAINTENANCE_FIELDS: dict[str, str] = {
    "compacted_files": _metric(
        "loglake_stream_compacted_files_total",
        "counter",
        "Small data files of the stream's table merged away by compaction.",
        "stream",
    ),
    "removed_files": _metric(
        "loglake_stream_removed_files_total",
        "counter",
        "Unreferenced files of the stream's table deleted.",
        "stream",
    ),
}

# -- streams: the durable log (stream.local.LocalLog) ----------------------------------------------

_FSYNC_HELP = "of the latest 1,024 group-commit fsync durations (acknowledgements wait for them)."
FSYNC_QUANTILES = {
    _metric(f"loglake_stream_fsync_{label}_seconds", "gauge", f"{label} {_FSYNC_HELP}", "stream"): q
    for label, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
}

#: LocalLog attribute -> metric, or metrics (label: stream).
LOG_FIELDS: dict[str, str | tuple[str, ...]] = {
    "appends": _metric(
        "loglake_stream_log_appends_total",
        "counter",
        "Appends to the stream's log (one per request or batch, each made durable).",
        "stream",
    ),
    "records_appended": _metric(
        "loglake_stream_log_records_appended_total",
        "counter",
        "Records appended to the stream's log, from every source.",
        "stream",
    ),
    "fsyncs": _metric(
        "loglake_stream_log_fsyncs_total", "counter", "Group-commit fsyncs of the log.", "stream"
    ),
    "recovered_bytes_dropped": _metric(
        "loglake_stream_log_recovered_bytes_dropped_total",
        "counter",
        "Bytes of a torn last frame truncated when the log was opened (never acknowledged).",
        "stream",
    ),
    "lost_records": _metric(
        "loglake_stream_lost_records_total",
        "counter",
        "Acknowledged records lost to damage of the stream's log on disk (skipped, logged).",
        "stream",
    ),
    "size_bytes": _metric(
        "loglake_stream_buffered_bytes",
        "gauge",
        "Bytes of the stream's durable log on disk.",
        "stream",
    ),
    "next_offset": _metric(
        "loglake_stream_next_offset",
        "gauge",
        "Offset the next record appended to the stream gets.",
        "stream",
    ),
    "start_offset": _metric(
        "loglake_stream_start_offset",
        "gauge",
        "First offset still in the log on disk (before it: trimmed after delivery).",
        "stream",
    ),
    "durable_offset": _metric(
        "loglake_stream_durable_offset",
        "gauge",
        "One past the last fsynced record of the log.",
        "stream",
    ),
    "fsync_seconds": tuple(FSYNC_QUANTILES),
}
MAX_BYTES = _metric(
    "loglake_stream_max_bytes",
    "gauge",
    "The stream's disk budget (streams.NAME.max_bytes); appends beyond it are refused.",
    "stream",
)

# -- continuous queries (analytics.engine.QueryStats and the runner's RunningQuery) ---------------

WATERMARK = _metric(
    "loglake_query_watermark_seconds",
    "gauge",
    "Event time (Unix seconds) up to which windows are closed.",
    "query",
)

#: QueryStats field -> metric, or metrics (label: query).
QUERY_FIELDS: dict[str, str | tuple[str, ...]] = {
    "records": _metric(
        "loglake_query_records_total", "counter", "Records taken into windows.", "query"
    ),
    "too_late": _metric(
        "loglake_query_too_late_total",
        "counter",
        "Records that arrived after their windows were final (kept in the lake only).",
        "query",
    ),
    "no_time": _metric(
        "loglake_query_no_time_total",
        "counter",
        "Records without a ts (in no window).",
        "query",
    ),
    "windows": _metric(
        "loglake_query_windows_total", "counter", "Windows emitted (first result).", "query"
    ),
    "corrections": _metric(
        "loglake_query_corrections_total",
        "counter",
        "Windows re-emitted after late records.",
        "query",
    ),
    "retractions": _metric(
        "loglake_query_retractions_total",
        "counter",
        "Session windows retracted (replaced by a merged session).",
        "query",
    ),
    "watermark": WATERMARK,
    "failed_windows": _metric(
        "loglake_query_failed_windows_total",
        "counter",
        "Windows whose SQL failed (logged; no result).",
        "query",
    ),
    "prepared": _metric(
        "loglake_query_prepared_total",
        "counter",
        "Window results computed before the watermark passed the window's end.",
        "query",
    ),
    "prepared_used": _metric(
        "loglake_query_prepared_used_total",
        "counter",
        "Prepared window results emitted as they were (no record arrived for them since).",
        "query",
    ),
    "emitted_early": _metric(
        "loglake_query_emitted_early_total",
        "counter",
        "Prepared results emitted before the records closing their window were processed.",
        "query",
    ),
    "emit_delays": (
        _metric(
            "loglake_query_emit_delay_p50_seconds",
            "gauge",
            "p50 of the latest 1,024 delays from the batch that closed a window to its result.",
            "query",
        ),
        _metric(
            "loglake_query_emit_delay_p99_seconds",
            "gauge",
            "p99 of the latest 1,024 delays from the batch that closed a window to its result.",
            "query",
        ),
    ),
}
RESULT_ROWS = _metric(
    "loglake_query_result_rows_total",
    "counter",
    "Result rows the query wrote to its table.",
    "query",
)
RESULT = _metric(
    "loglake_query_result",
    "gauge",
    "A numeric result of the latest window of a query (prometheus = true); its label columns "
    "become labels (names sanitised, see docs/analytics.md).",
    "query",
    "column",
)

# -- alert notifiers (analytics.alerts.Notifier) ---------------------------------------------------

NOTIFICATIONS = _metric(
    "loglake_alert_webhook_notifications_total",
    "counter",
    "Alert notifications by webhook outcome: sent, failed (every attempt failed, or refused "
    "with a 4xx), dropped (too many waiting, or the webhook's thread is gone) or errors (an "
    "unexpected error in the notifier; logged).",
    "stream",
    "outcome",
)
NOTIFIER_UP = _metric(
    "loglake_alert_notifier_up",
    "gauge",
    "1 while every webhook thread of the stream's alert notifier runs, 0 once one has died "
    "(then /readyz answers 503).",
    "stream",
)
#: Notifier property -> metric (label stream; the counters also have outcome=PROPERTY).
NOTIFIER_FIELDS: dict[str, str] = {
    "sent": NOTIFICATIONS,
    "failed": NOTIFICATIONS,
    "dropped": NOTIFICATIONS,
    "errors": NOTIFICATIONS,
    "alive": NOTIFIER_UP,
}

# -- supervised worker threads (supervise.Worker) --------------------------------------------------

#: Worker field or property -> metric (label: worker).
WORKER_FIELDS: dict[str, str] = {
    "crashes": _metric(
        "loglake_worker_crashes_total",
        "counter",
        "Times a supervised worker thread raised (logged with its traceback).",
        "worker",
    ),
    "restarts": _metric(
        "loglake_worker_restarts_total",
        "counter",
        "Times a supervised worker thread was started again after a crash.",
        "worker",
    ),
    "running": _metric(
        "loglake_worker_up",
        "gauge",
        "1 while the worker thread runs, 0 once it died or stopped.",
        "worker",
    ),
}

# -- live sources (sources.live.SourceCounters, per source and stream) -----------------------------

SOURCE_UP = _metric(
    "loglake_source_up",
    "gauge",
    "1 while the live source reports no problem (see /readyz for what is wrong), else 0.",
    "source",
)
#: SourceCounters field -> metric (labels: source, stream; dropped also reason). ``extra`` and
#: ``gauges`` are maps of the protocol's own: each key NAME is ``loglake_source_NAME_total``
#: (counter) or ``loglake_source_NAME`` (gauge).
SOURCE_FIELDS: dict[str, str] = {
    "received": _metric(
        "loglake_source_records_received_total",
        "counter",
        "Records that arrived at a live source for a stream.",
        "source",
        "stream",
    ),
    "accepted": _metric(
        "loglake_source_records_accepted_total",
        "counter",
        "Records a live source appended to the stream (durable, acknowledged).",
        "source",
        "stream",
    ),
    "rejected": _metric(
        "loglake_source_records_rejected_total",
        "counter",
        "Records a live source refused because the record itself is bad (told to the client).",
        "source",
        "stream",
    ),
    "dropped": _metric(
        "loglake_source_records_dropped_total",
        "counter",
        "Records a live source did not append for another reason (stream_full, too_large, "
        "backpressure...).",
        "source",
        "stream",
        "reason",
    ),
    "extra": "loglake_source_{key}_total",
    "gauges": "loglake_source_{key}",
}

COLLECT_ERRORS = _metric(
    "loglake_metrics_collect_errors_total",
    "counter",
    "Components whose counters could not be read during a scrape (logged with the traceback; "
    "the rest of the scrape is answered).",
)

# -- names -------------------------------------------------------------------------------------------

_VALID_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def sanitise_name(name: str) -> str:
    """``name`` as a valid Prometheus label (or metric name part): every character outside
    ``[a-zA-Z0-9_]`` becomes ``_``; a name that is empty, starts with a digit or with ``__``
    (reserved by Prometheus) gets the prefix ``tag_``."""
    clean = _INVALID_CHARS.sub("_", name)
    if not clean or clean[0].isdigit() or clean.startswith("__"):
        clean = "tag_" + clean
    return clean


def label_names(
    columns: Iterable[str], reserved: Iterable[str] = ("query", "column")
) -> dict[str, str]:
    """column -> a distinct valid label name for each of ``columns`` (a query's label columns).

    Names are sanitised (:func:`sanitise_name`); one equal to a ``reserved`` label becomes
    ``exported_NAME`` (Prometheus's rule for a target label that collides with its own); one
    equal to an earlier column's label gets ``_2``, ``_3``... (columns taken in sorted order, so
    the mapping does not depend on the order of a result's columns)."""
    own = set(reserved)
    taken = set(own)
    out: dict[str, str] = {}
    for column in sorted(set(columns)):
        name = sanitise_name(column)
        if name in own:
            name = f"exported_{name}"
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        out[column] = name
    return out


# -- the collector -----------------------------------------------------------------------------------


def quantile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of ``values``; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _number(value: Any) -> float | None:
    """A metric value from a counter's field; None for what is not a number (a list, None)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


class _Samples:
    """The samples of one scrape, by metric: equal label sets add up (a stream's received is its
    ingest counters' plus every source's)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self.types: dict[str, tuple[str, str]] = {}  # families made at scrape time (extra keys)

    def add(self, metric: str, value: float, **labels: str) -> None:
        key = tuple(labels.items())
        family = self.values[metric]
        family[key] = family.get(key, 0.0) + value

    def fields(
        self,
        obj: Any,
        fields: Mapping[str, str | tuple[str, ...]],
        unmapped: str | None,
        skip: tuple[str, ...] = (),
        **labels: str,
    ) -> None:
        """Every mapped field of ``obj`` that exists and is a number, but those in ``skip`` (the
        caller converts them); with ``unmapped`` (``loglake_unmapped_delivery``...), the numeric
        dataclass fields missing from ``fields`` too, as ``UNMAPPED_FIELD`` (untyped)."""
        for name, metric in fields.items():
            if isinstance(metric, tuple) or name in skip:
                continue  # derived (quantiles of a deque) or converted: the caller renders those
            value = _number(getattr(obj, name, None))
            if value is not None:
                self.add(metric, value, **labels)
        if unmapped is not None and dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                value = _number(getattr(obj, f.name))
                if f.name not in fields and value is not None:
                    metric = f"{unmapped}_{sanitise_name(f.name)}"
                    self.types[metric] = ("unknown", f"{f.name} (not yet described)")
                    self.add(metric, value, **labels)

    def families(self) -> Iterator[Metric]:
        for metric, (kind, text, _) in METRICS.items():
            yield self._family(metric, kind, text)
        for metric, (kind, text) in sorted(self.types.items()):
            if metric not in METRICS:
                yield self._family(metric, kind, text)

    def _family(self, metric: str, kind: str, text: str) -> Metric:
        # Counters are named without _total in prometheus-client; it adds it back to samples.
        base = metric.removesuffix("_total") if kind == "counter" else metric
        family = Metric(base, text, kind)
        sample = f"{base}_total" if kind == "counter" else base
        for key, value in self.values.get(metric, {}).items():
            family.add_sample(sample, dict(key), value)
        return family


class RuntimeCollector:
    """A prometheus-client collector over one :class:`Runtime`: every scrape reads the counters
    of the runtime's components as they are now. Reading never blocks delivery (only the log's
    own short locks are taken); a component that raises while read is logged and counted in
    ``loglake_metrics_collect_errors_total``, and the rest of the scrape is answered."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.errors = 0

    def collect(self) -> Iterator[Metric]:
        out = _Samples()
        streams = list(self.runtime.streams.values())
        maintenance = getattr(self.runtime, "maintenance", None)
        tables = dict(maintenance.stats()) if maintenance is not None else {}
        for table, stats in sorted(tables.items()):
            out.fields(stats, MAINTENANCE_FIELDS, "loglake_unmapped_maintenance", table=table)
        jobs = getattr(self.runtime, "jobs", None)
        for job, counts in sorted(jobs.stats.items()) if jobs is not None else []:
            out.fields(counts, JOB_FIELDS, "loglake_unmapped_job", job=job)
        crawls = getattr(self.runtime, "crawls", None)
        for crawl, counts in sorted(crawls.stats.items()) if crawls is not None else []:
            out.fields(counts, CRAWL_FIELDS, "loglake_unmapped_crawl", crawl=crawl)
        for stream in streams:
            self._guard(f"stream {stream.name}", self._stream, out, stream, tables)
        for qname, q in self._queries(streams):
            self._guard(f"query {qname}", self._query, out, qname, q)
        for stream in streams:
            self._guard(f"alert notifier of {stream.name}", self._notifier, out, stream)
        supervisor = getattr(self.runtime, "supervisor", None)
        for worker in supervisor.workers() if supervisor is not None else []:
            out.fields(worker, WORKER_FIELDS, None, worker=worker.name)
        for source in list(getattr(self.runtime, "sources", None) or []):
            self._guard(f"source {source.name}", self._source, out, source)
        out.add(COLLECT_ERRORS, self.errors)
        yield from out.families()

    def _guard(self, what: str, read: Any, *args: Any) -> None:
        try:
            read(*args)
        except Exception:
            self.errors += 1
            log.exception("/metrics: cannot read the counters of %s", what)

    def _stream(self, out: _Samples, stream: Any, tables: Mapping[str, Any]) -> None:
        name = stream.name
        for metric in (RECEIVED, ACCEPTED, REJECTED, REFUSED_FULL):
            out.add(metric, 0.0, stream=name)  # every stream has them, fed by any component
        stats = stream.delivery.stats
        out.fields(stats, DELIVERY_FIELDS, "loglake_unmapped_delivery", stream=name)
        log_ = stream.log
        out.fields(log_, LOG_FIELDS, None, stream=name)
        fsyncs = list(log_.fsync_seconds)
        for metric, q in FSYNC_QUANTILES.items():
            out.add(metric, quantile(fsyncs, q) or 0.0, stream=name)
        out.add(LAG, log_.backlog(stats.position), stream=name)
        out.add(MAX_BYTES, log_.limits.max_bytes, stream=name)
        group = getattr(stream.delivery, "group", None)
        for runner in list(getattr(group, "runners", [])):
            labels = {"stream": name, "consumer": runner.consumer.name}
            out.fields(runner.stats, RUNNER_FIELDS, "loglake_unmapped_consumer", **labels)
        table = tables.get(getattr(stream.delivery, "table", ""))
        if table is not None:
            out.fields(table, STREAM_MAINTENANCE_FIELDS, None, stream=name)

    @staticmethod
    def _queries(streams: list[Any]) -> list[tuple[str, Any]]:
        found = []
        for stream in streams:
            runner = getattr(stream.delivery, "runner", None)
            if runner is not None:
                found += list(runner.queries.items())
        return found

    def _query(self, out: _Samples, qname: str, q: Any) -> None:
        stats = q.engine.stats
        out.fields(stats, QUERY_FIELDS, "loglake_unmapped_query", ("watermark",), query=qname)
        if stats.watermark is not None:  # µs in the engine; Prometheus times are seconds
            out.add(WATERMARK, stats.watermark / 1e6, query=qname)
        delays = list(stats.emit_delays)
        for metric, p in zip(QUERY_FIELDS["emit_delays"], (0.5, 0.99), strict=True):
            out.add(metric, quantile(delays, p) or 0.0, query=qname)
        out.add(RESULT_ROWS, q.results, query=qname)
        if q.prometheus_labels is not None:
            names: dict[frozenset[str], dict[str, str]] = {}
            for tags, column, value in list(q.gauges):
                key = frozenset(tags)
                if key not in names:
                    names[key] = label_names(tags)
                labels = {names[key][k]: str(v) for k, v in tags.items()}
                out.add(RESULT, value, query=qname, column=column, **labels)

    def _notifier(self, out: _Samples, stream: Any) -> None:
        runner = getattr(stream.delivery, "runner", None)
        notifier = getattr(runner, "notifier", None)
        if notifier is None:
            return
        for outcome, metric in NOTIFIER_FIELDS.items():
            value = float(getattr(notifier, outcome))
            if metric == NOTIFICATIONS:
                out.add(metric, value, stream=stream.name, outcome=outcome)
            else:
                out.add(metric, value, stream=stream.name)

    def _source(self, out: _Samples, source: Any) -> None:
        out.add(SOURCE_UP, 0.0 if source.health() else 1.0, source=source.name)
        for stream, counters in dict(source.counters()).items():
            with counters.lock:  # the dicts may gain keys while we read
                counts = {n: getattr(counters, n) for n in ("received", "accepted", "rejected")}
                dropped = dict(counters.dropped)
                own = {"extra": dict(counters.extra), "gauges": dict(counters.gauges)}
            labels = {"source": source.name, "stream": stream}
            for name, value in counts.items():
                out.add(SOURCE_FIELDS[name], value, **labels)
            for reason, count in sorted(dropped.items()):
                out.add(SOURCE_FIELDS["dropped"], count, reason=reason, **labels)
            # The stream's own totals count what every source did for it.
            out.add(RECEIVED, counts["received"], stream=stream)
            out.add(ACCEPTED, counts["accepted"], stream=stream)
            out.add(REJECTED, counts["rejected"], stream=stream)
            out.add(REFUSED_FULL, dropped.get("stream_full", 0), stream=stream)
            for field_name, kind in (("extra", "counter"), ("gauges", "gauge")):
                for key, value in own[field_name].items():
                    metric = _source_metric(SOURCE_FIELDS[field_name], key)
                    out.types[metric] = (kind, f"{key} of the source (its protocol's own).")
                    out.add(metric, float(value), **labels)


def _source_metric(pattern: str, key: str) -> str:
    """The metric of a source's own counter or gauge ``key``; ``loglake_source_extra_...`` when
    the plain name is one of the fixed metrics (a key named ``up``...)."""
    metric = pattern.format(key=sanitise_name(key))
    if metric in METRICS:
        metric = pattern.format(key="extra_" + sanitise_name(key))
    return metric


def build_registry(runtime: Runtime) -> CollectorRegistry:
    """A registry of its own for ``runtime`` (several apps may live in one process, e.g. tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of ``registry``, read now."""
    return generate_latest(registry)
