"""Live sources: the contract of every protocol that feeds streams while ``loglake serve`` runs.

A live source (native HTTP records, Kinesis, Firehose, syslog, a file tail, ...) takes records from
the outside world and appends them to streams, answering its clients only once the stream says the
records are durable. It never parses: the stream's consumers do that. Sources are found by name in
:data:`REGISTRY` ("module:factory"); a factory builds the instances the config asks for (none, one, or
one per config section). Adding a protocol is one module, one registry line and a section in
docs/sources.md.

The server (``server/runtime.py``) builds every registered source, starts them after the streams
and stops them first at shutdown; ``server/app.py`` mounts their HTTP routes; ``/metrics`` renders
their counters and ``/readyz`` their health.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from loglake.config import Config, StreamConfig
    from loglake.supervise import Supervisor

#: name -> "module:factory"; ``factory(config) -> list[LiveSource]`` builds the configured instances.
REGISTRY: dict[str, str] = {}


@dataclass
class SourceCounters:
    """What one source did for one stream (Vector's received / accepted / dropped model).

    ``received``: records that arrived. ``accepted``: appended to the stream and acknowledged.
    ``rejected``: refused because the record itself is bad (not JSON on an NDJSON route, ...), told to
    the client. ``dropped``: reason -> records not appended for another reason (``stream_full``,
    ``too_large``, ``backpressure``...). Once a source has stopped,
    ``received == accepted + rejected + sum(dropped)``. ``extra``: counters of this protocol only
    (name -> value, e.g. syslog's ``connections_idle_closed``), rendered on /metrics as
    ``loglake_source_NAME_total``. ``gauges``: levels of this protocol only, which go up and down
    (e.g. syslog's open ``connections``), rendered as ``loglake_source_NAME``.

    Updated by the source's own threads under :attr:`lock`; read any time (a snapshot may be a
    moment old, never torn for a single value).
    """

    received: int = 0
    accepted: int = 0
    rejected: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def drop(self, reason: str, records: int = 1) -> None:
        with self.lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + records


class Streams(Protocol):
    """What a source may do with the server's streams."""

    def append(self, stream: str, records: Sequence[bytes]) -> tuple[int, int]:
        """Append ``records`` to ``stream`` and return (first offset, next offset) once durable.

        Raises NoSuchStreamError, StreamFullError (503 + Retry-After: push back), or
        RecordTooLargeError (the record can never be stored: reject it)."""
        ...

    def ensure(self, stream: str, default: StreamConfig) -> None:
        """Create ``stream`` with ``default`` settings unless it exists (sources of the config file
        that name a stream nobody declared)."""
        ...


@dataclass(frozen=True)
class SourceContext:
    """What the server hands a source at start."""

    config: Config
    streams: Streams
    supervisor: Supervisor
    state_dir: Path  # the source's own folder for positions it must keep across restarts


class LiveSource(Protocol):
    """One running instance of a protocol. Every method is called from the server's threads."""

    #: Unique among the server's sources: ``http``, ``kinesis``, ``syslog``, ``tail.NAME``...
    name: str

    def start(self, context: SourceContext) -> None:
        """Bind sockets and start threads (under ``context.supervisor``). Called once, after the
        streams are open. Raises ConfigError when its settings cannot work (a port taken...)."""
        ...

    def stop(self) -> None:
        """Stop taking records and append what is already held, then return. Called once at
        shutdown, before the streams close; must not raise."""
        ...

    def counters(self) -> Mapping[str, SourceCounters]:
        """stream name -> what this source did for it since start."""
        ...

    def health(self) -> list[str]:
        """Problems now (empty when healthy): a listener down, a file unreadable..."""
        ...

    def routes(self) -> list[Any]:
        """Starlette routes of an HTTP protocol (empty otherwise)."""
        ...


def load_sources(config: Config) -> list[LiveSource]:
    """Every configured live source, in registry order. Raises ConfigError for bad settings."""
    built: list[LiveSource] = []
    for spec in REGISTRY.values():
        module, _, factory = spec.partition(":")
        make: Callable[[Config], list[LiveSource]] = getattr(
            importlib.import_module(module), factory
        )
        built += make(config)
    return built
