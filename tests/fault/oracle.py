"""The oracle of every fault scenario: invariants I1-I5, from the journal and the witness.

The journal says what the runtime recorded: every answered event is there, terminal, once
(an `outcome_audit` trigger records every write of a terminal outcome, so an outcome written
twice by a broken fence is visible, not just overwritten), and nothing is there that nobody
was answered for. Order and overlap are not taken from the journal's `seq` and timestamps,
which the code under test writes: they are judged from the witness ledger that the handlers
write themselves (`tests/witness.py`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests import witness
from tests.harness import System

#: client id → the (seq, event id) pairs the gateway answered 202/200 for, in posting order.
Answered = Mapping[str, Sequence[tuple[int, str]]]
NOT_IN_JOURNAL = "(not in the journal)"

AUDIT = """
CREATE TABLE IF NOT EXISTS outcome_audit (
    event_id uuid NOT NULL, status text NOT NULL, recorded_at timestamptz DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION audit_outcome() RETURNS trigger AS $$
BEGIN
    IF NEW.status IN ('succeeded', 'dead') AND NEW.finished_at IS DISTINCT FROM OLD.finished_at
    THEN
        INSERT INTO outcome_audit (event_id, status) VALUES (NEW.id, NEW.status);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_outcome ON events;
CREATE TRIGGER audit_outcome AFTER UPDATE ON events FOR EACH ROW EXECUTE FUNCTION audit_outcome();
"""


def install_audit(system: System) -> None:
    """Record every terminal-outcome write of `events` in `outcome_audit`."""
    system.execute(AUDIT)


@dataclasses.dataclass
class Report:
    """What the oracle found; `ok` when every list is empty and the witness is satisfied."""

    accepted: int
    journal: int
    lost: list[str]  # answered, not in the journal
    unanswered: list[tuple[str, int]]  # in the journal, answered to nobody (duplicate intake)
    unfinished: list[tuple[str, int, str]]
    dead: list[tuple[str, int]]  # dead, though the scenario's handlers never fail
    gaps: list[str]
    duplicated_outcomes: list[str]
    witness: witness.Judgement

    @property
    def ok(self) -> bool:
        journal = (
            self.lost,
            self.unanswered,
            self.unfinished,
            self.dead,
            self.gaps,
            self.duplicated_outcomes,
        )
        return not any(journal) and self.witness.ok

    def __str__(self) -> str:
        found = {
            "lost": self.lost,
            "unanswered": self.unanswered,
            "unfinished": self.unfinished,
            "dead": self.dead,
            "gaps": self.gaps,
            "duplicated": self.duplicated_outcomes,
        }
        counts = " ".join(f"{name}={len(items)}" for name, items in found.items())
        first = " ".join(f"{name}={items[:3]}" for name, items in found.items() if items)
        return (
            f"accepted={self.accepted} journal={self.journal} {counts}"
            + (f"; first problems: {first}" if first else "")
            + f"; witness: {self.witness}"
        )

    __repr__ = __str__  # what pytest shows of `assert report.ok, report`


def check(
    system: System,
    answered: Answered,
    *,
    may_fail: bool,
    also: Collection[str] = (),
    ledger: Path | None = None,
) -> Report:
    """Judge a scenario: `answered` is what the load was answered; `also` the ids of events
    the scenario posted itself (their seqs are looked up in the journal). `may_fail` says
    whether the scenario's handlers can fail, that is whether `dead` is a normal finish.
    `ledger` replaces the system's own witness ledger (a filtered copy of it, say)."""
    answered = _merged(answered, _answers_of(system, also))
    rows = system.sql(
        "SELECT id::text, client_id::text, seq, status FROM events ORDER BY client_id, seq"
    )
    audit = system.sql(
        "SELECT event_id::text FROM outcome_audit GROUP BY event_id HAVING count(*) > 1"
    )
    judgement = witness.judge(ledger or system.ledger, answered, may_fail=may_fail)
    return verdict(rows, [r["event_id"] for r in audit], answered, judgement, may_fail=may_fail)


def verdict(
    rows: Sequence[Mapping[str, Any]],
    duplicated: list[str],
    answered: Answered,
    judgement: witness.Judgement,
    *,
    may_fail: bool,
) -> Report:
    """The report on journal `rows` (id, client_id, seq, status; by client and seq), the
    events whose outcome was written more than once, and the witness's judgement."""
    ids = {event for pairs in answered.values() for _, event in pairs}
    journal_ids = {row["id"] for row in rows}
    return Report(
        accepted=len(ids),
        journal=len(rows),
        lost=sorted(ids - journal_ids),
        unanswered=[(r["client_id"], r["seq"]) for r in rows if r["id"] not in ids],
        unfinished=[
            (r["client_id"], r["seq"], r["status"])
            for r in rows
            if r["status"] not in ("succeeded", "dead")
        ],
        dead=[(r["client_id"], r["seq"]) for r in rows if r["status"] == "dead" and not may_fail],
        gaps=_gaps(rows),
        duplicated_outcomes=duplicated,
        witness=judgement,
    )


def _gaps(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Clients whose journal seqs are not exactly 1..n (intake's promise, not order)."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        seqs[row["client_id"]].append(row["seq"])
    return [cid for cid, found in seqs.items() if found != list(range(1, len(found) + 1))]


def _answers_of(system: System, ids: Collection[str]) -> Answered:
    """The (client, seq) of events a scenario posted itself; ids the journal does not have
    go under NOT_IN_JOURNAL, so that they count as lost."""
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    rows = system.sql(
        "SELECT client_id::text, seq, id::text FROM events WHERE id::text = ANY($1) ORDER BY seq",
        sorted(ids),
    )
    for row in rows:
        found[row["client_id"]].append((row["seq"], row["id"]))
    missing = sorted(set(ids) - {row["id"] for row in rows})
    if missing:
        found[NOT_IN_JOURNAL] = list(enumerate(missing, start=1))
    return found


def _merged(*answers: Answered) -> Answered:
    merged: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for answer in answers:
        for client, pairs in answer.items():
            merged[client] += pairs
    return merged


def all_terminal(system: System) -> bool:
    return not system.sql("SELECT 1 FROM events WHERE status NOT IN ('succeeded', 'dead') LIMIT 1")
