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

    def line_numbers(self) -> pl.Series:
        """The source line number of every line of the batch (Int64)."""
        import polars as pl

        return pl.int_range(
            self.first_line, self.first_line + len(self), dtype=pl.Int64, eager=True
        ).alias("line")

    def rejected(self, mask: pl.Series | None, reasons: pl.Expr | pl.Series) -> pl.DataFrame:
        """Lines selected by ``mask`` as rejected records: ``line``, ``raw`` (bytes), ``reason``.

        ``reasons`` is an expression over the columns ``line`` and ``text``, or a Series with one
        reason per line of the batch. ``mask`` None means nothing is rejected.
        """
        import polars as pl

        if mask is None:
            return pl.DataFrame(schema={"line": pl.Int64, "raw": pl.Binary, "reason": pl.String})
        frame = pl.DataFrame(
            {"line": self.line_numbers(), "raw": pl.Series("raw", self.raw), "text": self.text}
        )
        if isinstance(reasons, pl.Series):
            frame = frame.with_columns(reasons.alias("reason"))
            reason = pl.col("reason")
        else:
            reason = reasons.alias("reason")
        return frame.filter(mask).select("line", pl.col("raw").cast(pl.Binary), reason)

    def rejected_lines(self, refusals: pl.DataFrame) -> pl.DataFrame:
        """Rejected records (as :meth:`rejected` gives them) for the lines of ``refusals``, a frame
        of ``line`` (line numbers of this batch) and ``reason``: rows the table refused after the
        format had parsed them. Raises ValueError for a line number outside the batch."""
        import polars as pl

        lines = refusals.get_column("line").cast(pl.Int64)
        index = lines - self.first_line
        outside = (index < 0) | (index >= len(self))
        if outside.any():
            raise ValueError(
                f"line numbers {lines.filter(outside).to_list()[:5]} are not in this batch"
            )
        raw = pl.Series("raw", self.raw).gather(index).cast(pl.Binary)
        return pl.DataFrame([lines.alias("line"), raw, refusals.get_column("reason")])


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
