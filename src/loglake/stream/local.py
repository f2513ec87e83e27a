"""The embedded durable log: one append-only partition on local disk, like a Kafka partition.

A log is a folder of segment files named by the offset of their first record (20 digits + ``.log``).
Each append call is one frame holding a batch of records, like a Kafka record batch:
``<u32 count><u32 size><u32 crc32(body)>`` then the body of ``size`` bytes: ``count`` u32 record
lengths followed by the payloads, all little-endian. Records keep dense offsets of their own; a batch
is written, checked and read as a whole, so neither side does work per record in Python (reads come
back as one Arrow array). An :meth:`LocalLog.append` returns only once its records are fsynced;
concurrent appenders share fsyncs (group commit). Readers only ever see durable records. Opening a
log recovers it: a torn or corrupt tail of the last segment (a crash mid-write) is truncated so the
log ends at its last whole frame. Old segments are deleted by
:meth:`LocalLog.trim` once every consumer has committed past them.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from loglake.errors import ConfigError, LoglakeError

log = logging.getLogger(__name__)

HEADER = struct.Struct("<III")  # record count, body size, zlib.crc32(body)
HEADER_SIZE = HEADER.size
SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")
LOCK_NAME = "LOCK"
RETRY_AFTER_S = 1.0  # consumers commit and trim on their own schedule; a second is a polite default
_CHUNK = 1 << 20  # bytes read per pread while scanning frames
_HINTS = 64  # remembered read end positions (one per tailing consumer is enough)


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

    def __init__(self, message: str, retry_after: float = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecordTooLargeError(StreamError):
    """One record is larger than ``max_record_bytes``; a client error (HTTP 413), never retried."""


class EmptyRecordError(StreamError):
    """A record is empty. Refused because a zero-filled torn tail would read as empty records."""


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

    @property
    def end(self) -> int:
        return self.base + self.count


@dataclass
class _Scan:
    """Result of scanning a segment's frames: whole records, where they end, and a sparse index."""

    count: int = 0
    end_pos: int = 0
    torn: str = ""  # why scanning stopped before the end of the file ("" = it did not)
    offsets: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Records:
    """Consecutive records of a log: ``values[i]`` is the payload of offset ``first + i``."""

    first: int
    values: pa.LargeBinaryArray

    @property
    def end(self) -> int:
        """One past the last offset (where the next read starts)."""
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


def _frames(fd: int, pos: int, end: int) -> Iterator[tuple[int, int, int, int, bytes, int]]:
    """Yield ``(pos, count, size, crc, buf, start)`` for each whole frame in ``[pos, end)`` of ``fd``.

    The frame's body is ``buf[start:start + size]``. Stops silently at a frame that does not fit
    before ``end`` or the end of the file; the caller compares the last position with ``end`` to tell.
    """
    buf = b""
    buf_pos = pos
    while pos + HEADER_SIZE <= end:
        rel = pos - buf_pos
        if rel + HEADER_SIZE > len(buf):
            buf, buf_pos, rel = os.pread(fd, min(_CHUNK, end - pos), pos), pos, 0
            if len(buf) < HEADER_SIZE:
                return
        count, size, crc = HEADER.unpack_from(buf, rel)
        frame_end = pos + HEADER_SIZE + size
        if frame_end > end:
            return
        if rel + HEADER_SIZE + size > len(buf):
            want = min(max(_CHUNK, HEADER_SIZE + size), end - pos)
            buf, buf_pos, rel = os.pread(fd, want, pos), pos, 0
            if len(buf) < HEADER_SIZE + size:
                return
        yield pos, count, size, crc, buf, rel + HEADER_SIZE
        pos = frame_end


def _frame_problem(count: int, size: int, crc: int, body: memoryview) -> str:
    """Why a frame is not one :meth:`LocalLog.append` wrote whole ("" when it is)."""
    if count == 0:
        return "empty frame"  # never written; what a zero-filled tail looks like
    if 4 * count > size:
        return f"frame of {count} records in {size} bytes"
    if zlib.crc32(body) != crc:
        return "CRC mismatch"
    lengths = np.frombuffer(body, dtype="<u4", count=count)
    if int(lengths.sum(dtype=np.int64)) != size - 4 * count:
        return "record lengths do not add up to the frame size"
    return ""


def _scan(fd: int, base: int, size: int, index_bytes: int, verify: bool) -> _Scan:
    """Walk the frames of a segment of ``size`` bytes, building its sparse index.

    With ``verify``, a frame that fails :func:`_frame_problem` ends the scan as torn.
    """
    scan = _Scan()
    next_index = 0
    for pos, count, fsize, crc, buf, start in _frames(fd, 0, size):
        if verify:
            problem = _frame_problem(count, fsize, crc, memoryview(buf)[start : start + fsize])
            if problem:
                scan.torn = f"{problem} at byte {pos}"
                return scan
        if pos >= next_index:
            scan.offsets.append(base + scan.count)
            scan.positions.append(pos)
            next_index = pos + index_bytes
        scan.count += count
        scan.end_pos = pos + HEADER_SIZE + fsize
    if scan.end_pos < size:
        scan.torn = f"incomplete frame at byte {scan.end_pos}"
    return scan


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
    ``recovered_bytes_dropped`` (torn tail truncated on open), and ``fsync_seconds`` (the latest
    1,024 group-commit fsync durations).
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
                # is the gap between the two names; its index is built on first read.
                segments.append(_Segment(base, path, path.stat().st_size, following - base))
        segments.append(self._recover_last(bases[-1]))
        return segments

    def _recover_last(self, base: int) -> _Segment:
        """Scan the last segment, verify every CRC and truncate a torn tail; returns it active."""
        path = self._segment_path(base)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            scan = _scan(fd, base, size, self.limits.index_bytes, verify=True)
            if scan.end_pos < size:
                dropped = size - scan.end_pos
                log.warning(
                    "stream log %s: %s; truncating %d bytes after offset %d (crash mid-write)",
                    path,
                    scan.torn,
                    dropped,
                    base + scan.count,
                    extra={
                        "fields": {
                            "path": str(path),
                            "reason": scan.torn,
                            "truncated_bytes": dropped,
                            "offset": base + scan.count,
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
        if not scan.offsets:
            scan.offsets, scan.positions = [base], [0]
        return _Segment(base, path, scan.end_pos, scan.count, scan.offsets, scan.positions, fd=fd)

    def _segment_path(self, base: int) -> Path:
        return self.path / f"{base:020d}.log"

    def _create_segment(self, base: int) -> _Segment:
        """Create an empty active segment; its directory entry is fsynced before any record lands."""
        path = self._segment_path(base)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        if self.fsync:
            _fsync_dir(self.path)
        return _Segment(base, path, 0, 0, [base], [0], fd=fd)

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
    def size_bytes(self) -> int:
        """Bytes of all segment files now (the figure compared with ``max_bytes``)."""
        with self._lock:
            return self._size

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
        packed = lengths.astype("<u4").tobytes()
        crc = zlib.crc32(data, zlib.crc32(packed))
        buf = b"".join((HEADER.pack(count, len(packed) + len(data), crc), packed, data))
        with self._cond:
            first, end = self._write(buf, count)
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

    def _write(self, buf: bytes, count: int) -> tuple[int, int]:
        """Write one call's frame of ``count`` records (lock held); roll or refuse first."""
        size = len(buf)
        while True:
            self._check_usable()
            if self._size + size > self.limits.max_bytes:
                raise StreamFullError(
                    f"stream log {self.path} is full: {self._size} bytes used, {size} more would "
                    f"exceed max_bytes ({self.limits.max_bytes}); consumers must commit so old "
                    f"segments can be trimmed; retry after {RETRY_AFTER_S:g} s",
                    RETRY_AFTER_S,
                )
            active = self._segments[-1]
            if active.size > 0 and active.size + size > self.limits.segment_bytes:
                if self._syncing:  # the leader's fsync uses the active fd: let it finish first
                    self._cond.wait()
                    continue
                self._roll()
                continue
            break
        active = self._segments[-1]
        pos = active.size
        try:
            view = memoryview(buf)
            while view:  # a regular file takes it in one write; loop only for a short write
                view = view[os.write(active.fd, view) :]
        except OSError as exc:
            self._undo_write(active, pos, exc)
            raise StreamError(
                f"cannot write to stream segment {active.path}: {exc}; nothing was acknowledged"
            ) from exc
        first = active.end
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
        least one record if one exists); empty at the end of the log. Raises :class:`StreamError`
        for an offset before :attr:`start_offset` (trimmed; the message names the first available
        offset) or a segment that fails its CRC check.
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
                stop = min(seg.end, self._durable)
                seg_size = seg.size
                begin = self._seek(seg, offset)
            if begin is None:
                self._build_index(seg)
                continue
            at, pos = begin  # ``at`` is the first offset of the frame starting at byte ``pos``
            try:
                fd = os.open(seg.path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # trimmed between the lookup and the open: the loop decides what to say
            limited = False
            try:
                for fpos, count, size, crc, buf, bstart in _frames(fd, pos, seg_size):
                    if at >= stop:
                        break
                    if at + count <= offset:  # a frame wholly before the offset asked for
                        at += count
                        pos = fpos + HEADER_SIZE + size
                        continue
                    body = memoryview(buf)[bstart : bstart + size]
                    if zlib.crc32(body) != crc:
                        raise StreamError(
                            f"stream segment {seg.path} is corrupt: the frame of records {at}-"
                            f"{at + count - 1} at byte {fpos} fails its CRC check; restore the "
                            "file or trim past it"
                        )
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
                            at, pos = at + count, fpos + HEADER_SIZE + size
                        break
                    at += count
                    pos = fpos + HEADER_SIZE + size
            finally:
                os.close(fd)
            if at < stop and not limited:
                raise StreamError(
                    f"stream segment {seg.path} is corrupt: it ends before record {at}; "
                    "restore the file or trim past it"
                )
            with self._lock:
                self._remember(offset, seg.base, pos, at)
            if limited:
                break
            offset = at
        return _records(first, lengths_parts, data_parts)

    def _seek(self, seg: _Segment, offset: int) -> tuple[int, int] | None:
        """The frame ``(first offset, byte)`` to start scanning at for ``offset`` in ``seg``.

        Lock held. None when the sealed segment has no index yet.
        """
        hint = self._hints.get(offset)
        if hint is not None and hint[0] == seg.base:
            return hint[2], hint[1]
        if seg.index_offsets is None or seg.index_positions is None:
            return None
        i = bisect.bisect_right(seg.index_offsets, offset) - 1
        return seg.index_offsets[i], seg.index_positions[i]

    def _remember(self, offset: int, base: int, pos: int, at: int) -> None:
        """Remember where a read ended (the frame at byte ``pos`` of segment ``base`` starts at
        offset ``at``) so the consumer's next read from ``offset`` starts there without a scan."""
        self._hints[offset] = (base, pos, at)
        self._hints.move_to_end(offset)
        while len(self._hints) > _HINTS:
            self._hints.popitem(last=False)

    def _build_index(self, seg: _Segment) -> None:
        """Index a sealed segment on its first read (outside the lock: it reads the whole file)."""
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except FileNotFoundError:
            return  # trimmed meanwhile; the caller's loop reports it
        try:
            scan = _scan(fd, seg.base, seg.size, self.limits.index_bytes, verify=False)
        finally:
            os.close(fd)
        if scan.count != seg.count or scan.end_pos != seg.size:
            raise StreamError(
                f"stream segment {seg.path} is corrupt: holds {scan.count} whole records in "
                f"{scan.end_pos} of {seg.size} bytes, expected {seg.count} (the next segment's name)"
            )
        with self._lock:
            seg.index_positions = scan.positions or [0]
            seg.index_offsets = scan.offsets or [seg.base]

    # -- waiting, trimming, closing -------------------------------------------------------------

    def wait(self, offset: int, timeout: float) -> bool:
        """Block until a durable record at ``offset`` or later exists, or ``timeout`` seconds pass.

        Returns whether it exists. Returns early (False unless the record exists) when the log closes.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._durable > offset or self._closed, timeout)
            return self._durable > offset

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
