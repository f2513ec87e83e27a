"""The native records API: ``POST /v1/streams/{stream}/records`` appends lines to a stream.

The body is lines (``\\n`` or ``\\r\\n`` ended, blank ones skipped), plain or gzip, at most
``server.max_body_bytes`` as sent and inflated and ``server.max_records_per_request`` lines. With
``Content-Type: application/x-ndjson`` (or ``application/json``, ``application/jsonl``) each line
must be a JSON object: the others are rejected one by one (their index and reason in the answer)
while the rest are appended. The answer comes once the records are durable::

    {"accepted": 2, "rejected": [{"index": 1, "reason": "not a JSON object"}],
     "first_offset": 40, "next_offset": 42}

Errors are LoglakeErrors the server renders in its one JSON shape: 404 ``no_such_stream``, 413
``record_too_large`` or ``body_too_large``, 503 ``stream_full`` with ``Retry-After`` when the
stream's disk budget is used up (back-pressure: the client retries later), 408/415 for a body too
slow or in another encoding. See ``docs/streaming.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from loglake.errors import NoSuchStreamError
from loglake.sources.http_body import lines, media_type, read_decoded
from loglake.sources.live import (
    CountersByStream,
    HttpRoute,
    SourceContext,
    SourceCounters,
    Streams,
)
from loglake.stream.local import RecordTooLargeError, StreamFullError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from loglake.config import Config
    from loglake.sources.live import LiveSource

PATH = "/v1/streams/{stream}/records"
JSON_TYPES = ("application/x-ndjson", "application/json", "application/jsonl")


def sources(config: Config) -> list[LiveSource]:
    """The native records API is always on (behind the server's API keys when configured)."""
    return [HttpSource(config)]


def json_problem(line: bytes) -> str | None:
    """Why ``line`` is not one JSON object (None when it is)."""
    try:
        value = json.loads(line)
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    except RecursionError:
        return "JSON nested too deeply to parse"
    if not isinstance(value, dict):
        return "not a JSON object"
    return None


class HttpSource:
    """The native records API as a live source.

    Counters per stream: ``received`` lines, ``accepted`` appended, ``rejected`` refused one by one
    (not a JSON object on an NDJSON request), ``dropped`` lines of requests the stream refused as a
    whole: ``stream_full`` (503), ``too_large`` (413), ``no_such_stream`` (deleted meanwhile).
    """

    name = "http"

    def __init__(self, config: Config) -> None:
        server = config.server
        self._limit = server.max_body_bytes
        self._timeout = server.body_timeout_s
        self._max_records = server.max_records_per_request
        self._counters = CountersByStream()
        self._streams: Streams | None = None

    def start(self, context: SourceContext) -> None:
        self._streams = context.streams

    def stop(self) -> None:
        """Nothing to stop: the server stops taking requests before it stops the sources."""

    def counters(self) -> Mapping[str, SourceCounters]:
        return self._counters.snapshot()

    def health(self) -> list[str]:
        return []

    def routes(self) -> list[HttpRoute]:
        return [HttpRoute(PATH, self.put_records, hot=True)]

    def feeds(self) -> list[str]:
        return []

    async def put_records(self, request: Request) -> Response:
        """Append the body's lines to the stream of the path; answer once they are durable."""
        streams = self._streams
        if streams is None:
            raise RuntimeError("the http source serves requests only after start()")
        name = request.path_params["stream"]
        if name not in streams.names():
            # An unknown stream is a 404 (info() says which exist) before the body is read. Not
            # info() on every request: it takes the log's lock, which appends hold during fsync,
            # and this runs in the event loop.
            streams.info(name)
        body = await read_decoded(request, self._limit, self._timeout, "server.max_body_bytes")
        kind = media_type(request.headers, "text/plain")
        records: list[bytes] = []
        rejected: list[dict[str, Any]] = []
        is_json = kind in JSON_TYPES
        for index, line in lines(body, self._max_records):
            if is_json:
                reason = json_problem(line)
                if reason:
                    rejected.append({"index": index, "reason": reason})
                    continue
            records.append(line)
        counters = self._counters[name]
        counters.add(received=len(records) + len(rejected), rejected=len(rejected))
        try:
            first, nxt = await run_in_threadpool(streams.append, name, records)
        except StreamFullError:
            counters.drop("stream_full", len(records))
            raise
        except RecordTooLargeError:
            counters.drop("too_large", len(records))
            raise
        except NoSuchStreamError:
            counters.drop("no_such_stream", len(records))
            raise
        except Exception:
            counters.drop("stream_error", len(records))
            raise
        counters.add(accepted=len(records))
        return JSONResponse(
            {
                "accepted": len(records),
                "rejected": rejected,
                "first_offset": first,
                "next_offset": nxt,
            }
        )
