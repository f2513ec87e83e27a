"""``[crawl]``: how ``loglake crawl`` names, limits and evolves the tables it registers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from loglake.config.parse import SettingError

SCHEMA_CHANGES = ("update", "log")


@dataclass(frozen=True)
class CrawlConfig:
    """The crawler's settings.

    ``namespace``: where the tables of crawled paths go (``NAMESPACE.<folder name>``).
    ``max_tables``: a crawl that would create more tables than this is refused before anything is
    written. ``schema_change``: ``update`` adds the columns new files bring, ``log`` only reports
    them (the new files are registered without those columns).
    """

    namespace: str = "crawled"
    max_tables: int = 20
    schema_change: str = "update"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.namespace):
            raise SettingError(
                "crawl", "namespace", f" = {self.namespace!r}; use lower case letters, digits, _"
            )
        if self.max_tables < 1:
            raise SettingError("crawl", "max_tables", f" = {self.max_tables!r}; use 1 or more")
        if self.schema_change not in SCHEMA_CHANGES:
            raise SettingError(
                "crawl",
                "schema_change",
                f" = {self.schema_change!r}; use one of: {', '.join(SCHEMA_CHANGES)}",
            )
