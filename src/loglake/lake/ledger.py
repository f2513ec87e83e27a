"""The ingest ledger: which inputs (path + size + mtime/ETag) are already in the lake.

Each ingest run writes its inputs here as *pending* with the run id before committing; the run id also
goes into the summary of the Iceberg snapshot that holds the data. A pending run is settled by looking
for that snapshot: found means done, missing means the commit never happened. So a crash between the
commit and the ledger update can neither lose an input nor make it count twice. When the snapshot
cannot be looked for (catalog unreachable or locked), the run stays pending until it can.

An input whose reading failed part-way (a truncated download, a connection lost mid-object) is
recorded in ``partial`` with the last line stored: the next run of the same input goes on after that
line, so each of its lines is stored once.
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
CREATE TABLE IF NOT EXISTS partial (
    fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    tables TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    upto INTEGER NOT NULL,
    error TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (fingerprint, run_id)
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
        return any(
            self._db.execute(f"SELECT 1 FROM {table} WHERE state = 'pending' LIMIT 1").fetchone()
            for table in ("inputs", "partial")
        )

    def is_done(self, fingerprint: str) -> bool:
        row = self._db.execute(
            "SELECT state FROM inputs WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
        return bool(row and row[0] == "done")

    def resume_after(self, fingerprint: str) -> int:
        """The last line of an input already stored by runs whose reading of it failed; else 0."""
        row = self._db.execute(
            "SELECT max(upto) FROM partial WHERE fingerprint = ? AND state = 'done'", (fingerprint,)
        ).fetchone()
        return int(row[0] or 0)

    def mark_pending(
        self,
        run_id: str,
        items: Iterable[tuple[str, str, int]],
        tables: Iterable[str],
        partial: Iterable[tuple[str, str, int, str]] = (),
    ) -> None:
        """Record ``(fingerprint, name, lines)`` inputs read whole, and ``(fingerprint, name,
        last line stored, error)`` inputs whose reading failed part-way, as pending for ``run_id``.
        """
        table_list = ",".join(sorted(set(tables)))
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO inputs VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                [(fp, name, run_id, table_list, lines, now) for fp, name, lines in items],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO partial VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                [(fp, run_id, name, table_list, upto, err, now) for fp, name, upto, err in partial],
            )

    def forget(self, keys: Iterable[str]) -> None:
        """Forget every input recorded under these keys (paths), whatever its size and time: a
        file that is gone, so that it is read again if it ever comes back."""
        with self._db:
            for key in keys:
                prefix = f"{key}|"
                self._db.execute(
                    "DELETE FROM inputs WHERE substr(fingerprint, 1, length(?)) = ?",
                    (prefix, prefix),
                )

    def mark_done(self, run_id: str) -> None:
        """The run's commit landed: its inputs are in the lake (partial ones up to their line)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE inputs SET state = 'done' WHERE run_id = ?", (run_id,))
            self._db.execute("UPDATE partial SET state = 'done' WHERE run_id = ?", (run_id,))
            # An input now read whole needs its earlier partial records no more.
            self._db.execute(
                "DELETE FROM partial WHERE fingerprint IN "
                "(SELECT fingerprint FROM inputs WHERE run_id = ? AND state = 'done')",
                (run_id,),
            )

    def settle(self, committed: Callable[[str, str], bool]) -> None:
        """Resolve pending runs left by a crash: ``committed(table, run_id)`` says if it landed.

        ``committed`` returns False only when the commit certainly did not happen (no such table,
        no snapshot of the run): then the run's inputs are forgotten and get ingested again. When it
        raises (the catalog cannot be asked), the error propagates and the run stays pending, so an
        input is never ingested twice because of a passing catalog error.
        """
        rows = self._db.execute(
            "SELECT DISTINCT run_id, tables FROM inputs WHERE state = 'pending' "
            "UNION SELECT DISTINCT run_id, tables FROM partial WHERE state = 'pending'"
        ).fetchall()
        for run_id, tables in rows:
            names = [t for t in tables.split(",") if t]
            if names and all(committed(t, run_id) for t in names):
                self.mark_done(run_id)
            else:
                with self._db:
                    self._db.execute("BEGIN")
                    for table in ("inputs", "partial"):
                        self._db.execute(
                            f"DELETE FROM {table} WHERE run_id = ? AND state = 'pending'",
                            (run_id,),
                        )
