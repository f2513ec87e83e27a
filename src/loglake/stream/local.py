"""The embedded durable log: one append-only partition on local disk, like a Kafka partition.

A log is a folder of segment files named by the offset of their first record (20 digits + ``.log``).
Each append call is one frame holding a batch of records, like a Kafka record batch:
``<4 bytes magic><u64 first offset><u32 count><u32 size><u32 crc32(body)><u32 crc32(header)>`` then
the body of ``size`` bytes: ``count`` u32 record lengths followed by the payloads, all little-endian.
Records keep dense offsets of their own; a batch is written, checked and read as a whole, so neither
side does work per record in Python (reads come back as one Arrow array). An :meth:`LocalLog.append`
returns only once its records are fsynced; concurrent appenders share fsyncs (group commit). Readers
only ever see durable records.

Opening a log recovers it: a torn or corrupt tail of the last segment (a crash mid-write, never
acknowledged) is truncated so the log ends at its last whole frame. A damaged frame *followed by
intact frames* is disk damage, not a crash: it is skipped, its records are counted as lost
(:attr:`LocalLog.lost_records`, :attr:`LocalLog.lost_ranges`, an ERROR log event), the frames after it
keep their offsets (each frame carries its first offset, and a header checksum, so a reader can find
the next intact frame and knows where it belongs), and no offset is ever given out twice. Segments of
the first format (``<u32 count><u32 size><u32 crc32(body)>`` headers) stay readable. Old segments are
deleted by :meth:`LocalLog.trim` once every consumer has committed past them.

See ``docs/decisions/0006-local-stream.md`` for the format and the measured figures.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from loglake.errors import ConfigError, LoglakeError

log = logging.getLogger(__name__)

# A frame starts with MAGIC so that a reader past a damaged frame can find the next one. Read as the
# u32 count of a first-format frame it is above 2**30, a count no first-format frame can have (each
# record takes at least 5 bytes of a u32-sized body), so the two formats never look alike.
MAGIC = b"\xa7LL\xf2"
HEADER = struct.Struct(
    "<4sQIIII"
)  # magic, first offset, count, body size, crc32(body), crc32(header)
HEADER_SIZE = HEADER.size
_HEADER_FIELDS = struct.Struct("<4sQIII")  # the part of the header its own CRC covers
_U32 = struct.Struct("<I")
V1_HEADER = struct.Struct(
    "<III"
)  # first format (before offsets in frames): count, size, crc32(body)
V1_HEADER_SIZE = V1_HEADER.size
SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")
LOCK_NAME = "LOCK"
RETRY_AFTER_S = 1.0  # consumers commit and trim on their own schedule; a second is a polite default
_CHUNK = 1 << 20  # bytes read per pread while scanning frames
_HINTS = 64  # remembered read end positions (one per tailing consumer is enough)
_RESCANS = 3  # re-verifications of segments one read may do after meeting damage, before giving up


@dataclass(frozen=True)
class StreamLimits:
    """Size limits of one log (principle 6: bounded everything).

    ``index_bytes`` is the spacing of the in-memory sparse index: a read scans at most that many bytes
    before reaching its first record. Invalid values raise :class:`ConfigError` at construction.
    """

    segment_bytes: int = 64 << 20  # roll to a new segment file past this size
    max_bytes: int = 4 << 30  # disk budget for the whole log; append beyond it -> StreamFullError
    max_record_bytes: int = 1 << 20  # one record larger -> RecordTooLargeError (a 4xx for the API)
    index_bytes: int = 1 << 20  # one sparse index entry per this many bytes of a segment

    def __post_init__(self) -> None:
        for name in ("segment_bytes", "max_bytes", "max_record_bytes", "index_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"stream limit {name} must be positive, got {getattr(self, name)}"
                )
        if self.max_record_bytes >= 1 << 32:
            raise ConfigError(
                "stream limit max_record_bytes must be below 4 GiB (u32 length field)"
            )


class StreamError(LoglakeError):
    """The log cannot serve the request: closed, trimmed offset, I/O failure, corrupt segment."""


class StreamFullError(StreamError):
    """The log's disk budget (``max_bytes``) is used up; retry after ``retry_after`` seconds.

    Nothing of the refused append was written. The HTTP API turns this into 503 + Retry-After.
    """

    status = 503
    code = "stream_full"
    transient = True  # trimming frees the budget once delivery has committed
    retry_after: float = RETRY_AFTER_S

    def __init__(self, message: str, retry_after: float = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecordTooLargeError(StreamError):
    """One record is larger than ``max_record_bytes``, or one append larger than the whole budget
    ``max_bytes`` (it would never fit); a client error (HTTP 413), never retried."""

    status = 413
    code = "record_too_large"


class EmptyRecordError(StreamError):
    """A record is empty. Refused because a zero-filled torn tail would read as empty records."""


@dataclass(frozen=True)
class _Hole:
    """Damaged bytes ``[pos, end_pos)`` of a segment; the records ``[first, end)`` they held are lost.

    ``first == end`` for damage that held no record (bytes between intact frames), and
    ``pos == end_pos`` for records missing with no bytes left for them.
    """

    pos: int
    end_pos: int
    first: int
    end: int
    reason: str


@dataclass
class _Segment:
    """One segment file. ``count`` and ``size`` cover every written frame (durable or not yet)."""

    base: int
    path: Path
    size: int
    count: int
    # Sparse index: index_offsets[i] starts at byte index_positions[i]. None until built (sealed
    # segments found on open are indexed lazily, on their first read, to keep open fast).
    index_offsets: list[int] | None = None
    index_positions: list[int] | None = None
    fd: int = -1  # open for appending only while this is the active (last) segment
    version: int = 0  # frame format: 2, 1 (first format, read only) or 0 (not scanned yet)
    holes: list[_Hole] = field(default_factory=list)  # damage found so far, in file order

    @property
    def end(self) -> int:
        return self.base + self.count


@dataclass(frozen=True)
class Records:
    """Consecutive records of a log: ``values[i]`` is the payload of offset ``first + i``.

    A log whose offsets are not dense (NATS: sequence and index) gives each record's offset in
    ``offsets`` and the position after them in ``next``.
    """

    first: int
    values: pa.LargeBinaryArray
    offsets: np.ndarray | None = None
    next: int | None = None

    @property
    def end(self) -> int:
        """Where the next read starts: one past the last offset."""
        if self.next is not None:
            return self.next
        return self.first + len(self.values)

    def __len__(self) -> int:
        return len(self.values)


def _records(first: int, lengths: list[np.ndarray], data: list[memoryview]) -> Records:
    """One Arrow array over the payload slices of several frames (one copy of the bytes)."""
    count = sum(len(x) for x in lengths)
    offsets = np.zeros(count + 1, dtype=np.int64)
    if count:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    values = pa.Array.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
    )
    return Records(first, values)


def _header(first: int, count: int, size: int, crc: int) -> bytes:
    """The header of a frame of ``count`` records from offset ``first`` with a ``size``-byte body."""
    fields = _HEADER_FIELDS.pack(MAGIC, first, count, size, crc)
    return fields + _U32.pack(zlib.crc32(fields))


class _Window:
    """Reads bytes ``[0, end)`` of a file through one cached window of about ``_CHUNK`` bytes."""

    def __init__(self, fd: int, end: int) -> None:
        self.fd = fd
        self.end = end
        self._buf = b""
        self._at = 0

    def get(self, pos: int, n: int) -> tuple[bytes, int] | None:
        """``(buf, rel)`` with bytes ``[pos, pos + n)`` at ``buf[rel:rel + n]``; None past the end."""
        if pos < 0 or pos + n > self.end:
            return None
        rel = pos - self._at
        if rel < 0 or rel + n > len(self._buf):
            self._buf = os.pread(self.fd, max(n, min(_CHUNK, self.end - pos)), pos)
            self._at, rel = pos, 0
            if len(self._buf) < n:  # the file is shorter than the segment's known size
                return None
        return self._buf, rel

    def find(self, needle: bytes, pos: int) -> int:
        """The first position at or after ``pos`` where ``needle`` starts; -1 if none."""
        width = len(needle)
        while pos + width <= self.end:
            span = min(_CHUNK, self.end - pos)
            got = self.get(pos, span)
            if got is None:
                return -1
            buf, rel = got
            hit = buf.find(needle, rel, rel + span)
            if hit >= 0:
                return pos + hit - rel
            pos += span - width + 1  # a needle cut by the window's end is found in the next one
        return -1


@dataclass(frozen=True, slots=True)
class _Frame:
    """A frame whose header can be trusted (its body may still be damaged)."""

    pos: int
    first: int  # its first offset; -1 in the first format, where position implies it
    count: int
    size: int
    crc: int
    end: int  # the byte after the frame
    body: memoryview


def _read_frame(win: _Window, pos: int, version: int) -> tuple[_Frame | None, str]:
    """The frame at byte ``pos`` and "" if its header is sound; else ``(None, why not)``.

    A format-2 header is sound when it has the magic and its CRC matches; a first-format header has no
    check of its own, so it is sound when the frame it describes fits in the file.
    """
    size_of = HEADER_SIZE if version == 2 else V1_HEADER_SIZE
    got = win.get(pos, size_of)
    if got is None:
        return None, "incomplete frame header"
    buf, rel = got
    if version == 2:
        magic, first, count, size, crc, header_crc = HEADER.unpack_from(buf, rel)
        if magic != MAGIC:
            return None, "no frame header (damaged bytes)"
        if zlib.crc32(memoryview(buf)[rel : rel + HEADER_SIZE - 4]) != header_crc:
            return None, "frame header fails its CRC check"
    else:
        count, size, crc = V1_HEADER.unpack_from(buf, rel)
        first = -1
    got = win.get(pos, size_of + size)
    if got is None:
        return None, f"incomplete frame (header says {size} bytes, the file ends before)"
    buf, rel = got
    body = memoryview(buf)[rel + size_of : rel + size_of + size]
    return _Frame(pos, first, count, size, crc, pos + size_of + size, body), ""


def _frame_problem(frame: _Frame) -> str:
    """Why a frame's body is not one :meth:`LocalLog.append` wrote whole ("" when it is)."""
    count, size = frame.count, frame.size
    if count == 0:
        return "empty frame"  # never written; what a zero-filled tail looks like
    if 4 * count > size:
        return f"frame of {count} records in {size} bytes"
    if zlib.crc32(frame.body) != frame.crc:
        return "CRC mismatch"
    lengths = np.frombuffer(frame.body, dtype="<u4", count=count)
    if int(lengths.sum(dtype=np.int64)) != size - 4 * count:
        return "record lengths do not add up to the frame size"
    return ""


def _v1_lost_count(frame: _Frame) -> int:
    """How many records a damaged first-format frame held (its header has no check of its own).

    When the body is intact, the damage is in the header, and the record lengths at the start of the
    body tell the real count; otherwise the header's count, at most what its size could hold.
    """
    if zlib.crc32(frame.body) == frame.crc:
        n = frame.size // 4
        lengths = np.frombuffer(frame.body, dtype="<u4", count=n).astype(np.int64)
        totals = np.cumsum(lengths) + 4 * np.arange(1, n + 1)  # body bytes if the count were i + 1
        hits = np.flatnonzero(totals == frame.size)
        if len(hits) == 1:
            return int(hits[0]) + 1
    return min(frame.count, frame.size // 5)  # a record is at least a 4-byte length and 1 byte


@dataclass
class _Scan:
    """What scanning a segment found: its sparse index, its damage, and where it ends."""

    version: int
    end: int  # one past the last offset the segment holds (whole or lost)
    end_pos: int = 0  # the byte after the last whole frame or hole (a torn tail is cut here)
    frames: int = 0  # intact frames
    torn: str = ""  # why the file ends in bytes that are no whole frame ("" = it does not)
    offsets: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    holes: list[_Hole] = field(default_factory=list)
    due: int = 0  # the byte from which the next frame gets an index entry

    def frame(self, frame: _Frame, first: int, index_bytes: int) -> None:
        if frame.pos >= self.due:
            self.offsets.append(first)
            self.positions.append(frame.pos)
            self.due = frame.pos + index_bytes
        self.frames += 1
        self.end = first + frame.count
        self.end_pos = frame.end

    def hole(self, pos: int, end_pos: int, end: int, reason: str) -> None:
        self.holes.append(_Hole(pos, end_pos, self.end, end, reason))
        self.end, self.end_pos = end, end_pos
        self.due = end_pos  # the frame after a hole is where reads past it start: index it

    def finish(self, bad_at: int, reason: str, size: int, known_end: int | None) -> None:
        """Account for damage running to the end of the file, or records the file lacks."""
        if bad_at >= 0:
            if known_end is None:
                self.torn = f"{reason} at byte {bad_at}"  # the last thing written: a torn tail
            else:
                self.hole(bad_at, size, known_end, reason)
        elif known_end is not None and self.end < known_end:
            self.hole(size, size, known_end, "the segment ends before its last records")


def _scan_v2(
    win: _Window, base: int, known_end: int | None, index_bytes: int, bodies: bool
) -> _Scan:
    """Walk the frames of a segment, skipping damaged ones to the next intact frame.

    Without ``bodies`` only headers are checked (their own CRC makes them trustworthy); a damaged
    body is then found by the read that meets it.
    """
    scan = _Scan(2, base)
    pos, bad_at, reason = 0, -1, ""
    while pos < win.end:
        frame, problem = _read_frame(win, pos, 2)
        if frame is not None and not problem and bodies:
            problem = _frame_problem(frame)
        if frame is not None and not problem:
            if frame.first < scan.end:  # a stale copy of a frame? trust what came first
                problem = f"frame claims records from {frame.first}, before {scan.end}"
            elif known_end is not None and frame.first + frame.count > known_end:
                problem = f"frame claims records past the segment's end ({known_end})"
        if frame is not None and not problem:
            if bad_at >= 0 or frame.first > scan.end:
                scan.hole(
                    bad_at if bad_at >= 0 else pos,
                    pos,
                    frame.first,
                    reason or "records missing between two intact frames",
                )
                bad_at = -1
            scan.frame(frame, frame.first, index_bytes)
            pos = frame.end
            continue
        if bad_at < 0:
            bad_at, reason = pos, problem
        # A sound header says where the frame ends; otherwise look for the next frame's magic.
        pos = frame.end if frame is not None else win.find(MAGIC, pos + 1)
        if pos < 0:
            break
    scan.finish(bad_at, reason, win.end, known_end)
    return scan


def _scan_v1(win: _Window, base: int, known_end: int | None, index_bytes: int) -> _Scan:
    """Walk a first-format segment. Its frames carry no offset and no magic, so a damaged frame is
    skipped only when its size field proves right (a whole frame follows it); otherwise everything
    from it to the end of the file is damage (or, at the end of the last segment, a torn tail)."""
    scan = _Scan(1, base)
    pos, bad_at, reason = 0, -1, ""
    while pos < win.end:
        frame, problem = _read_frame(win, pos, 1)
        if frame is not None and not problem:
            problem = _frame_problem(frame)
            if not problem and known_end is not None and scan.end + frame.count > known_end:
                problem = f"frame claims records past the segment's end ({known_end})"
        if frame is not None and not problem:
            scan.frame(frame, scan.end, index_bytes)
            pos = frame.end
            continue
        if frame is not None and frame.end < win.end:
            after, after_problem = _read_frame(win, frame.end, 1)
            if after is not None and not after_problem and not _frame_problem(after):
                lost = _v1_lost_count(frame)
                if known_end is not None:
                    lost = min(lost, known_end - scan.end)
                scan.hole(pos, frame.end, scan.end + lost, problem)
                pos = frame.end
                continue
        bad_at, reason = pos, problem
        break
    scan.finish(bad_at, reason, win.end, known_end)
    return scan


def _scan(
    fd: int, base: int, size: int, known_end: int | None, index_bytes: int, bodies: bool = True
) -> _Scan:
    """Verify the frames of the first ``size`` bytes of a segment; build its index, find damage.

    ``known_end`` is the offset the segment must end at (the next segment's name, or what this process
    wrote); None for the last segment on open, where damage running to the end is a torn tail.
    ``bodies=False`` checks only the headers of current-format frames (see :func:`_scan_v2`).
    """
    win = _Window(fd, size)
    scan = _scan_v2(win, base, known_end, index_bytes, bodies)
    if size and not scan.frames:  # no intact frame of this format: maybe a first-format segment
        legacy = _scan_v1(win, base, known_end, index_bytes)
        if legacy.frames:
            return legacy
    return scan


def _hole_at(holes: list[_Hole], offset: int) -> _Hole | None:
    """The hole whose lost records include ``offset``."""
    for hole in holes:
        if hole.first <= offset < hole.end:
            return hole
    return None


def _hole_after(holes: list[_Hole], pos: int, at: int) -> _Hole | None:
    """The first hole after the frame at byte ``pos`` holding offset ``at`` (a read from there
    must stop at it)."""
    for hole in holes:
        if hole.pos >= pos and hole.first >= at:
            return hole
    return None


def _add_range(ranges: list[tuple[int, int]], first: int, end: int) -> int:
    """Merge ``[first, end)`` into the sorted disjoint ``ranges``; return how many offsets are new."""
    if end <= first:
        return 0
    known = sum(max(0, min(e, end) - max(f, first)) for f, e in ranges)
    merged: list[tuple[int, int]] = []
    for f, e in sorted([*ranges, (first, end)]):
        if merged and f <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((f, e))
    ranges[:] = merged
    return end - first - known


def _fsync_dir(path: Path) -> None:
    """Make a file creation or deletion in ``path`` durable (the entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_datasync = getattr(os, "fdatasync", os.fsync)  # fdatasync also flushes the size of a grown file


class LocalLog:
    """One durable, append-only log in the folder ``path``; thread-safe for appenders and readers.

    Opening creates the folder if needed, takes an exclusive lock on it (a second opener, in this or
    another process, gets :class:`StreamError`) and recovers the last segment. ``fsync=False`` skips
    fsyncs and is meant for tests and benchmarks only: acknowledged data may then be lost in a crash.

    Counters (read them any time): ``appends``, ``records_appended``, ``fsyncs``,
    ``recovered_bytes_dropped`` (torn tail truncated on open), ``fsync_seconds`` (the latest 1,024
    group-commit fsync durations), and ``lost_records`` with :attr:`lost_ranges`: records of damaged
    frames that reads skip. Damage in the last segment is found on open; in an older segment, when a
    read first reaches that segment (its frames are verified then) or meets a frame whose CRC fails.
    """

    def __init__(
        self, path: Path, limits: StreamLimits = StreamLimits(), fsync: bool = True
    ) -> None:
        self.path = Path(path)
        self.limits = limits
        self.fsync = fsync
        self.appends = 0
        self.records_appended = 0
        self.fsyncs = 0
        self.recovered_bytes_dropped = 0
        self.lost_records = 0  # records of damaged frames found since open (reads skip them)
        self._lost: list[tuple[int, int]] = []  # their offsets: sorted, disjoint [first, end)
        # Durations of the latest group-commit fsyncs (for /metrics; appends wait for them).
        self.fsync_seconds: deque[float] = deque(maxlen=1024)
        self._lock = threading.Lock()
        # One condition for "durable offset advanced" and "sync finished": group-commit followers and
        # wait() callers both sleep on it.
        self._cond = threading.Condition(self._lock)
        self._syncing = False  # a leader is in fsync right now (outside the lock)
        self._failed: BaseException | None = None
        self._closed = False
        # offset -> (segment base, frame byte, frame's first offset)
        self._hints: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StreamError(f"cannot open stream log folder {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise StreamError(
                f"stream log {self.path} is already open by another LocalLog or process; "
                "close it first (only one writer may own a log)"
            ) from exc
        try:
            self._segments = self._open_segments()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._size = sum(s.size for s in self._segments)
        self._durable = self._segments[-1].end  # everything recovered is on disk
        if self._segments[-1].version == 1 and self._segments[-1].size:
            # New frames never go into a first-format segment: seal it (its count is then implied
            # by the next name) and write the current format from here on.
            try:
                with self._cond:
                    self._roll()
            except BaseException:
                os.close(self._segments[-1].fd)
                os.close(self._lock_fd)
                raise

    # -- opening and recovery -------------------------------------------------------------------

    def _open_segments(self) -> list[_Segment]:
        """List the segment files, recover the last one; create the first segment of a new log."""
        bases = sorted(
            int(m.group(1)) for name in os.listdir(self.path) if (m := SEGMENT_NAME.match(name))
        )
        if not bases:
            return [self._create_segment(0)]
        segments = []
        for base, following in zip(bases, [*bases[1:], None], strict=True):
            path = self._segment_path(base)
            if following is not None:
                # A sealed segment was fsynced before its successor was created, so its record count
                # is the gap between the two names; it is verified and indexed on first read.
                segments.append(_Segment(base, path, path.stat().st_size, following - base))
        segments.append(self._recover_last(bases[-1]))
        return segments

    def _recover_last(self, base: int) -> _Segment:
        """Scan the last segment, verify every frame and truncate a torn tail; returns it active.

        Damaged frames with intact frames after them are kept in the file and reported as lost
        (:meth:`_install`); only damage running to the end of the file, the last write, is cut.
        """
        path = self._segment_path(base)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            scan = _scan(fd, base, size, None, self.limits.index_bytes)
            if scan.torn:
                dropped = size - scan.end_pos
                log.warning(
                    "stream log %s: %s; truncating %d bytes after offset %d (a crash mid-write: "
                    "the last append never completed, so it was never acknowledged)",
                    path,
                    scan.torn,
                    dropped,
                    scan.end,
                    extra={
                        "fields": {
                            "path": str(path),
                            "reason": scan.torn,
                            "truncated_bytes": dropped,
                            "offset": scan.end,
                        }
                    },
                )
                os.ftruncate(fd, scan.end_pos)
                if self.fsync:
                    _datasync(fd)
                self.recovered_bytes_dropped += dropped
        except BaseException:
            os.close(fd)
            raise
        seg = _Segment(base, path, scan.end_pos, scan.end - base, fd=fd)
        self._report(seg, self._install(seg, scan, scan.end_pos))
        return seg

    def _index_segment(self, seg: _Segment, bodies: bool) -> bool:
        """Verify the frames of ``seg``, (re)build its index and holes; True if new damage showed.

        Runs on a sealed segment's first read (``bodies=False``: headers only, as every read checks
        the bodies it returns) and whenever a read meets a frame that fails its checks (every body
        verified). Outside the lock (it reads the whole file); appends may go on meanwhile: frames
        written after the scan started keep the index entries they got when written.
        """
        with self._lock:
            size, known_end = seg.size, seg.end
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except FileNotFoundError:
            return True  # trimmed meanwhile; the caller's loop reports it
        try:
            scan = _scan(fd, seg.base, size, known_end, self.limits.index_bytes, bodies)
        finally:
            os.close(fd)
        with self._lock:
            new = self._install(seg, scan, size)
        self._report(seg, new)
        return bool(new)

    def _install(self, seg: _Segment, scan: _Scan, scanned: int) -> list[tuple[_Hole, int]]:
        """Give ``seg`` the index, format and holes of a scan of its first ``scanned`` bytes.

        Lock held (or not yet shared). Returns the holes not known before, each with the number of
        its lost offsets not counted before, and adds those to :attr:`lost_records`.
        """
        offsets, positions = scan.offsets or [seg.base], scan.positions or [0]
        if seg.index_offsets is not None and seg.index_positions is not None:
            for offset, pos in zip(seg.index_offsets, seg.index_positions, strict=True):
                if pos >= scanned:  # a frame appended while the scan ran
                    offsets.append(offset)
                    positions.append(pos)
        seg.index_offsets, seg.index_positions, seg.version = offsets, positions, scan.version
        known = {(h.pos, h.end_pos, h.first, h.end) for h in seg.holes}
        new = [
            (h, _add_range(self._lost, h.first, h.end))
            for h in scan.holes
            if (h.pos, h.end_pos, h.first, h.end) not in known
        ]
        seg.holes = scan.holes
        self.lost_records += sum(n for _, n in new)
        for offset in [o for o, hint in self._hints.items() if hint[0] == seg.base]:
            del self._hints[offset]  # a hint may point into what is now known to be damaged
        return new

    def _report(self, seg: _Segment, holes: list[tuple[_Hole, int]]) -> None:
        """Log each newly found hole as an ERROR event: lost records are disk damage, not a crash."""
        for hole, _ in holes:
            lost = hole.end - hole.first
            log.error(
                "stream log %s: segment %s is damaged at byte %d (%s); %d records from offset %d "
                "are lost and skipped, the intact frames around them are kept with their offsets. "
                "This is damage on disk, not a crash mid-write (intact data follows it): check the "
                "disk, and restore the segment from a backup if there is one",
                self.path,
                seg.path.name,
                hole.pos,
                hole.reason,
                lost,
                hole.first,
                extra={
                    "fields": {
                        "path": str(self.path),
                        "segment": seg.path.name,
                        "byte": hole.pos,
                        "damaged_bytes": hole.end_pos - hole.pos,
                        "reason": hole.reason,
                        "first_lost": hole.first,
                        "end_lost": hole.end,
                        "lost_records": lost,
                    }
                },
            )

    def _segment_path(self, base: int) -> Path:
        return self.path / f"{base:020d}.log"

    def _create_segment(self, base: int) -> _Segment:
        """Create an empty active segment; its directory entry is fsynced before any record lands."""
        path = self._segment_path(base)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        if self.fsync:
            _fsync_dir(self.path)
        return _Segment(base, path, 0, 0, [base], [0], fd=fd, version=2)

    # -- properties -----------------------------------------------------------------------------

    @property
    def start_offset(self) -> int:
        """The first offset still on disk (everything before it was trimmed)."""
        with self._lock:
            return self._segments[0].base

    @property
    def next_offset(self) -> int:
        """The offset the next appended record gets."""
        with self._lock:
            return self._segments[-1].end

    @property
    def durable_offset(self) -> int:
        """One past the last durable (fsynced) record: reads return records below it."""
        with self._lock:
            return self._durable

    @property
    def lost_ranges(self) -> list[tuple[int, int]]:
        """Offsets of records lost to damaged frames, as sorted ``(first, end)`` ranges (end
        excluded); reads skip them. Found since this open; see :attr:`lost_records`."""
        with self._lock:
            return list(self._lost)

    @property
    def size_bytes(self) -> int:
        """Bytes of all segment files now (the figure compared with ``max_bytes``)."""
        with self._lock:
            return self._size

    @property
    def created(self) -> float:
        """When the log was created (Unix seconds): its LOCK file is never written to."""
        try:
            return (self.path / LOCK_NAME).stat().st_mtime
        except OSError:
            return time.time()

    def backlog(self, position: int) -> int:
        """Records appended at or after ``position``."""
        return max(0, self.next_offset - position)

    def read_at(self, offset: int) -> bytes:
        """The payload of the record at ``offset`` (StreamError if trimmed or lost)."""
        got = self.read_records(offset, max_records=1)
        if not len(got) or got.first != offset:
            raise StreamError(f"record {offset} of stream log {self.path} is not readable")
        return bytes(got.values[0].as_py())

    # -- appending ------------------------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> tuple[int, int]:
        """Append ``records`` in order; return ``(first_offset, next_offset)`` once they are durable.

        The records become one frame, written with one ``os.write``, and get dense offsets. An empty
        sequence returns ``(next, next)`` without I/O. Raises :class:`RecordTooLargeError`,
        :class:`EmptyRecordError` or :class:`StreamFullError` before writing anything of the call;
        :class:`StreamError` if the log is closed or a write or fsync failed (then the records are
        not acknowledged and the log refuses appends until it is reopened, which recovers it).
        """
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
        return self.append_packed(b"".join(records), lengths)

    def append_packed(self, data: bytes, lengths: np.ndarray) -> tuple[int, int]:
        """Like :meth:`append` for records laid end to end in ``data``, ``lengths[i]`` bytes each.

        The columnar form of :meth:`append`: an HTTP body split with numpy is appended without a
        Python object per record. ``lengths`` must add up to ``len(data)`` (else ``ValueError``).
        """
        count = len(lengths)
        if count == 0:
            with self._lock:
                self._check_usable()
                return self._segments[-1].end, self._segments[-1].end
        limit = self.limits.max_record_bytes
        longest = int(lengths.max())
        if longest > limit:
            raise RecordTooLargeError(
                f"record of {longest} bytes exceeds the stream's max_record_bytes ({limit}); "
                "split it or raise the limit"
            )
        if int(lengths.min()) <= 0:
            raise EmptyRecordError("empty records cannot be appended to the stream; drop them")
        if int(lengths.sum()) != len(data):
            raise ValueError(f"record lengths add up to {int(lengths.sum())}, not {len(data)}")
        body = b"".join((lengths.astype("<u4").tobytes(), data))
        crc = zlib.crc32(body)
        with self._cond:
            first, end = self._write(body, count, crc)
            if not self.fsync:
                self._durable = end
                self._cond.notify_all()
                return first, end
        self._sync_until(end)
        return first, end

    def _check_usable(self) -> None:
        if self._closed:
            raise StreamError(f"stream log {self.path} is closed")
        if self._failed is not None:
            raise StreamError(
                f"stream log {self.path} stopped after an I/O error ({self._failed}); "
                "fix the disk and reopen the log, which recovers it"
            ) from self._failed

    def _write(self, body: bytes, count: int, crc: int) -> tuple[int, int]:
        """Write one call's frame of ``count`` records (lock held); roll or refuse first."""
        size = HEADER_SIZE + len(body)
        if size > self.limits.max_bytes:  # would be "full" forever: a client error, not a retry
            raise RecordTooLargeError(
                f"an append of {size} bytes exceeds the stream's whole disk budget "
                f"({self.limits.max_bytes} bytes, streams.NAME.max_log_bytes): send smaller "
                "batches or raise the budget"
            )
        while True:
            self._check_usable()
            active = self._segments[-1]
            if self._size + size > self.limits.max_bytes:
                if active.size > 0:
                    # Only closed segments are trimmed: roll the active one, or a log whose
                    # records fit in one segment (a budget of a single segment, one big
                    # append) would stay full after delivery has committed them all.
                    if self._syncing:  # the leader's fsync uses the active fd
                        self._cond.wait()
                        continue
                    self._roll()
                    continue
                raise StreamFullError(
                    # The folder's name only: clients see this message, not the server's paths.
                    f"stream log {self.path.name} is full: {self._size} bytes used, {size} more would "
                    f"exceed max_bytes ({self.limits.max_bytes}); consumers must commit so old "
                    f"segments can be trimmed; retry after {RETRY_AFTER_S:g} s",
                    RETRY_AFTER_S,
                )
            if active.size > 0 and active.size + size > self.limits.segment_bytes:
                if self._syncing:  # the leader's fsync uses the active fd: let it finish first
                    self._cond.wait()
                    continue
                self._roll()
                continue
            break
        active = self._segments[-1]
        pos = active.size
        first = active.end
        header = _header(first, count, len(body), crc)  # the first offset is known only here
        try:
            written = os.writev(active.fd, [header, body])
            if written < size:  # a regular file takes it in one write; this is for a short write
                rest = memoryview(header + body)[written:]
                while rest:
                    rest = rest[os.write(active.fd, rest) :]
        except OSError as exc:
            self._undo_write(active, pos, exc)
            raise StreamError(
                f"cannot write to stream segment {active.path}: {exc}; nothing was acknowledged"
            ) from exc
        self._index(active, first, pos)
        active.size += size
        active.count += count
        self._size += size
        self.appends += 1
        self.records_appended += count
        return first, active.end

    def _undo_write(self, active: _Segment, pos: int, exc: OSError) -> None:
        """Cut a partly written call (disk full...) so the segment ends at a whole record again."""
        try:
            os.ftruncate(active.fd, pos)
        except OSError:
            self._failed = exc  # the tail is unknown now; reopening will recover it
            self._cond.notify_all()

    def _index(self, seg: _Segment, first: int, pos: int) -> None:
        """Add a sparse index entry for the frame written at byte ``pos`` of ``seg`` if one is due."""
        assert seg.index_offsets is not None and seg.index_positions is not None
        if pos >= seg.index_positions[-1] + self.limits.index_bytes:
            seg.index_offsets.append(first)
            seg.index_positions.append(pos)

    def _roll(self) -> None:
        """Seal the active segment (fsynced, so its count is implied by the next name); start one."""
        active = self._segments[-1]
        try:
            if self.fsync:
                _datasync(active.fd)
                self.fsyncs += 1
            new = self._create_segment(active.end)
        except OSError as exc:
            self._failed = exc
            self._cond.notify_all()
            raise StreamError(f"cannot roll stream segment {active.path}: {exc}") from exc
        os.close(active.fd)
        active.fd = -1
        self._segments.append(new)
        self._durable = active.end
        self._cond.notify_all()

    def _sync_until(self, end: int) -> None:
        """Return once offsets below ``end`` are durable. Group commit: one thread fsyncs for all.

        Whoever finds no fsync running becomes the leader: it fsyncs everything written so far while
        later appenders write their frames and wait; they are covered by the next leader's fsync.
        """
        while True:
            with self._cond:
                while self._durable < end and self._syncing:
                    self._cond.wait()
                if self._durable >= end:
                    return
                self._check_usable()
                self._syncing = True
                active = self._segments[-1]
                fd, target = active.fd, active.end
            try:
                synced_at = time.perf_counter()
                _datasync(fd)
                self.fsync_seconds.append(time.perf_counter() - synced_at)
            except OSError as exc:
                # After a failed fsync the page cache may have dropped the data ("fsyncgate"): stop
                # acknowledging anything until a reopen re-reads what is really on disk.
                with self._cond:
                    self._syncing = False
                    self._failed = exc
                    self._cond.notify_all()
                raise StreamError(
                    f"fsync of stream segment {active.path} failed: {exc}; nothing acknowledged"
                ) from exc
            with self._cond:
                self._syncing = False
                self.fsyncs += 1
                self._durable = max(self._durable, target)
                self._cond.notify_all()

    # -- reading --------------------------------------------------------------------------------

    def read(
        self, offset: int, max_records: int = 10_000, max_bytes: int = 8 << 20
    ) -> list[tuple[int, bytes]]:
        """:meth:`read_records` as ``(offset, payload)`` pairs (one Python object per record)."""
        got = self.read_records(offset, max_records, max_bytes)
        return list(zip(range(got.first, got.end), got.values.to_pylist(), strict=True))

    def read_records(
        self, offset: int, max_records: int = 10_000, max_bytes: int = 8 << 20
    ) -> Records:
        """Return durable records from ``offset`` on, in order, as one Arrow array.

        Stops at ``max_records``, or before the payloads would exceed ``max_bytes`` (but returns at
        least one record if one exists); empty at the end of the log. Records lost to a damaged
        frame (:attr:`lost_ranges`) are skipped: a read from a lost offset starts after the lost
        range (``first`` > ``offset``), and a read stops where a lost range begins, so the result
        stays dense and reading on from its ``end`` continues past the damage. Raises
        :class:`StreamError` for an offset before :attr:`start_offset` (trimmed; the message names
        the first available offset), or when a segment is unreadable even after re-verifying it.
        """
        if offset < 0 or max_records < 1 or max_bytes < 1:
            raise StreamError(
                f"read(offset={offset}, max_records={max_records}, max_bytes={max_bytes}): "
                "offset must be >= 0 and the limits >= 1"
            )
        first = offset
        lengths_parts: list[np.ndarray] = []
        data_parts: list[memoryview] = []
        taken = 0
        budget = max_bytes
        rescans = 0
        while taken < max_records:
            with self._lock:
                if self._closed:
                    raise StreamError(f"stream log {self.path} is closed")
                if offset >= self._durable:
                    break
                start = self._segments[0].base
                if offset < start:
                    if taken:  # trimmed while we read: return what we have, the next read says why
                        break
                    raise StreamError(
                        f"offset {offset} of stream log {self.path} was trimmed; the first "
                        f"available offset is {start}"
                    )
                bases = [s.base for s in self._segments]
                seg = self._segments[bisect.bisect_right(bases, offset) - 1]
                lost = _hole_at(seg.holes, offset)
                if lost is not None:
                    if taken:  # the records so far end where the lost ones begin
                        break
                    offset = first = lost.end
                    continue
                begin = self._seek(seg, offset)
                if begin is not None:
                    at, pos = (
                        begin  # ``at`` is the first offset of the frame starting at byte ``pos``
                    )
                    hole = _hole_after(seg.holes, pos, at)  # a readable run ends at damage
                    run_end = hole.pos if hole is not None else seg.size
                    stop = min(hole.first if hole is not None else seg.end, self._durable)
                    version = seg.version
            if begin is None:
                self._index_segment(seg, bodies=False)
                continue
            try:
                fd = os.open(seg.path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # trimmed between the lookup and the open: the loop decides what to say
            limited = False
            damage = ""
            try:
                win = _Window(fd, run_end)
                while at < stop:
                    frame, damage = _read_frame(win, pos, version)
                    if frame is None:
                        break
                    if version == 2 and frame.first != at:
                        damage = f"frame holds records from {frame.first}, expected {at}"
                        break
                    count = frame.count
                    if at + count <= offset:  # a frame wholly before the offset asked for
                        at += count
                        pos = frame.end
                        continue
                    damage = _frame_problem(frame)
                    if damage:
                        break
                    body = frame.body
                    lengths = np.frombuffer(body, dtype="<u4", count=count).astype(np.int64)
                    ends = np.cumsum(lengths)
                    skip = offset - at
                    want = min(count - skip, max_records - taken)
                    data_start = int(ends[skip] - lengths[skip])
                    cumulative = ends[skip : skip + want] - data_start
                    n = int(np.searchsorted(cumulative, budget, side="right"))
                    if n == 0 and taken == 0:
                        n = 1  # one record even if it alone exceeds max_bytes
                    if n:
                        lengths_parts.append(lengths[skip : skip + n])
                        base = 4 * count + data_start
                        data_parts.append(body[base : base + int(cumulative[n - 1])])
                        taken += n
                        budget -= int(cumulative[n - 1])
                        offset += n
                    if offset < at + count or taken >= max_records:
                        limited = True
                        if offset >= at + count:  # the frame was used up: continue after it
                            at, pos = at + count, frame.end
                        break
                    at += count
                    pos = frame.end
            finally:
                os.close(fd)
            if damage:
                # Damage that appeared after the segment was verified (or a segment not verified
                # yet): verify it now, which records the damaged frames as lost, and read on.
                rescans += 1
                if rescans > _RESCANS or not self._index_segment(seg, bodies=True):
                    raise StreamError(
                        f"stream segment {seg.path} is unreadable at byte {pos} ({damage}) and "
                        "verifying it again did not explain why; restore the file or trim past it"
                    )
                continue
            with self._lock:
                self._remember(offset, seg.base, pos, at)
            if limited:
                break
            offset = at
        return _records(first, lengths_parts, data_parts)

    def _seek(self, seg: _Segment, offset: int) -> tuple[int, int] | None:
        """The frame ``(first offset, byte)`` to start scanning at for ``offset`` in ``seg``.

        Lock held. None when the sealed segment has not been verified and indexed yet.
        """
        if seg.version == 0 or seg.index_offsets is None or seg.index_positions is None:
            return None
        hint = self._hints.get(offset)
        if (
            hint is not None
            and hint[0] == seg.base
            and not any(h.pos <= hint[1] < h.end_pos for h in seg.holes)
        ):
            return hint[2], hint[1]
        i = bisect.bisect_right(seg.index_offsets, offset) - 1
        return seg.index_offsets[i], seg.index_positions[i]

    def _remember(self, offset: int, base: int, pos: int, at: int) -> None:
        """Remember where a read ended (the frame at byte ``pos`` of segment ``base`` starts at
        offset ``at``) so the consumer's next read from ``offset`` starts there without a scan."""
        self._hints[offset] = (base, pos, at)
        self._hints.move_to_end(offset)
        while len(self._hints) > _HINTS:
            self._hints.popitem(last=False)

    def _past_lost(self, offset: int) -> int:
        """``offset``, or the end of the lost range holding it (lock held)."""
        i = bisect.bisect_right(self._lost, offset, key=lambda lost: lost[0]) - 1
        if i >= 0 and offset < self._lost[i][1]:
            return self._lost[i][1]
        return offset

    # -- waiting, trimming, closing -------------------------------------------------------------

    def wait(self, offset: int, timeout: float) -> bool:
        """Block until a durable record at ``offset`` or later exists, or ``timeout`` seconds pass.

        Returns whether it exists (records of :attr:`lost_ranges` do not count). Returns early
        (False unless the record exists) when the log closes.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._durable > self._past_lost(offset) or self._closed, timeout
            )
            return self._durable > self._past_lost(offset)

    def trim(self, before: int) -> int:
        """Delete the segments whose records are all below ``before``; return the bytes freed.

        Pass the smallest offset every consumer has committed. The active segment is never deleted,
        so a log always keeps its last records. Readers already inside a deleted segment finish it.
        """
        freed = 0
        with self._lock:
            self._check_usable()
            while len(self._segments) > 1 and self._segments[1].base <= before:
                seg = self._segments.pop(0)
                seg.path.unlink(missing_ok=True)  # already gone: the space is free either way
                freed += seg.size
                self._size -= seg.size
        if freed and self.fsync:
            _fsync_dir(self.path)
        return freed

    def close(self) -> None:
        """Make everything written durable, close the files and release the folder lock.

        Idempotent. Appenders still waiting for their fsync are acknowledged by the final fsync;
        later calls raise :class:`StreamError`.
        """
        with self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            active = self._segments[-1]
            try:
                if self.fsync and self._failed is None and self._durable < active.end:
                    _datasync(active.fd)
                    self.fsyncs += 1
                    self._durable = active.end
            except OSError as exc:
                self._failed = exc
            finally:
                self._closed = True
                os.close(active.fd)
                active.fd = -1
                os.close(self._lock_fd)
                self._cond.notify_all()

    def __enter__(self) -> LocalLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalLog({str(self.path)!r}, start={self.start_offset}, next={self.next_offset})"
