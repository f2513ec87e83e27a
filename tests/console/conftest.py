"""Fixtures of the console's end-to-end tests: a real ``loglake serve`` over generated access logs,
and a real headless browser (Debian's ``chromium`` driven by Playwright; no browser download).

Every page a test opens is watched: a request to any host but the server's own fails the test at
teardown (the console must work offline), and a failing test leaves a screenshot in
``test-artifacts/`` (git-ignored). :func:`doc_screenshot` saves the pictures of docs/console.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from browsing import ARTIFACTS, chromium_path, generated_home, watch_hosts

from serving import RUNNING, Server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)  # read by the page fixture's teardown
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the whole session: Playwright's sync API keeps an
    event loop running in the thread while it is open, and every later test of the same worker
    that calls asyncio.run() would fail."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


CONFIG = """
[syslog]
udp = ""
tcp = ""

[streams.web]
format = "combined"
table = "logs.access"
buffer_seconds = 0.2
"""


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``loglake serve`` over a lake of generated access logs, with the stream ``web`` delivering
    to the same table (for live tests). Module-scoped: the console tests of a module share it."""
    home = generated_home(tmp_path_factory.mktemp("console") / "home")
    server = Server.started(home, CONFIG)
    try:
        yield server
    finally:
        if server.proc is not None:
            server.stop()
        if server in RUNNING:
            RUNNING.remove(server)


@pytest.fixture
def page(browser: Any, console_server: Server, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser page (1280×800) on the console server. Fails the test if the page asked any
    other host for anything; saves a screenshot when the test failed."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    foreign = watch_hosts(context, console_server.url)  # every page of the context, not just pg
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda exc: pg.console_errors.append(str(exc)))  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        failed = any(
            getattr(request.node, f"report_{when}", None) is not None
            and getattr(request.node, f"report_{when}").failed
            for when in ("setup", "call")
        )
        if failed:
            ARTIFACTS.mkdir(exist_ok=True)
            # A screenshot must not hide the test's own failure.
            with contextlib.suppress(Exception):
                pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        context.close()
    assert not foreign, f"the page made requests to other hosts: {foreign[:5]}"
