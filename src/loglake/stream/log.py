"""What the rest of loglake needs of a stream's durable log, whichever keeps it: the embedded
:class:`loglake.stream.local.LocalLog` or :class:`loglake.stream.nats.NatsLog` on JetStream."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections import deque

    from loglake.stream.local import Records, StreamLimits


class StreamLog(Protocol):
    """A durable, append-only log of records with increasing offsets.

    ``append`` returns only once the records are durable; reads return them in offset order;
    ``trim`` drops what every consumer has committed past. The counters feed /metrics.
    """

    limits: StreamLimits
    appends: int
    records_appended: int
    fsyncs: int
    recovered_bytes_dropped: int
    lost_records: int
    fsync_seconds: deque[float]

    @property
    def path(self) -> Path | str: ...
    @property
    def start_offset(self) -> int: ...
    @property
    def next_offset(self) -> int: ...
    @property
    def durable_offset(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def created(self) -> float: ...
    @property
    def lost_ranges(self) -> list[tuple[int, int]]: ...
    def backlog(self, position: int) -> int: ...
    def append(self, records: Sequence[bytes]) -> tuple[int, int]: ...
    def read_records(
        self, offset: int, max_records: int = 10_000, max_bytes: int = 8 << 20
    ) -> Records: ...
    def read_at(self, offset: int) -> bytes: ...
    def wait(self, offset: int, timeout: float) -> bool: ...
    def trim(self, before: int) -> int: ...
    def close(self) -> None: ...
