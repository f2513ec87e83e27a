"""loglake: logs in, an Apache Iceberg lake out, SQL over it.

``import loglake`` stays light: the heavy libraries (polars, pyarrow, pyiceberg, duckdb) load only when
a function that needs them runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from loglake.query.engine import Connection


def connect(home: str | None = None, *, config: str | None = None) -> Connection:
    """Open the lake under ``home`` (default ``$LOGLAKE_HOME`` or ``./loglake-data``) for SQL.

    Returns a :class:`~loglake.query.engine.Connection`; ``connection.sql("...")`` gives a result that
    converts to Arrow (``.arrow()``), Polars (``.pl()``) and pandas (``.df()``).
    """
    from loglake.config import load_config
    from loglake.query.engine import Connection

    return Connection(load_config(home=home, config_file=config))


__all__ = ["__version__", "connect"]
