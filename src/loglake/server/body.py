"""Reading request bodies with a limit, shared by the native and the AWS-compatible APIs."""

from __future__ import annotations

from starlette.requests import Request

#: Past the limit the rest of a body is still read (and dropped) up to this many bytes, so the
#: client gets the 413 answer instead of a reset connection; a larger body is cut off.
DRAIN_LIMIT = 64 << 20


class BodyTooLarge(Exception):
    """The request body is over the route's limit (answered with 413)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes; raises :class:`BodyTooLarge` beyond."""
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            async for rest in request.stream():
                size += len(rest)
                if size > DRAIN_LIMIT:
                    break
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
