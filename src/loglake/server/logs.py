"""The logs of ``loglake serve``: one line per event on stderr, JSON (default) or text.

Structured fields travel with a log call as ``extra={"fields": {...}}``, a plain dict, so any module
can add them without importing this one::

    log.warning("append to stream %s failed: %s", name, exc,
                extra={"fields": {"stream": name, "reason": str(exc)}})

In JSON each event is one object: ``ts`` (UTC, milliseconds, ``Z``), ``level``, ``logger``, ``msg``
(the formatted message), the fields at the top level, and ``exc`` (the traceback) when the call
carried one. A field named like one of those keys is written with a trailing ``_`` (``msg_``) rather
than replace it. In text each event is ``TIME LEVEL LOGGER: MESSAGE key=value ...``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from loglake.config import LOG_FORMATS, LOG_LEVELS

_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})
# Loggers of our own and uvicorn's server messages: shown at the configured level. Everything else
# (third-party libraries) reaches the root logger and is shown from WARNING on, in the same format.
_OWN = ("loglake", "uvicorn.error")


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per event (see the module docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            event[f"{key}_" if key in _RESERVED else str(key)] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exc"] = record.exc_text
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        try:
            return _json(event)
        except (TypeError, ValueError):  # a field value JSON cannot hold (NaN, odd dict keys)
            return _json({k: v if _fits(v) else repr(v) for k, v in event.items()})


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)


def _fits(value: Any) -> bool:
    try:
        _json(value)
    except (TypeError, ValueError):
        return False
    return True


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE key=value ...``; a traceback follows on the next lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record.created)} {record.levelname.lower()} {record.name}: "
            f"{record.getMessage()}"
        )
        pairs = [f"{key}={_text_value(value)}" for key, value in _fields(record).items()]
        if pairs:
            line += " " + " ".join(pairs)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return _dump(value)


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


class _Handler(logging.StreamHandler[IO[str]]):
    """Marks the handler installed here, so configuring again replaces it instead of adding one."""


def configure_logging(fmt: str, level: str, stream: IO[str] | None = None) -> None:
    """Send loglake's and uvicorn's server logs to ``stream`` (default stderr) as ``fmt`` lines.

    ``fmt`` is ``json`` or ``text``, ``level`` one of ``debug``, ``info``, ``warning``, ``error``
    (``server.log_format`` / ``server.log_level``, validated with the config). Called once by
    ``loglake serve`` before the server starts; calling it again replaces the handler. Other
    libraries' logs are shown from WARNING on, in the same format, and an exception that ends a
    thread is logged as an ERROR event instead of a bare traceback.
    Raises ValueError for an unknown format or level.
    """
    if fmt not in LOG_FORMATS or level not in LOG_LEVELS:
        raise ValueError(f"log format {fmt!r} / level {level!r}: see {LOG_FORMATS}, {LOG_LEVELS}")
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in (*_OWN, ""):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)
        if name:
            logger.setLevel(level.upper())
            logger.propagate = False
        else:
            logger.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    # uvicorn's access log stays off: every request would be a line (use /metrics for counts).
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    threading.excepthook = _log_thread_crash


_crash_log = logging.getLogger("loglake.serve")


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    """A thread ended by an exception (a delivery that cannot commit): one ERROR event."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc = args.exc_value if args.exc_value is not None else args.exc_type()
    _crash_log.error(
        "thread %s stopped by an error: %s",
        name,
        exc,
        exc_info=(args.exc_type, exc, args.exc_traceback),
        extra={"fields": {"thread": name, "reason": f"{args.exc_type.__name__}: {exc}"}},
    )
