"""The one root error type of loglake and its domain subclasses.

Every message says what happened and how to fix it; the CLI prints ``str(error)`` without a traceback
and exits non-zero; the HTTP API renders it in its one JSON error shape with the class's ``status``
and ``code``. ``transient`` says whether the same operation may pass when retried (a stream consumer
backs off and retries those; others are tied to the data and are rejected instead).
"""

from __future__ import annotations

import sqlite3


class LoglakeError(Exception):
    """Root of every error loglake raises on purpose (bad input, bad config, refused SQL...)."""

    exit_code = 1
    status = 500  # the HTTP status the API answers with
    code = "internal"  # the machine-readable ``error.code`` of the API's JSON shape
    transient = False  # retrying the same operation may succeed
    retry_after: float | None = None  # seconds a client should wait before retrying, if known

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the API answers this error with: ``Retry-After`` when ``retry_after`` is
        set (whole seconds, at least 1); subclasses add their own."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class ConfigError(LoglakeError):
    """The configuration (file, environment or options) is invalid; the message names the key."""

    exit_code = 2
    status = 400
    code = "invalid_request"


class FormatError(LoglakeError):
    """A log format name or format string is unknown or cannot be compiled."""

    exit_code = 2
    status = 400
    code = "invalid_request"


class SourceError(LoglakeError):
    """An input (file, folder, glob, S3 prefix, stdin) cannot be found or read."""

    status = 400
    code = "source_error"


class LakeError(LoglakeError):
    """The catalog or a table cannot be reached, created or written."""

    code = "lake_error"


class FencedError(LakeError):
    """A stream commit found the stream's offset in the table moved since this writer last saw
    it: another node committed those records. Nothing of this commit landed; delivery resumes
    from the lake (transient: the retry succeeds)."""

    code = "fenced"
    transient = True


class NoSuchTableError(LakeError):
    """A query or command names a table the catalog does not have."""

    status = 404
    code = "no_such_table"


class QueryError(LoglakeError):
    """User SQL failed: syntax, binding or run-time error reported by the engine."""

    status = 400
    code = "invalid_query"


class QueryRefusedError(QueryError):
    """User SQL was refused by the sandbox (not a read statement, file access outside the lake...)."""

    status = 403
    code = "query_refused"


class NoSuchStreamError(LoglakeError):
    """A request names a stream that does not exist (HTTP 404)."""

    status = 404
    code = "no_such_stream"


class TooManyStreamsError(LoglakeError):
    """Creating a stream would pass ``server.max_streams`` (HTTP 409)."""

    status = 409
    code = "too_many_streams"


class StreamBusyError(LoglakeError):
    """A stream cannot be deleted (or re-created) now; the message says why and what to do (409)."""

    status = 409
    code = "stream_busy"


class ConsoleBusyError(LoglakeError):
    """Every console query worker stayed busy past ``console.queue_timeout_s`` (HTTP 503)."""

    status = 503
    code = "busy"
    transient = True
    retry_after = 2.0


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) may pass on a retry: a transient
    :class:`LoglakeError`, disk, network, a locked or concurrently changed catalog. Anything else is
    taken as tied to the data (retrying would fail again). A LoglakeError that is not transient
    itself may wrap one that is (a commit refused because another writer won the race)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, LoglakeError) and cause.transient:
            return True
        if isinstance(cause, OSError | TimeoutError | sqlite3.OperationalError):
            return True
        if type(cause).__name__ in _TRANSIENT_NAMES:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


# pyiceberg's errors for a commit that lost a race or a catalog that did not answer (matched by
# name: importing pyiceberg here would slow every import of loglake).
_TRANSIENT_NAMES = frozenset(
    {"CommitFailedException", "CommitStateUnknownException", "ServiceUnavailableError"}
)
