"""A safety net under every server test: a server the test started and did not stop (it failed
before its ``finally``, or forgot) is killed at teardown, so none outlives its test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving import RUNNING


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    before = list(RUNNING)  # servers of module-scoped fixtures stay for the next tests
    yield
    for server in [s for s in RUNNING if s not in before]:
        server.kill()
        RUNNING.remove(server)
