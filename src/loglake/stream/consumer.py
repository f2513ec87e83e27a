"""Consumers of a stream, and the runner that feeds them.

A stream (its durable :class:`LocalLog`) has one or more consumers: the lake writer is one; an
output to another system would be another. A consumer takes records in offset order, makes them
durable on its side (a commit that records the offset it covers) and says which offset it has
committed. :class:`ConsumerRunner` owns everything else, once for all consumers: the read loop, the
pacing of reads, when to commit, the back-off after a failure (transient or not) and resuming from
what the consumer committed. :class:`ConsumerGroup` trims the log at the lowest offset any of its
consumers still needs, so no consumer loses records another has already committed.

The exactly-once rule every consumer follows: its commit carries the offset it covers, in the same
atomic step as the data; on :meth:`Consumer.resume` it reads that offset back and starts there.
Records before it are never written twice; records after it are read again (never lost).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from loglake.errors import is_transient

if TYPE_CHECKING:
    from loglake.stream.local import Records
    from loglake.stream.log import StreamLog
    from loglake.supervise import Supervisor

log = logging.getLogger(__name__)

READ_RECORDS = 50_000  # records read (and handed to the consumer) at most at once
READ_INTERVAL_S = (
    0.25  # records trickling in are read at most this often (each take has a fixed cost)
)
IDLE_INTERVAL_S = 1.0  # how often an idle consumer is told so (time-driven work: closing windows)
RETRY_FIRST_S = 1.0  # back-off after a failure, doubling up to RETRY_MAX_S
RETRY_MAX_S = 30.0


class Consumer(Protocol):
    """One consumer of a stream. Its methods run in the runner's thread, one at a time, except
    :meth:`committed` (any thread). A method that raises makes the runner back off, call
    :meth:`reset`, then :meth:`resume` again: nothing half-done may be visible by then."""

    #: Names the consumer in logs, metrics and thread names ("lake" for the lake writer).
    name: str

    def resume(self) -> int:
        """The offset to read from: the lowest one not yet committed on the consumer's side.
        Called at start and after every failure. Raises when the committed state cannot be read
        (the runner retries)."""
        ...

    def take(self, records: Records) -> int:
        """Take ``records`` (the next in offset order; possibly some already committed after a
        resume, which must be skipped). Returns how many it now holds uncommitted. Bad records
        are the consumer's to reject; raising means the consumer itself cannot go on."""
        ...

    def due(self, pending: int, since_flush_s: float) -> bool:
        """Whether the ``pending`` records taken (``since_flush_s`` after the last flush) should be
        committed now."""
        ...

    def flush(self, position: int) -> None:
        """Commit everything taken, covering offsets below ``position``. May hand the commit to a
        thread of its own and return; its failure then surfaces from :meth:`check`."""
        ...

    def idle(self, position: int) -> None:
        """Nothing was taken for a while (every :data:`IDLE_INTERVAL_S` then): time-driven work."""
        ...

    def check(self) -> None:
        """Raise the failure of work the consumer runs in the background, if any."""
        ...

    def finish(self) -> None:
        """Stopping, after the last :meth:`flush`: wait for background commits to end."""
        ...

    def reset(self) -> None:
        """After a failure: wait for background work, drop everything uncommitted."""
        ...

    def close(self) -> None:
        """The runner stops for good: release files and threads. Must not raise."""
        ...

    def committed(self) -> int | None:
        """The offset below which the consumer needs no record any more (None: not known yet).
        After each commit the consumer calls its group's :meth:`ConsumerGroup.progress`."""
        ...


@dataclass
class RunnerStats:
    """What a runner did (read any time)."""

    position: int = 0  # the next offset to read
    read: int = 0  # records read from the log and handed to the consumer
    failures: int = 0  # failures that made the runner resume from the committed state
    transient_failures: int = 0  # of those, failures a retry may fix (disk, network, catalog)
    errors: list[str] = field(default_factory=list)  # the latest failures, for /readyz


class ConsumerRunner:
    """Feeds one consumer from one log in a thread of its own, until :meth:`stop`."""

    def __init__(
        self,
        stream: str,
        log: StreamLog,
        consumer: Consumer,
        *,
        read_records: int = READ_RECORDS,
    ) -> None:
        self.stream = stream
        self.log = log
        self.consumer = consumer
        self.stats = RunnerStats()
        self.ready = threading.Event()  # set once the consumer has resumed
        self._read_records = read_records
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._supervisor: Supervisor | None = None

    @property
    def thread_name(self) -> str:
        return f"loglake-{self.consumer.name}-{self.stream}"

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Start the thread (under ``supervisor`` when given: a crash of the loop itself, which
        handles its consumer's failures, is then logged, counted and restarted)."""
        if supervisor is not None:
            self._supervisor = supervisor
            worker = supervisor.spawn(self.thread_name, self.run, restart=True)
            self._thread = worker.thread
        else:
            self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        """False once a started thread has ended without being stopped."""
        if self._stop.is_set() or self._thread is None:
            return True
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Flush what the log holds now, then stop (graceful shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._supervisor is not None:
            self._supervisor.forget(self.thread_name)
        self.consumer.close()

    def run(self) -> None:
        """Feed the consumer until stopped; after a failure, back off and resume from what it
        committed (nothing uncommitted is visible, so nothing is lost or written twice)."""
        backoff = RETRY_FIRST_S
        while True:
            try:
                self._feed_until_stopped()
                return
            except BaseException as exc:
                # Also a library's panic (pyo3's PanicException is a BaseException): the loop must
                # not die on it; only interpreter shutdown ends it.
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                transient = is_transient(exc)
                reason = f"{type(exc).__name__}: {exc}"
                self.stats.failures += 1
                self.stats.transient_failures += transient
                log.log(
                    logging.WARNING if transient else logging.ERROR,
                    "stream %s: delivery failed in the %s consumer (%s%s); retrying from its last "
                    "commit in %.0f s",
                    self.stream,
                    self.consumer.name,
                    reason,
                    ", transient" if transient else "",
                    backoff,
                    exc_info=True,
                    extra={
                        "fields": {
                            "stream": self.stream,
                            "consumer": self.consumer.name,
                            "reason": reason,
                            "transient": transient,
                        }
                    },
                )
                self.stats.errors.append(
                    f"delivery failed in the {self.consumer.name} consumer: {reason}"
                )
                del self.stats.errors[:-10]
                try:
                    self.consumer.reset()
                except Exception as again:  # resume() starts from the committed state anyway
                    log.warning("stream %s: reset after a failure failed: %s", self.stream, again)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, RETRY_MAX_S)

    def _feed_until_stopped(self) -> None:
        consumer = self.consumer
        position = max(consumer.resume(), self.log.start_offset)
        self.stats.position = position
        self.ready.set()
        pending = 0
        last_flush = last_read = idle_at = time.monotonic()
        while True:
            consumer.check()
            stopping = self._stop.is_set()
            if not stopping:
                self.log.wait(position, timeout=0.1)
                # Read at most every READ_INTERVAL_S unless a full read is waiting: each take has
                # a fixed cost (a query plan, compiled patterns) a trickle would pay many times.
                delay = last_read + READ_INTERVAL_S - time.monotonic()
                if delay > 0 and self.log.backlog(position) < self._read_records:
                    self._stop.wait(delay)
            records = self.log.read_records(position, max_records=self._read_records)
            now = time.monotonic()
            if len(records):
                last_read = now
                pending = consumer.take(records)
                position = records.end
                self.stats.read += len(records)
                self.stats.position = position
                # The clock after the take: a batch that took the buffer interval past its end is
                # committed now, not one read later (a quarter of a second more to freshness).
                now = time.monotonic()
            if pending and (stopping or consumer.due(pending, now - last_flush)):
                consumer.flush(position)
                pending = 0
                last_flush = idle_at = time.monotonic()
            elif not pending and now - idle_at >= IDLE_INTERVAL_S:
                idle_at = now
                consumer.idle(position)
            if stopping and not len(records):
                break
        consumer.finish()


class ConsumerGroup:
    """The consumers of one stream: trims the log at the lowest offset any of them still needs."""

    def __init__(self, stream: str, log: StreamLog) -> None:
        self.stream = stream
        self.log = log
        self.runners: list[ConsumerRunner] = []
        self._lock = threading.Lock()

    def add(self, consumer: Consumer, **options: int) -> ConsumerRunner:
        """A runner for ``consumer`` (started by the caller)."""
        runner = ConsumerRunner(self.stream, self.log, consumer, **options)
        with self._lock:
            self.runners.append(runner)
        return runner

    def progress(self) -> None:
        """A consumer committed: drop what every consumer has committed past. Any thread."""
        with self._lock:
            offsets = [r.consumer.committed() for r in self.runners]
        if offsets and all(o is not None for o in offsets):
            self.log.trim(min(o for o in offsets if o is not None))

    def lag(self) -> int:
        """Records in the log not yet committed by the slowest consumer."""
        with self._lock:
            offsets = [r.consumer.committed() for r in self.runners]
        known = [o for o in offsets if o is not None]
        if not known:
            return 0
        return self.log.backlog(min(known))
