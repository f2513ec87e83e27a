"""The one error boundary of the HTTP API: every error answer is rendered here.

The shape is ``{"error": {"code": "...", "message": "..."}}`` with a 4xx/5xx status. A
:class:`~loglake.errors.LoglakeError` carries its own ``status``, ``code`` and ``headers``
(``Retry-After`` for back-pressure, ``Connection: close`` for a body left unread), so a new client
error is a new error class, never a branch here. Starlette's 404/405 answers take the same shape.
Anything else is unexpected: a 500 ``internal`` whose message names only the exception's type (its
text may hold paths or data), logged with its traceback and request.

:func:`error_response` is installed as Starlette's handler for LoglakeError, HTTPException and
Exception (:data:`EXCEPTION_HANDLERS`) and called by the ingest fast path and the auth middleware,
which run outside Starlette. :func:`error_body` is the shape as bytes, for the connection protocol
(protocol.py) that answers before any ASGI app runs. The AWS-compatible endpoint keeps AWS's own
error shape (its clients parse that one); see aws.py. The auth middleware's 401 on a source's path
takes that protocol's shape when the source gives one (``HttpRoute.refuse``: OTLP's
``google.rpc.Status``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from loglake.errors import LoglakeError

log = logging.getLogger("loglake.serve")


class BadRequestError(LoglakeError):
    """A request the API cannot take as sent: a body that is not the JSON expected, an unknown
    setting, a bad query parameter (400). The message names what to change."""

    status = 400
    code = "invalid_request"


class UnauthorizedError(LoglakeError):
    """No API key, or a wrong one, on a route that needs one (401)."""

    status = 401
    code = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotReadyError(LoglakeError):
    """``/readyz`` while a stream is still resuming or a worker has died (503, retry in 1 s)."""

    status = 503
    code = "not_ready"
    retry_after = 1.0


#: Starlette's codes for the answers its router makes itself.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_body(code: str, message: str) -> bytes:
    """The API's error shape as JSON bytes."""
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()


def error_response(request: Request | None, exc: BaseException) -> JSONResponse:
    """The answer to ``exc`` raised while serving ``request`` (None when there is no request yet).

    A LoglakeError answers with its status, code, message and headers; an HTTPException (the
    router's 404 and 405) with its status; anything else with a 500. Every 500 is logged with its
    traceback, the request's method and path, and its stream if any (a 503 is a state the client
    waits out, not logged per request).
    """
    headers: dict[str, str] = {}
    if isinstance(exc, LoglakeError):
        status, code, message = exc.status, exc.code, str(exc)
        headers.update(exc.headers)
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status, "http_error")
        message = str(exc.detail)
        if status == 404 and request is not None:
            message = f"no route {request.method} {request.url.path}; see docs/streaming.md"
        elif status == 405 and request is not None:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        headers.update(exc.headers or {})
    else:
        status, code = 500, "internal"
        message = f"internal error: {type(exc).__name__}; the server log has the details"
    if status == 500:
        _log(request, exc)
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def handle(request: Request, exc: Exception) -> JSONResponse:
    """:func:`error_response` as a Starlette exception handler."""
    return error_response(request, exc)


#: Starlette's ``exception_handlers`` for the one boundary.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    LoglakeError: handle,
    HTTPException: handle,
    Exception: handle,
}


def _log(request: Request | None, exc: BaseException) -> None:
    method = request.method if request is not None else "-"
    path = request.url.path if request is not None else "-"
    stream = request.path_params.get("stream") if request is not None else None
    log.error(
        "%s %s failed: %s",
        method,
        path,
        exc,
        exc_info=exc,
        extra={"fields": {"stream": stream, "reason": str(exc) or type(exc).__name__}},
    )
