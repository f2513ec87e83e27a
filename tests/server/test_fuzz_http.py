"""Fuzz test of the HTTP ingest APIs: mutated and random lines through a real ``loglake serve``.

The HTTP half of the ingest fuzz test (tests/test_fuzz_ingest.py is the batch half, whose line
generator this reuses). With a fixed seed, a few thousand lines (valid lines of every format, bit
flips, NUL / 0x1F / 0xFF / CR bytes, invalid UTF-8, truncations, random bytes, lines of one format
in another's stream, JSON of wrong types, deep nesting and keys differing only in case, lines of
1 KiB up to the stream's 1 MiB record limit) go to one stream per format (two access presets,
syslog, json, auto) through ``POST /v1/streams/NAME/records`` (text/plain and NDJSON, some gzip),
and to four streams through the Kinesis API with boto3. A few requests are refused whole (a record
over the limit, a corrupt gzip body, a gzip bomb, brotli) and must store nothing.

Checked: no answer is a 5xx and the server stays up; every answer accounts for every non-blank line
it was sent (accepted + rejected at the API, at consecutive offsets); once delivered, each record
of each stream is exactly once in the lake, as a data row or in ``logs.rejected`` (``line`` is its
stream offset), and each rejected record's raw bytes are the bytes sent, after the API's own line
splitting (``\\n`` ends a line, one ``\\r`` before it is part of the line end).
"""

from __future__ import annotations

import gzip
import json
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import duckdb
import pytest
from botocore.config import Config as BotoConfig

from loglake.config import load_config
from loglake.lake.catalog import list_tables, open_catalog
from serving import Server, request
from test_fuzz_ingest import _mutate, _seeds  # tests/ is on sys.path (its conftest.py)

SEED = 20240918
STREAMS = {  # name -> format; kin is created through the Kinesis API (format auto)
    "web": "combined",
    "vhost": "vhost_combined",
    "sys": "syslog",
    "app": "json",
    "any": "auto",
    "kin": "auto",
}
KINESIS_STREAMS = ("sys", "app", "any", "kin")
REQUESTS_PER_STREAM = 8
MAX_RECORD = 1 << 20  # a stream's max_record_bytes: one record longer refuses its request (413)
MAX_BODY = 8 << 20  # server.max_body_bytes (the default)
# Long lines: syslog's limits (RFC 5424's minimum, rsyslog's default, one UDP datagram), then up to
# the record limit itself.
LONG_SIZES = (1024, 2048, 8192, 65_507, 65_536, 262_144, MAX_RECORD - 1, MAX_RECORD)
# Lines of Kinesis blobs are cut to this: a blob is at most 1 MiB, a call 5 MiB.
KINESIS_LINE = 8192
DELIVERY_DEADLINE_S = 180.0

CONFIG = "".join(
    f'[streams.{name}]\nformat = "{fmt}"\nbuffer_seconds = 0.5\n\n'
    for name, fmt in STREAMS.items()
    if name != "kin"
)


def _deep(depth: int, array: bool = False) -> bytes:
    if array:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


#: JSON that is valid but awkward, or nearly JSON: wrong and drifting types, odd times, keys that
#: differ only in case (in one record and across records), loglake's own column names, numbers no
#: column holds, nesting around the parser's depth limit (64) and far beyond it, other encodings.
JSON_ODDITIES = [
    b'{"n": 1}',
    b'{"n": "abc"}',
    b'{"n": 1.5}',
    b'{"n": true}',
    b'{"n": null}',
    b'{"n": [1, "two", null]}',
    b'{"n": {"x": 1}}',
    b'{"ts": 1700000000}',
    b'{"ts": "not a time"}',
    b'{"ts": null}',
    b'{"ts": {"a": 1}}',
    b'{"ts": "2024-13-45T99:99:99Z"}',
    b'{"ts": 1e300}',
    b'{"ts": -1}',
    b'{"time": "2024-01-01T00:00:00+05:30", "@timestamp": 3}',
    b'{"ip": "1.2.3.4", "IP": "5.6.7.8"}',
    b'{"IP": "9.9.9.9"}',
    b'{"Level": "warn", "level": "info", "LEVEL": 3}',
    b'{"a": 1, "a": "x"}',
    b'{"msg": "x", "MSG": {"y": 1}}',
    b'{"line": 7, "source": "stream:web", "ingested_at": "2000-01-01", "Source": 1, '
    b'"ts_missing": "no", "LINE": [1]}',
    b'{"big": 123456789012345678901234567890}',
    b'{"neg": -9223372036854775809}',
    b'{"f": NaN}',
    b'{"f": Infinity, "g": -Infinity}',
    b'{"s": "\\ud800"}',
    b'{"s": "a\\u0000b"}',
    '{"ключ": "значение", "emoji": "😀"}'.encode(),
    b'{"": 1}',
    b'{"a.b": 1, "a b": 2, "a\\"b": 3, "x\\u0000y": 4}',
    b"{}",
    b"[]",
    b'[{"a": 1}]',
    b'"str"',
    b"42",
    b"null",
    b"true",
    b'{"a": 1',
    b'{"a": 1}}',
    b'{"a": 1} {"b": 2}',
    b"{'a': 1}",
    b'{"a": 01}',
    b'{"deep": ' + _deep(62, array=True) + b"}",
    b'{"deep": ' + _deep(64, array=True) + b"}",
    _deep(65),
    _deep(1000),
    _deep(100_000),
    _deep(100_000, array=True),
    b'\xef\xbb\xbf{"bom": 1}',
    '{"utf16": 1}'.encode("utf-16"),
    b'{"latin1": "caf\xe9"}',
]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server.started(tmp_path / "lake", CONFIG)
    try:
        yield srv
    finally:
        if srv.proc is not None:
            srv.stop()


def _records(body: bytes) -> list[tuple[int, bytes]]:
    """``(index, record)`` of each non-blank line of a body, as the API's docs define them."""
    out = []
    for index, line in enumerate(body.split(b"\n")):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            out.append((index, line))
    return out


def _json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def _long(rng: random.Random, line: bytes, size: int) -> bytes:
    """A line of exactly ``size`` bytes: ``line`` grown where its format allows it (the URL of an
    access line, a JSON string, a syslog message's end), or random bytes."""
    pad = size - len(line)
    if rng.random() < 0.25 or pad < 16:
        return rng.randbytes(size).replace(b"\n", b"\x00")
    if line.startswith(b"{") and line.endswith(b"}"):
        return b'{"pad": "' + b"p" * (size - 11) + b'"}'
    at = line.find(b" HTTP/1.")
    if at > 0:
        return line[:at] + b"a" * pad + line[at:]
    return line + b" " + b"m" * (pad - 1)


@dataclass
class Fed:
    """What one stream was sent and acknowledged: offset -> record bytes, and refused requests."""

    records: dict[int, bytes] = field(default_factory=dict)
    next_offset: int = 0
    api_rejected: int = 0
    refused: Counter[int] = field(default_factory=Counter)


class Feeder:
    """Sends one stream's fuzzed requests in order and checks every answer."""

    def __init__(
        self, srv: Server, name: str, pool: list[bytes], others: list[bytes], clean: float
    ) -> None:
        self.srv = srv
        self.name = name
        self.pool = pool
        self.others = others
        self.clean = clean  # the share of lines sent unmutated (besides _mutate's own)
        self.rng = random.Random(f"{SEED}-{name}")  # one per stream: threads do not disturb it
        self.fed = Fed()

    def line(self, limit: int = MAX_RECORD) -> bytes:
        """One fuzzed line of at most ``limit`` bytes (longer ones would refuse the request)."""
        line = self.rng.choice(self.pool)
        if self.rng.random() >= self.clean:
            line = _mutate(self.rng, line, self.others)
        return line[:limit]

    def body(self, count: int) -> bytes:
        rng = self.rng
        ends = [b"\n"] * 6 + [b"\r\n"] * 2 + [b"\n\n", b"\r\n \r\n", b"\n\t\n"]
        body = b"".join(self.line() + rng.choice(ends) for _ in range(count))
        return body.rstrip(b"\r\n") if rng.random() < 0.2 else body  # sometimes no final newline

    def post(self, body: bytes, content_type: str, compress: bool) -> tuple[int, Any]:
        headers = {"Content-Type": content_type}
        data = body
        if compress:
            data = gzip.compress(body, mtime=0)
            headers["Content-Encoding"] = "gzip"
        url = f"{self.srv.url}/v1/streams/{self.name}/records"
        status, answer, _ = request("POST", url, data, headers)
        assert status < 500, (self.name, status, answer)
        return status, answer

    def send(self, body: bytes) -> None:
        """POST ``body``; the answer must account for each of its records."""
        rng = self.rng
        kinds = ["text/plain", "text/plain; charset=utf-8", "application/octet-stream"]
        if self.name in ("app", "any"):
            kinds += ["application/x-ndjson", "application/x-ndjson", "application/json"]
        kind = rng.choice(kinds)
        status, answer = self.post(body, kind, compress=rng.random() < 0.3)
        assert status == 200, (self.name, status, answer)
        records = _records(body)
        is_json = kind.split(";")[0] in ("application/x-ndjson", "application/json")
        want_rejected = {i for i, line in records if is_json and not _json_object(line)}
        got_rejected = [r["index"] for r in answer["rejected"]]
        assert len(got_rejected) == len(set(got_rejected)), answer["rejected"][:5]
        assert set(got_rejected) == want_rejected, (self.name, kind, answer["rejected"][:5])
        assert answer["accepted"] + len(got_rejected) == len(records), (self.name, answer)
        fed = self.fed
        assert answer["first_offset"] == fed.next_offset, (self.name, answer)
        assert answer["next_offset"] == fed.next_offset + answer["accepted"], (self.name, answer)
        accepted = [line for i, line in records if i not in want_rejected]
        for offset, line in enumerate(accepted, start=fed.next_offset):
            fed.records[offset] = line
        fed.next_offset += len(accepted)
        fed.api_rejected += len(got_rejected)

    def refuse(self, body: bytes, headers: dict[str, str], status: int, code: str) -> None:
        """POST a body that must be refused whole with ``status``; nothing of it is stored (the
        next accepted request's first offset shows that)."""
        url = f"{self.srv.url}/v1/streams/{self.name}/records"
        got, answer, _ = request("POST", url, body, {"Content-Type": "text/plain", **headers})
        assert (got, answer["error"]["code"]) == (status, code), (self.name, got, answer)
        self.fed.refused[status] += 1

    def kinesis(self, client: Any) -> None:
        """Two PutRecords calls and one PutRecord; sequence numbers account for every line."""
        rng = self.rng
        for _ in range(2):
            blobs = [
                b"".join(
                    self.line(KINESIS_LINE) + rng.choice([b"\n", b"\r\n"])
                    for _ in range(rng.randint(0, 4))
                )
                + (self.line(KINESIS_LINE) if rng.random() < 0.5 else b"")
                for _ in range(rng.randint(20, 60))
            ]
            blobs[rng.randrange(len(blobs))] = b"\n \r\n"  # a blob of blank lines: no record
            reply = client.put_records(
                StreamName=self.name,
                Records=[{"Data": blob, "PartitionKey": f"k{i}"} for i, blob in enumerate(blobs)],
            )
            assert reply["FailedRecordCount"] == 0, (self.name, reply["Records"][:3])
            starts = [int(r["SequenceNumber"]) for r in reply["Records"]]
            assert len(starts) == len(blobs)
            for blob, start in zip(blobs, starts, strict=True):
                assert start == self.fed.next_offset, (self.name, blob[:200])
                self._acknowledged(blob)
        blob = b"\n".join(self.line(KINESIS_LINE) for _ in range(rng.randint(5, 30)))
        reply = client.put_record(StreamName=self.name, Data=blob, PartitionKey="one")
        assert int(reply["SequenceNumber"]) == self.fed.next_offset, self.name
        self._acknowledged(blob)

    def _acknowledged(self, blob: bytes) -> None:
        for _, line in _records(blob):
            self.fed.records[self.fed.next_offset] = line
            self.fed.next_offset += 1

    def run(self, kinesis: bool) -> Fed:
        rng = self.rng
        plan: list[str] = ["lines"] * REQUESTS_PER_STREAM + ["too_large", "bad_gzip", "bomb", "br"]
        rng.shuffle(plan)
        longs = list(LONG_SIZES)
        for step in plan:
            if step == "lines":
                body = self.body(rng.randint(60, 150))
                if longs:  # the long lines, spread over the requests, one or two in each
                    for _ in range(min(len(longs), rng.randint(1, 2))):
                        size = longs.pop(rng.randrange(len(longs)))
                        body += b"\n" + _long(rng, rng.choice(self.pool), size) + b"\n"
                self.send(body)
            elif step == "too_large":  # one record over the limit among good ones: 413, none kept
                body = self.body(20) + b"\n" + b"x" * (MAX_RECORD + 1) + b"\n" + self.body(5)
                self.refuse(body, {}, 413, "record_too_large")
            elif step == "bad_gzip":
                data = gzip.compress(self.body(30), mtime=0)
                self.refuse(
                    data[: len(data) // 2], {"Content-Encoding": "gzip"}, 400, "invalid_request"
                )
            elif step == "bomb":  # a small body that inflates past max_body_bytes
                data = gzip.compress(b"a\n" * (MAX_BODY // 2 + 1), mtime=0)
                self.refuse(data, {"Content-Encoding": "gzip"}, 413, "body_too_large")
            else:
                body = self.body(10)
                self.refuse(body, {"Content-Encoding": "br"}, 415, "unsupported_encoding")
        if kinesis:
            client = boto3.session.Session().client(
                "kinesis",
                endpoint_url=self.srv.url,
                region_name="us-east-1",
                aws_access_key_id="AKIDFUZZ",  # no [auth] configured: any key is accepted
                aws_secret_access_key="fuzz",
                config=BotoConfig(retries={"max_attempts": 1, "mode": "standard"}),
            )
            self.kinesis(client)
        return self.fed


def _pools(shared_data: Path) -> tuple[dict[str, list[bytes]], list[bytes]]:
    """Lines each stream's requests are made from, and every line (for mixing formats)."""
    seeds = _seeds(shared_data)
    access, syslog, js = seeds["access"], seeds["syslog"], seeds["json"] + JSON_ODDITIES * 3
    everything = [*access, *syslog, *js]
    pools = {
        "web": access,
        "vhost": access,
        "sys": syslog,
        "app": js,
        # Auto streams: mostly lines of one format (Apache combined, RFC 3164 syslog).
        "any": access[:200] * 6 + syslog + js,
        "kin": syslog[:200] * 6 + access + js,
    }
    return pools, everything


def _streams(srv: Server) -> dict[str, dict[str, Any]]:
    status, listing, _ = request("GET", f"{srv.url}/v1/streams")
    assert status == 200, listing
    return {s["name"]: s for s in listing["streams"]}


def _errors(srv: Server) -> list[str]:
    """The server's own error events (a thread that stopped, a request that failed) and Rust
    panics. A delivery that failed and retries from its last commit (a commit conflict on the
    shared logs.rejected) is recovered from by design: the lake's contents are checked instead."""
    text = (srv.home / "server.log").read_text(errors="replace")
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    found = [
        e["msg"]
        for e in events
        if e.get("level") in ("error", "critical") and e.get("logger") == "loglake.serve"
    ]
    lines = text.splitlines()
    panics = [" ".join(lines[i : i + 2]) for i, ln in enumerate(lines) if " panicked at " in ln]
    return found + panics


def _no_errors(srv: Server) -> None:
    errors = _errors(srv)
    assert not errors, "the server logged errors:\n" + "\n".join(errors)


def _wait_delivered(srv: Server) -> dict[str, dict[str, Any]]:
    """Wait until every stream's delivery has committed up to its log's end."""
    deadline = time.monotonic() + DELIVERY_DEADLINE_S
    while True:
        assert srv.proc is not None and srv.proc.poll() is None, "the server died"
        _no_errors(srv)
        streams = _streams(srv)
        behind = {
            n: (s["delivered_offset"], s["next_offset"])
            for n, s in streams.items()
            if s["delivered_offset"] < s["next_offset"]
        }
        if not behind:
            return streams
        assert time.monotonic() < deadline, f"not delivered after {DELIVERY_DEADLINE_S} s: {behind}"
        time.sleep(0.5)


def _lake(home: Path) -> tuple[dict[str, list[int]], dict[str, list[tuple[int, bytes, str]]]]:
    """Offsets of the data rows of each stream, and (offset, raw, reason) of its rejected rows.

    Read with DuckDB from the data files of each table's current snapshot (the files pyiceberg
    plans), so the counts do not depend on pyarrow's Parquet reader (checked apart).
    """
    catalog = open_catalog(load_config(home=home, environ={}))
    stored: dict[str, list[int]] = defaultdict(list)
    rejected: dict[str, list[tuple[int, bytes, str]]] = defaultdict(list)
    for name in list_tables(catalog):
        table = catalog.load_table(name)
        files = [urlparse(t.file.file_path).path for t in table.scan().plan_files()]
        assert all(not t.delete_files for t in table.scan().plan_files()), name
        if not files:
            continue
        columns = "source, line, raw, reason" if name == "logs.rejected" else "source, line"
        rows = duckdb.sql(
            f"SELECT {columns} FROM read_parquet(?, union_by_name = true)", params=[files]
        ).fetchall()
        for row in rows:
            if name == "logs.rejected":
                rejected[row[0]].append((row[1], row[2], row[3]))
            else:
                stored[row[0]].append(row[1])
    return stored, rejected


def _unreadable(home: Path) -> dict[str, str]:
    """Tables pyiceberg cannot read (through pyarrow, as the lake's compaction reads files)."""
    catalog = open_catalog(load_config(home=home, environ={}))
    failed = {}
    for name in list_tables(catalog):
        try:
            catalog.load_table(name).scan(selected_fields=("line",)).to_arrow()
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


@pytest.mark.slow
def test_mutated_and_random_lines_through_the_http_apis(server: Server, shared_data: Path) -> None:
    pools, everything = _pools(shared_data)
    kinesis = boto3.session.Session().client(
        "kinesis",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDFUZZ",
        aws_secret_access_key="fuzz",
        config=BotoConfig(retries={"max_attempts": 1, "mode": "standard"}),
    )
    kinesis.create_stream(StreamName="kin", ShardCount=1)

    # Auto streams detect a format per delivered batch when most of its lines parse as one: their
    # lines are mostly of one format and more of them are left intact.
    feeders = [
        Feeder(server, name, pools[name], everything, 0.6 if fmt == "auto" else 0.0)
        for name, fmt in STREAMS.items()
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(f.run, f.name in KINESIS_STREAMS) for f in feeders]
        fed = {f.name: run.result() for f, run in zip(feeders, runs, strict=True)}

    total = sum(len(f.records) + f.api_rejected for f in fed.values())
    assert 3_000 < total < 8_000, total
    streams = _wait_delivered(server)
    assert set(STREAMS) <= set(streams)  # and the syslog receiver's stream
    for name, f in fed.items():
        s = streams[name]
        assert s["next_offset"] == f.next_offset == len(f.records), (name, s)
        # Each record counted once, as delivered or rejected, when its commit succeeds.
        assert s["delivered"] + s["rejected"] == f.next_offset, (name, s)
        assert f.refused == Counter({413: 2, 400: 1, 415: 1}), (name, f.refused)
    assert request("GET", f"{server.url}/readyz")[0] == 200
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit here.
    assert server.stop() in (0, -signal.SIGTERM)
    _no_errors(server)

    stored, rejected = _lake(server.home)
    sources = {f"stream:{name}" for name in STREAMS}
    assert set(stored) <= sources and set(rejected) <= sources, (set(stored), set(rejected))
    for name, f in fed.items():
        rows = stored[f"stream:{name}"]
        refused = rejected[f"stream:{name}"]
        offsets = [offset for offset, _, _ in refused]
        assert len(set(rows)) == len(rows), f"{name}: a record stored twice"
        assert len(set(offsets)) == len(offsets), f"{name}: a record rejected twice"
        assert not set(rows) & set(offsets), f"{name}: a record stored and rejected"
        assert len(rows) + len(refused) == len(f.records), (name, len(rows), len(refused))
        assert set(rows) | set(offsets) == set(f.records), f"{name}: records missing"
        wrong = [(o, reason) for o, raw, reason in refused if raw != f.records[o]]
        assert wrong == [], f"{name}: rejected bytes differ from those sent at {wrong[:5]}"
        assert len(rows) > 10, (name, len(rows), Counter(r for _, _, r in refused).most_common(5))
    assert _unreadable(server.home) == {}
