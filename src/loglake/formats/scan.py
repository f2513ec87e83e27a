"""The access formats' one-pass scanner: fields cut from each line's bytes without a regex.

The fast regular expression of an access format (``AccessFormat.fast_regex``) costs ~1.6 CPU-s per
million combined lines in the regex engine's capture search alone, most of a batch ingest's parse
(docs/decisions/0017). For formats built from the usual fields, ``_compile`` also emits a small
*program* (literals and field kinds); the compiled module ``loglake.formats._scan`` walks each line
once against it and returns Arrow string views into the lines' own bytes (no field is copied).

It only ever accepts lines the fast regex accepts, cut the same way: where the regex could choose
(a non-ASCII character in a ``\\S+`` field, a digit after a number), the program either has no op
(then the format has no program) or rejects the line, which then goes through the regexes exactly as
before. Without the compiled module (a platform where it was not built) everything goes through the
regexes; the results are the same, only slower.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

try:
    from loglake.formats import _scan  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - built everywhere the tests run
    _scan = None

Program = bytes | None  # a scanner program, None when a format has none

_LIT, _TOKEN, _INT3, _DIGITS_DASH, _DIGITS, _CLF, _QUOTED, _QUOTED_LAST, _REQUEST, _END = range(
    1, 11
)
_SKIP = 255


class ProgramBuilder:
    """Collects the ops of one format's program while ``_compile`` builds its fast regex."""

    def __init__(self) -> None:
        self._ops: list[bytes] = []
        self._supported = True

    def literal(self, text: str) -> None:
        data = text.encode()
        for start in range(0, len(data), 255):
            piece = data[start : start + 255]
            self._ops.append(bytes([_LIT, len(piece)]) + piece)

    def field(self, op: str | None, index: int | None, following: str | None) -> None:
        """A field read by ``op`` (None: no op for its pattern, so no program) and captured as
        field ``index`` (None: matched, not kept), followed by the literal ``following`` ("": the
        end of the line; None: another field)."""
        f = _SKIP if index is None else index
        if op is None or (index is not None and index >= _SKIP):
            self._supported = False
            return
        first = following[:1] if following else ""
        at_end = following == ""  # the line's end follows
        if op == "token" and (first in (" ", "\t") or at_end):
            # \S+ is greedy: whitespace or the end after it ends it where the scanner stops.
            self._ops.append(bytes([_TOKEN, f]))
        elif op == "int3":
            self._ops.append(bytes([_INT3, f]))
        elif op in ("digits_dash", "digits") and ((first and not first.isdigit()) or at_end):
            # A digit right after the number would let the regex split it elsewhere.
            self._ops.append(bytes([_DIGITS_DASH if op == "digits_dash" else _DIGITS, f]))
        elif op == "clf_bracketed":
            self.literal("[")
            self._ops.append(bytes([_CLF, f]))
            self.literal("]")
        elif op == "clf":
            self._ops.append(bytes([_CLF, f]))
        elif op == "quoted" and first == '"':
            self._ops.append(bytes([_QUOTED, f]))
        elif op == "quoted_last":
            self._ops.append(bytes([_QUOTED_LAST, f]))
        else:
            self._supported = False

    def request(self, first: int) -> None:
        """The fast request pattern, its four parts captured as fields ``first`` to ``first + 3``."""
        if first + 3 >= _SKIP:
            self._supported = False
            return
        self._ops.append(bytes([_REQUEST, first, first + 1, first + 2, first + 3]))

    def optional_last_quote(self) -> None:
        """The format's final '"' became optional (``"?$``): the last quoted field's op does it."""
        if (
            self._ops[-2:-1]
            and self._ops[-2][0] == _QUOTED_LAST
            and self._ops[-1] == bytes([_LIT, 1]) + b'"'
        ):
            self._ops.pop()  # the LIT '"' that followed it
        else:
            self._supported = False

    def build(self) -> Program:
        if not self._supported or not self._ops:
            return None
        return b"".join(self._ops) + bytes([_END])


def available() -> bool:
    """Whether the compiled scanner is importable on this installation."""
    return _scan is not None


def scan(
    program: bytes, columns: list[str], raw: pa.Array
) -> tuple[pl.DataFrame, pl.Series] | None:
    """Run ``program`` over the lines ``raw`` (``large_binary``, one line per element).

    Returns the fields of every line as String columns named ``columns`` (null on lines not
    accepted, and for a request without a query) and the mask of accepted lines; None when it
    cannot run here (no compiled module, lines that are not all UTF-8: their text was escaped, so
    the regexes parse it).
    """
    n = len(raw)
    if _scan is None or n == 0 or raw.type != pa.large_binary():
        return None
    validity, offsets_buf, data_buf = raw.buffers()
    if (validity is not None and raw.null_count) or data_buf is None or data_buf.size >= 2**31:
        return None
    try:
        raw.cast(pa.large_string())  # validates UTF-8: then the text is these very bytes
    except pa.ArrowInvalid:
        return None
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=raw.offset * 8)
    nf = len(columns)
    views = np.empty(n * nf * 16, dtype=np.uint8)
    valid = np.empty(n * nf, dtype=np.uint8)
    ok = np.empty(n, dtype=np.uint8)
    _scan.scan(program, data_buf, offsets, n, nf, views, valid, ok)
    arrays: list[Any] = []
    for f in range(nf):
        present = valid[f * n : (f + 1) * n].view(bool)
        bitmap = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
        # Each field's views in an allocation of their own: the fields converted to numbers or
        # times then free theirs instead of keeping every field's alive while their rows wait.
        own = pa.py_buffer(views[f * n * 16 : (f + 1) * n * 16].copy())
        arrays.append(pa.Array.from_buffers(pa.string_view(), n, [bitmap, own, data_buf]))
    frame = pl.from_arrow(pa.table(arrays, names=columns))
    assert isinstance(frame, pl.DataFrame)
    return frame, pl.Series("ok", ok.view(bool))


__all__ = ["Program", "ProgramBuilder", "available", "scan"]
