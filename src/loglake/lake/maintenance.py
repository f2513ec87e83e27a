"""Table maintenance that keeps frequently committed tables fast.

Measured (ARCHITECTURE.md): one small append every 2 s, plain, took 0.85 s per append and 94 MB of
metadata after 500 commits; with manifest merging, metadata clean-up after commit and expiring
snapshots every 50 commits (keeping the last 10), appends stayed near 60 ms. Manifest merging and
metadata clean-up are table properties (lake/catalog.py); snapshot expiry is done here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.table import Table

OFFSET_PREFIX = "loglake.offset."


def expire_snapshots(table: Table, keep_last: int = 10) -> int:
    """Expire all but the ``keep_last`` newest snapshots; returns how many were expired.

    The newest snapshot carrying each stream's offset (``loglake.offset.*`` in its summary) is always
    kept too, because delivery resumes from it after a restart: expiring it would lose the position.
    """
    snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number or 0)
    keep = {s.snapshot_id for s in snapshots[-keep_last:]}
    current = table.current_snapshot()
    if current is not None:
        keep.add(current.snapshot_id)
    latest_by_key: dict[str, int] = {}
    for snap in snapshots:  # oldest first: later ones overwrite
        props = snap.summary.additional_properties if snap.summary is not None else {}
        for key in props:
            if key.startswith(OFFSET_PREFIX):
                latest_by_key[key] = snap.snapshot_id
    keep.update(latest_by_key.values())
    expired = [s.snapshot_id for s in snapshots if s.snapshot_id not in keep]
    if expired:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    return len(expired)
