"""AWS access logs: Application Load Balancer (``alb``), Classic Load Balancer (``clb``) and S3
server access logs (``s3_access``).

Columns are named and typed as in the ``CREATE TABLE`` statements of Athena's documentation
(``alb_access_logs``, ``elb_logs``, ``s3_access_logs``), so a query written for Athena runs on
loglake with only the table name changed; ``ts`` (the event time, UTC) comes first. As with
Athena's SerDes, text is kept as written (a ``-`` stays ``-``) and a number that is ``-`` is null.
Two departures, both documented in docs/formats.md: quoted values lose their quotes (Athena's S3
and CLB regexes keep them for a few columns), and a target written ``-`` has ``target_ip`` null
(Athena: empty text). Later AWS releases append fields: the ones Athena knows are columns when
present (null in older logs), anything after them is kept in ``extra_fields``.

The fields AWS added over the years (ALB: ``domain_name`` in 2017 ... ``conn_trace_id`` in 2024;
S3: ``hostid`` ... ``aclrequired``) are optional from the first one added, in order, so logs of
any age parse.
"""

from __future__ import annotations

from typing import ClassVar

import polars as pl

from loglake.errors import FormatError
from loglake.formats.fielded import Column, FieldedFormat, offset_time, utc_time


def _chain(parts: list[str]) -> str:
    """``parts`` as nested optional groups: each one only when all before it are present."""
    out = ""
    for part in reversed(parts):
        out = f"(?:{part}{out})?"
    return out


_ISO_UTC = "%Y-%m-%dT%H:%M:%S%.fZ"
_EXTRA = r"(?: (?P<extra_fields>.*))?$"

_ALB_REGEX = (
    r"^(?P<type>[a-z0-9]+) (?P<time>\d{4}-\d{2}-\d{2}T\S+) (?P<elb>\S+) "
    r"(?P<client_ip>[^ ]*):(?P<client_port>[0-9]*) (?P<target_ip>[^ ]*)[:-](?P<target_port>[0-9]*) "
    r"(?P<request_processing_time>[-.0-9]*) (?P<target_processing_time>[-.0-9]*) "
    r"(?P<response_processing_time>[-.0-9]*) (?P<elb_status_code>-|[0-9]*) "
    r"(?P<target_status_code>-|[0-9]*) (?P<received_bytes>[-0-9]*) (?P<sent_bytes>[-0-9]*) "
    r'"(?P<request_verb>[^ "]*) (?P<request_url>[^"]*?) (?P<request_proto>- |[^ "]*)" '
    r'"(?P<user_agent>[^"]*)" (?P<ssl_cipher>[A-Za-z0-9_-]+) (?P<ssl_protocol>[A-Za-z0-9.-]*) '
    r'(?P<target_group_arn>\S*) "(?P<trace_id>[^"]*)"'
    + _chain(
        [
            r' "(?P<domain_name>[^"]*)"',
            r' "(?P<chosen_cert_arn>[^"]*)"',
            r" (?P<matched_rule_priority>[-.0-9]*)",
            r" (?P<request_creation_time>\S*)",
            r' "(?P<actions_executed>[^"]*)"',
            r' "(?P<redirect_url>[^"]*)"',
            r' "(?P<lambda_error_reason>[^ "]*)"',
            # Quoted since 2020; the documentation's older examples write them bare.
            r' "?(?P<target_port_list>[^ "]*)"?',
            r' "?(?P<target_status_code_list>[^ "]*)"?',
            r' "(?P<classification>[^ "]*)"',
            r' "(?P<classification_reason>[^ "]*)"',
            r" (?P<conn_trace_id>[^ \"]+)",
        ]
    )
    + _EXTRA
)


def _columns(spec: str) -> tuple[Column, ...]:
    """Columns from ``name:type`` words (type ``string`` when left out)."""
    out = []
    for word in spec.split():
        name, _, kind = word.partition(":")
        out.append(Column(name, kind or "string"))
    return tuple(out)


class AlbFormat(FieldedFormat):
    """Application Load Balancer access logs (Athena's ``alb_access_logs``)."""

    name = "alb"
    regex = _ALB_REGEX
    columns = _columns(
        "type time elb client_ip client_port:int target_ip target_port:int "
        "request_processing_time:double target_processing_time:double "
        "response_processing_time:double elb_status_code:int target_status_code "
        "received_bytes:bigint sent_bytes:bigint request_verb request_url request_proto "
        "user_agent ssl_cipher ssl_protocol target_group_arn trace_id domain_name chosen_cert_arn "
        "matched_rule_priority request_creation_time actions_executed redirect_url "
        "lambda_error_reason target_port_list target_status_code_list classification "
        "classification_reason conn_trace_id extra_fields"
    )
    time_column = "time"
    description = "AWS ALB access log"
    default_table: ClassVar[str] = "logs.alb"

    def parse_time(self, text: pl.Expr) -> pl.Expr:
        return utc_time(_ISO_UTC)(text)

    def derive(self, frame: pl.DataFrame) -> pl.DataFrame:
        # A TCP-style request is logged `"- - - "`: the protocol is `-`, not `- `.
        return frame.with_columns(pl.col("request_proto").str.strip_chars_end(" "))


_CLB_REGEX = (
    r"^(?P<timestamp>\d{4}-\d{2}-\d{2}T\S+) (?P<elb_name>\S+) "
    r"(?P<request_ip>[^ ]*):(?P<request_port>[0-9]*) (?P<backend_ip>[^ ]*)[:-](?P<backend_port>[0-9]*) "
    r"(?P<request_processing_time>[-.0-9]*) (?P<backend_processing_time>[-.0-9]*) "
    r"(?P<client_response_time>[-.0-9]*) (?P<elb_response_code>-|[0-9]*) "
    r"(?P<backend_response_code>-|[0-9]*) (?P<received_bytes>[-0-9]*) (?P<sent_bytes>[-0-9]*) "
    r'"(?P<request_verb>[^ "]*) (?P<url>[^"]*?) (?P<protocol>- |[^ "]*)" '
    r'"(?P<user_agent>[^"]*)" (?P<ssl_cipher>[A-Za-z0-9_-]+) (?P<ssl_protocol>[A-Za-z0-9.-]*)'
    + _EXTRA
)


class ClbFormat(FieldedFormat):
    """Classic Load Balancer access logs (Athena's ``elb_logs``)."""

    name = "clb"
    regex = _CLB_REGEX
    columns = _columns(
        "timestamp elb_name request_ip request_port:int backend_ip backend_port:int "
        "request_processing_time:double backend_processing_time:double "
        "client_response_time:double elb_response_code backend_response_code "
        "received_bytes:bigint sent_bytes:bigint request_verb url protocol user_agent ssl_cipher "
        "ssl_protocol extra_fields"
    )
    time_column = "timestamp"
    description = "AWS Classic Load Balancer access log"
    default_table: ClassVar[str] = "logs.clb"

    def parse_time(self, text: pl.Expr) -> pl.Expr:
        return utc_time(_ISO_UTC)(text)

    def derive(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.col("protocol").str.strip_chars_end(" "))


_QUOTED_OR_DASH = r'"(?:[^"\\]|\\.)*"|-'
_S3_REGEX = (
    r"^(?P<bucketowner>\S+) (?P<bucket_name>\S+) \[(?P<requestdatetime>[^\]]+)\] "
    r"(?P<remoteip>\S+) (?P<requester>\S+) (?P<requestid>\S+) (?P<operation>\S+) (?P<key>\S+) "
    rf"(?P<request_uri>{_QUOTED_OR_DASH}) (?P<httpstatus>-|[0-9]+) (?P<errorcode>\S+) "
    r"(?P<bytessent>\S+) (?P<objectsize>\S+) (?P<totaltime>\S+) (?P<turnaroundtime>\S+) "
    rf"(?P<referrer>{_QUOTED_OR_DASH}) (?P<useragent>{_QUOTED_OR_DASH}) (?P<versionid>\S+)"
    + _chain(
        [
            r" (?P<hostid>\S+)",
            r" (?P<sigv>\S+)",
            r" (?P<ciphersuite>\S+)",
            r" (?P<authtype>\S+)",
            r" (?P<endpoint>\S+)",
            r" (?P<tlsversion>\S+)",
            r" (?P<accesspointarn>\S+)",
            r" (?P<aclrequired>\S+)",
        ]
    )
    + _EXTRA
)
_S3_QUOTED = ("request_uri", "referrer", "useragent")


class S3AccessFormat(FieldedFormat):
    """Amazon S3 server access logs (Athena's ``s3_access_logs``)."""

    name = "s3_access"
    regex = _S3_REGEX
    columns = _columns(
        "bucketowner bucket_name requestdatetime remoteip requester requestid operation key "
        "request_uri httpstatus errorcode bytessent:bigint objectsize:bigint totaltime "
        "turnaroundtime referrer useragent versionid hostid sigv ciphersuite authtype endpoint "
        "tlsversion accesspointarn aclrequired extra_fields"
    )
    time_column = "requestdatetime"
    description = "Amazon S3 server access log"
    default_table: ClassVar[str] = "logs.s3_access"

    def parse_time(self, text: pl.Expr) -> pl.Expr:
        return offset_time("%d/%b/%Y:%H:%M:%S %z")(text)

    def derive(self, frame: pl.DataFrame) -> pl.DataFrame:
        # S3 writes `\"` inside quoted values (user agents); the value keeps a plain quote.
        return frame.with_columns(
            pl.col(c)
            .str.strip_prefix('"')
            .str.strip_suffix('"')
            .str.replace_all(r'\\(["\\])', "$1")
            .alias(c)
            for c in _S3_QUOTED
        )


_FORMATS: dict[str, type[FieldedFormat]] = {
    "alb": AlbFormat,
    "clb": ClbFormat,
    "elb": ClbFormat,
    "s3_access": S3AccessFormat,
}


def aws_format(spec: str, **_options: object) -> FieldedFormat:
    """The AWS log format ``spec`` (``alb``, ``clb`` (alias ``elb``) or ``s3_access``).

    Options are ignored (AWS writes times in UTC). Raises :class:`FormatError` for another name.
    """
    if spec not in _FORMATS:
        raise FormatError(f"unknown AWS log format {spec!r}; use one of: {', '.join(_FORMATS)}")
    return _FORMATS[spec]()
