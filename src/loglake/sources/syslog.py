"""Syslog receivers of ``loglake serve``: UDP and TCP listeners that append each message to a stream.

:class:`SyslogSource` is the live source of ``[syslog]`` (registered as ``syslog`` in
:data:`loglake.sources.live.REGISTRY`); :class:`SyslogReceiver` does the work and runs on its own too.

This is the receive side only: a message is cut out of the wire (one UDP datagram, or one RFC 6587
frame of a TCP connection), made into one line and appended, as bytes, to the stream named by
``[syslog] stream``. Parsing (RFC 3164 / 5424, :mod:`loglake.formats.syslog`) happens later, in
delivery, like for every other stream.

Design, and why:

* **Threads and a selector, not asyncio.** One I/O thread runs an ``epoll`` selector over the UDP
  socket, the TCP listener and every connection; one appender thread calls ``append``. A selector
  gives exact control over reads, which both backpressure and a clean stop need: a TCP connection is
  paused by unregistering it (the kernel then closes the TCP window, so the sender blocks), a UDP
  socket is drained to ``EAGAIN`` in one wake-up with ``recvmsg_into`` into one reused buffer, and
  ``stop()`` can read what the kernel already holds before closing. ``append`` blocks (fsync), so an
  asyncio loop would need a thread for it anyway, and the server's own event loop stays untouched.
* **A bounded queue between them** (``queue_messages`` and ``queue_bytes``). The appender groups
  messages: it appends when ``batch_records`` wait or ``flush_seconds`` after the first one arrived,
  so a high rate costs one fsync per batch, not per message.
* **Backpressure.** When the queue is full, or ``append`` raises :class:`StreamFullError` (the
  stream's disk budget is used up), nothing more is queued: UDP datagrams are still read but dropped
  and counted (reason ``backpressure``), TCP connections are not read at all, so their senders
  block; they are read again once an append succeeded and the queue is back to half its size. The
  batch refused by a full stream is kept and retried (with back-off, at most ``retry_after``
  apart), never dropped. Memory is bounded: the queue, one batch, and per connection one read
  chunk plus one partial message.
* **TCP framing** (RFC 6587), detected per message: a frame starting with 1-9 digits and a space is
  octet-counted (``<len> <msg>``); anything else ends at ``\\n`` or NUL. A count of 10 or more digits
  is a framing error, handled as rsyslog does: counted, and the frame is read as a newline-
  terminated one, so nothing is lost and the connection stays open.
* **Connections are bounded** (``max_connections``) **and idle ones closed**
  (``idle_timeout_seconds``): a connection silent that long is closed, and at the limit the
  longest-idle connection is closed to make room for the new one (nginx reuses idle keep-alive
  connections the same way), so idle connections cannot lock new senders out. Only a connection
  with nothing waiting in the kernel is closed (its partial message is kept), so nothing TCP
  acknowledged is lost; connections paused by backpressure are never closed (their silence is
  ours). Syslog senders reconnect: rsyslog and syslog-ng notice the close before their next
  message, ``logger`` connects per message.
* **Over-long messages are truncated** at ``max_message_bytes`` (the rest of the frame is
  discarded) and counted in ``truncated``, as rsyslog and syslog-ng do: the head of a message
  (PRI, time, host, app) is the valuable part, and dropping it whole would lose that too.
* **One record is one line.** A trailing ``\\n``, ``\\r\\n`` or NUL is removed; every other control
  character is escaped as rsyslog does by default (``#`` + three octal digits: LF -> ``#012``,
  CR -> ``#015``, TAB -> ``#011``). Empty messages are dropped and counted (reason ``empty``).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import os
import re
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from loglake.config import StreamConfig, SyslogConfig, parse_address
from loglake.errors import ConfigError
from loglake.sources.live import (
    HttpRoute,
    SourceContext,
    SourceCounters,
    Spawn,
    plain_thread,
    supervised,
)
from loglake.stream.local import EmptyRecordError, RecordTooLargeError, StreamFullError

if TYPE_CHECKING:
    from loglake.config import Config
    from loglake.sources.live import LiveSource

log = logging.getLogger(__name__)

Append = Callable[[list[bytes]], tuple[int, int]]

BATCH_RECORDS = 1_000  # messages per append at most ...
FLUSH_SECONDS = 0.02  # ... or this long after the first message of a batch arrived
QUEUE_MESSAGES = 100_000  # bounded queue between the I/O thread and the appender
QUEUE_BYTES = 64 << 20  # ... also bounded in bytes: 100,000 messages of 64 KiB would be 6 GiB
BATCH_BYTES = 8 << 20  # bytes per append at most
STOP_TIMEOUT = 10.0  # stop() gives up appending after this long when the stream stays full

_TCP_CHUNK = 256 << 10  # bytes read from a connection per wake-up (fairness between connections)
_UDP_BURST = 512  # datagrams read per wake-up before other sockets get their turn
_UDP_BUFFER = 65_536  # larger than any UDP payload (65,507 bytes over IPv4)
_UDP_RCVBUF = 4 << 20  # asked for, best effort: the kernel caps it at net.core.rmem_max
_STOP_READ_BYTES = 8 << 20  # stop() reads at most this much more from each open connection
_COUNT_DIGITS = 9  # an octet count has 1-9 digits (< 1 GB); 10 or more is a framing error
_RETRY_FIRST = 0.05  # first wait after StreamFullError; doubles up to the error's retry_after
_LOG_EVERY = 10.0  # seconds between two log lines about the same kind of append failure
_SWEEP_MAX = 5.0  # seconds between two looks for idle TCP connections, at most

# Linux reports, with each datagram, how many the kernel dropped because the socket buffer was full.
# Python does not export the option; 40 is its number in asm-generic (x86, arm, most architectures),
# not on parisc, sparc and alpha, where it is left off.
_SO_RXQ_OVFL: int | None = getattr(socket, "SO_RXQ_OVFL", None)
if _SO_RXQ_OVFL is None and sys.platform.startswith("linux"):
    _SO_RXQ_OVFL = None if os.uname().machine.startswith(("parisc", "sparc", "alpha")) else 40

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _octal(match: re.Match[bytes]) -> bytes:
    return b"#%03o" % match[0][0]


def clean_message(raw: bytes) -> bytes:
    """One message as one line: a trailing ``\\n``, ``\\r\\n`` or NUL removed, controls escaped.

    Control characters (0x00-0x1F, 0x7F) become ``#`` and three octal digits, rsyslog's default
    (``#012`` for LF), so a message with embedded newlines stays one record. Returns ``b""`` for an
    empty message.
    """
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    elif raw.endswith(b"\0"):
        raw = raw[:-1]
    if _CONTROL.search(raw) is not None:
        raw = _CONTROL.sub(_octal, raw)
    return raw


class TcpFramer:
    """Cuts the byte stream of one TCP connection into syslog messages (RFC 6587), per message.

    :meth:`feed` takes the bytes as they arrive and returns the whole messages found so far, raw
    (trailing ``\\n``/``\\r`` of octet-counted frames still there: :func:`clean_message` removes them);
    :meth:`finish` returns the partial message left when the connection ends. Never raises for bad
    input: over-long messages are truncated (``truncated`` counts them), invalid octet counts
    (``framing_errors``) are read as newline-terminated frames.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.truncated = 0
        self.framing_errors = 0
        self._buf = bytearray()
        self._want: int | None = None  # body bytes of the current octet-counted frame
        self._skip = 0  # bytes of an over-long octet-counted frame still to discard
        self._line = False  # the frame at the start of _buf is newline-terminated
        self._discard = False  # discarding an over-long line up to its terminator
        self._scanned = 0  # leading bytes of _buf known to hold no terminator (no rescans)
        self._trailer = False  # an octet-counted frame just ended: a "\n" here is its trailer

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the messages it completes, in order."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        limit = self.max_message_bytes
        end = len(buf)
        pos = 0
        scan_from = self._scanned
        # Next "\n" / NUL at or after pos, found once per feed and reused (a NUL search per message
        # would rescan the whole chunk each time); -2 = not searched yet, -1 = none left.
        nl = nul = -2
        while pos < end:
            if self._want is not None:
                want = self._want
                if end - pos < want:
                    break
                out.append(bytes(buf[pos : pos + want]))
                pos += want
                self._want = None
                self._trailer = True
                continue
            if self._skip:
                step = min(self._skip, end - pos)
                pos += step
                self._skip -= step
                continue
            if self._trailer:
                # Some senders end octet-counted frames with a newline anyway: a trailer, not an
                # empty message.
                first = buf[pos]
                if first == 0x0D and pos + 1 == end:
                    break  # "\r" of a "\r\n" trailer? The next byte tells.
                self._trailer = False
                if first in (0x0A, 0x00):
                    pos += 1
                    continue
                if first == 0x0D and buf[pos + 1] == 0x0A:
                    pos += 2
                    continue
            if not (self._line or self._discard) and 0x30 <= buf[pos] <= 0x39:
                stop = min(end, pos + _COUNT_DIGITS + 1)
                j = pos
                while j < stop and 0x30 <= buf[j] <= 0x39:
                    j += 1
                if j > pos + _COUNT_DIGITS:
                    self.framing_errors += 1  # not a count: keep the bytes as a line (rsyslog)
                elif j == end:
                    break  # the count is not complete yet
                elif buf[j] == 0x20:
                    length = int(buf[pos:j])
                    pos = j + 1
                    if length > limit:
                        self.truncated += 1
                        self._want, self._skip = limit, length - limit
                    else:
                        self._want = length
                    continue
                # else: a message that merely starts with a digit, newline-terminated
            if not self._discard:
                self._line = True
            if nl != -1 and nl < pos:
                nl = buf.find(b"\n", max(pos, scan_from))
            if nul != -1 and nul < pos:
                nul = buf.find(b"\0", max(pos, scan_from))
            term = nul if nl < 0 else nl if nul < 0 else min(nl, nul)
            if term < 0:
                if self._discard:
                    pos = end
                elif end - pos > limit:
                    out.append(bytes(buf[pos : pos + limit]))
                    self.truncated += 1
                    self._line, self._discard = False, True
                    pos = end
                break
            if self._discard:
                self._discard = False
                pos = term + 1
                continue
            self._line = False
            stop = term - 1 if term > pos and buf[term - 1] == 0x0D else term
            if stop - pos > limit:
                stop = pos + limit
                self.truncated += 1
            out.append(bytes(buf[pos:stop]))
            pos = term + 1
        del buf[:pos]
        self._scanned = len(buf) if self._line else 0
        return out

    def finish(self) -> list[bytes]:
        """The connection ended: return its partial last message, if any (rsyslog keeps it too).

        An octet-counted message cut short by the end of the connection is counted in ``truncated``.
        """
        rest = bytes(self._buf)
        want, skip, discard, trailer = self._want, self._skip, self._discard, self._trailer
        self._buf.clear()
        self._want, self._skip, self._line, self._discard, self._scanned = None, 0, False, False, 0
        self._trailer = False
        if not rest or skip or discard or (trailer and rest == b"\r"):
            return []
        if want is not None:
            self.truncated += 1
            return [rest]
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        return [rest[: self.max_message_bytes]]


@dataclass(frozen=True)
class SyslogCounters:
    """A snapshot of a receiver's counters (Vector's received / accepted / dropped model).

    ``received``: messages that reached the receiver (each UDP datagram, each TCP frame, and UDP
    datagrams the kernel dropped for a full socket buffer, which are also in ``dropped``).
    ``accepted``: messages appended to the stream. ``dropped``: reason -> count, reasons being
    ``backpressure`` (UDP while the queue or stream was full), ``empty``, ``receive_buffer`` (kernel
    UDP buffer overflow, Linux; known when the next datagram arrives), ``too_large`` (the stream
    refused the record), ``stream_error`` (append failed) and ``stopped`` (still unappended when
    ``stop()`` gave up). ``pending``: received but neither accepted nor dropped yet. Once stopped,
    ``received == accepted + dropped_total``. ``bytes``: message bytes received (before escaping).
    ``truncated``: messages cut at ``max_message_bytes`` (they are accepted). ``framing_errors``:
    invalid TCP octet counts.
    """

    received: int
    accepted: int
    dropped: dict[str, int]
    bytes: int
    truncated: int
    framing_errors: int
    connections: int  # open TCP connections
    connections_refused: int  # closed at once: max_connections reached, none could make room
    connections_idle_closed: int  # closed after idle_timeout_seconds without data
    connections_evicted: int  # closed at max_connections to make room for a new connection
    paused_connections: int  # TCP connections not read because of backpressure
    stream_full: bool  # the last append attempt found the stream full
    pending: int

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(eq=False)
class _Connection:
    """One accepted TCP connection and what was read from it but not yet queued."""

    sock: socket.socket
    peer: str
    framer: TcpFramer
    held: list[bytes] = field(default_factory=list)  # read, cleaned, waiting for queue room
    paused: bool = False
    last_read: float = field(default_factory=time.monotonic)  # when data last came (or accepted)


class SyslogReceiver:
    """UDP and TCP syslog listeners feeding one ``append`` (the stream's :meth:`LocalLog.append`).

    ``append`` is called from one thread only, the receiver's appender, with batches of non-empty
    one-line records; it must return once they are durable. The keyword arguments tune batching and
    bounds (defaults: the module constants) and exist for tests and benchmarks. The config
    checked its own values when it was built (:class:`SyslogConfig`).
    """

    def __init__(
        self,
        config: SyslogConfig,
        append: Append,
        *,
        batch_records: int = BATCH_RECORDS,
        flush_seconds: float = FLUSH_SECONDS,
        queue_messages: int = QUEUE_MESSAGES,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.config = config  # valid: SyslogConfig checks its own values when built
        self._append = append
        self._batch_records = max(1, batch_records)
        self._flush_seconds = flush_seconds
        self._queue_messages = max(1, queue_messages)
        self._queue_bytes = max(1, queue_bytes)
        self._max_connections = config.max_connections
        self._idle_timeout = config.idle_timeout_seconds
        # Idle connections are looked for this often: closed at most this late.
        self._sweep_every = min(max(self._idle_timeout / 4, 0.01), _SWEEP_MAX)
        self._next_sweep = 0.0
        self._binds = {
            kind: parse_address(value, f"syslog.{kind}")
            for kind, value in (("udp", config.udp), ("tcp", config.tcp))
            if value.strip()
        }
        # Queue shared by the two threads; everything below up to _want_resume is guarded by _cond.
        self._cond = threading.Condition()
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._first_at = 0.0  # when the oldest message of the coming batch arrived
        self._full = False  # the stream refused the last append: admit nothing until one succeeds
        self._want_resume = False  # something was refused: wake the I/O thread at low water
        self._stopping = False  # the appender drains the queue and ends
        self._abort = threading.Event()  # stop() timed out: drop what is left
        # Counters. Each is written by one thread only (I/O or appender), so no lock is needed.
        self._received = 0
        self._bytes = 0
        self._truncated = 0
        self._framing_errors = 0
        self._refused = 0
        self._idle_closed = 0
        self._evicted = 0
        self._io_dropped: collections.Counter[str] = collections.Counter()
        self._accepted = 0
        self._app_dropped: collections.Counter[str] = collections.Counter()
        self._last_log: dict[str, float] = {}
        # Sockets and threads, created by start().
        self._addresses: dict[str, tuple[str, int]] = {}
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        # Open connections, oldest first (a dict keeps insertion order: resumed in that order).
        self._conns: dict[_Connection, None] = {}
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._io_stop = False
        self._stopped = False
        self._io_thread: threading.Thread | None = None
        self._appender: threading.Thread | None = None
        self._udp_buf = bytearray(_UDP_BUFFER)
        self._udp_kernel_drops = 0  # last cumulative SO_RXQ_OVFL value seen

    # -- public API -------------------------------------------------------------------------------

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """The bound addresses, ``{"udp": (host, port), "tcp": (host, port)}``; empty before start."""
        return dict(self._addresses)

    @property
    def counters(self) -> SyslogCounters:
        """A snapshot of the counters (see :class:`SyslogCounters`); cheap, callable any time."""
        # dict() copies are atomic under the GIL; iterating the live counters could race a new key.
        dropped = collections.Counter(dict(self._io_dropped))
        dropped.update(dict(self._app_dropped))
        conns = list(self._conns)
        received, accepted = self._received, self._accepted
        return SyslogCounters(
            received=received,
            accepted=accepted,
            dropped=dict(dropped),
            bytes=self._bytes,
            truncated=self._truncated,
            framing_errors=self._framing_errors,
            connections=len(conns),
            connections_refused=self._refused,
            connections_idle_closed=self._idle_closed,
            connections_evicted=self._evicted,
            paused_connections=sum(c.paused for c in conns),
            stream_full=self._full,
            pending=received - accepted - sum(dropped.values()),
        )

    def start(self, spawn: Spawn = plain_thread) -> None:
        """Bind the listeners and start the I/O and appender threads; returns once listening.

        ``spawn`` starts the two threads (the server's supervisor in ``loglake serve``). Raises
        :class:`ConfigError` naming the address when a listener cannot bind (port in use,
        privileged port, unknown host); nothing is left open then.
        """
        if self._io_thread is not None:
            raise RuntimeError("SyslogReceiver.start() was already called")
        try:
            if "udp" in self._binds:
                self._udp = self._bind("udp", socket.SOCK_DGRAM)
            if "tcp" in self._binds:
                self._tcp = self._bind("tcp", socket.SOCK_STREAM)
        except BaseException:
            self._close_listeners()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        if self._udp is not None:
            self._selector.register(self._udp, selectors.EVENT_READ, self._read_udp)
        if self._tcp is not None:
            self._selector.register(self._tcp, selectors.EVENT_READ, self._accept)
        self._appender = spawn("loglake-syslog-append", self._run_appender)
        self._io_thread = spawn("loglake-syslog-io", self._run_io)
        log.info(
            "syslog receiver listening on %s",
            self._describe(),
            extra={
                "fields": {
                    "stream": self.config.stream,
                    **{kind: f"{host}:{port}" for kind, (host, port) in self._addresses.items()},
                }
            },
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop listening, read what the kernel already holds, append everything, close the sockets.

        Returns once every message received is appended, or dropped and counted: messages still
        unappended ``timeout`` seconds after the listeners closed (a stream that stays full) are
        dropped with reason ``stopped``. Call it before the stream's consumer stops, so that a full
        stream can still be trimmed. Idempotent; a no-op before :meth:`start`.
        """
        io_thread, appender = self._io_thread, self._appender
        if io_thread is None or appender is None or self._stopped:
            return
        self._stopped = True
        self._io_stop = True
        self._wake()
        io_thread.join()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        appender.join(timeout)
        if appender.is_alive():
            self._abort.set()
            appender.join()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        c = self.counters
        lost = c.dropped_total - c.dropped.get("empty", 0)  # empty messages are no loss
        log.log(
            logging.WARNING if lost else logging.INFO,
            "syslog receiver stopped: %d received, %d accepted, %d dropped %s",
            c.received,
            c.accepted,
            c.dropped_total,
            c.dropped,
            extra={
                "fields": {
                    "stream": self.config.stream,
                    "received": c.received,
                    "accepted": c.accepted,
                    "dropped": dict(c.dropped),
                }
            },
        )

    # -- binding ----------------------------------------------------------------------------------

    def _bind(self, kind: str, sock_type: socket.SocketKind) -> socket.socket:
        """Bind (and for TCP listen on) the configured address of ``kind``; ConfigError if not."""
        host, port = self._binds[kind]
        key = f"syslog.{kind}"
        where = f"{kind.upper()} {getattr(self.config, kind).strip()}"
        try:
            infos = socket.getaddrinfo(host, port, type=sock_type, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ConfigError(f"cannot resolve {key} host {host!r}: {exc.strerror}") from exc
        family, _, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, sock_type, proto)
        try:
            if sock_type == socket.SOCK_STREAM:
                # Lets a restarted server bind while old connections sit in TIME_WAIT; on Linux it
                # does not allow two listeners on one port (that still fails below, as it should).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            if sock_type == socket.SOCK_STREAM:
                sock.listen(socket.SOMAXCONN)
        except OSError as exc:
            sock.close()
            hint = (
                "ports below 1024 need privileges; use e.g. 5514"
                if isinstance(exc, PermissionError)
                else "is another syslog server (rsyslog, syslog-ng) or loglake using it? "
                f'choose another port, or set {key} = "" to turn this listener off'
            )
            raise ConfigError(
                f"cannot listen for syslog on {where} ({key}): {exc.strerror}; {hint}"
            ) from exc
        sock.setblocking(False)
        if sock_type == socket.SOCK_DGRAM:
            self._tune_udp(sock)
        bound = sock.getsockname()
        self._addresses[kind] = (bound[0], bound[1])
        return sock

    def _tune_udp(self, sock: socket.socket) -> None:
        """A larger receive buffer absorbs bursts; SO_RXQ_OVFL lets us count what overflows."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
        except OSError as exc:
            log.debug("syslog UDP: cannot set SO_RCVBUF: %s", exc)
        if _SO_RXQ_OVFL is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
            except OSError as exc:
                log.debug("syslog UDP: no kernel drop counter (SO_RXQ_OVFL): %s", exc)

    def _describe(self) -> str:
        return ", ".join(f"{k.upper()} {h}:{p}" for k, (h, p) in self._addresses.items()) or "-"

    def _close_listeners(self) -> None:
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = None

    # -- the queue (both threads) -----------------------------------------------------------------

    def _has_room(self) -> bool:
        """Whether one more message may be queued (lock held)."""
        return (
            not self._full
            and len(self._queue) < self._queue_messages
            and self._queued_bytes < self._queue_bytes
        )

    def _admits(self) -> bool:
        """I/O thread, before reading a connection: is there room? If not, ask to be woken."""
        with self._cond:
            if self._has_room():
                return True
            self._want_resume = True
            return False

    def _put(self, messages: list[bytes], force: bool = False) -> int:
        """Queue a prefix of ``messages`` that fits (all with ``force``); return how many.

        When not all fit, the appender is asked (in the same locked step, so the request cannot be
        missed) to wake the I/O thread once the queue is back at low water.
        """
        with self._cond:
            was_empty = not self._queue
            taken = 0
            for message in messages:
                if not force and not self._has_room():
                    self._want_resume = True
                    break
                self._queue.append(message)
                self._queued_bytes += len(message)
                taken += 1
            if taken:
                if was_empty:
                    self._first_at = time.monotonic()
                # Wake the appender only when it has something to do now: a first message (it then
                # lingers flush_seconds) or a full batch. Not per message: that would cost a thread
                # switch per datagram.
                size = len(self._queue)
                if was_empty or size - taken < self._batch_records <= size:
                    self._cond.notify()
            return taken

    def _resume_due(self) -> bool:
        """Appender, lock held: should the I/O thread retry what it refused? (low water reached)"""
        if (
            self._want_resume
            and not self._full
            and len(self._queue) <= self._queue_messages // 2
            and self._queued_bytes <= self._queue_bytes // 2
        ):
            self._want_resume = False
            return True
        return False

    def _wake(self) -> None:
        """Wake the I/O thread (from any thread)."""
        if self._wake_w is None:
            return
        # BlockingIOError: a wake-up byte is already pending, and one is enough.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- I/O thread -------------------------------------------------------------------------------

    def _run_io(self) -> None:
        """Serve the sockets until stop(); then read what the kernel holds and close them."""
        selector = self._selector
        assert selector is not None
        while not self._io_stop:
            timeout = None
            if self._idle_timeout and self._conns:
                timeout = max(0.0, self._next_sweep - time.monotonic())
            for key, _ in selector.select(timeout):
                target: _Connection | Callable[[], object] = key.data
                try:
                    if isinstance(target, _Connection):
                        self._read_conn(target)
                    else:
                        target()
                except Exception as exc:
                    # A bug must not stop the other connections; the one that raised is closed.
                    peer = target.peer if isinstance(target, _Connection) else None
                    context = {"stream": self.config.stream, "peer": peer, "reason": repr(exc)}
                    log.exception(
                        "syslog receiver: error while serving %s",
                        key.fileobj,
                        extra={"fields": context},
                    )
                    if isinstance(target, _Connection):
                        self._close_conn(target)
            if self._idle_timeout and time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self._sweep_every
                try:
                    self._close_idle()
                except Exception as exc:  # a bug must not stop the receiver
                    log.exception(
                        "syslog receiver: error while closing idle connections",
                        extra={"fields": {"stream": self.config.stream, "reason": repr(exc)}},
                    )
        try:
            self._drain_at_stop()
        finally:
            for conn in list(self._conns):
                self._close_conn(conn)
            self._close_listeners()

    def _on_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        if not self._io_stop:
            self._resume_paused()

    def _resume_paused(self) -> None:
        """Queue what paused connections hold and read them again, oldest first, while room lasts."""
        assert self._selector is not None
        for conn in [c for c in self._conns if c.paused]:
            if conn.held:
                taken = self._put(conn.held)
                conn.held = conn.held[taken:]
                if conn.held:
                    return  # no room again; _put asked for another wake-up
            conn.paused = False
            conn.last_read = time.monotonic()  # its silence was ours, not the sender's
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _count_received(self, raw: list[bytes]) -> list[bytes]:
        """Count ``raw`` messages and return them cleaned, empty ones dropped (and counted)."""
        out = []
        size = 0
        for message in raw:
            size += len(message)
            cleaned = clean_message(message)
            if cleaned:
                out.append(cleaned)
        self._received += len(raw)
        self._bytes += size
        if len(out) < len(raw):
            self._io_dropped["empty"] += len(raw) - len(out)
        return out

    def _read_udp(self, limit: int = _UDP_BURST, force: bool = False) -> int:
        """Read up to ``limit`` datagrams (one message each); drop and count what finds no room.

        Returns the number read (fewer than ``limit`` means the socket is empty).
        """
        sock = self._udp
        assert sock is not None
        view = memoryview(self._udp_buf)
        max_bytes = self.config.max_message_bytes
        anc_size = socket.CMSG_SPACE(4) if _SO_RXQ_OVFL is not None else 0
        raw: list[bytes] = []
        kernel_drops = 0
        for _ in range(limit):
            try:
                size, ancdata, _, _ = sock.recvmsg_into([view], anc_size)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. ICMP errors queued on the socket: nothing to read
                log.debug("syslog UDP receive error: %s", exc)
                break
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(data) >= 4:
                    total = int.from_bytes(data[:4], sys.byteorder)
                    kernel_drops += (total - self._udp_kernel_drops) & 0xFFFFFFFF
                    self._udp_kernel_drops = total
            if size > max_bytes:
                size = max_bytes
                self._truncated += 1
            raw.append(bytes(view[:size]))
        if kernel_drops:
            self._received += kernel_drops
            self._io_dropped["receive_buffer"] += kernel_drops
            self._log_limited(
                "receive_buffer",
                "syslog UDP: the kernel dropped %d datagrams (socket receive buffer full); "
                "raise net.core.rmem_max or send over TCP",
                kernel_drops,
                reason="socket receive buffer full",
                dropped=kernel_drops,
            )
        messages = self._count_received(raw)
        if messages:
            taken = self._put(messages, force)
            if taken < len(messages):
                self._io_dropped["backpressure"] += len(messages) - taken
        return len(raw)

    def _accept(self) -> None:
        """Accept waiting connections (several per wake-up); at max_connections, close the
        longest-idle one to make room, or refuse the new one when none can be closed."""
        lsock, selector = self._tcp, self._selector
        assert lsock is not None and selector is not None
        for _ in range(64):
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE and the like: log it, the next wake-up tries again
                self._log_limited(
                    "accept", "syslog TCP: cannot accept a connection: %s", exc, reason=str(exc)
                )
                return
            if len(self._conns) >= self._max_connections and not self._make_room():
                sock.close()
                self._refused += 1
                self._log_limited(
                    "refused",
                    "syslog TCP: %d connections open (the limit), all busy or paused; "
                    "closed a new one from %s",
                    len(self._conns),
                    peer,
                    reason="connection limit reached",
                    peer=str(peer),
                )
                continue
            sock.setblocking(False)
            # Finds peers that vanished without a FIN (the kernel probes after its idle time).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn = _Connection(sock, str(peer), TcpFramer(self.config.max_message_bytes))
            self._conns[conn] = None
            selector.register(sock, selectors.EVENT_READ, conn)

    def _read_conn(self, conn: _Connection, force: bool = False) -> bool:
        """Read one chunk of ``conn`` and queue its messages; pause it when the queue is full.

        Returns False when the connection has ended (it is closed then) or nothing was waiting.
        """
        if not force and not self._admits():
            self._pause(conn)  # not a byte read: the kernel closes the window, the sender blocks
            return False
        try:
            data = conn.sock.recv(_TCP_CHUNK)
        except BlockingIOError:
            return False
        except OSError as exc:  # reset by the peer: what was read so far still counts
            log.debug("syslog TCP connection from %s failed: %s", conn.peer, exc)
            data = b""
        if data:
            conn.last_read = time.monotonic()
        framer = conn.framer
        raw = framer.feed(data) if data else framer.finish()
        if framer.truncated or framer.framing_errors:
            if framer.framing_errors:
                self._log_limited(
                    "framing",
                    "syslog TCP from %s: invalid octet count; frame read as newline-terminated",
                    conn.peer,
                    reason="invalid octet count",
                    peer=conn.peer,
                )
            self._truncated += framer.truncated
            self._framing_errors += framer.framing_errors
            framer.truncated = framer.framing_errors = 0
        messages = self._count_received(raw)
        if not data:
            self._put(messages, force=True)  # at most one partial message
            self._close_conn(conn)
            return False
        if messages:
            taken = self._put(messages, force)
            if taken < len(messages):
                conn.held = messages[taken:]
                self._pause(conn)
        return True

    def _make_room(self) -> bool:
        """At max_connections: close the longest-idle connection that has nothing waiting.

        Returns False when none can be closed: every connection is paused by backpressure (their
        senders wait for us), or the few longest-idle ones all have data waiting (it is read on the
        next wake-up).
        """
        now = time.monotonic()
        candidates = (c for c in self._conns if not c.paused)
        for conn in heapq.nsmallest(8, candidates, key=lambda c: c.last_read):
            outcome = self._close_if_quiet(conn)
            if outcome == "ended":  # the sender had gone: room without closing anyone
                return True
            if outcome == "closed":
                self._evicted += 1
                self._log_limited(
                    "evicted",
                    "syslog TCP: %d connections open (syslog.max_connections); closed the "
                    "longest-idle one, from %s (idle %.0f s), to make room for a new sender",
                    len(self._conns) + 1,
                    conn.peer,
                    now - conn.last_read,
                    reason="connection limit reached",
                    peer=conn.peer,
                )
                return True
        return False

    def _close_idle(self) -> None:
        """Close connections without data for idle_timeout_seconds (paused ones excepted)."""
        deadline = time.monotonic() - self._idle_timeout
        for conn in [c for c in self._conns if not c.paused and c.last_read <= deadline]:
            if self._close_if_quiet(conn) == "closed":
                self._idle_closed += 1
                log.debug(
                    "syslog TCP connection from %s closed: idle for %g s",
                    conn.peer,
                    self._idle_timeout,
                    extra={"fields": {"stream": self.config.stream, "peer": conn.peer}},
                )

    def _close_if_quiet(self, conn: _Connection) -> str:
        """Close ``conn`` unless data is waiting on it, keeping its partial message: ``"closed"``;
        ``"busy"`` when data is waiting (left open, read on the next wake-up); ``"ended"`` when the
        peer had closed it (finished as usual).

        Closing a socket with unread data would reset the connection and lose what TCP already
        acknowledged.
        """
        try:
            waiting = conn.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            waiting = None
        except OSError:
            waiting = b""  # reset: _read_conn finishes it
        if waiting:
            return "busy"
        if waiting == b"":
            self._read_conn(conn, force=True)  # what the peer sent is taken, then it is closed
            return "ended"
        self._put(self._count_received(conn.framer.finish()), force=True)  # one message at most
        self._close_conn(conn)
        return "closed"

    def _pause(self, conn: _Connection) -> None:
        if not conn.paused:
            assert self._selector is not None
            self._selector.unregister(conn.sock)
            conn.paused = True

    def _close_conn(self, conn: _Connection) -> None:
        if conn not in self._conns:
            return
        del self._conns[conn]
        if not conn.paused and self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):  # already unregistered
                self._selector.unregister(conn.sock)
        conn.sock.close()

    def _drain_at_stop(self) -> None:
        """Before closing: take waiting connections and datagrams the kernel already acknowledged.

        Bounded: each connection is read up to ``_STOP_READ_BYTES`` (a sender that keeps sending
        could otherwise keep us here); paused connections are not read, but what they hold is queued.
        """
        if self._tcp is not None:
            self._max_connections = max(self._max_connections, len(self._conns) + 64)
            self._accept()
        if self._udp is not None:
            while self._read_udp(_UDP_BURST, force=True) == _UDP_BURST:
                pass
        for conn in list(self._conns):
            if conn.paused:
                self._put(conn.held, force=True)
                conn.held = []
                continue
            read = 0
            while read < _STOP_READ_BYTES and self._read_conn(conn, force=True):
                read += _TCP_CHUNK
            if conn in self._conns:  # still open: its partial message will not be completed
                self._put(self._count_received(conn.framer.finish()), force=True)

    # -- appender thread --------------------------------------------------------------------------

    def _run_appender(self) -> None:
        """Take batches off the queue and append them, until stop() and the queue is empty."""
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                if not self._stopping and len(self._queue) < self._batch_records:
                    deadline = self._first_at + self._flush_seconds
                    while not self._stopping and len(self._queue) < self._batch_records:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                batch: list[bytes] = []
                size = 0
                while self._queue and len(batch) < self._batch_records and size < BATCH_BYTES:
                    message = self._queue.popleft()
                    batch.append(message)
                    size += len(message)
                self._queued_bytes -= size
                if self._queue:
                    self._first_at = time.monotonic()
                wake = self._resume_due()
            if wake:
                self._wake()
            if self._abort.is_set():
                self._app_dropped["stopped"] += len(batch)
                continue
            self._deliver(batch)

    def _deliver(self, batch: list[bytes]) -> None:
        """Append ``batch``; retry while the stream is full; count what cannot be appended.

        A full stream may have room for part of the batch (or the batch may exceed its whole
        budget), so after a refusal the next try appends half as much, down to one record; only a
        refused single record waits (doubling from 50 ms up to the error's ``retry_after``).
        """
        i, count, delay = 0, len(batch), _RETRY_FIRST
        while i < len(batch):
            part = batch[i : i + count]
            try:
                self._append(part)
            except StreamFullError as exc:
                with self._cond:
                    self._full = True  # admit nothing more until an append succeeds
                if count > 1:
                    count = max(1, count // 2)
                    continue
                if self._abort.is_set():
                    self._app_dropped["stopped"] += len(batch) - i
                    return
                self._log_limited(
                    "full", "syslog: stream full, waiting for room: %s", exc, reason=str(exc)
                )
                self._abort.wait(min(delay, max(exc.retry_after, _RETRY_FIRST)))
                delay = min(delay * 2, max(exc.retry_after, _RETRY_FIRST))
                continue
            except (RecordTooLargeError, EmptyRecordError) as exc:
                if count > 1:
                    count = 1  # find the refused record(s) one by one
                    continue
                self._app_dropped["too_large"] += 1
                self._log_limited(
                    "too_large", "syslog: stream refused a message: %s", exc, reason=str(exc)
                )
                i += 1
                count = len(batch) - i
                continue
            except Exception as exc:
                # The stream cannot take anything (closed, I/O error): count, log, keep serving.
                self._app_dropped["stream_error"] += len(batch) - i
                self._log_limited(
                    "stream_error",
                    "syslog: append failed, messages dropped: %s",
                    exc,
                    reason=str(exc),
                    dropped=len(batch) - i,
                )
                return
            self._accepted += len(part)
            i += len(part)
            count, delay = len(batch) - i, _RETRY_FIRST
            if self._full:
                with self._cond:
                    self._full = False
                    wake = self._resume_due()
                if wake:
                    self._wake()

    def _log_limited(
        self, kind: str, message: str, *args: object, reason: str, **fields: object
    ) -> None:
        """Log a warning at most every ``_LOG_EVERY`` seconds per ``kind`` (counters have the rest).

        The event carries the stream, ``kind``, ``reason`` and ``fields`` as structured fields.
        """
        now = time.monotonic()
        if now - self._last_log.get(kind, -_LOG_EVERY) >= _LOG_EVERY:
            self._last_log[kind] = now
            context = {"stream": self.config.stream, "kind": kind, "reason": reason, **fields}
            log.warning(message, *args, extra={"fields": context})


def sources(config: Config) -> list[LiveSource]:
    """The ``[syslog]`` receiver, unless both of its listeners are turned off (``udp = ""`` and
    ``tcp = ""``)."""
    cfg = config.syslog
    return [SyslogSource(cfg)] if cfg.udp or cfg.tcp else []


class SyslogSource:
    """``[syslog]`` as a live source: a :class:`SyslogReceiver` feeding ``[syslog] stream``.

    The stream is created (format ``syslog``, table ``logs.syslog``) when no ``[streams.NAME]``
    declares it. With the zero-config defaults, ports another daemon holds are a warning and the
    server runs without syslog; addresses set in the config must bind. Its threads run under the
    server's supervisor, not restarted (a crash leaves /readyz at 503). Counters: the receiver's,
    with its protocol's own in ``extra`` (``bytes``, ``truncated``, ``framing_errors``,
    ``connections_*``) and ``gauges`` (open and paused ``connections``, ``pending`` messages).
    """

    name = "syslog"

    def __init__(self, config: SyslogConfig) -> None:
        self.config = config
        self.receiver: SyslogReceiver | None = None

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """The bound addresses (empty when not running)."""
        return self.receiver.addresses if self.receiver is not None else {}

    def start(self, context: SourceContext) -> None:
        cfg = self.config
        context.streams.ensure(cfg.stream, StreamConfig(format="syslog", table="logs.syslog"))
        receiver = SyslogReceiver(cfg, partial(context.streams.append, cfg.stream))
        try:
            receiver.start(supervised(context.supervisor, restart=False))
        except ConfigError as exc:
            if cfg == SyslogConfig():
                # Zero-config default ports taken (another syslog daemon, another loglake): run
                # without syslog rather than refuse to start; configured addresses must bind.
                log.warning(
                    "syslog receiver not started: %s (set [syslog] to choose ports)",
                    exc,
                    extra={"fields": {"stream": cfg.stream, "reason": str(exc)}},
                )
                return
            raise
        self.receiver = receiver

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()

    def counters(self) -> Mapping[str, SourceCounters]:
        if self.receiver is None:
            return {}
        c = self.receiver.counters
        return {
            self.config.stream: SourceCounters(
                received=c.received,
                accepted=c.accepted,
                dropped=dict(c.dropped),
                extra={
                    "bytes": c.bytes,
                    "truncated": c.truncated,
                    "framing_errors": c.framing_errors,
                    "connections_refused": c.connections_refused,
                    "connections_idle_closed": c.connections_idle_closed,
                    "connections_evicted": c.connections_evicted,
                },
                gauges={
                    "connections": c.connections,
                    "paused_connections": c.paused_connections,
                    "pending": c.pending,
                },
            )
        }

    def health(self) -> list[str]:
        return []  # its threads' crashes are the supervisor's to report

    def routes(self) -> list[HttpRoute]:
        return []

    def feeds(self) -> list[str]:
        return [self.config.stream] if self.receiver is not None else []
