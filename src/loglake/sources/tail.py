"""Follow log files into a stream, like a log shipper (Vector's file source, Filebeat, Fluent Bit tail).

A :class:`Tailer` expands its globs on every poll, follows each matched file by identity (device, inode
and a CRC of its first bytes), and appends every new complete line to one stream. Rotation by rename
and by copytruncate is handled; the position of each file is saved atomically after every acknowledged
append, so a restart continues where the acknowledged data ended. Guarantees and limits are described
in ``docs/tail.md``.

:class:`TailSource` is the live source of one ``[tail.NAME]`` section (registered as ``tail`` in
:data:`loglake.sources.live.REGISTRY`, one instance per section).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import stat
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loglake.config import StreamConfig, TailConfig
from loglake.errors import LoglakeError, SourceError
from loglake.sources.live import (
    HttpRoute,
    SourceContext,
    SourceCounters,
    Spawn,
    plain_thread,
    supervised,
)
from loglake.stream.local import StreamFullError

if TYPE_CHECKING:
    from loglake.config import Config
    from loglake.sources.live import LiveSource

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20  # the stream's default max_record_bytes: longer lines are cut into pieces
FINGERPRINT_BYTES = 256  # CRC of this many first bytes tells a reused inode from the file we knew
# One read must hold a whole line of MAX_LINE_BYTES plus "\r\n", so every read either completes a
# line or cuts one: the reader always makes progress.
READ_BYTES = 2 * MAX_LINE_BYTES
FILE_BUDGET_BYTES = 8 << 20  # read per file per poll, so one busy file cannot starve the others
BATCH_BYTES = 1 << 20  # lines gathered before one append (one stream fsync, one state save)
ROTATE_WAIT_S = 5.0  # a renamed-away file is read until it has been idle this long
STATE_VERSION = 1

Key = tuple[int, int]  # (st_dev, st_ino)


def split_lines(data: bytes, final: bool) -> tuple[list[bytes], int, int, int]:
    """Cut ``data`` into records: returns ``(records, bytes consumed, cuts made, empty lines)``.

    Lines end with ``\\n``; a trailing ``\\r`` is stripped and empty lines are skipped. A line longer
    than :data:`MAX_LINE_BYTES` is cut into pieces of that size. Bytes after the last newline are an
    incomplete line: kept (not consumed) unless ``final``, or unless they already exceed the limit, in
    which case whole pieces are emitted and only the remainder is kept.
    """
    records: list[bytes] = []
    cuts = empties = 0
    end = data.rfind(b"\n") + 1
    if end:
        for line in data[: end - 1].split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                empties += 1
            elif len(line) <= MAX_LINE_BYTES:
                records.append(line)
            else:
                pieces = range(0, len(line), MAX_LINE_BYTES)
                records.extend(line[i : i + MAX_LINE_BYTES] for i in pieces)
                cuts += len(pieces) - 1
    pos = end
    while len(data) - pos > MAX_LINE_BYTES:  # no newline yet, but already too long to be one record
        records.append(data[pos : pos + MAX_LINE_BYTES])
        pos += MAX_LINE_BYTES
        cuts += 1
    if final and pos < len(data):
        rest = data[pos:].removesuffix(b"\r")
        if rest:
            records.append(rest)
        else:
            empties += 1
        pos = len(data)
    return records, pos, cuts, empties


@dataclass
class _File:
    """One followed file (or, with ``fd == -1``, a saved position not matched to a file yet)."""

    dev: int
    ino: int
    path: str  # where a glob (or the restart search) last found it
    offset: int  # acknowledged: every byte before it is in the stream, or was an empty line
    fp_len: int = 0  # the fingerprint covers this many first bytes (grows up to FINGERPRINT_BYTES)
    fp_crc: int = 0
    fd: int = -1
    read_pos: int = 0  # read into the current batch; becomes ``offset`` once the batch is acked
    size: int = -1  # st_size and st_mtime_ns at the last poll, to notice changes cheaply
    mtime_ns: int = -1
    changed_at: float = 0.0  # monotonic time the file last changed
    idle_size: int = (
        -1
    )  # size when only an incomplete line was left: skip re-reading until it grows
    gone_since: float | None = None  # no glob finds it any more (renamed away or deleted)
    finished: bool = False  # read to its end after going away: close it once the batch is acked

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)


@dataclass
class _Found:
    """Paths at which one file (one identity) was found by the globs, and the patterns that matched."""

    paths: list[str] = field(default_factory=list)
    patterns: set[str] = field(default_factory=set)


class Tailer:
    """Follows the files of one ``[tail.NAME]`` section and appends their lines to a stream.

    ``append`` is the stream's append (``LocalLog.append``): it must return only once the records are
    durable and raise :class:`StreamFullError` when the stream is full. ``state_path`` is the JSON
    file holding each file's acknowledged position (``$LOGLAKE_HOME/state/tail/NAME.json``).
    Construction loads it and raises :class:`SourceError` if it exists but cannot be read.

    Counters (read them any time): ``lines`` and ``bytes`` appended, ``files_followed`` (files
    opened, in total), ``rotations``, ``truncations``, ``errors`` (problems met; an unreadable file
    counts once until it is readable again), ``line_cuts`` (cuts made in lines over 1 MiB),
    ``empty_lines`` (skipped), ``stream_full`` (appends refused for lack of space). ``problems`` maps
    a path (or ``stream NAME``) to the reason it currently fails.
    """

    def __init__(
        self,
        name: str,
        config: TailConfig,
        append: Callable[[list[bytes]], tuple[int, int]],
        state_path: Path,
        *,
        rotate_wait: float = ROTATE_WAIT_S,
    ) -> None:
        self.name = name  # config is valid: TailConfig checks its own values when built
        self.config = config
        self.state_path = Path(state_path)
        self.rotate_wait = rotate_wait
        self._append = append
        self.lines = 0
        self.bytes = 0
        self.files_followed = 0
        self.rotations = 0
        self.truncations = 0
        self.errors = 0
        self.line_cuts = 0
        self.empty_lines = 0
        self.stream_full = 0
        self.problems: dict[str, str] = {}
        self.retry_after = 0.0  # > 0 after a refused append: the thread waits that long
        self.behind = False  # some file had more data than one poll reads: poll again at once
        self._lock = threading.RLock()  # poll_once may run in the thread and in stop() / tests
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._files: dict[Key, _File] = {}  # followed, in the order they were found
        self._saved: dict[Key, _File] = {}  # loaded positions whose file is not open yet
        self._known_patterns: set[str] = set()  # patterns a previous run already followed
        self._unopened_at_start: set[Key] = set()
        self._scanned = False  # the first scan of this run decides where pre-existing files start
        self._dirty = False
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._touched: dict[Key, _File] = {}
        self._pending_cuts = 0
        self._pending_empties = 0
        self._stream_where = f"stream {self.config.stream}"
        self._reported: set[str] = set()  # problems met during the current poll
        self._load_state()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def following(self) -> int:
        """How many files are open and followed right now."""
        return len(self._files)

    def start(self, spawn: Spawn = plain_thread) -> None:
        """Start the polling thread through ``spawn`` (the server's supervisor in ``loglake
        serve``); a no-op if it runs. Errors are counted; the thread does not die of them."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop_event.clear()
        self._thread = spawn(f"tail-{self.name}", self._run)

    def stop(self) -> None:
        """Stop the thread, append the lines completed so far, save state, close the files.

        If the thread ran, one last poll appends what the files hold complete at this moment; call
        it before the stream is closed. If the last append fails (stream full or closed) the
        unappended lines are simply read again by the next run, since the state only moves on acks.
        A later :meth:`start` or :meth:`poll_once` resumes like a restart would.
        """
        thread = self._thread
        self._stop_event.set()
        if thread is not None:
            thread.join()
            self._thread = None
        with self._lock:
            if thread is not None:
                self._guarded_poll()
            self._dirty = True
            self._save_state()
            for f in self._files.values():
                os.close(f.fd)
                f.fd = -1
                f.read_pos = f.offset
                self._saved[f.key] = f
            self._files.clear()
            self._scanned = False

    def _run(self) -> None:
        while not self._stop_event.is_set():
            self._guarded_poll()
            if self.behind and not self.retry_after:
                continue  # a backlog: read on without sleeping
            self._stop_event.wait(max(self.config.poll_seconds, self.retry_after))

    def _guarded_poll(self) -> None:
        """poll_once for the thread: a bug must not end the tailing, so it is counted and logged."""
        try:
            self.poll_once()
        except Exception as exc:
            self.errors += 1
            log.exception(
                "tail %s: poll failed; retrying at the next poll",
                self.name,
                extra={"fields": self._context(reason=repr(exc))},
            )

    def status(self) -> dict[str, Any]:
        """Counters, current problems and each followed file's path and acknowledged offset."""
        with self._lock:
            files = [{"path": f.path, "offset": f.offset} for f in self._files.values()]
        counters = ("lines", "bytes", "files_followed", "rotations", "truncations", "errors")
        extra = ("line_cuts", "empty_lines", "stream_full")
        return {
            "name": self.name,
            "stream": self.config.stream,
            **{c: getattr(self, c) for c in counters + extra},
            "problems": dict(self.problems),
            "files": files,
        }

    # -- one poll -------------------------------------------------------------------------------

    def poll_once(self) -> int:
        """One scan: find files, read new complete lines, append them, save state; returns lines appended.

        A refused append (stream full, closed, I/O error) leaves the lines unread, sets
        :attr:`retry_after` (stream full) and counts it; the next poll tries again. Unreadable files
        are counted in :attr:`errors` with the reason in :attr:`problems`, and retried.
        """
        with self._lock:
            before = self.lines
            self.behind = False
            self.retry_after = 0.0
            now = time.monotonic()
            self._reported = set()
            found = self._discover()
            self._resolve(found, now)
            for f in list(self._files.values()):
                if not self._read_file(f, now):
                    break  # the stream refused a batch: leave the rest for the next poll
            else:
                if self._flush():
                    # Every file was tried: a file problem not met again is over (fixed, or the
                    # file is no longer matched).
                    for where in [w for w in self.problems if w not in self._reported]:
                        if where not in (self._stream_where, str(self.state_path)):
                            self._clear(where)
            self._scanned = True
            if self._dirty:
                self._save_state()
            return self.lines - before

    def _discover(self) -> dict[Key, _Found]:
        """Expand every pattern; map each regular file's identity to where it was found."""
        found: dict[Key, _Found] = {}
        for pattern in self.config.paths:
            expanded = os.path.expanduser(pattern)
            # A plain path is stat'ed even if missing from its folder listing, so that a
            # permission problem is reported instead of looking like an absent file.
            magic = glob.has_magic(expanded)
            paths = sorted(glob.glob(expanded, recursive=True)) if magic else [expanded]
            for path in paths:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # not there (yet): it is followed once it appears
                except OSError as exc:
                    self._problem(path, f"cannot stat: {exc}")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue  # a glob like /var/log/* also matches folders
                hit = found.setdefault((st.st_dev, st.st_ino), _Found())
                if path not in hit.paths:
                    hit.paths.append(path)
                hit.patterns.add(pattern)
        return found

    def _resolve(self, found: dict[Key, _Found], now: float) -> None:
        """Match found files with followed ones: notice renames and departures, open new files."""
        first = not self._scanned
        if first:  # before the files found by the globs, so a rotated file's older lines go first
            self._find_moved(found, now)
        for key, hit in found.items():
            f = self._files.get(key)
            if f is None:
                self._open(key, hit.paths[0], hit.patterns, first)
                continue
            f.gone_since = None
            if f.path not in hit.paths:  # renamed to a path the globs also match (app.log.1)
                log.info("tail %s: %s was renamed to %s", self.name, f.path, hit.paths[0])
                self.rotations += 1
                f.path = hit.paths[0]
                self._dirty = True
        for key, f in self._files.items():
            if key in found or f.gone_since is not None:
                continue
            f.gone_since = now
            try:
                linked = os.fstat(f.fd).st_nlink > 0
            except OSError:
                linked = False
            if linked:  # renamed away (logrotate's default): read it to its end, then let it go
                self.rotations += 1
                log.info("tail %s: %s was rotated away; reading it to its end", self.name, f.path)
            else:
                log.info("tail %s: %s was deleted; reading it to its end", self.name, f.path)
        if first:
            for key in [k for k in self._saved if k not in found]:
                f = self._saved.pop(key)
                log.warning(
                    "tail %s: %s (inode %d) is gone; %d bytes read before",
                    self.name,
                    f.path,
                    f.ino,
                    f.offset,
                    extra={
                        "fields": self._context(
                            path=f.path, reason="gone since the last run", offset=f.offset
                        )
                    },
                )
                self._dirty = True
            self._unopened_at_start = {k for k in found if k not in self._files}
            if set(self.config.paths) - self._known_patterns:
                self._dirty = True  # record the patterns, so a restart knows what is history
            self._known_patterns |= set(self.config.paths)

    def _find_moved(self, found: dict[Key, _Found], now: float) -> None:
        """After a restart, look for saved files renamed while we were down, in their old folder.

        logrotate renames inside the folder (access.log -> access.log.1), often to a name the globs
        do not match; without this, the lines written to it before the rename would be lost.
        """
        wanted = {k: f for k, f in self._saved.items() if k not in found}
        folders = {os.path.dirname(f.path) or "." for f in wanted.values()}
        inodes = {f.ino for f in wanted.values()}
        for folder in sorted(folders):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue  # the folder went away too: those files are gone
            for entry in entries:
                try:
                    if entry.inode() not in inodes:
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if (
                    key in wanted
                    and key not in self._files
                    and stat.S_ISREG(st.st_mode)
                    and self._open(key, entry.path, set(), True, resume_only=True)
                ):
                    self._files[key].gone_since = now
                    old = wanted[key]  # counted already if the last run saw it go away
                    if old.gone_since is None and entry.path != old.path:
                        self.rotations += 1

    def _open(
        self, key: Key, path: str, patterns: set[str], first: bool, resume_only: bool = False
    ) -> bool:
        """Open a file to follow it; decide where it starts. Returns whether it is followed now."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._problem(path, f"cannot open: {exc}")
            return False
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != key:  # replaced between stat and open: next poll sees it
                os.close(fd)
                return False
            saved = self._saved.get(key)
            resumed = saved is not None and _fingerprint_matches(fd, saved.fp_len, saved.fp_crc)
            if resume_only and not resumed:
                os.close(fd)
                return False
            f = _File(key[0], key[1], path, 0, fd=fd)
            if saved is not None and resumed:
                f.offset, f.fp_len, f.fp_crc = saved.offset, saved.fp_len, saved.fp_crc
            else:
                if saved is not None:
                    log.info(
                        "tail %s: %s has inode %d of a file we followed, but other first bytes "
                        "(inode reused, or rewritten in place): reading it as a new file",
                        self.name,
                        path,
                        key[1],
                    )
                # Files present when following starts honour start_at; files that appear later
                # (rotated in, or created while we were down under a pattern we already followed)
                # are read from the beginning so none of their lines is missed.
                present_at_start = first or key in self._unopened_at_start
                if (
                    present_at_start
                    and self.config.start_at == "end"
                    and not patterns & self._known_patterns
                ):
                    f.offset = _last_line_end(fd, st.st_size)
        except OSError as exc:
            os.close(fd)
            self._problem(path, f"cannot read: {exc}")
            return False
        self._saved.pop(key, None)
        self._unopened_at_start.discard(key)
        f.read_pos = f.offset
        self._files[key] = f
        self.files_followed += 1
        self._dirty = True
        self._clear(path)
        log.info("tail %s: following %s from byte %d", self.name, path, f.offset)
        return True

    def _read_file(self, f: _File, now: float) -> bool:
        """Add the new complete lines of ``f`` to the batch. False if the stream refused a batch."""
        try:
            st = os.fstat(f.fd)
            self._check_rewritten(f, st, now)
            if f.fp_len < FINGERPRINT_BYTES and st.st_size > f.fp_len:
                data = os.pread(f.fd, FINGERPRINT_BYTES, 0)
                f.fp_len, f.fp_crc = len(data), zlib.crc32(data)
                self._dirty = True
            budget = FILE_BUDGET_BYTES
            while f.read_pos < st.st_size and st.st_size != f.idle_size:
                if budget <= 0:
                    self.behind = True
                    return True  # not at the end: it cannot be finished in this poll
                data = os.pread(f.fd, READ_BYTES, f.read_pos)
                # Truncated and rewritten between fstat and pread, ``data`` would be a slice of
                # the new content; the first bytes, read after it, tell (the next poll restarts).
                if not data or not _fingerprint_matches(f.fd, f.fp_len, f.fp_crc):
                    break
                budget -= len(data)
                records, used, cuts, empties = split_lines(data, final=False)
                if not used:  # only an incomplete line is left: wait until it grows
                    f.idle_size = f.read_pos + len(data)
                    break
                self._add(f, records, used, cuts, empties)
                if self._batch_bytes >= BATCH_BYTES and not self._flush():
                    return False
            if f.gone_since is not None and self._may_finish(f, st, now):
                data = os.pread(f.fd, READ_BYTES, f.read_pos)
                intact = _fingerprint_matches(f.fd, f.fp_len, f.fp_crc)
                if intact and len(data) < READ_BYTES:  # at its end: its last line is all there is
                    records, used, cuts, empties = split_lines(data, final=True)
                    self._add(f, records, used, cuts, empties)
                    f.finished = True
        except OSError as exc:
            self._problem(f.path, f"cannot read: {exc}")
            return True
        self._clear(f.path)
        return True

    def _check_rewritten(self, f: _File, st: os.stat_result, now: float) -> None:
        """Notice copytruncate: the file got smaller than our offset, or its first bytes changed."""
        if (st.st_size, st.st_mtime_ns) == (f.size, f.mtime_ns):
            return
        f.size, f.mtime_ns, f.changed_at = st.st_size, st.st_mtime_ns, now
        shrank = st.st_size < f.offset
        # Truncated and written past our offset again before this poll: only the first bytes tell.
        if shrank or not _fingerprint_matches(f.fd, f.fp_len, f.fp_crc):
            log.info(
                "tail %s: %s was truncated (%d bytes now, we were at %d); reading from its start",
                self.name,
                f.path,
                st.st_size,
                f.offset,
            )
            self.truncations += 1
            f.offset = f.read_pos = f.fp_len = f.fp_crc = 0
            f.idle_size = -1
            self._dirty = True

    def _may_finish(self, f: _File, st: os.stat_result, now: float) -> bool:
        """A deleted file is done at its end; a renamed one once idle for ``rotate_wait`` seconds.

        The wait is for writers that keep writing to the old file until they reopen their log
        (nginx, Apache between logrotate's rename and the postrotate signal).
        """
        assert f.gone_since is not None
        return st.st_nlink == 0 or now - max(f.gone_since, f.changed_at) >= self.rotate_wait

    def _add(self, f: _File, records: list[bytes], used: int, cuts: int, empties: int) -> None:
        self._batch.extend(records)
        self._batch_bytes += sum(len(r) for r in records)
        self._pending_cuts += cuts
        self._pending_empties += empties
        f.read_pos += used
        self._touched[f.key] = f

    def _flush(self) -> bool:
        """Append the batch; once acknowledged, move the offsets on and save the state.

        On refusal nothing moves: the lines are read again by the next poll. Returns success.
        """
        if not self._touched:
            return True
        where = self._stream_where
        try:
            if self._batch:
                self._append(self._batch)
        except StreamFullError as exc:
            self.stream_full += 1
            self.retry_after = exc.retry_after
            log.info(
                "tail %s: %s; retrying in %g s",
                self.name,
                exc,
                exc.retry_after,
                extra={"fields": self._context(reason=str(exc), retry_after=exc.retry_after)},
            )
            self._rewind()
            return False
        except (LoglakeError, OSError) as exc:
            self._problem(where, f"append failed: {exc}")
            self._rewind()
            return False
        self._clear(where)
        self.lines += len(self._batch)
        self.bytes += self._batch_bytes
        self.line_cuts += self._pending_cuts
        self.empty_lines += self._pending_empties
        for f in self._touched.values():
            f.offset = f.read_pos
            if f.finished:
                os.close(f.fd)
                del self._files[f.key]
                log.info("tail %s: done with %s at byte %d", self.name, f.path, f.offset)
        self._reset_batch()
        self._dirty = True
        self._save_state()
        return True

    def _rewind(self) -> None:
        for f in self._touched.values():
            f.read_pos = f.offset
            f.finished = False
            f.idle_size = -1
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._batch = []
        self._batch_bytes = 0
        self._touched = {}
        self._pending_cuts = self._pending_empties = 0

    # -- problems and state ---------------------------------------------------------------------

    def _problem(self, where: str, reason: str) -> None:
        """Record a failure; count and log it once, not at every poll while it lasts."""
        self._reported.add(where)
        if self.problems.get(where) != reason:
            self.errors += 1
            log.warning(
                "tail %s: %s: %s (retrying every poll)",
                self.name,
                where,
                reason,
                extra={"fields": self._context(path=where, reason=reason)},
            )
        self.problems[where] = reason

    def _context(self, **fields: object) -> dict[str, object]:
        """Structured fields of this tail's log events: its name and stream, then ``fields``."""
        return {"tail": self.name, "stream": self.config.stream, **fields}

    def _clear(self, where: str) -> None:
        if self.problems.pop(where, None) is not None:
            log.info(
                "tail %s: %s works again",
                self.name,
                where,
                extra={"fields": self._context(path=where)},
            )

    def _save_state(self) -> None:
        """Write the acknowledged positions atomically: temp file, fsync, rename, fsync the folder.

        A failure is counted in :attr:`errors` and retried at the next change; meanwhile a restart
        would repeat lines appended since the last good save.
        """
        entries = [*self._files.values(), *self._saved.values()]
        data = {
            "version": STATE_VERSION,
            "tailer": self.name,
            "patterns": sorted(self._known_patterns),
            "files": [
                {
                    "dev": f.dev,
                    "ino": f.ino,
                    "path": f.path,
                    "offset": f.offset,
                    "fingerprint_bytes": f.fp_len,
                    "fingerprint_crc32": f.fp_crc,
                    "rotated_away": f.gone_since is not None,
                }
                for f in entries
            ],
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_path)
            dir_fd = os.open(self.state_path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself lives in the folder
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self._problem(str(self.state_path), f"cannot save tail state: {exc}")
            return
        self._clear(str(self.state_path))
        self._dirty = False

    def _load_state(self) -> None:
        """Read the saved positions; a missing file means a first run."""
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"tail {self.name}: cannot read its state file {self.state_path}: {exc}; "
                "fix or delete it (deleted, files are read again per start_at)"
            ) from exc
        try:
            if raw["version"] != STATE_VERSION:
                raise ValueError(f"version {raw['version']!r}, expected {STATE_VERSION}")
            self._known_patterns = {str(p) for p in raw["patterns"]}
            for item in raw["files"]:
                f = _File(
                    dev=int(item["dev"]),
                    ino=int(item["ino"]),
                    path=str(item["path"]),
                    offset=int(item["offset"]),
                    fp_len=int(item["fingerprint_bytes"]),
                    fp_crc=int(item["fingerprint_crc32"]),
                    gone_since=0.0 if item.get("rotated_away") else None,
                )
                self._saved[f.key] = f
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(
                f"tail {self.name}: state file {self.state_path} is not a tail state "
                f"({type(exc).__name__}: {exc}); fix or delete it"
            ) from exc


def _fingerprint_matches(fd: int, length: int, crc: int) -> bool:
    """Whether the first ``length`` bytes of ``fd`` still have CRC ``crc`` (no fingerprint: yes)."""
    if length == 0:
        return True
    data = os.pread(fd, length, 0)
    return len(data) == length and zlib.crc32(data) == crc


def _last_line_end(fd: int, size: int) -> int:
    """Where start_at=end starts: after the last newline, so the line being written is not cut."""
    start = max(0, size - MAX_LINE_BYTES)
    nl = os.pread(fd, size - start, start).rfind(b"\n")
    if nl >= 0:
        return start + nl + 1
    return size if start else 0


def sources(config: Config) -> list[LiveSource]:
    """One :class:`TailSource` per ``[tail.NAME]`` section."""
    return [TailSource(name, tail) for name, tail in sorted(config.tail.items())]


class TailSource:
    """One ``[tail.NAME]`` section as a live source (``tail.NAME``): a :class:`Tailer` feeding its
    stream, created with the defaults when no ``[streams.NAME]`` declares it.

    Positions are kept in ``state/tail/NAME.json``. The polling thread runs under the server's
    supervisor and is restarted after a crash (it resumes from the acknowledged positions).
    Counters: ``received`` lines read (empty ones included), ``accepted`` appended, ``dropped``
    ``empty`` lines skipped; lines the stream refused are read again later, never dropped.
    ``extra``: ``bytes``, ``files_followed``, ``rotations``, ``truncations``, ``errors``,
    ``line_cuts``, ``stream_full`` (appends refused); ``gauges``: ``files`` followed now. Health:
    a stream that refuses appends for another reason than being full; a file that cannot be read
    is logged and counted in ``errors`` (a glob matching nothing yet is normal for a tail).
    """

    def __init__(self, name: str, config: TailConfig) -> None:
        self.name = f"tail.{name}"
        self.tail_name = name
        self.config = config
        self.tailer: Tailer | None = None

    def start(self, context: SourceContext) -> None:
        stream = self.config.stream
        context.streams.ensure(stream, StreamConfig())
        self.tailer = Tailer(
            self.tail_name,
            self.config,
            partial(context.streams.append, stream),
            context.state_dir / f"{self.tail_name}.json",
        )
        self.tailer.start(supervised(context.supervisor, restart=True))

    def stop(self) -> None:
        if self.tailer is not None:
            self.tailer.stop()

    def counters(self) -> Mapping[str, SourceCounters]:
        t = self.tailer
        if t is None:
            return {}
        empty = t.empty_lines
        return {
            self.config.stream: SourceCounters(
                received=t.lines + empty,
                accepted=t.lines,
                dropped={"empty": empty} if empty else {},
                extra={
                    "bytes": t.bytes,
                    "files_followed": t.files_followed,
                    "rotations": t.rotations,
                    "truncations": t.truncations,
                    "errors": t.errors,
                    "line_cuts": t.line_cuts,
                    "stream_full": t.stream_full,
                },
                gauges={"files": t.following},
            )
        }

    def health(self) -> list[str]:
        t = self.tailer
        if t is None:
            return []
        where = f"stream {self.config.stream}"
        reason = dict(t.problems).get(where)
        return [f"{self.name}: {where}: {reason}"] if reason else []

    def routes(self) -> list[HttpRoute]:
        return []

    def feeds(self) -> list[str]:
        return [self.config.stream]
