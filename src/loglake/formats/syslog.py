"""Syslog lines: RFC 3164 (BSD, as files written by rsyslog/syslog-ng) and RFC 5424, vectorized.

Each protocol is one anchored regular expression with a named group per header field; a batch is
parsed with ``str.extract_groups`` and a few Polars column expressions (``strptime``, casts,
``when/then``), with no Python per line. The ``syslog`` format accepts both protocols, detected per
line: the RFC 5424 regex runs first and the RFC 3164 regex runs on the lines it did not match;
``rfc3164`` and ``rfc5424`` accept only their own protocol.

Columns (``SYSLOG_COLUMNS``, then ``line``): ``ts`` is the event time in UTC; ``facility`` and
``severity`` are names decoded from ``<PRI>`` (null when the line has none, which is how most files
look: rsyslog does not write the PRI to files by default); ``msgid`` and ``structured_data`` exist
only in RFC 5424 (the structured data is kept as written, e.g. ``[exampleSDID@32473 iut="3"]``).

Choices, and why:

* RFC 3164 timestamps carry no year and no zone. The zone is the ``timezone`` option (default UTC).
  The year is the ``year`` option, or else inferred the way rsyslog and Vector do: the year of
  ``now`` (default: the time of the parse), or the year before when that would put the line more
  than one day in the future of ``now`` (a ``Dec 31`` line read on Jan 1 is from last year). A date
  that does not exist in the inferred year (``Feb 29``) is tried in the year before as well.
* rsyslog's high-precision file format writes an RFC 3339 timestamp in place of ``Mmm dd hh:mm:ss``;
  it is accepted, with its offset (or, without one, in ``timezone``).
* The RFC 3164 TAG is ``app[pid]:`` or ``app:`` followed by a space or the end of the line; ``app``
  may hold anything but spaces, brackets and colons (``sshd(pam_unix)``, ``rpc.statd``,
  ``/usr/sbin/cron``). A line without such a tag is kept: ``app`` and ``pid`` are null and
  ``message`` is the whole text after the host. So ``syslogd 1.4.1: restart.`` (a space inside the
  tag) gives ``app`` null and the message ``syslogd 1.4.1: restart.``: guessing where such a tag
  ends would misread ordinary messages.
* A host name never holds brackets nor ends with a colon. A line whose first word after the
  timestamp does (``Nov 23 21:50:19 sshd[8148]: Disconnecting: ...``, as local daemons write
  without a host) has ``host`` null and that word read as its TAG (``app`` sshd, ``pid`` 8148).
* RFC 5424 nil values (``-``) become null; a non-numeric PROCID gives ``pid`` null; a nil TIMESTAMP
  (the sender had no clock) gets ``now``, as rsyslog uses the reception time. The UTF-8 BOM that may
  start MSG is removed. A line without MSG has ``message`` null.
* Lines that match neither protocol are rejected ("does not match ..."), empty lines are rejected
  ("empty line"), and lines whose timestamp is not a real time (``Feb 30``, ``25:00:00``, a local
  time skipped by a DST change) are rejected ("invalid timestamp"); rejected lines keep their raw
  bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from loglake.errors import FormatError
from loglake.formats.base import LineBatch, ParseResult

#: Facility names by code (RFC 5424 table 1, with the names rsyslog and Vector use).
FACILITIES: tuple[str, ...] = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    *(f"local{i}" for i in range(8)),
)
#: Severity names by code (RFC 5424 table 2).
SEVERITIES: tuple[str, ...] = (
    "emerg",
    "alert",
    "crit",
    "err",
    "warning",
    "notice",
    "info",
    "debug",
)

#: Parsed columns, in table order, with their Polars types (``line`` follows them).
SYSLOG_COLUMNS: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "host": pl.String(),
    "app": pl.String(),
    "pid": pl.Int64(),
    "facility": pl.String(),
    "severity": pl.String(),
    "msgid": pl.String(),
    "structured_data": pl.String(),
    "message": pl.String(),
}

_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_ISO_BASE = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"
# One SD-ELEMENT: [SD-ID *(SP PARAM-NAME="PARAM-VALUE")]; inside a value, \" \\ and \] are escapes.
_SD_NAME = r'[^\s\]="]+'
_SD_ELEMENT = rf'\[{_SD_NAME}(?: {_SD_NAME}="(?:[^"\\]|\\.)*")*\]'

#: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [SP MSG]
RFC5424_RE = (
    r"^<(?P<pri>\d{1,3})>1 "
    rf"(?P<ts>-|{_ISO_BASE}(?:Z|[+-]\d{{2}}:\d{{2}})) "
    r"(?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    rf"(?P<sd>-|(?:{_SD_ELEMENT})+)"
    r"(?: (?P<msg>.*))?$"
)
#: [<PRI>]TIMESTAMP HOSTNAME [TAG[PID]: ]MSG, TIMESTAMP being `Mmm dd hh:mm:ss` or RFC 3339.
RFC3164_RE = (
    r"^(?:<(?P<pri>\d{1,3})>)?"
    rf"(?P<ts>(?:{_MONTHS}) {{1,2}}\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}}"
    rf"|{_ISO_BASE}(?:Z|[+-]\d{{2}}:?\d{{2}})?) +"
    # A host never holds brackets nor ends with a colon: a first word that does (`sshd[8148]:`)
    # is the TAG of a line written without a host, as local daemons do.
    r"(?:(?P<host>[^\s\[\]]*[^\s\[\]:])(?: +|$))?"
    r"(?:(?P<app>[^\s\[\]:]+)(?:\[(?P<pid>[^\]]*)\])?:(?: |$))?(?P<msg>.*)$"
)

# Protocols each mode tries, in order (RFC 5424 first: its header is the stricter one).
_MODES: dict[str, tuple[str, ...]] = {
    "syslog": ("rfc5424", "rfc3164"),
    "rfc3164": ("rfc3164",),
    "rfc5424": ("rfc5424",),
}
_REGEXES = {"rfc5424": RFC5424_RE, "rfc3164": RFC3164_RE}
# Every RFC 5424 line starts with `<`: the full regex runs only on those (most files hold RFC 3164
# lines without PRI, and a cheap prefix test is much faster than a failing regex match).
_PREFIXES = {"rfc5424": "<", "rfc3164": ""}
_DESCRIPTIONS = {
    "syslog": "syslog (RFC 3164 or RFC 5424)",
    "rfc3164": "RFC 3164 syslog",
    "rfc5424": "RFC 5424 syslog",
}
_MAX_PRI = 191  # facility 23 (local7) * 8 + severity 7 (debug)


@dataclass
class SyslogFormat:
    """Syslog parser for one mode: ``syslog`` (both protocols), ``rfc3164`` or ``rfc5424``.

    ``timezone`` is the zone of RFC 3164 timestamps (they carry none); ``year`` fixes their year;
    ``now`` is the reference time for year inference and nil RFC 5424 timestamps (default: the time
    of each ``parse`` call). Raises :class:`FormatError` for an unknown mode or time zone.
    """

    name: str
    timezone: str = "UTC"
    year: int | None = None
    now: datetime | None = None
    protocols: tuple[str, ...] = field(init=False)
    default_table: ClassVar[str] = "logs.syslog"
    enrich: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.name not in _MODES:
            raise FormatError(
                f"unknown syslog format {self.name!r}; use one of: {', '.join(_MODES)}"
            )
        try:
            ZoneInfo(self.timezone)  # used for the year of `now`
            # ... and Polars (chrono-tz) converts the timestamps: both must know the zone.
            pl.Series([datetime(2000, 1, 1)]).dt.replace_time_zone(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, pl.exceptions.PolarsError) as exc:
            raise FormatError(
                f"unknown time zone {self.timezone!r} for syslog timestamps; use an IANA name "
                "such as 'UTC' or 'Europe/Berlin'"
            ) from exc
        self.protocols = _MODES[self.name]

    # -- detection -----------------------------------------------------------------------------

    def match_rate(self, sample: pl.Series) -> float:
        """Fraction of ``sample`` lines shaped like this mode's lines (timestamps not checked)."""
        if len(sample) == 0:
            return 0.0
        hit = pl.repeat(False, len(sample), eager=True)
        for protocol in self.protocols:
            hit = hit | sample.str.contains(_REGEXES[protocol]).fill_null(False)
        return int(hit.sum()) / len(sample)

    # -- parsing -------------------------------------------------------------------------------

    def parse(self, batch: LineBatch) -> ParseResult:
        """Parse every line of ``batch``; lines that do not fit go to ``rejected`` with a reason.

        Never raises for bad input: ``parsed.height + rejected.height == len(batch)``.
        """
        now = _utc(self.now) if self.now is not None else datetime.now(UTC)
        len(batch)
        line_no = batch.line_numbers()
        remaining = pl.DataFrame({"text": batch.text.cast(pl.String), "line": line_no})
        parts: list[pl.DataFrame] = []
        for protocol in self.protocols:
            matched, remaining = _split(remaining, _REGEXES[protocol], _PREFIXES[protocol])
            if protocol == "rfc5424":
                parts.append(matched.select(_rfc5424_exprs(now)))
            else:
                parts.append(matched.select(self._rfc3164_exprs(now)))
        parsed = pl.concat(parts).sort("line") if len(parts) > 1 else parts[0]
        bad_ts = parsed.get_column("ts").is_null()
        bad_lines = parsed.get_column("line").filter(bad_ts)
        parsed = parsed.filter(~bad_ts)
        unmatched = remaining.get_column("line")
        reasons = (
            pl.when(pl.col("text").str.len_bytes() == 0)
            .then(pl.lit("empty line"))
            .when(pl.col("line").is_in(bad_lines.implode()))
            .then(pl.lit("invalid timestamp"))
            .otherwise(pl.lit(f"does not match {_DESCRIPTIONS[self.name]}"))
        )
        mask = line_no.is_in(unmatched.implode()) | line_no.is_in(bad_lines.implode())
        return ParseResult(parsed=parsed, rejected=batch.rejected(mask, reasons))

    def _rfc3164_exprs(self, now: datetime) -> list[pl.Expr]:
        """Column expressions turning RFC 3164 regex groups into ``SYSLOG_COLUMNS`` + ``line``."""
        tz = self.timezone
        text = pl.col("ts")
        # Space-padded days (`Jun  3`) and single-digit days both become `Jun 3` for strptime.
        bsd = text.str.replace_all(" +", " ")

        def naive(year: int) -> pl.Expr:
            return (pl.lit(f"{year} ") + bsd).str.strptime(
                pl.Datetime("us"), "%Y %b %d %H:%M:%S", strict=False
            )

        def localize(expr: pl.Expr) -> pl.Expr:
            # A local time that a DST change repeats takes its first occurrence (what a clock
            # going back writes first); one that a DST change skips is null: invalid timestamp.
            return expr.dt.replace_time_zone(
                tz, ambiguous="earliest", non_existent="null"
            ).dt.convert_time_zone("UTC")

        if self.year is not None:
            bsd_ts = localize(naive(self.year))
        else:
            this_year = now.astimezone(ZoneInfo(tz)).year
            current = naive(this_year)
            current_utc = localize(current)
            limit = pl.lit(now + timedelta(days=1), dtype=pl.Datetime("us", "UTC"))
            # Previous year when the date is in the future (beyond clock skew) or does not exist
            # this year (Feb 29); a time skipped by DST stays null rather than moving a year back.
            use_prev = current.is_null() | (current_utc > limit).fill_null(False)
            bsd_ts = pl.when(use_prev).then(localize(naive(this_year - 1))).otherwise(current_utc)
        iso = text.str.replace(r"[Zz]$", "+00:00").str.replace(r"([+-]\d{2})(\d{2})$", "$1:$2")
        iso_with_offset = iso.str.strptime(
            pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False
        )
        iso_local = localize(
            iso.str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S%.f", strict=False)
        )
        iso_ts = (
            pl.when(text.str.contains(r"(?:[Zz]|[+-]\d{2}:?\d{2})$"))
            .then(iso_with_offset)
            .otherwise(iso_local)
        )
        ts = pl.when(text.str.contains(r"^\d{4}-")).then(iso_ts).otherwise(bsd_ts)
        pri = pl.col("pri").cast(pl.Int64)
        return [
            ts.alias("ts"),
            pl.col("host"),
            pl.col("app"),
            pl.col("pid").cast(pl.Int64, strict=False),
            _facility(pri),
            _severity(pri),
            pl.lit(None, dtype=pl.String).alias("msgid"),
            pl.lit(None, dtype=pl.String).alias("structured_data"),
            # A line that ends after the host has no message (not an empty one).
            pl.when((pl.col("msg") == "") & pl.col("app").is_null())
            .then(None)
            .otherwise(pl.col("msg"))
            .alias("message"),
            pl.col("line"),
        ]


def _rfc5424_exprs(now: datetime) -> list[pl.Expr]:
    """Column expressions turning RFC 5424 regex groups into ``SYSLOG_COLUMNS`` + ``line``."""
    text = pl.col("ts")
    parsed = text.str.replace(r"Z$", "+00:00").str.strptime(
        pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False
    )
    ts = pl.when(text == "-").then(pl.lit(now, dtype=pl.Datetime("us", "UTC"))).otherwise(parsed)
    pri = pl.col("pri").cast(pl.Int64)
    return [
        ts.alias("ts"),
        _nil("host"),
        _nil("app"),
        _nil("procid").cast(pl.Int64, strict=False).alias("pid"),
        _facility(pri),
        _severity(pri),
        _nil("msgid"),
        _nil("sd").alias("structured_data"),
        pl.col("msg").str.strip_prefix("\ufeff").alias("message"),
        pl.col("line"),
    ]


def _split(frame: pl.DataFrame, regex: str, prefix: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines of ``frame`` matching ``regex`` (as regex groups + ``line``) and the other lines.

    Only lines starting with ``prefix`` are tried.
    """
    tried = frame.filter(pl.col("text").str.starts_with(prefix)) if prefix else frame
    groups = tried.get_column("text").str.extract_groups(regex).struct.unnest()
    pri = groups.get_column("pri").cast(pl.Int64)
    # `ts` is captured by every match; a PRI above 191 names no facility: not syslog.
    ok = groups.get_column("ts").is_not_null() & (pri.is_null() | (pri <= _MAX_PRI))
    matched = pl.concat([groups, tried.select("line")], how="horizontal").filter(ok)
    done = matched.get_column("line")
    return matched, frame.filter(~pl.col("line").is_in(done.implode()))


def _nil(column: str) -> pl.Expr:
    """RFC 5424 NILVALUE (``-``) as null."""
    col = pl.col(column)
    return pl.when(col == "-").then(None).otherwise(col).alias(column)


def _facility(pri: pl.Expr) -> pl.Expr:
    mapping = dict(enumerate(FACILITIES))
    return (
        (pri // 8).replace_strict(mapping, default=None, return_dtype=pl.String).alias("facility")
    )


def _severity(pri: pl.Expr) -> pl.Expr:
    mapping = dict(enumerate(SEVERITIES))
    return (pri % 8).replace_strict(mapping, default=None, return_dtype=pl.String).alias("severity")


def _utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def syslog_format(name: str, **options: object) -> SyslogFormat:
    """The syslog format ``name`` (``syslog``, ``rfc3164`` or ``rfc5424``).

    Options: ``timezone`` (IANA name, default ``UTC``), ``year`` (int) and ``now`` (datetime); other
    options are ignored (auto-detection passes every format the same options). Raises
    :class:`FormatError` for an unknown name, a bad option type or an unknown time zone.
    """
    timezone = options.get("timezone")
    year = options.get("year")
    now = options.get("now")
    if timezone is not None and not isinstance(timezone, str):
        raise FormatError(f"syslog option timezone must be a zone name, got {timezone!r}")
    if year is not None and (not isinstance(year, int) or isinstance(year, bool)):
        raise FormatError(f"syslog option year must be an integer, got {year!r}")
    if now is not None and not isinstance(now, datetime):
        raise FormatError(f"syslog option now must be a datetime, got {now!r}")
    return SyslogFormat(name, timezone=timezone or "UTC", year=year, now=now)
