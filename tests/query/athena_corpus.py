"""A corpus of real Athena queries: the AWS documentation's log-analysis examples (ALB, Classic and
Network Load Balancer, CloudFront, CloudTrail, VPC flow logs, WAF, S3 server access logs), rewritten only to
loglake's table and column names, and the Trino documentation's examples with their documented
results. Each runs over the rows below (:data:`ALB_ROWS` as ``logs.alb``, :data:`TABLES` and
:data:`FILES` as the other tables; the date and time queries of athena_corpus_datetime.py share them).

Each expected answer was worked out by hand from those rows and Trino's documented semantics (or
is the result the Trino documentation prints), not computed by loglake. The source of each query
is cited in a comment. An expected answer is a list of rows (compared in order),
:class:`Unordered` rows (a query without ORDER BY, or with ties), :class:`Refused` (the query must
be refused naming the Athena function and an alternative) or :class:`Fails` (Athena itself fails
the query, with that error).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class Unordered(list[tuple[Any, ...]]):
    """Rows whose order the query leaves open (no ORDER BY, or ties)."""


@dataclass(frozen=True)
class Refused:
    """The query is refused (QueryRefusedError) naming ``function`` and offering ``alternative``."""

    function: str
    alternative: str


@dataclass(frozen=True)
class Fails:
    """The query fails as it fails in Athena, with an error containing ``message``."""

    message: str


AWS_ATHENA = "https://docs.aws.amazon.com/athena/latest/ug/"
AWS_S3 = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/"
TRINO = "https://trino.io/docs/current/"

_WAF_GROUP = {"rulegroupid": "AWS-Common", "nonterminatingmatchingrules": [], "excludedrules": None}

#: CloudFront standard log fields of AWS's example record (the 33 documented fields, tab-separated).
_CLOUDFRONT_FIELDS = [
    "2019-12-04",
    "21:02:31",
    "LAX1",
    "392",
    "192.0.2.100",
    "GET",
    "d111111abcdef8.cloudfront.net",
    "/index.html",
    "200",
    "-",
    "Mozilla/5.0%20(Windows%20NT%2010.0)",
    "-",
    "-",
    "Hit",
    "SOX4xwn4XV6Q4rgb7XiVGOHms_BGlTAC4KyHmureZmBNrjGdRLiNIQ==",
    "d111111abcdef8.cloudfront.net",
    "https",
    "23",
    "0.001",
    "-",
    "TLSv1.2",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "Hit",
    "HTTP/2.0",
    "-",
    "-",
    "11040",
    "0.001",
    "Hit",
    "text/html",
    "78",
    "-",
    "-",
]


def _cloudfront_line(day: str, sent: int, status: int) -> str:
    fields = list(_CLOUDFRONT_FIELDS)
    fields[0], fields[3], fields[8] = day, str(sent), str(status)
    return "\t".join(fields)


#: Log files ingested in their own format: table -> (format, text).
FILES: dict[str, tuple[str, str]] = {
    # CloudFront standard logs (cloudfront-logs.html): `date` is a date, `sc_bytes` the bytes sent.
    "logs.cloudfront": (
        "cloudfront",
        "".join(
            _cloudfront_line(day, sent, status) + "\n"
            for day, sent, status in [
                ("2018-06-08", 100, 200),
                ("2018-06-09", 200, 200),
                ("2018-06-10", 400, 404),
                ("2018-06-11", 800, 200),
                ("2018-06-12", 1600, 200),
            ]
        ),
    ),
}

#: The other lake tables of the corpus: name -> records (ingested as JSON lines).
TABLES: dict[str, list[dict[str, Any]]] = {
    # Classic Load Balancer (elasticloadbalancer-classic-logs.html's columns).
    "logs.elb": [
        {"timestamp": "2015-01-01T00:00:01Z", "elb_name": "web", "backend_ip": "10.0.1.5",
         "backend_response_code": "200", "backend_processing_time": 0.5},
        {"timestamp": "2015-01-01T00:00:02Z", "elb_name": "web", "backend_ip": "10.0.1.5",
         "backend_response_code": "404", "backend_processing_time": 0.25},
        {"timestamp": "2015-01-01T00:00:03Z", "elb_name": "web", "backend_ip": "10.0.1.6",
         "backend_response_code": "503", "backend_processing_time": 1.5},
        {"timestamp": "2015-01-01T00:00:04Z", "elb_name": "api", "backend_ip": "10.0.2.7",
         "backend_response_code": "200", "backend_processing_time": 0.125},
        {"timestamp": "2015-01-01T00:00:05Z", "elb_name": "api", "backend_ip": "",
         "backend_response_code": "504", "backend_processing_time": 0.0},
    ],
    # Network Load Balancer TLS logs (networkloadbalancer-classic-logs.html's columns).
    "logs.nlb_tls": [
        {"cert_arn": "arn:cert/a", "tls_protocol_version": "tlsv12", "client_ip": "192.0.2.1"},
        {"cert_arn": "arn:cert/a", "tls_protocol_version": "tlsv13", "client_ip": "192.0.2.2"},
        {"cert_arn": "arn:cert/b", "tls_protocol_version": "tlsv12", "client_ip": "192.0.2.1"},
        {"cert_arn": "arn:cert/b", "tls_protocol_version": "tlsv1", "client_ip": "192.0.2.3"},
    ],
    # CloudTrail (cloudtrail-logs.html's columns: nested useridentity, resources array).
    "logs.cloudtrail": [
        {"eventsource": "s3.amazonaws.com", "eventname": "DeleteBucket",
         "eventtime": "2021-03-01T10:00:00Z", "awsregion": "us-east-1",
         "useragent": "console.amazonaws.com", "sourceipaddress": "192.0.2.10",
         "useridentity": {"arn": "arn:aws:iam::111122223333:user/alice", "username": "alice",
                          "accountid": "111122223333", "sessioncontext": None},
         "resources": [{"ARN": "arn:aws:s3:::old-bucket", "accountid": "111122223333"}]},
        {"eventsource": "s3.amazonaws.com", "eventname": "GetObject",
         "eventtime": "2021-03-01T11:00:00Z", "awsregion": "us-west-2",
         "useragent": "aws-cli/2.0", "sourceipaddress": "192.0.2.11",
         "useridentity": {"arn": "arn:aws:sts::111122223333:assumed-role/reader/bob",
                          "username": None, "accountid": "111122223333",
                          "sessioncontext": {
                              "attributes": {"creationdate": "2021-03-01T09:00:00Z"},
                              "sessionissuer": {"arn": "arn:aws:iam::111122223333:role/reader"}}},
         "resources": [{"ARN": "arn:aws:s3:::data-bucket/example/datafile.txt", "accountid": None},
                       {"ARN": "arn:aws:s3:::data-bucket", "accountid": "111122223333"}]},
        {"eventsource": "ec2.amazonaws.com", "eventname": "DescribeInstances",
         "eventtime": "2021-03-01T12:00:00Z", "awsregion": "us-east-1",
         "useragent": "aws-sdk-go", "sourceipaddress": "192.0.2.12",
         "useridentity": {"arn": "arn:aws:sts::111122223333:assumed-role/ops/carol",
                          "username": None, "accountid": "111122223333",
                          "sessioncontext": {
                              "attributes": {"creationdate": "2021-03-01T11:30:00Z"},
                              "sessionissuer": {"arn": "arn:aws:iam::111122223333:role/ops"}}},
         "resources": []},
    ],
    # VPC flow logs (vpc-flow-logs.html's columns, partitioned by a 'yyyy/MM/dd' day).
    "logs.vpc": [
        {"day": "2021/03/02", "interface_id": "eni-1", "srcaddr": "10.117.1.22",
         "dstaddr": "10.0.1.14", "dstport": 443, "action": "ACCEPT", "protocol": 6, "packets": 10},
        {"day": "2021/03/03", "interface_id": "eni-1", "srcaddr": "10.117.1.23",
         "dstaddr": "10.0.1.14", "dstport": 443, "action": "ACCEPT", "protocol": 6, "packets": 5},
        {"day": "2021/03/04", "interface_id": "eni-2", "srcaddr": "10.0.2.9",
         "dstaddr": "10.0.1.15", "dstport": 443, "action": "ACCEPT", "protocol": 6, "packets": 40},
        {"day": "2021/03/05", "interface_id": "eni-2", "srcaddr": "198.51.100.7",
         "dstaddr": "10.0.1.15", "dstport": 22, "action": "REJECT", "protocol": 6, "packets": 3},
        {"day": "2021/02/10", "interface_id": "eni-3", "srcaddr": "198.51.100.8",
         "dstaddr": "10.0.1.16", "dstport": 443, "action": "REJECT", "protocol": 6, "packets": 7},
        {"day": "2021/03/06", "interface_id": "eni-3", "srcaddr": "10.117.2.1",
         "dstaddr": "10.0.1.16", "dstport": 53, "action": "ACCEPT", "protocol": 17, "packets": 2},
    ],
    # AWS WAF (waf-logs.html's columns: nested httprequest, rule group lists).
    "logs.waf": [
        {"date": "2021/03/02", "webaclid": "acl-1", "terminatingruleid": "RateLimit",
         "terminatingruletype": "RATE_BASED", "action": "BLOCK", "httpsourceid": "cf-1",
         "httprequest": {"clientip": "53.21.198.66", "country": "IE", "uri": "/login",
                         "headers": [{"name": "Referer", "value": "https://www.amazon.com/"},
                                     {"name": "X-Forwarded-For", "value": "203.0.113.1"}]},
         "rulegrouplist": [_WAF_GROUP], "nonterminatingmatchingrules": []},
        {"date": "2021/03/03", "webaclid": "acl-1", "terminatingruleid": "RateLimit",
         "terminatingruletype": "RATE_BASED", "action": "BLOCK", "httpsourceid": "cf-1",
         "httprequest": {"clientip": "53.21.198.66", "country": "IE", "uri": "/login",
                         "headers": [{"name": "referer", "value": "https://amazon.de/"}]},
         "rulegrouplist": [_WAF_GROUP], "nonterminatingmatchingrules": []},
        {"date": "2021/03/04", "webaclid": "acl-1", "terminatingruleid": "Default_Action",
         "terminatingruletype": "REGULAR", "action": "ALLOW", "httpsourceid": "alb-1",
         "httprequest": {"clientip": "192.0.2.44", "country": "US", "uri": "/",
                         "headers": [{"name": "Referer", "value": "https://example.com/"},
                                     {"name": "X-Forwarded-For", "value": "203.0.113.1"}]},
         "rulegrouplist": [{"rulegroupid": "AWS-Common", "excludedrules": None,
                            "nonterminatingmatchingrules": [
                                {"ruleid": "SizeRestrictions_BODY", "action": "COUNT"}]}],
         "nonterminatingmatchingrules": [{"ruleid": "CountAll", "action": "COUNT"}]},
        {"date": "2021/04/01", "webaclid": "acl-2",
         "terminatingruleid": "e9dd190d-7a43-4c06-bcea-409613d9506e",
         "terminatingruletype": "REGULAR", "action": "BLOCK", "httpsourceid": "alb-1",
         "httprequest": {"clientip": "198.51.100.9", "country": "FR", "uri": "/admin",
                         "headers": [{"name": "X-Forwarded-For", "value": "203.0.113.2"}]},
         "rulegrouplist": [_WAF_GROUP], "nonterminatingmatchingrules": []},
        {"date": "2021/03/05", "webaclid": "acl-1", "terminatingruleid": "RateLimit",
         "terminatingruletype": "RATE_BASED", "action": "BLOCK", "httpsourceid": "cf-1",
         "httprequest": {"clientip": "192.0.2.44", "country": "US", "uri": "/login",
                         "headers": []},
         "rulegrouplist": [_WAF_GROUP], "nonterminatingmatchingrules": []},
    ],
    # S3 server access logs (the S3 User Guide's table, anonymous requester NULL).
    "logs.s3_access": [
        {"requestdatetime": "18/Feb/2017:07:10:00 +0000", "remoteip": "1.2.3.4",
         "requester": "arn:aws:iam::123456789123:user/user_name",
         "operation": "REST.DELETE.OBJECT", "key": "images/picture.jpg", "sigv": "SigV4"},
        {"requestdatetime": "18/Feb/2017:07:20:00 +0000", "remoteip": "1.2.3.4",
         "requester": "arn:aws:iam::123456789123:user/user_name",
         "operation": "REST.GET.OBJECT", "key": "images/picture.jpg", "sigv": "SigV4"},
        {"requestdatetime": "18/Feb/2017:08:30:00 +0000", "remoteip": "192.0.2.5",
         "requester": None, "operation": "REST.GET.OBJECT", "key": "public/a.txt",
         "sigv": "SigV2"},
        {"requestdatetime": "18/Feb/2017:09:00:00 +0000", "remoteip": "192.0.2.6",
         "requester": "arn:aws:iam::123456789123:user/other", "operation": "REST.PUT.OBJECT",
         "key": "prefix/images/picture.jpg", "sigv": "SigV2"},
    ],
    # Trino's conditional expressions documentation: the `shipping` table of try()'s examples.
    "logs.shipping": [
        {"origin_state": "California", "origin_zip": "94131", "packages": 25, "total_cost": 100},
        {"origin_state": "California", "origin_zip": "P332a", "packages": 5, "total_cost": 72},
        {"origin_state": "California", "origin_zip": "94025", "packages": 0, "total_cost": 155},
        {"origin_state": "New Jersey", "origin_zip": "08544", "packages": 225, "total_cost": 490},
    ],
}  # fmt: skip

#: n, client_ip, request_verb, request_url, elb_status_code, user_agent, sent_bytes
ALB_ROWS: list[tuple[int, str, str, str, int, str, int]] = [
    (0, "10.0.0.1", "GET", "https://shop.example.com:443/cart?item=1&ref=ad", 200,
     "Mozilla/5.0 (Macintosh) Safari/605.1", 100),
    (1, "10.0.0.1", "GET", "https://shop.example.com:443/cart?item=2", 200,
     "Mozilla/5.0 Chrome/120.0 Safari/537.36", 200),
    (2, "10.0.0.2", "POST", "https://shop.example.com:443/checkout?item=2&ref=mail", 502,
     "curl/8.5.0", 50),
    (3, "10.0.0.3", "GET", "http://shop.example.com:80/", 301, "curl/8.5.0", 0),
    (4, "10.0.0.2", "GET", "https://shop.example.com:443/search?q=red+shoes", 200,
     "Mozilla/5.0 Chrome/121.0", 300),
    (5, "10.0.0.3", "GET", "https://shop.example.com:443/cart?item=3", 503,
     "Mozilla/5.0 Chrome/120.0", 10),
]  # fmt: skip

#: (name, Athena SQL, expected: rows, Unordered rows, Refused or Fails)
CORPUS: list[tuple[str, str, Any]] = [
    (
        "requests by verb and client (AWS ALB example)",
        "SELECT COUNT(request_verb) AS count, request_verb, client_ip FROM logs.alb "
        "GROUP BY request_verb, client_ip ORDER BY client_ip, request_verb",
        [(2, "GET", "10.0.0.1"), (1, "GET", "10.0.0.2"), (1, "POST", "10.0.0.2"),
         (2, "GET", "10.0.0.3")],
    ),
    (
        "URLs visited by Safari users (AWS ALB example)",
        "SELECT request_url FROM logs.alb WHERE user_agent LIKE '%Safari%' ORDER BY n LIMIT 10",
        [("https://shop.example.com:443/cart?item=1&ref=ad",),
         ("https://shop.example.com:443/cart?item=2",)],
    ),
    (
        "share of 5xx answers in whole percent (integer division)",
        "SELECT count_if(elb_status_code >= 500) * 100 / count(*) FROM logs.alb",
        [(33,)],
    ),
    (
        "requests per path",
        "SELECT url_extract_path(request_url) AS path, count(*) AS n FROM logs.alb "
        "GROUP BY 1 ORDER BY 2 DESC, 1",
        [("/cart", 3), ("/", 1), ("/checkout", 1), ("/search", 1)],
    ),
    (
        "campaigns from a query parameter",
        "SELECT url_extract_parameter(request_url, 'ref') AS ref, count(*) FROM logs.alb "
        "GROUP BY 1 ORDER BY 1 NULLS LAST",
        [("ad", 1), ("mail", 1), (None, 4)],
    ),
    (
        "Chrome major versions (no match is NULL)",
        "SELECT regexp_extract(user_agent, 'Chrome/(\\d+)', 1) AS v, count(*) FROM logs.alb "
        "GROUP BY 1 ORDER BY 1 NULLS LAST",
        [("120", 2), ("121", 1), (None, 3)],
    ),
    (
        "last octet of the client, and a field past the end",
        "SELECT DISTINCT split_part(client_ip, '.', 4), split_part(client_ip, '.', 5) "
        "FROM logs.alb ORDER BY 1",
        [("1", None), ("2", None), ("3", None)],
    ),
    (
        "a decoded search term",
        "SELECT url_decode(url_extract_parameter(request_url, 'q')) FROM logs.alb WHERE n = 4",
        [("red shoes",)],
    ),
    (
        "mean bytes sent, as an integer",
        "SELECT sum(sent_bytes) / count(*) FROM logs.alb",
        [(110,)],
    ),
    (
        "protocol and port",
        "SELECT url_extract_protocol(request_url), url_extract_port(request_url), count(*) "
        "FROM logs.alb GROUP BY 1, 2 ORDER BY 1",
        [("http", 80, 1), ("https", 443, 5)],
    ),
    (
        "client and path rewritten with group references",
        "SELECT regexp_replace(request_url, '^https?://[^/]+(/[^?]*).*$', '$1') AS path "
        "FROM logs.alb WHERE elb_status_code >= 500 ORDER BY n",
        [("/checkout",), ("/cart",)],
    ),
    # --- AWS, "Query Classic Load Balancer logs" (elasticloadbalancer-classic-logs.html) ---
    (
        "backend 4XX and 5XX answers (AWS CLB example)",
        "SELECT timestamp, elb_name, backend_ip, backend_response_code FROM logs.elb "
        "WHERE backend_response_code LIKE '4%' OR backend_response_code LIKE '5%' LIMIT 100",
        Unordered([("2015-01-01T00:00:02Z", "web", "10.0.1.5", "404"),
                   ("2015-01-01T00:00:03Z", "web", "10.0.1.6", "503"),
                   ("2015-01-01T00:00:05Z", "api", "", "504")]),
    ),
    (
        "backend processing time by instance (AWS CLB example)",
        "SELECT sum(backend_processing_time) AS total_ms, elb_name, backend_ip FROM logs.elb "
        "WHERE backend_ip <> '' GROUP BY backend_ip, elb_name LIMIT 100",
        Unordered([(0.75, "web", "10.0.1.5"), (1.5, "web", "10.0.1.6"),
                   (0.125, "api", "10.0.2.7")]),
    ),
    # --- AWS, "Query Network Load Balancer logs" (networkloadbalancer-classic-logs.html) ---
    (
        "connections per certificate (AWS NLB example)",
        'SELECT count(*) AS ct, cert_arn FROM "logs"."nlb_tls" GROUP BY cert_arn',
        Unordered([(2, "arn:cert/a"), (2, "arn:cert/b")]),
    ),
    (
        "clients on TLS versions before 1.3 (AWS NLB example)",
        "SELECT tls_protocol_version, COUNT(tls_protocol_version) AS num_connections, client_ip "
        'FROM "logs"."nlb_tls" WHERE tls_protocol_version < \'tlsv13\' '
        "GROUP BY tls_protocol_version, client_ip",
        Unordered([("tlsv12", 2, "192.0.2.1"), ("tlsv1", 1, "192.0.2.3")]),
    ),
    # --- AWS, "Query Amazon CloudFront logs" (cloudfront-logs.html), bytes as sc_bytes ---
    (
        "bytes served over three days (AWS CloudFront example)",
        "SELECT SUM(sc_bytes) AS total_bytes FROM logs.cloudfront "
        "WHERE \"date\" BETWEEN DATE '2018-06-09' AND DATE '2018-06-11' LIMIT 100",
        [(1400,)],
    ),
    # --- AWS, "Query AWS CloudTrail logs" (cloudtrail-logs.html) ---
    (
        "events of assumed-role sessions (AWS CloudTrail example)",
        "SELECT eventsource, eventname, useridentity.sessioncontext.attributes.creationdate, "
        "useridentity.sessioncontext.sessionissuer.arn FROM logs.cloudtrail "
        "WHERE useridentity.sessioncontext.sessionissuer.arn IS NOT NULL "
        "ORDER BY eventsource, eventname LIMIT 10",
        [("ec2.amazonaws.com", "DescribeInstances", "2021-03-01T11:30:00Z",
          "arn:aws:iam::111122223333:role/ops"),
         ("s3.amazonaws.com", "GetObject", "2021-03-01T09:00:00Z",
          "arn:aws:iam::111122223333:role/reader")],
    ),
    (
        "who touched an S3 object, from UNNEST of resources (AWS CloudTrail example)",
        "SELECT awsregion, replace(unnested.resources_entry.ARN,'arn:aws:s3:::') as s3_resource, "
        "eventname, eventtime, useragent FROM logs.cloudtrail t "
        "CROSS JOIN UNNEST(t.resources) unnested (resources_entry) "
        "WHERE unnested.resources_entry.ARN LIKE '%example/datafile.txt' ORDER BY eventtime",
        [("us-west-2", "data-bucket/example/datafile.txt", "GetObject", "2021-03-01T11:00:00Z",
          "aws-cli/2.0")],
    ),
    (
        "who deleted a bucket (AWS CloudTrail example)",
        "SELECT awsregion, replace(unnested.resources_entry.ARN,'arn:aws:s3:::') as "
        "deleted_bucket, eventtime AS time_deleted, useridentity.username, "
        "unnested.resources_entry.accountid as bucket_acct_id FROM logs.cloudtrail t "
        "CROSS JOIN UNNEST(t.resources) unnested (resources_entry) "
        "WHERE eventname = 'DeleteBucket' ORDER BY eventtime",
        [("us-east-1", "old-bucket", "2021-03-01T10:00:00Z", "alice", "111122223333")],
    ),
    (
        "who did what from where (AWS CloudTrail example)",
        "SELECT useridentity.arn, eventname, sourceipaddress, eventtime FROM logs.cloudtrail "
        "LIMIT 100",
        Unordered([
            ("arn:aws:iam::111122223333:user/alice", "DeleteBucket", "192.0.2.10",
             "2021-03-01T10:00:00Z"),
            ("arn:aws:sts::111122223333:assumed-role/reader/bob", "GetObject", "192.0.2.11",
             "2021-03-01T11:00:00Z"),
            ("arn:aws:sts::111122223333:assumed-role/ops/carol", "DescribeInstances",
             "192.0.2.12", "2021-03-01T12:00:00Z")]),
    ),
    # --- AWS, "Query Amazon VPC flow logs" (vpc-flow-logs.html) ---
    (
        "top HTTPS destinations in March (AWS VPC flow logs example)",
        "SELECT SUM(packets) AS packetcount, dstaddr FROM logs.vpc WHERE dstport = 443 "
        "AND day >= '2021/03/01' AND day < '2021/03/31' GROUP BY dstaddr "
        "ORDER BY packetcount DESC LIMIT 10",
        [(40, "10.0.1.15"), (15, "10.0.1.14")],
    ),
    (
        "rejected TCP flows in February (AWS VPC flow logs example)",
        "SELECT day, interface_id, srcaddr, action, protocol FROM logs.vpc "
        "WHERE action = 'REJECT' AND protocol = 6 AND day >= '2021/02/01' AND day < '2021/02/28' "
        "LIMIT 10",
        [("2021/02/10", "eni-3", "198.51.100.8", "REJECT", 6)],
    ),
    # --- AWS, "Query AWS WAF logs" (waf-logs.html) ---
    (
        "referrers containing a term (AWS WAF example)",
        "WITH test_dataset AS (SELECT header FROM logs.waf "
        "CROSS JOIN UNNEST(httprequest.headers) AS t(header) WHERE \"date\" >= '2021/03/01' "
        "AND \"date\" < '2021/03/31') SELECT COUNT(*) referer_count FROM test_dataset "
        "WHERE LOWER(header.name)='referer' AND header.value LIKE '%amazon%'",
        [(2,)],
    ),
    (
        "managed rules counted, by rule group (AWS WAF example)",
        "SELECT count(*) AS count, httpsourceid, httprequest.clientip, t.rulegroupid, "
        "t.nonTerminatingMatchingRules FROM logs.waf CROSS JOIN UNNEST(rulegrouplist) AS t(t) "
        "WHERE action <> 'BLOCK' AND cardinality(t.nonTerminatingMatchingRules) > 0 "
        "GROUP BY t.nonTerminatingMatchingRules, action, httpsourceid, httprequest.clientip, "
        't.rulegroupid ORDER BY "count" DESC Limit 50',
        [(1, "alb-1", "192.0.2.44", "AWS-Common",
          [{"ruleid": "SizeRestrictions_BODY", "action": "COUNT"}])],
    ),
    (
        "custom rules counted (AWS WAF example)",
        "SELECT count(*) AS count, httpsourceid, httprequest.clientip, t.ruleid, t.action "
        "FROM logs.waf CROSS JOIN UNNEST(nonterminatingmatchingrules) AS t(t) "
        "WHERE action <> 'BLOCK' AND cardinality(nonTerminatingMatchingRules) > 0 "
        "GROUP BY t.ruleid, t.action, httpsourceid, httprequest.clientip "
        'ORDER BY "count" DESC Limit 50',
        [(1, "alb-1", "192.0.2.44", "CountAll", "COUNT")],
    ),
    (
        "clients blocked by a rate-based rule (AWS WAF example)",
        "SELECT COUNT(httpRequest.clientIp) as count, httpRequest.clientIp FROM logs.waf "
        "WHERE terminatingruletype='RATE_BASED' AND action='BLOCK' and \"date\" >= '2021/03/01' "
        "AND \"date\" < '2021/03/31' GROUP BY httpRequest.clientIp ORDER BY count DESC LIMIT 100",
        [(2, "53.21.198.66"), (1, "192.0.2.44")],
    ),
    (
        "rate-based blocks from one country (AWS WAF example)",
        "SELECT COUNT(httpRequest.country) as count, httpRequest.country FROM logs.waf "
        "WHERE terminatingruletype='RATE_BASED' AND httpRequest.country='IE' "
        "GROUP BY httpRequest.country ORDER BY count LIMIT 100",
        [(2, "IE")],
    ),
    (
        "blocked requests by rule, client and URI (AWS WAF example)",
        "SELECT COUNT(*) AS count, webaclid, terminatingruleid, httprequest.clientip, "
        "httprequest.uri FROM logs.waf WHERE action='BLOCK' GROUP BY webaclid, "
        "terminatingruleid, httprequest.clientip, httprequest.uri ORDER BY count DESC LIMIT 100",
        Unordered([(2, "acl-1", "RateLimit", "53.21.198.66", "/login"),
                   (1, "acl-2", "e9dd190d-7a43-4c06-bcea-409613d9506e", "198.51.100.9",
                    "/admin"),
                   (1, "acl-1", "RateLimit", "192.0.2.44", "/login")]),
    ),
    (
        "requests ended by one rule (AWS WAF example)",
        "SELECT COUNT(*) AS count, webaclid, action, httprequest.clientip, httprequest.uri "
        "FROM logs.waf WHERE terminatingruleid='e9dd190d-7a43-4c06-bcea-409613d9506e' "
        "GROUP BY webaclid, action, httprequest.clientip, httprequest.uri "
        "ORDER BY count DESC LIMIT 100",
        [(1, "acl-2", "BLOCK", "198.51.100.9", "/admin")],
    ),
    (
        "top blocked clients with quoted names and \"count\"(*) (AWS WAF example)",
        'SELECT "httprequest"."clientip", "count"(*) "ipcount", "httprequest"."country" '
        "FROM logs.waf WHERE \"action\" = 'BLOCK' and \"date\" >= '2021/03/01' "
        "AND \"date\" < '2021/03/31' GROUP BY \"httprequest\".\"clientip\", "
        '"httprequest"."country" ORDER BY "ipcount" DESC limit 100',
        [("53.21.198.66", 2, "IE"), ("192.0.2.44", 1, "US")],
    ),
    # --- AWS, S3 User Guide, "Using Amazon S3 server access logs to identify requests" ---
    (
        "who deleted an object and when (AWS S3 server access logs example)",
        "SELECT RequestDateTime, RemoteIP, Requester, Key FROM logs.s3_access "
        "WHERE key = 'images/picture.jpg' AND operation like '%DELETE%'",
        [("18/Feb/2017:07:10:00 +0000", "1.2.3.4", "arn:aws:iam::123456789123:user/user_name",
          "images/picture.jpg")],
    ),
    (
        "requesters sending signature version 2 traffic (AWS S3 server access logs example)",
        "SELECT requester, Sigv, Count(Sigv) as SigCount FROM logs.s3_access "
        "GROUP BY requester, Sigv",
        Unordered([("arn:aws:iam::123456789123:user/user_name", "SigV4", 2),
                   (None, "SigV2", 1), ("arn:aws:iam::123456789123:user/other", "SigV2", 1)]),
    ),
    # --- Trino, functions/conditional.html, try(): the documented results over `shipping` ---
    (
        "try() of a cast (Trino docs)",
        "SELECT TRY(CAST(origin_zip AS BIGINT)) FROM logs.shipping",
        Unordered([(94131,), (None,), (94025,), (8544,)]),
    ),
    (
        "a cast that fails without try() (Trino docs)",
        "SELECT CAST(origin_zip AS BIGINT) FROM logs.shipping",
        Fails("P332a"),
    ),
    (
        "integer division by zero fails (Trino docs)",
        "SELECT total_cost / packages AS per_package FROM logs.shipping",
        Fails("Division by zero"),
    ),
    (
        "coalesce(try(division), 0) (Trino docs)",
        "SELECT COALESCE(TRY(total_cost / packages), 0) AS per_package FROM logs.shipping",
        Unordered([(4,), (14,), (0,), (2,)]),
    ),
    # --- Trino, functions/aggregate.html, listagg() ---
    (
        "listagg (Trino docs)",
        "SELECT listagg(value, ',') WITHIN GROUP (ORDER BY value) csv_value "
        "FROM (VALUES 'a', 'c', 'b') t(value)",
        [("a,b,c",)],
    ),
    (
        "listagg by group (Trino docs)",
        "SELECT id, listagg(value, ',') WITHIN GROUP (ORDER BY o) csv_value FROM (VALUES "
        "(100, 1, 'a'), (200, 3, 'c'), (200, 2, 'b')) t(id, o, value) GROUP BY id ORDER BY id",
        [(100, "a"), (200, "b,c")],
    ),
    # --- Trino, functions/array.html ---
    (
        "an array of integers and decimals is decimal (Trino docs)",
        "SELECT ARRAY[1, 1.2, 4], ARRAY[1, 1.2, 4][2] AS second",
        [([Decimal("1.0"), Decimal("1.2"), Decimal("4.0")], Decimal("1.2"))],
    ),
    (
        "an array of integers (Trino docs)",
        "SELECT ARRAY[1, 2, 4]",
        [([1, 2, 4],)],
    ),
    (
        "an array of strings (Trino docs)",
        "SELECT ARRAY['foo', 'bar', 'bazz']",
        [(["foo", "bar", "bazz"],)],
    ),
    (
        "an array holding NULLs (Trino docs)",
        "SELECT ARRAY[1, 2, NULL, -4, NULL]",
        [([1, 2, None, -4, None],)],
    ),
    (
        "arrays concatenated with || (Trino docs)",
        "SELECT ARRAY[1] || ARRAY[2]",
        [([1, 2],)],
    ),
    (
        "transform(), filter() and reduce() of an empty array (Trino docs)",
        "SELECT transform(ARRAY[], x -> x + 1) AS a, filter(ARRAY[], x -> true) AS b, "
        "reduce(ARRAY[], 0, (s, x) -> s + x, s -> s) AS c",
        [([], [], 0)],
    ),
    (
        "reduce() into a bigint past the integer range (Trino docs)",
        "SELECT reduce(ARRAY[2147483647, 1], BIGINT '0', (s, x) -> s + x, s -> s)",
        [(2147483648,)],
    ),
    (
        "filter() (Trino docs)",
        "SELECT filter(ARRAY[5, -6, NULL, 7], x -> x > 0) AS a, "
        "filter(ARRAY[5, NULL, 7, NULL], x -> x IS NOT NULL) AS b",
        [([5, 7], [5, 7])],
    ),
    (
        "reduce() (Trino docs)",
        "SELECT reduce(ARRAY[5, 20, 50], 0, (s, x) -> s + x, s -> s) AS a, "
        "reduce(ARRAY[5, 20, NULL, 50], 0, (s, x) -> s + x, s -> s) AS b, "
        "reduce(ARRAY[5, 20, NULL, 50], 0, (s, x) -> s + coalesce(x, 0), s -> s) AS c",
        [(75, None, 75)],
    ),
    (
        "transform() (Trino docs)",
        "SELECT transform(ARRAY[5, NULL, 6], x -> coalesce(x, 0) + 1) AS a, "
        "transform(ARRAY['x', 'abc', 'z'], x -> x || '0') AS b",
        [([6, 1, 7], ["x0", "abc0", "z0"])],
    ),
    (
        "trim_array() (Trino docs)",
        "SELECT trim_array(ARRAY[1, 2, 3, 4], 1) AS a, trim_array(ARRAY[1, 2, 3, 4], 2) AS b",
        [([1, 2, 3], [1, 2])],
    ),
    (
        "array_sort() with a comparator is refused (Trino docs)",
        "SELECT array_sort(ARRAY[3, 2, 5, 1, 2], (x, y) -> IF(x < y, 1, IF(x = y, 0, -1)))",
        Refused("array_sort()", "array_agg(x ORDER BY"),
    ),
    # --- Trino, functions/string.html ---
    (
        "translate() (Trino docs)",
        "SELECT translate('abcd', '', '') AS a, translate('abcd', 'a', 'z') AS b, "
        "translate('abcda', 'a', 'z') AS c, translate('Palhoça', 'ç','c') AS d, "
        "translate('abcd', 'a', '') AS e, translate('abcd', 'a', 'zy') AS f, "
        "translate('abcd', 'ac', 'z') AS g, translate('abcd', 'aac', 'zq') AS h",
        [("abcd", "zbcd", "zbcdz", "Palhoca", "bcd", "zbcd", "zbd", "zbd")],
    ),
    (
        "trim() forms (Trino docs)",
        "SELECT trim('!' FROM '!foo!') AS a, trim(LEADING FROM '  abcd') AS b, "
        "trim(BOTH '$' FROM '$var$') AS c, trim(TRAILING 'ER' FROM upper('worker')) AS d",
        [("foo", "abcd", "var", "WORK")],
    ),
    (
        "overlay() (Trino docs)",
        "SELECT overlay('Txxxxas' PLACING 'hom' FROM 2 FOR 4)",
        [("Thomas",)],
    ),
    (
        "format() is refused (Java patterns)",
        "SELECT format('%s%%', 123)",
        Refused("format()", "printf"),
    ),
    # --- Trino, functions/regexp.html ---
    (
        "regexp_extract_all() (Trino docs)",
        "SELECT regexp_extract_all('1a 2b 14m', '\\d+') AS a, "
        "regexp_extract_all('1a 2b 14m', '(\\d+)([a-z]+)', 2) AS b",
        [(["1", "2", "14"], ["a", "b", "m"])],
    ),
    (
        "regexp_extract() and regexp_like() (Trino docs)",
        "SELECT regexp_extract('1a 2b 14m', '\\d+') AS a, "
        "regexp_extract('1a 2b 14m', '(\\d+)([a-z]+)', 2) AS b, "
        "regexp_like('1a 2b 14m', '\\d+b') AS c",
        [("1", "a", True)],
    ),
    (
        "regexp_replace() (Trino docs)",
        "SELECT regexp_replace('1a 2b 14m', '\\d+[ab] ') AS a, "
        "regexp_replace('1a 2b 14m', '(\\d+)([ab]) ', '3c$2 ') AS b",
        [("14m", "3ca 3cb 14m")],
    ),
    (
        "regexp_split() and regexp_count() (Trino docs)",
        "SELECT regexp_split('1a 2b 14m', '\\s*[a-z]+\\s*') AS a, "
        "regexp_count('1a 2b 14m', '\\s*[a-z]+\\s*') AS b",
        [(["1", "2", "14", ""], 3)],
    ),
    (
        "regexp_replace() with a lambda is refused (Trino docs)",
        "SELECT regexp_replace('new york', '(\\w)(\\w*)', x -> upper(x[1]) || lower(x[2]))",
        Refused("regexp_replace()", "group references"),
    ),
    # --- Over logs.alb, answers by hand: decimal literals (Trino's language/types.html: 100.0 is
    # a decimal), sum of a bigint, approximate and map aggregates ---
    (
        "a share in percent with a decimal literal (count(*) * 100.0 / ...)",
        "SELECT count_if(elb_status_code >= 500) * 100.0 / count(*) AS pct FROM logs.alb",
        [(Decimal("33.3"),)],
    ),
    (
        "sum() of a bigint column is a bigint",
        "SELECT sum(sent_bytes) AS total FROM logs.alb",
        [(660,)],
    ),
    (
        "approx_distinct and approx_percentile over the clients (exact here)",
        "SELECT approx_distinct(client_ip) AS clients, approx_percentile(sent_bytes, 0.5) AS p50 "
        "FROM logs.alb",
        [(3, 50)],
    ),
    (
        "map_agg and histogram of verbs",
        "SELECT histogram(request_verb) AS verbs, element_at(map_agg(n, elb_status_code), 2) AS "
        "code, cardinality(map_agg(n, elb_status_code)) AS entries FROM logs.alb WHERE n < 3",
        [([("GET", 2), ("POST", 1)], 502, 3)],
    ),
]  # fmt: skip
