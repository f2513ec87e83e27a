"""Auto-detection per group of lines: a file that mixes formats keeps every line some format parses.

An input's *main* format (the one that parses most of its first lines) parses each whole batch first,
as one column, so a single-format file costs exactly what it did with one format per file. Only the
lines it leaves are tried against the other known formats: the one that fits most of them (judged on
an evenly spread sample of at most 2,000 lines, as detection does) parses them all, then the next
one takes what is left, and so on until no format fits any sampled line. Each format so reaches its
own table: the vhost lines of a mixed access log and its plain ones both go to ``logs.access``,
RFC 3164 and RFC 5424 lines both to ``logs.syslog``, an nginx error line among access lines to
``logs.errors``. A line that no format parses is rejected with the reason the busiest format of its
batch gives.

The format that parsed most lines of a batch becomes the main format of the input's next batch, so
an input that changes format part-way keeps its fast path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from loglake.formats import DETECT_ORDER, get_format
from loglake.formats.base import LineBatch

if TYPE_CHECKING:
    from loglake.formats.base import Format

SAMPLE_LINES = 2000  # lines a format is judged on (the main one from the head of an input)


@dataclass(frozen=True)
class Group:
    """Rows one format parsed from a batch, their ``line`` column in the source's numbering."""

    format: Format
    rows: pl.DataFrame


@dataclass(frozen=True)
class Split:
    """What a batch became: groups of parsed rows, main format's group first, and the lines no
    format parses (``line``, ``raw``, ``reason``, the reason given by the busiest format). Every
    line of the batch is in exactly one."""

    groups: list[Group]
    rejected: pl.DataFrame

    @property
    def busiest(self) -> Format | None:
        """The format that parsed most lines (the next batch's main format), None for none."""
        best = max(self.groups, key=lambda g: g.rows.height, default=None)
        return best.format if best is not None and best.rows.height else None


class Detector:
    """Detects formats and splits batches by format for one ingest run.

    Format objects are made once per run and reused for every input (their per-run state, such as
    the W3C ``#Fields`` in force, is keyed by input). Not thread-safe: one per run.
    """

    def __init__(self, options: dict[str, object], unrecognized: str):
        self._options = options  # format options (syslog time zone, JSON time field)
        self._unrecognized = unrecognized  # the reason when no format parses any line of a batch
        self._formats: dict[str, Format] = {}

    def format(self, name: str) -> Format:
        """The run's object for the registered format ``name``."""
        fmt = self._formats.get(name)
        if fmt is None:
            fmt = self._formats[name] = get_format(name, None, **self._options)
        return fmt

    def best(
        self, sample: pl.Series, tried: set[str] | frozenset[str] = frozenset()
    ) -> Format | None:
        """The format (not in ``tried``) that fits most non-empty lines of ``sample``; ties go to
        the more specific one (``DETECT_ORDER``). None when none fits a single line."""
        sample = sample.filter(sample.str.len_bytes() > 0)
        if len(sample) == 0:
            return None
        best: tuple[float, Format] | None = None
        for name in DETECT_ORDER:
            if name in tried:
                continue
            fmt = self.format(name)
            rate = fmt.match_rate(sample)
            if rate > 0 and (best is None or rate > best[0]):
                best = (rate, fmt)
            if rate == 1.0:
                break
        return best[1] if best is not None else None

    def split(self, batch: LineBatch, main: Format | None) -> Split:
        """Parse ``batch`` with ``main`` (None: detect it), then what it leaves with the others.

        Raises only for a bug of a format (never for the input).
        """
        groups: list[Group] = []
        if main is None:
            rejected = batch.rejected(
                pl.Series([True] * len(batch)),
                pl.Series([self._unrecognized] * len(batch), dtype=pl.String),
            )
            tried: set[str] = set()
        else:
            result = main.parse(batch)
            groups.append(Group(main, result.parsed))
            rejected = result.rejected
            tried = {main.name}
        # Empty lines fit no format: they keep their reason and are never tried again.
        text = batch.text
        reasons: dict[str, pl.DataFrame] = {}  # per format tried on leftovers: line, reason
        while rejected.height:
            index = rejected.get_column("line") - batch.first_line
            left = text.gather(index)
            retry = left.str.len_bytes() > 0
            if not retry.any():
                break
            candidates = left.filter(retry)
            step = max(1, len(candidates) // SAMPLE_LINES)
            fmt = self.best(candidates.gather_every(step).head(SAMPLE_LINES), tried)
            if fmt is None:
                break
            tried.add(fmt.name)
            lines = rejected.get_column("line").filter(retry)
            sub = LineBatch(
                text=candidates,
                raw=batch.raw.take(pa.array(index.filter(retry).to_numpy())),
                first_line=1,
                source=batch.source,
            )
            result = fmt.parse(sub)
            if result.parsed.height == 0:
                continue
            rows = result.parsed.with_columns(
                lines.gather(result.parsed.get_column("line") - 1).alias("line")
            )
            groups.append(Group(fmt, rows))
            reasons[fmt.name] = result.rejected.select(
                lines.gather(result.rejected.get_column("line") - 1).alias("line"), "reason"
            )
            rejected = rejected.filter(~pl.col("line").is_in(rows.get_column("line").implode()))
        busiest = Split(groups, rejected).busiest
        if busiest is not None and busiest.name in reasons and rejected.height:
            # The reason of the input's dominant format says more than the first-tried one's.
            theirs = reasons[busiest.name].rename({"reason": "theirs"})
            rejected = (
                rejected.join(theirs, on="line", how="left", maintain_order="left")
                .with_columns(pl.coalesce("theirs", "reason").alias("reason"))
                .drop("theirs")
            )
        return Split(groups, rejected)
