"""Fuzz test of batch ingest: mutated and random lines through ``loglake ingest`` (the CLI for
``auto``, its ingest function in the test's process for the other formats).

A few thousand lines (valid lines of every format, bit flips, inserted NUL / 0x1F / 0xFF / CR bytes,
truncations, random bytes, lines of one format inside another's file, long and over-long lines,
empty lines, CRLF endings, a gzip file and a file without a final newline), made with a fixed seed,
are ingested once per format (every access preset, syslog, json, auto), each run in a fresh lake.
Every run must finish; the printed counts must add up; every line must be exactly once in the lake,
as a row of a data table or in ``logs.rejected``; every rejected line's raw bytes must be the
input line's bytes (an over-long line: its pieces joined in order).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from loglake.config import load_config
from loglake.ingest import ingest
from loglake.lake.catalog import list_tables, open_catalog

SEED = 20240917
LINES_PER_FILE = 900
CHUNK_BYTES = 65536  # the smallest allowed: lines over 4 x 64 KiB are cut into pieces
FORMATS = [
    "common",
    "combined",
    "vhost_common",
    "vhost_combined",
    "common_complete",
    "nginx_main",
    "syslog",
    "json",
    "auto",
]
SPECIAL = [0x00, 0x1F, 0xFF, 0x0D, 0xC3, 0x80, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x3C, 0x20, 0x09]


def _seeds(shared_data: Path) -> dict[str, list[bytes]]:
    """Valid lines of every format, from the sample logs and built from them."""
    combined = (shared_data / "apache_combined_10k.log").read_bytes().splitlines()[:200]
    common = [re.sub(rb'^(.*?" \d{3} (?:\d+|-)) .*$', rb"\1", ln) for ln in combined]
    syslog = [
        ln.rstrip(b"\r") for ln in (shared_data / "syslog_linux_2k.log").read_bytes().splitlines()
    ][:200]
    rfc5424 = [
        b"<34>1 2024-01-0%dT10:00:%02d.123Z host%d app 12%d ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="App"] message %d' % (d % 9 + 1, d % 60, d, d, d)
        for d in range(50)
    ]
    events = (shared_data / "gharchive_50.jsonl").read_bytes().splitlines()[:5]  # ~6 KB each
    records = [
        json.dumps(
            {"ts": f"2024-01-01T00:{i % 60:02d}:00Z", "level": "info", "msg": f"m {i}", "n": i}
        ).encode()
        for i in range(100)
    ]
    small = [
        json.dumps(v).encode()
        for v in [
            {"ts": "2024-01-01T00:00:00Z", "n": 1, "msg": "ok"},
            {"ts": "2024-01-01T00:00:01Z", "n": "abc", "msg": None},
            {"n": {"deep": [1, 2, {"x": True}]}, "IP": "1.2.3.4", "ip": "5.6.7.8"},
            {"n": 1.5, "list": [1, "two", None]},
            [1, 2, 3],
            "just a string",
            None,
            {"": "empty key", 'a"b': "quote", "x" * 300: 1},
        ]
    ] + [b'{"a":' * 200 + b"1" + b"}" * 200]
    return {
        "access": combined
        + common
        + [b"www.example.com " + ln for ln in common[:50]]
        + [b"www.example.com:443 " + ln for ln in combined[:50]]
        + [b"www.example.com " + ln for ln in combined[50:100]]
        + [ln + b' "10.0.0.1, 10.0.0.2"' for ln in combined[100:150]],
        "syslog": syslog + rfc5424,
        "json": events + records + small,
    }


def _mutate(rng: random.Random, line: bytes, others: list[bytes]) -> bytes:
    op = rng.randrange(14)
    if op < 4:
        return line  # valid (most of a file, so that auto detection picks its format)
    b = bytearray(line)
    if op == 4 and b:  # bit flips (may make a \n: then the line is two lines, which is fine)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if op == 5:  # special bytes inserted
        for _ in range(rng.randint(1, 4)):
            b.insert(rng.randint(0, len(b)), rng.choice(SPECIAL))
        return bytes(b)
    if op == 6:  # truncated
        return line[: rng.randint(0, len(line))]
    if op == 7:  # random bytes
        return rng.randbytes(rng.randint(0, 120))
    if op == 8:  # a line of another format, or two lines glued together
        other = rng.choice(others)
        return other if rng.random() < 0.5 else line + rng.choice([b"", b"\x1f", b" "]) + other
    if op == 9:  # empty, blank, CR-only
        return rng.choice([b"", b" ", b"\t", b"\r", b"\r\r", b"\x00"])
    if op == 10:  # CRLF ending (not part of the line) or a lone CR inside it
        return line + b"\r" if rng.random() < 0.5 else line.replace(b" ", b"\r", 1)
    if op == 11:  # long line (rarely: they make most of the bytes)
        return (line + b" ") * (rng.randint(20, 400) if rng.random() < 0.1 else rng.randint(2, 5))
    if op == 12:  # invalid UTF-8 at the end, as a truncated multi-byte character
        return line + rng.choice([b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80"])
    return bytes(reversed(line))


def _corpus(shared_data: Path, folder: Path) -> None:
    rng = random.Random(SEED)
    seeds = _seeds(shared_data)
    everything = [ln for lines in seeds.values() for ln in lines]
    for kind, lines in seeds.items():
        body = b"\n".join(
            _mutate(rng, rng.choice(lines), everything) for _ in range(LINES_PER_FILE)
        )
        (folder / f"{kind}.log").write_bytes(body + b"\n")
    chaos = [rng.randbytes(rng.randint(0, 300)).replace(b"\n", b"") for _ in range(200)]
    over_long = rng.randbytes(CHUNK_BYTES * 5).replace(b"\n", b"\x00")  # cut into pieces
    (folder / "chaos.bin").write_bytes(b"\n".join([*chaos[:100], over_long, *chaos[100:]]))
    access = b"\n".join(_mutate(rng, rng.choice(seeds["access"]), everything) for _ in range(300))
    (folder / "more.log.gz").write_bytes(gzip.compress(access.replace(b"\n", b"\r\n") + b"\r\n"))
    (folder / "empty.log").write_bytes(b"")


def _reference_lines(data: bytes) -> list[bytes]:
    """Lines as loglake defines them: cut at \\n, one \\r before it is part of the line end."""
    *ended, tail = data.split(b"\n")
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in ended]
    return [*lines, tail] if tail else lines


def _expected(folder: Path) -> dict[tuple[str, int], bytes]:
    lines: dict[tuple[str, int], bytes] = {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        for n, line in enumerate(_reference_lines(data), start=1):
            lines[(str(path), n)] = line
    return lines


def _counts(stdout: str) -> tuple[int, int, int]:
    m = re.search(r"read ([\d,]+) lines = parsed ([\d,]+) \+ rejected ([\d,]+)", stdout)
    assert m, stdout
    read, parsed, rejected = (int(g.replace(",", "")) for g in m.groups())
    return read, parsed, rejected


def _lake_lines(
    home: Path,
) -> tuple[list[tuple[str, int]], dict[tuple[str, int], bytes], int]:
    """(source, line) of every data row, every rejected line's bytes (pieces joined), and the
    number of lines that came in pieces."""
    catalog = open_catalog(load_config(home=home, environ={}))
    stored: list[tuple[str, int]] = []
    pieces: dict[tuple[str, int], list[tuple[int, bytes]]] = defaultdict(list)
    for name in list_tables(catalog):
        table = catalog.load_table(name)
        if name != "logs.rejected":
            rows = table.scan(selected_fields=("source", "line")).to_arrow().to_pylist()
            stored.extend((r["source"], r["line"]) for r in rows)
            continue
        fields = ("source", "line", "reason", "raw")
        for r in table.scan(selected_fields=fields).to_arrow().to_pylist():
            m = re.search(r"piece (\d+) from byte", r["reason"])
            pieces[(r["source"], r["line"])].append((int(m.group(1)) if m else 0, r["raw"]))
    rejected = {key: b"".join(raw for _, raw in sorted(parts)) for key, parts in pieces.items()}
    return stored, rejected, sum(len(parts) > 1 for parts in pieces.values())


@pytest.mark.slow
def test_mutated_and_random_lines_through_every_format(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    _corpus(shared_data, folder)
    expected = _expected(folder)
    assert 3_000 < len(expected) < 5_000
    config = tmp_path / "loglake.toml"
    config.write_text(f"[ingest]\nchunk_bytes = {CHUNK_BYTES}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LOGLAKE_HOME", "LOGLAKE_CONFIG")}
    cli = [sys.executable, "-m", "loglake.cli", "--config", str(config)]

    # One format through the real CLI (its exit code, printed counts, no traceback); the others
    # through the same ingest function in this process, which spares eight start-ups (imports).
    proc = subprocess.run(
        [*cli, "--home", str(tmp_path / "lake-auto"), "ingest", "--format", "auto", str(folder)],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    counts = {"auto": _counts(proc.stdout)}
    for fmt in FORMATS:
        if fmt != "auto":
            home = tmp_path / f"lake-{fmt}"
            stats = ingest(
                load_config(home=home, config_file=config, environ={}), [str(folder)], format=fmt
            )
            assert stats.failed == {}, (fmt, stats.failed)
            counts[fmt] = (stats.read, stats.parsed, stats.rejected)
    for fmt in FORMATS:
        read, parsed, rejected = counts[fmt]
        assert read == parsed + rejected == len(expected), (fmt, counts[fmt])
        stored, rejected_lines, cut = _lake_lines(tmp_path / f"lake-{fmt}")
        assert len(stored) == parsed and len(rejected_lines) == rejected, fmt
        assert len(set(stored)) == len(stored), f"{fmt}: a line stored twice"
        assert not set(stored) & set(rejected_lines), f"{fmt}: a line stored and rejected"
        assert set(stored) | set(rejected_lines) == set(expected), f"{fmt}: lines missing"
        wrong = [key for key, raw in rejected_lines.items() if raw != expected[key]]
        assert wrong == [], f"{fmt}: rejected bytes differ from the input for {wrong[:5]}"
        assert parsed > 10, (fmt, counts[fmt])  # each format finds the lines it can parse
        assert cut == 1, fmt  # the over-long line of chaos.bin, in pieces
