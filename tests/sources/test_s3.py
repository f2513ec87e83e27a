"""The S3 batch source against a real moto server: listing, reading, versions and error messages."""

from __future__ import annotations

import bz2
import gzip
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from loglake.config import Config, load_config
from loglake.errors import SourceError
from loglake.sources import list_inputs as list_any
from loglake.sources.base import Input, open_decompressed, read_chunks
from loglake.sources.s3 import _glob_regex, list_inputs

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
SAMPLE = DATA_DIR / "apache_combined_10k.log"
CHUNK = 1 << 20  # smaller than the 2.3 MB sample, so every file is read in several chunks

# Key -> how to encode the sample. Nested "folders", in an order that is not already sorted.
LAYOUT: dict[str, Callable[[bytes], bytes]] = {
    "logs/2024/02/access.log.zst": lambda b: zstandard.ZstdCompressor().compress(b),
    "logs/2024/01/access.log": lambda b: b,
    "logs/2024/02/archive/access.log.bz2": bz2.compress,
    "logs/2024/01/access.log.gz": gzip.compress,
}


@pytest.fixture(scope="module")
def sample() -> bytes:
    """The raw Apache sample shared by the project (``/work/shared/data`` in dev and CI)."""
    assert SAMPLE.is_file(), f"test data missing: {SAMPLE} (expected <repo>/../shared/data)"
    return SAMPLE.read_bytes()


@pytest.fixture
def loaded_bucket(s3_client: Any, s3_bucket: str, sample: bytes) -> tuple[str, dict[str, bytes]]:
    """A bucket with the sample in four encodings under ``logs/``, plus objects that must not be
    listed for ``s3://bucket/logs``: a sibling prefix ``logsX/`` and a directory marker."""
    uploaded = {key: encode(sample) for key, encode in LAYOUT.items()}
    for key, body in uploaded.items():
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    s3_client.put_object(Bucket=s3_bucket, Key="logsX/not-below-logs.log", Body=b"x\n")
    s3_client.put_object(Bucket=s3_bucket, Key="logs/2024/empty-folder/", Body=b"")
    return s3_bucket, uploaded


def _read_all(inp: Input) -> tuple[list[bytes], int]:
    """Decompressed chunks of ``inp``, the way the ingest pipeline reads it, and raw bytes read."""
    stream, counting = open_decompressed(inp.open())
    chunks = [chunk.data for chunk in read_chunks(stream, CHUNK)]
    return chunks, counting.count


def test_prefix_lists_every_object_below_sorted_with_sizes(
    loaded_bucket: tuple[str, dict[str, bytes]], s3_config: Config
) -> None:
    bucket, uploaded = loaded_bucket
    inputs = list(list_inputs(f"s3://{bucket}/logs", s3_config))

    expected = sorted(uploaded)
    assert [i.name for i in inputs] == [f"s3://{bucket}/{key}" for key in expected]
    for inp, key in zip(inputs, expected, strict=True):
        assert inp.key == inp.name
        assert inp.size == len(uploaded[key])
        assert inp.version.isdigit()
        assert inp.fingerprint == f"{inp.key}|{inp.size}|{inp.version}"


def test_trailing_slash_bucket_root_and_registry_agree(
    loaded_bucket: tuple[str, dict[str, bytes]], s3_config: Config
) -> None:
    bucket, _ = loaded_bucket
    names = [i.name for i in list_inputs(f"s3://{bucket}/logs", s3_config)]
    assert [i.name for i in list_inputs(f"s3://{bucket}/logs/", s3_config)] == names
    # the registry in loglake.sources dispatches s3:// here
    assert [i.name for i in list_any(f"s3://{bucket}/logs", s3_config)] == names
    # the whole bucket also holds the sibling prefix
    everything = [i.name for i in list_inputs(f"s3://{bucket}", s3_config)]
    assert everything == sorted([*names, f"s3://{bucket}/logsX/not-below-logs.log"])


@pytest.mark.parametrize("key", sorted(LAYOUT))
def test_reading_yields_original_bytes_in_line_aligned_chunks(
    key: str, loaded_bucket: tuple[str, dict[str, bytes]], s3_config: Config, sample: bytes
) -> None:
    bucket, uploaded = loaded_bucket
    [inp] = list_inputs(f"s3://{bucket}/{key}", s3_config)  # an exact key yields just that object

    chunks, raw_count = _read_all(inp)

    assert b"".join(chunks) == sample
    assert len(chunks) >= 2
    assert all(chunk.endswith(b"\n") for chunk in chunks[:-1])
    # the stream is the raw object: pyarrow must not decompress by extension behind our back
    assert raw_count == inp.size == len(uploaded[key])


def test_globs_on_the_key(loaded_bucket: tuple[str, dict[str, bytes]], s3_config: Config) -> None:
    bucket, _ = loaded_bucket

    def names(pattern: str) -> list[str]:
        return [
            i.name[len(f"s3://{bucket}/") :]
            for i in list_inputs(f"s3://{bucket}/{pattern}", s3_config)
        ]

    assert names("logs/2024/*/access.log.*") == [
        "logs/2024/01/access.log.gz",
        "logs/2024/02/access.log.zst",
    ]
    assert names("logs/**/*.bz2") == ["logs/2024/02/archive/access.log.bz2"]
    assert names("logs*/*.log") == ["logsX/not-below-logs.log"]
    assert names("**/access.log") == ["logs/2024/01/access.log"]


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("a/*.log", "a/x.log", True),
        ("a/*.log", "a/b/x.log", False),  # "*" stays within one folder
        ("a/**/x.log", "a/x.log", True),  # "**" also matches no folder at all
        ("a/**/x.log", "a/b/c/x.log", True),
        ("a/?.log", "a/xy.log", False),
        ("[!x]*.log", "y.log", True),
        ("[!x]*.log", "x.log", False),
        ("day-[0-3][0-9].log", "day-17.log", True),
        ("a+b(1).log", "a+b(1).log", True),  # regex characters are literal
        ("odd[.log", "odd[.log", True),  # an unclosed "[" is literal
    ],
)
def test_glob_semantics(pattern: str, key: str, matches: bool) -> None:
    assert bool(_glob_regex(pattern).match(key)) is matches


def test_version_changes_when_an_object_is_overwritten(
    s3_client: Any, s3_bucket: str, s3_config: Config
) -> None:
    uri = f"s3://{s3_bucket}/app/today.log"
    s3_client.put_object(Bucket=s3_bucket, Key="app/today.log", Body=b"first\n")
    [before] = list_inputs(uri, s3_config)
    # Last-Modified has one-second resolution (on AWS too), so let the clock move on.
    time.sleep(1.1)
    s3_client.put_object(Bucket=s3_bucket, Key="app/today.log", Body=b"other\n")  # same size
    [after] = list_inputs(uri, s3_config)

    assert before.size == after.size
    assert after.version != before.version
    assert after.fingerprint != before.fingerprint
    assert after.open().read() == b"other\n"


def test_missing_bucket_names_it(make_bucket: Callable[..., str], s3_config: Config) -> None:
    for spec in ("s3://no-such-bucket-loglake/logs", "s3://no-such-bucket-loglake/*.log"):
        with pytest.raises(
            SourceError, match="bucket 'no-such-bucket-loglake' does not exist"
        ) as err:
            list(list_inputs(spec, s3_config))
        assert spec in str(err.value)
        assert "endpoint_url" in str(err.value)


def test_empty_prefix_and_empty_bucket_are_errors(
    loaded_bucket: tuple[str, dict[str, bytes]], make_bucket: Callable[..., str], s3_config: Config
) -> None:
    bucket, _ = loaded_bucket
    with pytest.raises(SourceError, match=f"no S3 objects under s3://{bucket}/nothing/here"):
        list(list_inputs(f"s3://{bucket}/nothing/here", s3_config))
    # a folder holding only a directory marker is empty too
    with pytest.raises(SourceError, match="no S3 objects under"):
        list(list_inputs(f"s3://{bucket}/logs/2024/empty-folder", s3_config))
    empty = make_bucket()
    with pytest.raises(SourceError, match=f"no S3 objects under s3://{empty}"):
        list(list_inputs(f"s3://{empty}", s3_config))
    with pytest.raises(SourceError, match="no S3 object matches"):
        list(list_inputs(f"s3://{bucket}/logs/*.csv", s3_config))


@pytest.mark.parametrize("spec", ["s3://", "s3:///key"])
def test_uri_without_bucket(spec: str, s3_config: Config) -> None:
    with pytest.raises(SourceError, match="no bucket"):
        list(list_inputs(spec, s3_config))


def test_closed_port_is_a_source_error_with_the_fix(tmp_path: Path, s3_env: dict[str, str]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = load_config(
        home=tmp_path, environ={**s3_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    )

    with pytest.raises(SourceError) as err:
        list(list_inputs("s3://some-bucket/logs", config))

    message = str(err.value)
    assert "cannot reach S3" in message
    assert "s3://some-bucket/logs" in message
    assert "AWS_ENDPOINT_URL" in message


def test_keys_from_loglake_toml(
    tmp_path: Path,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "loglake.toml").write_text(
        f'[s3]\nendpoint_url = "{s3_env["AWS_ENDPOINT_URL"]}"\nregion = "us-east-1"\n'
        'access_key_id = "testing"\nsecret_access_key = "testing"\n'
    )
    s3_client.put_object(Bucket=s3_bucket, Key="a.log", Body=b"hello\n")

    [inp] = list_inputs(f"s3://{s3_bucket}/a.log", load_config(home=tmp_path, environ={}))

    assert inp.open().read() == b"hello\n"


def test_half_given_keys_in_config(tmp_path: Path) -> None:
    (tmp_path / "loglake.toml").write_text('[s3]\naccess_key_id = "AKIA..."\n')
    with pytest.raises(SourceError, match="must be set together"):
        list(list_inputs("s3://bucket/logs", load_config(home=tmp_path, environ={})))


def test_no_credentials_is_a_source_error_with_the_fix(
    tmp_path: Path,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    s3_client: Any,
    s3_bucket: str,
    s3_config: Config,
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="private.log", Body=b"secret\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))

    # Unsigned requests may not read a private object, on moto as on AWS.
    with pytest.raises(SourceError, match="AWS_ACCESS_KEY_ID") as err:
        list(list_inputs(f"s3://{s3_bucket}/private.log", s3_config))
    assert f"s3://{s3_bucket}/private.log" in str(err.value)


def test_refused_keys_are_a_source_error_with_the_fix(
    tmp_path: Path, s3_env: dict[str, str], start_moto_server: Callable[..., Any]
) -> None:
    # A second server that enforces authentication: moto knows no IAM user with key "testing".
    with start_moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        config = load_config(home=tmp_path, environ={**s3_env, "AWS_ENDPOINT_URL": endpoint})
        with pytest.raises(SourceError, match="denied") as err:
            list(list_inputs("s3://locked-bucket/logs", config))
    assert "access_key_id" in str(err.value)
    assert "s3://locked-bucket/logs" in str(err.value)


def test_object_deleted_after_listing(s3_client: Any, s3_bucket: str, s3_config: Config) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="gone.log", Body=b"soon gone\n")
    [inp] = list_inputs(f"s3://{s3_bucket}/gone.log", s3_config)
    s3_client.delete_object(Bucket=s3_bucket, Key="gone.log")

    with pytest.raises(SourceError, match=f"s3://{s3_bucket}/gone.log"):
        inp.open()
