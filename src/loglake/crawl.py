"""The crawler: catalog data that already sits in folders, the way Glue's crawler does, minus its traps.

``crawl(config, paths)`` lists the files under each include path (through the same source listing as
``loglake ingest``, so an ``s3://`` prefix lists the same way a folder does), samples each new file
to detect its format (Parquet by its magic bytes, then every text log format loglake knows and JSON
lines, then CSV/TSV; compressed or not), infers its schema from the sample, reads partitions from its
path (Hive ``key=value/`` and unnamed ``YYYY/MM/DD[/HH]/`` folders, named year/month/day/hour), and
groups files into tables predictably: one table per include path (split per kind of data when the
path mixes kinds). Schemas merge across files, widening only where no value changes (int32 to int64,
an integer to a double); any other difference is a conflict, reported with the file, and that file
is left out rather than coerced. A file no format fits is reported and left out, never a table.

Registering, unless ``convert`` is asked: Parquet files, local or ``s3://``, are registered where
they lie (Iceberg data files pointing at the user's files, their path partitions as identity
partition values), local CSV/TSV files as an external table (lake/external.py); nothing is copied.
With ``convert``, and for CSV/TSV objects on S3, rows are copied into an Iceberg table with their
path partitions as columns. Log formats and JSON lines always go through the normal ingest pipeline into
the crawl's table (docs/decisions/0014-crawl-in-place.md says why).
Inputs are remembered in the ingest ledger (path + size + mtime), so a re-crawl reads only new files.
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loglake.errors import LoglakeError, SourceError
from loglake.sources import list_inputs

if TYPE_CHECKING:
    import pyarrow as pa

    from loglake.config import Config
    from loglake.sources.base import Input

_SAMPLE_BYTES = 1 << 20  # bytes of a text file read to detect its format and schema
_SAMPLE_LINES = 2000
_PARQUET_MAGIC = b"PAR1"
_CRAWL_RUN = "loglake.crawl-run"
_APPEND_BYTES = 128 << 20  # rows read before they are written as data files of the crawl's commit
IN_PLACE = "in place"  # an Iceberg data file pointing at the user's Parquet file: nothing copied
COPIED = "copied"  # rows copied into the lake's warehouse as new Parquet files
CONVERTED = "converted"  # lines parsed by the ingest pipeline into the lake
_FIELD_ID = b"PARQUET:field_id"
_UNSAFE = "%#?*[]{}"
_S3_WHY = "CSV/TSV objects on S3 are copied: external tables read local files only"
_REMOTE_WHY = "the lake's warehouse is not a local folder"
_WHOLE_TABLE = (_S3_WHY, _REMOTE_WHY)  # reasons that hold for every file of a table


class CrawlError(LoglakeError):
    """A crawl that cannot go on as asked: too many tables, nothing to crawl, a bad table name."""

    status = 400
    code = "crawl_refused"


@dataclass
class CrawledFile:
    """One file the crawl read: where, what it holds, its path partitions and sampled schema."""

    input: Input
    relative: str  # path below the include path, with / separators
    kind: str  # "parquet", "csv", "tsv", or the name of a log format ("json", "combined"...)
    partitions: dict[str, str | int]
    schema: pa.Schema
    mode: str = "copied"  # IN_PLACE, COPIED or CONVERTED: how the file is registered
    why: str | None = None  # why a Parquet file is copied rather than registered in place


@dataclass
class TablePlan:
    """What one table of the crawl is (or will be): its files, partitions and merged schema."""

    name: str
    kind: str
    files: list[CrawledFile] = field(default_factory=list)
    schema: pa.Schema | None = None
    partition_keys: list[str] = field(default_factory=list)
    exists: bool = False
    external: bool = False  # the table is an external table (CSV/TSV registered in place)
    added_columns: list[str] = field(default_factory=list)  # columns new files bring

    @property
    def partitions(self) -> list[str]:
        """The distinct partition paths of the table's files (``year=2024/month=1``...)."""
        seen = {
            "/".join(f"{k}={f.partitions[k]}" for k in self.partition_keys if k in f.partitions)
            for f in self.files
        }
        return sorted(p for p in seen if p)


@dataclass
class CrawlReport:
    """What a crawl found and did: tables, files skipped as already crawled, files left out."""

    tables: list[TablePlan] = field(default_factory=list)
    skipped: int = 0  # files crawled by an earlier run (same path, size and mtime)
    ignored: int = 0  # files below a name starting with _ or . (writers' bookkeeping)
    left_out: dict[str, str] = field(default_factory=dict)  # file -> why it was not registered
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows registered by this run
    # table -> files it registered in place below a crawled path that no longer exist: a crawl
    # removes them from the table, which would otherwise fail every query reading them.
    gone: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self, planned: bool) -> list[str]:
        """The report as text lines, for the CLI."""
        out: list[str] = []
        verb = "would register" if planned else "registered"
        for t in self.tables:
            state = "existing" if t.exists else "new"
            out.append(f"table {t.name} ({state}, {t.kind}): {len(t.files)} new file(s)")
            if t.partition_keys:
                out.append(f"  partition keys: {', '.join(t.partition_keys)}")
                parts = t.partitions
                shown = ", ".join(parts[:10]) + (
                    f", ... ({len(parts)} in all)" if len(parts) > 10 else ""
                )
                out.append(f"  partitions: {shown}")
            if t.schema is not None:
                cols = ", ".join(f"{f.name} {_type_name(f.type)}" for f in t.schema)
                out.append(f"  schema: {cols}")
            if t.added_columns:
                out.append(f"  new columns: {', '.join(t.added_columns)}")
            out.extend(f"  {line}" for line in _mode_lines(t))
            if not planned and t.name in self.rows:
                out.append(f"  {verb} {self.rows[t.name]:,} row(s)")
        for name, paths in sorted(self.gone.items()):
            shown = ", ".join(paths[:3]) + (
                f", ... ({len(paths)} in all)" if len(paths) > 3 else ""
            )
            out.append(
                f"table {name}: {len(paths)} file(s) registered in place are gone, "
                f"{'would be ' if planned else ''}removed from the table: {shown}"
            )
        for name, why in self.left_out.items():
            out.append(f"left out {name}: {why}")
        out.append(
            f"{len(self.tables)} table(s), {sum(len(t.files) for t in self.tables)} new file(s), "
            f"{self.skipped} already crawled, {len(self.left_out)} left out"
            + (f", {self.ignored} ignored (names starting with _ or .)" if self.ignored else "")
        )
        return out


def _mode_lines(t: TablePlan) -> list[str]:
    """How the table's files are registered: in place, copied (and why), converted."""
    what = {
        IN_PLACE: "in place (the files stay where they are; nothing is copied)",
        COPIED: "copied into the lake",
        CONVERTED: "converted through the ingest pipeline",
    }
    counts: dict[tuple[str, str | None], int] = {}
    for f in t.files:
        counts[(f.mode, f.why)] = counts.get((f.mode, f.why), 0) + 1
    return [
        f"{n} file(s) {what[mode]}" + (f": {why}" if why else "")
        for (mode, why), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]


def _type_name(dtype: pa.DataType) -> str:
    """Arrow's type name without the storage detail (``large_string`` is a string)."""
    name = str(dtype)
    return {"large_string": "string", "large_binary": "binary"}.get(name, name)


# -- detection -------------------------------------------------------------------------------------


def _read_head(inp: Input) -> tuple[bytes, bool]:
    """The first bytes of ``inp`` as stored, and up to ``_SAMPLE_BYTES`` of it decompressed (whole
    lines); the flag says whether the head is a Parquet file."""
    from loglake.sources.base import open_decompressed

    raw = inp.open()
    try:
        stream, _ = open_decompressed(raw)
        magic = stream.read(4)
        if magic == _PARQUET_MAGIC:  # read no further: the schema comes from the footer
            return b"", True
        data = magic + stream.read(_SAMPLE_BYTES - len(magic))
    finally:
        raw.close()
    if len(data) == _SAMPLE_BYTES and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]  # a cut line would look malformed
    return data, False


def _read_parquet(inp: Input, columns: list[str] | None = None) -> pa.Table:
    import pyarrow.parquet as pq

    with inp.open() as raw:
        return pq.read_table(io.BytesIO(raw.read()), columns=columns)


def _parquet_schema(inp: Input) -> pa.Schema:
    import pyarrow.parquet as pq

    with inp.open() as raw:
        # A seekable file gives its footer alone; a stream (an S3 object) is read whole.
        seekable = getattr(raw, "seekable", lambda: False)()
        return pq.read_schema(raw if seekable else io.BytesIO(raw.read()))


_HEADER = re.compile(r"^[A-Za-z_][\w.:/-]{0,127}$")


def _delimited(sample: bytes) -> str | None:
    """ "csv" or "tsv" when the sample's lines split into the same number (2+) of fields."""
    lines = [ln for ln in sample.decode("utf-8", "replace").splitlines()[:50] if ln.strip()]
    if len(lines) < 3:  # a header and two rows at least
        return None
    for kind, sep in (("tsv", "\t"), ("csv", ",")):
        counts = {ln.count(sep) for ln in lines}
        header = [h.strip().strip('"') for h in lines[0].split(sep)]
        # A header of distinct names, so that a stray text file whose lines happen to hold one
        # comma each is not taken for a table of its own.
        named = len(set(header)) == len(header) and all(_HEADER.match(h) for h in header)
        if len(counts) == 1 and counts.pop() >= 1 and named:
            return kind
    return None


def _delimited_table(data: bytes, kind: str) -> pa.Table:
    import polars as pl

    frame = pl.read_csv(
        io.BytesIO(data),
        separator="\t" if kind == "tsv" else ",",
        infer_schema_length=_SAMPLE_LINES,
    )
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


def detect(inp: Input, options: dict[str, object]) -> tuple[str, pa.Schema]:
    """The kind of data ``inp`` holds and the schema of its rows, from a sample.

    Raises SourceError when the file cannot be read or no format fits it.
    """
    import polars as pl

    from loglake.formats import detect_format
    from loglake.formats.lines import line_batch

    try:
        head, parquet = _read_head(inp)
        if parquet:
            return "parquet", _parquet_schema(inp)
    except (OSError, EOFError) as exc:
        raise SourceError(f"cannot read: {exc}") from exc
    except Exception as exc:  # pyarrow's errors for a damaged footer
        raise SourceError(f"not a readable Parquet file: {exc}") from exc
    if not head.strip():
        raise SourceError("empty file")
    batch = line_batch(head, 1, inp.name)
    # At least half of the sampled lines must fit (as `loglake ingest` decides a file's main
    # format): a text file where a stray line looks like syslog is no syslog table.
    fmt = detect_format(batch.text.head(_SAMPLE_LINES), **options)
    if fmt is not None:
        from loglake.formats.step import naive_utc

        rows = naive_utc(fmt.parse(batch).parsed.drop("line", strict=False))
        return fmt.name, rows.to_arrow(compat_level=pl.CompatLevel.oldest()).schema
    kind = _delimited(head)
    if kind is not None:
        try:
            return kind, _delimited_table(head, kind).schema
        except Exception as exc:  # polars' parse errors
            raise SourceError(f"looks like {kind.upper()} but does not parse: {exc}") from exc
    raise SourceError(
        "no format fits it (not Parquet, JSON lines, CSV/TSV or a known log format); "
        "ingest it with `loglake ingest --format ...` or move it out of the crawled folder"
    )


# -- partitions from paths ------------------------------------------------------------------------

_HIVE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_DATE_PARTS = (
    ("year", r"(19|20)\d\d"),
    ("month", r"0[1-9]|1[0-2]"),
    ("day", r"0[1-9]|[12]\d|3[01]"),
)
_HOUR = r"[01]\d|2[0-3]"


def path_partitions(folders: list[str]) -> dict[str, str | int]:
    """Partitions named by the folders of a file's path below the include path.

    Hive ``key=value`` folders give ``key`` (a string, as Hive and Athena type them); a run of
    unnamed ``YYYY/MM/DD`` folders gives integer ``year``, ``month``, ``day`` (and ``hour`` for a
    fourth ``HH`` folder). Other folders name nothing.
    """
    out: dict[str, str | int] = {}
    i = 0
    while i < len(folders):
        m = _HIVE.match(folders[i])
        if m:
            out[m.group(1).lower()] = m.group(2)
            i += 1
            continue
        run = 0
        while run < 3 and i + run < len(folders):
            if not re.fullmatch(_DATE_PARTS[run][1], folders[i + run]):
                break
            run += 1
        if run == 3:
            for k in range(3):
                out[_DATE_PARTS[k][0]] = int(folders[i + k])
            i += 3
            if i < len(folders) and re.fullmatch(_HOUR, folders[i]):
                out["hour"] = int(folders[i])
                i += 1
            continue
        i += 1
    return out


# -- schema merging -------------------------------------------------------------------------------


def widen(old: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The type holding every value of both, when no value changes; None for a conflict."""
    import pyarrow as pa

    if old == new:
        return old
    if pa.types.is_null(old):
        return new
    if pa.types.is_null(new):
        return old
    if pa.types.is_large_string(old) and pa.types.is_string(new):
        return old
    if pa.types.is_string(old) and pa.types.is_large_string(new):
        return new
    ints = (pa.int8(), pa.int16(), pa.int32(), pa.int64())
    if old in ints and new in ints:
        return pa.int64() if pa.int64() in (old, new) else pa.int32()
    floats = (pa.float32(), pa.float64())
    if (old in ints or old in floats) and (new in ints or new in floats):
        return pa.float64()
    return None


def _merge(
    base: pa.Schema | None, f: CrawledFile, extra: dict[str, pa.DataType]
) -> tuple[pa.Schema | None, str | None]:
    """``base`` widened by the schema of file ``f`` (and its partition columns ``extra``), or the
    conflict that prevents it."""
    import pyarrow as pa

    incoming = list(zip(f.schema.names, f.schema.types, strict=True)) + list(extra.items())
    if base is None:
        return pa.schema(incoming), None
    fields = {n: t for n, t in zip(base.names, base.types, strict=True)}
    order = list(base.names)
    for name, dtype in incoming:
        if name not in fields:
            fields[name] = dtype
            order.append(name)
            continue
        wide = widen(fields[name], dtype)
        if wide is None:
            return None, (
                f"type conflict: column {name!r} is {_type_name(dtype)} here but "
                f"{_type_name(fields[name])} in the table; "
                "the file is left out (nothing is coerced): fix the file, or crawl it into "
                "another table with --table"
            )
        fields[name] = wide
    return pa.schema([(n, fields[n]) for n in order]), None


def _partition_types(files: Iterable[CrawledFile]) -> dict[str, pa.DataType]:
    import pyarrow as pa

    keys: dict[str, pa.DataType] = {}
    for f in files:
        for k, v in f.partitions.items():
            keys.setdefault(k, pa.int32() if isinstance(v, int) else pa.string())
    return keys


# -- planning -------------------------------------------------------------------------------------

_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")


def _family(kind: str) -> str:
    """Which kinds share a table: access-log variants together, syslog variants together."""
    from loglake.formats import get_format

    if kind in ("parquet", "csv", "tsv", "json", "jsonl"):
        return {"jsonl": "json", "tsv": "csv"}.get(kind, kind)  # CSV and TSV: rows of fields
    return get_format(kind).default_table.split(".", 1)[1]


def _base_name(path: str, namespace: str) -> str:
    stem = path.rstrip("/").rsplit("/", 1)[-1] or "root"
    if "://" in path and "/" not in path.split("://", 1)[1].rstrip("/"):
        stem = path.split("://", 1)[1].rstrip("/")
    clean = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_") or "data"
    if clean[0].isdigit():
        clean = "t_" + clean
    return f"{namespace}.{clean}"


def _relative(inp: Input, root: str) -> str:
    from pathlib import Path

    if "://" in root:
        return inp.name[len(root.rstrip("/")) :].lstrip("/")
    try:
        return Path(inp.name).resolve().relative_to(Path(root).expanduser().resolve()).as_posix()
    except ValueError:
        return Path(inp.name).name


def plan(
    config: Config, paths: list[str], table: str | None = None, convert: bool = False
) -> CrawlReport:
    """Detect, partition, group and merge what the crawl of ``paths`` would register, and how
    (in place, copied, converted; ``convert`` copies Parquet too); nothing is written. Raises
    CrawlError for a bad ``table`` name or more tables than ``crawl.max_tables``."""
    from loglake.lake.ledger import Ledger

    if table is not None and not _TABLE.match(table):
        raise CrawlError(
            f"table name {table!r} is not NAMESPACE.NAME in lower case letters, digits and _"
        )
    started = time.perf_counter()
    report = CrawlReport()
    options: dict[str, object] = {
        "timezone": config.ingest.syslog_timezone,
        "ts_field": config.ingest.json_ts_field,
    }
    groups: dict[tuple[str, str], list[CrawledFile]] = {}
    # A plan creates nothing, not even the ledger: with no ledger, nothing was crawled yet.
    path = config.state_dir / "ledger.db"
    ledger = Ledger(path) if path.exists() else None
    try:
        for root in paths:
            try:
                inputs = list(list_inputs(root, config))
            except (SourceError, OSError) as exc:
                report.left_out[root] = str(exc)
                continue
            for inp in inputs:
                rel = _relative(inp, root)
                if any(part.startswith(("_", ".")) for part in rel.split("/")):
                    # Hive's and Spark's rule: `_SUCCESS`, `_temporary/`, `.crc` files are the
                    # writers' bookkeeping, not data.
                    report.ignored += 1
                    continue
                fp = inp.fingerprint
                if fp and ledger is not None and ledger.is_done(fp):
                    report.skipped += 1
                    continue
                try:
                    kind, schema = detect(inp, options)
                except SourceError as exc:
                    report.left_out[inp.name] = str(exc)
                    continue
                folders = rel.split("/")[:-1]
                f = CrawledFile(inp, rel, kind, path_partitions(folders), schema)
                groups.setdefault((root, _family(kind)), []).append(f)
    finally:
        if ledger is not None:
            ledger.close()
    report.tables = _tables(config, groups, table, report)
    for t in report.tables:
        _modes(config, t, convert, report)
    report.gone = _gone(config, paths)
    report.tables = [t for t in report.tables if t.files]
    report.seconds = time.perf_counter() - started
    return report


def _modes(config: Config, t: TablePlan, convert: bool, report: CrawlReport) -> None:
    """Decide how each file of ``t`` is registered (:func:`_mode`). A table of CSV/TSV files is
    external (in place) or an Iceberg table (copied) as a whole, by how it was first crawled; a
    file an external table cannot read in place is left out, saying how to get it in."""
    if t.external and convert:
        raise CrawlError(
            f"table {t.name} holds CSV/TSV files registered in place, and --convert would copy "
            "rows into it; crawl them into another table with --table NAMESPACE.NAME"
        )
    for f in t.files:
        f.mode, f.why = _mode(config, f, convert)
    if t.kind != "csv" or convert:
        return
    whole = next((f.why for f in t.files if f.why in _WHOLE_TABLE), None)
    if t.exists and not t.external:
        whole = "the table holds copied rows (crawled with --convert)"
    if whole is not None and not t.external:
        # The table cannot be external (S3 objects, a remote warehouse): copied as a whole.
        for f in t.files:
            f.mode, f.why = COPIED, whole
        return
    kept = []
    for f in t.files:
        if f.mode != IN_PLACE:
            report.left_out[f.input.name] = (
                f"cannot stay in place: {f.why}; crawl it into another table with --convert "
                "to copy it"
            )
            continue
        kept.append(f)
    t.files = kept


def _gone(config: Config, roots: list[str]) -> dict[str, list[str]]:
    """Per table, the files it registered in place below one of ``roots`` (folders or ``s3://``
    prefixes) that no longer exist (deleted or moved): without the crawl removing them, every
    query of the table would fail on them. A prefix that cannot be listed removes nothing."""
    from pathlib import Path

    from loglake.lake import external
    from loglake.query.plan import current_locations, get_plan, table_names
    from loglake.sources import s3

    folders = [
        str(Path(r).expanduser().resolve()).rstrip("/") + "/" for r in roots if "://" not in r
    ]
    prefixes: list[str] = []
    listed: set[str] = set()
    for root in roots:
        if root.startswith("s3://"):
            try:
                listed.update(i.name for i in s3.list_inputs(root, config))
            except (SourceError, OSError):
                continue  # unknown: keep every file (an empty prefix is an error here too)
            prefixes.append(root if root.endswith("/") else root + "/")
    if not folders and not prefixes:
        return {}

    def is_gone(path: str) -> bool:
        if any(path.startswith(d) for d in folders):
            return not os.path.exists(path)
        return any(path.startswith(p) for p in prefixes) and path not in listed

    locations = current_locations(config) or {}
    out: dict[str, list[str]] = {}
    for name in table_names(config):
        try:
            outside = external.load(config, name)
            if outside is not None:
                paths = [f.path for f in outside.files]
            else:
                plan = get_plan(config, name, locations.get(name))
                paths = [f.path for f in plan.files if f.in_place]
        except LoglakeError:
            continue  # a table that cannot be planned says so when queried; the crawl goes on
        missing = [p for p in paths if is_gone(p)]
        if missing:
            out[name] = sorted(missing)
    return out


def _remove_gone(config: Config, name: str, paths: list[str]) -> None:
    """Remove the entries of ``paths`` (files in place that are gone) from table ``name``, and
    forget them in the ledger, so a file that comes back is registered again."""
    from loglake.lake import external
    from loglake.lake.catalog import local_path, open_catalog
    from loglake.lake.ledger import Ledger

    wanted = set(paths)
    outside = external.load(config, name)
    if outside is not None:
        outside.files = [f for f in outside.files if f.path not in wanted]
        outside.updated_ms = int(time.time() * 1000)
        external.save(config, outside)
    else:
        catalog = open_catalog(config)
        iceberg = catalog.load_table(name)
        stale = [
            task.file
            for task in iceberg.scan().plan_files()
            if local_path(task.file.file_path) in wanted
        ]
        if stale:
            with iceberg.transaction() as tx:
                props = {_CRAWL_RUN: uuid.uuid4().hex, "loglake.crawl-gone-files": str(len(stale))}
                with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
                    for data_file in stale:
                        overwrite.delete_data_file(data_file)
            from loglake.query.plan import plan_hook

            plan_hook(config)(name, catalog.load_table(name), None, [])
    ledger = Ledger(config.state_dir / "ledger.db")
    try:
        ledger.forget(paths)
    finally:
        ledger.close()


def _mode(config: Config, f: CrawledFile, convert: bool) -> tuple[str, str | None]:
    """How file ``f`` is registered, and why a Parquet or CSV file is not left in place.

    Local Parquet and CSV/TSV files stay in place (CSV as an external table: Iceberg data files
    can only be Parquet, Avro or ORC); log lines and JSON lines are parsed and enriched once by
    the pipeline rather than at every query; the query engine does not read S3 yet.
    """
    if f.kind not in ("parquet", "csv", "tsv"):
        return CONVERTED, None
    if convert:
        return COPIED, None
    if "://" in f.input.name:
        if f.kind != "parquet":
            return COPIED, _S3_WHY
        # Read where they lie through pyarrow's S3 client (query/worker.py register_files).
        if any(_FIELD_ID in (fld.metadata or {}) for fld in f.schema):
            return COPIED, "the file carries Iceberg field ids of another table"
        return IN_PLACE, None
    path = f.input.key
    if any(c in path for c in _UNSAFE):
        # DuckDB reads * ? [ { as a glob and a URI cannot hold % # as they are.
        return COPIED, "a path holding one of % # ? * [ ] { } is not read in place"
    warehouse = config.warehouse
    if not warehouse.startswith("file://"):
        return COPIED, _REMOTE_WHY
    from pathlib import Path

    if Path(path).is_relative_to(Path(warehouse[len("file://") :]).resolve()):
        # Files under the warehouse are the lake's to delete (orphan removal).
        return COPIED, "the file lies inside the lake's warehouse"
    if Path(path).is_relative_to(config.home.resolve()):
        # The data home holds the config (with its keys) and state: user SQL never reads there.
        return COPIED, "the file lies inside the lake's data home"
    if f.kind == "parquet":
        if any(_FIELD_ID in (fld.metadata or {}) for fld in f.schema):
            return COPIED, "the file carries Iceberg field ids of another table"
        return IN_PLACE, None
    with f.input.open() as raw:
        if raw.read(3) == b"BZh":
            return COPIED, "DuckDB does not read bzip2-compressed CSV"
    return IN_PLACE, None


def _tables(
    config: Config,
    groups: dict[tuple[str, str], list[CrawledFile]],
    table: str | None,
    report: CrawlReport,
) -> list[TablePlan]:
    settings = config.crawl
    families_per_root: dict[str, int] = {}
    for root, _ in groups:
        families_per_root[root] = families_per_root.get(root, 0) + 1
    names: dict[str, TablePlan] = {}
    roots: dict[str, str] = {}  # table -> the include path it was named after
    existing_names: set[str] | None = None
    for (root, family), files in groups.items():
        base = table or _base_name(root, settings.namespace)
        name = base if families_per_root[root] == 1 else f"{base}_{family}"
        if name == base and table is None:
            # A re-crawl that finds new files of one kind only, where an earlier crawl found
            # several kinds: they go to that kind's table as before, not to a new one.
            if existing_names is None:
                from loglake.query.plan import table_names

                existing_names = set(table_names(config))
            if base not in existing_names and f"{base}_{family}" in existing_names:
                name = f"{base}_{family}"
        if table is None and roots.setdefault(name, root) != root:
            # Two include paths never merge into one table unless --table says so.
            raise CrawlError(
                f"include paths {roots[name]} and {root} would both become table {name}; "
                "crawl them one at a time with --table NAMESPACE.NAME each"
            )
        t = names.get(name)
        if t is None:
            t = names[name] = TablePlan(name, family)
        elif t.kind != family:
            raise CrawlError(
                f"table {name} would hold both {t.kind} and {family} files; crawl them apart"
            )
        t.files.extend(files)
    if len(names) > settings.max_tables:
        listed = ", ".join(sorted(names)[:20])
        raise CrawlError(
            f"the crawl would create {len(names)} tables ({listed}), more than crawl.max_tables = "
            f"{settings.max_tables}; crawl fewer include paths at once, name one table with "
            "--table, or raise crawl.max_tables in loglake.toml"
        )
    existing = _existing_schemas(config, list(names))
    for t in names.values():
        _merge_table(t, existing.get(t.name), report, config.crawl.schema_change)
    return [names[n] for n in sorted(names) if names[n].files]


def _existing_schemas(config: Config, names: list[str]) -> dict[str, pa.Schema]:
    """The Arrow schemas of those of ``names`` that are already lake tables (Iceberg or
    external)."""
    import pyarrow as pa

    from loglake.lake import external
    from loglake.query.plan import table_names

    there = set(table_names(config)) & set(names)
    if not there:
        return {}
    out: dict[str, pa.Schema] = {}
    catalog = None
    for n in sorted(there):
        outside = external.load(config, n)
        if outside is not None:
            out[n] = pa.schema([(c, _arrow_type(t)) for c, t in outside.columns])
            out[n] = out[n].with_metadata({b"loglake.external": b"1"})
            continue
        if catalog is None:
            from loglake.lake.catalog import open_catalog

            catalog = open_catalog(config)
        out[n] = catalog.load_table(n).schema().as_arrow()
    return out


def _merge_table(
    t: TablePlan, existing: pa.Schema | None, report: CrawlReport, policy: str
) -> None:
    """Merge the schemas of ``t``'s files onto the table's (``existing``); files that conflict
    are left out, columns a new file brings are added (policy ``update``) or only reported."""
    t.exists = existing is not None
    t.external = existing is not None and (existing.metadata or {}).get(b"loglake.external") == b"1"
    extra = _partition_types(t.files)
    t.partition_keys = list(extra)
    schema = existing
    kept: list[CrawledFile] = []
    rowwise = t.kind not in ("parquet", "csv")
    for f in t.files:
        own = {k: v for k, v in extra.items() if k in f.partitions} if not rowwise else {}
        merged, conflict = _merge(schema, f, own)
        if conflict is not None:
            report.left_out[f.input.name] = conflict
            continue
        kept.append(f)
        schema = merged
    t.files = kept
    if existing is not None and schema is not None:
        t.added_columns = [n for n in schema.names if n not in existing.names]
        if t.added_columns and policy == "log":
            import pyarrow as pa

            schema = pa.schema([existing.field(n) for n in existing.names])
    t.schema = schema
    if rowwise:
        t.partition_keys = []  # rows carry their own time; the ingest pipeline partitions them


# -- registering ----------------------------------------------------------------------------------


def crawl(
    config: Config, paths: list[str], table: str | None = None, convert: bool = False
) -> CrawlReport:
    """Crawl ``paths`` and register what :func:`plan` finds: new tables, new files, new columns.

    Local Parquet files are registered in place (nothing copied) unless ``convert``; other files
    are copied or converted (see :func:`plan`). Files already crawled are not read again. Raises
    CrawlError (see :func:`plan`) before anything is written, LakeError when the lake cannot be
    written.
    """
    started = time.perf_counter()
    report = plan(config, paths, table, convert)
    for name, gone in sorted(report.gone.items()):
        _remove_gone(config, name, gone)
    for t in report.tables:
        if t.kind == "csv" and all(f.mode == IN_PLACE for f in t.files):
            report.rows[t.name] = _register_external(config, t, report)
        elif t.kind in ("parquet", "csv"):
            report.rows[t.name] = _append_files(config, t)
        else:
            report.rows[t.name] = _ingest_files(config, t, report)
    report.seconds = time.perf_counter() - started
    return report


def _file_table(f: CrawledFile, kind: str, schema: pa.Schema) -> pa.Table:
    """The rows of ``f`` with its path partitions as columns, cast to the table's ``schema``;
    columns the schema lacks (policy ``log``) are dropped, columns the file lacks are null."""
    import pyarrow as pa

    from loglake.sources.base import open_decompressed

    if kind == "parquet":
        data = _read_parquet(f.input)
    else:
        with f.input.open() as raw:
            stream, _ = open_decompressed(raw)
            data = _delimited_table(stream.read(), kind)
    n = data.num_rows
    columns = []
    for fld in schema:
        if fld.name in data.column_names:
            columns.append(data.column(fld.name).cast(fld.type))
        elif fld.name in f.partitions:
            columns.append(pa.array([f.partitions[fld.name]] * n, type=fld.type))
        else:
            columns.append(pa.nulls(n, type=fld.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _append_files(config: Config, t: TablePlan) -> int:
    """Register ``t``'s files in its Iceberg table in one commit (files in place as data files
    pointing at them, the others copied), recorded in the ledger with the run id in the
    snapshot, so a crash between the two is settled as ingest settles it."""
    import pyarrow as pa

    from loglake.ingest import RUN_PROPERTY, run_committed
    from loglake.lake.catalog import ensure_table, open_catalog
    from loglake.lake.ledger import Ledger

    assert t.schema is not None
    catalog = open_catalog(config)
    ledger = Ledger(config.state_dir / "ledger.db")
    try:
        if ledger.has_pending():
            ledger.settle(lambda name, rid: run_committed(catalog, name, rid))
        iceberg = ensure_table(catalog, t.name, t.schema, "none")
        placed = [f for f in t.files if f.mode == IN_PLACE]
        keys = {k for f in placed for k in f.partitions}
        spec_sources = {
            iceberg.schema().find_column_name(pf.source_id) for pf in iceberg.spec().fields
        }
        if (not t.exists and t.partition_keys and iceberg.spec().is_unpartitioned()) or (
            keys - spec_sources
        ):
            # Path partitions become identity partitions, so engines that prune by partition
            # (Trino, Spark, Athena) read only the folders a query names, as they did before;
            # and a file registered in place takes a column it lacks from its partition value.
            with iceberg.update_spec() as spec:
                for key in t.partition_keys:
                    if key not in spec_sources:
                        spec.add_identity(key)
            iceberg = catalog.load_table(t.name)
        schema = iceberg.schema().as_arrow()
        schema = pa.schema([pa.field(f.name, f.type) for f in schema])  # nullable, as written
        run_id = uuid.uuid4().hex
        items = [(f.input.fingerprint, f.input.name, 0) for f in t.files if f.input.fingerprint]
        ledger.mark_pending(run_id, items, [t.name])
        props = {RUN_PROPERTY: run_id, _CRAWL_RUN: run_id}
        rows = 0
        with iceberg.transaction() as tx:
            data_files = []
            for f in placed:
                data_file, why = _in_place_data_file(config, tx, f)
                if data_file is None:
                    f.mode, f.why = COPIED, why  # registered all the same, as a copy
                    continue
                data_files.append(data_file)
                rows += data_file.record_count
            if data_files:
                _add_in_place(iceberg, tx, data_files, props)
            # Files are read a group at a time (memory stays about one group whatever the folder
            # holds) and every group is appended in one transaction: one commit for the whole table.
            group: list[pa.Table] = []
            held = 0
            for f in t.files:
                if f.mode == IN_PLACE:
                    continue
                part = _file_table(f, f.kind, schema)
                group.append(part)
                held += part.nbytes
                rows += part.num_rows
                if held >= _APPEND_BYTES:
                    tx.append(pa.concat_tables(group), snapshot_properties=props)
                    group, held = [], 0
            if group:
                tx.append(pa.concat_tables(group), snapshot_properties=props)
        ledger.mark_done(run_id)
    finally:
        ledger.close()
    from loglake.query.plan import plan_hook

    plan_hook(config)(t.name, catalog.load_table(t.name), None, [])
    return rows


def _footer(config: Config, path: str) -> Any:
    """The Parquet footer of a local file or an ``s3://`` object (one ranged read of its end)."""
    import pyarrow.parquet as pq

    if "://" not in path:
        return pq.read_metadata(path)
    from loglake.sources.s3 import _filesystem

    with _filesystem(config).open_input_file(path[len("s3://") :]) as fh:
        return pq.read_metadata(fh)


def _in_place_data_file(config: Config, tx: Any, f: CrawledFile) -> tuple[Any, str | None]:
    """The Iceberg DataFile registering ``f`` where it lies: its statistics from its footer (its
    columns mapped to the table's by name), its partition tuple from its path, as ``add_files``
    would build it if it could take partition values from folder names. (None, why) when the
    file cannot be read in place by the table's schema: it is copied instead."""
    from pyiceberg.io.pyarrow import (
        _check_pyarrow_schema_compatible,
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.typedef import Record
    from pyiceberg.types import IntegerType, LongType, StringType

    meta = tx.table_metadata
    schema = meta.schema()
    path = f.input.key
    try:
        footer = _footer(config, path)
        _check_pyarrow_schema_compatible(
            schema, footer.schema.to_arrow_schema(), format_version=meta.format_version
        )
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=footer,
            stats_columns=compute_statistics_plan(schema, meta.properties),
            parquet_column_mapping=parquet_path_to_id_mapping(schema),
        )
    except Exception as exc:  # pyiceberg's and pyarrow's errors for columns it cannot map
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return None, f"its columns cannot be read in place by the table's schema ({detail})"
    values = []
    for spec_field in meta.spec().fields:
        source = schema.find_field(spec_field.source_id)
        if not isinstance(spec_field.transform, IdentityTransform):
            return None, f"the table is partitioned by {spec_field.transform} of {source.name}"
        value = f.partitions.get(source.name)
        if value is not None and isinstance(source.field_type, (IntegerType, LongType)):
            try:
                value = int(value)
            except ValueError:
                return None, f"partition {source.name}={value} is not an integer"
        elif value is not None and isinstance(source.field_type, StringType):
            value = str(value)
        elif value is not None:
            return None, f"partition column {source.name} is {source.field_type}"
        values.append(value)
    data_file = DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path if "://" in path else "file://" + path,
        file_format=FileFormat.PARQUET,
        partition=Record(*values),
        file_size_in_bytes=f.input.size or footer.serialized_size,
        sort_order_id=None,
        spec_id=meta.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )
    return data_file, None


def _add_in_place(iceberg: Any, tx: Any, data_files: list[Any], props: dict[str, str]) -> None:
    """Add ``data_files`` (registered in place) to the transaction's table. A file registered
    before under the same path changed since (the ledger saw another size or time): its old entry
    is replaced in the same snapshot, so its rows are never counted twice."""
    from pyiceberg.table import TableProperties

    if tx.table_metadata.name_mapping() is None:
        # Files without field ids are read by column name through the table's name mapping
        # (what add_files sets): pyiceberg, Spark, Trino and DuckDB's iceberg reader use it.
        mapping = tx.table_metadata.schema().name_mapping.model_dump_json()
        tx.set_properties(**{TableProperties.DEFAULT_NAME_MAPPING: mapping})
    new_paths = {d.file_path for d in data_files}
    stale = []
    if iceberg.current_snapshot() is not None:
        stale = [
            task.file for task in iceberg.scan().plan_files() if task.file.file_path in new_paths
        ]
    if stale:
        with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
            for data_file in stale:
                overwrite.delete_data_file(data_file)
            for data_file in data_files:
                overwrite.append_data_file(data_file)
    else:
        with tx.update_snapshot(snapshot_properties=props).fast_append() as append:
            for data_file in data_files:
                append.append_data_file(data_file)


#: DuckDB types of an external table's columns from the crawled Arrow types (Polars' CSV inference
#: gives these; anything else is read as text), and back.
_DUCKDB = {"int64": "BIGINT", "int32": "INTEGER", "double": "DOUBLE", "bool": "BOOLEAN"}


def _duckdb_type(dtype: pa.DataType) -> str:
    return _DUCKDB.get(str(dtype), "VARCHAR")


def _arrow_type(duckdb_type: str) -> pa.DataType:
    import pyarrow as pa

    back = {"BIGINT": pa.int64(), "INTEGER": pa.int32(), "DOUBLE": pa.float64()}
    return back.get(duckdb_type, pa.bool_() if duckdb_type == "BOOLEAN" else pa.string())


def _register_external(config: Config, t: TablePlan, report: CrawlReport) -> int:
    """Register ``t``'s CSV/TSV files in place in external table ``t.name`` (lake/external.py).

    Each file is read whole once, by DuckDB with the table's types, exactly as queries will read
    it: a value that does not fit its column's type is a conflict found now (the file is left
    out, named with DuckDB's message), never an error of every later query. Returns the rows
    registered. A file registered before under the same path is replaced, so a re-crawl of a
    changed file (or one after a crash before the ledger was updated) never counts rows twice.
    """
    import duckdb

    from loglake.lake import external
    from loglake.lake.ledger import Ledger

    assert t.schema is not None
    table = external.load(config, t.name) or external.ExternalTable(t.name, [])
    merged = {fld.name: _duckdb_type(fld.type) for fld in t.schema}
    # Columns widened by the new files (an integer column that is now a double) take the wider
    # type; new columns come last, as in an Iceberg table.
    table.columns = [[c, merged.get(c, dtype)] for c, dtype in table.columns]
    have = {c for c, _ in table.columns}
    table.columns += [[n, dtype] for n, dtype in merged.items() if n not in have]
    keys = [k for k in t.partition_keys if k not in table.partition_keys]
    table.partition_keys.extend(keys)
    types = table.types
    con = duckdb.connect(":memory:")
    added: list[external.ExternalFile] = []
    try:
        for f in t.files:
            with f.input.open() as raw:
                magic = raw.read(4)
            compression = (
                "gzip"
                if magic.startswith(b"\x1f\x8b")
                else "zstd"
                if magic == b"\x28\xb5\x2f\xfd"
                else "none"
            )
            entry = external.ExternalFile(
                path=f.input.key,
                kind=f.kind,
                compression=compression,
                columns=list(f.schema.names),
                partition={k: v for k, v in f.partitions.items() if k in types},
                size=f.input.size or 0,
                version=f.input.version,
                rows=0,
            )
            try:
                # count(COLUMNS(*)): every value converted (count(*) alone would skip them).
                sql = f"SELECT count(*), count(COLUMNS(*)) FROM {external.read_sql([entry], types)}"
                counted = con.execute(sql).fetchone()
                entry.rows = int(counted[0]) if counted else 0
            except duckdb.Error as exc:
                message = str(exc).strip().splitlines()[0][:300]
                report.left_out[f.input.name] = (
                    f"type conflict: a value does not fit the table's column types ({message}); "
                    "the file is left out (nothing is coerced): fix the file, or crawl it into "
                    "another table with --table"
                )
                continue
            added.append(entry)
    finally:
        con.close()
    paths = {e.path for e in added}
    table.files = [f for f in table.files if f.path not in paths] + added
    table.updated_ms = int(time.time() * 1000)
    kept = {e.path for e in added}
    t.files = [f for f in t.files if f.input.key in kept]
    external.save(config, table)
    # After the document: a crash in between registers the files again on the next crawl, in
    # place of their entries (by path), never twice.
    ledger = Ledger(config.state_dir / "ledger.db")
    try:
        run_id = uuid.uuid4().hex
        items = [(f.input.fingerprint, f.input.name, 0) for f in t.files if f.input.fingerprint]
        ledger.mark_pending(run_id, items, [t.name])
        ledger.mark_done(run_id)
    finally:
        ledger.close()
    return sum(e.rows for e in added)


def _ingest_files(config: Config, t: TablePlan, report: CrawlReport) -> int:
    """Ingest ``t``'s row-format files through the ingest pipeline into table ``t.name``."""
    from loglake.ingest import ingest

    # Local files by their resolved path, objects by their URI: the ledger's keys, as listed.
    files = [f.input.name if "://" in f.input.name else f.input.key for f in t.files]
    # Formats are detected per group of lines, as `loglake ingest` does: lines of another format
    # in a mixed file reach that format's table instead of being rejected.
    stats = ingest(config, files, table=t.name)
    report.left_out.update(stats.failed)
    return stats.tables.get(t.name, 0)
