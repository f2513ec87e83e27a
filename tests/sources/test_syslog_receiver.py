"""The syslog receiver over real sockets: util-linux ``logger``, raw TCP/UDP clients, a real LocalLog.

Every test starts a :class:`SyslogReceiver` on free loopback ports (port 0) whose ``append`` is the
``append`` of a :class:`LocalLog` in ``tmp_path`` (``fsync=False``: durability is LocalLog's own
tests' business), then reads the log back and parses the records with loglake's syslog format.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from loglake.config import SyslogConfig, load_config
from loglake.errors import ConfigError
from loglake.formats import get_format
from loglake.formats.lines import line_batch
from loglake.sources.syslog import SyslogReceiver, TcpFramer, clean_message, parse_address
from loglake.stream.local import LocalLog, StreamLimits
from waiting import wait_for

LOGGER = shutil.which("logger")
needs_logger = pytest.mark.skipif(LOGGER is None, reason="util-linux logger is not installed")
HOST = socket.gethostname().split(".")[0]  # logger writes the short host name
BSD = b"<13>Nov 25 01:50:31 web1 app: "  # an RFC 3164 header for hand-made messages


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def stream_log(tmp_path: Path) -> Iterator[LocalLog]:
    with LocalLog(tmp_path / "stream", fsync=False) as log:
        yield log


_CONFIG_KEYS = ("max_message_bytes", "max_connections", "idle_timeout_seconds")


@contextlib.contextmanager
def running(
    log: LocalLog, udp: str = "127.0.0.1:0", tcp: str = "127.0.0.1:0", **options: Any
) -> Iterator[SyslogReceiver]:
    """A started receiver appending to ``log``; stopped (and so flushed) when the block ends.

    ``options`` are SyslogConfig settings (``max_message_bytes``, ``max_connections``,
    ``idle_timeout_seconds``) and SyslogReceiver keyword arguments.
    """
    settings = {k: options.pop(k) for k in _CONFIG_KEYS if k in options}
    config = SyslogConfig(udp=udp, tcp=tcp, **{"max_message_bytes": 65536, **settings})
    receiver = SyslogReceiver(config, log.append, **options)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def records(log: LocalLog) -> list[bytes]:
    """Every record of ``log``, in offset order."""
    out: list[bytes] = []
    offset = log.start_offset
    while batch := log.read(offset, max_records=100_000, max_bytes=64 << 20):
        out.extend(payload for _, payload in batch)
        offset = batch[-1][0] + 1
    return out


def parse(lines: list[bytes]) -> pl.DataFrame:
    """Parse records with the syslog format, as delivery will; every one must parse."""
    result = get_format("syslog").parse(line_batch(b"\n".join(lines), 1, "test"))
    assert result.rejected.height == 0, result.rejected
    return result.parsed


def logger(*args: str) -> None:
    """Run logger; without a message it reads stdin, so its stdin is a line of text."""
    assert LOGGER is not None
    subprocess.run(
        [LOGGER, *args], input=b"from stdin\n", check=True, timeout=10, capture_output=True
    )


def send_udp(address: tuple[str, int], messages: list[bytes], pace: int = 100) -> None:
    """Send datagrams, pausing every ``pace`` so a loopback burst cannot overrun the socket buffer."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for i, message in enumerate(messages, 1):
            sock.sendto(message, address)
            if i % pace == 0:
                time.sleep(0.002)


def send_tcp(address: tuple[str, int], data: bytes) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)


def settled(receiver: SyslogReceiver, received: int) -> Callable[[], bool]:
    """True once ``received`` messages arrived and each was appended or dropped."""

    def check() -> bool:
        c = receiver.counters
        return c.received >= received and c.pending == 0

    return check


# -- real clients ---------------------------------------------------------------------------------


@needs_logger
def test_logger_udp_rfc3164(stream_log: LocalLog) -> None:
    with running(stream_log, tcp="") as receiver:
        _, port = receiver.addresses["udp"]
        logger("--udp", "--server", "127.0.0.1", "--port", str(port), "--rfc3164", "-i")
        logger("--udp", "-n", "127.0.0.1", "-P", str(port), "--rfc3164", "-t", "myapp", "hello udp")
        wait_for(settled(receiver, 2), what="two datagrams")
    got = records(stream_log)
    assert len(got) == 2
    assert parse(got[:1]).get_column("pid")[0] is not None  # -i: logger's PID in the tag
    row = parse(got[1:]).row(0, named=True)
    assert got[1].endswith(f" {HOST} myapp: hello udp".encode())
    assert (row["host"], row["app"], row["message"]) == (HOST, "myapp", "hello udp")
    assert (row["facility"], row["severity"]) == ("user", "notice")
    c = receiver.counters
    assert (c.received, c.accepted, c.dropped) == (2, 2, {})
    assert "tcp" not in receiver.addresses


@needs_logger
def test_logger_tcp_rfc5424_newline_framing(stream_log: LocalLog) -> None:
    with running(stream_log, udp="") as receiver:
        _, port = receiver.addresses["tcp"]
        # Without --octet-count, logger ends each message with "\n" (non-transparent framing).
        logger(
            *("--tcp", "--server", "127.0.0.1", "--port", str(port), "--rfc5424=notq"),
            *("-t", "myapp", "--msgid", "ID47", "-p", "local3.warning"),
            *("--sd-id", "exampleSDID@32473", "--sd-param", 'iut="3"', "hello tcp 5424"),
        )
        wait_for(settled(receiver, 1), what="one message")
    (record,) = records(stream_log)
    assert not record.endswith(b"\n")
    row = parse([record]).row(0, named=True)
    assert record.startswith(b"<156>1 ")
    assert (row["host"], row["app"], row["msgid"]) == (HOST, "myapp", "ID47")
    assert row["structured_data"] == '[exampleSDID@32473 iut="3"]'
    assert (row["message"], row["facility"], row["severity"]) == (
        "hello tcp 5424",
        "local3",
        "warning",
    )


@needs_logger
def test_logger_tcp_octet_counting(stream_log: LocalLog, tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("first line\nsecond line\nthird line\n")
    with running(stream_log, udp="") as receiver:
        _, port = receiver.addresses["tcp"]
        logger(
            *("--tcp", "-n", "127.0.0.1", "-P", str(port), "--octet-count", "-t", "myapp"),
            *("--rfc5424", "--sd-id", "origin@32473", "--sd-param", 'software="loglake-test"'),
            *("-f", str(lines)),
        )
        logger(
            *("--tcp", "-n", "127.0.0.1", "-P", str(port), "--octet-count", "--rfc3164"),
            *("-t", "myapp", "bsd over octet counting"),
        )
        wait_for(settled(receiver, 4), what="four messages")
    got = records(stream_log)
    parsed = parse(got)
    assert parsed.get_column("message").to_list() == [
        "first line",
        "second line",
        "third line",
        "bsd over octet counting",
    ]
    assert set(parsed.get_column("app")) == {"myapp"}
    assert set(parsed.get_column("host")) == {HOST}
    sd = parsed.get_column("structured_data").to_list()
    assert all('[origin@32473 software="loglake-test"]' in s for s in sd[:3])
    assert sd[3] is None
    assert receiver.counters.framing_errors == 0


# -- framing --------------------------------------------------------------------------------------


def test_octet_counting_escapes_embedded_newlines(stream_log: LocalLog) -> None:
    first = BSD + b"first\nsecond\r\nthird\ttabbed"
    second = BSD + b"next frame"
    with running(stream_log, udp="") as receiver:
        data = b"%d %s%d %s" % (len(first), first, len(second), second)
        send_tcp(receiver.addresses["tcp"], data)
        wait_for(settled(receiver, 2), what="two frames")
    got = records(stream_log)
    assert got == [BSD + b"first#012second#015#012third#011tabbed", second]
    assert parse(got).get_column("message").to_list() == [
        "first#012second#015#012third#011tabbed",
        "next frame",
    ]


def test_mixed_framings_on_one_connection(stream_log: LocalLog) -> None:
    """Framing is detected per message: octet-counted, LF, CRLF and NUL-terminated in one stream."""
    octet = BSD + b"octet"
    data = (
        b"%d %s" % (len(octet), octet)
        + BSD
        + b"lf\n"
        + BSD
        + b"crlf\r\n"
        + BSD
        + b"nul\0"
        + b"%d %s\n" % (len(octet), octet)  # octet-counted with a trailing LF (not a message)
        + b"2024-01-02T03:04:05Z web1 app: starts with a digit\n"
        + BSD
        + b"no terminator, the connection just ends"
    )
    with running(stream_log, udp="") as receiver:
        send_tcp(receiver.addresses["tcp"], data)
        wait_for(settled(receiver, 7), what="seven messages")
    got = records(stream_log)
    assert parse(got).get_column("message").to_list() == [
        "octet",
        "lf",
        "crlf",
        "nul",
        "octet",
        "starts with a digit",
        "no terminator, the connection just ends",
    ]
    c = receiver.counters
    assert (c.received, c.accepted, c.dropped, c.framing_errors) == (7, 7, {}, 0)


def test_framer_same_messages_whatever_the_chunking() -> None:
    data = (
        b"5 hello3 abc\r\nline one\r\n0 x\0y\n99999999999 garbage\n"
        b"25 0123456789abcdefghijklmno" + b"too long line\nok\n12"
    )
    expected = [b"hello", b"abc", b"line one", b"", b"x", b"y", b"9999999999", b"0123456789"]
    expected += [b"too long l", b"ok", b"12"]
    for step in (1, 2, 3, 7, len(data)):
        framer = TcpFramer(max_message_bytes=10)
        out: list[bytes] = []
        for i in range(0, len(data), step):
            out += framer.feed(data[i : i + step])
        out += framer.finish()
        assert out == expected, step
        assert (framer.truncated, framer.framing_errors) == (3, 1)


def test_clean_message() -> None:
    assert clean_message(b"a\nb\r\n") == b"a#012b"
    assert clean_message(b"tab\there\x00\x7f\x1b[0m\n") == b"tab#011here#000#177#033[0m"
    assert clean_message(b"nul-terminated\0") == b"nul-terminated"
    assert clean_message("ünïcode".encode()) == "ünïcode".encode()
    assert clean_message(b"\r\n") == b""


def test_garbage_connection_does_not_affect_others(stream_log: LocalLog) -> None:
    good = [BSD + b"good %d" % i for i in range(200)]
    with running(stream_log, udp="", max_message_bytes=1024) as receiver:
        address = receiver.addresses["tcp"]
        bad = socket.create_connection(address)
        bad.sendall(b"99999999999 x")  # an absurd octet count: a framing error
        bad.sendall(bytes(range(256)) * 64)  # binary: control bytes, NULs, no line structure
        with socket.create_connection(address) as other:
            other.sendall(b"".join(m + b"\n" for m in good[:100]))
            bad.sendall(b"\xff\xfe" * 10_000 + b"123456789")  # a count left open
            other.sendall(b"".join(m + b"\n" for m in good[100:]))
        bad.close()
        send_tcp(address, BSD + b"after the garbage\n")  # a new connection still works
        wait_for(lambda: receiver.counters.connections == 0, what="connections closed")
        wait_for(settled(receiver, 201), what="good messages")
    got = records(stream_log)
    assert [r for r in got if r.startswith(BSD)] == [*good, BSD + b"after the garbage"]
    c = receiver.counters
    assert c.framing_errors >= 1
    assert c.received == c.accepted + c.dropped_total
    assert all(b"\n" not in r and b"\0" not in r and len(r) <= 4 * 1024 for r in got)


def test_over_long_messages_are_truncated_and_counted(stream_log: LocalLog) -> None:
    long = BSD + b"x" * 300
    with running(stream_log, max_message_bytes=100) as receiver:
        send_udp(receiver.addresses["udp"], [long])
        data = long + b"\n" + BSD + b"short\n" + b"%d %s" % (len(long), long) + BSD + b"after\n"
        send_tcp(receiver.addresses["tcp"], data)
        wait_for(settled(receiver, 5), what="five messages")
    got = records(stream_log)
    assert sorted(got) == sorted([long[:100]] * 3 + [BSD + b"short", BSD + b"after"])
    c = receiver.counters
    assert (c.truncated, c.accepted, c.dropped) == (3, 5, {})


def test_empty_messages_are_dropped_and_counted(stream_log: LocalLog) -> None:
    with running(stream_log) as receiver:
        send_udp(receiver.addresses["udp"], [b"", b"\n", BSD + b"udp"])
        send_tcp(receiver.addresses["tcp"], b"\n\r\n\0" + b"0 " + BSD + b"tcp\n")
        wait_for(settled(receiver, 8), what="eight messages")
    assert sorted(records(stream_log)) == [BSD + b"tcp", BSD + b"udp"]
    c = receiver.counters
    assert (c.received, c.accepted, c.dropped) == (8, 2, {"empty": 6})


# -- volume ---------------------------------------------------------------------------------------


def test_many_messages_over_tcp_and_udp(stream_log: LocalLog) -> None:
    tcp = [BSD + b"tcp message %05d" % i for i in range(5000)]
    udp = [BSD + b"udp message %05d" % i for i in range(2000)]
    with running(stream_log) as receiver:
        sender = threading.Thread(
            target=send_tcp, args=(receiver.addresses["tcp"], b"".join(m + b"\n" for m in tcp))
        )
        sender.start()
        send_udp(receiver.addresses["udp"], udp)
        sender.join()
        wait_for(settled(receiver, 7000), what="7,000 messages")
        c = receiver.counters
    got = records(stream_log)
    assert [r for r in got if b"tcp message" in r] == tcp  # once each, in order
    # UDP may lose datagrams only in the kernel; the receiver counts those too.
    udp_got = [r for r in got if b"udp message" in r]
    assert len(set(udp_got)) == len(udp_got) and set(udp_got) <= set(udp)
    assert c.received == 7000
    assert c.received == c.accepted + c.dropped_total
    assert len(udp_got) == 2000 - c.dropped.get("receive_buffer", 0)
    assert c.accepted == len(got)
    # Batched: far fewer appends than messages.
    assert stream_log.appends < 7000 / 10


# -- backpressure ---------------------------------------------------------------------------------


class _BlockingSender(threading.Thread):
    """Sends numbered 1 KB messages over one TCP connection, recording when it last made progress."""

    def __init__(self, address: tuple[str, int], cap: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(address)
        self.sock.settimeout(0.05)
        self.cap = cap  # messages; raised by the test once it has seen the sender blocked
        self.done = 0  # messages fully sent
        self.progress = time.monotonic()
        self.kill = False

    @staticmethod
    def message(i: int) -> bytes:
        return (BSD + b"tcp %07d " % i).ljust(1000, b"x")

    def run(self) -> None:
        i = 0
        while i < self.cap and not self.kill:
            view = memoryview(b"".join(self.message(k) + b"\n" for k in range(i, i + 100)))
            while view and not self.kill:
                try:
                    sent = self.sock.send(view)
                except TimeoutError:
                    continue
                view = view[sent:]
                self.progress = time.monotonic()
            i += 100
            self.done = i
        self.sock.close()

    def blocked(self) -> bool:
        return time.monotonic() - self.progress > 1.0


@pytest.mark.slow
def test_backpressure_full_stream(tmp_path: Path) -> None:
    """A full stream: UDP is dropped and counted, TCP senders block; once trimmed, TCP loses nothing."""
    limits = StreamLimits(segment_bytes=256 << 10, max_bytes=2 << 20, max_record_bytes=64 << 10)
    with (
        LocalLog(tmp_path / "stream", limits, fsync=False) as log,
        running(log, queue_messages=1000, queue_bytes=1 << 20) as receiver,
    ):
        sender = _BlockingSender(receiver.addresses["tcp"], cap=200_000)
        sender.start()
        try:
            wait_for(sender.blocked, timeout=30, what="the TCP sender to block")
            assert sender.is_alive() and sender.done < sender.cap, "never blocked"
            c = receiver.counters
            assert c.stream_full and c.paused_connections == 1
            # What the receiver holds is bounded: queue + one batch + one read chunk of messages.
            assert c.pending <= 1000 + 1000 + 300
            assert log.size_bytes <= limits.max_bytes

            udp = [BSD + b"udp while full %d" % i for i in range(20)]
            send_udp(receiver.addresses["udp"], udp)
            wait_for(lambda: receiver.counters.dropped.get("backpressure", 0) == 20)

            # Let the sender go on for 2,000 more messages, and play the stream's consumer:
            # read what is appended, trim it, until every message sent has come through.
            total = sender.done + 2000
            sender.cap = total
            got: list[bytes] = []
            offset = 0
            deadline = time.monotonic() + 30
            while len(got) < total:
                assert time.monotonic() < deadline, f"{len(got)} of {total} after 30 s"
                batch = log.read(offset, max_records=100_000, max_bytes=64 << 20)
                if not batch:
                    time.sleep(0.005)
                    continue
                got.extend(payload for _, payload in batch)
                offset = batch[-1][0] + 1
                log.trim(offset)
        finally:
            sender.kill = not sender.is_alive() or sender.done < sender.cap
            sender.join(10)
    assert got == [_BlockingSender.message(i) for i in range(total)]  # all, once, in order
    c = receiver.counters
    assert c.dropped == {"backpressure": 20}
    assert c.received == c.accepted + c.dropped_total == total + 20


# -- lifecycle ------------------------------------------------------------------------------------


def test_stop_flushes_what_was_received(stream_log: LocalLog) -> None:
    # The appender would wait a minute to fill a batch; stop() must not.
    receiver = SyslogReceiver(
        SyslogConfig(udp="127.0.0.1:0", tcp="127.0.0.1:0"),
        stream_log.append,
        flush_seconds=60,
        batch_records=100_000,
    )
    receiver.start()
    tcp = [BSD + b"tcp before stop %d" % i for i in range(50)]
    udp = [BSD + b"udp before stop %d" % i for i in range(50)]
    with socket.create_connection(receiver.addresses["tcp"]) as sock:
        sock.sendall(b"".join(m + b"\n" for m in tcp))
        wait_for(lambda: receiver.counters.received == 50, what="TCP messages read")
        assert stream_log.next_offset == 0  # still in the receiver's queue
        send_udp(receiver.addresses["udp"], udp)  # in the kernel's socket buffer: stop reads it
        started = time.monotonic()
        receiver.stop()
    assert time.monotonic() - started < 5
    assert sorted(records(stream_log)) == sorted(tcp + udp)
    c = receiver.counters
    assert (c.received, c.accepted, c.pending) == (100, 100, 0)
    receiver.stop()  # idempotent


def test_port_in_use_names_the_address(stream_log: LocalLog) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            free_udp = probe.getsockname()[1]
        config = SyslogConfig(udp=f"127.0.0.1:{free_udp}", tcp=f"127.0.0.1:{port}")
        receiver = SyslogReceiver(config, stream_log.append)
        with pytest.raises(ConfigError, match=rf"TCP 127\.0\.0\.1:{port} \(syslog\.tcp\)"):
            receiver.start()
        receiver.stop()  # nothing started: a no-op
    # The UDP socket bound before the TCP bind failed was closed again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", free_udp))
        with pytest.raises(ConfigError, match=rf"UDP 127\.0\.0\.1:{free_udp} \(syslog\.udp\)"):
            SyslogReceiver(
                SyslogConfig(udp=f"127.0.0.1:{free_udp}", tcp=""), stream_log.append
            ).start()


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:5514", "syslog.udp") == ("127.0.0.1", 5514)
    assert parse_address("[::1]:5514", "syslog.udp") == ("::1", 5514)
    assert parse_address("[::]:0", "syslog.udp") == ("::", 0)
    assert parse_address(":514", "syslog.udp") == ("0.0.0.0", 514)
    assert parse_address("logs.example.com:6514", "syslog.tcp") == ("logs.example.com", 6514)
    for bad, why in [
        ("127.0.0.1", "missing port"),
        ("127.0.0.1:70000", "0 to 65535"),
        ("127.0.0.1:x", "0 to 65535"),
        ("::1:5514", "in brackets"),
        ("[::1]5514", r"\[ADDRESS\]:PORT"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_address(bad, "syslog.tcp")
    with pytest.raises(ConfigError, match=r"syslog\.udp"):
        SyslogReceiver(SyslogConfig(udp="nonsense"), lambda records: (0, 0))
    with pytest.raises(ConfigError, match="max_message_bytes"):
        SyslogReceiver(SyslogConfig(max_message_bytes=0), lambda records: (0, 0))


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@needs_logger
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_listeners(stream_log: LocalLog) -> None:
    with running(stream_log, udp="[::1]:0", tcp="[::1]:0") as receiver:
        assert receiver.addresses["udp"][0] == "::1" and receiver.addresses["tcp"][0] == "::1"
        _, udp_port = receiver.addresses["udp"]
        _, tcp_port = receiver.addresses["tcp"]
        logger("--udp", "-n", "::1", "-P", str(udp_port), "--rfc3164", "-t", "v6", "over udp6")
        logger("--tcp", "-n", "::1", "-P", str(tcp_port), "-t", "v6", "over tcp6")
        wait_for(settled(receiver, 2), what="two messages")
    parsed = parse(records(stream_log))
    assert sorted(parsed.get_column("message")) == ["over tcp6", "over udp6"]


# -- connections: idle timeout, room for new senders, exposure ------------------------------------


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the receiver has closed ``sock`` (EOF); waits at most 10 s for it."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_are_closed_after_the_timeout(stream_log: LocalLog) -> None:
    with running(stream_log, udp="", idle_timeout_seconds=0.3) as receiver:
        address = receiver.addresses["tcp"]
        silent = socket.create_connection(address)
        done = socket.create_connection(address)
        done.sendall(BSD + b"one message, then silence\n")
        partial = socket.create_connection(address)
        partial.sendall(BSD + b"a message without its newline")
        try:
            wait_for(
                lambda: receiver.counters.connections_idle_closed == 3,
                what="three idle connections closed",
            )
            assert all(_closed_by_peer(s) for s in (silent, done, partial))
            assert receiver.counters.connections == 0
            # A sender that comes back connects again, as rsyslog and syslog-ng do.
            send_tcp(address, BSD + b"after reconnecting\n")
            wait_for(settled(receiver, 3), what="three messages")
        finally:
            for sock in (silent, done, partial):
                sock.close()
    assert sorted(records(stream_log)) == sorted(
        [
            BSD + b"one message, then silence",
            BSD + b"a message without its newline",  # kept, as when a sender disconnects
            BSD + b"after reconnecting",
        ]
    )
    c = receiver.counters
    assert (c.received, c.accepted, c.dropped, c.connections_evicted) == (3, 3, {}, 0)


def test_at_the_connection_limit_the_longest_idle_makes_room(stream_log: LocalLog) -> None:
    """Before, 1,030 idle connections (limit 1,024) locked every new sender out."""
    idle: list[socket.socket] = []
    with running(stream_log, udp="", max_connections=8) as receiver:
        address = receiver.addresses["tcp"]
        try:
            for i in range(8):  # one after the other: the first is the longest idle
                sock = socket.create_connection(address)
                sock.sendall(BSD + b"idle sender %d\n" % i)
                idle.append(sock)
                wait_for(settled(receiver, i + 1), what=f"message of sender {i}")
            assert receiver.counters.connections == 8
            new = [BSD + b"new sender %d" % i for i in range(100)]
            send_tcp(address, b"".join(m + b"\n" for m in new))
            wait_for(settled(receiver, 108), what="the new sender's messages")
            assert _closed_by_peer(idle[0])
            c = receiver.counters
            assert (c.connections_evicted, c.connections_refused) == (1, 0)
            # The others stay open and usable.
            idle[7].sendall(BSD + b"still here\n")
            wait_for(settled(receiver, 109), what="a message of an idle sender")
        finally:
            for sock in idle:
                sock.close()
    got = records(stream_log)
    assert [r for r in got if b"new sender" in r] == new
    assert BSD + b"still here" in got
    c = receiver.counters
    assert (c.received, c.accepted, c.dropped) == (109, 109, {})


@pytest.mark.parametrize(
    "address", ["0.0.0.0:5514", ":5514", "[::]:5514", "192.0.2.10:5514", "syslog.example:514"]
)
def test_a_listener_beyond_loopback_needs_auth(tmp_path: Path, address: str) -> None:
    """Syslog has no authentication: beyond loopback only when [auth] has credentials."""
    for kind in ("udp", "tcp"):
        (tmp_path / "loglake.toml").write_text(f'[syslog]\n{kind} = "{address}"\n')
        with pytest.raises(ConfigError) as err:
            load_config(home=tmp_path, environ={})
        message = str(err.value)
        assert f"syslog.{kind}" in message and "[auth]" in message and "loopback" in message
        assert "unauthenticated" in message
    (tmp_path / "loglake.toml").write_text(
        f'[syslog]\ntcp = "{address}"\nudp = "{address}"\n\n[auth]\napi_keys = ["k"]\n'
    )
    assert load_config(home=tmp_path, environ={}).syslog.tcp == address


@pytest.mark.parametrize(
    "address", ["127.0.0.1:5514", "127.0.0.53:0", "localhost:5514", "[::1]:0", ""]
)
def test_loopback_listeners_need_no_auth(tmp_path: Path, address: str) -> None:
    (tmp_path / "loglake.toml").write_text(f'[syslog]\ntcp = "{address}"\nudp = "{address}"\n')
    assert load_config(home=tmp_path, environ={}).syslog.udp == address


def test_loglake_serve_refuses_an_exposed_syslog_listener(tmp_path: Path) -> None:
    (tmp_path / "loglake.toml").write_text('[syslog]\nudp = "0.0.0.0:0"\ntcp = ""\n')
    proc = subprocess.run(
        [sys.executable, "-m", "loglake.cli", "--home", str(tmp_path), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "refusing to listen for syslog on '0.0.0.0:0' (syslog.udp)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_connection_settings_are_checked(tmp_path: Path) -> None:
    for text, message in [
        ("max_connections = 0", "max_connections must be positive"),
        ("idle_timeout_seconds = -1", "idle_timeout_seconds must be 0"),
        ('idle_timeout_seconds = "5m"', "idle_timeout_seconds must be float"),
    ]:
        (tmp_path / "loglake.toml").write_text(f"[syslog]\n{text}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(home=tmp_path, environ={})
    with pytest.raises(ConfigError, match="max_connections"):
        SyslogReceiver(SyslogConfig(max_connections=0), lambda records: (0, 0))
