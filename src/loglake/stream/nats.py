"""A stream's log on NATS JetStream: the durable stream of several loglake nodes.

The same contract as :class:`loglake.stream.local.LocalLog` (append once durable, read in offset
order, trim what every consumer committed), kept by a JetStream stream instead of local segment
files, so that any node can accept a record and any node can deliver it:

- **Append.** One append is one JetStream message (split in several when it exceeds the server's
  ``max_payload``), its body laid out like a local frame's: ``count`` u32 lengths, then the payloads.
  The call returns once JetStream has stored the message (its PubAck; with ``replicas = 3``, once a
  quorum has it). Each message carries a ``Nats-Msg-Id``; a publish that timed out is sent again
  with the same id, so JetStream's duplicate window keeps a retry from being stored twice.
- **Offsets.** A record's offset is ``stream sequence << 20 | index in its message``: increasing,
  unique, and the position a consumer commits into the Iceberg snapshot, as with the local log.
  Offsets are not dense (a read's :attr:`Records.offsets` gives each record's), so counts of records
  behind are estimates (:meth:`NatsLog.backlog`).
- **Reads.** Sequential reads go through a durable pull consumer (no acks: the lake's commit is
  the truth, JetStream the buffer); a read from another position moves the consumer there (a new
  owner resuming from the offset in the lake). :meth:`NatsLog.read_at` fetches one record by its
  offset with a direct get.
- **Retention.** Limits (``max_bytes`` with discard-new: a full stream refuses appends, 503 +
  Retry-After), and :meth:`NatsLog.trim` purges the messages every consumer has committed past.

nats-py is asynchronous; every NatsLog of a process shares one connection, served by an event loop
in a thread of its own (:class:`NatsClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa

from loglake.stream.local import (
    EmptyRecordError,
    Records,
    RecordTooLargeError,
    StreamError,
    StreamFullError,
    StreamLimits,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.api import RawStreamMsg

    from loglake.config.streams import StreamBackendConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

INDEX_BITS = 20  # a record's offset: sequence << INDEX_BITS | its index in the message
_MASK = (1 << INDEX_BITS) - 1
MAX_RECORDS_PER_MESSAGE = _MASK  # an append of more records is split into several messages
INACTIVE_CONSUMER_S = 86400.0  # a durable consumer unused this long is removed by JetStream
FETCH_MESSAGES = 256  # messages asked for per pull request
_INFO_TTL_S = 0.5  # stream info (first and last sequence) is cached this long
_PUBLISH_ATTEMPTS = 3  # a publish that timed out is sent again (same Nats-Msg-Id) this often
_API_TIMEOUT_S = 10.0
OPEN_WAIT_S = 120.0  # how long opening a stream waits for JetStream to answer (a cluster starting)
#: JetStream's error code for "maximum bytes exceeded" (a stream at its limit, discard new).
_FULL_CODES = {10047, 10077, 10078}
FORMAT_HEADER = "Loglake-Batch"  # marks a message of packed records (value: the layout's version)


class StreamUnavailableError(StreamError):
    """NATS did not answer in time (a server down, a leader election): nothing of the append
    was acknowledged; the client retries after ``retry_after`` seconds (HTTP 503)."""

    status = 503
    code = "stream_unavailable"
    transient = True
    retry_after: float = 1.0


def _unpack(msg: Msg | RawStreamMsg) -> tuple[np.ndarray, memoryview]:
    """The record lengths and payload bytes of a message.

    A message loglake wrote (header :data:`FORMAT_HEADER`) holds ``<u32 count><count u32
    lengths><payloads>``; any other message on the subject (another publisher feeding the stream)
    is one record, its whole body. A loglake message whose lengths do not add up is also kept as
    one record (its raw bytes then end in ``logs.rejected``): no message can stall the stream.
    """
    body = msg.data or b""
    view = memoryview(body)
    if (msg.headers or {}).get(FORMAT_HEADER) == "1" and len(body) >= 4:
        count = int(np.frombuffer(view[:4], dtype="<u4")[0])
        if 4 * (count + 1) <= len(body):
            lengths = np.frombuffer(view[4 : 4 * (count + 1)], dtype="<u4").astype(np.int64)
            if int(lengths.sum()) == len(body) - 4 * (count + 1) and count:
                return lengths, view[4 * (count + 1) :]
    return np.array([len(body)], dtype=np.int64), view


class NatsClient:
    """One NATS connection for the process, with the event loop (a daemon thread) it runs on.

    :meth:`run` runs a coroutine on that loop from any other thread and waits for its result.
    Raises :class:`StreamError` when the servers cannot be reached at start.
    """

    def __init__(self, config: StreamBackendConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="loglake-nats", daemon=True
        )
        self._thread.start()
        try:
            self.nc: Client = self.run(self._connect(), timeout=60)
        except Exception as exc:
            self._stop_loop()
            raise StreamError(
                f"cannot connect to NATS at {', '.join(config.servers)}: {exc}; check "
                "[stream] servers and credentials in loglake.toml, and that nats-server runs "
                "with JetStream enabled (-js)"
            ) from exc
        self.js: JetStreamContext = self.nc.jetstream(timeout=_API_TIMEOUT_S)

    async def _connect(self) -> Client:
        import nats

        options: dict[str, Any] = {
            "servers": list(self.config.servers),
            "name": "loglake",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "connect_timeout": 5,
        }
        if self.config.creds_file:
            options["user_credentials"] = self.config.creds_file
        if self.config.user:
            options["user"] = self.config.user
            options["password"] = self.config.password
        if self.config.token:
            options["token"] = self.config.token
        return await nats.connect(**options)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = _API_TIMEOUT_S * 3) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    def close(self) -> None:
        """Drain and close the connection, then stop the loop. Must not raise."""
        try:
            self.run(self.nc.drain(), timeout=10)
        except Exception as exc:
            log.warning("closing the NATS connection: %s", exc)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class NatsLog:
    """The log of stream ``name`` on JetStream stream ``<prefix>_<name>`` (subject
    ``<prefix>.<name>``), created on first open with ``limits.max_bytes``, discard-new, file
    storage and ``replicas`` copies, or updated to those settings. Thread-safe for appenders; reads
    come from one consumer thread at a time (the stream's runner).

    Counters as LocalLog's: ``appends``, ``records_appended``, ``publish_retries``.
    Raises :class:`StreamError` when the stream cannot be created or reached.
    """

    def __init__(
        self,
        client: NatsClient,
        name: str,
        limits: StreamLimits | None = None,
        consumer: str = "lake",
    ) -> None:
        self.client = client
        self.name = name
        self.limits = limits or StreamLimits()
        config = client.config
        self.stream = f"{config.prefix}_{name}".replace(".", "_")
        self.subject = f"{config.prefix}.{name}"
        self.durable = f"{consumer}"
        self.appends = 0
        self.records_appended = 0
        self.publish_retries = 0
        self.lost_records = 0
        self.fsyncs = 0  # JetStream syncs on its own schedule; kept for LocalLog's metrics
        self.fsync_seconds: deque[float] = deque(maxlen=1)
        self.recovered_bytes_dropped = 0
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._sub: Any = None  # the pull subscription, bound to the durable consumer
        self._cursor: int | None = None  # the offset the next sequential read starts at
        self._buffer: deque[Msg] = deque()  # fetched messages not yet read
        self._info: tuple[float, int, int, int] = (0.0, 1, 0, 0)  # at, first, last, bytes
        self._per_message = 1.0  # mean records per message seen (for backlog estimates)
        self._closed = False
        self._opened = time.time()
        self.client.run(self._ensure_stream(), timeout=OPEN_WAIT_S + 60)

    # -- the JetStream stream ---------------------------------------------------------------------

    async def _ensure_stream(self) -> None:
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        config = self.client.config
        wanted = StreamConfig(
            name=self.stream,
            subjects=[self.subject],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.NEW,
            max_bytes=self.limits.max_bytes,
            max_msg_size=-1,
            storage=StorageType.FILE,
            num_replicas=config.replicas,
            duplicate_window=config.duplicate_window_seconds,
        )
        import nats.errors
        from nats.js.errors import ServiceUnavailableError

        js = self.client.js
        deadline = time.monotonic() + OPEN_WAIT_S
        attempt = 0
        while True:
            try:
                try:
                    await js.stream_info(self.stream)
                except NotFoundError:
                    await js.add_stream(wanted)
                else:
                    await js.update_stream(wanted)
                return
            except (nats.errors.TimeoutError, ServiceUnavailableError) as exc:
                # A JetStream cluster that has just started answers nothing (or 503) until it
                # has elected its leaders: wait for it, within OPEN_WAIT_S.
                if time.monotonic() > deadline:
                    raise StreamError(
                        f"JetStream did not answer for {OPEN_WAIT_S:g} s while opening stream "
                        f"{self.stream}: {exc!r}; check that nats-server runs with JetStream "
                        f"and that replicas = {config.replicas} is at most the cluster's size"
                    ) from exc
                attempt += 1
                await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
            except Exception as exc:
                raise StreamError(
                    f"cannot create JetStream stream {self.stream}: {exc}; check that JetStream "
                    f"is enabled and that replicas = {config.replicas} is at most the cluster's "
                    "size"
                ) from exc

    def _stream_info(self, fresh: bool = False) -> tuple[int, int, int]:
        """(first sequence, last sequence, bytes), cached for a moment unless ``fresh``."""
        at, first, last, size = self._info
        if fresh or time.monotonic() - at > _INFO_TTL_S:
            info = self.client.run(self.client.js.stream_info(self.stream))
            state = info.state
            first, last, size = int(state.first_seq), int(state.last_seq), int(state.bytes)
            self._info = (time.monotonic(), first, last, size)
        return first, last, size

    # -- offsets ------------------------------------------------------------------------------------

    @property
    def start_offset(self) -> int:
        """The offset of the first record still in the stream."""
        return self._stream_info()[0] << INDEX_BITS

    @property
    def next_offset(self) -> int:
        """Past the last stored record: where records appended now will be."""
        return (self._stream_info()[1] + 1) << INDEX_BITS

    durable_offset = next_offset  # every stored record is readable

    @property
    def size_bytes(self) -> int:
        return self._stream_info()[2]

    @property
    def created(self) -> float:
        """When this process opened the stream (JetStream keeps its own creation time)."""
        return self._opened

    @property
    def path(self) -> str:
        """Where the log is, for messages: the JetStream stream."""
        return f"JetStream stream {self.stream}"

    @property
    def lost_ranges(self) -> list[tuple[int, int]]:
        return []  # JetStream keeps its own replicas; damage is the server's to report

    def backlog(self, position: int) -> int:
        """About how many records follow ``position`` (messages after it × records per message)."""
        first, last, _ = self._stream_info()
        seq = max(position >> INDEX_BITS, first)
        return max(0, int((last - seq + 1) * self._per_message) - (position & _MASK))

    # -- appending ------------------------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> tuple[int, int]:
        """Append ``records``; return ``(first offset, offset after the last)`` once JetStream
        stored them. Raises RecordTooLargeError, EmptyRecordError, StreamFullError (the stream is
        at ``max_bytes``: retry later) before publishing anything, StreamError when NATS does not
        answer (nothing acknowledged: the client retries)."""
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
        return self.append_packed(b"".join(records), lengths)

    def append_packed(self, data: bytes, lengths: np.ndarray) -> tuple[int, int]:
        """:meth:`append` for records laid end to end in ``data``, ``lengths[i]`` bytes each:
        each message's body is its slice of ``data`` behind a header of its lengths (no Python
        object per record). ``lengths`` must add up to ``len(data)`` (else ValueError)."""
        count = len(lengths)
        if count == 0:
            nxt = self.next_offset
            return nxt, nxt
        lengths = np.asarray(lengths, dtype=np.int64)
        ends = np.cumsum(lengths)
        if int(ends[-1]) != len(data):
            raise ValueError("lengths do not add up to the data")
        limit = min(self.limits.max_record_bytes, self.client.max_payload - 64)
        longest = int(lengths.max())
        if longest > limit:
            raise RecordTooLargeError(
                f"record of {longest} bytes exceeds the stream's limit ({limit} bytes: "
                "max_record_bytes and the NATS server's max_payload); split it or raise the limit"
            )
        if int(lengths.min()) == 0:
            raise EmptyRecordError("empty records cannot be appended to the stream; drop them")
        view = memoryview(data)
        first = last = 0
        for i, (lo, hi) in enumerate(self._chunks(lengths)):
            start = int(ends[lo - 1]) if lo else 0
            head = np.empty(hi - lo + 1, dtype="<u4")
            head[0] = hi - lo
            head[1:] = lengths[lo:hi]
            body = head.tobytes() + bytes(view[start : int(ends[hi - 1])])
            seq = self.client.run(self._publish(body))
            if i == 0:
                first = seq << INDEX_BITS
            last = (seq << INDEX_BITS) + hi - lo
        with self._lock:
            self.appends += 1
            self.records_appended += count
        return first, last

    def _chunks(self, lengths: np.ndarray) -> list[tuple[int, int]]:
        """Record ranges ``[lo, hi)`` whose messages stay below the server's max_payload and
        MAX_RECORDS_PER_MESSAGE (every record fits alone: checked before)."""
        budget = self.client.max_payload - 64
        cost = np.cumsum(lengths + 4)  # bytes of records 0..i, lengths included
        chunks: list[tuple[int, int]] = []
        lo, before = 0, 0  # before: the cost of the records in earlier messages
        while lo < len(lengths):
            # A message is its u32 count and the records' cost: at most the budget.
            hi = int(np.searchsorted(cost, before + budget - 4, side="right"))
            hi = max(lo + 1, min(hi, lo + MAX_RECORDS_PER_MESSAGE))
            chunks.append((lo, hi))
            before = int(cost[hi - 1])
            lo = hi
        return chunks

    async def _publish(self, body: bytes) -> int:
        """Publish one message and return its sequence once stored; retries a timeout with the
        same Nats-Msg-Id (a duplicate inside the window is answered with the first's sequence)."""
        import nats.errors
        from nats.js.errors import APIError, NoStreamResponseError

        msg_id = uuid.uuid4().hex
        for attempt in range(_PUBLISH_ATTEMPTS):
            try:
                ack = await self.client.js.publish(
                    self.subject,
                    body,
                    timeout=_API_TIMEOUT_S,
                    stream=self.stream,
                    headers={"Nats-Msg-Id": msg_id, FORMAT_HEADER: "1"},
                )
                return int(ack.seq)
            except APIError as exc:
                if exc.err_code in _FULL_CODES or "maximum bytes" in str(exc.description):
                    raise StreamFullError(
                        f"stream {self.name} is full (JetStream stream {self.stream} holds "
                        f"max_bytes = {self.limits.max_bytes}); delivery frees space as it commits"
                    ) from exc
                if exc.code == 503:  # no quorum right now (a leader election): retry
                    raise StreamUnavailableError(
                        f"JetStream cannot store the append to {self.stream} now: {exc}; retry"
                    ) from exc
                raise StreamError(f"JetStream refused the append to {self.stream}: {exc}") from exc
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionClosedError,
                NoStreamResponseError,  # JetStream answered 503: no leader for the stream yet
            ) as exc:
                self.publish_retries += 1
                if attempt + 1 == _PUBLISH_ATTEMPTS:
                    raise StreamUnavailableError(
                        f"JetStream did not acknowledge the append to {self.stream}: {exc}; "
                        "nothing was acknowledged, retry"
                    ) from exc
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    # -- reading --------------------------------------------------------------------------------

    def wait(self, offset: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a record at or after ``offset``; True if one is."""
        with self._read_lock:
            self._position(offset)
            if not self._buffer:
                self._fetch(timeout)
            return bool(self._buffer)

    def read_records(
        self, offset: int, max_records: int = 10_000, max_bytes: int = 8 << 20
    ) -> Records:
        """Records from ``offset`` on (whole messages, the first from the record ``offset``
        names), up to ``max_records`` and ``max_bytes`` (at least one message's records when
        any). Empty when none is stored yet. Offsets trimmed away are skipped to the first stored."""
        with self._read_lock:
            self._position(offset)
            if not self._buffer:
                self._fetch(0.05)
            return self._take(offset, max_records, max_bytes)

    def read_at(self, offset: int) -> bytes:
        """The payload of the record at ``offset`` (a direct get; the read position stays)."""
        msg = self.client.run(self.client.js.get_msg(self.stream, offset >> INDEX_BITS))
        lengths, data = _unpack(msg)
        index = offset & _MASK
        start = int(lengths[:index].sum())
        return bytes(data[start : start + int(lengths[index])])

    def _position(self, offset: int) -> None:
        """Make the durable consumer deliver from ``offset``'s message, unless it already does."""
        if self._cursor is not None and offset == self._cursor:
            return
        seq = max(offset >> INDEX_BITS, 1)
        self._buffer.clear()
        self._sub = self.client.run(self._bind(seq))
        self._cursor = offset

    async def _bind(self, seq: int) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        js = self.client.js
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the old subscription is dropped either way
                await self._sub.unsubscribe()
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(self.stream, self.durable)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=seq,
            max_waiting=16,
            # A node that never comes back leaves its consumer behind: JetStream drops it then.
            inactive_threshold=INACTIVE_CONSUMER_S,
        )
        await js.add_consumer(self.stream, config)
        return await js.pull_subscribe_bind(self.durable, self.stream)

    def _fetch(self, timeout: float) -> None:
        import nats.errors

        try:
            msgs = self.client.run(self._sub.fetch(FETCH_MESSAGES, timeout=max(timeout, 0.01)))
        except (TimeoutError, nats.errors.TimeoutError):
            # No message before the pull expired (nats-py raises either, depending on where in
            # the fetch the deadline passed).
            return
        except Exception as exc:
            raise StreamError(f"reading JetStream stream {self.stream} failed: {exc}") from exc
        self._buffer.extend(msgs)

    def _take(self, offset: int, max_records: int, max_bytes: int) -> Records:
        want_seq, skip = offset >> INDEX_BITS, offset & _MASK
        lengths_parts: list[np.ndarray] = []
        data_parts: list[bytes] = []
        offset_parts: list[np.ndarray] = []
        taken = 0
        budget = max_bytes
        end = offset
        while self._buffer and taken < max_records:
            msg = self._buffer[0]
            seq = int(msg.metadata.sequence.stream)
            if seq < want_seq:
                self._buffer.popleft()  # before the position (delivered again)
                continue
            if seq > want_seq:
                if want_seq >= self._stream_info(fresh=True)[0]:
                    # A gap the server should not leave (a pull response lost in a reconnect):
                    # deliver again from the position.
                    self._buffer.clear()
                    self._sub = self.client.run(self._bind(want_seq))
                    break
                skip = 0  # trimmed before it was read: go on from what is stored
            lengths, data = _unpack(msg)
            count = len(lengths)
            self._per_message = 0.9 * self._per_message + 0.1 * count
            if skip >= count:
                self._buffer.popleft()
                end = (seq + 1) << INDEX_BITS
                want_seq, skip = seq + 1, 0
                continue
            ends = np.cumsum(lengths)
            head = int(ends[skip - 1]) if skip else 0
            sizes = ends[skip:] - head  # bytes of the records from ``skip`` on, cumulative
            n = min(count - skip, max_records - taken)
            n = min(n, max(1 if not taken else 0, int(np.searchsorted(sizes, budget, "right"))))
            if n == 0:
                break
            data_parts.append(bytes(data[head : head + int(sizes[n - 1])]))
            lengths_parts.append(lengths[skip : skip + n])
            offset_parts.append((seq << INDEX_BITS) + skip + np.arange(n, dtype=np.int64))
            taken += n
            budget -= int(sizes[n - 1])
            if skip + n < count:
                end = (seq << INDEX_BITS) + skip + n
                break
            self._buffer.popleft()
            end = (seq + 1) << INDEX_BITS
            want_seq, skip = seq + 1, 0
        self._cursor = end
        if not taken:
            return Records(end, pa.array([], type=pa.large_binary()), next=end)
        lengths_all = np.concatenate(lengths_parts)
        bounds = np.zeros(len(lengths_all) + 1, dtype=np.int64)
        np.cumsum(lengths_all, out=bounds[1:])
        values = pa.Array.from_buffers(
            pa.large_binary(),
            len(lengths_all),
            [None, pa.py_buffer(bounds), pa.py_buffer(b"".join(data_parts))],
        )
        offsets = np.concatenate(offset_parts)
        return Records(int(offsets[0]), values, offsets=offsets, next=end)

    # -- trimming and closing -------------------------------------------------------------------

    def trim(self, before: int) -> int:
        """Purge the messages wholly before offset ``before`` (every consumer committed past
        them); returns how many went."""
        seq = before >> INDEX_BITS
        first = self._stream_info()[0]
        if seq <= first:
            return 0
        self.client.run(self.client.js.purge_stream(self.stream, seq=seq))
        self._stream_info(fresh=True)
        return seq - first

    def close(self) -> None:
        """Stop reading (the durable consumer stays, for the next owner). Must not raise."""
        self._closed = True
        if self._sub is not None:
            try:
                self.client.run(self._sub.unsubscribe(), timeout=5)
            except Exception as exc:
                log.warning("stream %s: unsubscribing failed: %s", self.name, exc)
