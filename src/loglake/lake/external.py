"""External tables: CSV/TSV files that ``loglake crawl`` registers where they lie, read at query time.

Iceberg data files can only be Parquet, Avro or ORC, so a table of CSV files left in place cannot be
an Iceberg table. Like a Glue table with a SerDe, it is a definition of loglake's own: a JSON
document per table under ``<warehouse>/external-tables/NAMESPACE.NAME.json`` (a folder name no
namespace can have, since namespaces hold no ``-``), replaced atomically on each change, listing the
table's columns (DuckDB types, partition columns last), its partition keys and its files, each with
its kind (``csv``/``tsv``), compression, columns in file order, path partition values, size and the
rows counted when it was registered. The query engine lists these tables beside the catalog's and
reads them with DuckDB's ``read_csv`` with the crawled schema (:func:`read_sql`); nothing else of
loglake writes them (maintenance works on the Iceberg catalog only, so it never sees these files).

Only with a local warehouse (``file://``): the registry is plain files. Raises LakeError when a
document cannot be read.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loglake.errors import LakeError
from loglake.sqltext import ident, literal

if TYPE_CHECKING:
    from loglake.config import Config

_VERSION = 1
FOLDER = "external-tables"


@dataclass
class ExternalFile:
    """One file of an external table, as registered."""

    path: str
    kind: str  # "csv" or "tsv"
    compression: str  # "none", "gzip" or "zstd" (what DuckDB's read_csv reads)
    columns: list[str]  # the file's columns, in file order (its header)
    partition: dict[str, Any]  # path partition values (key=value and date folders)
    size: int
    version: str  # modification time when registered
    rows: int


@dataclass
class ExternalTable:
    """An external table: columns (name, DuckDB type) in table order, partition keys, files."""

    name: str
    columns: list[list[str]]
    partition_keys: list[str] = field(default_factory=list)
    files: list[ExternalFile] = field(default_factory=list)
    updated_ms: int = 0
    version: int = _VERSION

    @property
    def types(self) -> dict[str, str]:
        return {name: dtype for name, dtype in self.columns}


def registry_dir(config: Config) -> Path | None:
    """The folder of the external table documents; None when the warehouse is not local."""
    warehouse = config.warehouse
    if not warehouse.startswith("file://"):
        return None
    return Path(warehouse[len("file://") :]) / FOLDER


def names(config: Config) -> list[str]:
    """The names of the external tables (sorted); none when the warehouse is not local."""
    folder = registry_dir(config)
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.glob("*.*.json"))


def load(config: Config, name: str) -> ExternalTable | None:
    """External table ``name``, or None when there is none by that name."""
    folder = registry_dir(config)
    if folder is None:
        return None
    path = folder / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LakeError(
            f"external table {name}: cannot read {path}: {exc}; crawl its files again to "
            "register it anew (delete the file first)"
        ) from exc
    raw["files"] = [ExternalFile(**f) for f in raw.get("files", [])]
    return ExternalTable(**raw)


def save(config: Config, table: ExternalTable) -> None:
    """Write ``table``'s document atomically: a reader sees the old definition or the new one."""
    folder = registry_dir(config)
    if folder is None:
        raise LakeError(
            "CSV/TSV files stay in place only with a local warehouse; crawl with --convert"
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{table.name}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(asdict(table)))
    os.replace(tmp, path)


def read_sql(files: list[ExternalFile], types: dict[str, str]) -> str:
    """DuckDB's ``read_csv`` of ``files`` (one kind, compression and column list), each column
    typed as the table types it (text for a column the table does not have)."""
    first = files[0]
    paths = ", ".join(literal(f.path) for f in files)
    columns = ", ".join(f"{literal(c)}: {literal(types.get(c, 'VARCHAR'))}" for c in first.columns)
    delim = "\t" if first.kind == "tsv" else ","
    return (
        f"read_csv([{paths}], delim = {literal(delim)}, quote = '\"', escape = '\"', "
        f"header = true, auto_detect = false, columns = {{{columns}}}, "
        f"compression = {literal(first.compression)})"
    )


def view_sql(table: ExternalTable) -> str:
    """A SELECT of every row of ``table``: one UNION ALL branch per partition, file kind and
    column list, partition values as constants (DuckDB drops the branches a filter on a partition
    column excludes before opening their files); columns a file lacks are NULL."""
    types = table.types
    groups: dict[str, list[ExternalFile]] = {}
    for f in table.files:
        key = json.dumps([f.kind, f.compression, f.columns, f.partition], sort_keys=True)
        groups.setdefault(key, []).append(f)
    branches = []
    for group in groups.values():
        first = group[0]
        exprs = []
        for name, dtype in table.columns:
            if name in first.columns:
                value = ident(name)
            elif first.partition.get(name) is not None:
                value = constant(first.partition[name])
            else:
                value = "NULL"
            exprs.append(f"CAST({value} AS {dtype}) AS {ident(name)}")
        branches.append(f"SELECT {', '.join(exprs)} FROM {read_sql(group, types)}")
    if not branches:
        typed = ", ".join(f"CAST(NULL AS {t}) AS {ident(c)}" for c, t in table.columns)
        return f"SELECT {typed} WHERE false"
    return "\nUNION ALL\n".join(branches)


def constant(value: Any) -> str:
    """A partition value as an SQL literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return literal(str(value))
