"""The consumer runner and group in-process: a real durable log, consumers with a durable store of
their own (a JSON file written atomically with the offset, as the lake's commits are)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loglake.stream.consumer import ConsumerGroup, ConsumerRunner
from loglake.stream.local import LocalLog, Records, StreamLimits
from loglake.supervise import Supervisor

DEADLINE_S = 120.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class FileConsumer:
    """Keeps every record it commits in a JSON file, with the offset the commit covers; fails on
    purpose when told to (the ``fail`` list: one entry per failure, raised by the next flush)."""

    name = "file"

    def __init__(self, path: Path, group: ConsumerGroup | None = None, every: int = 10) -> None:
        self.path = path
        self.group = group
        self.every = every  # commit when this many records are pending
        self.fail: list[BaseException] = []
        self.held: list[tuple[int, str]] = []
        self.resumes = 0
        self.resets = 0
        self.closed = False
        self._committed: int | None = None

    def _load(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {"offset": 0, "records": []}

    @property
    def records(self) -> list[list[object]]:
        return list(self._load()["records"])  # type: ignore[call-overload]

    def resume(self) -> int:
        self.resumes += 1
        self.held = []
        self._committed = int(self._load()["offset"])  # type: ignore[call-overload]
        return self._committed

    def take(self, records: Records) -> int:
        committed = self._committed or 0
        for i, value in enumerate(records.values.to_pylist()):
            if records.first + i >= committed:  # after a resume some may be committed already
                self.held.append((records.first + i, value.decode()))
        return len(self.held)

    def due(self, pending: int, since_flush_s: float) -> bool:
        return pending >= self.every

    def flush(self, position: int) -> None:
        if self.fail:
            raise self.fail.pop(0)
        state = self._load()
        state["records"] = [*state["records"], *self.held]  # type: ignore[misc]
        state["offset"] = position
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)  # the data and the offset, in one atomic step
        self.held = []
        self._committed = position
        if self.group is not None:
            self.group.progress()

    def idle(self, position: int) -> None:
        pass

    def check(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def reset(self) -> None:
        self.resets += 1
        self.held = []

    def close(self) -> None:
        self.closed = True

    def committed(self) -> int | None:
        return self._committed


@pytest.fixture()
def stream_log(tmp_path: Path) -> Iterator[LocalLog]:
    # Small segments, so trimming has whole segments to drop.
    log = LocalLog(tmp_path / "log", StreamLimits(segment_bytes=1 << 16), fsync=False)
    yield log
    log.close()


def lines(first: int, count: int) -> list[bytes]:
    return [f"record {i}".encode() for i in range(first, first + count)]


def test_every_record_is_committed_once_across_failures(
    tmp_path: Path, stream_log: LocalLog
) -> None:
    consumer = FileConsumer(tmp_path / "store.json", every=7)
    # A disk error (transient) and a data error (not), each in the middle of a commit.
    consumer.fail = [OSError(28, "No space left on device"), ValueError("cannot cast")]
    runner = ConsumerRunner("app", stream_log, consumer)
    runner.start()
    try:
        stream_log.append(lines(0, 100))
        wait_for(lambda: consumer.committed() == 100, "100 records committed")
        stream_log.append(lines(100, 50))
        wait_for(lambda: consumer.committed() == 150, "150 records committed")
    finally:
        runner.stop()
    committed = consumer.records
    assert [offset for offset, _ in committed] == list(range(150))
    assert [text for _, text in committed] == [f"record {i}" for i in range(150)]
    assert (runner.stats.failures, runner.stats.transient_failures) == (2, 1)
    assert consumer.resets == 2 and consumer.resumes == 3
    assert runner.stats.errors == [
        "delivery failed in the file consumer: OSError: [Errno 28] No space left on device",
        "delivery failed in the file consumer: ValueError: cannot cast",
    ]
    assert consumer.closed


def test_stop_commits_what_the_log_holds(tmp_path: Path, stream_log: LocalLog) -> None:
    consumer = FileConsumer(tmp_path / "store.json", every=10**9)  # never due on its own
    runner = ConsumerRunner("app", stream_log, consumer)
    runner.start()
    stream_log.append(lines(0, 33))
    wait_for(lambda: runner.stats.read == 33, "the records read")
    assert consumer.committed() == 0
    runner.stop()
    assert consumer.committed() == 33
    assert len(consumer.records) == 33


def test_a_restarted_consumer_resumes_after_its_last_commit(
    tmp_path: Path, stream_log: LocalLog
) -> None:
    store = tmp_path / "store.json"
    first = FileConsumer(store, every=5)
    runner = ConsumerRunner("app", stream_log, first)
    runner.start()
    stream_log.append(lines(0, 20))
    wait_for(lambda: first.committed() == 20, "20 committed")
    runner.stop()
    stream_log.append(lines(20, 5))
    second = FileConsumer(store, every=5)
    runner = ConsumerRunner("app", stream_log, second)
    runner.start()
    try:
        wait_for(lambda: second.committed() == 25, "25 committed")
        assert runner.ready.is_set()
    finally:
        runner.stop()
    assert [o for o, _ in second.records] == list(range(25))


def test_the_log_is_trimmed_at_the_slowest_consumer(tmp_path: Path, stream_log: LocalLog) -> None:
    group = ConsumerGroup("app", stream_log)
    fast = FileConsumer(tmp_path / "fast.json", group, every=100)
    slow = FileConsumer(tmp_path / "slow.json", group, every=100)
    fast_runner = group.add(fast)
    slow_runner = group.add(slow)  # registered, not started: it has not said what it needs
    fast_runner.start()
    for _ in range(10):  # 10 appends of 50 kB: several 64 kB segments
        stream_log.append([b"x" * 1000] * 50)
    wait_for(lambda: fast.committed() == 500, "the fast consumer's commit")
    assert stream_log.start_offset == 0  # the slow consumer still needs everything
    slow_runner.start()
    try:
        wait_for(lambda: slow.committed() == 500, "the slow consumer's commit")
        wait_for(lambda: stream_log.start_offset > 0, "the log trimmed")
        assert group.lag() == 0
    finally:
        fast_runner.stop()
        slow_runner.stop()
    assert len(slow.records) == 500


def test_the_runner_runs_under_the_supervisor(tmp_path: Path, stream_log: LocalLog) -> None:
    supervisor = Supervisor()
    consumer = FileConsumer(tmp_path / "store.json", every=1)
    runner = ConsumerRunner("app", stream_log, consumer)
    runner.start(supervisor)
    try:
        names = [w.name for w in supervisor.workers()]
        assert names == ["loglake-file-app"]
        stream_log.append(lines(0, 3))
        wait_for(lambda: consumer.committed() == 3, "3 committed")
        assert runner.alive and supervisor.dead() == []
    finally:
        runner.stop()
    assert supervisor.workers() == []  # forgotten once stopped by its owner


def test_a_crashed_worker_is_logged_counted_and_restarted_or_reported_dead() -> None:
    supervisor = Supervisor()
    runs: list[int] = []
    done = threading.Event()

    def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        done.set()

    worker = supervisor.spawn("flaky", flaky, restart=True)
    assert done.wait(DEADLINE_S)
    wait_for(lambda: worker.finished, "the restarted run to end")
    assert (worker.crashes, worker.restarts, worker.dead) == (1, 1, False)
    assert worker.last_error == "RuntimeError: first run fails"

    def broken() -> None:
        raise KeyError("state cannot be rebuilt")

    dead = supervisor.spawn("broken", broken, restart=False)
    wait_for(lambda: dead.dead, "the worker reported dead")
    assert dead.crashes == 1 and not dead.running
    assert supervisor.dead() == [
        "worker broken stopped after an error (KeyError: 'state cannot be rebuilt'); see the log"
    ]
