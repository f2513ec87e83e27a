"""Server-Sent Events streams that end when the server shuts down.

uvicorn's graceful shutdown waits (up to ``timeout_graceful_shutdown``, 30 s) for every open
response to finish, and an event stream never finishes by itself: one open console page or ``curl
-N`` held every shutdown for the whole 30 s. :data:`CLOSING` is set by :func:`loglake.server.app.serve`
as soon as a shutdown signal arrives, and :func:`items` ends the stream within :data:`TICK_S`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")

#: Set once the server starts shutting down (SIGTERM/SIGINT): open event streams end.
CLOSING = threading.Event()
TICK_S = 0.5  # how soon an open stream notices CLOSING


async def items(queue: asyncio.Queue[T], heartbeat_s: float) -> AsyncIterator[T | None]:
    """The items of ``queue`` as they arrive, and None whenever ``heartbeat_s`` passed without one
    (time for a keep-alive comment); ends when the server starts shutting down."""
    waited = 0.0
    while not CLOSING.is_set():
        try:
            item = await asyncio.wait_for(queue.get(), TICK_S)
        except TimeoutError:
            waited += TICK_S
            if waited >= heartbeat_s:
                waited = 0.0
                yield None
            continue
        waited = 0.0
        yield item
