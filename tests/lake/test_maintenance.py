"""Table maintenance: compaction keeps every row exactly once; expiry keeps stream offsets."""

from __future__ import annotations

from pathlib import Path

from loglake.config import load_config
from loglake.ingest import ingest
from loglake.lake.catalog import open_catalog
from loglake.lake.consumer import committed_offset, offset_property
from loglake.lake.maintenance import (
    COMPACT_MIN_FILES,
    compact,
    expire_snapshots,
    remove_orphans,
)
from loglake.lake.writer import TableWriter
from loglake.query.engine import Connection

LINE = '10.0.0.{n} - - [01/Jan/2024:10:{m:02d}:00 +0000] "GET /p/{n} HTTP/1.1" 200 {n} "-" "x"\n'


def _small_ingests(home: Path, count: int) -> None:
    config = load_config(home=home, environ={})
    for i in range(count):
        src = home.parent / f"part-{i}.log"
        src.write_text("".join(LINE.format(n=i * 10 + k, m=k) for k in range(10)))
        ingest(config, [str(src)], format="combined")


def _rows(home: Path) -> list[tuple[object, ...]]:
    with Connection(load_config(home=home, environ={})) as con:
        return con.sql("SELECT path, bytes, ts, source FROM logs.access ORDER BY path").fetchall()


def test_compaction_merges_small_files_and_keeps_every_row_once(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    _small_ingests(home, COMPACT_MIN_FILES + 2)
    before = _rows(home)
    assert len(before) == (COMPACT_MIN_FILES + 2) * 10
    catalog = open_catalog(load_config(home=home, environ={}))
    table = catalog.load_table("logs.access")
    assert len(list(table.scan().plan_files())) == COMPACT_MIN_FILES + 2
    removed, written = compact(catalog, table, "logs.access")
    assert (removed, written) == (COMPACT_MIN_FILES + 2, 1)
    table = catalog.load_table("logs.access")
    assert len(list(table.scan().plan_files())) == 1
    assert _rows(home) == before  # same rows, none twice, none missing
    assert compact(catalog, table, "logs.access") == (0, 0)  # nothing left to do


def test_expiry_keeps_the_latest_offset_snapshot(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    _small_ingests(home, 1)
    config = load_config(home=home, environ={})
    catalog = open_catalog(config)
    table = catalog.load_table("logs.access")
    import polars as pl

    frame = pl.DataFrame(table.scan(limit=1).to_arrow())
    writer = TableWriter(lambda: (catalog, table), "logs.access", 10**9)
    writer.add(frame)
    writer.commit({offset_property("web"): "42"})  # a stream's commit, then many others
    for _ in range(15):
        writer.add(frame)
        writer.commit({"note": "batch"})
    writer.close()
    table = catalog.load_table("logs.access")
    assert expire_snapshots(table, keep_last=5) > 0
    table = catalog.load_table("logs.access")
    assert committed_offset(table, "web") == 42
    assert len(table.snapshots()) == 6  # the last 5 and the stream's offset snapshot


def test_files_no_snapshot_references_are_removed_after_expiry(tmp_path: Path) -> None:
    home = tmp_path / "lake"
    _small_ingests(home, COMPACT_MIN_FILES)
    before = _rows(home)
    catalog = open_catalog(load_config(home=home, environ={}))
    table = catalog.load_table("logs.access")
    folder = Path(table.location().removeprefix("file://"))
    old_files = sorted((folder / "data").rglob("*.parquet"))
    assert len(old_files) == COMPACT_MIN_FILES
    compact(catalog, table, "logs.access")
    table = catalog.load_table("logs.access")
    assert remove_orphans(table) == (0, 0)  # still referenced by older snapshots, and too young
    expire_snapshots(table, keep_last=1)
    table = catalog.load_table("logs.access")
    assert remove_orphans(table, older_than_s=3600) == (0, 0)  # unreferenced but too young
    deleted, freed = remove_orphans(table, older_than_s=0)
    assert deleted >= COMPACT_MIN_FILES and freed > 0
    assert not any(f.exists() for f in old_files)  # the compacted-away data files are gone
    left = sorted((folder / "data").rglob("*.parquet"))
    assert [
        Path(t.file.file_path.removeprefix("file://")) for t in table.scan().plan_files()
    ] == left
    assert _rows(home) == before  # the table still reads every row once
    avro = {p.name for p in (folder / "metadata").glob("*.avro")}
    snap = table.current_snapshot()
    assert snap is not None
    wanted = {Path(snap.manifest_list).name} | {
        Path(m.manifest_path).name for m in snap.manifests(table.io)
    }
    assert avro == wanted  # manifests and manifest lists of expired snapshots are gone
