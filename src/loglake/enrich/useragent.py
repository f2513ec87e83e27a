"""User-agent enrichment with ua-parser: browser, OS, device and a bot flag.

Parsing one user agent costs tens of microseconds, and a log repeats a few hundred to a few tens of
thousands of distinct agents, so each distinct value is parsed once, cached for the whole run, and the
results are joined back onto the batch as columns.
"""

from __future__ import annotations

import re
import threading

import polars as pl

UA_COLUMNS: dict[str, pl.DataType] = {
    "ua_browser": pl.String(),
    "ua_browser_version": pl.String(),
    "ua_os": pl.String(),
    "ua_os_version": pl.String(),
    "ua_device": pl.String(),
    "is_bot": pl.Boolean(),
}

# ua-parser classifies known crawlers as device "Spider"; this catches the many it does not know.
_BOT_RE = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|archiver|facebookexternalhit|mediapartners|"
    r"headlesschrome|python-requests|python-urllib|go-http-client|curl/|wget/|libwww|"
    r"scrapy|httpclient|java/|okhttp|feedfetcher|monitor|uptime|check_http|zgrab|masscan|nmap",
    re.IGNORECASE,
)

_MAX_CACHE = 200_000


def _version(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return ".".join(kept) if kept else None


def parse_user_agent(
    ua: str,
) -> tuple[str | None, str | None, str | None, str | None, str | None, bool]:
    """Parse one user agent string into the UA_COLUMNS values (browser, version, os, ..., is_bot)."""
    from ua_parser import parse

    result = parse(ua)
    browser = result.user_agent
    os_ = result.os
    device = result.device
    spider = device is not None and device.family == "Spider"
    return (
        browser.family if browser else None,
        _version(browser.major, browser.minor, browser.patch) if browser else None,
        os_.family if os_ else None,
        _version(os_.major, os_.minor, os_.patch) if os_ else None,
        device.family if device else None,
        bool(spider or _BOT_RE.search(ua)),
    )


class UserAgentEnricher:
    """Adds UA_COLUMNS from the ``user_agent`` column, parsing each distinct value once per run.

    The results live in a lookup frame that grows with each new agent; a batch is enriched by one
    join against it, and only the agents the lookup does not have yet are parsed (in Python, once).
    """

    def __init__(self) -> None:
        self._lookup = pl.DataFrame(schema={"user_agent": pl.String, **UA_COLUMNS})
        # ua-parser compiles its rules on first use (~0.3 s): do it while the first chunk parses.
        threading.Thread(target=parse_user_agent, args=("Mozilla/5.0",), daemon=True).start()

    def enrich(self, frame: pl.DataFrame) -> pl.DataFrame:
        if "user_agent" not in frame.columns:
            return frame.with_columns(
                [pl.lit(None, dtype=t).alias(c) for c, t in UA_COLUMNS.items()]
            )
        distinct = frame.get_column("user_agent").drop_nulls().unique()
        new = distinct.filter(~distinct.is_in(self._lookup.get_column("user_agent").implode()))
        if len(new):
            if self._lookup.height + len(new) > _MAX_CACHE:
                # Bound memory on pathological inputs (random agents): start the lookup afresh.
                self._lookup = self._lookup.clear()
                new = distinct
            agents = new.to_list()
            values = [parse_user_agent(ua) for ua in agents]
            added = pl.DataFrame(
                {
                    "user_agent": agents,
                    **{c: [v[i] for v in values] for i, c in enumerate(UA_COLUMNS)},
                },
                schema={"user_agent": pl.String, **UA_COLUMNS},
            )
            self._lookup = pl.concat([self._lookup, added]).rechunk()
        out = frame.join(self._lookup, on="user_agent", how="left", maintain_order="left")
        return out.with_columns(pl.col("is_bot").fill_null(False))
