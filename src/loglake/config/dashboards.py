"""Dashboards of the console's Live page: ``[dashboards.NAME]`` with its ``[[dashboards.NAME.panels]]``.

A dashboard comes from the config file (read-only in the page, as Grafana's provisioned dashboards
are), from the ready-made queries of an access-log stream (:func:`ready_dashboard`), or from the page
itself (saved as JSON in the data home by the server). All three go through :func:`dashboard_config`:
the same strict parser as every other section, so an unknown key or a wrong type is refused with the
full key (``dashboards.web.panels[2].kind``) whether it comes from the file or from the page.

A panel shows one continuous query's results: ``x`` is the window time column (or, for a bar or pie
of categories, a text column of the latest window), ``y`` the value columns, ``group`` an optional
column whose values become separate series (or pie slices).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loglake.config.parse import SettingError, build, shown
from loglake.errors import ConfigError

#: Dashboard names name files (``console/dashboards/NAME.json``) and appear in URLs.
DASHBOARD_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
DASHBOARD_NAME_RULE = "1-64 letters, digits, '_' or '-'"
PANEL_KINDS = ("timeseries", "bar", "table", "stat", "pie")
MAX_PANELS = 24  # per dashboard
MAX_Y = 8  # value columns of one panel
MAX_TEXT = 200  # characters of a title
MAX_DESCRIPTION = 2000
MAX_COLUMN = 128  # characters of a column name (as query names)
MAX_WINDOWS = 1000  # the server keeps the newest 1,000 result rows of each query
GRID_COLUMNS = 12  # a panel's width is a number of the dashboard's 12 columns


@dataclass(frozen=True)
class PanelConfig:
    """One panel: which query, how it is drawn, which columns. Raises :class:`SettingError` for a
    value out of range (the key is named relative to the panel)."""

    query: str = ""  # the continuous query whose results it shows
    kind: str = "timeseries"  # timeseries | bar | table | stat | pie
    title: str = ""  # "" = the query's name
    x: str = "window_start"  # the time column; a text column draws categories of the latest window
    y: tuple[str, ...] = ()  # value columns (table: the columns shown, () = all)
    group: str = ""  # a column whose values are series (timeseries, bar) or slices (pie)
    windows: int = 60  # the newest windows shown
    width: int = 6  # of the dashboard's 12 columns

    def __post_init__(self) -> None:
        where = "panel"
        if not self.query:
            raise SettingError(where, "query", " is missing: name the continuous query to show")
        if len(self.query) > MAX_COLUMN:
            raise SettingError(where, "query", f" is longer than {MAX_COLUMN} characters")
        if self.kind not in PANEL_KINDS:
            raise SettingError(
                where, "kind", f" = {self.kind[:50]!r}; choose one of {', '.join(PANEL_KINDS)}"
            )
        if len(self.title) > MAX_TEXT:
            raise SettingError(where, "title", f" is longer than {MAX_TEXT} characters")
        for key, column in [("x", self.x), ("group", self.group), *(("y", c) for c in self.y)]:
            if len(column) > MAX_COLUMN:
                raise SettingError(
                    where, key, f" names a column longer than {MAX_COLUMN} characters"
                )
        if not self.x:
            raise SettingError(where, "x", " is empty: name the window column, e.g. window_start")
        if len(self.y) > MAX_Y:
            raise SettingError(where, "y", f" names {len(self.y)} columns; at most {MAX_Y}")
        if any(not c for c in self.y):
            raise SettingError(where, "y", " holds an empty column name")
        if self.kind != "table" and not self.y:
            raise SettingError(
                where, "y", f" is missing: a {self.kind} panel needs a value column, e.g. ['hits']"
            )
        if self.kind == "stat" and len(self.y) != 1:
            raise SettingError(where, "y", " of a stat panel must name exactly one column")
        if self.kind == "pie" and self.group and len(self.y) != 1:
            raise SettingError(
                where, "y", " of a pie with a group must name one column (the slices' sizes)"
            )
        if not 1 <= self.windows <= MAX_WINDOWS:
            raise SettingError(where, "windows", f" = {self.windows!r}; use 1 to {MAX_WINDOWS}")
        if not 1 <= self.width <= GRID_COLUMNS:
            raise SettingError(where, "width", f" = {self.width!r}; use 1 to {GRID_COLUMNS}")


@dataclass(frozen=True)
class DashboardConfig:
    """One dashboard: a title, a description and its panels (at most :data:`MAX_PANELS`)."""

    title: str = ""  # "" = the dashboard's name
    description: str = ""
    panels: tuple[PanelConfig, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, Any]:
        """The settings as JSON data (what the page edits and the server saves)."""
        return {
            "title": self.title,
            "description": self.description,
            "panels": [
                {
                    "title": p.title,
                    "query": p.query,
                    "kind": p.kind,
                    "x": p.x,
                    "y": list(p.y),
                    "group": p.group,
                    "windows": p.windows,
                    "width": p.width,
                }
                for p in self.panels
            ],
        }


def dashboard_config(name: str, settings: Any, section: str = "dashboards") -> DashboardConfig:
    """``[dashboards.NAME]`` (or a dashboard saved from the page) parsed strictly.

    Raises :class:`ConfigError` naming the full key of an unknown key, a wrong type or a value out
    of range, and for a name that is not :data:`DASHBOARD_NAME`.
    """
    where = f"{section}.{str(name)[:100]}"
    if not DASHBOARD_NAME.fullmatch(str(name)):
        raise ConfigError(f"dashboard name {str(name)[:100]!r}: use {DASHBOARD_NAME_RULE}")
    if not isinstance(settings, Mapping):
        raise ConfigError(f"[{where}] must be a table of settings, got {shown(settings)}")
    head = {k: v for k, v in settings.items() if k != "panels"}
    base = build(
        DashboardConfig,
        where,
        head,
        keys=("title", "description"),
        hint=f", and the panels as [[{where}.panels]]",
    )
    if len(base.title) > MAX_TEXT:
        raise ConfigError(f"{where}.title is longer than {MAX_TEXT} characters")
    if len(base.description) > MAX_DESCRIPTION:
        raise ConfigError(f"{where}.description is longer than {MAX_DESCRIPTION} characters")
    raw_panels = settings.get("panels", [])
    if not isinstance(raw_panels, list | tuple):
        raise ConfigError(
            f"{where}.panels must be a list of tables ([[{where}.panels]] in the file), "
            f"got {shown(raw_panels)}"
        )
    if len(raw_panels) > MAX_PANELS:
        raise ConfigError(
            f"{where}.panels: {len(raw_panels)} panels; a dashboard holds at most {MAX_PANELS}"
        )
    panels = tuple(
        build(PanelConfig, f"{where}.panels[{i}]", raw) for i, raw in enumerate(raw_panels)
    )
    return DashboardConfig(title=base.title, description=base.description, panels=panels)


def dashboards_section(raw: Any) -> dict[str, DashboardConfig]:
    """The ``[dashboards]`` section of the config file: NAME -> :class:`DashboardConfig`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"[dashboards] must be a table, got {shown(raw)}; e.g. [dashboards.traffic]"
        )
    return {name: dashboard_config(name, settings) for name, settings in raw.items()}


def ready_dashboard(stream: str) -> tuple[str, DashboardConfig]:
    """The ready-made dashboard (name and settings) of the ready-made queries of ``stream``
    (``ready_queries = true``; see :mod:`loglake.config.ready`): ``<stream>_access``."""
    prefix = stream.replace("-", "_").replace(".", "_")

    def panel(query: str, kind: str, title: str, *y: str, **more: Any) -> PanelConfig:
        return PanelConfig(query=f"{prefix}_{query}", kind=kind, title=title, y=y, **more)

    latest = {"windows": 1}  # the panel shows the newest window only
    return f"{prefix}_access", DashboardConfig(
        title=f"Access log · {stream}",
        description=(
            f"The ready-made queries of stream {stream} over one-minute windows "
            "(docs/analytics.md, Ready-made queries)."
        ),
        panels=(
            panel("requests", "stat", "Requests (last minute)", "requests", width=3),
            panel("error_rate", "stat", "5xx share (last minute)", "error_rate", width=3),
            panel("unique_visitors", "stat", "Visitors (last minute)", "visitors", width=3),
            panel("response_size", "stat", "p95 response bytes", "p95_bytes", width=3),
            panel("requests", "timeseries", "Requests per minute", "requests", width=8),
            panel(
                "status_mix",
                "pie",
                "Status classes (last minute)",
                "requests",
                group="status_class",
                width=4,
                **latest,
            ),
            panel(
                "status_mix",
                "timeseries",
                "Requests per status class",
                "requests",
                group="status_class",
            ),
            panel("error_rate", "timeseries", "Errors per minute", "errors_5xx", "errors_4xx"),
            panel(
                "response_size",
                "timeseries",
                "Response size (bytes)",
                "p50_bytes",
                "p95_bytes",
                "p99_bytes",
            ),
            panel("unique_visitors", "timeseries", "Visitors per minute", "visitors"),
            panel("top_paths", "bar", "Top paths (last minute)", "requests", x="path", **latest),
            panel(
                "top_clients",
                "table",
                "Top clients (last minute)",
                "client",
                "requests",
                "bytes",
                **latest,
            ),
        ),
    )


def ready_dashboards(streams: Mapping[str, Any]) -> dict[str, DashboardConfig]:
    """The ready-made dashboards of the streams (``StreamConfig``) with ``ready_queries``."""
    return dict(ready_dashboard(name) for name, st in streams.items() if st.ready_queries)
