"""Cutting raw bytes into a column of lines, and decoding them to text without losing a byte."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from loglake.formats.base import LineBatch

# The CSV reader is used as a fast, multi-threaded line splitter: one column, no quoting, a
# delimiter that text logs do not contain. A line that holds the delimiter anyway makes the reader
# report an invalid row; the chunk is then split again by the plain (slower) path so nothing is lost.
_DELIM = "\x1f"


def _split_plain(chunk: bytes) -> pa.Array:
    lines = chunk.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return pa.array([ln[:-1] if ln.endswith(b"\r") else ln for ln in lines], type=pa.large_binary())


def _read_lines(chunk: bytes, column_type: pa.DataType) -> pa.Array | None:
    """Lines of ``chunk`` via the CSV reader, or None when it cannot cut them exactly."""
    invalid: list[object] = []

    def on_invalid(row: object) -> str:
        invalid.append(row)
        return "skip"

    table = pacsv.read_csv(
        pa.BufferReader(chunk),
        read_options=pacsv.ReadOptions(column_names=["line"], block_size=4 << 20),
        parse_options=pacsv.ParseOptions(
            delimiter=_DELIM,
            quote_char=False,
            escape_char=False,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={"line": column_type},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    has_cr = chunk.find(b"\r") >= 0
    if invalid or (has_cr and chunk.count(b"\r") != chunk.count(b"\r\n")):
        # A lone \r also ends a row for the CSV reader; a chunk with one takes the plain path.
        return None
    return table.column("line").combine_chunks()


def split_lines(chunk: bytes) -> pa.Array:
    """Split ``chunk`` into lines (``\\n`` or ``\\r\\n`` endings; a missing final newline is fine).

    Returns a ``large_binary`` Arrow array with one element per line, endings removed, empty lines
    kept (they are rejected later, and counted).
    """
    if not chunk:
        return pa.array([], type=pa.large_binary())
    lines = _read_lines(chunk, pa.large_binary())
    return _split_plain(chunk) if lines is None else lines


def decode(raw: pa.Array) -> pl.Series:
    """Decode a binary column to UTF-8 text; invalid bytes become ``\\xNN`` escapes (rare path)."""
    try:
        return pl.Series("line", raw.cast(pa.large_string()))
    except pa.ArrowInvalid:
        pass
    # Rare path (a chunk with bytes that are not UTF-8): decode line by line so that only the bad
    # bytes become escapes and every other character stays as written.
    values = [b.decode("utf-8", errors="backslashreplace") for b in raw.to_pylist()]
    return pl.Series("line", values, dtype=pl.String)


def line_batch(chunk: bytes, first_line: int, source: str) -> LineBatch:
    """Split and decode one chunk of a source into a :class:`LineBatch`."""
    if chunk:
        try:
            # Usual case: the CSV reader checks UTF-8 on all cores while it cuts the lines; the raw
            # bytes are the same buffers seen as binary (no copy).
            text = _read_lines(chunk, pa.large_string())
        except pa.ArrowInvalid:
            text = None  # bytes that are not UTF-8 somewhere in the chunk
        if text is not None:
            raw = text.view(pa.large_binary())
            return LineBatch(
                text=pl.Series("line", text), raw=raw, first_line=first_line, source=source
            )
    raw = split_lines(chunk)
    return LineBatch(text=decode(raw), raw=raw, first_line=first_line, source=source)
