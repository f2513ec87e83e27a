"""The embedded durable log: round trips, limits, recovery of torn tails, real SIGKILL crashes."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from loglake.errors import LoglakeError
from loglake.stream.local import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    V1_HEADER,
    EmptyRecordError,
    LocalLog,
    RecordTooLargeError,
    StreamError,
    StreamFullError,
    StreamLimits,
)

# The crash test's child process and the test must agree on what record n holds.
PAYLOAD_SRC = """
def payload(n):
    return b"rec-%d:" % n + bytes([65 + n % 26]) * (n * 7919 % 300)
"""
_ns: dict[str, Any] = {}
exec(PAYLOAD_SRC, _ns)
payload: Callable[[int], bytes] = _ns["payload"]

TINY = StreamLimits(segment_bytes=4096, index_bytes=512)


def records(first: int, count: int) -> list[bytes]:
    return [payload(n) for n in range(first, first + count)]


def read_all(log: LocalLog, offset: int = 0) -> list[tuple[int, bytes]]:
    """Everything from ``offset`` to the end, in small reads so segment boundaries are crossed."""
    out: list[tuple[int, bytes]] = []
    while batch := log.read(offset, max_records=97):
        out.extend(batch)
        offset = batch[-1][0] + 1
    return out


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.log"))


def fill(log: LocalLog, count: int, batch: int = 10) -> None:
    """Append ``count`` numbered records in calls of ``batch``, checking the offsets returned."""
    end = log.next_offset + count
    while (first := log.next_offset) < end:
        n = min(batch, end - first)
        assert log.append(records(first, n)) == (first, first + n)


def test_round_trip_across_segments(tmp_path: Path) -> None:
    with LocalLog(tmp_path / "log", TINY, fsync=False) as log:
        assert (log.start_offset, log.next_offset, log.read(0)) == (0, 0, [])
        assert log.append([]) == (0, 0)
        fill(log, 1000, batch=7)
        assert log.next_offset == 1000
        end = log.next_offset
        files = segment_files(tmp_path / "log")
        assert len(files) > 10
        assert files[0].name == "00000000000000000000.log"
        assert all(f.stat().st_size <= 4096 for f in files)
        assert log.size_bytes == sum(f.stat().st_size for f in files)

        everything = read_all(log)
        assert [o for o, _ in everything] == list(range(end))
        assert all(data == payload(o) for o, data in everything)

        bases = [int(f.name[:20]) for f in files]
        for offset in [0, 1, 5, bases[3], bases[3] - 1, bases[3] + 1, bases[-1], end - 1, 501]:
            got = log.read(offset, max_records=3)
            assert got == [(o, payload(o)) for o in range(offset, min(offset + 3, end))]
        assert log.read(end) == []
        assert log.read(end + 100) == []


def test_index_keeps_reads_correct_inside_big_segments(tmp_path: Path) -> None:
    limits = StreamLimits(segment_bytes=1 << 20, index_bytes=2048)
    with LocalLog(tmp_path / "log", limits, fsync=False) as log:
        fill(log, 6000, batch=250)
        # Sealed segments are indexed lazily on their first read; the active one as it is written.
        for offset in random.Random(7).sample(range(6000), 200):
            assert log.read(offset, max_records=1) == [(offset, payload(offset))]
    with LocalLog(tmp_path / "log", limits, fsync=False) as log:
        for offset in [0, 2999, 3000, 4500, 5999]:
            assert log.read(offset, max_records=2)[0] == (offset, payload(offset))


def test_read_limits(tmp_path: Path) -> None:
    with LocalLog(tmp_path / "log", TINY, fsync=False) as log:
        log.append([b"a" * 100] * 50)
        assert len(log.read(0, max_records=7)) == 7
        got = log.read(10, max_bytes=350)
        assert [o for o, _ in got] == [10, 11, 12]  # a 4th payload would pass 350 bytes
        assert log.read(10, max_bytes=1) == [(10, b"a" * 100)]  # one record even if too big
        with pytest.raises(StreamError, match="offset must be"):
            log.read(-1)


def test_reopen_keeps_data_and_offsets(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with LocalLog(path, TINY) as log:
        fill(log, 300)
    with LocalLog(path, TINY) as log:
        assert (log.start_offset, log.next_offset) == (0, 300)
        assert log.append([b"after"]) == (300, 301)
        assert log.read(299) == [(299, payload(299)), (300, b"after")]
    with LocalLog(path, TINY) as log:
        assert log.next_offset == 301
        assert [o for o, _ in read_all(log)] == list(range(301))


def test_second_opener_is_refused(tmp_path: Path) -> None:
    with LocalLog(tmp_path / "log") as log, pytest.raises(StreamError, match="already open"):
        LocalLog(tmp_path / "log")
    assert log.next_offset == 0  # the first one still works after the refusal


def frames(path: Path) -> list[tuple[int, int, int]]:
    """``(byte, first offset, record count)`` of each frame of an intact segment file."""
    data = path.read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        magic, first, count, size, _, _ = HEADER.unpack_from(data, pos)
        assert magic == MAGIC
        out.append((pos, first, count))
        pos += HEADER_SIZE + size
    return out


def _last_frame_start(path: Path) -> int:
    return frames(path)[-1][0]


def flip_bit(path: Path, pos: int, bit: int = 0) -> None:
    """One bit of a file flipped in place, as a failing disk sector or cable does it."""
    with path.open("r+b") as fh:
        fh.seek(pos)
        byte = fh.read(1)[0]
        fh.seek(pos)
        fh.write(bytes([byte ^ (1 << bit)]))


@pytest.mark.parametrize("damage", ["cut-payload", "cut-header", "garbage", "crc", "zeros"])
def test_torn_tail_is_truncated_on_open(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "log"
    with LocalLog(path, TINY) as log:
        fill(log, 105, batch=5)
    last_file = segment_files(path)[-1]
    start = _last_frame_start(last_file)
    size = last_file.stat().st_size
    with last_file.open("r+b") as fh:
        if damage == "cut-payload":  # crash in the middle of the last record
            fh.truncate(start + HEADER_SIZE + 3)
        elif damage == "cut-header":
            fh.truncate(start + 5)
        elif damage == "crc":  # a flipped byte in the last record's payload
            fh.seek(size - 1)
            byte = fh.read(1)[0]
            fh.seek(size - 1)
            fh.write(bytes([byte ^ 0xFF]))
        elif damage == "garbage":  # half a frame of a next append
            fh.seek(size)
            fh.write(b"\x10\x00\x00\x00garb")
        else:  # a grown file whose data never reached the disk reads back as zeros
            fh.seek(size)
            fh.write(b"\x00" * 64)
    survivors = 105 if damage in ("garbage", "zeros") else 100  # the last append's 5 records go
    with LocalLog(path, TINY) as log:
        assert log.next_offset == survivors
        assert log.recovered_bytes_dropped > 0
        assert (log.lost_records, log.lost_ranges) == (0, [])  # a torn tail is no damage
        assert read_all(log) == [(o, payload(o)) for o in range(survivors)]
        assert log.append([b"next"]) == (survivors, survivors + 1)
    with LocalLog(path, TINY) as log:
        assert log.recovered_bytes_dropped == 0
        assert log.read(survivors) == [(survivors, b"next")]


# Where one flipped bit lands in a frame: every part of it must be survivable.
FRAME_SPOTS = {
    "payload": lambda pos, size: pos + size - 7,
    "record-length": lambda pos, size: pos + HEADER_SIZE + 1,
    "magic": lambda pos, size: pos + 1,
    "first-offset": lambda pos, size: pos + 5,
    "count": lambda pos, size: pos + 12,
    "size": lambda pos, size: pos + 17,
    "body-crc": lambda pos, size: pos + 21,
    "header-crc": lambda pos, size: pos + 26,
}


def read_dense(log: LocalLog, offset: int = 0) -> list[tuple[int, bytes]]:
    """Everything readable, read the way delivery reads: each read continues at the last one's end."""
    out: list[tuple[int, bytes]] = []
    while len(got := log.read_records(offset, max_records=300)):
        out.extend(zip(range(got.first, got.end), got.values.to_pylist(), strict=True))
        offset = got.end
    return out


def damage_errors(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The structured fields of the ERROR events that report damaged frames."""
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.levelno == logging.ERROR and "not a crash" in r.getMessage()
    ]


@pytest.mark.parametrize("spot", FRAME_SPOTS)
def test_a_damaged_frame_before_intact_ones_loses_only_its_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spot: str
) -> None:
    """Frame 2 of 8 damaged while the log was closed: the 7 others keep their records and offsets."""
    path = tmp_path / "log"
    with LocalLog(path) as log:
        for n in range(8):
            assert log.append(records(n * 1000, 1000)) == (n * 1000, n * 1000 + 1000)
    segment = segment_files(path)[0]
    spans = frames(segment)
    assert [(first, count) for _, first, count in spans] == [(n * 1000, 1000) for n in range(8)]
    pos, end = spans[1][0], spans[2][0]
    flip_bit(segment, FRAME_SPOTS[spot](pos, end - pos), bit=3)

    with caplog.at_level(logging.WARNING, logger="loglake.stream.local"), LocalLog(path) as log:
        assert (log.lost_records, log.lost_ranges) == (1000, [(1000, 2000)])
        assert log.recovered_bytes_dropped == 0  # nothing cut: the file stays as it is
        kept = [*range(1000), *range(2000, 8000)]
        assert read_dense(log) == [(o, payload(o)) for o in kept]
        assert read_all(log) == [(o, payload(o)) for o in kept]
        got = log.read_records(1500, max_records=3)  # a read from a lost offset starts after it
        assert (got.first, got.values.to_pylist()) == (2000, records(2000, 3))
        assert log.read_records(990, max_records=50).end == 1000  # a read stops where loss begins
        assert log.next_offset == 8000
        assert log.append([b"next"]) == (8000, 8001)  # no offset is given out twice
    assert damage_errors(caplog) == [
        {
            "path": str(path),
            "segment": segment.name,
            "byte": pos,
            "damaged_bytes": end - pos,
            "reason": damage_errors(caplog)[0]["reason"],
            "first_lost": 1000,
            "end_lost": 2000,
            "lost_records": 1000,
        }
    ]
    assert [r.levelname for r in caplog.records] == ["ERROR"]  # no "torn tail" warning
    with LocalLog(path) as log:  # the damage is reported again on every open; appends stay
        assert (log.lost_records, log.next_offset) == (1000, 8001)
        assert log.read(7999) == [(7999, payload(7999)), (8000, b"next")]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_damage_in_a_sealed_segment_is_skipped_when_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """Several segments; one frame of a middle one damaged (its size field: no header to trust)."""
    path = tmp_path / "log"
    with LocalLog(path, TINY) as log:
        fill(log, 600, batch=4)
    files = segment_files(path)
    assert len(files) > 5
    victim = files[3]
    spans = frames(victim)
    assert len(spans) >= 3
    pos, first, count = spans[{"first": 0, "middle": 1, "last": -1}[where]]
    flip_bit(victim, pos + 17, bit=2)  # the frame's size: where its successor starts is unknown
    lost = range(first, first + count)

    with (
        caplog.at_level(logging.WARNING, logger="loglake.stream.local"),
        LocalLog(path, TINY) as log,
    ):
        assert (log.next_offset, log.lost_records) == (600, 0)  # found when a read gets there
        assert read_dense(log) == [(o, payload(o)) for o in range(600) if o not in lost]
        assert (log.lost_records, log.lost_ranges) == (count, [(first, first + count)])
        assert read_all(log) == [(o, payload(o)) for o in range(600) if o not in lost]
        assert log.append([b"next"]) == (600, 601)
        # Consumers trim past the damaged segment as usual.
        assert log.trim(int(files[4].name[:20])) > 0
        assert log.start_offset == int(files[4].name[:20])
    errors = damage_errors(caplog)
    assert [(e["segment"], e["byte"], e["first_lost"], e["lost_records"]) for e in errors] == [
        (victim.name, pos, first, count)
    ]


def test_damage_at_the_end_of_a_sealed_segment_is_not_a_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The last frame of a sealed segment was fsynced before the next segment was made: its damage
    is loss to count, even when the next (last) segment is still empty."""
    path = tmp_path / "log"
    with LocalLog(path, TINY) as log:
        fill(log, 300, batch=10)
    last = segment_files(path)[-1]
    _, first, count = frames(last)[-1]
    flip_bit(last, last.stat().st_size - 1)
    (path / f"{first + count:020d}.log").touch()  # a roll that happened right before the stop

    with (
        caplog.at_level(logging.WARNING, logger="loglake.stream.local"),
        LocalLog(path, TINY) as log,
    ):
        assert log.next_offset == 300
        assert read_dense(log) == [(o, payload(o)) for o in range(first)]
        assert log.lost_ranges == [(first, 300)]
        assert log.wait(first, timeout=0.05) is False  # nothing readable at or after the loss yet
        assert log.append([b"next"]) == (300, 301)
        assert log.wait(first, timeout=5) is True
        assert log.read(first + 1) == [(300, b"next")]
    assert len(damage_errors(caplog)) == 1
    assert log.recovered_bytes_dropped == 0


def test_damage_found_while_the_log_is_open_is_skipped(tmp_path: Path) -> None:
    """A frame rots after it was written and read once: the next read skips it instead of failing."""
    path = tmp_path / "log"
    with LocalLog(path, TINY) as log:
        fill(log, 400, batch=10)
        assert len(read_all(log)) == 400  # every segment verified and indexed
        victim = segment_files(path)[2]
        pos, first, count = frames(victim)[1]
        flip_bit(victim, pos + HEADER_SIZE + 9)
        kept = [o for o in range(400) if not first <= o < first + count]
        assert read_dense(log) == [(o, payload(o)) for o in kept]
        assert (log.lost_records, log.lost_ranges) == (count, [(first, first + count)])
        assert read_dense(log) == [(o, payload(o)) for o in kept]  # counted once
        assert log.lost_records == count
        # The same in the active segment, with appends going on.
        active = segment_files(path)[-1]
        apos, afirst, acount = frames(active)[0]
        flip_bit(active, apos + HEADER_SIZE + 9)
        fill(log, 20, batch=10)
        assert [o for o, _ in read_dense(log, afirst - 1)] == [
            afirst - 1,
            *range(afirst + acount, 420),
        ]
        assert log.lost_records == count + acount


def test_damage_in_the_last_segment_is_kept_unless_it_is_the_tail(tmp_path: Path) -> None:
    """Two damaged frames of the last segment, an intact one between them: the earlier one is
    loss, the last one a torn tail (two damaged frames at the end are one torn tail)."""
    path = tmp_path / "log"
    with LocalLog(path, TINY) as log:
        fill(log, 105, batch=5)
    last = segment_files(path)[-1]
    spans = frames(last)
    assert len(spans) >= 3
    pos, first, count = spans[-3]
    flip_bit(last, pos + HEADER_SIZE + 5)
    flip_bit(last, last.stat().st_size - 1)
    with LocalLog(path, TINY) as log:
        assert log.lost_ranges == [(first, first + count)]
        assert log.recovered_bytes_dropped > 0  # the last append was cut
        assert log.next_offset == 100
        assert [o for o, _ in read_all(log)] == [o for o in range(100) if o < first or o >= 95]


def _write_v1_segment(path: Path, frames_: list[list[bytes]]) -> list[int]:
    """A segment of the first frame format; returns the byte where each frame starts."""
    data = b""
    starts = []
    for recs in frames_:
        body = b"".join(len(r).to_bytes(4, "little") for r in recs) + b"".join(recs)
        starts.append(len(data))
        data += V1_HEADER.pack(len(recs), len(body), zlib.crc32(body)) + body
    path.write_bytes(data)
    return starts


def test_segments_of_the_first_format_stay_readable(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.mkdir()
    _write_v1_segment(path / f"{0:020d}.log", [records(0, 10), records(10, 10)])
    starts = _write_v1_segment(
        path / f"{20:020d}.log", [records(20, 10), records(30, 10), records(40, 5)]
    )
    with LocalLog(path, TINY) as log:
        assert log.next_offset == 45
        assert read_all(log) == [(o, payload(o)) for o in range(45)]
        assert log.append(records(45, 5)) == (45, 50)  # into a new segment of the current format
    assert [f.name[:20] for f in segment_files(path)] == [f"{b:020d}" for b in (0, 20, 45)]
    assert frames(segment_files(path)[-1]) == [(0, 45, 5)]
    with LocalLog(path, TINY) as log:
        assert read_all(log) == [(o, payload(o)) for o in range(50)]

    # Damage in the first format: a payload bit (the header's count is right) and a count bit
    # (the body's record lengths tell the real count) are each one frame's loss.
    flip_bit(path / f"{20:020d}.log", starts[0] + 12 + 40 + 3)
    flip_bit(path / f"{0:020d}.log", 1)
    with LocalLog(path, TINY) as log:
        assert log.lost_ranges == []  # sealed segments are verified when first read
        assert read_all(log) == [(o, payload(o)) for o in [*range(10, 20), *range(30, 50)]]
        assert (log.lost_records, log.lost_ranges) == (20, [(0, 10), (20, 30)])


@pytest.mark.parametrize("spot", ["payload", "count", "tail"])
def test_a_damaged_last_segment_of_the_first_format(tmp_path: Path, spot: str) -> None:
    path = tmp_path / "log"
    path.mkdir()
    segment = path / f"{0:020d}.log"
    starts = _write_v1_segment(segment, [records(0, 10), records(10, 10), records(20, 10)])
    flip_bit(segment, {"payload": starts[1] + 60, "count": starts[1], "tail": starts[2] + 60}[spot])
    lost = range(20, 30) if spot == "tail" else range(10, 20)
    with LocalLog(path, TINY) as log:
        end = 20 if spot == "tail" else 30  # a damaged last frame is a torn tail, cut
        assert log.next_offset == end
        assert log.lost_records == (0 if spot == "tail" else 10)
        assert read_all(log) == [(o, payload(o)) for o in range(end) if o not in lost]
        assert log.append([b"next"]) == (end, end + 1)


CHILD = (
    PAYLOAD_SRC
    + """
import random, sys
from pathlib import Path
from loglake.stream.local import LocalLog, StreamLimits

log = LocalLog(Path(sys.argv[1]), StreamLimits(segment_bytes=32 << 10), fsync=True)
rng = random.Random(int(sys.argv[2]))
while True:
    n = log.next_offset
    count = rng.randint(1, 40)
    first, end = log.append([payload(i) for i in range(n, n + count)])
    assert (first, end) == (n, n + count), (first, end, n, count)
    sys.stdout.write(f"{first} {end}\\n")
    sys.stdout.flush()
"""
)


def test_sigkill_loses_and_duplicates_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "log"
    rng = random.Random()
    acked_end = 0
    for round_ in range(4):
        acks = tmp_path / f"acks-{round_}.txt"
        with acks.open("wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(path), str(round_)], stdout=out
            )
        try:
            deadline = time.monotonic() + 120
            while acks.stat().st_size < 100 and child.poll() is None:
                assert time.monotonic() < deadline, "the child never acknowledged an append"
                time.sleep(0.005)
            assert child.poll() is None, f"child exited with {child.returncode}"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        lines = [line.split() for line in acks.read_text().splitlines(keepends=True)]
        ranges = [(int(a), int(b)) for a, b in (line for line in lines if len(line) == 2)]
        assert ranges, "no acknowledged append"
        assert ranges[0][0] == acked_end  # the child continued right after the recovered log
        assert all(r[1] == s[0] for r, s in pairwise(ranges))
        acked_end = ranges[-1][1]
        with LocalLog(path, StreamLimits(segment_bytes=32 << 10)) as log:
            assert log.next_offset >= acked_end, "an acknowledged record was lost"
            got = read_all(log)
            assert [o for o, _ in got] == list(range(log.next_offset))
            bad = [o for o, data in got if data != payload(o)]
            assert bad == [], f"records with wrong content: {bad[:5]}"
            acked_end = log.next_offset
            dropped = log.recovered_bytes_dropped
        print(f"round {round_}: {len(ranges)} acks, log ends at {acked_end}, torn {dropped} B")
    assert len(segment_files(path)) > 1  # the crashes also hit rolled segments


def test_group_commit_from_eight_threads(tmp_path: Path) -> None:
    threads, appends, batch = 8, 60, 5
    results: list[tuple[int, int, int]] = []  # (thread, first, end)
    errors: list[BaseException] = []
    lock = threading.Lock()
    with LocalLog(tmp_path / "log", StreamLimits(segment_bytes=64 << 10), fsync=True) as log:
        barrier = threading.Barrier(threads)

        def worker(t: int) -> None:
            try:
                barrier.wait()
                for i in range(appends):
                    data = [b"t%d-a%d-r%d" % (t, i, r) for r in range(batch)]
                    first, end = log.append(data)
                    with lock:
                        results.append((t, first, end))
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        assert errors == []
        total = threads * appends * batch
        assert log.next_offset == total
        covered = sorted(o for _, first, end in results for o in range(first, end))
        assert covered == list(range(total))  # no offset lost or given twice
        got = dict(read_all(log))
        assert len(got) == total
        per_thread: dict[int, list[int]] = {}
        for t, first, end in sorted(results, key=lambda r: r[1]):
            assert [got[o] for o in range(first, end)] == [
                b"t%d-a%d-r%d" % (t, len(per_thread.get(t, [])), r) for r in range(batch)
            ]
            per_thread.setdefault(t, []).append(first)
        assert log.appends == threads * appends
        print(
            f"\ngroup commit: {log.appends} appends, {log.fsyncs} fsyncs, "
            f"{log.fsyncs / log.appends:.2f} fsyncs per append"
        )


def test_tailing_readers_see_every_record_once_in_order(tmp_path: Path) -> None:
    producers, calls, batch = 4, 40, 20
    total = producers * calls * batch
    seen: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    with LocalLog(tmp_path / "log", TINY, fsync=True) as log:

        def tail(reader: int) -> None:
            offset = 0
            while offset < total and log.wait(offset, timeout=10):
                for o, data in log.read(offset, max_records=50):
                    assert o == offset  # dense, in order, nothing twice
                    assert o < log.durable_offset  # never a record that is not yet fsynced
                    seen[reader].append(data)
                    offset = o + 1

        def produce(p: int) -> None:
            for i in range(calls):
                log.append([b"p%d-%06d" % (p, i * batch + r) for r in range(batch)])

        pool = [threading.Thread(target=tail, args=(r,)) for r in seen]
        pool += [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        for th in pool:
            th.start()
        for th in pool:
            th.join(timeout=30)
        assert all(len(seen[r]) == total for r in seen)
        assert seen[1] == seen[0] and seen[2] == seen[0]
        for p in range(producers):  # each producer's records appear in its own order
            mine = [data for data in seen[0] if data.startswith(b"p%d-" % p)]
            assert mine == [b"p%d-%06d" % (p, n) for n in range(calls * batch)]


def test_record_too_large_and_empty(tmp_path: Path) -> None:
    limits = StreamLimits(segment_bytes=4096, max_record_bytes=1000)
    with LocalLog(tmp_path / "log", limits, fsync=False) as log:
        log.append([b"x" * 1000])
        with pytest.raises(RecordTooLargeError, match="max_record_bytes") as info:
            log.append([b"ok", b"x" * 1001])
        assert isinstance(info.value, LoglakeError)
        with pytest.raises(EmptyRecordError):
            log.append([b"ok", b""])
        assert log.next_offset == 1  # nothing of the refused calls was written
        assert log.read(1) == []


def test_full_log_refuses_then_trim_frees_space(tmp_path: Path) -> None:
    limits = StreamLimits(segment_bytes=1000, max_bytes=5000)
    record = b"r" * 68  # 100 bytes framed (28 header + 4 length + 68): 10 appends per segment
    with LocalLog(tmp_path / "log", limits, fsync=True) as log:
        for _ in range(50):
            log.append([record])
        assert log.size_bytes == 5000
        with pytest.raises(StreamFullError, match="max_bytes") as info:
            log.append([record])
        assert info.value.retry_after > 0
        assert (log.next_offset, log.size_bytes) == (50, 5000)
        assert sum(f.stat().st_size for f in segment_files(tmp_path / "log")) == 5000

        assert log.trim(25) == 2000  # segments [0,10) and [10,20); [20,30) still holds 25..29
        assert log.start_offset == 20
        assert log.append([record] * 5) == (50, 55)
        assert log.read(50, max_records=1) == [(50, record)]


def test_a_full_log_in_one_segment_is_freed_by_trim(tmp_path: Path) -> None:
    # One big append fills the whole budget inside the active segment, which trim never deletes:
    # the refused append rolls it, so that trimming after the commit frees the space.
    limits = StreamLimits(segment_bytes=5000, max_bytes=5000)
    record = b"r" * 68  # 100 bytes framed alone; 49 in one frame: 28 + 49 * 72 = 3556 bytes
    with LocalLog(tmp_path / "log", limits, fsync=True) as log:
        assert log.append([record] * 49) == (0, 49)
        with pytest.raises(StreamFullError):
            log.append([record] * 20)
        assert [int(f.name[:20]) for f in segment_files(tmp_path / "log")] == [0, 49]
        assert log.trim(49) == 3556
        assert log.append([record] * 20) == (49, 69)
        assert log.read(49, max_records=1) == [(49, record)]


def test_an_append_larger_than_the_whole_budget_is_too_large(tmp_path: Path) -> None:
    limits = StreamLimits(segment_bytes=1000, max_bytes=5000)
    with LocalLog(tmp_path / "log", limits) as log:
        with pytest.raises(RecordTooLargeError, match=r"whole disk budget.*max_log_bytes"):
            log.append([b"r" * 100] * 60)  # never fits, however much is trimmed: not a retry
        assert log.next_offset == 0 and log.size_bytes == 0


def test_trim_keeps_active_segment_and_reports_trimmed_reads(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with LocalLog(path, TINY) as log:
        fill(log, 400)
        files = segment_files(path)
        bases = [int(f.name[:20]) for f in files]
        first_size = files[0].stat().st_size
        assert log.trim(bases[2] - 1) == first_size  # segment 1 still holds bases[2]-1
        assert log.start_offset == bases[1]
        assert log.trim(bases[1]) == 0
        with pytest.raises(StreamError, match=rf"trimmed.*first available offset is {bases[1]}"):
            log.read(0)
        assert log.read(bases[1], max_records=1) == [(bases[1], payload(bases[1]))]

        freed = log.trim(10**9)  # everything committed: only the active segment stays
        assert freed > 0
        assert segment_files(path) == [files[-1]]
        assert log.start_offset == bases[-1]
        assert read_all(log, bases[-1])[-1][0] == 399
    with LocalLog(path, TINY) as log:  # a trimmed log reopens at its first remaining segment
        assert (log.start_offset, log.next_offset) == (bases[-1], 400)
        with pytest.raises(StreamError, match=f"first available offset is {bases[-1]}"):
            log.read(0)


def test_wait(tmp_path: Path) -> None:
    with LocalLog(tmp_path / "log", fsync=True) as log:
        assert log.wait(0, timeout=0.05) is False  # idle log: times out
        log.append([b"a"])
        t0 = time.monotonic()
        assert log.wait(0, timeout=5) is True  # data already there: no waiting
        assert time.monotonic() - t0 < 0.5

        timer = threading.Timer(0.2, lambda: log.append([b"b"]))
        timer.start()
        t0 = time.monotonic()
        assert log.wait(1, timeout=10) is True
        assert 0.1 < time.monotonic() - t0 < 5  # woken by the append, long before the timeout
        timer.join()
        assert log.read(1) == [(1, b"b")]


def test_closed_log_refuses_calls(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "log")
    log.append([b"a"])
    log.close()
    log.close()
    with pytest.raises(StreamError, match="closed"):
        log.append([b"b"])
    with pytest.raises(StreamError, match="closed"):
        log.read(0)
    assert log.wait(5, timeout=5) is False


def test_frames_match_the_documented_format(tmp_path: Path) -> None:
    with LocalLog(tmp_path / "log") as log:
        log.append([b"hello", b"world!"])
        log.append([b"again"])
    data = (tmp_path / "log" / "00000000000000000000.log").read_bytes()

    def frame(first: int, records: list[bytes]) -> bytes:
        body = b"".join(len(r).to_bytes(4, "little") for r in records) + b"".join(records)
        head = (
            b"\xa7LL\xf2"  # magic
            + first.to_bytes(8, "little")  # first offset
            + b"".join(n.to_bytes(4, "little") for n in (len(records), len(body), zlib.crc32(body)))
        )  # record count, body size, CRC32 of the body, then CRC32 of the header so far
        return head + zlib.crc32(head).to_bytes(4, "little") + body

    assert data == frame(0, [b"hello", b"world!"]) + frame(2, [b"again"])


def test_read_records_is_one_arrow_array_and_append_packed_matches_append(
    tmp_path: Path,
) -> None:
    import numpy as np
    import pyarrow as pa

    with LocalLog(tmp_path / "log", TINY, fsync=False) as log:
        fill(log, 60, batch=20)
        data = b"".join(records(60, 40))
        lengths = np.array([len(r) for r in records(60, 40)])
        assert log.append_packed(data, lengths) == (60, 100)
        with pytest.raises(ValueError, match="add up"):
            log.append_packed(data + b"x", lengths)
        got = log.read_records(13, max_records=50)  # starts and ends inside frames
        assert (got.first, got.end, len(got)) == (13, 63, 50)
        assert got.values.type == pa.large_binary()
        assert got.values.to_pylist() == records(13, 50)
        rest = log.read_records(got.end, max_records=1000)
        assert rest.values.to_pylist() == records(63, 37)
        budget = sum(map(len, records(70, 3)))
        assert len(log.read_records(70, max_bytes=budget)) == 3  # a 4th would pass the budget
        assert len(log.read_records(log.next_offset)) == 0
