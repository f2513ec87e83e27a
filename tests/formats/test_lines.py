"""Cutting bytes into lines and decoding them without losing a byte."""

from __future__ import annotations

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
