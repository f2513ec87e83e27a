"""Fixtures for sources that talk to S3: a real moto server in a subprocess, never mocks in-process.

pyarrow's S3 client is C++ (the AWS SDK), so in-process patching (``moto.mock_aws``) cannot
intercept it; a moto server on 127.0.0.1 is an S3-compatible endpoint that both pyarrow and boto3
reach over HTTP, exactly like MinIO or AWS would be.

Fixtures, from the bottom up:

* ``s3_server`` (session): endpoint URL of a moto server, e.g. ``"http://127.0.0.1:41234"``.
* ``s3_client`` (session): a boto3 S3 client on that server, to arrange test data only.
* ``make_bucket`` (function): factory ``make_bucket(prefix="loglake-test") -> name`` creating a
  uniquely named, empty bucket, so tests sharing the server never see each other's objects.
* ``s3_bucket`` (function): one fresh bucket name, i.e. ``make_bucket()``.
* ``s3_env`` (function): sets ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` = ``testing``,
  ``AWS_DEFAULT_REGION`` = ``us-east-1`` and ``AWS_ENDPOINT_URL`` = the server in ``os.environ``
  (pyarrow's SDK reads them) and returns them as a dict, to pass to ``load_config(environ=...)``.
* ``s3_config`` (function): ``load_config(home=tmp_path, environ=s3_env)``, i.e. a Config whose
  ``s3.endpoint_url`` is the server and whose credentials come from the environment.

* ``start_moto_server`` (function): ``with start_moto_server({"VAR": "value"}) as endpoint:`` runs
  a private server with other settings, e.g. ``{"INITIAL_NO_AUTH_ACTION_COUNT": "0"}`` to enforce
  authentication (about a second to start; stopped when the ``with`` block ends).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from loglake.config import Config, load_config

TEST_REGION = "us-east-1"
TEST_KEY = "testing"

# Environment that could point the AWS SDK somewhere else than the test server, or add a token
# the test keys do not go with; removed by ``s3_env``.
_FOREIGN_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
)


def _free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the OS picks it; a race is retried by the caller)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    """True once an HTTP server answers at ``url`` (any status counts: it is up)."""
    # No proxy: a developer's HTTP_PROXY must not swallow requests to 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextlib.contextmanager
def moto_server(
    log_path: Path, env: Mapping[str, str] | None = None, timeout_s: float = 30.0
) -> Iterator[str]:
    """Run ``python -m moto.server`` on 127.0.0.1 and a free port; yield its endpoint URL.

    The server's output goes to ``log_path`` (not a pipe: moto logs every request and would block
    once an unread pipe fills). ``env`` adds environment variables for the server. The process is
    terminated on exit. Raises RuntimeError, with the log, if it does not answer in ``timeout_s``.
    """
    last_log = ""
    for _attempt in range(3):  # another process may grab the port between probe and bind
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        try:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(f"{url}/moto-api/"):
                    yield url
                    return
                time.sleep(0.1)
            last_log = log_path.read_text(errors="replace")[-2000:]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    raise RuntimeError(f"moto server did not start; its last output:\n{last_log}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL (``http://127.0.0.1:PORT``) of a moto S3 server shared by the whole session."""
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    with moto_server(log_path) as url:
        yield url


@pytest.fixture
def start_moto_server(
    tmp_path: Path,
) -> Callable[[Mapping[str, str] | None], contextlib.AbstractContextManager[str]]:
    """Factory for a private moto server: ``with start_moto_server(env) as endpoint_url: ...``."""

    def start(env: Mapping[str, str] | None = None) -> contextlib.AbstractContextManager[str]:
        log_path = tmp_path / f"moto-{uuid.uuid4().hex[:8]}.log"
        return moto_server(log_path, env)

    return start


@pytest.fixture(scope="session")
def s3_client(s3_server: str) -> Any:
    """A boto3 S3 client on the test server, to arrange test data (loglake itself uses pyarrow)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name=TEST_REGION,
        aws_access_key_id=TEST_KEY,
        aws_secret_access_key=TEST_KEY,
    )


@pytest.fixture
def make_bucket(s3_client: Any) -> Callable[..., str]:
    """Factory creating an empty bucket with a unique name and returning that name.

    Buckets are not deleted: the server is private to the session and dies with it.
    """

    def make(prefix: str = "loglake-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        s3_client.create_bucket(Bucket=name)
        return name

    return make


@pytest.fixture
def s3_bucket(make_bucket: Callable[..., str]) -> str:
    """Name of a fresh, empty bucket on the test server."""
    return make_bucket()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_server: str) -> dict[str, str]:
    """Point the AWS environment at the test server with the test keys; return those variables.

    Set in ``os.environ`` (the AWS SDK inside pyarrow reads it) and returned as a dict for
    ``load_config(environ=...)``, where ``AWS_ENDPOINT_URL`` becomes ``[s3] endpoint_url``.
    """
    for name in _FOREIGN_AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": TEST_KEY,
        "AWS_SECRET_ACCESS_KEY": TEST_KEY,
        "AWS_DEFAULT_REGION": TEST_REGION,
        "AWS_ENDPOINT_URL": s3_server,
        # Never wait on the EC2 metadata service when a test removes the keys.
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_config(tmp_path: Path, s3_env: dict[str, str]) -> Config:
    """A Config for the test server: endpoint from ``AWS_ENDPOINT_URL``, keys from the env."""
    return load_config(home=tmp_path / "home", environ=s3_env)
