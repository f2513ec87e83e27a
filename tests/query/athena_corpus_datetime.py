"""Athena queries of the corpus that use date and time functions (see athena_corpus.py), over the
same rows; each expected answer was worked out independently of loglake."""

from __future__ import annotations

from typing import Any

#: (name, Athena SQL, expected rows)
CORPUS_DATETIME: list[tuple[str, str, list[tuple[Any, ...]]]] = []
