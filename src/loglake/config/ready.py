"""Ready-made continuous queries for access-log streams (``ready_queries = true`` on a stream).

:func:`load_config` adds them to ``[queries]`` (a query of the file of the same name wins), so they
are checked like any other.

Each runs over tumbling one-minute windows and writes to ``analytics.<stream>_<name>``. They read
the columns every access-log format has (``status``, ``bytes``, ``path``, ``client``,
``user_agent``), so they work for combined, common, vhost and nginx streams alike.
"""

from __future__ import annotations

from loglake.config.queries import ContinuousQueryConfig

#: name -> (SQL over one window's records, anomaly column or "")
READY_QUERIES: dict[str, tuple[str, str]] = {
    "requests": (
        "SELECT count(*) AS requests, coalesce(sum(bytes), 0) AS bytes FROM stream",
        "requests",
    ),
    "status_mix": (
        "SELECT (status // 100)::VARCHAR || 'xx' AS status_class, count(*) AS requests "
        "FROM stream GROUP BY 1",
        "",
    ),
    "error_rate": (
        "SELECT count(*) AS requests, "
        "count(*) FILTER (WHERE status >= 500) AS errors_5xx, "
        "count(*) FILTER (WHERE status >= 400 AND status < 500) AS errors_4xx, "
        "round(count(*) FILTER (WHERE status >= 500) / count(*), 4) AS error_rate FROM stream",
        "",
    ),
    "top_paths": (
        "SELECT path, count(*) AS requests FROM stream GROUP BY path "
        "ORDER BY requests DESC, path LIMIT 10",
        "",
    ),
    "top_clients": (
        "SELECT client, count(*) AS requests, coalesce(sum(bytes), 0) AS bytes FROM stream "
        "GROUP BY client ORDER BY requests DESC, client LIMIT 10",
        "",
    ),
    "unique_visitors": (
        # A visitor is a client address with its user agent, as GoAccess counts them (hashed
        # together rather than concatenated: no string per record).
        "SELECT approx_count_distinct(hash(client, user_agent)) AS visitors FROM stream",
        "",
    ),
    "response_size": (
        "SELECT quantile_cont(bytes, 0.5) AS p50_bytes, quantile_cont(bytes, 0.95) AS p95_bytes, "
        "quantile_cont(bytes, 0.99) AS p99_bytes, max(bytes) AS max_bytes FROM stream",
        "",
    ),
}


def ready_queries(stream: str) -> dict[str, ContinuousQueryConfig]:
    """The ready-made queries of ``stream``, named ``<stream>_<name>``."""
    prefix = stream.replace("-", "_").replace(".", "_")
    return {
        f"{prefix}_{name}": ContinuousQueryConfig(
            stream=stream, window="tumbling 1m", sql=sql, anomaly_column=anomaly
        )
        for name, (sql, anomaly) in READY_QUERIES.items()
    }
