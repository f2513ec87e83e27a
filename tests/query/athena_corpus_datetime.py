"""Athena queries of the corpus that use date and time functions (see athena_corpus.py), over the
same rows; each expected answer was worked out independently of loglake.

The rows' ``ts`` are 2026-12-01 10:00:0n UTC (n = 0..5), a Tuesday of ISO week 49, in PST
(UTC-8) in Los Angeles. Queries from the AWS documentation are rewritten only to logs.alb's
columns; Trino documentation examples keep their documented results (a timestamp with time zone
is returned as its local wall time: see docs/sql.md).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

#: (name, Athena SQL, expected rows)
CORPUS_DATETIME: list[tuple[str, str, list[tuple[Any, ...]]]] = [
    (
        # AWS, "Query Application Load Balancer logs": the time column's Joda pattern.
        "ALB time text parsed with parse_datetime (AWS ALB example)",
        "SELECT parse_datetime('2026-12-01T10:00:01.123456Z', "
        "'yyyy-MM-dd''T''HH:mm:ss.SSSSSS''Z''') AS t",
        [(datetime(2026, 12, 1, 10, 0, 1, 123000),)],
    ),
    (
        # AWS ALB example: requests between two parse_datetime bounds.
        "requests between two parse_datetime bounds (AWS ALB example)",
        "SELECT count(*) FROM logs.alb WHERE ts BETWEEN "
        "parse_datetime('2026-12-01-10:00:01','yyyy-MM-dd-HH:mm:ss') AND "
        "parse_datetime('2026-12-01-10:00:03','yyyy-MM-dd-HH:mm:ss')",
        [(3,)],
    ),
    (
        # AWS, "Query Amazon S3 server access logs": requests between two times, the
        # requestdatetime text ('06/Feb/2019:00:00:38 +0000') made from ts.
        "requests between two times (AWS S3 server access logs example)",
        "SELECT count(*) FROM logs.alb WHERE "
        "parse_datetime(format_datetime(ts, 'dd/MMM/yyyy:HH:mm:ss Z'), 'dd/MMM/yyyy:HH:mm:ss Z') "
        "BETWEEN parse_datetime('2026-12-01:10:00:02','yyyy-MM-dd:HH:mm:ss') "
        "AND parse_datetime('2026-12-01:10:00:04','yyyy-MM-dd:HH:mm:ss')",
        [(3,)],
    ),
    (
        # The same S3 text with another offset: 03:00:02 -0700 is 10:00:02 UTC.
        "requests before an S3 log time with an offset (compared by instant)",
        "SELECT count(*) FROM logs.alb "
        "WHERE ts < parse_datetime('01/Dec/2026:03:00:02 -0700', 'dd/MMM/yyyy:HH:mm:ss Z')",
        [(2,)],
    ),
    (
        # AWS, "Query Amazon CloudFront logs": bytes served between two dates.
        "bytes between two dates (AWS CloudFront example)",
        "SELECT SUM(sent_bytes) AS total_bytes FROM logs.alb "
        "WHERE date(ts) BETWEEN DATE '2026-12-01' AND DATE '2026-12-02'",
        [(660,)],
    ),
    (
        # AWS, "Query Amazon VPC flow logs": day_of_week of rejected flows.
        "day of week of failed requests (AWS VPC flow logs example)",
        "SELECT day_of_week(ts) AS day, client_ip FROM logs.alb "
        "WHERE elb_status_code >= 500 ORDER BY n",
        [(2, "10.0.0.2"), (2, "10.0.0.3")],
    ),
    (
        # AWS, "Querying AWS WAF logs": date_format(from_unixtime(timestamp/1000), ...), the
        # epoch milliseconds column made from ts.
        "WAF epoch milliseconds formatted (AWS WAF example)",
        "SELECT date_format(from_unixtime(CAST(to_unixtime(ts) * 1000 AS bigint) / 1000), "
        "'%Y-%m-%d %H:%i:%s') AS time FROM logs.alb WHERE n = 2",
        [("2026-12-01 10:00:02",)],
    ),
    (
        # Written for this corpus (the inverse of the WAF example's from_unixtime); 10:00:02 UTC
        # on 2026-12-01 is 1796119202 s after the epoch (Python's datetime.timestamp()).
        "epoch seconds of a request (to_unixtime)",
        "SELECT to_unixtime(ts) FROM logs.alb WHERE n = 2",
        [(1796119202.0,)],
    ),
    (
        # AWS WAF example: counts per hour with date_trunc('hour', ...) GROUP BY.
        "requests per hour (AWS WAF example)",
        "SELECT date_trunc('hour', ts) AS hour, count(*) AS requests FROM logs.alb "
        "GROUP BY date_trunc('hour', ts) ORDER BY 1",
        [(datetime(2026, 12, 1, 10, 0), 6)],
    ),
    (
        # Issue 12's "traffic by local hour" report; PST is UTC-8 on 2026-12-01.
        "traffic by local hour in Los Angeles (AT TIME ZONE)",
        "SELECT hour(ts AT TIME ZONE 'America/Los_Angeles') AS h, count(*) FROM logs.alb "
        "GROUP BY 1",
        [(2, 6)],
    ),
    (
        # Written for this corpus: 2026-12-01 is a Tuesday of ISO week 49 (Python's isocalendar()).
        "ISO week and its year of the requests",
        "SELECT DISTINCT week(ts), year_of_week(ts), extract(dow FROM ts) FROM logs.alb",
        [(49, 2026, 2)],
    ),
    (
        # The S3 server access log time format (AWS docs) written back with format_datetime.
        "request times as Joda-formatted text with their offset",
        "SELECT format_datetime(ts, 'dd/MMM/yyyy:HH:mm:ss Z') FROM logs.alb WHERE n = 5",
        [("01/Dec/2026:10:00:05 +0000",)],
    ),
    (
        # Athena reads an Iceberg timestamp column as timestamp(6).
        "request times as ISO 8601 (to_iso8601 of a timestamp(6) column)",
        "SELECT to_iso8601(ts) FROM logs.alb WHERE n = 3",
        [("2026-12-01T10:00:03.000000",)],
    ),
    (
        # Written for this corpus. The WHERE clause runs before the window: the first request is
        # n = 4.
        "seconds since the first request (date_diff)",
        "SELECT n, date_diff('second', min(ts) OVER (), ts) FROM logs.alb WHERE n >= 4 ORDER BY n",
        [(4, 0), (5, 1)],
    ),
    (
        # Issue 12's reproduction.
        "hour of a timestamp at a time zone (issue 12)",
        "SELECT hour(TIMESTAMP '2012-10-31 01:00' AT TIME ZONE 'America/Los_Angeles')",
        [(18,)],
    ),
    (
        # Trino docs, functions/datetime.md, "Time zone conversion" (written as Trino shows it).
        "AT TIME ZONE (Trino docs)",
        "SELECT format_datetime(timestamp '2012-10-31 01:00 UTC' AT TIME ZONE "
        "'America/Los_Angeles', 'yyyy-MM-dd HH:mm:ss.SSS ZZZ')",
        [("2012-10-30 18:00:00.000 America/Los_Angeles",)],
    ),
    (
        # Trino docs, with_timezone (written as Trino shows it).
        "with_timezone (Trino docs)",
        "SELECT format_datetime(with_timezone(TIMESTAMP '2022-11-01 09:08:07.321', "
        "'America/Los_Angeles'), 'yyyy-MM-dd HH:mm:ss.SSS ZZZ')",
        [("2022-11-01 09:08:07.321 America/Los_Angeles",)],
    ),
    (
        # Trino docs, date_diff examples.
        "date_diff (Trino docs)",
        "SELECT date_diff('second', TIMESTAMP '2020-03-01 00:00:00', "
        "TIMESTAMP '2020-03-02 00:00:00'), date_diff('hour', "
        "TIMESTAMP '2020-03-01 00:00:00 UTC', TIMESTAMP '2020-03-02 00:00:00 UTC') AS h, "
        "date_diff('day', DATE '2020-03-01', DATE '2020-03-02') AS d",
        [(86400, 24, 1)],
    ),
    (
        # Joda's monthsBetween: 01-31 10:00 to 02-29 09:00 is not yet a whole month.
        "date_diff counts whole months elapsed",
        "SELECT date_diff('month', TIMESTAMP '2020-01-31 10:00', TIMESTAMP '2020-02-29 09:00'), "
        "date_diff('month', TIMESTAMP '2020-01-31 10:00', TIMESTAMP '2020-02-29 10:00') AS b, "
        "date_diff('year', DATE '2020-06-01', DATE '2021-05-31') AS c",
        [(0, 1, 0)],
    ),
    (
        # Trino docs, date_add examples.
        "date_add (Trino docs)",
        "SELECT date_add('second', 86, TIMESTAMP '2020-03-01 00:00:00'), "
        "date_add('hour', 9, TIMESTAMP '2020-03-01 00:00:00') AS b, "
        "date_add('day', -1, TIMESTAMP '2020-03-01 00:00:00 UTC') AS c",
        [(datetime(2020, 3, 1, 0, 1, 26), datetime(2020, 3, 1, 9, 0), datetime(2020, 2, 29))],
    ),
    (
        # Trino docs, date_trunc examples.
        "date_trunc (Trino docs)",
        "SELECT date_trunc('day' , TIMESTAMP '2022-10-20 05:10:00'), "
        "date_trunc('month' , TIMESTAMP '2022-10-20 05:10:00') AS m, "
        "date_trunc('year', TIMESTAMP '2022-10-20 05:10:00') AS y, "
        "date_trunc('week', TIMESTAMP '2001-08-22 03:04:05.321') AS w",
        [
            (
                datetime(2022, 10, 20),
                datetime(2022, 10, 1),
                datetime(2022, 1, 1),
                datetime(2001, 8, 20),
            )
        ],
    ),
    (
        # Trino docs, from_iso8601_timestamp (an offset kept, shown by to_iso8601).
        "from_iso8601_timestamp (Trino docs)",
        "SELECT from_iso8601_timestamp('2020-05-11T11:15:05'), "
        "to_iso8601(from_iso8601_timestamp('2020-05-11T11:15:05.055+01:00')) AS b",
        [(datetime(2020, 5, 11, 11, 15, 5), "2020-05-11T11:15:05.055+01:00")],
    ),
    (
        # Trino docs, from_iso8601_date examples.
        "from_iso8601_date (Trino docs)",
        "SELECT from_iso8601_date('2020-05-11'), from_iso8601_date('2020-W10') AS b, "
        "from_iso8601_date('2020-123') AS c",
        [(date(2020, 5, 11), date(2020, 3, 2), date(2020, 5, 2))],
    ),
    (
        # Trino docs, human_readable_seconds examples.
        "human_readable_seconds (Trino docs)",
        "SELECT human_readable_seconds(96), human_readable_seconds(3762) AS b, "
        "human_readable_seconds(56363463) AS c",
        [
            (
                "1 minute, 36 seconds",
                "1 hour, 2 minutes, 42 seconds",
                "93 weeks, 1 day, 8 hours, 31 minutes, 3 seconds",
            )
        ],
    ),
    (
        # Trino docs, date_format and date_parse examples.
        "date_format and date_parse (Trino docs)",
        "SELECT date_format(TIMESTAMP '2022-10-20 05:10:00', '%m-%d-%Y %H'), "
        "date_parse('2022/10/20/05', '%Y/%m/%d/%H') AS b",
        [("10-20-2022 05", datetime(2022, 10, 20, 5, 0))],
    ),
    (
        # Trino docs, extract and the MySQL %f (milliseconds printed as 6 digits).
        "extract and date_format %f (Trino docs)",
        "SELECT extract(YEAR FROM TIMESTAMP '2022-10-20 05:10:00'), "
        "date_format(TIMESTAMP '2022-10-20 05:10:00.123', '%i:%s.%f') AS b",
        [(2022, "10:00.123000")],
    ),
    (
        # Trino docs, from_unixtime with a zone and with an offset (2017-07-14 02:40:00 UTC).
        "from_unixtime with a zone (Trino docs)",
        "SELECT from_unixtime(1500000000), from_unixtime(1500000000, 'America/New_York') AS b, "
        "to_iso8601(from_unixtime(1500000000, 2, 30)) AS c",
        [
            (
                datetime(2017, 7, 14, 2, 40),
                datetime(2017, 7, 13, 22, 40),
                "2017-07-14T05:10:00.000+02:30",
            )
        ],
    ),
    (
        # Trino docs, "Date and time operators" (+ and - with intervals).
        "date and timestamp plus and minus intervals (Trino docs)",
        "SELECT date '2012-08-08' + interval '2' day, "
        "timestamp '2012-08-08 01:00' + interval '29' hour AS b, "
        "timestamp '2012-10-31 01:00' + interval '1' month AS c, "
        "date '2012-08-08' - interval '2' day AS d, "
        "timestamp '2012-10-31 01:00' - interval '1' month AS e",
        [
            (
                date(2012, 8, 10),
                datetime(2012, 8, 9, 6, 0),
                datetime(2012, 11, 30, 1, 0),
                date(2012, 8, 6),
                datetime(2012, 9, 30, 1, 0),
            )
        ],
    ),
]
