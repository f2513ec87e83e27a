"""uvicorn's httptools protocol with the two limits it lacks: request head size and head time.

uvicorn 0.54 bounds neither with httptools (its C parser, kept for speed: 112k -> 130k records/s
over h11): ``h11_max_incomplete_event_size`` only applies to the pure-Python h11 protocol, and no
timer runs while a request line and headers trickle in, so 20 MB of headers were accepted and a
client sending a byte a minute held its connection forever. This subclass answers, in the API's
JSON error shape and closing the connection:

- 431 once a request's line and headers pass ``server.max_header_bytes``;
- 408 when they have not all arrived ``server.header_timeout_s`` after the connection opened or
  the request began (the body has its own deadline, ``server.body_timeout_s``, in
  sources/http_body.py);
- 400 for bytes that are not HTTP/1.1 (a garbage request line, a bad header, a bad chunk size),
  which uvicorn answers in text/plain.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from loglake.server.errors import error_body


def limited_protocol(max_header_bytes: int, header_timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class to pass to uvicorn as ``http=`` with these limits."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, as uvicorn serves it, with bounded request heads.

    Head bytes are counted exactly from the parser's callbacks (request target plus each header
    line); a single header still being received is bounded too, by counting whole chunks read
    while a head is incomplete, so no more than the limit plus one read is ever buffered.
    """

    max_header_bytes = 64 << 10
    header_timeout_s = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # waiting for, or inside, a request line and headers
        self._head_bytes = 0  # of the current head, from the parser's callbacks
        self._raw_head_bytes = 0  # bytes read while a head was incomplete (a header in progress)
        self._message_ended = False  # a request ended within the data being parsed
        self._refusal: tuple[int, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # answered and closing: what the client still sends is ignored
        self._message_ended = False
        if self._in_head and self._head_timer is None:
            # Bytes after a response (which cancel uvicorn's keep-alive timer) start the clock
            # even when they do not begin a request (stray line ends).
            self._arm_head_timer()
        super().data_received(data)
        if self._refusal is None and self._in_head and not self._message_ended:
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self.max_header_bytes:
                self._refuse_head_too_large()
        if self._refusal is not None:
            self._answer()

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._refusal is not None:
            return
        self._in_head = True
        self._head_bytes = 0
        self._arm_head_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._refusal is not None:
            return
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refusal is not None:
            return
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_bytes > self.max_header_bytes:
            self._refuse_head_too_large()
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refusal is not None:
            return
        self._in_head = False
        self._raw_head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is not None:
            return
        self._in_head = True
        self._message_ended = True
        self._raw_head_bytes = 0
        super().on_message_complete()

    # -- refusals ----------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses (it logs ``msg`` itself), in our shape.

        A request being served whose body turns out malformed (a bad chunk) is answered at once
        too, and the connection closed: the app reading that body sees the client gone.
        """
        if self._refusal is not None:
            return
        self._refusal = (
            400,
            "invalid_request",
            "the request is not valid HTTP/1.1 (request line, headers or chunked body); "
            "send a well-formed request",
        )
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            # The body of the request being served (not a pipelined next request) is malformed.
            self._cancel_head_timer()
            if cycle.response_started:
                self.transport.close()  # too late for another status line
            else:
                self._write_refusal()
            return
        self._answer()

    def _refuse_head_too_large(self) -> None:
        self._refusal = (
            431,
            "headers_too_large",
            f"the request line and headers are over {self.max_header_bytes} bytes "
            "(server.max_header_bytes); send fewer or shorter headers",
        )

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refusal is not None or not self._in_head or self.transport.is_closing():
            return
        self._refusal = (
            408,
            "request_timeout",
            f"the request line and headers did not arrive within {self.header_timeout_s:g} s "
            "(server.header_timeout_s)",
        )
        self._answer()

    def _answer(self) -> None:
        """Send the refusal and close, unless a response is being written: then close after it."""
        assert self._refusal is not None
        self._cancel_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # the refused request is simply not served
            return
        if self.transport.is_closing():
            return
        self._write_refusal()

    def _write_refusal(self) -> None:
        """Write the refusal as a whole response and close the connection."""
        assert self._refusal is not None
        status, code, message = self._refusal
        body = error_body(code, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()
