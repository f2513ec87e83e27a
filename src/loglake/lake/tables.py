"""The lake tables one process writes: one commit lock per table, and what runs after each commit.

Several writers may commit to one table (two streams writing ``logs.access``; every stream, and
batch ingest, writing ``logs.rejected``; maintenance rewriting files). Within a process they take
turns under that table's lock and commit on top of the newest metadata any of them saw, so no
commit is refused because another writer of the same process moved the table on. After each
commit, the hooks registered with :meth:`Tables.on_commit` run (the query engine keeps its plan
cache current with one; the maintenance schedule counts commits with another), so no writer has to
know who else cares.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

#: ``hook(name, table, before, added)``: ``table`` as committed, ``before`` the metadata location
#: the commit started from (None for a rewrite such as compaction), ``added`` the data files the
#: commit appended (empty for a rewrite: hooks then re-read the table).
CommitHook = Callable[[str, "Table", "str | None", "list[DataFile]"], None]


@dataclass
class SharedTable:
    """One table's lock and the newest table object any writer of this process committed."""

    name: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    latest: Table | None = None

    def newest(self, table: Table | None) -> Table | None:
        """``table`` or the shared one, whichever is newer (hold :attr:`lock`)."""
        if self.latest is None:
            return table
        if table is None or _updated_ms(self.latest) > _updated_ms(table):
            return self.latest
        return table

    def seen(self, table: Table) -> None:
        """Remember ``table`` if it is newer than what is shared (hold :attr:`lock`)."""
        if self.latest is None or _updated_ms(table) >= _updated_ms(self.latest):
            self.latest = table


class Tables:
    """Every table of the lake that this process writes. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[str, SharedTable] = {}
        self._hooks: list[CommitHook] = []

    def get(self, name: str) -> SharedTable:
        """The shared state of table ``name`` (created on first use)."""
        with self._lock:
            shared = self._tables.get(name)
            if shared is None:
                shared = self._tables[name] = SharedTable(name)
            return shared

    def names(self) -> list[str]:
        with self._lock:
            return list(self._tables)

    def on_commit(self, hook: CommitHook) -> None:
        """Run ``hook`` after every commit to any table (in the committing thread, under the
        table's lock). A hook that raises is logged; the commit stands."""
        self._hooks.append(hook)

    def committed(self, name: str, table: Table, before: str | None, added: list[DataFile]) -> None:
        """Called by a writer right after it committed ``table`` (holding its lock)."""
        self.get(name).seen(table)
        for hook in list(self._hooks):
            try:
                hook(name, table, before, added)
            except Exception as exc:  # a cache or schedule must never undo a commit
                log.warning(
                    "after the commit to %s: %s failed: %s",
                    name,
                    getattr(hook, "__qualname__", hook),
                    exc,
                    exc_info=True,
                    extra={"fields": {"table": name, "reason": str(exc)}},
                )


def _updated_ms(table: Table) -> int:
    return int(table.metadata.last_updated_ms)
