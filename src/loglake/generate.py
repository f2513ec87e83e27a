"""Synthetic Apache *combined* access logs: realistic, deterministic and fast.

Used by ``loglake generate`` (write N lines to a file or stdout) and ``loglake demo`` (fill a lake
with something worth querying). Each line is::

    %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"

What makes the traffic look real:

* clients: a few thousand per seed, mostly IPv4, some IPv6, a few reverse-DNS host names;
  popularity is Zipf-like, each client keeps one user agent, a few send an authenticated user name;
* bots (Googlebot, bingbot, AhrefsBot, YandexBot, a generic crawler) make ~14% of requests, from
  their own address ranges and host names, favouring ``/robots.txt``, ``/sitemap.xml`` and pages;
* ~35 paths (pages, ``/static`` assets with fixed sizes, ``/api`` calls with query strings, scanner
  probes such as ``/wp-login.php``), each with its own method, status, size and referrer mix;
* time: exponential inter-arrival times at ``rate`` lines per second on average, modulated by a
  day/night sine (peak 14:00 UTC, trough 02:00 UTC), non-decreasing, spanning about
  ``lines / rate`` seconds;
* error bursts: a few 2-5 minute windows where 500/502/503 jump to ~30% of the requests, so that a
  "find the outage" query has something to find.

Speed: every column is drawn with numpy (alias-method sampling over pools, giving index arrays) and
lines are assembled per chunk with one Polars ``concat_str`` over pooled strings; the chunk's bytes
are read straight from the resulting Arrow buffer. There is no Python loop per line (only per client
or pool entry, once per seed or process), which is what makes > 1 M lines/s on one core possible.

Determinism: the output is a pure function of ``(lines, rate, start, seed, chunk_lines)``. With
``start=None`` the start depends on the clock, so pass ``start`` when you need identical bytes.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, TypedDict, Unpack

import numpy as np
import polars as pl
import pyarrow as pa

from loglake.errors import ConfigError

__all__ = ["generate_chunks", "generate_to"]

# -------------------------------------------------------------------------------------------------
# Static tables (identical for every seed). Weights are relative; samplers normalise them.
# -------------------------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Path kinds decide the status, referrer and size behaviour of a request.
_PAGE, _STATIC, _API, _MISC, _PROBE = range(5)
_N_KINDS = 5
_BOT_ROW = _N_KINDS  # extra row in the referrer table: bots rarely send a referrer

_SEARCH_WORDS = (
    "log+analysis", "apache+logs", "iceberg", "zipf", "widget", "pricing", "error+500", "sql",
    "grafana", "nginx+vs+apache", "retention", "s3", "parquet", "duckdb", "alerts", "python",
)  # fmt: skip

# (path template, kind, human weight, bot weight, median body bytes, log-normal sigma, P(POST)).
# Templates with {word}/{n}/{id} are expanded into several concrete paths that share the weight
# (Zipf-like within the template), which gives realistic query-string variety from a small pool.
_PATHS: tuple[tuple[str, int, float, float, int, float, float], ...] = (
    ("/", _PAGE, 30, 20, 11_514, 0.15, 0),
    ("/index.html", _PAGE, 4, 2, 11_514, 0.15, 0),
    ("/about", _PAGE, 4, 3, 7_802, 0.05, 0),
    ("/pricing", _PAGE, 5, 2, 9_431, 0.05, 0),
    ("/contact", _PAGE, 2, 1, 5_210, 0.05, 0.15),
    ("/login", _PAGE, 4, 0.2, 4_312, 0.05, 0.35),
    ("/blog/", _PAGE, 8, 8, 24_077, 0.2, 0),
    ("/blog/2015/05/logging-at-scale", _PAGE, 5, 4, 38_112, 0.05, 0),
    ("/blog/2015/04/zipf-and-you", _PAGE, 3, 4, 31_290, 0.05, 0),
    ("/blog/2015/03/parsing-apache-logs", _PAGE, 2, 4, 29_004, 0.05, 0),
    ("/products/widget-pro", _PAGE, 4, 3, 16_380, 0.2, 0),
    ("/docs/getting-started", _PAGE, 4, 3, 21_455, 0.05, 0),
    ("/search?q={word}", _PAGE, 3, 0.5, 14_020, 0.4, 0),
    ("/static/css/main.css", _STATIC, 20, 1, 48_213, 0, 0),
    ("/static/js/app.js", _STATIC, 18, 0.5, 203_023, 0, 0),
    ("/static/js/vendor.min.js", _STATIC, 15, 0.3, 512_337, 0, 0),
    ("/static/img/logo.png", _STATIC, 16, 1, 9_147, 0, 0),
    ("/static/img/hero.jpg", _STATIC, 10, 0.5, 171_717, 0, 0),
    ("/static/fonts/inter-var.woff2", _STATIC, 8, 0, 97_608, 0, 0),
    ("/favicon.ico", _MISC, 12, 2, 1_150, 0, 0),
    ("/robots.txt", _MISC, 1, 25, 68, 0, 0),
    ("/sitemap.xml", _MISC, 0.3, 10, 3_412, 0, 0),
    ("/feed.xml", _MISC, 2, 3, 12_873, 0.05, 0),
    ("/api/v1/items?page={n}&per_page=20", _API, 8, 0.2, 4_210, 0.5, 0),
    ("/api/v1/items/{id}", _API, 6, 0.2, 1_304, 0.4, 0.3),
    ("/api/v1/search?q={word}&limit=10", _API, 4, 0, 2_911, 0.6, 0),
    ("/api/v1/events", _API, 5, 0, 96, 0.2, 0.9),
    ("/api/v1/session", _API, 2, 0, 410, 0.2, 0.5),
    ("/api/health", _API, 3, 0, 15, 0, 0),
    ("/wp-login.php", _PROBE, 0.8, 0.5, 0, 0, 0.3),
    ("/.env", _PROBE, 0.5, 0.3, 0, 0, 0),
    ("/xmlrpc.php", _PROBE, 0.3, 0.2, 0, 0, 0.8),
    ("/phpmyadmin/index.php", _PROBE, 0.3, 0.2, 0, 0, 0),
    ("/.git/config", _PROBE, 0.3, 0.3, 0, 0, 0),
    ("/admin/config.php", _PROBE, 0.2, 0.1, 0, 0, 0),
)

_METHODS = ("GET", "POST", "HEAD")
_GET, _POST, _HEAD = range(3)
_HEAD_SHARE = 0.01

# A request without protocol ("GET /") is what HTTP/0.9 clients and some scanners send; Apache 2.4
# answers it with 400.
_PROTOCOLS = (" HTTP/1.1", " HTTP/2.0", " HTTP/1.0", "")
_PROTOCOL_WEIGHTS = (0.80, 0.17, 0.0295, 0.0005)
_NO_PROTOCOL = 3

_STATUSES = (200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 500, 502, 503)
_S = {code: i for i, code in enumerate(_STATUSES)}
# Status mix per path kind (rows follow the kind constants). Baseline 5xx stays well under 1%.
_STATUS_WEIGHTS: dict[int, dict[int, float]] = {
    _PAGE: {200: 86, 206: 0.1, 301: 3, 302: 2, 304: 6, 400: 0.2, 403: 0.3, 404: 2, 500: 0.2,
            502: 0.1, 503: 0.1},
    _STATIC: {200: 57, 206: 1, 304: 38, 403: 0.1, 404: 3, 500: 0.02, 502: 0.05, 503: 0.05},
    _API: {200: 85, 204: 3, 400: 3, 401: 3, 403: 0.5, 404: 3, 500: 0.5, 502: 0.3, 503: 0.2},
    _MISC: {200: 85, 304: 12, 404: 3},
    _PROBE: {301: 2, 403: 6, 404: 92},
}  # fmt: skip
# Body sizes of Apache's default error and redirect pages (roughly), replacing the path's size.
_ERROR_SIZES = {301: 233, 302: 219, 400: 226, 401: 381, 403: 199, 404: 196, 500: 531, 502: 401,
                503: 299}  # fmt: skip
_NO_BODY = (204, 304)  # Apache logs %b as "-" when no body was sent

_BURST_5XX_SHARE = 0.30
_BURST_STATUSES = (500, 502, 503)
_BURST_WEIGHTS = (0.3, 0.45, 0.25)  # a failing upstream mostly shows up as 502 at the proxy

_SITE = "https://www.example.com"
_REFERRERS = (
    "-",
    f"{_SITE}/", f"{_SITE}/blog/", f"{_SITE}/pricing", f"{_SITE}/products/widget-pro",
    f"{_SITE}/blog/2015/05/logging-at-scale", f"{_SITE}/docs/getting-started", f"{_SITE}/login",
    "https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/",
    "https://yandex.ru/", "https://www.google.com/search?q=log+analysis",
    "https://news.ycombinator.com/", "https://www.reddit.com/r/programming/", "https://t.co/x7Yq2Lm",
    "https://github.com/loglake/loglake", "android-app://com.google.android.gm/",
)  # fmt: skip
_REF_NONE = (0,)
_REF_INTERNAL = (1, 2, 3, 4, 5, 6, 7)
_REF_SEARCH = (8, 9, 10, 11, 12)
_REF_EXTERNAL = (13, 14, 15, 16, 17)
# Share of (none, internal, search, external) referrers per path kind, plus a last row for bots.
_REFERRER_MIX = (
    (0.45, 0.22, 0.25, 0.08),  # pages: direct visits, navigation, search, links
    (0.12, 0.88, 0.0, 0.0),  # static assets are loaded by pages
    (0.30, 0.70, 0.0, 0.0),  # API calls come from the single-page app
    (0.60, 0.40, 0.0, 0.0),  # favicon, robots, feeds
    (0.98, 0.0, 0.0, 0.02),  # scanners
    (0.97, 0.03, 0.0, 0.0),  # bots
)

# (user agent, weight) for people and tools; each client keeps one of these.
_HUMAN_UAS: tuple[tuple[str, float], ...] = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", 28),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", 10),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/123.0.0.0 Safari/537.36", 4),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Mobile Safari/537.36", 14),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1", 14),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4.1 Safari/605.1.15", 6),
    ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1", 2),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", 6),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", 3),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:125.0) Gecko/20100101 Firefox/125.0", 2),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80", 6),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", 2),
    ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", 1),
    ("Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko", 0.5),
    ("curl/8.5.0", 1.5),
    ("python-requests/2.31.0", 1.5),
    ("-", 0.5),  # some scripts and scanners send no User-Agent at all
)  # fmt: skip

_GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
_GOOGLEBOT_MOBILE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)"
)
# (family share of bot traffic, user agents, client address templates; {n} is a random 1..254).
_BOT_FAMILIES: tuple[tuple[float, tuple[str, ...], tuple[str, ...]], ...] = (
    (0.38, (_GOOGLEBOT, _GOOGLEBOT_MOBILE),
     ("crawl-66-249-66-{n}.googlebot.com", "66.249.66.{n}", "66.249.68.{n}", "66.249.79.{n}")),
    (0.22, ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",),
     ("msnbot-157-55-39-{n}.search.msn.com", "40.77.167.{n}", "207.46.13.{n}")),
    (0.18, ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",),
     ("54.36.148.{n}", "54.36.149.{n}", "51.222.253.{n}")),
    (0.10, ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",),
     ("5.255.253.{n}", "213.180.203.{n}", "87.250.224.{n}")),
    (0.12, ("Mozilla/5.0 (compatible; SomeCrawler/1.0; +http://example.com/bot)",),
     ("203.0.113.{n}",)),
)  # fmt: skip
_BOT_CLIENTS_PER_TEMPLATE = 4
_BOT_SHARE = 0.14

_N_HUMAN_CLIENTS = 4_000
_CLIENT_ZIPF_S = 1.0  # Zipf-Mandelbrot popularity 1 / (rank + q)^s ...
_CLIENT_ZIPF_Q = 2.0  # ... the offset keeps the top client at a few percent, not ~10%
_IPV6_SHARE = 0.04
_HOSTNAME_SHARE = 0.01
_USER_SHARE = 0.02  # clients that log in with HTTP authentication (%u)
_IDENT_SHARE = 0.002  # clients running identd (%l); almost nobody does any more
_USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "admin", "deploy", "jsmith", "mwong")

# Day/night pattern of the request rate: rate * (1 + A * sin(...)), peaking at 14:00 UTC.
_DAY = 86_400.0
_LAST_EPOCH_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z
_DAY_AMPLITUDE = 0.6
_PEAK_SECOND_OF_DAY = 14 * 3600

# Error bursts: one per started 6 hours of simulated time (at most 8), 2-5 minutes each, but never
# more than 12% of the span in total, so the overall 5xx share stays low and the bursts stand out.
_BURST_EVERY_S = 6 * 3600
_MAX_BURSTS = 8
_BURST_MIN_S, _BURST_MAX_S = 120.0, 300.0
_BURST_MAX_FRACTION = 0.12


class GenerateOptions(TypedDict, total=False):
    """Keyword options shared by :func:`generate_chunks` and :func:`generate_to`."""

    rate: float
    start: datetime | None
    seed: int
    chunk_lines: int


# -------------------------------------------------------------------------------------------------
# Pools: everything sampled by index. Built once per seed (clients) or once per process (the rest).
# -------------------------------------------------------------------------------------------------


class _Alias:
    """Walker/Vose alias tables: O(1) weighted sampling by index, one uniform per draw.

    Several weight rows (same length, zero-padded) can share one table so that each element draws
    from its own row (``group``) in the same vectorized pass, without masks. ``searchsorted`` over a
    CDF costs a cache-unfriendly binary search per draw, which was the top cost for the client pool.
    """

    def __init__(self, *rows: np.ndarray | list[float] | tuple[float, ...]) -> None:
        weights = np.atleast_2d(np.array(rows, dtype=np.float64))
        self.k = weights.shape[1]
        self.prob = np.ones_like(weights)
        self.alias = np.tile(np.arange(self.k, dtype=np.intp), (len(weights), 1))
        for g, w in enumerate(weights):
            if not (np.all(w >= 0) and w.sum() > 0):
                raise ValueError(f"alias row {g}: weights must be >= 0 with a positive sum")
            scaled = (w * self.k / w.sum()).tolist()  # plain floats: this loop runs per pool entry
            small = [i for i, p in enumerate(scaled) if p < 1.0]
            large = [i for i, p in enumerate(scaled) if p >= 1.0]
            while small and large:
                lo, hi = small.pop(), large.pop()
                self.prob[g, lo] = scaled[lo]
                self.alias[g, lo] = hi
                scaled[hi] -= 1.0 - scaled[lo]
                (small if scaled[hi] < 1.0 else large).append(hi)
            # Leftovers are 1.0 up to rounding: they keep prob 1 and alias to themselves.

    def sample(self, u: np.ndarray, group: np.ndarray | int = 0) -> np.ndarray:
        """Indices drawn from row ``group`` (scalar or per element), one uniform ``u`` each."""
        x = u * self.k
        i = np.minimum(x.astype(np.intp), self.k - 1)  # u * k can round up to k for u just below 1
        frac = x - i  # the fractional part is itself uniform: no second random draw needed
        return np.where(frac < self.prob[group, i], i, self.alias[group, i])


def _zipf_weights(n: int, s: float, q: float) -> np.ndarray:
    return 1.0 / (np.arange(n, dtype=np.float64) + 1.0 + q) ** s


@dataclass(frozen=True)
class _Requests:
    """Seed-independent pools: request lines, statuses, referrers+agents, per-path attributes."""

    # '"METHOD PATH PROTOCOL" STATUS ' for every (method, path variant, protocol, status).
    request_status: pl.Series
    n_variants: int
    kind: np.ndarray  # path kind per variant
    post_prob: np.ndarray
    size_median: np.ndarray
    size_sigma: np.ndarray
    path: _Alias  # row 0: people, row 1: bots
    status: _Alias  # one row per path kind
    protocol: _Alias
    burst_status: _Alias  # over _BURST_STATUSES
    burst_status_index: np.ndarray  # _BURST_STATUSES as indices into _STATUSES
    error_size: np.ndarray  # per status index, 0 when the path's own size applies
    no_body: np.ndarray  # per status index, True when %b is "-"
    referrer: _Alias  # one row per path kind, plus _BOT_ROW
    # ' "REFERRER" "USER-AGENT"\n' for every (referrer, user agent).
    referrer_agent: pl.Series
    agents: tuple[str, ...]
    hms: pl.Series  # "HH:MM:SS +0000] " for every second of a day


def _expand_template(template: str) -> list[str]:
    if "{word}" in template:
        return [template.replace("{word}", w) for w in _SEARCH_WORDS]
    if "{n}" in template:
        return [template.replace("{n}", str(n)) for n in range(1, 21)]
    if "{id}" in template:
        return [template.replace("{id}", str(i)) for i in range(1001, 1041)]
    return [template]


@functools.cache
def _requests() -> _Requests:
    """Build the seed-independent pools (a few tens of ms, once per process)."""
    paths: list[str] = []
    kind, post, median, sigma, human_w, bot_w = [], [], [], [], [], []
    for template, k, hw, bw, med, sig, pp in _PATHS:
        variants = _expand_template(template)
        within = _zipf_weights(len(variants), 1.0, 0.0)
        within /= within.sum()
        for path, share in zip(variants, within, strict=True):
            paths.append(path)
            kind.append(k)
            post.append(pp)
            median.append(med)
            sigma.append(sig)
            human_w.append(hw * share)
            bot_w.append(bw * share)
    n_var = len(paths)
    # Pool index = ((method * n_variants + variant) * n_protocols + protocol) * n_statuses + status.
    request_status = pl.Series(
        "request",
        [
            f'"{m} {p}{proto}" {status} '
            for m in _METHODS
            for p in paths
            for proto in _PROTOCOLS
            for status in _STATUSES
        ],
        dtype=pl.String,
    )

    status = _Alias(*([_STATUS_WEIGHTS[k].get(c, 0.0) for c in _STATUSES] for k in range(_N_KINDS)))
    error_size = np.array([_ERROR_SIZES.get(c, 0) for c in _STATUSES], dtype=np.float64)
    no_body = np.array([c in _NO_BODY for c in _STATUSES])

    groups = (_REF_NONE, _REF_INTERNAL, _REF_SEARCH, _REF_EXTERNAL)
    ref_rows = []
    for mix in _REFERRER_MIX:
        w = np.zeros(len(_REFERRERS))
        for share, members in zip(mix, groups, strict=True):
            # Within a group the first entries are the most common ones (home page, Google).
            zipf = _zipf_weights(len(members), 1.0, 0.0)
            w[list(members)] = share * zipf / zipf.sum()
        ref_rows.append(w)

    agents = tuple(ua for ua, _ in _HUMAN_UAS) + tuple(
        dict.fromkeys(ua for _, uas, _ in _BOT_FAMILIES for ua in uas)
    )
    referrer_agent = pl.Series(
        "referrer_agent", [f' "{r}" "{a}"\n' for r in _REFERRERS for a in agents], dtype=pl.String
    )
    hms = pl.Series(
        "hms",
        [
            f"{h:02d}:{m:02d}:{s:02d} +0000] "
            for h in range(24)
            for m in range(60)
            for s in range(60)
        ],
        dtype=pl.String,
    )
    return _Requests(
        request_status=request_status,
        n_variants=n_var,
        kind=np.array(kind, dtype=np.intp),
        post_prob=np.array(post, dtype=np.float64),
        size_median=np.array(median, dtype=np.float64),
        size_sigma=np.array(sigma, dtype=np.float64),
        path=_Alias(human_w, bot_w),
        status=status,
        protocol=_Alias(_PROTOCOL_WEIGHTS),
        burst_status=_Alias(_BURST_WEIGHTS),
        burst_status_index=np.array([_S[c] for c in _BURST_STATUSES], dtype=np.intp),
        error_size=error_size,
        no_body=no_body,
        referrer=_Alias(*ref_rows),
        referrer_agent=referrer_agent,
        agents=agents,
        hms=hms,
    )


@dataclass(frozen=True)
class _Clients:
    """Per-seed client pool: humans first, then bots."""

    prefix: pl.Series  # "HOST IDENT USER [" per client
    agent: np.ndarray  # index into _Requests.agents per client
    n_human: int
    sampler: _Alias  # over all clients: people Zipf-like, bots by family, bots ~_BOT_SHARE in total


def _human_address(rng: np.random.Generator) -> str:
    """One random public-looking client address: IPv4 mostly, some IPv6, a few host names."""
    u = rng.random()
    a, b, c, d = (int(x) for x in rng.integers(1, 255, size=4))
    if u < _IPV6_SHARE:
        style = int(rng.integers(0, 3))
        x, y, z = (int(v) for v in rng.integers(1, 0xFFFF, size=3))
        if style == 0:
            return f"2001:db8::{x:x}"
        if style == 1:
            return f"2a02:{x:x}:{y:x}:{z:x}::{d:x}"
        return f"2600:1700:{x:x}:{y:x}::{z:x}"
    if u < _IPV6_SHARE + _HOSTNAME_SHARE:
        if rng.random() < 0.5:
            return f"cpe-{a}-{b}-{c}-{d}.socal.res.rr.com"
        return f"host-{a}-{b}-{c}-{d}.dyn.example.net"
    # Keep the first octet out of private, loopback and multicast ranges (addresses look public).
    while a in (10, 127, 172, 192) or a >= 224:
        a = int(rng.integers(1, 224))
    return f"{a}.{b}.{c}.{d}"


@functools.lru_cache(maxsize=8)
def _clients(seed: int) -> _Clients:
    """Build the client pool of a seed (a Python loop per *client*, ~4k iterations, once a seed)."""
    rng = np.random.default_rng([seed, 0])
    req = _requests()
    addresses: dict[str, None] = {}
    while len(addresses) < _N_HUMAN_CLIENTS:  # a dict keeps insertion order and drops duplicates
        addresses.setdefault(_human_address(rng))
    human_agent = _Alias([w for _, w in _HUMAN_UAS]).sample(rng.random(_N_HUMAN_CLIENTS))

    idents = np.where(rng.random(_N_HUMAN_CLIENTS) < _IDENT_SHARE, "nobody", "-")
    users = np.where(
        rng.random(_N_HUMAN_CLIENTS) < _USER_SHARE,
        np.array(_USERS)[rng.integers(0, len(_USERS), _N_HUMAN_CLIENTS)],
        "-",
    )
    prefixes = [
        f"{addr} {ident} {user} ["
        for addr, ident, user in zip(addresses, idents.tolist(), users.tolist(), strict=True)
    ]

    bot_agents: list[int] = []
    bot_weights: list[float] = []
    for share, uas, templates in _BOT_FAMILIES:
        n_family = len(templates) * _BOT_CLIENTS_PER_TEMPLATE
        for t_i, template in enumerate(templates):
            for j in range(_BOT_CLIENTS_PER_TEMPLATE):
                prefixes.append(f"{template.format(n=int(rng.integers(1, 255)))} - - [")
                bot_agents.append(req.agents.index(uas[(t_i + j) % len(uas)]))
                bot_weights.append(share / n_family)

    human_weights = _zipf_weights(_N_HUMAN_CLIENTS, _CLIENT_ZIPF_S, _CLIENT_ZIPF_Q)
    human_weights *= (1.0 - _BOT_SHARE) / human_weights.sum()
    return _Clients(
        prefix=pl.Series("prefix", prefixes, dtype=pl.String),
        agent=np.concatenate([human_agent, np.array(bot_agents, dtype=np.intp)]),
        n_human=_N_HUMAN_CLIENTS,
        sampler=_Alias(np.concatenate([human_weights, _BOT_SHARE * np.array(bot_weights)])),
    )


# -------------------------------------------------------------------------------------------------
# Time: homogeneous arrivals warped through the day/night intensity.
# -------------------------------------------------------------------------------------------------


class _Clock:
    """Maps "homogeneous" arrival times to wall-clock offsets following the day/night pattern.

    Arrivals are first drawn as a Poisson process of constant ``rate`` (cumulative exponential
    gaps, ``s``). They are then mapped through the inverse of
    ``W(t) = c * integral(1 + A sin(...))``, scaled so that ``W(span) = span``: the density follows
    the sine, the whole run still spans ``lines / rate`` seconds (short runs do not drift with the
    time of day), and a monotone map keeps timestamps non-decreasing across chunk boundaries.
    """

    def __init__(self, span: float, start_second_of_day: float) -> None:
        # theta is the sine's phase at t=0: sin(theta) = 1 at the peak hour.
        theta = 2 * math.pi * (start_second_of_day - _PEAK_SECOND_OF_DAY) / _DAY + math.pi / 2
        k = _DAY_AMPLITUDE * _DAY / (2 * math.pi)
        t_max = 2 * span + 3600.0  # cumulative exponentials can overshoot the expected span a bit
        n = int(min(max(t_max / 60.0, 2048), 2_000_000)) + 1  # <= 1 minute per grid step when cheap
        self._t = np.linspace(0.0, t_max, n)
        w = self._t + k * (math.cos(theta) - np.cos(theta + 2 * math.pi * self._t / _DAY))
        w_span = span + k * (math.cos(theta) - math.cos(theta + 2 * math.pi * span / _DAY))
        self._w = w * (span / w_span) if span > 0 else w

    def __call__(self, s: np.ndarray) -> np.ndarray:
        t = np.interp(s, self._w, self._t)
        # Past the grid (tiny runs with a long last gap): continue linearly, still monotone.
        beyond = s > self._w[-1]
        if beyond.any():
            t[beyond] = self._t[-1] + (s[beyond] - self._w[-1])
        return t


def _burst_windows(span: float, rng: np.random.Generator) -> np.ndarray:
    """Error-burst windows as ``[[start, end], ...]`` offsets in seconds from the start."""
    if span <= 0:
        return np.zeros((0, 2))
    n = min(_MAX_BURSTS, int(span // _BURST_EVERY_S) + 1)
    durations = rng.uniform(_BURST_MIN_S, _BURST_MAX_S, n)
    durations = np.minimum(durations, _BURST_MAX_FRACTION * span / n)
    starts = rng.uniform(0.0, 1.0, n) * (span - durations)
    return np.stack([starts, starts + durations], axis=1)


def _day_prefixes(first_day: int, last_day: int) -> pl.Series:
    """``DD/Mon/YYYY:`` for each epoch day in the range; English month names whatever the locale."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out = []
    for day in range(first_day, last_day + 1):
        d = epoch + timedelta(days=day)
        out.append(f"{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year:04d}:")
    return pl.Series("day", out, dtype=pl.String)


# -------------------------------------------------------------------------------------------------
# Chunk assembly
# -------------------------------------------------------------------------------------------------


def _series_bytes(lines: pl.Series) -> bytes:
    """The concatenation of a string Series as bytes, read straight from its Arrow data buffer.

    Much faster than ``str.join`` + ``encode`` (which copy the text twice through Python ``str``).
    """
    arr = lines.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    if offsets_buf is None or data_buf is None:  # only for an empty array; chunks never are
        return b""
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)
    first, last = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    return data_buf[first:last].to_pybytes()


def _chunk(
    n: int,
    rng: np.random.Generator,
    s_prev: float,
    rate: float,
    clock: _Clock,
    bursts: np.ndarray,
    start_epoch: int,
    clients: _Clients,
    req: _Requests,
) -> tuple[bytes, float]:
    """Generate ``n`` lines; return their bytes and the last homogeneous arrival time."""
    # --- time ---
    s = s_prev + np.cumsum(rng.exponential(1.0 / rate, n))
    t = clock(s)
    secs = start_epoch + np.floor(t).astype(np.int64)
    days = secs // 86_400
    first_day = int(days[0])
    day_idx = days - first_day
    second_of_day = secs - days * 86_400

    # All uniforms of the chunk in one call; each row feeds one decision below.
    u = rng.random((8, n))

    # --- who --- (bots are part of the client pool's weights, so one draw decides both)
    client = clients.sampler.sample(u[0])
    is_bot = client >= clients.n_human
    agent = clients.agent[client]

    # --- what ---
    variant = req.path.sample(u[1], is_bot.astype(np.intp))
    kind = req.kind[variant]
    method = np.where(
        ~is_bot & (u[2] < req.post_prob[variant]),
        _POST,
        np.where(u[2] > 1.0 - _HEAD_SHARE, _HEAD, _GET),
    )
    protocol = req.protocol.sample(u[3])

    # --- outcome ---
    status = req.status.sample(u[4], kind)
    # Successful POSTs answer 201 Created (API) or a 302 redirect (forms), never 304 or 206; probes
    # have no success row in the status table, so their POSTs keep their 404/403.
    ok = (status == _S[200]) | (status == _S[206]) | (status == _S[304])
    post_status = np.where(kind == _API, _S[201], _S[302])
    status = np.where((method == _POST) & ok, post_status, status)
    status = np.where(protocol == _NO_PROTOCOL, _S[400], status)
    burst_error = np.zeros(n, dtype=bool)
    for b_start, b_end in bursts:  # a handful of windows, not lines
        burst_error |= (t >= b_start) & (t < b_end)
    burst_error &= u[5] < _BURST_5XX_SHARE
    if burst_error.any():
        # u[5] < share on these rows, so u[5] / share is again uniform in [0, 1).
        picked = req.burst_status.sample(u[5][burst_error] / _BURST_5XX_SHARE)
        status[burst_error] = req.burst_status_index[picked]

    # Log-normal body sizes around each path's median; error/redirect pages have their own size;
    # partial content is a slice of the file; no body at all is logged as "-" (-1 here).
    z = rng.standard_normal(n)
    size = req.size_median[variant] * np.exp(req.size_sigma[variant] * z)
    err = req.error_size[status]
    size = np.where(err > 0, err * np.exp(0.03 * z), size)
    size = np.where(status == _S[206], size * (0.05 + 0.45 * u[6]), size)
    size_int = np.rint(size).astype(np.int64)
    size_int[req.no_body[status] | (method == _HEAD)] = -1

    referrer = req.referrer.sample(u[7], np.where(is_bot, _BOT_ROW, kind))

    # --- assemble: 6 pooled/derived columns, one concat_str, bytes from the Arrow buffer ---
    n_proto, n_status = len(_PROTOCOLS), len(_STATUSES)
    request_idx = ((method * req.n_variants + variant) * n_proto + protocol) * n_status + status
    ref_agent_idx = referrer * len(req.agents) + agent
    frame = pl.DataFrame(
        {
            "prefix": clients.prefix.gather(client),
            "day": _day_prefixes(first_day, int(days[-1])).gather(day_idx),
            "hms": req.hms.gather(second_of_day),
            "request": req.request_status.gather(request_idx),
            "size": size_int,
            "tail": req.referrer_agent.gather(ref_agent_idx),
        }
    )
    size_text = (
        pl.when(pl.col("size") < 0).then(pl.lit("-")).otherwise(pl.col("size").cast(pl.String))
    )
    parts = [pl.col("prefix"), pl.col("day"), pl.col("hms"), pl.col("request"), size_text]
    lines = frame.select(pl.concat_str([*parts, pl.col("tail")])).to_series()
    return _series_bytes(lines), float(s[-1])


# -------------------------------------------------------------------------------------------------
# Public API
# -------------------------------------------------------------------------------------------------


def _default_start(lines: int, rate: float) -> datetime:
    """Now (UTC) minus the run's span, rounded down to the hour, so the logs end around "now"."""
    begin = datetime.now(UTC) - timedelta(seconds=lines / rate)
    return begin.replace(minute=0, second=0, microsecond=0)


def generate_chunks(
    lines: int,
    *,
    rate: float = 10.0,
    start: datetime | None = None,
    seed: int = 0,
    chunk_lines: int = 100_000,
) -> Iterator[bytes]:
    """Yield ``lines`` Apache combined log lines as UTF-8 chunks of at most ``chunk_lines`` lines.

    Every chunk ends with a newline. ``rate`` is the average number of lines per second of simulated
    time; timestamps start at ``start`` (a naive datetime is taken as UTC; default: now minus
    ``lines / rate`` seconds, rounded down to the hour), never decrease and span about
    ``lines / rate`` seconds. The output is a pure function of all arguments (``chunk_lines``
    included); with ``start=None`` it also depends on the clock.

    Raises :class:`~loglake.errors.ConfigError` at call time (before anything is generated) when
    ``lines`` or ``seed`` is not a non-negative integer, ``chunk_lines`` is < 1, ``rate`` is not a
    positive finite number, or the run would end after the year 9999.
    """
    # Validate eagerly: a generator body would only fail on the first next(), far from the call.
    lines = _non_negative_int("lines", lines)
    chunk_lines = _non_negative_int("chunk_lines", chunk_lines)
    seed = _non_negative_int("seed", seed)
    if chunk_lines < 1:
        raise ConfigError(f"chunk_lines must be at least 1, got {chunk_lines}")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise ConfigError(f"rate must be a positive number of lines per second, got {rate!r}")
    if start is None:
        start = _default_start(lines, rate)
    elif start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    # Timestamps must stay printable as dd/Mon/yyyy; the 2x margin covers the random overshoot.
    if start.timestamp() + 2 * lines / rate + _DAY > _LAST_EPOCH_SECOND:
        raise ConfigError(
            f"{lines} lines at {rate} lines/s from {start.isoformat()} run past the year 9999; "
            "raise the rate or lower the line count"
        )
    return _generate(lines, float(rate), start, seed, chunk_lines)


def _non_negative_int(name: str, value: object) -> int:
    """``value`` as an int (numpy integers accepted), or ConfigError naming the option."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative, got {number}")
    return number


def _generate(
    lines: int, rate: float, start: datetime, seed: int, chunk_lines: int
) -> Iterator[bytes]:
    start_epoch = math.floor(start.timestamp())
    span = lines / rate
    req = _requests()
    clients = _clients(seed)
    clock = _Clock(span, float(start_epoch % 86_400))
    bursts = _burst_windows(span, np.random.default_rng([seed, 1]))
    s_prev = 0.0
    done = 0
    chunk_no = 0
    while done < lines:
        n = min(chunk_lines, lines - done)
        # One independent stream per chunk: reproducible without carrying generator state around.
        rng = np.random.default_rng([seed, 2, chunk_no])
        data, s_prev = _chunk(n, rng, s_prev, rate, clock, bursts, start_epoch, clients, req)
        yield data
        done += n
        chunk_no += 1


def generate_to(stream: BinaryIO, lines: int, **kwargs: Unpack[GenerateOptions]) -> int:
    """Write ``lines`` generated lines to the binary ``stream``; return the number of lines written.

    Takes the same keyword options as :func:`generate_chunks` and writes exactly the bytes it
    yields. Raises :class:`~loglake.errors.ConfigError` for invalid options (nothing is written
    then) and lets the stream's own ``OSError`` (e.g. a closed pipe) propagate.
    """
    for chunk in generate_chunks(lines, **kwargs):
        stream.write(chunk)
    return lines
