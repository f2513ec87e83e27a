"""What every batch source hands to the ingest pipeline: named inputs that open as byte streams.

A source (files, S3, stdin...) lists :class:`Input` objects; the pipeline opens each one, decompresses it
transparently (gzip, bz2, zstd, detected from the first bytes) and reads it in bounded chunks that end on
a line boundary, so memory stays flat whatever the input size.
"""

from __future__ import annotations

import bz2
import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

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
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    else:
        stream = buffered
    return stream, counting


#: A line longer than this many chunks is cut (each piece then counts as a line, and is rejected
#: by any format), so one endless line cannot exhaust memory.
MAX_LINE_CHUNKS = 4


def read_chunks(stream: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    """Yield pieces of about ``chunk_bytes`` that end just after a newline (the last may not).

    A line longer than ``chunk_bytes`` is yielded whole up to ``MAX_LINE_CHUNKS`` chunks, beyond
    which it is cut; memory use stays within a few chunks whatever the input.
    """
    carry = b""
    limit = chunk_bytes * MAX_LINE_CHUNKS
    while True:
        try:
            block = stream.read(chunk_bytes)
        except (OSError, EOFError) as exc:
            raise SourceError(
                f"cannot read input: {exc} (truncated or corrupt compressed file?)"
            ) from exc
        if not block:
            if carry:
                yield carry
            return
        data = carry + block if carry else block
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) >= limit:
                yield data + b"\n"  # cut an endless line: the piece ends here
                carry = b""
            else:
                carry = data
            continue
        carry = data[cut + 1 :]
        yield data[: cut + 1]
