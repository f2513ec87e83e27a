"""``[crawl]``: how ``loglake crawl`` names, limits and evolves the tables it registers; and
``[crawls.NAME]``: crawls that ``loglake serve`` runs on a schedule (:class:`ScheduledCrawlConfig`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from loglake.config.jobs import Schedule
from loglake.config.parse import SettingError, build, tables_of
from loglake.config.queries import QUERY_NAME
from loglake.errors import ConfigError

SCHEMA_CHANGES = ("update", "log")
#: What ``loglake crawl --table`` accepts (the crawler's own names are lower case too).
CRAWL_TABLE = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*")


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


@dataclass(frozen=True)
class ScheduledCrawlConfig:
    """One crawl run by ``loglake serve`` on a schedule (``[crawls.NAME]``), as ``loglake crawl
    PATHS... [--table TABLE]`` would run it by hand.

    ``paths``: include paths, absolute folders (``~`` expanded) or ``s3://bucket/prefix/`` URIs.
    ``table``: one table for everything crawled (``""``: one per path, as the crawler names them).
    ``schedule``: ``every D`` or ``daily HH:MM`` (UTC), parsed as jobs' schedules are.
    ``convert``: copy local Parquet and CSV into the lake (``loglake crawl --convert``) instead of
    registering them in place. Raises :class:`SettingError` naming the key for a value that
    cannot be used.
    """

    paths: tuple[str, ...] = ()
    table: str = ""
    schedule: str = ""
    convert: bool = False

    def __post_init__(self) -> None:
        where = "crawls.NAME"
        if not self.paths:
            raise SettingError(where, "paths", " is empty: list folders or s3:// prefixes to crawl")
        expanded = []
        for path in self.paths:
            if not path.startswith("s3://"):
                path = os.path.expanduser(path)
                if not os.path.isabs(path):
                    raise SettingError(
                        where,
                        "paths",
                        f": {path[:200]!r} is relative; write an absolute folder (the server's "
                        "working directory is no place to rely on) or an s3://bucket/prefix/ URI",
                    )
            expanded.append(path)
        object.__setattr__(self, "paths", tuple(expanded))
        if self.table and not CRAWL_TABLE.fullmatch(self.table):
            raise SettingError(
                where,
                "table",
                f" = {self.table[:100]!r}; write NAMESPACE.NAME in lower case letters, digits, _",
            )
        hint = "write 'every 1h', 'every 15m' or 'daily 02:00' (UTC)"
        try:
            spec = Schedule.parse(self.schedule, "")
        except ConfigError:
            raise SettingError(
                where, "schedule", f" = {self.schedule[:100]!r} is not a schedule; {hint}"
            ) from None
        if not spec.scheduled:
            raise SettingError(
                where,
                "schedule",
                f" is missing: {hint}; to crawl once, run loglake crawl PATH instead",
            )

    @property
    def schedule_spec(self) -> Schedule:
        return Schedule.parse(self.schedule, "schedule")


def crawls_section(raw: Any) -> dict[str, ScheduledCrawlConfig]:
    """The ``[crawls]`` section of the file: NAME -> :class:`ScheduledCrawlConfig`; ConfigError
    naming the crawl or key that is wrong."""
    out = {}
    for name, settings in tables_of("crawls", raw, "[crawls.landing]").items():
        if not QUERY_NAME.fullmatch(name):
            raise ConfigError(
                f"[crawls.{name[:100]}]: crawl names are 1-128 letters, digits, '_' and '-'"
            )
        out[name] = build(ScheduledCrawlConfig, f"crawls.{name}", settings)
    return out
