"""Waiting on a condition in tests: poll until it holds, fail with what was awaited at a deadline.

Tests wait on something observable (a count reached, a file written, a window emitted), never
for a fixed time: a sleep is too short on a busy machine and wasted on an idle one. Deadlines are
generous, since they only matter when the test is failing anyway.

Imported as a plain module (``from waiting import wait_for``): ``tests/`` is on ``sys.path``
because ``tests/conftest.py`` lives there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEADLINE_S = 120.0


def wait_for(
    check: Callable[[], object],
    what: str = "the condition",
    timeout: float = DEADLINE_S,
    interval: float = 0.02,
) -> None:
    """Call ``check`` every ``interval`` seconds until it returns something true.

    Raises AssertionError naming ``what`` when ``timeout`` seconds pass first; an exception
    raised by ``check`` propagates at once.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
