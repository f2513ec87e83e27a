"""The file tailer: real files in tmp_path, appended to a real LocalLog, driven poll by poll.

Rotations are done the way logrotate does them (``os.rename`` + a new file; ``shutil.copy`` + truncate
in place), writers keep their own file handles, and every test checks the exact records in the stream.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loglake.config import TailConfig
from loglake.errors import ConfigError, SourceError
from loglake.sources.tail import MAX_LINE_BYTES, Tailer
from loglake.stream.local import LocalLog, StreamLimits

MakeTailer = Callable[..., Tailer]


@pytest.fixture()
def stream(tmp_path: Path) -> Iterator[LocalLog]:
    log = LocalLog(tmp_path / "stream", fsync=False)
    yield log
    log.close()


@pytest.fixture()
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "state" / "tail" / "app.json"


@pytest.fixture()
def make_tailer(stream: LocalLog, state_path: Path) -> Iterator[MakeTailer]:
    """``make_tailer(*patterns, start_at=..., log=...)``: a Tailer on ``stream``, stopped at teardown."""
    made: list[Tailer] = []

    def make(
        *patterns: Path | str,
        start_at: str = "beginning",
        log: LocalLog | None = None,
        rotate_wait: float = 0.0,
    ) -> Tailer:
        config = TailConfig(
            paths=tuple(str(p) for p in patterns),
            stream="app",
            start_at=start_at,
            poll_seconds=0.01,
        )
        target = log or stream
        tailer = Tailer("app", config, target.append, state_path, rotate_wait=rotate_wait)
        made.append(tailer)
        return tailer

    yield make
    for tailer in made:
        tailer.stop()


def records(log: LocalLog) -> list[bytes]:
    out: list[tuple[int, bytes]] = []
    offset = log.start_offset
    while batch := log.read(offset):
        out.extend(batch)
        offset = batch[-1][0] + 1
    return [payload for _, payload in out]


def write(path: Path, text: str | bytes) -> None:
    """Append like a logging process: open, write, close (the path is resolved at each write)."""
    with open(path, "ab") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)


def lines(prefix: str, first: int, count: int) -> str:
    return "".join(f"{prefix}-{n:04d} some log text\n" for n in range(first, first + count))


def expected(prefix: str, first: int, count: int) -> list[bytes]:
    return lines(prefix, first, count).encode().splitlines()


def drain(tailer: Tailer) -> int:
    """Poll until no file has data left over for the next poll."""
    total = tailer.poll_once()
    while tailer.behind:
        total += tailer.poll_once()
    return total


# -- basics ---------------------------------------------------------------------------------------


def test_follows_appends_across_polls(tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer):
    app = tmp_path / "app.log"
    write(app, lines("a", 0, 3))
    tailer = make_tailer(app)
    assert tailer.poll_once() == 3
    write(app, lines("a", 3, 2))
    assert tailer.poll_once() == 2
    assert tailer.poll_once() == 0
    assert records(stream) == expected("a", 0, 5)
    assert tailer.lines == 5
    assert tailer.bytes == sum(len(r) for r in expected("a", 0, 5))
    assert tailer.files_followed == 1
    assert (tailer.rotations, tailer.truncations, tailer.errors) == (0, 0, 0)


def test_partial_line_held_until_completed_and_crlf_stripped(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    app = tmp_path / "app.log"
    write(app, "first\r\nhal")
    tailer = make_tailer(app)
    assert tailer.poll_once() == 1
    assert tailer.poll_once() == 0  # still incomplete: nothing emitted
    write(app, "f a line")
    assert tailer.poll_once() == 0
    write(app, "\r\nnext\n")
    assert tailer.poll_once() == 2
    assert records(stream) == [b"first", b"half a line", b"next"]


def test_empty_lines_are_skipped_and_counted(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    app = tmp_path / "app.log"
    write(app, "a\n\n\r\nb\n")
    tailer = make_tailer(app)
    assert tailer.poll_once() == 2
    assert records(stream) == [b"a", b"b"]
    assert tailer.empty_lines == 2


def test_long_line_is_cut_into_1mib_pieces(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    app = tmp_path / "app.log"
    long = bytes(range(65, 91)) * (MAX_LINE_BYTES * 5 // 2 // 26)  # about 2.5 MiB, no newline
    write(app, b"before\n" + long)
    tailer = make_tailer(app)
    drain(tailer)
    # Two full pieces leave as soon as they are known to be too long; the rest waits for its end.
    assert records(stream) == [
        b"before",
        long[:MAX_LINE_BYTES],
        long[MAX_LINE_BYTES : 2 * MAX_LINE_BYTES],
    ]
    write(app, b"\nafter\n")
    drain(tailer)
    got = records(stream)
    assert got[1:4] == [long[i : i + MAX_LINE_BYTES] for i in range(0, len(long), MAX_LINE_BYTES)]
    assert got[-1] == b"after"
    assert tailer.line_cuts == 2
    assert b"".join(got[1:4]) == long


def test_start_at_end_skips_history_but_not_later_files(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    old = tmp_path / "old.log"
    write(old, lines("hist", 0, 5) + "being writ")
    tailer = make_tailer(tmp_path / "*.log", start_at="end")
    assert tailer.poll_once() == 0
    write(old, "ten\n" + lines("live", 0, 2))
    new = tmp_path / "new.log"
    write(new, lines("new", 0, 3))  # appears after the start: read from its beginning
    tailer.poll_once()
    assert records(stream) == [b"being written", *expected("live", 0, 2), *expected("new", 0, 3)]


def test_start_at_beginning_reads_history(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    write(tmp_path / "old.log", lines("hist", 0, 5))
    tailer = make_tailer(tmp_path / "*.log", start_at="beginning")
    assert tailer.poll_once() == 5
    assert records(stream) == expected("hist", 0, 5)


def test_start_at_end_after_restart_reads_files_created_while_down(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    write(tmp_path / "a.log", lines("hist", 0, 3))
    first = make_tailer(tmp_path / "*.log", start_at="end")
    first.poll_once()
    first.stop()
    write(tmp_path / "b.log", lines("b", 0, 2))  # created while we were down: not history
    second = make_tailer(tmp_path / "*.log", start_at="end")
    second.poll_once()
    assert records(stream) == expected("b", 0, 2)


def test_glob_picks_up_new_files(tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "sub").mkdir()  # a folder matched by the glob is ignored
    write(logs / "a.log", lines("a", 0, 2))
    tailer = make_tailer(logs / "*")
    assert tailer.poll_once() == 2
    write(logs / "b.log", lines("b", 0, 3))
    write(logs / "a.log", lines("a", 2, 1))
    assert tailer.poll_once() == 4
    got = records(stream)
    assert [r for r in got if r.startswith(b"a")] == expected("a", 0, 3)
    assert [r for r in got if r.startswith(b"b")] == expected("b", 0, 3)
    assert tailer.files_followed == 2
    assert tailer.errors == 0


# -- rotation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["app.log", "app.log*"])
def test_rename_rotation_between_polls_loses_and_repeats_nothing(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer, pattern: str
):
    app = tmp_path / "app.log"
    # The application keeps its handle across the rename, as it does until it reopens its log.
    with open(app, "ab", buffering=0) as writer:
        writer.write(lines("old", 0, 2).encode())
        tailer = make_tailer(tmp_path / pattern)
        assert tailer.poll_once() == 2
        writer.write(lines("old", 2, 3).encode())  # after our last poll, before the rename
        os.rename(app, tmp_path / "app.log.1")
        writer.write(lines("old", 5, 1).encode())  # still written until the writer reopens
        write(app, lines("new", 0, 2))
        assert tailer.poll_once() == 6
    write(app, lines("new", 2, 1))
    tailer.poll_once()
    got = records(stream)
    assert [r for r in got if r.startswith(b"old")] == expected("old", 0, 6)
    assert [r for r in got if r.startswith(b"new")] == expected("new", 0, 3)
    assert len(got) == 9
    assert tailer.rotations == 1
    if pattern == "app.log":
        assert tailer.following == 1  # the rotated file was read to its end and let go


def test_renamed_file_is_read_until_idle_before_it_is_let_go(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    app = tmp_path / "app.log"
    write(app, lines("old", 0, 1) + "unfinished")
    tailer = make_tailer(app, rotate_wait=0.3)
    tailer.poll_once()
    os.rename(app, tmp_path / "app.log.1")
    tailer.poll_once()
    assert tailer.following == 1  # kept open: the writer may not have reopened its log yet
    write(tmp_path / "app.log.1", " now\n" + lines("old", 1, 1) + "last")
    assert tailer.poll_once() == 2
    time.sleep(0.35)
    assert tailer.poll_once() == 1  # idle long enough: the incomplete last line goes out
    assert tailer.following == 0
    assert records(stream) == [
        *expected("old", 0, 1),
        b"unfinished now",
        *expected("old", 1, 1),
        b"last",
    ]


def test_copytruncate_rotation(tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer):
    app = tmp_path / "app.log"
    write(app, lines("a", 0, 4))
    tailer = make_tailer(app)
    assert tailer.poll_once() == 4
    shutil.copy(app, tmp_path / "app.log.1")
    with open(app, "r+b") as fh:
        fh.truncate(0)
    write(app, lines("b", 0, 2))  # shorter than before: the size tells
    assert tailer.poll_once() == 2
    assert tailer.truncations == 1
    # Truncated and written past our old offset before the next poll: the first bytes tell.
    shutil.copy(app, tmp_path / "app.log.1")
    with open(app, "r+b") as fh:
        fh.truncate(0)
    write(app, lines("c", 0, 5))
    assert tailer.poll_once() == 5
    assert tailer.truncations == 2
    assert records(stream) == [*expected("a", 0, 4), *expected("b", 0, 2), *expected("c", 0, 5)]


def test_deleted_file_with_incomplete_last_line(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    app = tmp_path / "app.log"
    write(app, "complete\nincomplete")
    tailer = make_tailer(tmp_path / "*.log")
    assert tailer.poll_once() == 1
    app.unlink()
    assert tailer.poll_once() == 1
    assert records(stream) == [b"complete", b"incomplete"]
    assert tailer.following == 0
    assert tailer.rotations == 0
    state = json.loads(tailer.state_path.read_text())
    assert state["files"] == []  # forgotten once fully read


# -- restarts ------------------------------------------------------------------------------------


def test_restart_continues_exactly_where_acknowledged_data_ended(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer, state_path: Path
):
    app = tmp_path / "app.log"
    write(app, lines("a", 0, 3) + "half")
    first = make_tailer(app)
    first.poll_once()
    first.stop()
    state = json.loads(state_path.read_text())
    assert [(f["path"], f["offset"]) for f in state["files"]] == [(str(app), len(lines("a", 0, 3)))]
    assert not list(state_path.parent.glob("*.tmp"))
    write(app, " done\n" + lines("a", 3, 2))
    second = make_tailer(app)
    assert second.poll_once() == 3
    assert records(stream) == [*expected("a", 0, 3), b"half done", *expected("a", 3, 2)]


@pytest.mark.parametrize("pattern", ["app.log", "app.log*"])
def test_restart_across_rename_rotation(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer, pattern: str
):
    app = tmp_path / "app.log"
    write(app, lines("old", 0, 2))
    first = make_tailer(tmp_path / pattern, rotate_wait=60)
    first.poll_once()
    first.stop()
    # While we are down: more lines, the rename, a new file with lines.
    write(app, lines("old", 2, 3))
    os.rename(app, tmp_path / "app.log.1")
    write(app, lines("new", 0, 2))
    second = make_tailer(tmp_path / pattern, rotate_wait=60)
    second.poll_once()
    # Rotated again after a restart, the old file still open (its writer may still write to it).
    write(tmp_path / "app.log.1", lines("old", 5, 1))
    os.rename(app, tmp_path / "app.log.2")
    write(app, lines("newer", 0, 1))
    second.poll_once()
    write(tmp_path / "app.log.2", lines("new", 2, 1))
    second.stop()
    write(tmp_path / "app.log.2", lines("new", 3, 1))
    write(app, lines("newer", 1, 1))
    third = make_tailer(tmp_path / pattern, rotate_wait=60)
    third.poll_once()
    got = records(stream)
    assert [r for r in got if r.startswith(b"old")] == expected("old", 0, 6)
    assert [r for r in got if r.startswith(b"new-")] == expected("new", 0, 4)
    assert [r for r in got if r.startswith(b"newer")] == expected("newer", 0, 2)
    assert len(got) == 12


def test_restart_across_copytruncate(tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer):
    app = tmp_path / "app.log"
    write(app, lines("a", 0, 4))
    first = make_tailer(app)
    first.poll_once()
    first.stop()
    shutil.copy(app, tmp_path / "app.log.1")
    with open(app, "r+b") as fh:
        fh.truncate(0)
    write(app, lines("b", 0, 2))
    second = make_tailer(app)
    second.poll_once()
    write(app, lines("b", 2, 1))
    second.stop()
    third = make_tailer(app)
    third.poll_once()
    assert records(stream) == [*expected("a", 0, 4), *expected("b", 0, 3)]


def test_inode_reuse_is_detected_by_fingerprint(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    app = tmp_path / "app.log"
    write(app, lines("first-file", 0, 10))
    inode = app.stat().st_ino
    first = make_tailer(app)
    first.poll_once()
    first.stop()
    # Same device and inode, other content longer than the saved offset: exactly what a reused
    # inode looks like (a deleted file's inode given to a new file), made deterministic.
    with open(app, "wb") as fh:
        fh.write(lines("second-file", 0, 12).encode())
    assert app.stat().st_ino == inode
    second = make_tailer(app)
    assert second.poll_once() == 12
    assert records(stream) == [*expected("first-file", 0, 10), *expected("second-file", 0, 12)]


def test_corrupt_state_file_is_refused_with_a_fix(
    tmp_path: Path, state_path: Path, stream: LocalLog
):
    state_path.parent.mkdir(parents=True)
    state_path.write_text("{not json")
    config = TailConfig(paths=(str(tmp_path / "*.log"),), stream="app")
    with pytest.raises(SourceError, match="delete it"):
        Tailer("app", config, stream.append, state_path)
    with pytest.raises(ConfigError, match="start_at"):
        Tailer(
            "app",
            TailConfig(paths=("x",), stream="s", start_at="middle"),
            stream.append,
            state_path,
        )


# -- errors and backpressure --------------------------------------------------------------------


def test_unreadable_file_is_counted_and_retried(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    app = tmp_path / "app.log"
    os.symlink("app.log", app)  # a symlink loop: stat fails even for root
    tailer = make_tailer(app)
    assert tailer.poll_once() == 0
    assert tailer.poll_once() == 0
    assert tailer.errors == 1  # counted once, not at every poll
    assert "cannot stat" in tailer.problems[str(app)]
    app.unlink()
    write(app, lines("a", 0, 2))
    assert tailer.poll_once() == 2
    assert tailer.problems == {}


def test_stream_full_keeps_lines_unread_until_space_is_freed(
    tmp_path: Path, make_tailer: MakeTailer, state_path: Path
):
    small = LocalLog(
        tmp_path / "small", StreamLimits(segment_bytes=512, max_bytes=2048), fsync=False
    )
    app = tmp_path / "app.log"
    tailer = make_tailer(app, log=small)
    consumed: list[bytes] = []
    next_read = 0
    refused_rounds = 0
    for round_ in range(20):
        write(app, lines("r", round_ * 10, 10))  # 10 records of 28 framed bytes
        full_before = tailer.stream_full
        tailer.poll_once()
        if tailer.stream_full > full_before:
            refused_rounds += 1
            assert tailer.retry_after > 0
            # Only acknowledged lines count in the saved position (offsets are dense from 0).
            saved = json.loads(state_path.read_text())["files"][0]["offset"]
            assert saved == len(lines("r", 0, small.next_offset))
            # The consumer catches up, commits, and the log trims: space comes back.
            for _, payload in small.read(next_read, max_records=10_000):
                consumed.append(payload)
            next_read = small.next_offset
            small.trim(next_read)
    tailer.poll_once()
    consumed.extend(payload for _, payload in small.read(next_read, max_records=10_000))
    assert refused_rounds >= 2
    assert consumed == expected("r", 0, 200)  # nothing lost, nothing twice, in order
    small.close()


# -- the thread ----------------------------------------------------------------------------------


def test_thread_follows_and_stop_appends_what_is_complete(
    tmp_path: Path, stream: LocalLog, make_tailer: MakeTailer
):
    app = tmp_path / "app.log"
    tailer = make_tailer(tmp_path / "*.log")
    tailer.start()
    write(app, lines("a", 0, 5))
    deadline = time.monotonic() + 5
    while len(records(stream)) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert records(stream) == expected("a", 0, 5)
    os.rename(app, tmp_path / "app.old")
    write(app, lines("b", 0, 3) + "tail")
    tailer.stop()  # the lines complete at stop time are appended before it returns
    assert records(stream)[5:] == expected("b", 0, 3)
    write(app, " end\n")
    again = make_tailer(tmp_path / "*.log")
    again.start()
    again.stop()
    assert records(stream) == [*expected("a", 0, 5), *expected("b", 0, 3), b"tail end"]
