"""The console's routes: its pages and static code, sign-in, ``POST /v1/sql``, and each page's API.

- ``GET /console`` and ``GET /console/{page}``: the one HTML page (the browser code picks the page
  from the path; the query string holds the page's state, so a view can be bookmarked).
- ``GET /console/static/...``: the console's own JavaScript modules and CSS (``static/``);
  ``GET /console/vendor/...``: chart code from the installed ``uplot-python`` package.
- ``GET|POST /console/login``, ``POST /console/logout``: with ``[auth] api_keys`` the console asks
  for a key once and keeps it for the browser session in an HttpOnly, SameSite=Strict cookie, which
  the auth middleware accepts like ``Authorization: Bearer``. The sign-in page is the only page
  served without a key (it holds no data).
- ``POST /v1/sql``: one read-only statement through the console's sandboxed query workers.
- each page's routes, from :data:`PAGES` (one module per page).

Every error is the server's one JSON shape; the pages show its message.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from loglake.errors import LoglakeError
from loglake.server.console.context import Console, sql_request
from loglake.server.console.encode import result_json
from loglake.server.console.pool import SqlPool
from loglake.server.errors import UnauthorizedError

if TYPE_CHECKING:
    from starlette.requests import Request

    from loglake.config import Config
    from loglake.server.runtime import Runtime

STATIC = Path(__file__).parent / "static"
#: The cookie the console keeps the API key in (see the module docstring).
KEY_COOKIE = "loglake_key"
#: The pages of the console, in the order of its navigation bar.
PAGE_NAMES = ("explore", "live", "notebooks", "catalog")


class NoSuchPageError(LoglakeError):
    """A console path that is not one of its pages (404)."""

    status = 404
    code = "not_found"


def _pages() -> dict[str, Callable[[Console], list[BaseRoute]]]:
    from loglake.server.console import catalog, dashboards, explore, notebooks

    return {
        "explore": explore.routes,
        "live": dashboards.routes,
        "notebooks": notebooks.routes,
        "catalog": catalog.routes,
    }


def routes(config: Config, runtime: Runtime) -> tuple[list[BaseRoute], SqlPool]:
    """The console's routes (none when ``console.enabled`` is false) and its query pool (closed by
    the caller at shutdown)."""
    pool = SqlPool(config)
    if not config.console.enabled:
        return [], pool
    console = Console(config, runtime, pool)

    async def page(request: Request) -> Response:
        name = request.path_params.get("page", "explore")
        if name not in PAGE_NAMES:
            raise NoSuchPageError(f"no console page {name!r}: pages are {', '.join(PAGE_NAMES)}")
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse((STATIC / "login.html").read_text(), headers=_NO_STORE)
        form = await console.json_body(request, '{"key": "..."}', 8 << 10)
        key = form.get("key") if isinstance(form, dict) else None
        keys = [k.encode() for k in config.auth.api_keys]
        if not isinstance(key, str) or not any(hmac.compare_digest(key.encode(), k) for k in keys):
            raise UnauthorizedError("wrong API key: use one of [auth] api_keys")
        reply = JSONResponse({"signed_in": True})
        reply.set_cookie(
            KEY_COOKIE,
            key.encode().hex(),  # hex: any key survives cookie quoting unchanged
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )  # no max-age: the browser forgets it when the session ends
        return reply

    async def logout(request: Request) -> Response:
        reply = RedirectResponse("/console/login", 303)
        reply.delete_cookie(KEY_COOKIE, path="/")
        return reply

    async def info(request: Request) -> Response:
        """What the page shows in its header: version, whether sign-in is on."""
        from loglake import __version__

        return JSONResponse(
            {
                "version": __version__,
                "auth": bool(config.auth.api_keys),
                "pages": list(PAGE_NAMES),
                "max_rows": config.console.max_rows,
            }
        )

    async def sql(request: Request) -> Response:
        """``{"sql": "...", "dialect": "duckdb"|"athena"|...}`` → the result in the console's JSON
        shape (at most ``console.max_rows`` rows; ``note`` says when it was cut)."""
        body = await console.json_body(request, '{"sql": "SELECT ..."}')
        statement, dialect = sql_request(body)
        result = await pool.arun(statement, dialect)
        return JSONResponse(result_json(result))

    mounted: list[BaseRoute] = [
        Route("/console", page),
        Route("/console/login", login, methods=["GET", "POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Mount("/console/static", app=StaticFiles(directory=STATIC), name="console-static"),
        Mount("/console/vendor", app=StaticFiles(directory=vendor_dir()), name="console-vendor"),
        Route("/console/{page}", page),
        Route("/v1/console", info),
        Route("/v1/sql", sql, methods=["POST"]),
    ]
    for build in _pages().values():
        mounted.extend(build(console))
    return mounted, pool


_NO_STORE = {"Cache-Control": "no-store"}


def vendor_dir() -> Path:
    """The folder of uPlot's browser code inside the installed ``uplot-python`` package."""
    try:
        folder = resources.files("uplot") / "static"
    except ModuleNotFoundError as exc:  # pragma: no cover - a dependency of loglake
        raise LoglakeError(
            "the console's charts need the uplot-python package: pip install uplot-python"
        ) from exc
    return Path(str(folder))
