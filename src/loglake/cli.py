"""The ``loglake`` command. Thin: parses options, calls the packages, prints results and errors.

Heavy libraries are imported inside the commands that need them, so ``loglake query`` starts fast.
Errors that are the user's to fix (:class:`LoglakeError`) print one line and exit non-zero, no traceback.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from loglake import __version__
from loglake.errors import ConfigError, LoglakeError

F = TypeVar("F", bound=Callable[..., Any])

# Polars' allocator (jemalloc) keeps freed pages for 10 s by default, which lets an ingest's RSS
# climb; returning them after 1 s keeps the peak lower at the same speed (returning them at once
# cost ~1 s of page faults per 1M lines). Set before polars loads (the commands import it lazily);
# a user's own setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:1000,muzzy_decay_ms:0")


def _config(ctx: click.Context) -> Any:
    from loglake.config import load_config

    obj = ctx.ensure_object(dict)
    if "config" not in obj:
        obj["config"] = load_config(home=obj.get("home"), config_file=obj.get("config_file"))
    return obj["config"]


@click.group()
@click.version_option(__version__, prog_name="loglake")
@click.option("--home", envvar="LOGLAKE_HOME", help="Data folder (default ./loglake-data).")
@click.option("--config", "config_file", envvar="LOGLAKE_CONFIG", help="TOML config file.")
@click.pass_context
def cli(ctx: click.Context, home: str | None, config_file: str | None) -> None:
    """loglake: logs in, an Apache Iceberg lake out, SQL over it."""
    ctx.ensure_object(dict).update(home=home, config_file=config_file)


@contextmanager
def _progress(enabled: bool, forced: bool) -> Iterator[Callable[[int, int], None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]ingest"),
        TextColumn("{task.fields[lines]:,} lines"),
        TextColumn("{task.fields[rate]:,.0f} lines/s"),
        TextColumn("{task.fields[mb]:,.1f} MB"),
        TimeElapsedColumn(),
        transient=not forced,
        console=_stderr_console(force_terminal=forced),
    ) as bar:
        task = bar.add_task("ingest", total=None, lines=0, rate=0.0, mb=0.0)
        start = datetime.now(UTC)

        def update(lines: int, nbytes: int) -> None:
            secs = max((datetime.now(UTC) - start).total_seconds(), 1e-6)
            bar.update(task, lines=lines, rate=lines / secs, mb=nbytes / 1e6)

        yield update


def _stderr_console(force_terminal: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=True, force_terminal=force_terminal or None)


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    help="Format name (combined, common, vhost_combined, nginx_main, syslog, json, "
    "apache_error, nginx_error, alb, clb, s3_access, cloudfront, w3c...), "
    "an Apache LogFormat or nginx log_format string, or auto (detected per group of lines; "
    "each format's lines go to its own table).",
)
@click.option("--table", help="Target table NAMESPACE.NAME (default: the format's table).")
@click.option("--force", is_flag=True, help="Ingest inputs again even if already ingested.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
@click.pass_context
def ingest(
    ctx: click.Context,
    sources: tuple[str, ...],
    fmt: str,
    table: str | None,
    force: bool,
    progress: bool | None,
) -> None:
    """Ingest log files, folders, globs, s3:// prefixes or - (stdin) into the lake."""
    from loglake.imports import batch_process
    from loglake.ingest import ingest as run_ingest

    config = _config(ctx)
    if table is not None and table.count(".") != 1:
        raise ConfigError(f"--table {table!r} must be NAMESPACE.NAME, e.g. logs.web")
    show = sys.stderr.isatty() if progress is None else progress
    # pandas is never used here (pyarrow's probes would import it), nor much of Python's GC.
    with batch_process(), _progress(show, forced=bool(progress)) as update:
        stats = run_ingest(
            config, list(sources), format=fmt, table=table, force=force, progress=update
        )
    for name, used in stats.formats.items():
        if not any(used.values()) and name in stats.lines and name not in stats.failed:
            click.echo(
                f"warning: {name}: format not recognized; its lines are in logs.rejected "
                "(pass --format)",
                err=True,
            )
    click.echo(stats.summary())
    for name, rows in sorted(stats.tables.items()):
        click.echo(f"  {name}: +{rows:,} rows")
    if stats.formats:
        click.echo("formats:" if fmt != "auto" else "formats detected:")
    for name, used in stats.formats.items():
        lines, headers = stats.lines.get(name, 0), stats.directives.get(name, 0)
        click.echo(f"  {name}: {_formats_line(used, lines, headers)}")
    # The other inputs are committed; a failed one makes the exit status say so (for cron, CI).
    for name, problem in stats.failed.items():
        click.echo(f"error: {name}: {problem}", err=True)
    if stats.failed:
        sys.exit(1)


@cli.command()
@click.argument("paths", nargs=-1)
@click.option(
    "--table", help="Table NAMESPACE.NAME for everything crawled (default: one per path)."
)
@click.option(
    "--plan", "dry_run", is_flag=True, help="Print what would be registered; write nothing."
)
@click.option(
    "--convert",
    is_flag=True,
    help="Copy Parquet into the lake too, instead of registering local Parquet files in place.",
)
@click.option(
    "--list",
    "list_scheduled",
    is_flag=True,
    help="List the scheduled crawls ([crawls.NAME]) and their newest runs in loglake serve.",
)
@click.pass_context
def crawl(
    ctx: click.Context,
    paths: tuple[str, ...],
    table: str | None,
    dry_run: bool,
    convert: bool,
    list_scheduled: bool,
) -> None:
    """Catalog files already in folders (or s3:// prefixes): detect formats, schemas, partitions.
    Local Parquet files are registered where they lie unless --convert."""
    from loglake.crawl import crawl as run_crawl
    from loglake.crawl import plan

    config = _config(ctx)
    if list_scheduled:
        _list_crawls(config)
        return
    if not paths:
        raise click.UsageError("give one or more PATHS to crawl, or --list")
    report = (plan if dry_run else run_crawl)(config, list(paths), table, convert)
    for line in report.lines(planned=dry_run):
        click.echo(line)


def _list_crawls(config: Any, runs: int = 10) -> None:
    """Print the scheduled crawls (paths, table, schedule, next run) and their newest runs."""
    from rich.console import Console
    from rich.table import Table

    from loglake.crawl_schedule import crawl_history

    history = crawl_history(config)
    try:
        now = datetime.now(UTC)
        table = Table("crawl", "paths", "table", "schedule", "next run (UTC)")
        for name, spec in sorted(config.crawls.items()):
            due = spec.schedule_spec.next_run(history.last_start(name), now)
            table.add_row(
                name,
                "\n".join(spec.paths),
                spec.table or "one per path",
                spec.schedule,
                due.isoformat()[:19].replace("T", " ") if due else "-",
            )
        records = history.runs(None, runs)
    finally:
        history.close()
    out = Table("started (UTC)", "crawl", "status", "rows", "duration", "files / error")
    for r in records:
        started = datetime.fromtimestamp(r.started, UTC).strftime("%Y-%m-%d %H:%M:%S")
        took = "-" if r.seconds is None else f"{r.seconds:.2f} s"
        out.add_row(started, r.job, r.status, f"{r.rows:,}", took, r.error)
    console = Console(markup=False)  # paths and errors are text, never markup
    if not config.crawls:
        console.print("no scheduled crawls; declare one as [crawls.NAME] in loglake.toml")
    else:
        console.print(table)
    if records:
        console.print(out)


def _formats_line(used: dict[str, int], lines: int, directives: int = 0) -> str:
    """What each format parsed of an input: ``vhost_combined 2, combined 1, unparsed 2 (of 5 lines)``;
    a W3C file's directive lines (kept in logs.rejected, as every line no record came from) are
    counted apart from lines that did not parse: ``w3c 2, W3C directives 9 (of 11 lines)``."""
    if not lines:
        return "no lines"
    parts = [f"{fmt} {n:,}" for fmt, n in used.items() if n]
    if not parts:
        return f"none recognized ({lines:,} lines)"
    if directives:
        parts.append(f"W3C directives {directives:,}")
    unparsed = lines - sum(used.values()) - directives
    if unparsed > 0:
        parts.append(f"unparsed {unparsed:,}")
    return f"{', '.join(parts)} (of {lines:,} lines)"


def _write_rows(out: IO[str], fmt: str, names: list[str], rows: Iterator[tuple[Any, ...]]) -> int:
    count = 0
    if fmt in ("csv", "json"):
        from loglake.query.output import write_rows

        count = write_rows(out, fmt, names, rows)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*names, show_lines=False)
        for row in rows:
            table.add_row(*["" if v is None else str(v) for v in row])
            count += 1
        Console(file=out, width=max(80, min(240, sum(len(n) + 12 for n in names)))).print(table)
    return count


@cli.command()
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="json = one object per line.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")
@click.option("--dialect", default=None, help="Source SQL dialect, e.g. athena or trino.")
@click.pass_context
def query(ctx: click.Context, sql: str, fmt: str, output: str | None, dialect: str | None) -> None:
    """Run one read-only SQL statement over the lake (tables by catalog name, e.g. logs.access)."""
    from loglake.query.engine import Connection

    config = _config(ctx)
    # This process does nothing else: the query runs here, and its memory limit bounds the process.
    with Connection(config, isolated=False) as con:
        _query(con, config, sql, fmt, output, dialect)


def _query(
    con: Any, config: Any, sql: str, fmt: str, output: str | None, dialect: str | None
) -> None:
    if fmt == "parquet":
        if not output:
            raise ConfigError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq

        result = con.sql(sql, dialect=dialect)
        pq.write_table(result.arrow(), output, compression="zstd")
        click.echo(f"{len(result):,} rows written to {output}", err=True)
        if result.truncated:
            click.echo(f"warning: the result was cut at its {result.cut_by} limit", err=True)
        return
    names, rows = con.rows(sql, dialect=dialect)
    if output:
        with open(output, "w", newline="") as fh:
            n = _write_rows(fh, fmt, names, rows)
        click.echo(f"{n:,} rows written to {output}", err=True)
    else:
        n = _write_rows(sys.stdout, fmt, names, rows)
    result = con.last_result
    if result is not None and result.cut_by == "bytes":
        click.echo(
            f"warning: output stopped at query.max_result_bytes = "
            f"{config.query.max_result_bytes:,} bytes ({n:,} rows)",
            err=True,
        )
    elif n >= config.query.max_rows:
        click.echo(
            f"warning: output stopped at query.max_rows = {config.query.max_rows:,} rows", err=True
        )


def _parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(
            f"--start {value!r} is not an ISO timestamp like 2026-11-25T00:00:00Z"
        ) from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@cli.command()
@click.option("--lines", type=click.IntRange(min=0), required=True, help="Number of lines.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.001),
    default=10.0,
    show_default=True,
    help="Average lines per second of simulated time.",
)
@click.option("--start", help="Time of the first line (ISO 8601; default: ends about now).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE, not stdout.")
def generate(lines: int, rate: float, start: str | None, seed: int, output: str | None) -> None:
    """Write realistic combined access logs (many clients, bots, error bursts)."""
    from loglake.generate import generate_to

    begin = _parse_ts(start)
    if output:
        with open(output, "wb") as fh:
            generate_to(fh, lines, rate=rate, start=begin, seed=seed)
    else:
        generate_to(sys.stdout.buffer, lines, rate=rate, start=begin, seed=seed)


@cli.command()
@click.option("--lines", type=click.IntRange(min=1000), default=300_000, show_default=True)
@click.pass_context
def demo(ctx: click.Context, lines: int) -> None:
    """Generate a day of traffic, ingest it, and print a short report."""
    from loglake.demo import run_demo

    run_demo(_config(ctx), lines, echo=click.echo)


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default 8080).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the streaming server: HTTP ingest into durable streams, delivered to the lake."""
    from loglake.server.app import serve as run_server

    config = _config(ctx)
    # The options win over [server]; the server checks the address it is given (loopback only
    # without credentials) and the start-up event reports it.
    server = dataclasses.replace(
        config.server,
        host=config.server.host if host is None else host,
        port=config.server.port if port is None else port,
    )
    run_server(dataclasses.replace(config, server=server))


@cli.command()
@click.pass_context
def tables(ctx: click.Context) -> None:
    """List the lake's tables with row counts, sizes and last commit."""
    from rich.console import Console
    from rich.table import Table

    from loglake.query.plan import current_locations, get_plan, table_names

    config = _config(ctx)
    locations = current_locations(config) or {}
    out = Table("table", "rows", "files", "size", "last commit (UTC)")
    for name in table_names(config):
        plan = get_plan(config, name, locations.get(name))
        last = (
            datetime.fromtimestamp(plan.last_commit_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if plan.last_commit_ms
            else "-"
        )
        out.add_row(name, f"{plan.rows:,}", f"{len(plan.files):,}", _size(plan.size), last)
    Console().print(out)


@cli.command()
@click.argument("table", required=False)
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.pass_context
def maintain(ctx: click.Context, table: str | None, dry_run: bool) -> None:
    """Compact, apply retention, expire snapshots and remove orphan files of TABLE (default: all
    tables), printing what was done per table. Safe while queries and writers run."""
    from loglake.lake.catalog import list_tables, open_catalog
    from loglake.lake.maintenance import maintain_table

    config = _config(ctx)
    catalog = open_catalog(config)
    for name in [table] if table else list_tables(catalog):
        r = maintain_table(catalog, name, config, dry_run=dry_run)
        verb = "would " if dry_run else ""
        dropped = ", ".join(r.partitions_dropped) or "none"
        click.echo(
            f"{name}: files {r.files_before:,} -> {r.files_after:,}, "
            f"{_size(r.bytes_before)} -> {_size(r.bytes_after)}; "
            f"{verb}merge {r.compacted_files:,} files into {r.written_files:,}; "
            f"{verb}drop {len(r.partitions_dropped):,} partitions "
            f"({r.files_dropped:,} files, {r.rows_dropped:,} rows): {dropped}; "
            f"{verb}expire {r.snapshots_expired:,} snapshots; "
            f"{verb}remove {r.orphans_removed:,} orphan files ({_size(r.orphan_bytes)})"
            + (
                f"; {r.in_place_files:,} files registered in place left alone"
                if r.in_place_files
                else ""
            )
        )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"


@cli.group()
def job() -> None:
    """ETL jobs of the config ([jobs.NAME]): run one now, list them with their history."""


@job.command("run")
@click.argument("name")
@click.pass_context
def job_run(ctx: click.Context, name: str) -> None:
    """Run job NAME once now and print what it wrote (the run is kept in the history)."""
    from loglake.analytics.jobs import run_job

    result = run_job(_config(ctx), name)
    span = ""
    if result.watermark_to is not None:
        span = f" (rows up to {_micros_text(result.watermark_to)})"
    note = f"; {result.note}" if result.note else ""
    click.echo(
        f"job {name}: {result.rows:,} rows written to {result.target}{span} "
        f"in {result.seconds:.2f} s{note}"
    )


@job.command("list")
@click.argument("name", required=False)
@click.option(
    "--runs",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Newest runs shown (of NAME, or of every job).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the jobs and their runs.")
@click.pass_context
def job_list(ctx: click.Context, name: str | None, runs: int, as_json: bool) -> None:
    """List the jobs (mode, schedule, target, next run) and their newest runs (status, rows,
    duration, error)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from loglake.analytics.jobs import JobHistory, get_job

    config = _config(ctx)
    names = [name] if name else sorted(config.jobs)
    for n in names:
        get_job(config, n)  # NoSuchJobError for an unknown name
    history = JobHistory(config.state_dir / "jobs.db")
    try:
        now = datetime.now(UTC)
        jobs = []
        for n in names:
            j = config.jobs[n]
            due = j.schedule_spec.next_run(history.last_start(n), now)
            jobs.append(
                {
                    "name": n,
                    "mode": j.mode,
                    "schedule": j.schedule or "by hand",
                    "target": j.target_of(n),
                    "next_run": due.isoformat() if due else None,
                }
            )
        records = history.runs(name, runs) if runs else []
    finally:
        history.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "jobs": jobs,
                    "runs": [{**dataclasses.asdict(r), "seconds": r.seconds} for r in records],
                }
            )
        )
        return
    table = Table("job", "mode", "schedule", "target", "next run (UTC)")
    for j in jobs:
        table.add_row(
            j["name"],
            j["mode"],
            j["schedule"],
            j["target"],
            (j["next_run"] or "-")[:19].replace("T", " "),
        )
    out = Table("started (UTC)", "job", "status", "rows", "duration", "error / note")
    for r in records:
        started = datetime.fromtimestamp(r.started, UTC).strftime("%Y-%m-%d %H:%M:%S")
        took = "-" if r.seconds is None else f"{r.seconds:.2f} s"
        out.add_row(started, r.job, r.status, f"{r.rows:,}", took, r.error)
    console = Console(markup=False)  # errors quote SQL and config ([jobs.x]): text, never markup
    console.print(table)
    if runs:
        console.print(out)


def _micros_text(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.ensure_object(dict)[key] = value

    return callback


# --home and --config are accepted after the subcommand too (`loglake serve --config FILE`), as the
# streaming docs write them; given there, they win over the same option before it.
for _command in [*cli.commands.values(), *job.commands.values()]:
    _command.params += [
        click.Option(
            ["--home"],
            expose_value=False,
            callback=_remember("home"),
            help="Data folder (default ./loglake-data).",
        ),
        click.Option(
            ["--config", "config_file"],
            expose_value=False,
            callback=_remember("config_file"),
            help="TOML config file.",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs the CLI, turns LoglakeError into a one-line message."""
    try:
        cli.main(args=argv, prog_name="loglake", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LoglakeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    finally:
        # The process ends next: what the command built is freed with it, so the interpreter's
        # exit need not traverse it for cycles (a third of a second after a 1M-line ingest).
        gc.freeze()


if __name__ == "__main__":
    main()


__all__ = ["Path", "cli", "main"]
