"""The console's explore page: its API routes (being built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from loglake.server.console.web import Console


def routes(console: Console) -> list[BaseRoute]:
    """The routes of this page's API."""
    return []
