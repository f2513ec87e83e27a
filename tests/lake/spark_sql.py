"""Run SQL in a local Spark 3.5 session with Iceberg, as a script: the tests start it as a
subprocess, so its JVM ends with it (``tests/lake/test_spark_reads.py``).

Usage: ``python spark_sql.py`` with a JSON object on standard input, ``{"conf": {key: value},
"queries": [sql, ...]}``; prints one JSON line, the rows of each query, timestamps as ISO text.
The Iceberg Spark runtime jar comes from the ``snowpark-connect-deps-iceberg`` wheel (nothing is
downloaded at run time); ``spark_jars`` gives it with the JDBC driver jars the catalog needs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

ICEBERG_RUNTIME = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"


def iceberg_runtime_jar() -> Path:
    """The Iceberg Spark runtime jar installed with the ``snowpark-connect-deps-iceberg`` wheel."""
    jar = Path(str(files("snowpark_connect_deps_iceberg") / "jars" / ICEBERG_RUNTIME))
    assert jar.is_file(), f"{jar} missing: install the test extra (-c constraints.txt)"
    return jar


def plain(value: Any) -> Any:
    """A value as JSON holds it. A whole Decimal becomes an int: loglake's ``sum`` of a BIGINT
    column is DuckDB's HUGEINT, which reaches Python through Arrow as a Decimal, where Spark's is a
    BIGINT; the value is what is compared. Any other Decimal is named, so it shows in a diff."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else f"Decimal({value})"
    return value


def rows(result: list[Any]) -> list[list[Any]]:
    """Rows (Spark ``Row``s or DuckDB tuples) as lists of plain values."""
    return [[plain(v) for v in row] for row in result]


def main() -> None:
    job = json.load(sys.stdin)
    # pyspark turns a Spark TIMESTAMP into a naive datetime in this process's zone: keep it UTC.
    os.environ["TZ"] = "UTC"
    time.tzset()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName("loglake-spark-reads")
    for key, value in job["conf"].items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        spark.sparkContext.setLogLevel("ERROR")
        answers = [rows(spark.sql(sql).collect()) for sql in job["queries"]]
    finally:
        spark.stop()
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
