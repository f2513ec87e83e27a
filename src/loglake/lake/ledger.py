"""The ingest ledger: which inputs (path + size + mtime/ETag) are already in the lake.

Each ingest run writes its inputs here as *pending* with the run id before committing; the run id also
goes into the summary of the Iceberg snapshot that holds the data. A pending run is settled by looking
for that snapshot: found means done, missing means the commit never happened. So a crash between the
commit and the ledger update can neither lose an input nor make it count twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    fingerprint TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    run_id TEXT NOT NULL,
    tables TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    lines INTEGER NOT NULL,
    at REAL NOT NULL
);
"""


class Ledger:
    """SQLite file under the state folder; one row per ingested input fingerprint."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def has_pending(self) -> bool:
        return (
            self._db.execute("SELECT 1 FROM inputs WHERE state = 'pending' LIMIT 1").fetchone()
            is not None
        )

    def is_done(self, fingerprint: str) -> bool:
        row = self._db.execute(
            "SELECT state FROM inputs WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
        return bool(row and row[0] == "done")

    def mark_pending(
        self, run_id: str, items: Iterable[tuple[str, str, int]], tables: Iterable[str]
    ) -> None:
        """Record ``(fingerprint, name, lines)`` inputs as pending for ``run_id``."""
        table_list = ",".join(sorted(set(tables)))
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO inputs VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                [(fp, name, run_id, table_list, lines, now) for fp, name, lines in items],
            )

    def mark_done(self, run_id: str) -> None:
        self._db.execute("UPDATE inputs SET state = 'done' WHERE run_id = ?", (run_id,))

    def settle(self, committed: Callable[[str, str], bool]) -> None:
        """Resolve pending runs left by a crash: ``committed(table, run_id)`` says if it landed."""
        rows = self._db.execute(
            "SELECT DISTINCT run_id, tables FROM inputs WHERE state = 'pending'"
        ).fetchall()
        for run_id, tables in rows:
            names = [t for t in tables.split(",") if t]
            if names and all(committed(t, run_id) for t in names):
                self.mark_done(run_id)
            else:
                self._db.execute(
                    "DELETE FROM inputs WHERE run_id = ? AND state = 'pending'", (run_id,)
                )
