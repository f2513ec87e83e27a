"""ETL jobs: ``[jobs.NAME]``, SQL over lake tables whose result is written to a lake table.

:func:`job_config` parses one job's settings (the strict parser of every section) and checks their
values, so a job that loads is one that can run: its schedule, mode and bucket are parsed here
(:class:`Schedule`, :attr:`JobConfig.bucket_us`). What a run does is :mod:`loglake.analytics.jobs`;
the reference is docs/catalog.md ("ETL jobs") and docs/config.md.

Schedules are ``every DURATION`` (``every 15m``, ``every 1h``: one run that long after the previous
run started), ``daily HH:MM`` (once a day at that UTC time) or ``""`` (only ``loglake job run``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from loglake.config.parse import SettingError, build, tables_of
from loglake.config.queries import QUERY_NAME, parse_duration
from loglake.config.streams import TABLE_NAME
from loglake.errors import ConfigError

JOB_MODES = ("full", "incremental")
_DAILY = re.compile(r"daily\s+([01]\d|2[0-3]):([0-5]\d)")
_SCHEDULE_HINT = "write 'every 1h', 'every 15m', 'daily 02:00' (UTC) or '' (run by hand only)"


@dataclass(frozen=True)
class Schedule:
    """A parsed ``schedule``: every ``every_us`` microseconds, or daily at ``daily`` (hour, minute)
    UTC, or never (both unset: the job runs only through ``loglake job run``)."""

    every_us: int = 0
    daily: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str, what: str) -> Schedule:
        """``every D`` / ``daily HH:MM`` / ``""``; ConfigError naming ``what`` for anything else."""
        words = text.strip().lower()
        if not words:
            return cls()
        if words.startswith("every"):
            return cls(every_us=parse_duration(words[len("every") :], what))
        match = _DAILY.fullmatch(words)
        if match:
            return cls(daily=(int(match.group(1)), int(match.group(2))))
        raise ConfigError(f"{what}: {text[:100]!r} is not a schedule; {_SCHEDULE_HINT}")

    @property
    def scheduled(self) -> bool:
        return bool(self.every_us or self.daily)

    def next_run(self, last_start: datetime | None, now: datetime) -> datetime | None:
        """When the next run is due, given the start of the previous one (None: never ran).

        ``every``: at once if it never ran, else ``every`` after the previous start. ``daily``:
        the first HH:MM after the previous start (after ``now`` if it never ran). None when the
        job is not scheduled.
        """
        if self.every_us:
            if last_start is None:
                return now
            return last_start + timedelta(microseconds=self.every_us)
        if self.daily is not None:
            after = last_start or now
            at = after.astimezone(UTC).replace(
                hour=self.daily[0], minute=self.daily[1], second=0, microsecond=0
            )
            return at if at > after else at + timedelta(days=1)
        return None


@dataclass(frozen=True)
class JobConfig:
    """One ETL job (``[jobs.NAME]``). Raises :class:`SettingError` for a value out of range.

    ``mode = "full"``: each run replaces the target with the result of ``sql``, in one commit.
    ``mode = "incremental"``: each run reads only the source rows whose ``watermark_column`` lies
    between the previous run's watermark and the start of the ``bucket`` holding the newest source
    row, and appends the result; the watermark is stored in the same commit as the rows.
    """

    sql: str = ""  # DuckDB SELECT over lake tables (namespace.table)
    target: str = ""  # "" = analytics.<name>
    schedule: str = ""  # "every 1h" | "daily 02:00" | "" (by hand only)
    mode: str = "full"  # full | incremental
    watermark_column: str = "ts"  # incremental: the source tables' time column
    bucket: str = "1h"  # incremental: only whole buckets of the watermark column are processed

    def __post_init__(self) -> None:
        where = "jobs.NAME"
        if not self.sql.strip():
            raise SettingError(where, "sql", " is missing: a SELECT over lake tables")
        if self.target and not TABLE_NAME.fullmatch(self.target):
            raise SettingError(
                where,
                "target",
                f" = {self.target[:100]!r} must be NAMESPACE.NAME, e.g. analytics.x",
            )
        if self.mode not in JOB_MODES:
            raise SettingError(
                where, "mode", f" = {self.mode[:50]!r}; choose one of {', '.join(JOB_MODES)}"
            )
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]{0,127}", self.watermark_column):
            raise SettingError(
                where, "watermark_column", f" = {self.watermark_column[:50]!r} is not a column name"
            )
        for key, parse in (
            ("schedule", lambda: Schedule.parse(self.schedule, "")),
            ("bucket", lambda: parse_duration(self.bucket, "")),
        ):
            try:
                parse()
            except ConfigError as exc:
                raise SettingError(where, key, str(exc)) from None

    @property
    def schedule_spec(self) -> Schedule:
        return Schedule.parse(self.schedule, "schedule")

    @property
    def bucket_us(self) -> int:
        return parse_duration(self.bucket, "bucket")

    def target_of(self, name: str) -> str:
        """The table the job writes: ``target`` or ``analytics.<name>``."""
        return self.target or f"analytics.{name}"


def job_config(name: str, settings: Mapping[str, Any]) -> JobConfig:
    """``[jobs.NAME]`` checked: name, keys, types and values; ConfigError naming the key."""
    if not QUERY_NAME.fullmatch(name):
        raise ConfigError(f"[jobs.{name[:100]}]: job names are 1-128 letters, digits, '_' and '-'")
    return build(JobConfig, f"jobs.{name}", settings)


def jobs_section(raw: Any) -> dict[str, JobConfig]:
    """The ``[jobs]`` section of the file: NAME -> :class:`JobConfig`."""
    return {
        name: job_config(name, settings)
        for name, settings in tables_of("jobs", raw, "[jobs.daily_traffic]").items()
    }
