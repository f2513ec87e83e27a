"""What every log format takes in and gives back.

A format turns a :class:`LineBatch` (a column of raw lines) into a :class:`ParseResult`: an Arrow table
of parsed rows and an Arrow table of rejected lines. Formats work on whole columns (Polars expressions),
never line by line, and must account for every line: ``parsed + rejected == len(batch)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa


@dataclass(frozen=True)
class LineBatch:
    """A run of consecutive lines from one source.

    ``text`` holds the lines as UTF-8 strings (bytes that are not UTF-8 appear as ``\\xNN`` escapes, the
    way nginx writes them); ``raw`` holds the original bytes, used for rejected lines so they stay
    lossless; ``first_line`` is the 1-based line number of the first line in its source.
    """

    text: pl.Series
    raw: pa.Array
    first_line: int
    source: str

    def __len__(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class ParseResult:
    """Parsed rows (with a ``line`` column: line number in the source) and rejected lines.

    ``rejected`` has the columns ``line`` (int64), ``raw`` (binary, the line exactly as read) and
    ``reason`` (string).
    """

    parsed: pl.DataFrame
    rejected: pl.DataFrame


class Format(Protocol):
    """A log format: its name, the table it goes to by default, and the vectorized parser."""

    name: str
    default_table: ClassVar[str]
    enrich: ClassVar[tuple[str, ...]]

    def parse(self, batch: LineBatch) -> ParseResult:
        """Parse every line of ``batch``; a line that does not fit goes to ``rejected`` with a reason."""
        ...

    def match_rate(self, sample: pl.Series) -> float:
        """Fraction of ``sample`` lines this format parses; used to auto-detect the format."""
        ...
