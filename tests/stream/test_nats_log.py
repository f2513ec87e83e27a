"""Bad input to the NATS log on a real nats-server: refused records name the limit, and a message
that is not what loglake wrote is read as one record instead of stalling the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from loglake.config import load_config
from loglake.config.streams import StreamBackendConfig
from loglake.errors import ConfigError
from loglake.stream.local import EmptyRecordError, RecordTooLargeError, StreamLimits
from loglake.stream.nats import FORMAT_HEADER, NatsClient, NatsLog
from natsserver import nats_servers


@pytest.fixture()
def log(tmp_path: Path) -> Iterator[NatsLog]:
    with nats_servers(tmp_path, 1) as nodes:
        client = NatsClient(StreamBackendConfig(backend="nats", servers=(nodes[0].url,)))
        opened = NatsLog(client, "bad", StreamLimits(max_record_bytes=1000))
        try:
            yield opened
        finally:
            opened.close()
            client.close()


def test_refusals_and_foreign_messages(log: NatsLog) -> None:
    with pytest.raises(EmptyRecordError):
        log.append([b"ok", b""])
    with pytest.raises(RecordTooLargeError, match="max_record_bytes"):
        log.append([b"x" * 1001])
    assert log.records_appended == 0  # nothing of a refused append was published

    first, _ = log.append([b"\xff\xfe not utf-8", b"plain"])

    async def publish() -> None:
        nc = await nats.connect(log.client.config.servers[0])
        js = nc.jetstream()
        # Claims loglake's layout but its lengths do not add up; and a plain foreign line.
        await js.publish(log.subject, b"\x05\x00\x00\x00junk", headers={FORMAT_HEADER: "1"})
        await js.publish(log.subject, b"from another publisher")
        await nc.close()

    asyncio.run(publish())
    assert log.wait(first, 30)
    got = []
    position = first
    while len(got) < 4:
        records = log.read_records(position)
        got += records.values.to_pylist()
        position = records.end
        if not len(records):
            assert log.wait(position, 30)
    assert got == [
        b"\xff\xfe not utf-8",
        b"plain",
        b"\x05\x00\x00\x00junk",
        b"from another publisher",
    ]
    assert log.read_at(first + 1) == b"plain"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('backend = "kafka"', "backend"),
        ('backend = "nats"\nreplicas = 7', "replicas"),
        ('backend = "nats"\nservers = []', "servers"),
        ('backend = "nats"\nprefix = "a.b"', "prefix"),
        ('backend = "nats"\nduplicate_window_seconds = 0', "duplicate_window_seconds"),
        ('replicas = "three"', "replicas"),
    ],
)
def test_stream_settings_are_checked(tmp_path: Path, toml: str, key: str) -> None:
    (tmp_path / "loglake.toml").write_text(f"[stream]\n{toml}\n")
    with pytest.raises(ConfigError, match=key):
        load_config(tmp_path, environ={})
