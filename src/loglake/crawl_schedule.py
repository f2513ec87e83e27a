"""Scheduled crawls: ``[crawls.NAME]`` run by ``loglake serve``, as ``loglake crawl`` runs by hand.

Each scheduled crawl is :func:`loglake.crawl.crawl` over its include paths, so a run registers only
the files no earlier crawl registered (the ingest ledger remembers them by path, size and
modification time): files dropped into a crawled folder appear in its table at the next run, once.
:class:`CrawlSchedule` runs the due crawls one at a time in one supervised thread of the server
(``loglake-crawls``), the way :class:`loglake.analytics.jobs.JobSchedule` runs ETL jobs: a run that
fails is logged, counted and recorded, and the crawl runs again at its next scheduled time.

Every run is recorded in ``state/crawls.db``, a :class:`loglake.analytics.jobs.JobHistory` of its
own (start, end, status, rows registered, and a note of the files registered and left out), which
``loglake crawl --list`` shows. Like the jobs' history it is bookkeeping only: what was crawled is
in the ledger and the tables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loglake.analytics.jobs import JobHistory
from loglake.errors import LoglakeError

if TYPE_CHECKING:
    from loglake.config import Config, ScheduledCrawlConfig
    from loglake.crawl import CrawlReport

log = logging.getLogger("loglake.crawls")

#: How often the schedule looks at the clock at most (a crawl's time is met within this).
_TICK_S = 0.5
#: The history's ``mode`` column for a crawl's runs (a job's is full or incremental).
_MODE = "crawl"


class NoSuchCrawlError(LoglakeError):
    """A scheduled crawl name that the config does not declare."""

    status = 404
    code = "no_such_crawl"
    exit_code = 2


def crawl_history(config: Config) -> JobHistory:
    """The history of the scheduled crawls' runs (``state/crawls.db``); close it after use."""
    return JobHistory(history_path(config))


def history_path(config: Config) -> Path:
    return config.state_dir / "crawls.db"


@dataclass(frozen=True)
class CrawlRun:
    """What one scheduled run registered: files and rows, and the files it left out."""

    name: str
    files: int
    rows: int
    left_out: dict[str, str]
    seconds: float

    @property
    def note(self) -> str:
        """One line for the history: ``2 new file(s), 0 left out`` and the first left out."""
        text = f"{self.files} new file(s), {len(self.left_out)} left out"
        if self.left_out:
            name, why = next(iter(self.left_out.items()))
            text += f" (first: {name}: {why})"
        return text[:2000]


def get_crawl(config: Config, name: str) -> ScheduledCrawlConfig:
    """The scheduled crawl ``name`` of ``config``; NoSuchCrawlError listing the crawls there are."""
    spec = config.crawls.get(name)
    if spec is None:
        known = ", ".join(sorted(config.crawls)) or "none; declare one as [crawls.NAME]"
        raise NoSuchCrawlError(f"no scheduled crawl named {name!r}; crawls: {known}")
    return spec


def run_crawl(config: Config, name: str, history: JobHistory) -> CrawlRun:
    """Run scheduled crawl ``name`` once and record the run in ``history``.

    Raises what :func:`loglake.crawl.crawl` raises (CrawlError, LakeError...), after recording the
    run as failed with the error's message.
    """
    from loglake.crawl import crawl

    spec = get_crawl(config, name)
    run_id = history.start(name, _MODE)
    started = time.monotonic()
    try:
        report = crawl(
            config, paths=list(spec.paths), table=spec.table or None, convert=spec.convert
        )
    except BaseException as exc:
        history.finish(run_id, "failed", error=f"{exc}"[:2000] or type(exc).__name__)
        raise
    result = CrawlRun(
        name,
        _registered(report),
        sum(report.rows.values()),
        dict(report.left_out),
        time.monotonic() - started,
    )
    history.finish(run_id, "ok", result.rows, result.note)
    return result


def _registered(report: CrawlReport) -> int:
    """Files of the report's tables that were registered (not left out while registering)."""
    return sum(1 for t in report.tables for f in t.files if f.input.name not in report.left_out)


@dataclass
class CrawlStats:
    """Counters of one scheduled crawl in this server process (``/metrics``, label ``crawl``)."""

    runs: int = 0  # scheduled runs started
    failures: int = 0  # of those, the ones that failed (logged; run again at the next time)
    files: int = 0  # files the runs registered
    rows: int = 0  # rows the runs registered


class CrawlSchedule:
    """Runs the config's scheduled crawls inside ``loglake serve``, one at a time, in one thread.

    ``ready`` is called (and waited for) before the first run: the server's catalog, opened in the
    background, so that two threads never import pyiceberg at once. A run that fails is logged
    and recorded; the crawl is tried again at its next scheduled time. :meth:`run` never raises
    for a crawl's failure; the supervisor restarts it if something else makes it raise.
    """

    def __init__(self, config: Config, ready: Callable[[], Any] = lambda: None):
        self.config = config
        self._ready = ready
        self._stop = threading.Event()
        self.stats = {name: CrawlStats() for name in config.crawls}
        # Files left out that were logged already: a file stays left out at every run until it
        # is fixed, and the log says so once per server run, not once per run of the crawl.
        self._logged: dict[str, set[tuple[str, str]]] = {name: set() for name in config.crawls}

    @property
    def scheduled(self) -> list[str]:
        return sorted(self.config.crawls)

    def run(self) -> None:
        """Run due crawls until :meth:`stop`."""
        self._ready()
        history = crawl_history(self.config)
        try:
            while not self._stop.is_set():
                now = datetime.now(UTC)
                for name in self.scheduled:
                    if self._stop.is_set():
                        break
                    spec = self.config.crawls[name].schedule_spec
                    due = spec.next_run(history.last_start(name), now)
                    if due is not None and due <= now:
                        self._run_one(name, history)
                self._stop.wait(_TICK_S)
        finally:
            history.close()

    def _run_one(self, name: str, history: JobHistory) -> None:
        stats = self.stats[name]
        stats.runs += 1
        try:
            result = run_crawl(self.config, name, history)
        except Exception as exc:
            stats.failures += 1
            log.error(
                "crawl %s failed: %s; it runs again at its next scheduled time",
                name,
                exc,
                exc_info=not isinstance(exc, LoglakeError),
                extra={"fields": {"crawl": name, "reason": str(exc)}},
            )
            return
        stats.files += result.files
        stats.rows += result.rows
        fields = {"crawl": name, "files": result.files, "rows": result.rows}
        if result.files:
            log.info(
                "crawl %s: %s, %d rows in %.2f s",
                name,
                result.note,
                result.rows,
                result.seconds,
                extra={"fields": {**fields, "left_out": len(result.left_out)}},
            )
        for path, why in result.left_out.items():
            if (path, why) in self._logged[name]:
                continue
            self._logged[name].add((path, why))
            log.warning(
                "crawl %s left out %s: %s",
                name,
                path,
                why,
                extra={"fields": {"crawl": name, "path": path, "reason": why}},
            )

    def stop(self) -> None:
        self._stop.set()
