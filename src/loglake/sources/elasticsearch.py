"""Log shippers that speak Elasticsearch (Fluent Bit, Vector, Logstash, Filebeat, rsyslog's
omelasticsearch, the Elasticsearch clients' bulk helpers) feed streams unchanged.

Routes on the server's port: ``GET``/``HEAD /`` (an Elasticsearch 8 version document),
``GET /_license``, ``GET /_cluster/health`` and ``/_cat/health``, empty answers for the set-up
calls shippers make (``/_index_template/NAME``, ``/_template/NAME``, ``/_ilm/policy/NAME``,
``/_ingest/pipeline/NAME``) and ``POST`` (or ``PUT``) ``/_bulk`` and ``/{index}/_bulk``. Each
``index`` or ``create`` document (a JSON object) is appended, as its JSON text, to the stream
named like its index; ``delete`` and ``update`` are answered per item as not supported. The
answer comes once the documents are durable; a full stream's is a 429 that carries the per-item
answers too (see :func:`full_reply`).
Every reply carries ``X-Elastic-Product: Elasticsearch`` (the clients refuse a server without it)
and errors have Elasticsearch's shape, ``{"error": {"root_cause", "type", "reason"}, "status"}``.
See ``docs/elasticsearch.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loglake.errors import LoglakeError, NoSuchStreamError
from loglake.sources.http_body import BodyError, read_decoded
from loglake.sources.live import CountersByStream, HttpRoute, SourceContext, SourceCounters
from loglake.stream.local import RecordTooLargeError, StreamFullError

if TYPE_CHECKING:
    from starlette.requests import Request

    from loglake.config import Config
    from loglake.sources.live import Handler, LiveSource, Streams

log = logging.getLogger(__name__)

PRODUCT = {"X-Elastic-Product": "Elasticsearch"}
CONTENT_TYPE = "application/json"
VERSION = {
    "number": "8.11.0",
    "build_flavor": "default",
    "build_type": "docker",
    "build_hash": "0000000000000000000000000000000000000000",
    "build_date": "2023-11-04T10:04:57.184859352Z",
    "build_snapshot": False,
    "lucene_version": "9.8.0",
    "minimum_wire_compatibility_version": "7.17.0",
    "minimum_index_compatibility_version": "7.0.0",
}
#: How long a bulk request a full stream refused waits for space before its 429 (seconds).
FULL_HOLD_S = 1.0
ACTIONS = ("index", "create", "delete", "update")
#: The set-up resources shippers create or look up at start; loglake keeps none of them.
SETUP_PATHS = (
    "/_index_template/{name}",
    "/_template/{name}",
    "/_ilm/policy/{name}",
    "/_ingest/pipeline/{name}",
)


def sources(config: Config) -> list[LiveSource]:
    """The Elasticsearch API is always on (behind the server's API keys when configured)."""
    return [ElasticsearchSource(config)]


class EsError(Exception):
    """An answer in Elasticsearch's error shape; raised by the handlers, rendered by :func:`guard`."""

    def __init__(
        self, kind: str, reason: str, status: int = 400, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def reply(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Compact JSON with the product header every Elasticsearch answer carries."""
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status, {**PRODUCT, **(headers or {})}, media_type=CONTENT_TYPE)


def error_reply(error: EsError, bulk: Mapping[str, Any] | None = None) -> Response:
    """``error`` as Elasticsearch answers it (what its clients parse into their exceptions),
    with the keys of ``bulk`` (a bulk answer's) after it."""
    cause = {"type": error.kind, "reason": error.reason}
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    if error.status in (408, 413, 415):
        headers["Connection"] = "close"  # the body may be unread: no further request on it
    payload = {"error": {"root_cause": [cause], **cause}, "status": error.status, **(bulk or {})}
    return reply(payload, error.status, headers)


def full_reply(error: EsError, answers: list[dict[str, Any]], took: int) -> Response:
    """A bulk request a full stream refused: 429 with Retry-After and Elasticsearch's error, and
    also the bulk answer's ``errors`` and ``items``, each refused item with status 429.

    Both, because shippers read one or the other: syslog-ng's http(), Fluent Bit, Vector,
    Logstash and the Python client retry on the status, while rsyslog 8.2302's omelasticsearch
    ignores the status, reads ``items`` and (with ``retryfailures``) resubmits exactly the items
    whose status is 429; a reply without ``items`` it counts as a data error and drops."""
    return error_reply(error, {"errors": True, "items": answers, "took": took})


def guard(handler: Handler) -> Handler:
    """``handler`` answering every failure in Elasticsearch's shape: a malformed request, a
    loglake error (its status) or an unexpected exception (a logged 500)."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except EsError as exc:
            return error_reply(exc)
        except BodyError as exc:
            kind = "content_too_long_exception" if exc.status == 413 else "parse_exception"
            return error_reply(EsError(kind, str(exc), exc.status))
        except LoglakeError as exc:
            return error_reply(EsError(exc.code, str(exc), exc.status))
        except Exception as exc:  # one bad request must not take the server down
            log.exception(
                "Elasticsearch API request %s %s failed",
                request.method,
                request.url.path,
                extra={"fields": {"path": request.url.path, "reason": repr(exc)}},
            )
            return error_reply(EsError("exception", f"internal failure: {exc}", 500))

    return guarded


@dataclass
class Item:
    """One action of a bulk request: its answer so far and, for a document to store, its JSON."""

    action: str
    index: str
    doc_id: str
    document: bytes | None = None  # set for an index/create document waiting to be appended
    status: int = 0
    error: tuple[str, str] | None = None  # (type, reason) of a refused item

    def refuse(self, status: int, kind: str, reason: str) -> None:
        self.status, self.error, self.document = status, (kind, reason), None

    def answer(self, seq_no: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"_index": self.index, "_id": self.doc_id}
        if self.error is not None:
            kind, reason = self.error
            body["status"] = self.status
            body["error"] = {"type": kind, "reason": reason, "index": self.index}
        else:
            body.update(
                _version=1,
                result="created",
                _shards={"total": 1, "successful": 1, "failed": 0},
                _seq_no=seq_no,
                _primary_term=1,
                status=201,
            )
        return {self.action: body}

    def answer_json(self, seq_no: int | None) -> str:
        """:meth:`answer` as compact JSON; a stored document's from a template (the text
        ``json.dumps`` writes), since a bulk answer holds one per document."""
        if self.error is not None or seq_no is None:
            return json.dumps(self.answer(seq_no), separators=(",", ":"))
        return (
            f'{{"{self.action}":{{"_index":{json.dumps(self.index)},"_id":'
            f'{json.dumps(self.doc_id)},"_version":1,"result":"created","_shards":{{"total":1,'
            f'"successful":1,"failed":0}},"_seq_no":{seq_no},"_primary_term":1,"status":201}}}}'
        )


def parse_bulk(body: bytes, default_index: str | None, max_items: int = 1 << 62) -> list[Item]:
    """The actions of a bulk body (NDJSON: an action line, then a document line for all but
    ``delete``). A malformed action line fails the whole request, as in Elasticsearch (EsError
    400), as do more than ``max_items`` actions (413); a document that is not a JSON object fails
    only its item."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    items: list[Item] = []
    # Shippers repeat one action line ({"index":{"_index":"web"}}) for every document: each
    # distinct line is parsed once. Generated ids are a random prefix of the request and a count.
    parsed: dict[bytes, Any] = {}
    prefix = uuid.uuid4().hex[:12]
    at = 0
    while at < len(lines):
        number = at + 1
        try:
            action_line = parsed.get(lines[at])
            if action_line is None:
                action_line = parsed[lines[at]] = json.loads(lines[at])
        except (ValueError, RecursionError) as exc:
            raise EsError(
                "x_content_parse_exception", f"[{number}:1] malformed action/metadata line: {exc}"
            ) from None
        if not isinstance(action_line, dict) or len(action_line) != 1:
            raise EsError(
                "illegal_argument_exception",
                f"Malformed action/metadata line [{number}], expected a JSON object with one of "
                f"{list(ACTIONS)} as its only key",
            )
        ((action, meta),) = action_line.items()
        if action not in ACTIONS:
            raise EsError(
                "illegal_argument_exception",
                f"Malformed action/metadata line [{number}], expected one of {list(ACTIONS)} "
                f"but found [{action}]",
            )
        if not isinstance(meta, dict):
            raise EsError(
                "illegal_argument_exception",
                f"Malformed action/metadata line [{number}], expected an object for [{action}]",
            )
        index = meta.get("_index", default_index)
        if not isinstance(index, str) or not index:
            raise EsError(
                "action_request_validation_exception",
                f"Validation Failed: 1: index is missing (action/metadata line [{number}]); "
                "name it in the action or post to /{index}/_bulk",
            )
        doc_id = meta.get("_id")
        item = Item(
            action, index, str(doc_id) if doc_id is not None else f"{prefix}{len(items):08x}"
        )
        items.append(item)
        if len(items) > max_items:
            raise EsError(
                "content_too_long_exception",
                f"more than {max_items} actions in one bulk request (server."
                "max_records_per_request): make the shipper send smaller batches",
                413,
            )
        at += 1
        if action == "delete":
            item.refuse(
                400,
                "illegal_argument_exception",
                "loglake streams are append-only: delete is not supported",
            )
            continue
        if at >= len(lines):
            raise EsError(
                "illegal_argument_exception",
                f"The bulk request must be terminated by a newline [\\n]; action line [{number}] "
                "has no document line",
            )
        document, at = lines[at].strip(), at + 1
        if action == "update":
            item.refuse(
                400,
                "illegal_argument_exception",
                "loglake streams are append-only: update is not supported (use index or create)",
            )
            continue
        problem = _document_problem(document)
        if problem:
            item.refuse(400, "document_parsing_exception", f"[{at}:1] {problem}")
        else:
            item.document = document
    return items


def _document_problem(line: bytes) -> str | None:
    try:
        value = json.loads(line)
    except ValueError as exc:
        return f"failed to parse: {exc}"
    except RecursionError:
        return "failed to parse: JSON nested too deeply"
    if not isinstance(value, dict):
        return "failed to parse: the document is not a JSON object"
    return None


class ElasticsearchSource:
    """The Elasticsearch API as a live source.

    Counters per stream (the index): ``received`` documents, ``accepted`` appended, ``rejected``
    refused one by one (not a JSON object, delete/update), ``dropped`` documents of requests the
    stream refused as a whole (``stream_full``: 429, ``too_large``, ``stream_error``).
    """

    name = "elasticsearch"

    def __init__(self, config: Config) -> None:
        server = config.server
        self._limit = server.max_body_bytes
        self._timeout = server.body_timeout_s
        self._max_items = server.max_records_per_request
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
        routes = [
            HttpRoute("/", guard(self.root), ("GET",)),  # HEAD comes with GET
            HttpRoute("/_license", guard(self.license), ("GET",)),
            HttpRoute("/_cluster/health", guard(self.health_route), ("GET",)),
            HttpRoute("/_cat/health", guard(self.cat_health), ("GET",)),
            # The Python client sends PUT, shippers POST; Elasticsearch takes both.
            HttpRoute("/_bulk", guard(self.bulk), ("POST", "PUT"), hot=True),
            HttpRoute("/{index}/_bulk", guard(self.bulk), ("POST", "PUT"), hot=True),
        ]
        routes += [HttpRoute(p, guard(self.setup), ("GET", "PUT")) for p in SETUP_PATHS]
        return routes

    def feeds(self) -> list[str]:
        return []

    # -- the handshake ----------------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        """The version document shippers read to pick their request format (8.x: no types)."""
        return reply(
            {
                "name": "loglake",
                "cluster_name": "loglake",
                "cluster_uuid": "loglake-0000000000000000",
                "version": VERSION,
                "tagline": "You Know, for Search",
            }
        )

    async def license(self, request: Request) -> Response:
        """An active basic licence: Logstash and Filebeat check for one before using ILM."""
        return reply(
            {
                "license": {
                    "status": "active",
                    "uid": "00000000-0000-0000-0000-000000000000",
                    "type": "basic",
                    "issue_date_in_millis": 0,
                    "max_nodes": 1000,
                    "issued_to": "loglake",
                    "issuer": "elasticsearch",
                    "start_date_in_millis": -1,
                }
            }
        )

    async def health_route(self, request: Request) -> Response:
        """A green one-node cluster (Vector's health check and others wait for green/yellow)."""
        return reply(
            {
                "cluster_name": "loglake",
                "status": "green",
                "timed_out": False,
                "number_of_nodes": 1,
                "number_of_data_nodes": 1,
                "active_primary_shards": 0,
                "active_shards": 0,
                "relocating_shards": 0,
                "initializing_shards": 0,
                "unassigned_shards": 0,
                "delayed_unassigned_shards": 0,
                "number_of_pending_tasks": 0,
                "number_of_in_flight_fetch": 0,
                "task_max_waiting_in_queue_millis": 0,
                "active_shards_percent_as_number": 100.0,
            }
        )

    async def cat_health(self, request: Request) -> Response:
        """The same green cluster as a ``_cat`` line (JSON with ``?format=json``): rsyslog's
        omelasticsearch reads it before resuming after a failure, and since 8.2606 resumes only
        on a 2xx (and suspends on a 429), so without it rsyslog would stay suspended for ever."""
        now = time.time()
        row = {
            "epoch": str(int(now)),
            "timestamp": time.strftime("%H:%M:%S", time.gmtime(now)),
            "cluster": "loglake",
            "status": "green",
            "node.total": "1",
            "node.data": "1",
            "shards": "0",
            "pri": "0",
            "relo": "0",
            "init": "0",
            "unassign": "0",
            "pending_tasks": "0",
            "max_task_wait_time": "-",
            "active_shards_percent": "100.0%",
        }
        if request.query_params.get("format") == "json":
            return reply([row])
        lines = [" ".join(row.values())]
        if "v" in request.query_params:  # ?v: with the column names first, as _cat does
            lines.insert(0, " ".join(row))
        body = "".join(line + "\n" for line in lines)
        return Response(body, 200, PRODUCT, media_type="text/plain; charset=UTF-8")

    async def setup(self, request: Request) -> Response:
        """Templates, ILM policies and ingest pipelines: acknowledged and not kept (the stream's
        format decides the columns). A GET answers an empty set, which makes most shippers PUT
        theirs and go on."""
        if request.method == "PUT":
            await read_decoded(request, self._limit, self._timeout, "server.max_body_bytes")
            return reply({"acknowledged": True})
        path = request.url.path
        if path.startswith("/_index_template/"):
            return reply({"index_templates": []})
        return reply({})

    # -- bulk -------------------------------------------------------------------------------------

    async def bulk(self, request: Request) -> Response:
        """Append the documents of a bulk request to their streams; answer once they are durable.

        The index names the stream; an index that is no stream fails its items with 404
        ``index_not_found_exception``. A stream whose disk budget is used up (still, after a
        second's wait) fails its items and those of the streams after it with 429, and the
        request with 429 and Retry-After (:func:`full_reply`), which shippers retry."""
        streams = self._streams
        if streams is None:
            raise EsError("cluster_block_exception", "the server is starting", 503, 1.0)
        started = time.monotonic()
        body = await read_decoded(request, self._limit, self._timeout, "server.max_body_bytes")
        # Parsing a large bulk body takes milliseconds of CPU: off the event loop.
        items = await run_in_threadpool(
            parse_bulk, body, request.path_params.get("index"), self._max_items
        )
        known = set(streams.names())
        by_stream: dict[str, list[Item]] = {}
        for item in items:
            counters = self._counters[item.index] if item.index in known else None
            if item.document is None:
                if counters is not None:
                    counters.add(received=1, rejected=1)
                continue
            if counters is None:
                item.refuse(
                    404,
                    "index_not_found_exception",
                    f"no such index [{item.index}]: loglake appends to the stream named like the "
                    "index; create the stream (PUT /v1/streams/NAME or [streams.NAME]) or set the "
                    "shipper's index to an existing stream",
                )
                continue
            by_stream.setdefault(item.index, []).append(item)
        seq_nos: dict[int, int] = {}
        full: EsError | None = None
        for stream, waiting in by_stream.items():
            if full is not None:  # not tried: answered as refused like the full stream's
                self._counters[stream].add(received=len(waiting))
                self._counters[stream].drop("stream_full", len(waiting))
                self._refuse_full(waiting, full)
                continue
            try:
                first = await self._append(streams, stream, waiting)
            except EsError as exc:
                if exc.status != 429:
                    raise
                full = exc
                self._refuse_full(waiting, full)
                continue
            for offset, item in enumerate(waiting, first):
                seq_nos[id(item)] = offset
        took = round((time.monotonic() - started) * 1000)
        if full is not None:
            return full_reply(full, [item.answer(seq_nos.get(id(item))) for item in items], took)
        answers = ",".join(item.answer_json(seq_nos.get(id(item))) for item in items)
        errors = "true" if any(item.error is not None for item in items) else "false"
        # "errors" then "items" first: Fluent Bit looks for the text {"errors":false,"items":[
        # and Vector for "errors":true; "took" (first in Elasticsearch's answers) goes last.
        answer = f'{{"errors":{errors},"items":[{answers}],"took":{took}}}'
        return Response(answer, 200, PRODUCT, media_type=CONTENT_TYPE)

    @staticmethod
    def _refuse_full(items: list[Item], full: EsError) -> None:
        for item in items:
            item.refuse(429, full.kind, full.reason)

    async def _append(self, streams: Streams, stream: str, items: list[Item]) -> int:
        """Append ``items``' documents to ``stream`` once durable; their first offset."""
        records = [item.document or b"" for item in items]
        counters = self._counters[stream]
        counters.add(received=len(records))
        try:
            try:
                first, _ = await run_in_threadpool(streams.append, stream, records)
            except StreamFullError as exc:
                # Held, then tried once more, before the 429: rsyslog's retry ruleset resends
                # at once and syslog-ng after time-reopen(), whatever Retry-After says; holding
                # keeps them from spinning, and delivery has often freed space by then.
                await asyncio.sleep(min(exc.retry_after, FULL_HOLD_S))
                first, _ = await run_in_threadpool(streams.append, stream, records)
        except StreamFullError as exc:
            counters.drop("stream_full", len(records))
            raise EsError(
                "es_rejected_execution_exception",
                f"stream {stream!r} is full (its disk budget is used up); retry later: {exc}",
                429,
                exc.retry_after,
            ) from exc
        except RecordTooLargeError as exc:
            counters.drop("too_large", len(records))
            raise EsError("document_parsing_exception", str(exc), 413) from exc
        except NoSuchStreamError as exc:
            counters.drop("no_such_stream", len(records))
            raise EsError("index_not_found_exception", str(exc), 404) from exc
        except Exception:
            counters.drop("stream_error", len(records))
            raise
        counters.add(accepted=len(records))
        return first
