"""What every batch source hands to the ingest pipeline: named inputs that open as byte streams.

A source (files, S3, stdin...) lists :class:`Input` objects; the pipeline opens each one, decompresses it
transparently (gzip, bz2, zstd, detected from the first bytes) and reads it in bounded chunks that end on
a line boundary, so memory stays flat whatever the input size.
"""

from __future__ import annotations

import bz2
import gzip
import io
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from loglake.errors import SourceError


@dataclass(frozen=True)
class Input:
    """One file, object or stream to ingest.

    ``name`` goes into the ``source`` column; ``key`` + ``size`` + ``version`` (mtime or ETag) identify
    the content for the ingest ledger, so the same input is not ingested twice. ``open`` returns the raw
    (possibly compressed) byte stream.
    """

    name: str
    key: str
    size: int | None
    version: str
    open: Callable[[], BinaryIO]

    @property
    def fingerprint(self) -> str | None:
        """Identity of this content, or None when it cannot be known (stdin)."""
        if self.size is None:
            return None
        return f"{self.key}|{self.size}|{self.version}"


_GZIP = b"\x1f\x8b"
_BZ2 = b"BZh"
_ZSTD = b"\x28\xb5\x2f\xfd"


class _Counting(io.RawIOBase):
    """Counts compressed bytes read, for the progress bar."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


class _ZstdReader(io.RawIOBase):
    """Zstandard frames back to back, decompressed; a stream that ends inside a frame is an error.

    zstandard's own ``stream_reader`` returns a truncated file's data as if it were complete, which
    would store the first part of a damaged file without a word; gzip and bz2 raise EOFError there,
    and so does this reader. Corrupt data raises OSError.
    """

    # Compressed bytes fed per step: bounds what one step can expand to (zstd's worst case is about
    # 32,768x, so ~128 MiB), where feeding a whole read at once would have no bound.
    _FEED = 4096

    def __init__(self, source: BinaryIO) -> None:
        import zstandard

        self._source = source
        self._dctx = zstandard.ZstdDecompressor()
        self._zstd_error = zstandard.ZstdError
        self._frame = self._dctx.decompressobj()
        self._in_frame = False  # bytes of the current frame have been fed, its end not yet seen
        self._input = memoryview(b"")
        self._output = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._output:
            if not self._input:
                self._input = memoryview(self._source.read(1 << 16))
                if not self._input:
                    if self._in_frame:
                        raise EOFError(
                            "Compressed file ended before the end-of-stream marker was reached"
                        )
                    return 0
            self._step()
        n = min(len(buffer), len(self._output))
        buffer[:n] = self._output[:n]
        self._output = self._output[n:]
        return n

    def _step(self) -> None:
        data, self._input = self._input[: self._FEED], self._input[self._FEED :]
        try:
            out = self._frame.decompress(data)
        except self._zstd_error as exc:
            raise OSError(f"zstd: {exc}") from exc
        self._in_frame = True
        if self._frame.eof:  # the frame is complete; what follows it starts the next one
            rest = self._frame.unused_data
            self._frame = self._dctx.decompressobj()
            self._in_frame = False
            if rest:
                self._input = memoryview(bytes(rest) + bytes(self._input))
        self._output = memoryview(out)


def open_decompressed(raw: BinaryIO) -> tuple[BinaryIO, _Counting]:
    """Wrap ``raw`` in the right decompressor after peeking at its magic bytes.

    Returns the decompressed stream and a counter of raw bytes consumed.
    """
    counting = _Counting(raw)
    buffered = io.BufferedReader(counting, buffer_size=1 << 20)
    head = buffered.peek(4)[:4]
    stream: BinaryIO
    if head.startswith(_GZIP):
        stream = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
    elif head.startswith(_BZ2):
        stream = bz2.BZ2File(buffered, mode="rb")  # type: ignore[assignment]
    elif head.startswith(_ZSTD):
        stream = io.BufferedReader(_ZstdReader(buffered), buffer_size=1 << 20)
    else:
        stream = buffered
    return stream, counting


#: A line longer than this many chunks is cut into pieces of this many chunks (each piece is kept,
#: and rejected), so one endless line cannot exhaust memory.
MAX_LINE_CHUNKS = 4


class Chunk(NamedTuple):
    """One piece of an input as read: whole lines, or one piece of a line too long to hold whole.

    ``piece`` 0: ``data`` holds whole lines, each ending in a newline (the input's last line may
    not). ``piece`` k >= 1: ``data`` is the k-th piece of one over-long line, without its line
    ending; ``last`` is True on the piece that ends the line.
    """

    data: bytes
    piece: int = 0
    last: bool = False


def read_chunks(stream: BinaryIO, chunk_bytes: int) -> Iterator[Chunk]:
    """Yield :class:`Chunk` s of about ``chunk_bytes`` that end just after a newline.

    A line longer than ``chunk_bytes`` is yielded whole up to ``MAX_LINE_CHUNKS`` chunks; a longer
    one comes as pieces of ``MAX_LINE_CHUNKS * chunk_bytes`` bytes (the last piece may be longer by
    up to one chunk), so memory stays within a few chunks whatever the input, and every byte is
    yielded. Raises SourceError when the stream cannot be read or decompressed; the lines of the
    chunks yielded before are complete.
    """
    carry = b""
    limit = chunk_bytes * MAX_LINE_CHUNKS
    piece = 0  # pieces of the current over-long line yielded so far
    while True:
        try:
            block = stream.read(chunk_bytes)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(
                f"cannot read input: {exc} (truncated or corrupt compressed file?)"
            ) from exc
        if not block:
            if piece:
                yield Chunk(carry, piece + 1, last=True)
            elif carry:
                yield Chunk(carry)
            return
        data = carry + block if carry else block
        if piece:
            end = data.find(b"\n")
            if end < 0:
                carry, piece = yield from _pieces(data, limit, piece)
                continue
            # A \r before the \n belongs to the line ending; piece cutting never leaves the
            # last piece shorter than 2 bytes, so it keeps at least one byte.
            yield Chunk(data[: end - 1 if data[end - 1 : end] == b"\r" else end], piece + 1, True)
            piece = 0
            data = data[end + 1 :]
        cut = data.rfind(b"\n")
        if cut < 0:
            carry, piece = (yield from _pieces(data, limit, 0)) if len(data) > limit else (data, 0)
            continue
        carry = data[cut + 1 :]
        yield Chunk(data[: cut + 1])


def _pieces(data: bytes, limit: int, piece: int) -> Generator[Chunk, None, tuple[bytes, int]]:
    """Yield pieces of ``limit`` bytes of a line with no end in ``data``; keep at least 2 bytes.

    Returns the bytes kept back and the number of pieces yielded so far.
    """
    start = 0
    while len(data) - start >= limit + 2:
        piece += 1
        yield Chunk(data[start : start + limit], piece)
        start += limit
    return data[start:], piece
