"""The HTTP API of ``loglake serve`` (Starlette on uvicorn).

Routes: ``GET /healthz`` (the process answers), ``GET /readyz`` (every stream has resumed from its
committed offset), ``GET /metrics`` (Prometheus), ``PUT /v1/streams/{stream}`` (create),
``DELETE /v1/streams/{stream}`` (delete one created through the API), ``GET /v1/streams`` (list),
the continuous-query routes under ``/v1/queries`` and ``/v1/alerts``, and the routes of the live
sources (``sources/``), mounted from ``runtime.sources``: ``POST /v1/streams/{stream}/records``
(sources/http.py) and ``POST /`` (the Kinesis and Firehose APIs, sources/kinesis.py and
sources/firehose.py, told apart by ``X-Amz-Target``).

Every error has one JSON shape: ``{"error": {"code": "...", "message": "..."}}`` with a 4xx/5xx status,
unknown routes and unexpected failures included; when the stream's disk budget is used up the answer
is 503 with ``Retry-After``. Request heads, bodies and records per request are bounded (protocol.py,
sources/http_body.py). :func:`serve` is the one place the server is started.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, compile_path

from loglake.analytics.alerts import json_value
from loglake.errors import ConfigError, LoglakeError
from loglake.server.console.web import KEY_COOKIE
from loglake.server.console.web import routes as console_routes
from loglake.server.errors import (
    EXCEPTION_HANDLERS,
    BadRequestError,
    NotReadyError,
    UnauthorizedError,
    error_response,
)
from loglake.server.events import CLOSING
from loglake.server.events import items as events_of
from loglake.server.metrics import CONTENT_TYPE, build_registry, quantile, render_metrics
from loglake.server.runtime import DELETE_WAIT_S, NoSuchQueryError, Runtime, node_id
from loglake.sources.http_body import read_decoded

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from loglake.config import Config
    from loglake.sources.live import HttpRoute, LiveSource, Refuse


log = logging.getLogger("loglake.serve")

Handler = Callable[[Request], Awaitable[Response]]

_CREATE_BODY_LIMIT = 64 << 10  # a JSON object of a few settings


_body = read_decoded  # the request body within limits, decompressed (sources/http_body.py)


SWITCH_INTERVAL_S = 0.0005
SSE_QUEUE = 100  # batches of result rows waiting per subscriber; a slower one loses the oldest
SSE_HEARTBEAT_S = 15.0


def create_app(config: Config) -> Any:
    """The ASGI app; the :class:`Runtime` starts with the app's lifespan and stops gracefully.

    The Starlette app is reachable as ``.app`` (``.app.app`` behind :class:`BearerAuth`, which is
    installed whenever any credential is configured).
    """
    runtime = Runtime(config)
    registry = build_registry(runtime)
    server = config.server
    limit = server.max_body_bytes

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The event loop shares the GIL with delivery threads that parse and commit in Python.
        # With the default 5 ms switch interval a request waits up to 5 ms each time it needs the
        # GIL back; 0.5 ms keeps acknowledgements prompt at a small cost in thread switches.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        await run_in_threadpool(runtime.start)
        if config.console.enabled:
            # On stdout, apart from the JSON events on stderr: the one line a person looks for.
            host = f"[{server.host}]" if ":" in server.host else server.host
            print(f"loglake console: http://{host}:{server.port}/console", flush=True)
        try:
            yield
        finally:
            await run_in_threadpool(runtime.stop)
            await run_in_threadpool(console_pool.close)

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(registry), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if runtime.ready:
            return JSONResponse(
                {"status": "ready", "streams": sorted(runtime.streams), "skipped": runtime.skipped}
            )
        problems = [e for s in list(runtime.streams.values()) for e in s.delivery.errors]
        problems += runtime.dead_workers() + runtime.source_problems()
        raise NotReadyError("; ".join(problems) or "streams are resuming")

    async def cluster(request: Request) -> Response:
        """The nodes and who delivers each stream and runs each job: from the leases in NATS,
        or this one node when the streams are local."""
        if runtime.cluster is not None:
            return JSONResponse(await run_in_threadpool(runtime.cluster.view))
        node = node_id(runtime.config)
        owns = [f"owner.{name}" for name in sorted(runtime.streams)]
        owns += [f"job.{name}" for name in runtime.jobs.scheduled]
        return JSONResponse(
            {
                "node": node,
                "nodes": [{"node": node, "owns": owns}],
                "owners": dict.fromkeys(owns, node),
            }
        )

    async def list_streams(request: Request) -> Response:
        return JSONResponse({"streams": [_describe(s) for s in list(runtime.streams.values())]})

    async def manage_stream(request: Request) -> Response:
        """PUT: create a stream from a JSON body of settings (201; 200 when it exists). DELETE:
        delete one created through the API (``?force=true``: without waiting for delivery)."""
        name = request.path_params["stream"]
        if request.method == "DELETE":
            force = _flag(request, "force")
            wait = _seconds(request, "timeout", DELETE_WAIT_S, 300.0)
            return JSONResponse(await run_in_threadpool(runtime.delete, name, force, wait))
        raw = await _body(request, _CREATE_BODY_LIMIT, server.body_timeout_s)
        options = _json_object(raw.strip() or b"{}", "stream settings")
        # Parsed by the config's parser: the API's subset of settings, refused keys named.
        created = await run_in_threadpool(runtime.create, name, options)
        return JSONResponse(_describe(runtime.get(name)), 201 if created else 200)

    async def list_queries(request: Request) -> Response:
        queries = runtime.running_queries()
        return JSONResponse(
            {"queries": [_describe_query(n, st, q) for n, (st, q) in sorted(queries.items())]}
        )

    async def query_events(request: Request) -> Response:
        """Server-Sent Events: one ``result`` event per new result row of the query, as JSON."""
        import asyncio

        from starlette.responses import StreamingResponse

        name = request.path_params["query"]
        q = _running_query(runtime, name)
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(SSE_QUEUE)
        q.subscribe(asyncio.get_running_loop(), queue)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b": subscribed to " + name.encode() + b"\n\n"
                async for rows in events_of(queue, SSE_HEARTBEAT_S):
                    if rows is None:
                        yield b": keep-alive\n\n"  # a comment line: clients ignore it
                        continue
                    for row in rows:
                        yield b"event: result\ndata: " + _json_bytes(row) + b"\n\n"
            finally:
                q.unsubscribe(queue)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def manage_query(request: Request) -> Response:
        """PUT: create a continuous query from a JSON body of [queries.NAME] settings (201, or 200
        when it exists with the same settings; 409 with other ones). DELETE: stop and forget one
        created through the API."""
        name = request.path_params["query"]
        if request.method == "DELETE":
            await run_in_threadpool(runtime.delete_query, name)
            return JSONResponse({"deleted": name})
        raw = await _body(request, limit, server.body_timeout_s, "server.max_body_bytes")
        body = _json_object(raw or b"null", "[queries.NAME] settings")
        created = await run_in_threadpool(runtime.create_query, name, body)
        found = runtime.running_queries().get(name)
        described = _describe_query(name, found[0], found[1]) if found else {"name": name}
        return JSONResponse(described, 201 if created else 200)

    async def list_alerts(request: Request) -> Response:
        alerts = []
        for name, (_, q) in sorted(runtime.running_queries().items()):
            for alert in q.alerts:
                st = alert.status
                alerts.append(
                    {
                        "name": alert.spec.name,
                        "query": name,
                        "when": alert.spec.when,
                        "for": alert.spec.for_windows,
                        "severity": alert.spec.severity,
                        "state": st.state,
                        "since": st.since,
                        "consecutive": st.consecutive,
                        "fired": st.fired,
                        "resolved": st.resolved,
                        "suppressed": st.suppressed,
                    }
                )
        return JSONResponse({"alerts": alerts})

    async def query_results(request: Request) -> Response:
        """The latest result rows of a query, oldest first (``?limit=N``, default 100)."""
        name = request.path_params["query"]
        q = _running_query(runtime, name)
        rows = q.latest(_count(request, "limit", 100))
        return JSONResponse({"query": name, "rows": json_value(rows)})

    source_routes, hot, refusals = mount_sources(runtime.sources)
    console, console_pool = console_routes(config, runtime)
    routes = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/v1/cluster", cluster),
            Route("/v1/streams", list_streams),
            Route("/v1/streams/{stream}", manage_stream, methods=["PUT", "DELETE"]),
            Route("/v1/queries", list_queries),
            Route("/v1/queries/{query}", manage_query, methods=["PUT", "DELETE"]),
            Route("/v1/queries/{query}/results", query_results),
            Route("/v1/queries/{query}/events", query_events),
            Route("/v1/alerts", list_alerts),
            *console,  # the web console's pages and APIs (server/console/)
            *source_routes,  # after the server's own: a source cannot shadow them
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    routes.state.runtime = runtime
    app: Any = IngestFastPath(routes, hot)
    if config.auth.enabled:
        app = BearerAuth(app, keys=config.auth.api_keys, refusals=refusals)
    return app


def _flag(request: Request, name: str) -> bool:
    """A true/false query parameter (absent: false); ConfigError for anything else."""
    value = request.query_params.get(name, "false").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise BadRequestError(f"?{name}={value[:50]!r}: use true or false")


def _seconds(request: Request, name: str, default: float, most: float) -> float:
    """A query parameter of seconds in [0, most] (absent: ``default``); ConfigError otherwise."""
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= most:  # also refuses nan
        raise BadRequestError(f"?{name}={value[:50]!r}: use a number of seconds from 0 to {most:g}")
    return seconds


def _count(request: Request, name: str, default: int) -> int:
    """A query parameter of a whole number, at least 1 (absent: ``default``); BadRequestError
    otherwise."""
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise BadRequestError(f"?{name}={value[:50]!r}: use a whole number of at least 1")
    return count


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object of ``what``; BadRequestError for anything else (invalid
    JSON or UTF-8, another JSON type, nesting too deep for the parser)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadRequestError(
            f"the body must be a JSON object of {what}; it is nested too deeply to parse"
        ) from None
    except ValueError as exc:
        raise BadRequestError(f"the body must be a JSON object of {what}: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequestError(
            f"the body must be a JSON object of {what}, not {type(value).__name__}"
        )
    return value


def _json_bytes(value: Any) -> bytes:
    """``value`` (result rows: dates, decimals, blobs...) as compact JSON (see json_value)."""
    return json.dumps(json_value(value), separators=(",", ":"), allow_nan=False).encode()


#: A route of the fast path: its path pattern, methods and handler.
HotRoute = tuple["re.Pattern[str]", frozenset[str], Handler]


def mount_sources(
    sources: Sequence[LiveSource],
) -> tuple[list[Route], list[HotRoute], dict[str, Refuse]]:
    """The Starlette routes of the sources' :class:`HttpRoute` s, those of them marked ``hot``
    for :class:`IngestFastPath`, and the ``refuse`` of each path that has one for
    :class:`BearerAuth`.

    Routes of several sources on one path and method (Kinesis and Firehose on ``POST /``) become
    one route that picks the source by the header of their ``dispatch``; a request no prefix
    claims goes to the first of them (registry order). Raises LoglakeError when such routes do
    not all name the same header (a source's mistake).
    """
    groups: dict[tuple[str, tuple[str, ...]], list[HttpRoute]] = {}
    refusals: dict[str, Refuse] = {}
    for source in sources:
        for route in source.routes():
            groups.setdefault((route.path, tuple(sorted(route.methods))), []).append(route)
            if route.refuse is not None:
                refusals[route.path] = route.refuse
    mounted: list[Route] = []
    hot: list[HotRoute] = []
    for (path, methods), group in groups.items():
        handler = group[0].handler if len(group) == 1 else _dispatcher(path, group)
        mounted.append(Route(path, handler, methods=list(methods)))
        if any(route.hot for route in group):
            hot.append((compile_path(path)[0], frozenset(methods), handler))
    return mounted, hot, refusals


def _dispatcher(path: str, group: list[HttpRoute]) -> Handler:
    headers = {route.dispatch[0].lower() if route.dispatch else "" for route in group}
    if len(headers) != 1 or "" in headers:
        raise LoglakeError(
            f"several sources answer on {path} and do not all set HttpRoute.dispatch with one "
            "header; give each a (header, prefix) to tell their requests apart"
        )
    header = headers.pop()
    table = [(route.dispatch[1] if route.dispatch else "", route.handler) for route in group]
    fallback = group[0].handler

    async def dispatch(request: Request) -> Response:
        value = request.headers.get(header, "")
        for prefix, handler in table:
            if value.startswith(prefix):
                return await handler(request)
        return await fallback(request)

    return dispatch


class IngestFastPath:
    """Serves the sources' hot routes directly and hands everything else to the Starlette app.

    ``POST /v1/streams/{stream}/records`` and ``POST /`` (the AWS APIs) carry nearly every request
    of a busy server; going through Starlette's middleware stack and router cost about a quarter
    of the event loop's time per request (py-spy, 4 clients posting 500-line batches). The
    handlers are the same functions the routes use, so answers are identical either way.
    """

    def __init__(self, app: Any, hot: Sequence[HotRoute]) -> None:
        self.app = app
        self.hot = list(hot)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler: Handler | None = None
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            for pattern, methods, route_handler in self.hot:
                if method in methods and (match := pattern.match(path)):
                    scope["path_params"] = match.groupdict()
                    handler = route_handler
                    break
        if handler is None:
            await self._routed(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except Exception as exc:  # the ingest routes' errors, rendered as the routed ones are
            response = error_response(request, exc)
        await response(scope, receive, send)

    async def _routed(self, scope: Any, receive: Any, send: Any) -> None:
        """The Starlette app. Its handler for unexpected errors answers (and logs) them, then
        Starlette raises them again for the server to log; an error whose answer was sent in full
        is not raised further (uvicorn would log it a second time and drop the connection)."""
        answered = False

        async def sent(message: Any) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception:
            if not answered:
                raise


class BearerAuth:
    """Requires ``Authorization: Bearer <key>`` on every route but the health probes (or the key
    in Basic or ApiKey form, as Elasticsearch shippers send it: :func:`_authorization_key`).

    Installed whenever any credential is configured. The AWS-compatible endpoint (``POST /`` with
    ``X-Amz-Target``) authenticates with SigV4 instead. With no API keys (only AWS credentials)
    every other route answers 401, saying to configure ``[auth] api_keys``: configuring one kind
    of credential never leaves the rest of the API open. A 401 takes the API's JSON error shape,
    or on the paths of ``refusals`` (a source's :attr:`HttpRoute.refuse`, by exact path) the shape
    that protocol's clients read.
    """

    def __init__(
        self, app: Any, keys: tuple[str, ...], refusals: Mapping[str, Refuse] | None = None
    ) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.refusals = dict(refusals or {})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"] == "/" and scope["method"] == "POST" and b"x-amz-target" in headers:
            await self.app(scope, receive, send)
            return
        if not self.keys:
            message = (
                "this route needs an API key and none is configured: add [auth] api_keys to the "
                "config file and send Authorization: Bearer <key> (only the AWS-compatible API "
                "is open, with SigV4)"
            )
        else:
            token = _authorization_key(headers.get(b"authorization", b""))
            token = token or _cookie_key(headers.get(b"cookie", b""))
            if token and any(hmac.compare_digest(token, k) for k in self.keys):
                await self.app(scope, receive, send)
                return
            if scope["path"] == "/console/login":  # the sign-in page: it holds no data
                await self.app(scope, receive, send)
                return
            message = (
                "missing or wrong API key: send Authorization: Bearer <key> with a key from "
                "[auth] api_keys"
            )
            if scope["method"] == "GET" and _is_page(scope["path"]):
                # A person opening the console: to the sign-in page rather than a JSON error.
                sign_in = RedirectResponse("/console/login", 303)
                await sign_in(scope, receive, send)
                return
        refused = UnauthorizedError(message)
        refuse = self.refusals.get(scope["path"])
        if refuse is not None:
            request_headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers.items()
            }
            reply: Any = refuse(refused.status, message, request_headers, refused.headers)
        else:
            reply = error_response(None, refused)
        await reply(scope, receive, send)


def _authorization_key(header: bytes) -> bytes:
    """The API key an Authorization header carries (b"" when none).

    ``Bearer KEY``; and, for log shippers that speak Elasticsearch and cannot send a bearer token,
    ``Basic base64(USER:KEY)`` (any user name: Fluent Bit's HTTP_User/HTTP_Passwd, rsyslog's
    uid/pwd) and ``ApiKey base64(ID:KEY)`` or ``ApiKey KEY`` (Filebeat's and Logstash's api_key).
    """
    scheme, _, value = header.strip().partition(b" ")
    value = value.strip()
    scheme = scheme.lower()
    if scheme == b"bearer":
        return value
    if scheme not in (b"basic", b"apikey"):
        return b""
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value if scheme == b"apikey" else b""
    if b":" in decoded:
        return decoded.partition(b":")[2]
    return value if scheme == b"apikey" else b""


def _cookie_key(header: bytes) -> bytes:
    """The API key the console's sign-in stored in the Cookie header (hex; b"" when absent)."""
    for part in header.split(b";"):
        name, _, value = part.strip().partition(b"=")
        if name == KEY_COOKIE.encode():
            try:
                return bytes.fromhex(value.strip().decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                return b""
    return b""


def _is_page(path: str) -> bool:
    """Whether ``path`` is one of the console's pages (not its code or APIs)."""
    return path == "/console" or (path.startswith("/console/") and path.count("/") == 2)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def serve(config: Config) -> None:
    """Run ``loglake serve`` on ``config.server.host``/``port`` until SIGTERM/SIGINT.

    The one place the server is started, so its rules hold for every caller: a host other than a
    loopback address is refused (ConfigError) unless a credential is configured (``[auth]
    api_keys`` or ``aws_credentials``); request heads are bounded in size and time
    (``server.max_header_bytes``, ``server.header_timeout_s``).
    """
    host = config.server.host
    if not is_loopback(host) and not config.auth.enabled:
        raise ConfigError(
            f"refusing to listen on {host!r}: no credentials are configured, so the server binds to "
            "loopback only (127.0.0.1 or ::1); set [auth] api_keys (and [auth.aws_credentials] for "
            "the AWS-compatible API) to listen elsewhere"
        )
    import uvicorn

    from loglake.server.logs import configure_logging
    from loglake.server.protocol import limited_protocol

    configure_logging(config.server.log_format, config.server.log_level)
    settings = uvicorn.Config(
        create_app(config),
        host=host,
        port=config.server.port,
        http=limited_protocol(config.server.max_header_bytes, config.server.header_timeout_s),
        log_config=None,  # keep the handler configured above (uvicorn's would replace it)
        log_level=config.server.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            CLOSING.set()  # open event streams end, so the graceful shutdown does not wait on them
            super().handle_exit(sig, frame)

    _Server(settings).run()


def _running_query(runtime: Runtime, name: str) -> Any:
    """The running continuous query ``name``; NoSuchQueryError naming the ones there are."""
    found = runtime.running_queries().get(name)
    if found is None:
        known = ", ".join(sorted(runtime.running_queries())) or "none"
        raise NoSuchQueryError(
            f"continuous query {name!r} does not exist (queries: {known}); declare it under "
            f"[queries.{name}] or create it with PUT /v1/queries/{name}"
        )
    return found[1]


def _describe_query(name: str, stream: str, q: Any) -> dict[str, Any]:
    stats = q.engine.stats
    mark = stats.watermark
    return {
        "name": name,
        "stream": stream,
        "table": q.table,
        "window": q.spec.window.kind,
        "watermark": _timestamp(mark),
        "records": stats.records,
        "windows": stats.windows,
        "corrections": stats.corrections,
        "retractions": stats.retractions,
        "too_late": stats.too_late,
        "result_rows": q.results,
        "prepared": stats.prepared,
        "prepared_used": stats.prepared_used,
        "emitted_early": stats.emitted_early,
        "failed_windows": stats.failed_windows,
        "errors": list(stats.errors),
        "emit_delay_p50_s": _round(quantile(stats.emit_delays, 0.5)),
        "emit_delay_p99_s": _round(quantile(stats.emit_delays, 0.99)),
    }


def _timestamp(micros: int | None) -> str | None:
    """ISO text of a UTC time in microseconds; a time no date can hold is shown as its number."""
    from datetime import UTC, datetime

    if micros is None:
        return None
    try:
        return datetime.fromtimestamp(micros / 1e6, UTC).replace(tzinfo=None).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(micros)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _describe(stream: Any) -> dict[str, Any]:
    s = stream.delivery.stats
    return {
        "name": stream.name,
        "format": stream.config.format,
        "table": stream.delivery.table,
        "next_offset": stream.log.next_offset,
        "delivered_offset": s.position,
        "delivered": s.delivered,
        "rejected": s.rejected,
        "commits": s.commits,
    }
