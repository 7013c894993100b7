"""The fault oracle's verdict on crafted journal rows and ledgers: the holes it had are shut.

Each test feeds what the old `check()` (journal only: lost, unfinished, seq gaps, journal
timestamps, duplicated outcomes) returned ok for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import witness
from tests.fault.oracle import Report, verdict

CLIENT = "c1"


def row(seq: int, event: str, status: str = "succeeded") -> dict[str, Any]:
    return {"id": event, "client_id": CLIENT, "seq": seq, "status": status}


def ran(
    ledger: Path, seq: int, event: str, start: float, end: float, raised: str | None = None
) -> None:
    """A crafted execution in the ledger, as a witnessed handler writes it."""
    lines = [
        {"kind": "start", "id": f"{event}@{start}", "client": CLIENT, "event": event, "seq": seq,
         "attempt": 1, "fence": None, "pid": 1, "t": start},
        {"kind": "end", "id": f"{event}@{start}", "pid": 1, "raised": raised, "t": end},
    ]  # fmt: skip
    with ledger.open("a") as file:
        file.writelines(json.dumps(line) + "\n" for line in lines)


def report(
    ledger: Path, rows: list[dict[str, Any]], answered: list[tuple[int, str]], *, may_fail: bool
) -> Report:
    answers = {CLIENT: answered}
    judgement = witness.judge(ledger, answers, may_fail=may_fail)
    return verdict(rows, [], answers, judgement, may_fail=may_fail)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.jsonl"


def test_a_clean_run_is_ok(ledger: Path) -> None:
    ran(ledger, 1, "e1", 0.0, 1.0)
    ran(ledger, 2, "e2", 1.0, 2.0)

    found = report(ledger, [row(1, "e1"), row(2, "e2")], [(1, "e1"), (2, "e2")], may_fail=False)

    assert found.ok, found


def test_a_journal_row_nobody_was_answered_for_is_duplicate_intake(ledger: Path) -> None:
    """Hole 1: an extra event (the same request journaled twice during an outage, answered
    once) is gapless, terminal and in order, so the old check passed it.

    Planted: `unanswered=[]` in oracle.verdict → fails with `assert [] == [('c1', 2)]`."""
    ran(ledger, 1, "e1", 0.0, 1.0)
    ran(ledger, 2, "e1-again", 1.0, 2.0)

    found = report(ledger, [row(1, "e1"), row(2, "e1-again")], [(1, "e1")], may_fail=False)

    assert found.unanswered == [(CLIENT, 2)]
    assert [e.event for e in found.witness.unexpected] == ["e1-again"]
    assert not found.ok


def test_duplicate_intake_is_seen_in_the_journal_even_before_it_runs(ledger: Path) -> None:
    ran(ledger, 1, "e1", 0.0, 1.0)

    found = report(ledger, [row(1, "e1"), row(2, "e1-again")], [(1, "e1")], may_fail=False)

    assert found.unanswered == [(CLIENT, 2)]
    assert found.witness.ok
    assert not found.ok


def test_dead_events_fail_a_scenario_whose_handlers_never_fail(ledger: Path) -> None:
    """Hole 2: every event dead is terminal, so the old check passed it.

    Planted: `dead` computed with `if False` in oracle.verdict → fails with
    `assert [] == [('c1', 1), ('c1', 2)]`."""
    ran(ledger, 1, "e1", 0.0, 1.0, raised="RuntimeError")
    ran(ledger, 2, "e2", 1.0, 2.0, raised="RuntimeError")
    rows = [row(1, "e1", "dead"), row(2, "e2", "dead")]

    found = report(ledger, rows, [(1, "e1"), (2, "e2")], may_fail=False)

    assert found.dead == [(CLIENT, 1), (CLIENT, 2)]
    assert len(found.witness.failed) == 2
    assert not found.ok


def test_dead_events_are_a_normal_finish_where_the_scenario_says_handlers_may_fail(
    ledger: Path,
) -> None:
    ran(ledger, 1, "e1", 0.0, 1.0, raised="RuntimeError")

    found = report(ledger, [row(1, "e1", "dead")], [(1, "e1")], may_fail=True)

    assert found.ok, found


def test_an_overlap_the_journal_s_timestamps_hide_is_seen_by_the_witness(ledger: Path) -> None:
    """Hole 3: the journal's started_at of seq 2 was written late (after seq 1's finished_at),
    while its handler really started 0.5 s before seq 1's ended; the old check compared the
    journal's timestamps and passed it. The verdict does not read them at all.

    Planted: Report.ok without `and self.witness.ok` → fails with `assert not True`
    (the report's witness holding the overlap and the order break)."""
    ran(ledger, 1, "e1", 0.0, 1.0)
    ran(ledger, 2, "e2", 0.5, 2.0)
    rows = [
        {**row(1, "e1"), "started_at": 0.0, "finished_at": 1.0},
        {**row(2, "e2"), "started_at": 1.5, "finished_at": 2.0},  # written late
    ]

    found = report(ledger, rows, [(1, "e1"), (2, "e2")], may_fail=False)

    assert len(found.witness.overlaps) == 1
    assert not found.ok
    assert "overlaps=1" in str(found)


def test_an_event_the_handlers_never_ran_is_lost_though_the_journal_says_succeeded(
    ledger: Path,
) -> None:
    ran(ledger, 1, "e1", 0.0, 1.0)

    found = report(ledger, [row(1, "e1"), row(2, "e2")], [(1, "e1"), (2, "e2")], may_fail=False)

    assert found.witness.lost == ["client c1 seq 2 event e2"]
    assert not found.ok
