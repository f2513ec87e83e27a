"""Local inputs: files, folders (recursively), glob patterns, and ``-`` for standard input."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from loglake.errors import SourceError
from loglake.sources.base import Input


def _file_input(path: Path) -> Input:
    st = path.stat()
    resolved = str(path.resolve())

    def opener() -> BinaryIO:
        return open(resolved, "rb")

    return Input(
        name=str(path), key=resolved, size=st.st_size, version=str(st.st_mtime_ns), open=opener
    )


def list_inputs(spec: str) -> Iterator[Input]:
    """Inputs named by ``spec``: a file, a folder (all files below it, sorted), a glob, or ``-``.

    Raises :class:`SourceError` when nothing matches, so a typo never ingests silently nothing.
    """
    if spec == "-":
        yield Input(name="stdin", key="stdin", size=None, version="", open=lambda: sys.stdin.buffer)
        return
    path = Path(spec).expanduser()
    if path.is_file():
        yield _file_input(path)
        return
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not found:
            raise SourceError(f"folder {spec} holds no files")
        for p in found:
            yield _file_input(p)
        return
    matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
    files = [Path(m) for m in matches if Path(m).is_file()]
    if not files:
        raise SourceError(f"no such file, folder or glob match: {spec}")
    for p in files:
        yield _file_input(p)
