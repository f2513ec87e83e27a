"""One supervisor for every worker thread of ``loglake serve``.

Each long-running thread (a stream consumer, a table's maintenance, a source's listener, an alert
notifier) is started through :meth:`Supervisor.spawn`. When its function raises, the supervisor logs
the error with its traceback, counts the crash and, for a worker marked ``restart=True``, runs the
function again after a back-off (1 s doubling to 30 s); a worker that must not be restarted (its
state cannot be rebuilt) is reported dead instead. ``/readyz`` answers 503 while a worker is dead
and ``/metrics`` shows every worker's crashes and whether it runs, so no thread dies unnoticed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("loglake.supervise")

_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 30.0


@dataclass
class Worker:
    """One supervised thread: its name, counters and state (read any time)."""

    name: str
    restart: bool
    crashes: int = 0  # times its function raised
    restarts: int = 0  # times it was started again after a crash
    last_error: str = ""
    dead: bool = False  # crashed and not restarted (or the supervisor gave up)
    finished: bool = False  # its function returned (a normal stop)
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and not self.dead


class Supervisor:
    """Starts worker threads and watches them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, Worker] = {}
        self._stopping = threading.Event()

    def spawn(
        self,
        name: str,
        target: Callable[[], None],
        *,
        restart: bool = True,
        daemon: bool = True,
    ) -> Worker:
        """Run ``target()`` in a new thread named ``name`` under supervision and return its
        :class:`Worker`. ``restart``: run ``target`` again after a crash (only for functions that
        rebuild their state from what is durable). A name already running raises ValueError."""
        worker = Worker(name, restart)
        with self._lock:
            old = self._workers.get(name)
            if old is not None and old.running:
                raise ValueError(f"a worker named {name!r} is running already")
            self._workers[name] = worker
        worker.thread = threading.Thread(
            target=self._run, args=(worker, target), name=name, daemon=daemon
        )
        worker.thread.start()
        return worker

    def _run(self, worker: Worker, target: Callable[[], None]) -> None:
        backoff = _BACKOFF_FIRST_S
        while True:
            try:
                target()
                worker.finished = True
                return
            except BaseException as exc:
                # A library's panic (pyo3's PanicException) is a BaseException too; only the
                # interpreter's own exits end the thread silently.
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                worker.crashes += 1
                worker.last_error = f"{type(exc).__name__}: {exc}"
                again = worker.restart and not self._stopping.is_set()
                log.error(
                    "worker %s crashed (%s); %s",
                    worker.name,
                    worker.last_error,
                    f"restarting in {backoff:.0f} s" if again else "not restarted",
                    exc_info=True,
                    extra={"fields": {"worker": worker.name, "reason": worker.last_error}},
                )
                if not again:
                    worker.dead = True
                    return
            if self._stopping.wait(backoff):
                worker.finished = True
                return
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
            worker.restarts += 1

    def workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers.values())

    def forget(self, name: str) -> None:
        """Stop watching the worker ``name`` (its thread has been stopped by its owner)."""
        with self._lock:
            self._workers.pop(name, None)

    def dead(self) -> list[str]:
        """One line per dead worker, for /readyz."""
        return [
            f"worker {w.name} stopped after an error ({w.last_error}); see the log"
            for w in self.workers()
            if w.dead
        ]

    def stop(self) -> None:
        """Shutdown: crashed workers are no longer restarted (their owners stop the rest)."""
        self._stopping.set()


#: Starts ``target()`` in a new thread named ``name`` and returns the thread (to join it at stop).
Spawn = Callable[[str, Callable[[], None]], threading.Thread]


def plain_thread(name: str, target: Callable[[], None]) -> threading.Thread:
    """A :data:`Spawn` without supervision (a daemon thread), for a component used on its own."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def supervised(supervisor: Supervisor, restart: bool) -> Spawn:
    """A :data:`Spawn` that runs each thread under ``supervisor``: a crash is logged, counted,
    shown on /readyz and /metrics, and, with ``restart``, the function runs again after a back-off
    (only for a function that rebuilds its state from what is durable)."""

    def spawn(name: str, target: Callable[[], None]) -> threading.Thread:
        thread = supervisor.spawn(name, target, restart=restart).thread
        assert thread is not None  # set by spawn before it returns
        return thread

    return spawn
