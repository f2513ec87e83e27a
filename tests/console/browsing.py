"""Helpers of the console's end-to-end tests (tests/console/): the browser, generated data,
opening a page, screenshots for the docs. The fixtures are in tests/console/conftest.py."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from serving import Server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOC_IMAGES = ROOT / "docs" / "images"
#: Lines of generated access log in the shared lake: two days' worth ending now.
LINES = 20_000
SPAN = timedelta(days=2)


def chromium_path() -> str:
    """Debian's chromium (``apt-get install chromium``; .ci/run installs it)."""
    found = os.environ.get("LOGLAKE_CHROMIUM") or shutil.which("chromium")
    assert found, "the console tests need Debian's chromium: apt-get install chromium"
    return found


def generated_home(home: Path, lines: int = LINES) -> Path:
    """A data home whose lake holds ``lines`` generated combined access-log lines in logs.access,
    ending about now (so that "last 24 hours" finds records)."""
    from loglake.config import load_config
    from loglake.generate import generate_to
    from loglake.ingest import ingest

    home.mkdir(parents=True, exist_ok=True)
    log = home / "access.log"
    start = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - SPAN
    with log.open("wb") as fh:
        generate_to(fh, lines, rate=lines / SPAN.total_seconds(), start=start, seed=7)
    ingest(load_config(home=home, environ={}), [str(log)], format="combined")
    return home


def open_page(page: Any, server: Server, path: str) -> None:
    """Go to ``path`` of the console and wait until its page module has mounted."""
    page.goto(server.url + path)
    page.wait_for_selector("#page[data-ready='true']")


def doc_screenshot(page: Any, name: str) -> Path:
    """Save the page as docs/images/console-``name``.png (the pictures of docs/console.md)."""
    DOC_IMAGES.mkdir(parents=True, exist_ok=True)
    path = DOC_IMAGES / f"console-{name}.png"
    page.screenshot(path=str(path))
    return path


def watch_hosts(context: Any, url: str) -> list[str]:
    """Record every request that any page of the browser ``context`` makes to a host other than
    ``url``'s; the returned list fills as they happen (the console must work offline)."""
    own = urlsplit(url).netloc
    foreign: list[str] = []

    def watch(req: Any) -> None:
        parts = urlsplit(req.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != own:
            foreign.append(req.url)

    context.on("request", watch)
    return foreign
