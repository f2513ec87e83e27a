"""Web server error logs: Apache httpd (``apache_error``, 2.2 and 2.4 styles) and nginx
(``nginx_error``).

Both go to one table, ``logs.errors``, with the same columns (null where a server does not log a
field), so one query covers every web server's errors:

* Apache 2.4 (``ErrorLogFormat`` default): ``[Fri Sep 09 10:42:29.902022 2011] [core:error]
  [pid 35708:tid 4328636416] [client 72.15.99.187:5678] AH00128: File does not exist: ...``
  (the client's port split off, after an IPv6 address too);
  Apache 2.2: ``[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] client denied ...``. A text
  between the ``[pid]`` and ``[client]`` blocks (``mod_rewrite.c(470):`` at trace levels, an OS
  error such as ``(13)Permission denied:``) is ``detail``; an ``AH01234:`` code starting the
  message is also ``error_code``; a trailing ``, referer: URL`` is also ``referrer``.
* nginx: ``2024/01/22 10:00:00 [error] 1234#1234: *5 message, client: 1.2.3.4, server: x,
  request: "GET / HTTP/1.1", upstream: "...", host: "x", referrer: "..."``. The context nginx
  appends after the message becomes columns; the message is the text before it.

Times carry no zone in either server's log: they are read in the ``timezone`` option (the
config's ``ingest.syslog_timezone``, UTC by default), as local times of the server.
"""

from __future__ import annotations

from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from loglake.errors import FormatError
from loglake.formats.fielded import Column, FieldedFormat, local_time

#: Columns of ``logs.errors`` (``ts`` first, ``line`` last), shared by both servers.
ERROR_COLUMNS: tuple[Column, ...] = (
    Column("level"),
    Column("module"),
    Column("pid", "bigint"),
    Column("tid", "bigint"),
    Column("connection", "bigint"),
    Column("client"),
    Column("client_port", "int"),
    Column("server"),
    Column("request", dash_null=True),
    Column("host", dash_null=True),
    Column("upstream"),
    Column("referrer", dash_null=True),
    Column("error_code"),
    Column("detail"),
    Column("message"),
)

_APACHE_REGEX = (
    r"^\[(?P<time>[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]?\d \d{2}:\d{2}:\d{2}(?:\.\d+)? \d{4})\] "
    r"\[(?:(?P<module>[^\s:\]]*):)?(?P<level>[a-z]+[0-9]?)\]"
    r"(?: \[pid (?P<pid>\d+)(?::tid (?P<tid>\d+))?\])?"
    # The detail is only split off when a [client] block follows it: otherwise it is the message.
    r"(?: (?:(?P<detail>[^\[]*?):? )?\[client (?P<client>[^\]]*)\])?"
    r"(?: (?P<message>.*))?$"
)

_NGINX_REGEX = (
    r"^(?P<time>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(?P<level>[a-z]+)\] "
    r"(?P<pid>\d+)#(?P<tid>\d+): (?:\*(?P<connection>\d+) )?(?P<message>.*?)"
    r"(?:, client: (?P<client>[^,]*)(?:, server: (?P<server>[^,]*))?"
    # nginx writes the request line and the referrer raw: they may hold quotes themselves.
    r'(?:, request: "(?P<request>.*?)")?'
    r'(?:, subrequest: ".*?")?'
    r'(?:, upstream: "(?P<upstream>[^"]*)")?'
    r'(?:, host: "(?P<host>[^"]*)")?'
    r'(?:, referrer: "(?P<referrer>.*?)")?)?$'
)


class _ErrorLogFormat(FieldedFormat):
    """Shared by both error log formats: the table, the columns and the local time zone."""

    columns = ERROR_COLUMNS
    time_column = "time"
    default_table: ClassVar[str] = "logs.errors"
    time_format: ClassVar[str]

    def __init__(self, timezone: str = "UTC") -> None:
        try:
            ZoneInfo(timezone)
            pl.Series(["2000-01-01"]).str.to_datetime().dt.replace_time_zone(timezone)
        except (ZoneInfoNotFoundError, ValueError, pl.exceptions.PolarsError) as exc:
            raise FormatError(
                f"unknown time zone {timezone!r} for {self.description} times; use an IANA name "
                "such as 'UTC' or 'Europe/Berlin' (ingest.syslog_timezone)"
            ) from exc
        self.timezone = timezone

    def parse_time(self, text: pl.Expr) -> pl.Expr:
        return local_time(self.time_format, self.timezone)(text)


def _split_client(frame: pl.DataFrame, ipv6_port: pl.Expr | None = None) -> pl.DataFrame:
    """``client`` ``1.2.3.4:5678`` as ``client`` and ``client_port``.

    An IPv6 address (more than one colon) is split at its last colon only where ``ipv6_port``
    is true (a server that always writes the port); elsewhere it stays whole, port null.
    """
    client = pl.col("client")
    v4 = client.str.extract_groups(r"^([^:]+):(\d{1,5})$")
    v6 = client.str.extract_groups(r"^(.*:.*):(\d{1,5})$")
    use_v6 = v4.struct.field("1").is_null() & v6.struct.field("1").is_not_null()
    use_v6 = pl.lit(False) if ipv6_port is None else use_v6 & ipv6_port
    return frame.with_columns(
        client=pl.when(use_v6)
        .then(v6.struct.field("1"))
        .otherwise(pl.coalesce(v4.struct.field("1"), client)),
        client_port=pl.when(use_v6)
        .then(v6.struct.field("2"))
        .otherwise(v4.struct.field("2"))
        .cast(pl.Int32, strict=False),
    )


class ApacheErrorFormat(_ErrorLogFormat):
    """Apache httpd error logs, 2.2 and 2.4 default formats."""

    name = "apache_error"
    regex = _APACHE_REGEX
    description = "Apache error log"
    time_format = "%a %b %d %H:%M:%S%.f %Y"

    def parse_time(self, text: pl.Expr) -> pl.Expr:
        # A space-padded day (`Sep  9`) reads as `Sep 9`.
        return super().parse_time(text.str.replace_all(" +", " "))

    def derive(self, frame: pl.DataFrame) -> pl.DataFrame:
        message = pl.col("message")
        # Apache 2.4 (the one writing a [pid] block) always logs the client's port.
        frame = _split_client(frame, ipv6_port=pl.col("pid").is_not_null()).with_columns(
            error_code=message.str.extract(r"^(AH\d{5}):", 1),
            referrer=message.str.extract(r", referer: (\S*)$", 1),
        )
        return frame


class NginxErrorFormat(_ErrorLogFormat):
    """nginx error logs (``error_log``), any level."""

    name = "nginx_error"
    regex = _NGINX_REGEX
    description = "nginx error log"
    time_format = "%Y/%m/%d %H:%M:%S"

    def derive(self, frame: pl.DataFrame) -> pl.DataFrame:
        return _split_client(frame)


_FORMATS: dict[str, type[_ErrorLogFormat]] = {
    "apache_error": ApacheErrorFormat,
    "nginx_error": NginxErrorFormat,
}


def error_log_format(spec: str, **options: object) -> FieldedFormat:
    """The error log format ``spec`` (``apache_error`` or ``nginx_error``).

    Option ``timezone`` (IANA name, default UTC) is the zone of the logged times; other options
    are ignored. Raises :class:`FormatError` for another name or an unknown zone.
    """
    if spec not in _FORMATS:
        raise FormatError(f"unknown error log format {spec!r}; use one of: {', '.join(_FORMATS)}")
    timezone = options.get("timezone") or "UTC"
    if not isinstance(timezone, str):
        raise FormatError(f"option timezone must be a zone name, got {timezone!r}")
    return _FORMATS[spec](timezone)
