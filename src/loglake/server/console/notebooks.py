"""The console's notebooks: SQL and markdown paragraphs saved in the data home, and downloads of a
result.

A notebook is one JSON file, ``<home>/console/notebooks/<id>.json``, written atomically (a
temporary file in the same folder, fsynced, then renamed over the old one)::

    {"id": "3f2a9c0e6b1d4a57", "name": "Status codes", "revision": 4,
     "created": "2024-03-01T10:01:00Z", "updated": "2024-03-01T10:05:00Z",
     "paragraphs": [
        {"id": "p1", "kind": "markdown", "text": "# Status codes"},
        {"id": "p2", "kind": "sql", "text": "SELECT ...", "dialect": "duckdb",
         "view": "bar", "chart": {"x": "status", "y": "hits", "group": ""}}]}

Ids are made here (16 hex digits) and only an id of that form ever becomes a file name, so no id
or name can reach a path outside the folder. Results are not stored: a paragraph runs through
``POST /v1/sql`` each time (the lake changes between runs).

Routes:

- ``GET /v1/notebooks``: the notebooks, newest change first (name, paragraphs, times).
- ``POST /v1/notebooks``: create one (``{"name", "paragraphs"}``, or ``{"starter": true}`` for
  the starter notebook over ``logs.access``) → 201 and the notebook.
- ``POST /v1/notebooks/import``: create one from an export → 201 and the notebook.
- ``GET|PUT|DELETE /v1/notebooks/{id}``: read, replace (``{"name", "paragraphs", "revision"}``;
  a stale ``revision`` is 409), delete.
- ``POST /v1/notebooks/{id}/rename``: ``{"name"}``.
- ``GET /v1/notebooks/{id}/export``: the notebook as a JSON attachment that import takes back.
- ``GET|POST /v1/sql/download``: ``sql``, ``dialect``, ``format`` (``csv`` or ``json`` lines),
  from the query string, a form or a JSON body: the statement runs again and its rows stream as
  ``loglake query --format csv|json`` prints them (cut only by ``[query] max_rows`` and
  ``max_result_bytes``, never by ``[console] max_rows``; ``X-Loglake-Truncated`` says when).

Bounds (each a 4xx in the API's one error shape saying what to do): :data:`MAX_NOTEBOOK_BYTES`
per notebook, :data:`MAX_PARAGRAPHS` per notebook, :data:`MAX_NOTEBOOKS` in all,
:data:`MAX_NAME_CHARS` per name.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
import threading
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loglake.errors import LoglakeError
from loglake.server.errors import BadRequestError

if TYPE_CHECKING:
    import pyarrow as pa
    from starlette.requests import Request
    from starlette.routing import BaseRoute

    from loglake.server.console.context import Console

log = logging.getLogger("loglake.serve")

#: A notebook's stored JSON, at most (the paragraphs' text and settings; results are not stored).
MAX_NOTEBOOK_BYTES = 1 << 20
#: Paragraphs of one notebook, at most.
MAX_PARAGRAPHS = 200
#: Notebooks of one server, at most.
MAX_NOTEBOOKS = 1000
#: Characters of a notebook's name, at most.
MAX_NAME_CHARS = 120
#: Characters of a chart setting (a column name), at most.
MAX_COLUMN_CHARS = 256
#: Rows of one page of a download (one chunk of the streamed answer).
DOWNLOAD_PAGE_ROWS = 8192

KINDS = ("sql", "markdown")
VIEWS = ("table", "line", "bar", "area", "pie", "scatter")
PARAGRAPH_KEYS = ("id", "kind", "text", "dialect", "view", "chart")
CHART_KEYS = ("x", "y", "group")
EXPORT_FORMAT = "loglake-notebook"
EXPORT_VERSION = 1
DOWNLOAD_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "json": ("application/x-ndjson", "jsonl"),
}

_ID = re.compile(r"[0-9a-f]{16}")
_PARAGRAPH_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
# A request body may be larger than the stored notebook (JSON escapes, spacing): past this it is
# refused unread; below it, the stored size is checked and the answer says by how much it is over.
_BODY_LIMIT = 4 * MAX_NOTEBOOK_BYTES


class NoSuchNotebookError(LoglakeError):
    """A notebook id that names no notebook (404), including ids that are not of the form ids
    take (they cannot name one)."""

    status = 404
    code = "no_such_notebook"


class NotebookTooLargeError(LoglakeError):
    """A notebook over :data:`MAX_NOTEBOOK_BYTES` or :data:`MAX_PARAGRAPHS` (413)."""

    status = 413
    code = "notebook_too_large"


class TooManyNotebooksError(LoglakeError):
    """Creating a notebook when :data:`MAX_NOTEBOOKS` exist (409)."""

    status = 409
    code = "too_many_notebooks"


class NotebookChangedError(LoglakeError):
    """A save whose ``revision`` is not the stored one: someone saved in between (409)."""

    status = 409
    code = "notebook_changed"


class NotebookUnreadableError(LoglakeError):
    """A notebook file that is not a notebook's JSON (edited or damaged on disk) (500)."""

    code = "notebook_unreadable"


# -- validation ------------------------------------------------------------------------------------


def check_name(value: Any) -> str:
    """A notebook's name: text of 1 to :data:`MAX_NAME_CHARS` characters without control
    characters, trimmed; BadRequestError saying what to change otherwise."""
    if not isinstance(value, str):
        raise BadRequestError('"name" must be text, e.g. "Status codes"')
    name = value.strip()
    if not name:
        raise BadRequestError('"name" is empty: give the notebook a name')
    if len(name) > MAX_NAME_CHARS:
        raise BadRequestError(
            f'"name" has {len(name)} characters; a name has at most {MAX_NAME_CHARS}'
        )
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise BadRequestError('"name" holds control characters (newlines, tabs...): remove them')
    return name


def check_paragraphs(value: Any) -> list[dict[str, Any]]:
    """A notebook's paragraphs, each as stored (see the module docstring): missing ids are made,
    missing settings take their defaults; BadRequestError naming the paragraph and what to
    change for anything else, NotebookTooLargeError past :data:`MAX_PARAGRAPHS`."""
    from loglake.server.console.context import DIALECTS

    if not isinstance(value, list):
        raise BadRequestError('"paragraphs" must be a list of {"kind": "sql"|"markdown", "text"}')
    if len(value) > MAX_PARAGRAPHS:
        raise NotebookTooLargeError(
            f"the notebook has {len(value)} paragraphs; a notebook holds at most "
            f"{MAX_PARAGRAPHS}: split it into several notebooks"
        )
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, raw in enumerate(value, 1):
        where = f"paragraph {n}"
        if not isinstance(raw, dict):
            raise BadRequestError(f'{where} must be an object {{"kind": "sql", "text": "..."}}')
        unknown = sorted(set(raw) - set(PARAGRAPH_KEYS))
        if unknown:
            raise BadRequestError(
                f"{where}: unknown keys {', '.join(unknown)}; valid: {', '.join(PARAGRAPH_KEYS)}"
            )
        kind = raw.get("kind", "sql")
        if kind not in KINDS:
            raise BadRequestError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        text = raw.get("text", "")
        if not isinstance(text, str):
            raise BadRequestError(f'{where}: "text" must be text')
        pid = raw.get("id") or _paragraph_id()
        if not isinstance(pid, str) or not _PARAGRAPH_ID.fullmatch(pid):
            raise BadRequestError(f"{where}: id must be 1 to 40 letters, digits, - or _")
        if pid in seen:
            raise BadRequestError(f"{where}: id {pid!r} is used twice; ids are unique")
        seen.add(pid)
        paragraph: dict[str, Any] = {"id": pid, "kind": kind, "text": text}
        if kind == "sql":
            dialect = raw.get("dialect") or "duckdb"
            if dialect not in DIALECTS:
                raise BadRequestError(
                    f"{where}: unknown dialect {dialect!r}; valid: {', '.join(DIALECTS)}"
                )
            view = raw.get("view") or "table"
            if view not in VIEWS:
                raise BadRequestError(f"{where}: view {view!r} is not one of {', '.join(VIEWS)}")
            paragraph.update(
                dialect=dialect, view=view, chart=_check_chart(raw.get("chart"), where)
            )
        out.append(paragraph)
    return out


def _check_chart(value: Any, where: str) -> dict[str, str]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise BadRequestError(f'{where}: "chart" must be an object {{"x", "y", "group"}}')
    unknown = sorted(set(value) - set(CHART_KEYS))
    if unknown:
        raise BadRequestError(
            f"{where}: unknown chart keys {', '.join(unknown)}; valid: {', '.join(CHART_KEYS)}"
        )
    chart = {}
    for key in CHART_KEYS:
        column = value.get(key) or ""
        if not isinstance(column, str) or len(column) > MAX_COLUMN_CHARS:
            raise BadRequestError(
                f"{where}: chart {key} must be a column name of at most {MAX_COLUMN_CHARS} "
                "characters (or empty)"
            )
        chart[key] = column
    return chart


def _paragraph_id() -> str:
    return "p" + secrets.token_hex(4)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encoded(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, indent=1).encode()


# -- storage ---------------------------------------------------------------------------------------


class NotebookStore:
    """The notebooks of one data home, one JSON file each in ``folder`` (made on first write).

    Thread-safe: changes run one at a time under a lock (the count bound and the revision check
    hold across concurrent requests). Every method raises the errors of this module; a file that
    cannot be written raises OSError (a 500 the server logs).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        # id -> (mtime_ns, size, summary): listing parses only files that changed since.
        self._summaries: dict[str, tuple[int, int, dict[str, Any]]] = {}

    def path(self, nid: str) -> Path:
        """The file of notebook ``nid``; NoSuchNotebookError for an id that is not 16 hex digits
        (only those are ever made, and none of them can leave the folder)."""
        if not isinstance(nid, str) or not _ID.fullmatch(nid):
            raise NoSuchNotebookError(
                f"no notebook {nid[:80]!r}: ids are 16 hex digits, as GET /v1/notebooks lists them"
            )
        return self.folder / f"{nid}.json"

    def _ids(self) -> list[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return [n[:-5] for n in names if n.endswith(".json") and _ID.fullmatch(n[:-5])]

    def summaries(self) -> list[dict[str, Any]]:
        """A summary of every notebook (``id``, ``name``, ``paragraphs`` count, ``created``,
        ``updated``; ``problem`` for a file that cannot be read), newest change first."""
        with self._lock:  # the summary cache is shared by concurrent requests
            return self._summaries_locked()

    def _summaries_locked(self) -> list[dict[str, Any]]:
        out = []
        ids = self._ids()
        for nid in ids:
            try:
                st = (self.folder / f"{nid}.json").stat()
            except FileNotFoundError:
                continue  # deleted meanwhile
            cached = self._summaries.get(nid)
            if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
                out.append(cached[2])
                continue
            try:
                doc = self.get(nid)
                summary = {
                    "id": nid,
                    "name": doc["name"],
                    "paragraphs": len(doc["paragraphs"]),
                    "created": doc["created"],
                    "updated": doc["updated"],
                }
            except NoSuchNotebookError:
                continue
            except NotebookUnreadableError as exc:
                summary = {"id": nid, "name": nid, "paragraphs": 0, "created": "", "updated": ""}
                summary["problem"] = str(exc)
            self._summaries[nid] = (st.st_mtime_ns, st.st_size, summary)
            out.append(summary)
        for gone in set(self._summaries) - set(ids):
            self._summaries.pop(gone, None)
        out.sort(key=lambda s: (s["updated"], s["name"]), reverse=True)
        return out

    def get(self, nid: str) -> dict[str, Any]:
        """Notebook ``nid`` as stored; NoSuchNotebookError, or NotebookUnreadableError for a file
        that is not a notebook."""
        path = self.path(nid)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NoSuchNotebookError(
                f"no notebook {nid!r}: it was deleted, or never existed; GET /v1/notebooks "
                "lists them"
            ) from None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return {
                "id": nid,
                "name": check_name(doc.get("name")),
                "revision": int(doc.get("revision", 1)),
                "created": str(doc.get("created", "")),
                "updated": str(doc.get("updated", "")),
                "paragraphs": check_paragraphs(doc.get("paragraphs", [])),
            }
        except (ValueError, TypeError, LoglakeError) as exc:
            raise NotebookUnreadableError(
                f"the notebook file {path.name} in {self.folder} cannot be read ({exc}): "
                "restore it from an export, or delete the notebook"
            ) from None

    def create(self, name: str, paragraphs: list[dict[str, Any]]) -> dict[str, Any]:
        """A new notebook (``name`` and ``paragraphs`` already checked); TooManyNotebooksError
        when :data:`MAX_NOTEBOOKS` exist, NotebookTooLargeError when it is too large."""
        with self._lock:
            count = len(self._ids())
            if count >= MAX_NOTEBOOKS:
                raise TooManyNotebooksError(
                    f"there are {count} notebooks, the most a server keeps ({MAX_NOTEBOOKS}): "
                    "delete notebooks you no longer need (export them first to keep a copy)"
                )
            nid = secrets.token_hex(8)
            while (self.folder / f"{nid}.json").exists():  # pragma: no cover - 64 random bits
                nid = secrets.token_hex(8)
            now = _now()
            doc = {
                "id": nid,
                "name": name,
                "revision": 1,
                "created": now,
                "updated": now,
                "paragraphs": paragraphs,
            }
            self._write(doc)
            return doc

    def replace(
        self,
        nid: str,
        name: str | None,
        paragraphs: list[dict[str, Any]] | None,
        revision: int | None,
    ) -> dict[str, Any]:
        """Notebook ``nid`` with a new name and/or paragraphs (None: kept), at the next revision.
        NotebookChangedError when ``revision`` is given and is not the stored one."""
        with self._lock:
            doc = self.get(nid)
            if revision is not None and revision != doc["revision"]:
                raise NotebookChangedError(
                    f"the notebook was saved elsewhere (revision {doc['revision']}, yours "
                    f"{revision}): reload it to see those changes, or export yours first"
                )
            if name is not None:
                doc["name"] = name
            if paragraphs is not None:
                doc["paragraphs"] = paragraphs
            doc["revision"] += 1
            doc["updated"] = _now()
            self._write(doc)
            return doc

    def delete(self, nid: str) -> None:
        """Remove notebook ``nid``; NoSuchNotebookError when there is none."""
        path = self.path(nid)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                raise NoSuchNotebookError(f"no notebook {nid!r}: it was already deleted") from None
            self._summaries.pop(nid, None)
            _sync_folder(self.folder)

    def _write(self, doc: dict[str, Any]) -> None:
        data = _encoded(doc)
        if len(data) > MAX_NOTEBOOK_BYTES:
            raise NotebookTooLargeError(
                f"the notebook is {len(data):,} bytes; a notebook holds at most "
                f"{MAX_NOTEBOOK_BYTES:,} bytes of text: split it into several notebooks"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(doc["id"])
        # Atomic: readers see the old file or the new one, never half of one, even after a crash.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _sync_folder(self.folder)


def _sync_folder(folder: Path) -> None:
    """fsync ``folder`` so that a rename or removal in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the starter notebook --------------------------------------------------------------------------

STARTER_NAME = "Getting started with logs.access"


def starter_paragraphs() -> list[dict[str, Any]]:
    """The starter notebook: a few questions over ``logs.access`` with a chart each."""
    return check_paragraphs(
        [
            {
                "kind": "markdown",
                "text": (
                    "# Getting started\n"
                    "A notebook is **SQL paragraphs** with *markdown* between them. Press "
                    "`Ctrl+Enter` in a paragraph to run it, or **Run all**.\n\n"
                    "- each result shows as a table or a chart: pick the view, then x, y and "
                    "group by among the result's columns\n"
                    "- a paragraph's dialect is DuckDB or Athena (Presto/Trino SQL)\n"
                    "- **CSV** and **JSON lines** download a result's every row"
                ),
            },
            {
                "kind": "sql",
                "text": (
                    "-- requests per hour, by status class\n"
                    "SELECT time_bucket(INTERVAL 1 HOUR, ts) AS hour,\n"
                    "       (status // 100) || 'xx' AS class,\n"
                    "       count(*) AS requests\n"
                    "FROM logs.access\n"
                    "WHERE ts >= now() - INTERVAL 2 DAY\n"
                    "GROUP BY ALL\n"
                    "ORDER BY hour"
                ),
                "view": "line",
                "chart": {"x": "hour", "y": "requests", "group": "class"},
            },
            {
                "kind": "sql",
                "text": (
                    "-- the ten most requested paths\n"
                    "SELECT path, count(*) AS requests\n"
                    "FROM logs.access\n"
                    "GROUP BY path\n"
                    "ORDER BY requests DESC\n"
                    "LIMIT 10"
                ),
                "view": "bar",
                "chart": {"x": "path", "y": "requests", "group": ""},
            },
            {
                "kind": "sql",
                "text": (
                    "-- share of each status class\n"
                    "SELECT (status // 100) || 'xx' AS class, count(*) AS requests\n"
                    "FROM logs.access\n"
                    "GROUP BY ALL\n"
                    "ORDER BY class"
                ),
                "view": "pie",
                "chart": {"x": "class", "y": "requests", "group": ""},
            },
            {
                "kind": "markdown",
                "text": "## Athena SQL\nThe same lake in Athena's (Presto's) dialect:",
            },
            {
                "kind": "sql",
                "dialect": "athena",
                "text": (
                    "SELECT date_format(ts, '%Y-%m-%d') AS day, method,\n"
                    "       count(*) AS requests, approx_distinct(client) AS clients\n"
                    "FROM logs.access\n"
                    "GROUP BY 1, 2\n"
                    "ORDER BY 1, 2"
                ),
                "view": "table",
            },
        ]
    )


# -- routes ----------------------------------------------------------------------------------------


def routes(console: Console) -> list[BaseRoute]:
    """The notebooks' API and downloads (see the module docstring)."""
    store = NotebookStore(console.config.home / "console" / "notebooks")

    async def body(request: Request, what: str) -> dict[str, Any]:
        from loglake.sources.http_body import read_decoded

        raw = await read_decoded(
            request,
            _BODY_LIMIT,
            console.config.server.body_timeout_s,
            f"a notebook holds at most {MAX_NOTEBOOK_BYTES:,} bytes",
        )
        try:
            value = json.loads(raw or b"null")
        except RecursionError:
            raise BadRequestError(f"the body is nested too deeply; send {what}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequestError(f"the body must be JSON ({what}): {exc}") from None
        if not isinstance(value, dict):
            raise BadRequestError(f"the body must be a JSON object: {what}")
        return value

    def only(value: dict[str, Any], keys: tuple[str, ...]) -> None:
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise BadRequestError(f"unknown keys {', '.join(unknown)}; valid: {', '.join(keys)}")

    async def listing(request: Request) -> Response:
        notebooks = await run_in_threadpool(store.summaries)
        return JSONResponse({"notebooks": notebooks, "max_notebooks": MAX_NOTEBOOKS})

    async def create(request: Request) -> Response:
        value = await body(request, '{"name": "...", "paragraphs": [...]} or {"starter": true}')
        only(value, ("name", "paragraphs", "starter"))
        if value.get("starter"):
            name = check_name(value.get("name") or STARTER_NAME)
            paragraphs = starter_paragraphs()
        else:
            name = check_name(value.get("name", "Untitled"))
            paragraphs = check_paragraphs(value.get("paragraphs", [{"kind": "sql"}]))
        doc = await run_in_threadpool(store.create, name, paragraphs)
        return JSONResponse(doc, status_code=201)

    async def import_(request: Request) -> Response:
        value = await body(request, "a notebook as GET /v1/notebooks/{id}/export gives it")
        if value.get("format") != EXPORT_FORMAT:
            raise BadRequestError(
                f'this is not an exported notebook (no "format": "{EXPORT_FORMAT}"): import a '
                "file that GET /v1/notebooks/{id}/export (Export JSON) saved"
            )
        if value.get("version") != EXPORT_VERSION:
            raise BadRequestError(
                f"export version {value.get('version')!r} is not one this server reads "
                f"({EXPORT_VERSION}): export it again from a loglake of this version"
            )
        only(value, ("format", "version", "name", "exported", "paragraphs"))
        name = check_name(value.get("name"))
        paragraphs = check_paragraphs(value.get("paragraphs", []))
        doc = await run_in_threadpool(store.create, name, paragraphs)
        return JSONResponse(doc, status_code=201)

    async def one(request: Request) -> Response:
        nid = request.path_params["id"]
        if request.method == "GET":
            return JSONResponse(await run_in_threadpool(store.get, nid))
        if request.method == "DELETE":
            await run_in_threadpool(store.delete, nid)
            return JSONResponse({"deleted": nid})
        store.path(nid)  # a 404 for a bad id before reading its body
        value = await body(request, '{"name": "...", "paragraphs": [...], "revision": 3}')
        only(value, ("name", "paragraphs", "revision"))
        name = check_name(value["name"]) if "name" in value else None
        paragraphs = check_paragraphs(value["paragraphs"]) if "paragraphs" in value else None
        revision = value.get("revision")
        if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool)):
            raise BadRequestError('"revision" must be the whole number the notebook was read at')
        doc = await run_in_threadpool(store.replace, nid, name, paragraphs, revision)
        return JSONResponse(doc)

    async def rename(request: Request) -> Response:
        nid = request.path_params["id"]
        store.path(nid)
        value = await body(request, '{"name": "..."}')
        only(value, ("name",))
        doc = await run_in_threadpool(store.replace, nid, check_name(value.get("name")), None, None)
        return JSONResponse(doc)

    async def export(request: Request) -> Response:
        doc = await run_in_threadpool(store.get, request.path_params["id"])
        exported = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "name": doc["name"],
            "exported": _now(),
            "paragraphs": doc["paragraphs"],
        }
        return Response(
            _encoded(exported),
            media_type="application/json",
            headers={"Content-Disposition": _attachment(doc["name"], "loglake-notebook.json")},
        )

    async def download(request: Request) -> Response:
        statement, dialect, fmt, name = await download_request(request, console)
        query = console.config.query
        # The download's own limits are [query]'s, as for `loglake query`: not [console] max_rows.
        result = await console.pool.arun(statement, dialect, max_rows=query.max_rows)
        media, ext = DOWNLOAD_FORMATS[fmt]
        headers = {
            "Content-Disposition": _attachment(name, ext),
            "X-Loglake-Rows": str(result.table.num_rows),
            "Cache-Control": "no-store",
        }
        if result.truncated:
            limit = "max_rows" if result.cut_by == "rows" else "max_result_bytes"
            headers["X-Loglake-Truncated"] = f"[query] {limit}"
        from loglake.query.output import chunks

        return StreamingResponse(
            chunks(pages(result.table), fmt), media_type=media, headers=headers
        )

    return [
        Route("/v1/notebooks", listing, methods=["GET"]),
        Route("/v1/notebooks", create, methods=["POST"]),
        Route("/v1/notebooks/import", import_, methods=["POST"]),
        Route("/v1/notebooks/{id}", one, methods=["GET", "PUT", "DELETE"]),
        Route("/v1/notebooks/{id}/rename", rename, methods=["POST"]),
        Route("/v1/notebooks/{id}/export", export, methods=["GET"]),
        Route("/v1/sql/download", download, methods=["GET", "POST"]),
    ]


def pages(table: pa.Table) -> Iterator[pa.Table]:
    """``table`` in slices of :data:`DOWNLOAD_PAGE_ROWS` rows (no copy): one chunk each."""
    for start in range(0, table.num_rows, DOWNLOAD_PAGE_ROWS):
        yield table.slice(start, DOWNLOAD_PAGE_ROWS)


async def download_request(request: Request, console: Console) -> tuple[str, str | None, str, str]:
    """The statement, dialect (None for DuckDB), format and file name of a download, from the
    query string (GET), a form or a JSON body (POST); BadRequestError saying what is missing."""
    from loglake.server.console.context import sql_request
    from loglake.sources.http_body import read_decoded

    if request.method == "GET":
        fields: dict[str, Any] = dict(request.query_params)
    else:
        raw = await read_decoded(request, 1 << 20, console.config.server.body_timeout_s)
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                fields = json.loads(raw or b"null")
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise BadRequestError(f"the body must be JSON: {exc}") from None
            if not isinstance(fields, dict):
                raise BadRequestError('the body must be {"sql": "...", "format": "csv"}')
        else:
            try:
                parsed = parse_qs(raw.decode(), keep_blank_values=True, max_num_fields=10)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequestError(f"the form must be sql=...&format=csv: {exc}") from None
            fields = {k: v[-1] for k, v in parsed.items()}
    fmt = fields.pop("format", "csv") or "csv"
    if not isinstance(fmt, str) or fmt not in DOWNLOAD_FORMATS:
        raise BadRequestError(f"format {fmt!r}: use csv or json (JSON lines)")
    name = fields.pop("name", "") or "result"
    if not isinstance(name, str):
        raise BadRequestError('"name" (of the downloaded file) must be text')
    statement, dialect = sql_request(fields)
    return statement, dialect, fmt, name


def _attachment(name: str, ext: str) -> str:
    """A Content-Disposition for a file named after ``name`` (plain characters only)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "notebook"
    return f'attachment; filename="{stem}.{ext}"'
