"""The per-batch step batch ingest and streaming share: parse → enrich → normalise → rejects.

A :class:`LineBatch` (lines with their raw bytes and line numbers or stream offsets) goes in; out
come the rows to store (the format's columns, enrichers' columns, times as UTC without a zone, then
``line``, ``source`` and ``ingested_at``) and the rejected lines (``line``, ``raw``, ``reason``).
Every line of the batch is in exactly one of the two. Storing them (conforming rows to their table,
which may refuse some, and keeping rejected lines in ``logs.rejected``) is the caller's part.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import polars as pl

from loglake.enrich import get_enricher
from loglake.formats import detect_format

if TYPE_CHECKING:
    from loglake.enrich import Enricher
    from loglake.formats.base import Format, LineBatch

_DETECT_LINES = 2000  # lines a batch's format is detected from when it is not given


@dataclass(frozen=True)
class StepResult:
    """What one batch became. ``rows`` is None when no format could be used."""

    format: Format | None
    rows: pl.DataFrame | None
    rejected: pl.DataFrame

    @property
    def format_name(self) -> str:
        return self.format.name if self.format is not None else "unrecognized"


class BatchStep:
    """Parses batches of one run or one stream; enrichers are made once and reused (they cache
    their per-distinct-value work across batches). Not thread-safe: one per thread."""

    def __init__(
        self,
        options: dict[str, object] | None = None,
        unrecognized: str = "format not recognized",
    ):
        self._options = options or {}  # format options detection uses (timezone, ts_field)
        self._unrecognized = unrecognized  # the reason given to lines of an unknown format
        self._enrichers: dict[str, Enricher] = {}

    def detect(self, batch: LineBatch) -> Format | None:
        """The format of ``batch``, detected from its first lines as ``--format auto`` does."""
        return detect_format(batch.text.head(_DETECT_LINES), **self._options)

    def run(self, batch: LineBatch, fmt: Format | None, at: datetime | int) -> StepResult:
        """Parse ``batch`` with ``fmt`` (None: every line rejected as unrecognized).

        ``at`` is the ingestion time (a naive UTC datetime, or microseconds since the epoch).
        Raises only for a bug of the format (never for the input).
        """
        if fmt is None:
            reasons = pl.Series([self._unrecognized] * len(batch), dtype=pl.String)
            rejected = batch.rejected(pl.Series([True] * len(batch)), reasons)
            return StepResult(None, None, rejected)
        result = fmt.parse(batch)
        rows = result.parsed
        if rows is not None and rows.height:
            rows = normalise(self.enrich(fmt, rows), batch.source, at)
        return StepResult(fmt, rows, result.rejected)

    def enrich(self, fmt: Format, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with the columns of the format's enrichers added."""
        for name in fmt.enrich:
            enricher = self._enrichers.get(name)
            if enricher is None:
                enricher = self._enrichers[name] = get_enricher(name)
            frame = enricher.enrich(frame)
        return frame


def normalise(frame: pl.DataFrame, source: str, at: datetime | int) -> pl.DataFrame:
    """Times as the lake stores them, then ``line``, ``source`` and ``ingested_at`` last."""
    when = (pl.lit(at).cast(pl.Datetime("us")) if isinstance(at, int) else pl.lit(at)).alias(
        "ingested_at"
    )
    return naive_utc(frame).select(
        pl.exclude("line"), pl.col("line"), pl.lit(source).alias("source"), when
    )


def naive_utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Zone-aware time columns as UTC wall time without a zone, the lake's representation.

    DuckDB truncates and casts zone-less timestamps 4-10x faster than zone-aware ones (which go
    through ICU): `date_trunc('hour', ts)` over 10M rows 50 ms vs 571 ms.
    """
    exprs = [
        pl.col(name).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    ]
    return frame.with_columns(exprs) if exprs else frame
