"""Whether a group of an Athena ``regexp_extract`` can take no part in a match.

Athena (Trino) answers ``regexp_extract(s, pattern, n)`` with NULL when group ``n`` took no part in
the match (``(\\d+)?`` over a line without digits), and ``''`` when it matched nothing. DuckDB's
``regexp_extract`` (RE2) answers ``''`` for both. :func:`group_shape` reads the pattern's structure
(with Python's own regular-expression parser: the same grouping syntax) and says which case a query
is in:

- ``"always"``: the group is in no alternative and under no quantifier that allows zero times, so it
  takes part in every match; DuckDB's answer is Athena's.
- ``"nonempty"``: the group may take no part, but whenever it does it holds at least one character;
  so ``''`` can only mean "no part", and ``nullif(..., '')`` gives Athena's answer.
- ``"ambiguous"``: the group may take no part and may also match nothing; the two cannot be told
  apart from regexp_extract's answer, and the caller uses the first match of regexp_extract_all
  (NULL for a group that took no part), which costs a search for every match.

A pattern Python's parser cannot read even after the RE2/Java spellings it lacks are rewritten
(``\\p{L}``, ``\\z``, ``(?<name>``) is ``"always"`` when it has no ``|``, ``?``, ``*`` or ``{``
(nothing can then be skipped) and ``"ambiguous"`` otherwise.
"""

from __future__ import annotations

import importlib
import re
import warnings
from functools import cache
from typing import Any, Literal

Shape = Literal["always", "nonempty", "ambiguous"]

# RE2 and Java spellings Python's parser lacks, as something of the same width: a Unicode class is
# one character, \z the end of the text, (?<name> a named group.
_SPELLINGS = (
    (re.compile(r"\\[pP](?:\{[^}]*\}|[A-Za-z])"), "a"),
    (re.compile(r"\\z"), r"\\Z"),
    (re.compile(r"\(\?<(?=[A-Za-z])"), "(?P<"),
)


@cache
def group_shape(pattern: str, group: int) -> Shape:
    """How group ``group`` (1 or more) of ``pattern`` takes part in a match; see the module
    docstring. A group the pattern does not have is ``"always"`` (DuckDB then reports it)."""
    # CPython's own parser of regular expressions (private, stable since 3.11; typeshed has no
    # stubs for it, hence the import by name).
    c: Any = importlib.import_module("re._constants")
    _parser: Any = importlib.import_module("re._parser")

    text = pattern
    for spelling, same_width in _SPELLINGS:
        text = spelling.sub(same_width, text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" for [[:alpha:]]
            parsed = _parser.parse(text)
    except (re.error, RecursionError, OverflowError):
        return "always" if not re.search(r"[|?*{]", pattern) else "ambiguous"

    found: list[tuple[bool, int]] = []  # (may take no part, shortest match) of the group

    def walk(items: Any, optional: bool) -> None:
        for op, value in items:
            if op is c.SUBPATTERN:
                number, _, _, inner = value
                if number == group:
                    found.append((optional, inner.getwidth()[0]))
                walk(inner, optional)
            elif op is c.BRANCH:
                alternatives = value[1]
                for alternative in alternatives:
                    walk(alternative, optional or len(alternatives) > 1)
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                low, _, inner = value
                walk(inner, optional or low == 0)
            elif op is c.GROUPREF_EXISTS:
                _, yes, no = value
                walk(yes, True)
                if no is not None:
                    walk(no, True)
            elif op in (c.ASSERT, c.ASSERT_NOT):
                walk(value[1], True)
            elif op is c.ATOMIC_GROUP:
                walk(value, optional)

    walk(parsed, False)
    if not found:
        return "always"
    optional, shortest = found[0]
    if not optional:
        return "always"
    return "nonempty" if shortest > 0 else "ambiguous"
