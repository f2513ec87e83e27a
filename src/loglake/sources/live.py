"""Live sources: the contract of every protocol that feeds streams while ``loglake serve`` runs.

A live source (native HTTP records, Kinesis, Firehose, syslog, a file tail, ...) takes records from
the outside world and appends them to streams, answering its clients only once the stream says the
records are durable. It never parses: the stream's consumers do that. Sources are found by name in
:data:`REGISTRY` ("module:factory"); a factory builds the instances the config asks for (none, one, or
one per config section). Adding a protocol is one module, one registry line and a section in
docs/sources.md.

The server (``server/runtime.py``) builds every registered source, starts them after the streams
and stops them first at shutdown; ``server/app.py`` mounts their HTTP routes; ``/metrics`` renders
their counters and ``/readyz`` their health. Sources sit below ``server/`` and never import it:
what they need of the server (streams, the supervisor, the SigV4 check) comes in the
:class:`SourceContext`. The guide is docs/sources.md.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from loglake.errors import LoglakeError

# Sources start their threads through a Spawn (supervised by the server, plain on their own).
from loglake.supervise import Spawn as Spawn
from loglake.supervise import plain_thread as plain_thread
from loglake.supervise import supervised as supervised

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request
    from starlette.responses import Response

    from loglake.config import Config, StreamConfig
    from loglake.supervise import Supervisor

#: name -> "module:factory"; ``factory(config) -> list[LiveSource]`` builds the configured instances.
#: Registry order is start order (and the reverse is stop order).
REGISTRY: dict[str, str] = {
    "http": "loglake.sources.http:sources",
    "kinesis": "loglake.sources.kinesis:sources",
    "firehose": "loglake.sources.firehose:sources",
    "syslog": "loglake.sources.syslog:sources",
    "tail": "loglake.sources.tail:sources",
    "elasticsearch": "loglake.sources.elasticsearch:sources",
    "otlp": "loglake.sources.otlp:sources",
    "loki": "loglake.sources.loki:sources",
}


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

    def add(self, received: int = 0, accepted: int = 0, rejected: int = 0) -> None:
        with self.lock:
            self.received += received
            self.accepted += accepted
            self.rejected += rejected

    def snapshot(self) -> SourceCounters:
        """A copy that later updates do not change."""
        with self.lock:
            return SourceCounters(
                self.received,
                self.accepted,
                self.rejected,
                dict(self.dropped),
                dict(self.extra),
                dict(self.gauges),
            )


class CountersByStream:
    """stream -> :class:`SourceCounters`, each created on first use: for a source that feeds
    whichever stream a request names (HTTP, Kinesis, Firehose). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_stream: dict[str, SourceCounters] = {}

    def __getitem__(self, stream: str) -> SourceCounters:
        with self._lock:
            counters = self._by_stream.get(stream)
            if counters is None:
                counters = self._by_stream[stream] = SourceCounters()
            return counters

    def snapshot(self) -> dict[str, SourceCounters]:
        with self._lock:
            items = list(self._by_stream.items())
        return {stream: counters.snapshot() for stream, counters in items}


@dataclass(frozen=True)
class StreamInfo:
    """What a source may tell its clients about a stream (Kinesis DescribeStream...)."""

    name: str
    created_at: float  # Unix time the stream's log was created
    first_offset: int  # oldest offset still in the log
    next_offset: int  # the offset the next record gets


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

    def create(self, stream: str, settings: Mapping[str, Any]) -> bool:
        """Create ``stream`` from a client's settings as ``PUT /v1/streams/NAME`` does; False when it
        exists. Raises ConfigError / FormatError, TooManyStreamsError or StreamBusyError."""
        ...

    def info(self, stream: str) -> StreamInfo:
        """What is known of ``stream``; raises NoSuchStreamError."""
        ...

    def names(self) -> list[str]:
        """The names of every stream, sorted."""
        ...


@dataclass(frozen=True)
class SignedRequest:
    """An HTTP request as its signature covers it (for :attr:`SourceContext.verify_aws`)."""

    method: str
    path: str  # the raw path, as sent
    query: str  # the raw query string
    headers: list[tuple[str, str]]
    body: bytes  # as sent (before Content-Encoding is undone)


class AuthRefused(LoglakeError):
    """A request to an HTTP source that authenticates its own clients is refused. ``code`` and
    ``status`` are the protocol's own (AWS: ``InvalidSignatureException``, 400/403), for the
    source to answer in its protocol's error shape."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class SourceContext:
    """What the server hands a source at start."""

    config: Config
    streams: Streams
    supervisor: Supervisor
    # Where the source keeps what it must know after a restart (tail positions): state/KIND, KIND
    # being the source's name up to its first dot, shared by the instances of one kind.
    state_dir: Path
    # The server's SigV4 check (authentication belongs to server/): the region a request was signed
    # for, or AuthRefused. None: requests are taken unsigned (no credentials configured).
    verify_aws: Callable[[SignedRequest], str] | None = None


Handler = Callable[["Request"], Awaitable["Response"]]
#: How a protocol answers a request the server refuses before any handler runs (a missing or wrong
#: API key): (status, message, the request's headers with lower-case names, headers to send) -> the
#: answer, in the shape the protocol's clients read.
Refuse = Callable[[int, str, Mapping[str, str], Mapping[str, str]], "Response"]


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP route of a source; the server mounts it, behind its authentication and its one
    JSON error shape (a LoglakeError the handler raises becomes that answer).

    ``path`` is in Starlette's syntax (``/v1/streams/{stream}/records``). ``hot``: served by the
    server's fast path ahead of Starlette's router; for the few ingest routes that carry nearly
    every request. ``dispatch``: (header name, value prefix) when several sources answer on the
    same path and method (Kinesis and Firehose on ``POST /``, told apart by ``X-Amz-Target``):
    the request goes to the route whose prefix starts the header's value, and a value no route
    claims to the first of them in registry order, which answers it in its protocol's shape.
    ``refuse``: how the authentication's 401 on this path is answered when the protocol's clients
    read an error shape of their own (OTLP's ``google.rpc.Status``); None: the JSON error shape.
    """

    path: str
    handler: Handler
    methods: tuple[str, ...] = ("POST",)
    hot: bool = False
    dispatch: tuple[str, str] | None = None
    refuse: Refuse | None = None


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
        """Problems now (empty when healthy): a listener down, a stream that refuses appends...
        /readyz answers 503 while there is one."""
        ...

    def routes(self) -> list[HttpRoute]:
        """The HTTP routes of an HTTP protocol (empty otherwise). Called before :meth:`start`
        (the app is assembled first); the handlers are called only after it."""
        ...

    def feeds(self) -> list[str]:
        """The streams the config file makes this source feed (syslog's, a tail's), which cannot be
        deleted through the API; empty for a source whose clients name the stream."""
        ...


def load_sources(config: Config) -> list[LiveSource]:
    """Every configured live source, in registry order (not started). Raises ConfigError for bad
    settings."""
    built: list[LiveSource] = []
    for spec in REGISTRY.values():
        module, _, factory = spec.partition(":")
        make: Callable[[Config], list[LiveSource]] = getattr(
            importlib.import_module(module), factory
        )
        built += make(config)
    return built


def iso_micros(nanos: int) -> str:
    """Unix nanoseconds as RFC 3339 UTC with microseconds (the lake's precision), truncated: the
    time column of a record that a protocol stamps in nanoseconds (OTLP, Loki)."""
    seconds, rest = divmod(nanos, 1_000_000_000)
    return f"{_second_text(seconds)}{rest // 1000:06d}Z"


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    # The records of one request mostly share a few seconds: each is formatted once.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
