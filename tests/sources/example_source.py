"""A complete live source in one module: the example of docs/sources.md, used by test_live.py.

When the server starts it appends ``COUNT`` JSON records to the stream ``example`` (from a thread
under the server's supervisor), and it takes more lines on ``POST /v1/example/{stream}``. Adding
it to a server is this module plus one registry line::

    REGISTRY["example"] = "example_source:sources"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from loglake.config import StreamConfig
from loglake.sources.http_body import lines, read_decoded
from loglake.sources.live import CountersByStream, HttpRoute, SourceCounters
from loglake.stream.local import StreamFullError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from loglake.config import Config
    from loglake.sources.live import LiveSource, SourceContext, Streams
    from loglake.supervise import Worker

COUNT = 3
STREAM = "example"


def sources(config: Config) -> list[LiveSource]:
    """The registry's factory: the instances ``config`` asks for (here always one)."""
    return [ExampleSource()]


class ExampleSource:
    """Appends ``COUNT`` records at start; ``POST /v1/example/{stream}`` appends the body's lines."""

    name = "example"

    def __init__(self) -> None:
        self._counters = CountersByStream()
        self._streams: Streams | None = None
        self._worker: Worker | None = None
        self.problem = ""  # what health() reports (a real source: a listener down...)
        self.fail = False  # make the start-up thread crash (to show supervision)

    def start(self, context: SourceContext) -> None:
        self._streams = context.streams
        context.streams.ensure(STREAM, StreamConfig(format="json", table="logs.example"))
        self._worker = context.supervisor.spawn("example-feed", self._feed, restart=False)

    def _feed(self) -> None:
        if self.fail:
            raise RuntimeError("the example feed failed on purpose")
        self.append(STREAM, [b'{"n": %d}' % i for i in range(COUNT)])

    def append(self, stream: str, records: Sequence[bytes]) -> None:
        """Append and count: every record received is accepted or dropped with a reason."""
        assert self._streams is not None, "started"
        counters = self._counters[stream]
        counters.add(received=len(records))
        try:
            self._streams.append(stream, records)  # returns once the records are durable
        except StreamFullError:
            counters.drop("stream_full", len(records))
            raise  # the server answers 503 + Retry-After: the client sends them again later
        counters.add(accepted=len(records))

    async def post(self, request: Request) -> Response:
        stream = request.path_params["stream"]
        body = await read_decoded(request, 1 << 20, 10.0)
        records = [line for _, line in lines(body, 10_000)]
        await run_in_threadpool(self.append, stream, records)  # appends block (fsync)
        return JSONResponse({"accepted": len(records)})

    def stop(self) -> None:
        if self._worker is not None and self._worker.thread is not None:
            self._worker.thread.join()

    def counters(self) -> Mapping[str, SourceCounters]:
        return self._counters.snapshot()

    def health(self) -> list[str]:
        return [f"example: {self.problem}"] if self.problem else []

    def routes(self) -> list[HttpRoute]:
        return [HttpRoute("/v1/example/{stream}", self.post, hot=True)]

    def feeds(self) -> list[str]:
        return [STREAM]
