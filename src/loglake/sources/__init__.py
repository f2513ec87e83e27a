"""Where records come from.

Batch sources (``loglake ingest``: files, folders, globs, stdin, ``s3://``) are registered below by
URI scheme and imported lazily. Live sources (``loglake serve``: ``http``, ``kinesis``,
``firehose``, ``syslog``, ``tail``), one module each, are registered in
:data:`loglake.sources.live.REGISTRY` behind the contract in ``live.py`` (see docs/sources.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loglake.config import Config
    from loglake.sources.base import Input

# scheme -> "module:function(spec, config) -> Iterator[Input]"
REGISTRY: dict[str, str] = {
    "s3": "loglake.sources.s3:list_inputs",
}


def list_inputs(spec: str, config: Config) -> Iterator[Input]:
    """The inputs a source spec names: ``s3://bucket/prefix``, a path, folder, glob, or ``-``."""
    scheme = spec.split("://", 1)[0] if "://" in spec else ""
    if scheme in REGISTRY:
        module, _, func = REGISTRY[scheme].partition(":")
        yield from getattr(importlib.import_module(module), func)(spec, config)
        return
    from loglake.sources.files import list_inputs as files

    yield from files(spec[7:] if scheme == "file" else spec)
