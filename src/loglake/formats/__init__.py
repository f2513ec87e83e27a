"""Log formats, registered by name and imported lazily.

``get_format(spec)`` accepts a registered name (``combined``, ``syslog``, ``json``...), a name defined
under ``[formats]`` in the config, or a format string: an Apache ``LogFormat`` (``%h %l %u %t "%r"
%>s %b``) or an nginx ``log_format`` (``$remote_addr - $remote_user [$time_local] ...``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from loglake.errors import FormatError

if TYPE_CHECKING:
    import polars as pl

    from loglake.formats.base import Format

# name -> "module:factory"; the factory takes the format name and returns a Format.
REGISTRY: dict[str, str] = {
    "common": "loglake.formats.access:access_format",
    "combined": "loglake.formats.access:access_format",
    "vhost_common": "loglake.formats.access:access_format",
    "vhost_combined": "loglake.formats.access:access_format",
    "common_complete": "loglake.formats.access:access_format",
    "nginx_main": "loglake.formats.access:access_format",
    "combined_xff": "loglake.formats.access:access_format",
    "syslog": "loglake.formats.syslog:syslog_format",
    "rfc3164": "loglake.formats.syslog:syslog_format",
    "rfc5424": "loglake.formats.syslog:syslog_format",
    "json": "loglake.formats.jsonl:json_format",
    "jsonl": "loglake.formats.jsonl:json_format",
    "apache_error": "loglake.formats.error_logs:error_log_format",
    "nginx_error": "loglake.formats.error_logs:error_log_format",
    "alb": "loglake.formats.aws:aws_format",
    "clb": "loglake.formats.aws:aws_format",
    "elb": "loglake.formats.aws:aws_format",
    "s3_access": "loglake.formats.aws:aws_format",
    "cloudfront": "loglake.formats.w3c:w3c_format",
    "w3c": "loglake.formats.w3c:w3c_format",
    "iis": "loglake.formats.w3c:w3c_format",
}

#: Candidates for auto-detection, most specific first (ties go to the earlier one).
DETECT_ORDER = (
    "vhost_combined",
    "common_complete",
    "nginx_main",
    "combined",
    "vhost_common",
    "common",
    # Before syslog: a CLB line also reads as RFC 3164 with an RFC 3339 stamp and no tag.
    "apache_error",
    "nginx_error",
    "alb",
    "clb",
    "s3_access",
    "cloudfront",
    "w3c",
    "rfc5424",
    "rfc3164",
    "json",
)


def get_format(spec: str, custom: Mapping[str, str] | None = None, **options: object) -> Format:
    """Resolve ``spec`` to a format object. Raises :class:`FormatError` naming the known formats."""
    if custom and spec in custom:
        from loglake.formats.access import AccessFormat

        return AccessFormat(spec, custom[spec])
    if spec in REGISTRY:
        module, _, factory = REGISTRY[spec].partition(":")
        return getattr(importlib.import_module(module), factory)(spec, **options)  # type: ignore[no-any-return,unused-ignore]
    if "%" in spec or "$" in spec:
        from loglake.formats.access import AccessFormat

        return AccessFormat("custom", spec)
    known = ", ".join([*REGISTRY, "auto", *(custom or {})])
    raise FormatError(
        f"unknown format {spec!r}; use one of: {known}, or an Apache LogFormat / nginx log_format string"
    )


def detect_format(sample: pl.Series, **options: object) -> Format | None:
    """Pick the format that parses most of ``sample`` (at least half of the non-empty lines)."""
    sample = sample.filter(sample.str.len_bytes() > 0)
    if len(sample) == 0:
        return None
    best: tuple[float, Format] | None = None
    for name in DETECT_ORDER:
        fmt = get_format(name, None, **options)
        rate = fmt.match_rate(sample)
        if best is None or rate > best[0]:
            best = (rate, fmt)
        if rate == 1.0:
            break
    if best is None or best[0] < 0.5:
        return None
    return best[1]
