"""``loglake demo``: a day of generated traffic, ingested, and a short report from SQL over the lake."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from loglake.config import Config

_REPORTS = {
    "Requests per hour": (
        "SELECT strftime(date_trunc('hour', ts), '%Y-%m-%d %H:00') AS hour, count(*) AS requests, "
        "count(*) FILTER (WHERE status >= 500) AS errors_5xx "
        "FROM logs.access WHERE source = '{source}' GROUP BY 1 ORDER BY 1"
    ),
    "Status mix": (
        "SELECT status, count(*) AS requests, round(100.0 * count(*) / sum(count(*)) OVER (), 1) "
        "AS pct FROM logs.access WHERE source = '{source}' GROUP BY 1 ORDER BY 2 DESC"
    ),
    "Top paths": (
        "SELECT path, count(*) AS requests FROM logs.access WHERE source = '{source}' "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
    ),
    "Bots vs people": (
        "SELECT CASE WHEN is_bot THEN 'bot' ELSE 'person' END AS who, count(*) AS requests "
        "FROM logs.access WHERE source = '{source}' GROUP BY 1 ORDER BY 2 DESC"
    ),
}


def run_demo(config: Config, lines: int, echo: Callable[[str], None] = print) -> None:
    """Generate ``lines`` lines spread over yesterday (UTC), ingest them, print the report."""
    from rich.console import Console
    from rich.table import Table

    from loglake.generate import generate_to
    from loglake.ingest import ingest
    from loglake.query.engine import Connection

    day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    folder = config.home / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"access-{day:%Y-%m-%d}-{lines}.log"
    if not path.exists():
        with open(path, "wb") as fh:
            generate_to(fh, lines, rate=lines / 86_400, start=day, seed=day.toordinal())
    echo(f"generated {lines:,} lines of combined access log for {day:%Y-%m-%d} in {path}")
    stats = ingest(config, [str(path)], format="combined")
    echo(stats.summary())
    console = Console()
    with Connection(config) as con:
        for title, sql in _REPORTS.items():
            names, rows = con.rows(sql.format(source=str(path).replace("'", "''")))
            table = Table(*names, title=title, title_justify="left")
            for row in rows:
                table.add_row(*[str(v) for v in row])
            console.print(table)
    echo(f'lake: {config.home}  —  try: loglake query "SELECT count(*) FROM logs.access"')
