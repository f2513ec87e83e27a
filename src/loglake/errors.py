"""The one root error type of loglake and its domain subclasses.

Every message says what happened and how to fix it; the CLI prints ``str(error)`` without a traceback
and exits non-zero, the HTTP API (later) turns it into one JSON error shape.
"""

from __future__ import annotations


class LoglakeError(Exception):
    """Root of every error loglake raises on purpose (bad input, bad config, refused SQL...)."""

    exit_code = 1


class ConfigError(LoglakeError):
    """The configuration (file, environment or options) is invalid; the message names the key."""

    exit_code = 2


class FormatError(LoglakeError):
    """A log format name or format string is unknown or cannot be compiled."""

    exit_code = 2


class SourceError(LoglakeError):
    """An input (file, folder, glob, S3 prefix, stdin) cannot be found or read."""


class LakeError(LoglakeError):
    """The catalog or a table cannot be reached, created or written."""


class NoSuchTableError(LakeError):
    """A query or command names a table the catalog does not have."""


class QueryError(LoglakeError):
    """User SQL failed: syntax, binding or run-time error reported by the engine."""


class QueryRefusedError(QueryError):
    """User SQL was refused by the sandbox (not a read statement, file access outside the lake...)."""
