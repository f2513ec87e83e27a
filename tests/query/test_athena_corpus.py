"""The Athena corpus (tests/query/athena_corpus.py) answers as Athena does over a small lake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from athena_corpus import ALB_ROWS, CORPUS, FILES, TABLES, Fails, Refused, Unordered
from athena_corpus_datetime import CORPUS_DATETIME

import loglake
from loglake.config import load_config
from loglake.errors import QueryError, QueryRefusedError
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
    config = load_config(home=home, environ={})
    stats = ingest(config, [str(path)], format="json", table="logs.alb")
    assert stats.parsed == len(ALB_ROWS) and stats.rejected == 0
    for table, records in TABLES.items():
        path = home / f"{table}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"ts": f"2026-12-01T11:00:0{i}Z", **record}) + "\n"
                for i, record in enumerate(records)
            )
        )
        stats = ingest(config, [str(path)], format="json", table=table)
        assert stats.parsed == len(records) and stats.rejected == 0, table
    for table, (fmt, text) in FILES.items():
        path = home / f"{table}.log"
        path.write_text(text)
        stats = ingest(config, [str(path)], format=fmt, table=table)
        assert stats.parsed == text.count("\n") and stats.rejected == 0, table
    with loglake.connect(str(home)) as c:
        yield c


@pytest.mark.parametrize(
    ("name", "sql", "expected"),
    CORPUS + CORPUS_DATETIME,
    ids=[c[0] for c in CORPUS + CORPUS_DATETIME],
)
def test_corpus_query(con: Connection, name: str, sql: str, expected: Any) -> None:
    if isinstance(expected, Refused):
        with pytest.raises(QueryRefusedError) as refused:
            con.sql(sql, dialect="athena")
        message = str(refused.value)
        assert f"Athena function {expected.function}" in message, message
        assert expected.alternative in message, message
        return
    if isinstance(expected, Fails):
        with pytest.raises(QueryError, match=expected.message):
            con.sql(sql, dialect="athena").fetchall()
        return
    rows = con.sql(sql, dialect="athena").fetchall()
    if isinstance(expected, Unordered):
        assert sorted(rows, key=repr) == sorted(expected, key=repr), name
    else:
        assert rows == expected, name


def test_the_corpus_holds_sixty_queries() -> None:
    assert len(CORPUS) + len(CORPUS_DATETIME) >= 60
