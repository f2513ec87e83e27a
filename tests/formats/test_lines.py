"""Cutting bytes into lines and decoding them without losing a byte."""

from __future__ import annotations

import random

from loglake.formats.lines import decode, line_batch, split_lines


def test_split_endings_empty_lines_and_no_final_newline() -> None:
    raw = split_lines(b"a b\r\n\nc\nlast")
    assert raw.to_pylist() == [b"a b", b"", b"c", b"last"]


def test_lone_carriage_return_and_unit_separator_stay_inside_the_line() -> None:
    assert split_lines(b"x\ry\nz\n").to_pylist() == [b"x\ry", b"z"]
    assert split_lines(b"p\x1fq\nr\n").to_pylist() == [b"p\x1fq", b"r"]


def test_invalid_utf8_becomes_escapes_only_where_invalid() -> None:
    raw = split_lines("ok é\n".encode() + b"bad \xff\xfe\n")
    text = decode(raw)
    assert text.to_list() == ["ok é", "bad \\xff\\xfe"]


def test_line_batch_numbers_and_raw() -> None:
    batch = line_batch(b"one\ntwo\n", 41, "src")
    assert len(batch) == 2 and batch.first_line == 41 and batch.source == "src"
    assert batch.raw.to_pylist() == [b"one", b"two"]


def _reference_split(chunk: bytes) -> list[bytes]:
    """The definition split_lines must match: cut at \\n, drop one \\r before it, keep the rest."""
    *ended, tail = chunk.split(b"\n")
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in ended]
    return [*lines, tail] if tail else lines


def test_unit_separator_next_to_invalid_utf8_is_one_line_with_escapes() -> None:
    # This line made the old CSV-reader splitter raise ArrowInvalid and abort the whole ingest.
    batch = line_batch(b"a\x1fb\xff\nok\n", 1, "src")
    assert batch.raw.to_pylist() == [b"a\x1fb\xff", b"ok"]
    assert batch.text.to_list() == ["a\x1fb\\xff", "ok"]


def test_a_line_longer_than_any_block_is_one_line() -> None:
    # The old splitter refused lines over its 4 MiB block ("straddles two block boundaries").
    long = b"x" * (9 << 20)
    batch = line_batch(b"first\n" + long + b"\nlast\n", 1, "src")
    assert [len(v) for v in batch.raw.to_pylist()] == [5, 9 << 20, 4]
    assert batch.text[1] == "x" * (9 << 20)


def test_any_bytes_split_exactly_and_decode_without_error() -> None:
    rng = random.Random(20240901)
    alphabet = [0x00, 0x0A, 0x0D, 0x1F, 0x22, 0x2C, 0x5C, 0x7F, 0x80, 0xC3, 0xA9, 0xFF, 0x61, 0x20]
    for _ in range(300):
        size = rng.choice([0, 1, 2, 5, 50, 2000])
        if rng.random() < 0.5:
            chunk = bytes(rng.choice(alphabet) for _ in range(size))
        else:
            chunk = rng.randbytes(size)
        batch = line_batch(chunk, 1, "src")
        expected = _reference_split(chunk)
        assert batch.raw.to_pylist() == expected, chunk
        assert batch.text.to_list() == [
            b.decode("utf-8", errors="backslashreplace") for b in expected
        ]


def test_invalid_utf8_in_one_line_of_many_only_escapes_that_line() -> None:
    lines = [f"line {i} é".encode() for i in range(10_000)]
    lines[7777] = b"bad \xc3 here"
    text = decode(split_lines(b"\n".join(lines) + b"\n"))
    assert text[7777] == "bad \\xc3 here"
    assert text[7776] == "line 7776 é" and text[9999] == "line 9999 é" and len(text) == 10_000
