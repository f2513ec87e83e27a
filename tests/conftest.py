"""Shared fixtures: the real sample logs, a fresh LOGLAKE_HOME, and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run first, each in its module's order (the sort is stable).

    For a run that takes them with the others (``-m "slow or not slow"``): with several workers it
    would otherwise end waiting on the one long test handed out last.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the project (CI has the same layout)."""
    assert SHARED_DATA.is_dir(), f"sample data missing: {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """An empty LOGLAKE_HOME for one test."""
    path = tmp_path / "lake"
    path.mkdir()
    return path


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture()
def run_cli(home: Path) -> RunCli:
    """Run ``loglake ARGS`` as a real subprocess with LOGLAKE_HOME = ``home``.

    ``check=True`` (default) fails the test with the command's stderr when it exits non-zero.
    """

    def run(
        *args: str,
        check: bool = True,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "LOGLAKE_HOME": str(home), **(env or {})}
        full_env.pop("LOGLAKE_CONFIG", None)
        raw = subprocess.run(
            [sys.executable, "-m", "loglake.cli", *args],
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True,
            env=full_env,
            timeout=600,
        )
        proc = subprocess.CompletedProcess(
            raw.args,
            raw.returncode,
            raw.stdout.decode("utf-8", errors="replace"),
            raw.stderr.decode("utf-8", errors="replace"),
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"loglake {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    return run
