"""Request bodies within limits, shared by the HTTP sources (native, Kinesis, Firehose) and the
server's management API.

A body is read within ``server.body_timeout_s`` and at most ``server.max_body_bytes``; a gzip body is
inflated to at most ``server.max_body_bytes`` too (a 16 KB bomb never becomes 8 million records); any
other content encoding is refused; a body holds at most ``server.max_records_per_request`` records.
Each refusal is a :class:`BodyError` that carries its HTTP status and error code.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable, Iterator, Mapping

from starlette.requests import ClientDisconnect, Request

from loglake.errors import LoglakeError

#: Past the limit the rest of a body is still read (and dropped) up to this many bytes, so the
#: client gets the 413 answer instead of a reset connection; a larger body is cut off.
DRAIN_LIMIT = 64 << 20

#: Content-Encoding values a body may have ("x-gzip" is gzip's old name, RFC 9110 8.4.1.3).
SUPPORTED_ENCODINGS = ("gzip", "identity")
_GZIP = ("gzip", "x-gzip")


class BodyError(LoglakeError):
    """A request body that is refused; ``status`` and ``code`` make the HTTP answer.

    The answer closes the connection: the body may be unread or half read, so the connection
    cannot carry another request.
    """

    status = 400
    code = "invalid_request"

    @property
    def headers(self) -> dict[str, str]:
        return {**super().headers, "Connection": "close"}


class BodyTooLarge(BodyError):
    """The body, as sent or inflated, is over the limit (413)."""

    status = 413
    code = "body_too_large"


class BodyTimeout(BodyError):
    """The body did not arrive within the time allowed (408)."""

    status = 408
    code = "body_timeout"


class BodyIncomplete(BodyError):
    """The connection closed, or its bytes stopped being HTTP, before the body ended (400; the
    client is gone, so the answer is rarely read)."""


class BadEncoding(BodyError):
    """The body is not what its Content-Encoding says (400)."""


class UnsupportedEncoding(BodyError):
    """A Content-Encoding other than gzip or identity (415)."""

    status = 415
    code = "unsupported_encoding"


class TooManyRecords(BodyError):
    """More records (non-blank lines) in one request than allowed (413)."""

    status = 413
    code = "too_many_records"


def media_type(headers: Mapping[str, str], default: str = "") -> str:
    """The media type of a request's Content-Type, lower case and without its parameters
    (``application/json; charset=utf-8`` -> ``application/json``); ``default`` when absent.
    ``headers``: Starlette's request headers, or a dict with lower-case names."""
    return headers.get("content-type", default).split(";")[0].strip().lower()


def content_encoding(request: Request) -> str:
    """``"gzip"`` or ``"identity"`` from the request's Content-Encoding; UnsupportedEncoding else.

    Checked before the body is read, so an unsupported body is never stored as records.
    """
    codings = [
        c.strip().lower()
        for value in request.headers.getlist("content-encoding")
        for c in value.split(",")
    ]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in _GZIP:
        return "gzip"
    raise UnsupportedEncoding(
        f"Content-Encoding {', '.join(codings)[:100]!r} is not supported; send the body as "
        f"{' or '.join(SUPPORTED_ENCODINGS)} (or without Content-Encoding)"
    )


async def read_body(request: Request, limit: int, timeout: float, setting: str = "") -> bytes:
    """The body as sent, at most ``limit`` bytes, arrived within ``timeout`` seconds.

    Raises :class:`BodyTooLarge` (after dropping the rest, up to :data:`DRAIN_LIMIT`, within the
    same deadline; its message names ``setting``, the limit's config key, when there is one) or
    :class:`BodyTimeout`, or :class:`BodyIncomplete` when the client is gone before the end.
    """
    chunks = []
    size = 0
    too_large = False
    try:
        async with asyncio.timeout(timeout):
            # One iteration of the stream throughout: Starlette refuses a second request.stream()
            # ("Stream consumed"), which made every body over the limit a 500.
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    too_large = True
                    if size > DRAIN_LIMIT:
                        break
                    continue  # dropped: read only so that the client gets the answer
                chunks.append(chunk)
    except ClientDisconnect:
        raise BodyIncomplete(
            "the connection closed before the request body ended; send the whole body"
        ) from None
    except TimeoutError:
        if not too_large:
            raise BodyTimeout(
                f"the request body did not arrive within {timeout:g} s (server.body_timeout_s); "
                "send it faster or in smaller requests"
            ) from None
    if too_large:
        where = f" ({setting})" if setting else ""
        raise BodyTooLarge(f"body is over the limit of {limit} bytes{where}; send smaller requests")
    return b"".join(chunks)


async def read_decoded(request: Request, limit: int, timeout: float, setting: str = "") -> bytes:
    """The body without its content encoding: at most ``limit`` bytes as sent and as inflated,
    arrived within ``timeout`` seconds. Raises :class:`BodyError` (415, 413, 408, 400)."""
    encoding = content_encoding(request)  # before reading: an unsupported body is not taken
    body = await read_body(request, limit, timeout, setting)
    return decode_body(body, encoding, limit)


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` without its content encoding (see :func:`content_encoding`), at most ``limit`` bytes.

    Every member of a multi-member gzip body is inflated (``cat a.gz b.gz`` is valid gzip). Raises
    :class:`BodyTooLarge` as soon as the output passes ``limit`` (without inflating the rest) and
    :class:`BadEncoding` for a body that is not gzip, is cut short or has trailing garbage.
    """
    if encoding != "gzip":
        return body
    out: list[bytes] = []
    size = 0
    data = body
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            # At most one byte past the limit: enough to know the body is too large.
            piece = inflater.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise BadEncoding(f"Content-Encoding: gzip but the body is not gzip: {exc}") from exc
        size += len(piece)
        if size > limit:
            raise BodyTooLarge(
                f"the gzip body inflates past the limit of {limit} bytes (server.max_body_bytes "
                "counts decompressed bytes); send smaller requests"
            )
        if not inflater.eof:
            raise BadEncoding("Content-Encoding: gzip but the gzip body is cut short")
        out.append(piece)
        data = inflater.unused_data
    return b"".join(out)


def lines(data: bytes, max_records: int) -> Iterator[tuple[int, bytes]]:
    """``(index, line)`` of each record of ``data``: each non-blank line, ``\\r\\n`` or ``\\n`` ended.

    ``index`` is the 0-based line number in the body. Raises :class:`TooManyRecords` when a record
    past ``max_records`` is reached, having held no more than that many lines.
    """
    count = 0
    for index, line in enumerate(_split(data, max_records)):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue  # blank lines (and the final newline) are not records
        count += 1
        if count > max_records:
            raise TooManyRecords(
                f"the request holds more than {max_records} records "
                "(server.max_records_per_request); split it into smaller requests"
            )
        yield index, line


def _split(data: bytes, max_lines: int) -> Iterable[bytes]:
    # bytes.split is fast but makes every line at once; past the limit, lines are made one at a time
    # so that the records limit also bounds memory.
    if data.count(b"\n") < max_lines:
        return data.split(b"\n")
    return _one_by_one(data)


def _one_by_one(data: bytes) -> Iterator[bytes]:
    """The pieces of ``data.split(b"\\n")``, one at a time."""
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        yield data[start:end]
        start = end + 1
    yield data[start:]
