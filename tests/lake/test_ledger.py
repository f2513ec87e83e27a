"""The ingest ledger in-process: pending runs, settling after a crash, partial inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from loglake.errors import LakeError
from loglake.lake.ledger import Ledger


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "state" / "ledger.db")


def test_an_input_is_done_only_once_its_run_is_marked_done(ledger: Ledger) -> None:
    ledger.mark_pending("run1", [("fp-a", "a.log", 10), ("fp-b", "b.log", 5)], ["logs.access"])
    assert ledger.has_pending()
    assert not ledger.is_done("fp-a") and not ledger.is_done("fp-b")
    ledger.mark_done("run1")
    assert ledger.is_done("fp-a") and ledger.is_done("fp-b")
    assert not ledger.has_pending()
    assert not ledger.is_done("fp-unknown")


def test_settle_keeps_committed_runs_and_forgets_the_others(ledger: Ledger) -> None:
    ledger.mark_pending("landed", [("fp-a", "a.log", 10)], ["logs.access", "logs.rejected"])
    ledger.mark_pending("lost", [("fp-b", "b.log", 5)], ["logs.access"])
    # The crash left both pending; the lake holds the snapshots of "landed" in both its tables.
    asked: list[tuple[str, str]] = []

    def committed(table: str, run_id: str) -> bool:
        asked.append((table, run_id))
        return run_id == "landed"

    ledger.settle(committed)
    assert ledger.is_done("fp-a")
    assert not ledger.is_done("fp-b")  # ingested again by the next run
    assert not ledger.has_pending()
    assert ("logs.access", "landed") in asked and ("logs.rejected", "landed") in asked


def test_a_run_committed_to_only_some_tables_is_not_done(ledger: Ledger) -> None:
    ledger.mark_pending("half", [("fp-a", "a.log", 10)], ["logs.access", "logs.rejected"])
    ledger.settle(lambda table, run_id: table == "logs.rejected")
    assert not ledger.is_done("fp-a")


def test_a_catalog_that_cannot_answer_keeps_the_run_pending(ledger: Ledger) -> None:
    ledger.mark_pending("run1", [("fp-a", "a.log", 10)], ["logs.access"])

    def unreachable(table: str, run_id: str) -> bool:
        raise LakeError("catalog locked")

    with pytest.raises(LakeError, match="catalog locked"):
        ledger.settle(unreachable)
    assert ledger.has_pending()  # neither forgotten (ingested twice) nor taken as done
    ledger.settle(lambda table, run_id: True)
    assert ledger.is_done("fp-a")


def test_a_partial_input_resumes_after_its_last_stored_line(ledger: Ledger, tmp_path: Path) -> None:
    ledger.mark_pending("run1", [], ["logs.access"], [("fp-a", "a.log", 700, "connection lost")])
    assert ledger.resume_after("fp-a") == 0  # pending: not stored yet
    ledger.mark_done("run1")
    assert ledger.resume_after("fp-a") == 700
    assert not ledger.is_done("fp-a")
    # Survives a restart of the process (the ledger is a file).
    ledger.close()
    again = Ledger(tmp_path / "state" / "ledger.db")
    assert again.resume_after("fp-a") == 700
    # Read whole by a later run: done, and its partial record is dropped.
    again.mark_pending("run2", [("fp-a", "a.log", 1000)], ["logs.access"])
    again.mark_done("run2")
    assert again.is_done("fp-a") and again.resume_after("fp-a") == 0
    again.close()
