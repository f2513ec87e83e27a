"""Helper of ``ingest_bench.py``: what a batch ingest costs once the process has started.

    python benchmarks/warm_ingest.py imports            # import what a batch ingest imports
    python benchmarks/warm_ingest.py imports-no-iceberg # the same without pyiceberg (and SQLAlchemy)
    python benchmarks/warm_ingest.py ingest HOME FILE   # import all that, then time one ingest

``imports`` loads the third-party modules ``loglake ingest`` loads (pyiceberg with SQLAlchemy and
pydantic, Polars, pyarrow, NumPy, ua-parser), pandas kept out as the CLI keeps it out; run under
``/usr/bin/time``, its wall time is the floor under any one-shot ingest. ``ingest`` does that, opens
the catalog and compiles ua-parser's rules, and then runs ``loglake.ingest.ingest`` on FILE into the
empty home HOME, the way ``loglake ingest --format combined`` does; it prints one JSON line with the
wall and CPU seconds of that call alone (the part of an ingest that grows with its input).
"""

from __future__ import annotations

import json
import os
import sys
import time

# The modules a one-line `loglake ingest` has loaded when it ends (checked against its
# sys.modules), by package: importing these is most of its fixed cost.
ICEBERG = (
    "pyiceberg.catalog.sql",
    "pyiceberg.io.pyarrow",
    "pyiceberg.table",
    "pyiceberg.transforms",
)
OTHERS = ("polars", "pyarrow.parquet", "pyarrow.compute", "numpy", "ua_parser")


def load(modules: tuple[str, ...]) -> None:
    import importlib

    from loglake.imports import without_pandas

    with without_pandas():
        for name in modules:
            importlib.import_module(name)


def warm_ingest(home: str, path: str) -> dict[str, float]:
    os.environ["LOGLAKE_HOME"] = home
    from loglake.imports import batch_process

    with batch_process():
        load(OTHERS + ICEBERG)
        from loglake.config import load_config
        from loglake.enrich.useragent import parse_user_agent
        from loglake.ingest import ingest
        from loglake.lake.catalog import open_catalog

        parse_user_agent("Mozilla/5.0")  # compiles ua-parser's rules
        config = load_config()
        open_catalog(config)
        before = os.times()
        start = time.perf_counter()
        stats = ingest(config, [path], format="combined")
        wall = time.perf_counter() - start
        after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"wall_s": wall, "cpu_s": cpu, "rows": float(sum(stats.tables.values()))}


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "imports":
        load(OTHERS + ICEBERG)
    elif what == "imports-no-iceberg":
        load(OTHERS)
    elif what == "ingest" and len(sys.argv) == 4:
        print(json.dumps(warm_ingest(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
