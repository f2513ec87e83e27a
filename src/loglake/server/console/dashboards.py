"""The console's Live page: dashboards of continuous queries, where they are kept, and their API.

Dashboards come from three places (:func:`all_dashboards`), in this order of precedence:

- ``[dashboards.NAME]`` of the config file: read-only in the page (``source: "config"``), as
  Grafana's provisioned dashboards are; the page offers "save as copy".
- the ready-made dashboard of each stream with ``ready_queries = true`` (``source: "ready"``,
  read-only, named ``<stream>_access``), shown by default when there is one;
- dashboards saved from the page (``source: "saved"``): one JSON file each,
  ``$LOGLAKE_HOME/console/dashboards/NAME.json``, written atomically (:class:`DashboardStore`).

Routes:

- ``GET /v1/console/dashboards``: every dashboard (name, title, source, panels) and the default.
- ``GET|PUT|DELETE /v1/console/dashboards/{name}``: one dashboard; PUT takes
  ``{"title", "description", "panels": [...]}`` (the keys of ``[dashboards.NAME]``, checked by the
  same strict parser) and answers 201 when it created one, 200 when it replaced one.
- ``GET /v1/console/live/events?query=A&query=B``: the new result rows of several continuous
  queries on one Server-Sent Events stream (``event: result``, ``data: {"query", "rows"}``): a
  dashboard with many queries needs one connection, not one per query (browsers open at most six
  to a host over HTTP/1.1, and the page's other requests would wait behind them).
- ``GET /v1/console/live/history?query=NAME&windows=N``: the newest N windows of a query from its
  results table in the lake (latest revision, retracted ones left out), for a dashboard opened
  after a restart, when the server's in-memory results (``/v1/queries/NAME/results``) are short.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loglake.config.dashboards import (
    DASHBOARD_NAME,
    DASHBOARD_NAME_RULE,
    MAX_PANELS,
    MAX_WINDOWS,
    DashboardConfig,
    dashboard_config,
    ready_dashboards,
)
from loglake.errors import ConfigError, LoglakeError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.routing import BaseRoute

    from loglake.server.console.context import Console

MAX_SAVED = 500  # dashboards saved from the page
BODY_LIMIT = 64 << 10  # one dashboard: 24 panels of a few settings each
EVENTS_QUEUE = 200  # result batches waiting per subscriber; a slower page loses the oldest
HEARTBEAT_S = 15.0
SOURCES = ("config", "ready", "saved")


class NoSuchDashboardError(LoglakeError):
    """A dashboard name that is neither in the config file nor saved (404)."""

    status = 404
    code = "no_such_dashboard"


class ReadOnlyDashboardError(LoglakeError):
    """Saving over or deleting a dashboard of the config file or a ready-made one (409)."""

    status = 409
    code = "read_only"


class TooManyDashboardsError(LoglakeError):
    """Saving one more dashboard than :data:`MAX_SAVED` (409)."""

    status = 409
    code = "too_many_dashboards"


class DashboardStore:
    """The dashboards saved from the page: ``<home>/console/dashboards/NAME.json``.

    Each file holds one dashboard's settings as JSON and is replaced atomically (written to a
    temporary file in the same folder, flushed to disk, renamed over the old one), so a crash
    leaves the old version or the new one, never half of one. A file that no longer parses (edited
    by hand) is reported, not dropped: :meth:`load` raises ConfigError naming the file.
    """

    def __init__(self, home: Path) -> None:
        self.folder = home / "console" / "dashboards"
        self._lock = (
            threading.Lock()
        )  # saves take turns: the count check and the write are one step

    def names(self) -> list[str]:
        """The names of the saved dashboards, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.folder.glob("*.json")
            if p.is_file() and DASHBOARD_NAME.fullmatch(p.stem)
        )

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def load(self, name: str) -> DashboardConfig:
        """The saved dashboard ``name``; NoSuchDashboardError when there is none, ConfigError when
        its file is not a valid dashboard."""
        path = self.path(name)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NoSuchDashboardError(f"no dashboard {name!r}") from None
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(
                f"saved dashboard {path} is not valid JSON ({exc}); fix or delete the file"
            ) from exc
        try:
            return dashboard_config(name, raw)
        except ConfigError as exc:
            raise ConfigError(f"saved dashboard {path}: {exc}; fix or delete the file") from exc

    def save(self, name: str, dashboard: DashboardConfig) -> bool:
        """Write ``dashboard`` as ``name``; True when it is new. TooManyDashboardsError beyond
        :data:`MAX_SAVED`."""
        with self._lock:
            path = self.path(name)
            created = not path.exists()
            if created and len(self.names()) >= MAX_SAVED:
                raise TooManyDashboardsError(
                    f"{MAX_SAVED} dashboards are saved already; delete one you no longer need"
                )
            self.folder.mkdir(parents=True, exist_ok=True)
            data = json.dumps(dashboard.as_json(), indent=2, ensure_ascii=False).encode()
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(self.folder)  # the rename itself survives a crash
            return created

    def delete(self, name: str) -> None:
        """Remove the saved dashboard ``name``; NoSuchDashboardError when there is none."""
        with self._lock:
            try:
                self.path(name).unlink()
            except FileNotFoundError:
                raise NoSuchDashboardError(f"no saved dashboard {name!r}") from None
            _fsync_dir(self.folder)

    def modified(self, name: str) -> str | None:
        """When the file was last written (ISO 8601, UTC), or None."""
        try:
            mtime = self.path(name).stat().st_mtime
        except OSError:
            return None
        return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def provided(console: Console) -> dict[str, tuple[str, DashboardConfig]]:
    """The read-only dashboards: name -> (source, settings); the config file's win over ready ones."""
    out: dict[str, tuple[str, DashboardConfig]] = {
        name: ("ready", d) for name, d in ready_dashboards(console.config.streams).items()
    }
    out.update({name: ("config", d) for name, d in console.config.dashboards.items()})
    return out


def checked_name(name: str) -> str:
    """``name`` if it is a valid dashboard name; ConfigError (400) saying the rule if not."""
    if not DASHBOARD_NAME.fullmatch(name):
        raise ConfigError(f"dashboard name {name[:100]!r}: use {DASHBOARD_NAME_RULE}")
    return name


def describe(
    name: str, source: str, dashboard: DashboardConfig, modified: str | None = None
) -> dict[str, Any]:
    """A dashboard as the API answers it."""
    return {
        "name": name,
        "source": source,
        "read_only": source != "saved",
        "modified": modified,
        **dashboard.as_json(),
    }


def routes(console: Console) -> list[BaseRoute]:
    """The routes of the Live page's API (see the module docstring)."""
    store = DashboardStore(console.config.home)

    def listing() -> dict[str, Any]:
        fixed = provided(console)
        items: list[dict[str, Any]] = []
        for name, (source, d) in fixed.items():
            items.append(
                {
                    "name": name,
                    "title": d.title or name,
                    "source": source,
                    "panels": len(d.panels),
                    "read_only": True,
                }
            )
        for name in store.names():
            if name in fixed:
                continue  # the config file's dashboard of that name wins
            item: dict[str, Any] = {"name": name, "source": "saved", "read_only": False}
            try:
                d = store.load(name)
                item.update(title=d.title or name, panels=len(d.panels))
            except ConfigError as exc:
                item.update(title=name, panels=0, error=str(exc))
            item["modified"] = store.modified(name)
            items.append(item)
        items.sort(key=lambda i: (SOURCES.index(i["source"]), i["name"]))
        ready = [i["name"] for i in items if i["source"] == "ready"]
        default = ready[0] if ready else (items[0]["name"] if items else None)
        return {
            "dashboards": items,
            "default": default,
            "max_panels": MAX_PANELS,
            "max_saved": MAX_SAVED,
        }

    async def list_dashboards(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(listing))

    async def dashboard(request: Request) -> Response:
        name = checked_name(request.path_params["name"])
        fixed = provided(console)
        if request.method == "GET":
            if name in fixed:
                return JSONResponse(describe(name, *fixed[name]))
            d = await run_in_threadpool(store.load, name)
            return JSONResponse(describe(name, "saved", d, store.modified(name)))
        if name in fixed:
            source = fixed[name][0]
            where = "the config file" if source == "config" else "the ready-made queries"
            raise ReadOnlyDashboardError(
                f"dashboard {name!r} comes from {where} and is read-only here; "
                + ("change it in the config file, or " if source == "config" else "")
                + "save a copy under another name"
            )
        if request.method == "DELETE":
            await run_in_threadpool(store.delete, name)
            return JSONResponse({"deleted": name})
        body = await console.json_body(
            request, "a dashboard: title, description, panels", BODY_LIMIT
        )
        d = dashboard_config(name, body)
        created = await run_in_threadpool(store.save, name, d)
        return JSONResponse(
            describe(name, "saved", d, store.modified(name)), 201 if created else 200
        )

    async def live_events(request: Request) -> Response:
        """One Server-Sent Events stream for the new result rows of several queries."""
        from loglake.server.errors import BadRequestError

        names = list(dict.fromkeys(request.query_params.getlist("query")))
        if not names:
            raise BadRequestError("name the queries to follow: ?query=NAME&query=OTHER")
        if len(names) > MAX_PANELS:
            raise BadRequestError(f"{len(names)} queries; follow at most {MAX_PANELS} at once")
        running = console.runtime.running_queries()
        found = {n: running[n][1] for n in names if n in running}
        loop = asyncio.get_running_loop()
        merged: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = asyncio.Queue(EVENTS_QUEUE)
        queues: dict[str, asyncio.Queue[list[dict[str, Any]]]] = {}
        for name, q in found.items():
            queues[name] = asyncio.Queue(EVENTS_QUEUE)
            q.subscribe(loop, queues[name])

        async def forward(name: str, queue: asyncio.Queue[list[dict[str, Any]]]) -> None:
            while True:
                rows = await queue.get()
                if merged.full():
                    merged.get_nowait()  # a page that reads too slowly loses the oldest batch
                merged.put_nowait((name, rows))

        async def events() -> AsyncIterator[bytes]:
            from loglake.analytics.alerts import json_value
            from loglake.server.events import items as events_of

            tasks = [asyncio.ensure_future(forward(n, qu)) for n, qu in queues.items()]
            try:
                hello = {"queries": list(found), "missing": [n for n in names if n not in found]}
                yield b"event: hello\ndata: " + json.dumps(hello).encode() + b"\n\n"
                async for item in events_of(merged, HEARTBEAT_S):
                    if item is None:
                        yield b": keep-alive\n\n"
                        continue
                    name, rows = item
                    data = {"query": name, "rows": json_value(rows)}
                    yield b"event: result\ndata: " + _compact(data) + b"\n\n"
            finally:
                for task in tasks:
                    task.cancel()
                for name, q in found.items():
                    q.unsubscribe(queues[name])

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def live_history(request: Request) -> Response:
        """The newest ``windows`` windows of a query's results table (latest revisions)."""
        from loglake.server.runtime import NoSuchQueryError

        name = request.query_params.get("query", "")
        found = console.runtime.running_queries().get(name)
        if found is None:
            raise NoSuchQueryError(
                f"continuous query {name[:100]!r} does not exist; see GET /v1/queries"
            )
        q = found[1]
        windows = _windows(request.query_params.get("windows", "60"))
        rows, truncated = await history(console, q.table, windows, bool(q.spec.key))
        return JSONResponse({"query": name, "table": q.table, "rows": rows, "truncated": truncated})

    return [
        Route("/v1/console/dashboards", list_dashboards),
        Route("/v1/console/dashboards/{name}", dashboard, methods=["GET", "PUT", "DELETE"]),
        Route("/v1/console/live/events", live_events),
        Route("/v1/console/live/history", live_history),
    ]


def _windows(text: str) -> int:
    from loglake.server.errors import BadRequestError

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WINDOWS:
        raise BadRequestError(f"?windows={text[:50]!r}: use a whole number from 1 to {MAX_WINDOWS}")
    return value


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


async def history(
    console: Console, table: str, windows: int, keyed: bool
) -> tuple[list[dict[str, Any]], bool]:
    """The rows of the newest ``windows`` windows of the results table ``table``, each window at its
    latest revision, retracted windows left out, oldest first ([] before the first window), and
    whether they were cut at ``console.max_rows``."""
    from loglake.analytics.alerts import json_value
    from loglake.sqltext import qualified

    def exists() -> bool:
        return bool(console.runtime.catalog.result().table_exists(table))

    if not await run_in_threadpool(exists):
        return [], False
    t = qualified(table)
    by = "window_start, window_key" if keyed else "window_start"
    sql = (
        f"WITH newest AS (SELECT DISTINCT window_start FROM {t} "
        f"ORDER BY window_start DESC LIMIT {int(windows)}) "
        f"SELECT * FROM {t} WHERE window_start IN (SELECT window_start FROM newest) "
        f"QUALIFY revision = max(revision) OVER (PARTITION BY {by}) AND NOT retracted "
        "ORDER BY window_start"
    )
    result = await console.pool.arun(sql)
    return [json_value(row) for row in result.table.to_pylist()], bool(result.truncated)
