"""A corpus of Athena queries in the style of the AWS documentation's ALB log examples, rewritten
only to loglake's table (``logs.alb``) and run over the six requests of :data:`ALB_ROWS`.

Each expected answer was worked out by hand from those rows and Trino's documented semantics, not
computed by loglake. The corpus is a start: issue 12 asks for at least 60 queries.
"""

from __future__ import annotations

from typing import Any

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

#: (name, Athena SQL, expected rows)
CORPUS: list[tuple[str, str, list[tuple[Any, ...]]]] = [
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
]  # fmt: skip
