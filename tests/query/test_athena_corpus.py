"""The Athena corpus (tests/query/athena_corpus.py) answers as Athena does over a small lake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from athena_corpus import ALB_ROWS, CORPUS
from athena_corpus_datetime import CORPUS_DATETIME

import loglake
from loglake.config import load_config
from loglake.ingest import ingest
from loglake.query.engine import Connection

COLUMNS = ("n", "client_ip", "request_verb", "request_url", "elb_status_code", "user_agent")


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    home = tmp_path_factory.mktemp("corpus")
    path = home / "alb.jsonl"
    lines = []
    for row in ALB_ROWS:
        record = dict(zip((*COLUMNS, "sent_bytes"), row, strict=True))
        lines.append(json.dumps({"ts": f"2026-12-01T10:00:0{row[0]}Z", **record}))
    path.write_text("\n".join(lines) + "\n")
    stats = ingest(load_config(home=home, environ={}), [str(path)], format="json", table="logs.alb")
    assert stats.parsed == len(ALB_ROWS) and stats.rejected == 0
    with loglake.connect(str(home)) as c:
        yield c


@pytest.mark.parametrize(
    ("name", "sql", "expected"),
    CORPUS + CORPUS_DATETIME,
    ids=[c[0] for c in CORPUS + CORPUS_DATETIME],
)
def test_corpus_query(
    con: Connection, name: str, sql: str, expected: list[tuple[Any, ...]]
) -> None:
    assert con.sql(sql, dialect="athena").fetchall() == expected, name
