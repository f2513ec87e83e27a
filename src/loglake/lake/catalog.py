"""The Iceberg catalog: opening it, and creating or evolving loglake's tables in it.

Embedded default: pyiceberg's SQL catalog on a SQLite file with a local warehouse folder, both under
``$LOGLAKE_HOME``. Any other pyiceberg catalog (SQL on PostgreSQL, REST, Glue...) works through the
``[catalog]`` config section, so Trino, Spark, Athena or DuckDB can read the same tables.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from loglake.errors import LakeError, NoSuchTableError, is_transient

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from loglake.config import Config

# Keep tables healthy under frequent commits (see ARCHITECTURE.md: measured 0.85 s appends after 500
# plain commits vs ~60 ms with these), and write Parquet with zstd.
TABLE_PROPERTIES: dict[str, str] = {
    "write.parquet.compression-codec": "zstd",
    "commit.manifest-merge.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "5",
    "write.target-file-size-bytes": str(512 << 20),
    "format-version": "2",
}


def catalog_properties(config: Config) -> dict[str, str]:
    """The properties handed to pyiceberg's ``load_catalog`` for this config."""
    props = {
        "type": config.catalog.type,
        "uri": config.catalog_uri,
        "warehouse": config.warehouse,
    }
    s3 = config.s3
    if s3.endpoint_url:
        props["s3.endpoint"] = s3.endpoint_url
    if s3.region:
        props["s3.region"] = s3.region
    if s3.access_key_id:
        props["s3.access-key-id"] = s3.access_key_id
        props["s3.secret-access-key"] = s3.secret_access_key
    props.update(config.catalog.properties)
    return props


# Creating a namespace or table races with other writers (two tables of one ingest, two streams of
# the server, two processes): a creation that fails is retried this many times, with a short
# growing pause, before its error is raised.
_ATTEMPTS = 6
_OPEN_ATTEMPTS = 3


def _backoff(attempt: int) -> None:
    time.sleep(min(0.02 * 2**attempt, 0.5) * (0.5 + random.random()))


def open_catalog(config: Config) -> Catalog:
    """Open (and for the embedded default, create) the catalog. Raises LakeError when unreachable.

    Two processes opening a fresh SQL catalog at once both try to create its tables; the loser's
    error is retried, and the second attempt finds the tables the winner created.
    """
    from pyiceberg.catalog import load_catalog

    if config.catalog.type == "sql" and not config.catalog.uri:
        config.home.mkdir(parents=True, exist_ok=True)
        (config.home / "warehouse").mkdir(exist_ok=True)
    # Few attempts: the creation race fails at once, while a locked catalog costs SQLite's busy
    # timeout (5 s) per attempt.
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return load_catalog(config.catalog.name, **catalog_properties(config))
        except Exception as exc:
            if attempt + 1 < _OPEN_ATTEMPTS:
                _backoff(attempt)
                continue
            raise LakeError(
                f"cannot open the {config.catalog.type!r} catalog at {config.catalog_uri}: {exc}; "
                "check [catalog] in loglake.toml"
            ) from exc
    raise AssertionError("unreachable")


def load_table(catalog: Catalog, name: str) -> Table:
    """Load an existing table, or raise NoSuchTableError listing the tables there are."""
    from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable

    try:
        return catalog.load_table(name)
    except IcebergNoSuchTable as exc:
        raise NoSuchTableError(
            f"table {name} does not exist; existing tables: {', '.join(list_tables(catalog)) or 'none'}"
        ) from exc


def list_tables(catalog: Catalog) -> list[str]:
    """All tables of all namespaces, as ``namespace.table`` names, sorted."""
    names: list[str] = []
    for ns in catalog.list_namespaces():
        for ident in catalog.list_tables(ns):
            names.append(".".join(ident))
    return sorted(names)


def _partition_transform(partition: str):
    from pyiceberg.transforms import DayTransform, HourTransform, MonthTransform

    return {"hour": HourTransform(), "day": DayTransform(), "month": MonthTransform()}[partition]


def ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create ``namespace`` unless it exists; idempotent and safe under concurrent creators.

    A creation that fails because another writer created the namespace first (pyiceberg's SQL
    catalog reports that as a unique-constraint error, not NamespaceAlreadyExistsError) counts as
    success. Raises LakeError when the namespace still does not exist after the retries.
    """
    from pyiceberg.exceptions import NamespaceAlreadyExistsError

    for attempt in range(_ATTEMPTS):
        try:
            if catalog.namespace_exists(namespace):
                return
            catalog.create_namespace(namespace)
            return
        except NamespaceAlreadyExistsError:
            return
        except Exception as exc:
            if attempt + 1 < _ATTEMPTS:
                _backoff(attempt)
                continue
            raise LakeError(
                f"cannot create namespace {namespace!r} in the catalog: {exc}; check that the "
                "catalog is reachable and writable ([catalog] in loglake.toml)"
            ) from exc


def _create_table(
    catalog: Catalog, name: str, schema: pa.Schema, partition: str, time_column: str
) -> None:
    """Create table ``name`` unless it exists; a concurrent creator winning counts as success."""
    from pyiceberg.exceptions import TableAlreadyExistsError

    for attempt in range(_ATTEMPTS):
        try:
            if catalog.table_exists(name):
                return
            tx = catalog.create_table_transaction(name, schema=schema, properties=TABLE_PROPERTIES)
            if partition != "none" and time_column in schema.names:
                with tx.update_spec() as spec:
                    spec.add_field(
                        time_column, _partition_transform(partition), f"{time_column}_{partition}"
                    )
            tx.commit_transaction()
            return
        except TableAlreadyExistsError:
            return  # created by another writer: loaded (and evolved) by the caller
        except Exception as exc:
            if attempt + 1 < _ATTEMPTS:
                _backoff(attempt)
                continue
            raise LakeError(
                f"cannot create table {name}: {exc}; check that the catalog and the warehouse "
                "are reachable and writable"
            ) from exc


def ensure_table(
    catalog: Catalog, name: str, schema: pa.Schema, partition: str, time_column: str = "ts"
) -> Table:
    """Return table ``name``, creating it partitioned by ``partition(time_column)`` if missing, and
    adding any column of ``schema`` it lacks (schema evolution by name; existing columns untouched).

    Safe when several threads or processes ensure the same namespace and table at once: whoever
    creates it first wins and the others load what it created. Raises LakeError when the table
    cannot be created, or a new column cannot be added (e.g. it exists with another type).
    """
    from pyiceberg.exceptions import CommitFailedException

    ensure_namespace(catalog, name.split(".")[0])
    _create_table(catalog, name, schema, partition, time_column)
    for attempt in range(_ATTEMPTS):
        try:
            table = catalog.load_table(name)
            existing = set(table.schema().column_names)
            if all(field.name in existing for field in schema):
                return table
            with table.update_schema() as update:
                update.union_by_name(schema)
        except Exception as exc:
            # Another writer changed the table since it was loaded (reload, and add only the
            # columns it did not add itself), or held the catalog past SQLite's busy timeout.
            if (isinstance(exc, CommitFailedException) or is_transient(exc)) and (
                attempt + 1 < _ATTEMPTS
            ):
                _backoff(attempt)
                continue
            raise LakeError(f"cannot add new columns to {name}: {exc}") from exc
    return catalog.load_table(name)


def local_path(uri: str) -> str:
    """A data file's location as a path DuckDB and pyarrow read (``file:`` URIs and plain paths);
    other URIs (``s3://``) as they are."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    return uri


def _location_key(uri: str) -> str:
    """A location without its scheme, so catalog URIs and plain paths compare equal."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    return f"{parsed.netloc}{unquote(parsed.path)}"


def registered_in_place(table_location: str, file_path: str) -> bool:
    """Whether data file ``file_path`` lies outside its table's folder ``table_location``: a
    user's file registered where it lies (``loglake crawl`` without ``--convert``), which loglake
    reads but never rewrites, moves or deletes."""
    root = _location_key(table_location).rstrip("/") + "/"
    return not _location_key(file_path).startswith(root)
