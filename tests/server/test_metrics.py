"""/metrics: exact values, escaped label values, valid label names, and every counter a component
keeps on it (server/metrics.py).

The in-process tests build the collector over real components (a real LocalLog, real stats
dataclasses, a real ContinuousQuery and Notifier, a real Supervisor, a live source with real
SourceCounters); only the containers that hold them (the runtime, a stream, its delivery) are plain
namespaces, so the tests need no server. One test scrapes a real server subprocess.
"""

from __future__ import annotations

import dataclasses
import http.server
import math
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loglake.analytics.alerts import Notifier
from loglake.analytics.engine import ContinuousQuery, QueryStats
from loglake.analytics.jobs import JobStats
from loglake.analytics.runner import RunningQuery, _gauges
from loglake.config.queries import QuerySpec, WindowSpec
from loglake.crawl_schedule import CrawlStats
from loglake.lake.consumer import DeliveryStats
from loglake.lake.maintenance import MaintenanceSchedule, MaintenanceStats
from loglake.lake.tables import Tables
from loglake.server import metrics
from loglake.server.metrics import RuntimeCollector, build_registry, label_names, render_metrics
from loglake.sources.live import SourceCounters
from loglake.stream.consumer import ConsumerGroup, RunnerStats
from loglake.stream.local import LocalLog, Records, StreamLimits
from loglake.supervise import Supervisor, Worker
from serving import Server, request

BIG = 12_345_678


class FixedSource:
    """A live source whose counters the test sets (the LiveSource contract, nothing started)."""

    def __init__(self, name: str, counters: dict[str, SourceCounters], problems: list[str]):
        self.name = name
        self._counters = counters
        self._problems = problems

    def start(self, context: Any) -> None:
        pass

    def stop(self) -> None:
        pass

    def counters(self) -> Mapping[str, SourceCounters]:
        return self._counters

    def health(self) -> list[str]:
        return list(self._problems)

    def routes(self) -> list[Any]:
        return []


class Counting:
    """A stream consumer that keeps nothing (the Consumer contract; its runner is not started)."""

    name = "archive"

    def resume(self) -> int:
        return 0

    def take(self, records: Records) -> int:
        return len(records)

    def due(self, pending: int, since_flush_s: float) -> bool:
        return False

    def flush(self, position: int) -> None:
        pass

    def idle(self, position: int) -> None:
        pass

    def check(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def committed(self) -> int | None:
        return None


class Webhook(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the status in its path (/200, /400)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(int(self.path.strip("/")))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def running_query() -> RunningQuery:
    """A real continuous query after one window: its tag columns have names Prometheus refuses
    (a space, a leading digit, ``query``) and values with a space, quote, backslash, newline."""
    t0 = datetime(2024, 1, 1)
    status = 'we"ird \\ val\nue'
    rows = [{"ts": t0 + timedelta(seconds=s), "status": status, "code": "5xx"} for s in range(3)]
    rows.append({"ts": t0 + timedelta(minutes=2), "status": "ok", "code": "2xx"})
    frame = pl.DataFrame(rows).with_columns(pl.col("ts").cast(pl.Datetime("us")))
    spec = QuerySpec(
        "q1",
        'SELECT status AS "http status", code AS "5xx", code AS query, '
        'count(*) AS "hits total" FROM stream GROUP BY 1, 2, 3',
        WindowSpec.parse("tumbling 1m"),
        lateness=0,
    )
    engine = ContinuousQuery(
        spec,
        lambda start, stop, key: frame.filter(
            (pl.col("ts").cast(pl.Int64) >= start) & (pl.col("ts").cast(pl.Int64) < stop)
        ),
    )
    out = engine.process(frame, wall=0)
    assert out is not None and out.height == 1
    labels = ("http status", "5xx", "query")
    q = RunningQuery(spec, engine, "analytics.q1", prometheus_labels=labels, results=out.height)
    q.gauges = _gauges(out, labels)
    return q


@pytest.fixture
def runtime(tmp_path: Path, webhook: str) -> Iterator[SimpleNamespace]:
    log = LocalLog(tmp_path / "web", StreamLimits(max_bytes=1 << 30), fsync=False)
    log.append([b"a", b"b", b"c"])
    log.lost_records = BIG  # the log's own counter, at a magnitude :g printed as 1.23457e+07
    notifier = Notifier(retries=1, first_delay=0.01, timeout=5)
    notifier.send(f"{webhook}/200", {"alert": "a", "state": "firing", "window_start": "x"})
    notifier.send(f"{webhook}/400", {"alert": "a", "state": "firing", "window_start": "x"})
    wait_for(lambda: notifier.sent == 1 and notifier.failed == 1, "two notifications")
    runner = SimpleNamespace(queries={"q1": running_query()}, notifier=notifier)
    stats = DeliveryStats(delivered=BIG, rejected=2, commits=3, position=1)
    group = ConsumerGroup("web", log)
    archive = group.add(Counting())
    archive.stats.read, archive.stats.position, archive.stats.failures = BIG, 2, 1
    delivery = SimpleNamespace(stats=stats, runner=runner, group=group, table="logs.access")
    stream = SimpleNamespace(name="web", log=log, delivery=delivery)
    maintenance = MaintenanceSchedule(lambda: None, Tables())  # type: ignore[arg-type,return-value]
    access = maintenance.manage("logs.access", "ts")
    access.compacted_files, access.removed_files, access.passes = 20, 4, 2
    supervisor = Supervisor()
    release = threading.Event()

    def steady() -> None:
        release.wait()

    supervisor.spawn("steady", steady)

    def crash() -> None:
        raise RuntimeError("boom")

    crashed = supervisor.spawn("crashing", crash, restart=False)
    wait_for(lambda: crashed.dead, "the crash")
    syslog = SourceCounters(received=10, accepted=7, rejected=1)
    syslog.drop("backpressure", 2)
    syslog.extra["connections_idle_closed"] = 3
    syslog.gauges["connections"] = 2
    http = SourceCounters(received=8, accepted=4, rejected=1)
    http.drop("stream_full", 3)
    sources = [
        FixedSource("http", {"web": http}, []),
        FixedSource("syslog", {"web": syslog}, []),
        FixedSource("tail.app", {"web": SourceCounters(received=BIG, accepted=BIG)}, ["down"]),
    ]
    try:
        yield SimpleNamespace(
            streams={"web": stream},
            supervisor=supervisor,
            sources=sources,
            maintenance=maintenance,
            jobs=SimpleNamespace(stats={"daily": JobStats(runs=3, failures=1, rows=20)}),
            crawls=SimpleNamespace(
                stats={"landing": CrawlStats(runs=4, failures=1, files=2, rows=30)}
            ),
        )
    finally:
        release.set()
        supervisor.stop()
        notifier.close()
        log.close()


def scrape(runtime: Any) -> str:
    return render_metrics(build_registry(runtime)).decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, through prometheus-client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


def test_values_are_exact_at_any_magnitude(runtime: SimpleNamespace) -> None:
    text = scrape(runtime)
    # prometheus-client prints Go's float format; it reads back as exactly the integer.
    line = 'loglake_stream_records_delivered_total{stream="web"} 1.2345678e+07'
    assert line in text.splitlines()
    assert float(line.rsplit(" ", 1)[1]) == BIG
    found = samples(text)
    assert value(found, "loglake_stream_records_delivered_total", stream="web") == BIG
    assert value(found, "loglake_stream_lost_records_total", stream="web") == BIG
    # A stream's totals add every source's: 8 + 10 + BIG received.
    assert value(found, "loglake_stream_records_received_total", stream="web") == 18 + BIG
    assert value(found, "loglake_stream_records_accepted_total", stream="web") == 11 + BIG
    # Rejected by the HTTP source (1) and syslog (1), by the parser at delivery (2).
    assert value(found, "loglake_stream_records_rejected_total", stream="web") == 4
    assert value(found, "loglake_stream_records_refused_full_total", stream="web") == 3
    assert value(found, "loglake_stream_log_records_appended_total", stream="web") == 3
    assert value(found, "loglake_stream_next_offset", stream="web") == 3
    assert value(found, "loglake_stream_consumer_lag_records", stream="web") == 2
    assert value(found, "loglake_stream_max_bytes", stream="web") == 1 << 30
    assert value(found, "loglake_stream_commits_total", stream="web") == 3


def test_every_component_is_rendered(runtime: SimpleNamespace) -> None:
    found = samples(scrape(runtime))
    src = {"source": "syslog", "stream": "web"}
    assert value(found, "loglake_source_records_received_total", **src) == 10
    assert value(found, "loglake_source_records_accepted_total", **src) == 7
    assert value(found, "loglake_source_records_rejected_total", **src) == 1
    assert value(found, "loglake_source_records_dropped_total", reason="backpressure", **src) == 2
    assert value(found, "loglake_source_connections_idle_closed_total", **src) == 3
    assert value(found, "loglake_source_connections", **src) == 2
    assert value(found, "loglake_source_up", source="syslog") == 1
    assert value(found, "loglake_source_up", source="tail.app") == 0
    tail = {"source": "tail.app", "stream": "web"}
    assert value(found, "loglake_source_records_received_total", **tail) == BIG
    assert value(found, "loglake_worker_crashes_total", worker="crashing") == 1
    assert value(found, "loglake_worker_restarts_total", worker="crashing") == 0
    assert value(found, "loglake_worker_up", worker="crashing") == 0
    assert value(found, "loglake_worker_up", worker="steady") == 1
    note = "loglake_alert_webhook_notifications_total"
    assert value(found, note, stream="web", outcome="sent") == 1
    assert value(found, note, stream="web", outcome="failed") == 1
    assert value(found, note, stream="web", outcome="dropped") == 0
    assert value(found, "loglake_alert_notifier_up", stream="web") == 1
    assert value(found, "loglake_query_records_total", query="q1") == 4
    assert value(found, "loglake_query_windows_total", query="q1") == 1
    assert value(found, "loglake_query_result_rows_total", query="q1") == 1
    mark = runtime.streams["web"].delivery.runner.queries["q1"].engine.stats.watermark
    assert value(found, "loglake_query_watermark_seconds", query="q1") == mark / 1e6
    assert value(found, "loglake_metrics_collect_errors_total") == 0
    runner = {"stream": "web", "consumer": "archive"}
    assert value(found, "loglake_consumer_records_read_total", **runner) == BIG
    assert value(found, "loglake_consumer_position", **runner) == 2
    assert value(found, "loglake_consumer_failures_total", **runner) == 1
    assert value(found, "loglake_table_compacted_files_total", table="logs.access") == 20
    assert value(found, "loglake_table_maintenance_passes_total", table="logs.access") == 2
    # The names from before maintenance was per table: the figures of the stream's table.
    assert value(found, "loglake_stream_compacted_files_total", stream="web") == 20
    assert value(found, "loglake_stream_removed_files_total", stream="web") == 4


def test_result_labels_are_escaped_and_their_names_sanitised(runtime: SimpleNamespace) -> None:
    text = scrape(runtime)
    result = [ln for ln in text.splitlines() if ln.startswith("loglake_query_result{")]
    # The value with a quote, a backslash and a newline stays on one line, escaped.
    assert result == [
        'loglake_query_result{column="hits total",exported_query="5xx",http_status='
        r'"we\"ird \\ val\nue",query="q1",tag_5xx="5xx"} 3.0'
    ]
    found = samples(text)
    labels = {
        "query": "q1",
        "column": "hits total",
        "http_status": 'we"ird \\ val\nue',
        "tag_5xx": "5xx",
        "exported_query": "5xx",
    }
    assert value(found, "loglake_query_result", **labels) == 3


def test_label_names_are_valid_distinct_and_stable() -> None:
    names = label_names(["a b", "a_b", "query", "column", "9x", "__x", "", "ok", "é"])
    assert names == {
        "": "tag_",
        "9x": "tag_9x",
        "__x": "tag___x",
        "a b": "a_b",
        "a_b": "a_b_2",
        "column": "exported_column",
        "ok": "ok",
        "query": "exported_query",
        "é": "_",
    }
    assert label_names(["a_b", "a b"]) == {"a b": "a_b", "a_b": "a_b_2"}


def test_a_component_that_fails_to_read_costs_only_its_samples(runtime: SimpleNamespace) -> None:
    class Broken(FixedSource):
        def counters(self) -> Mapping[str, SourceCounters]:
            raise OSError("gone")

    runtime.sources.append(Broken("broken", {}, []))
    collector = RuntimeCollector(cast(Any, runtime))
    text = "".join(f"{s.name} {s.value}\n" for fam in collector.collect() for s in fam.samples)
    assert "loglake_metrics_collect_errors_total 1.0" in text
    assert "loglake_stream_records_delivered_total" in text


def test_a_delivery_counter_without_a_metric_is_still_shown(runtime: SimpleNamespace) -> None:
    @dataclasses.dataclass
    class NewerStats(DeliveryStats):
        batches_split: int = 7

    runtime.streams["web"].delivery.stats = NewerStats(delivered=1)
    text = scrape(runtime)
    assert "# TYPE loglake_unmapped_delivery_batches_split untyped" in text
    found = samples(text)
    assert value(found, "loglake_unmapped_delivery_batches_split", stream="web") == 7
    assert value(found, "loglake_stream_records_delivered_total", stream="web") == 1


# -- every counter a component keeps is on /metrics -------------------------------------------------


def numeric_fields(cls: type) -> set[str]:
    """Fields of a counter dataclass holding numbers (int, float, counts by key, sampled
    durations); lists of error texts and the lock are not counters."""
    out = set()
    for f in dataclasses.fields(cls):
        kind = str(f.type)
        if any(t in kind for t in ("int", "float")) and "list[str]" not in kind:
            out.add(f.name)
    return out


def numeric_properties(obj: Any) -> set[str]:
    """Public int/float/bool attributes and properties of ``obj`` (its counters and flags)."""
    out = set()
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            attr = getattr(obj, name)
        except Exception:
            continue
        if isinstance(attr, int | float) and not callable(attr):
            out.add(name)
    return out


def test_counter_maps_cover_every_numeric_field(tmp_path: Path) -> None:
    assert numeric_fields(DeliveryStats) == set(metrics.DELIVERY_FIELDS)
    assert numeric_fields(QueryStats) == set(metrics.QUERY_FIELDS)
    assert numeric_fields(SourceCounters) == set(metrics.SOURCE_FIELDS)
    assert numeric_fields(RunnerStats) == set(metrics.RUNNER_FIELDS)
    assert numeric_fields(MaintenanceStats) == set(metrics.MAINTENANCE_FIELDS)
    assert numeric_fields(JobStats) == set(metrics.JOB_FIELDS)
    assert numeric_fields(CrawlStats) == set(metrics.CRAWL_FIELDS)
    assert numeric_fields(Worker) | {"running"} == set(metrics.WORKER_FIELDS)
    notifier = Notifier()
    try:
        assert numeric_properties(notifier) - {
            "retries",
            "first_delay",
            "timeout",
            "queue_size",
        } == set(metrics.NOTIFIER_FIELDS)
    finally:
        notifier.close()
    log = LocalLog(tmp_path / "log", fsync=False)
    try:
        assert numeric_properties(log) - {"fsync", "created"} | {"fsync_seconds"} == set(
            metrics.LOG_FIELDS
        )
    finally:
        log.close()


def test_every_mapped_metric_is_in_a_scrape(runtime: SimpleNamespace) -> None:
    found = {name for name, _ in samples(scrape(runtime))}
    maps: list[Mapping[str, str | tuple[str, ...]]] = [
        metrics.DELIVERY_FIELDS,
        metrics.QUERY_FIELDS,
        metrics.NOTIFIER_FIELDS,
        metrics.WORKER_FIELDS,
        metrics.LOG_FIELDS,
        metrics.RUNNER_FIELDS,
        metrics.MAINTENANCE_FIELDS,
        metrics.STREAM_MAINTENANCE_FIELDS,
        metrics.JOB_FIELDS,
        metrics.CRAWL_FIELDS,
        {k: v for k, v in metrics.SOURCE_FIELDS.items() if "{key}" not in v},
    ]
    wanted = {
        m for fields in maps for v in fields.values() for m in ((v,) if isinstance(v, str) else v)
    }
    assert wanted - found == set()
    # Every declared family has samples over these components (none silently empty).
    assert set(metrics.METRICS) - found == set()
    # No numeric field fell through to the untyped fallback.
    assert not [n for n in found if n.startswith("loglake_unmapped_")]


# -- a real server ------------------------------------------------------------------------------------


def test_a_real_server_scrape_counts_what_was_posted(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"".join(b'{"line": %d}\n' % i for i in range(300)))
    srv = Server.started(
        tmp_path / "lake",
        '[streams.web]\nformat = "json"\ntable = "logs.app"\nbuffer_seconds = 0.2\n\n'
        '[streams.files]\nformat = "json"\ntable = "logs.files"\nbuffer_seconds = 0.2\n\n'
        f'[tail.app]\npaths = ["{logs}/app.log"]\nstream = "files"\npoll_seconds = 0.1\n',
    )
    try:
        body = b"".join(b'{"n": %d, "msg": "x"}\n' % i for i in range(1000)) + b"not json\n"
        status, reply, _ = request(
            "POST",
            f"{srv.url}/v1/streams/web/records",
            body,
            {"Content-Type": "application/x-ndjson"},
        )
        assert status == 200 and reply["accepted"] == 1000, reply
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def scraped() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            with opener.open(f"{srv.url}/metrics", timeout=30) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return samples(resp.read().decode())

        tail = {"source": "tail.app", "stream": "files"}

        def settled(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> bool:
            return (
                value(found, "loglake_source_records_accepted_total", **tail) == 300
                and value(found, "loglake_stream_records_delivered_total", stream="files") == 300
                and value(found, "loglake_stream_consumer_lag_records", stream="web") == 0
            )

        found = scraped()
        deadline = time.monotonic() + 60
        while not settled(found):
            assert time.monotonic() < deadline, "the tail or delivery did not catch up"
            time.sleep(0.2)
            found = scraped()
        received = value(found, "loglake_stream_records_received_total", stream="web")
        accepted = value(found, "loglake_stream_records_accepted_total", stream="web")
        assert received == 1001
        assert accepted == 1000
        assert value(found, "loglake_stream_records_rejected_total", stream="web") == 1
        assert value(found, "loglake_stream_records_delivered_total", stream="web") == 1000
        assert value(found, "loglake_stream_log_records_appended_total", stream="web") == 1000
        http = {"source": "http", "stream": "web"}
        assert value(found, "loglake_source_records_received_total", **http) == 1001
        assert value(found, "loglake_source_records_rejected_total", **http) == 1
        # The tail's lines reach the stream's totals too (they used to show 0).
        assert value(found, "loglake_source_records_received_total", **tail) == 300
        assert value(found, "loglake_stream_records_received_total", stream="files") == 300
        assert value(found, "loglake_stream_records_accepted_total", stream="files") == 300
        assert value(found, "loglake_source_up", source="tail.app") == 1
        assert value(found, "loglake_worker_crashes_total", worker="loglake-maintenance") == 0
        assert value(found, "loglake_metrics_collect_errors_total") == 0
        assert all(math.isfinite(v) for v in found.values())
    finally:
        srv.stop()


def test_every_metric_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "streaming.md").read_text()
    assert [name for name in metrics.METRICS if f"`{name}`" not in doc] == []
