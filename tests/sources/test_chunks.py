"""Reading inputs in chunks on line boundaries: every byte comes out, long lines as pieces."""

from __future__ import annotations

import bz2
import gzip
import io
import random

import pytest
import zstandard

from loglake.errors import SourceError
from loglake.formats.lines import split_lines
from loglake.sources.base import MAX_LINE_CHUNKS, Chunk, open_decompressed, read_chunks


def _reference_lines(data: bytes) -> list[bytes]:
    *ended, tail = data.split(b"\n")
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in ended]
    return [*lines, tail] if tail else lines


def _lines_of(chunks: list[Chunk]) -> tuple[list[bytes], list[int]]:
    """The lines the chunks hold (pieces joined again), and the piece count of every cut line."""
    lines: list[bytes] = []
    cut: list[int] = []
    pieces: list[bytes] = []
    for chunk in chunks:
        if chunk.piece == 0:
            assert not pieces, "a line's pieces must end with a last piece"
            lines.extend(split_lines(chunk.data).to_pylist())
            continue
        assert chunk.piece == len(pieces) + 1
        pieces.append(chunk.data)
        if chunk.last:
            lines.append(b"".join(pieces))
            cut.append(len(pieces))
            pieces = []
    assert not pieces
    return lines, cut


def test_random_inputs_come_out_whole_with_long_lines_in_pieces() -> None:
    rng = random.Random(7)
    chunk_bytes = 16
    limit = chunk_bytes * MAX_LINE_CHUNKS
    for _ in range(400):
        lines = []
        for _ in range(rng.randrange(0, 12)):
            size = rng.choice([0, 1, 3, 15, 16, 17, limit - 1, limit, limit + 1, limit + 2, 200])
            body = bytes(rng.choice(b"ab\r\x00\xff ") for _ in range(size))
            lines.append(body + rng.choice([b"\n", b"\r\n"]))
        data = b"".join(lines) + (b"tail" if rng.random() < 0.3 else b"")
        chunks = list(read_chunks(io.BytesIO(data), chunk_bytes))
        got, cut = _lines_of(chunks)
        assert got == _reference_lines(data)
        for chunk in chunks:
            if chunk.piece:  # pieces hold one line's bytes, at most limit (+ one chunk at its end)
                assert b"\n" not in chunk.data and 0 < len(chunk.data) <= limit + chunk_bytes
            else:
                assert all(
                    len(x) <= limit + chunk_bytes for x in split_lines(chunk.data).to_pylist()
                )
        long_lines = [x for x in got if len(x) > limit + chunk_bytes + 1]
        assert len(cut) >= len(long_lines)


def test_an_endless_line_is_cut_into_pieces_that_keep_every_byte() -> None:
    line = bytes(range(256)).replace(b"\n", b"") * 4000  # ~1 MB, no newline
    data = b"before\n" + line + b"\r\nafter\n"
    chunks = list(read_chunks(io.BytesIO(data), 65536))
    pieces = [c for c in chunks if c.piece]
    assert [c.piece for c in pieces] == list(range(1, len(pieces) + 1)) and len(pieces) == 4
    assert [c.last for c in pieces] == [False] * 3 + [True]
    assert b"".join(c.data for c in pieces) == line
    assert _lines_of(chunks)[0] == [b"before", line, b"after"]


@pytest.mark.parametrize(
    "compress",
    [gzip.compress, bz2.compress, lambda d: zstandard.ZstdCompressor().compress(d)],
    ids=["gzip", "bzip2", "zstd"],
)
def test_truncated_compressed_input_is_an_error_not_a_short_file(compress: object) -> None:
    data = b"".join(b"line %d of a log\n" % i for i in range(100_000))
    packed = compress(data)  # type: ignore[operator]
    stream, _ = open_decompressed(io.BytesIO(packed))
    assert b"".join(c.data for c in read_chunks(stream, 65536)) == data
    stream, _ = open_decompressed(io.BytesIO(packed[: len(packed) // 2]))
    got: list[bytes] = []
    with pytest.raises(SourceError, match="truncated or corrupt"):
        for chunk in read_chunks(stream, 65536):
            got.append(chunk.data)
    assert data.startswith(b"".join(got))
    assert not got or got[-1].endswith(b"\n")  # whole lines only


def test_zstd_frames_back_to_back_are_one_stream() -> None:
    z = zstandard.ZstdCompressor()
    packed = z.compress(b"a\nb\n") + z.compress(b"") + z.compress(b"c\n")
    stream, _ = open_decompressed(io.BytesIO(packed))
    assert b"".join(c.data for c in read_chunks(stream, 65536)) == b"a\nb\nc\n"
