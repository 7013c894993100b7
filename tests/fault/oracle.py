"""The oracle of every fault scenario: invariants I1-I5 checked against the journal.

`install_audit` adds a trigger to the test database that records every write of a terminal
outcome, so an outcome recorded twice (a broken fence) is visible, not just overwritten.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from typing import Any

from tests.harness import System

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
    accepted: int
    journal: int
    lost: list[str]
    unfinished: list[tuple[str, int, str]]
    gaps: list[str]
    overlaps: list[tuple[str, int]]
    duplicated_outcomes: list[str]

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.unfinished or self.gaps or self.overlaps or self.duplicated_outcomes
        )

    def __str__(self) -> str:
        return (
            f"accepted={self.accepted} journal={self.journal} lost={len(self.lost)} "
            f"unfinished={len(self.unfinished)} gaps={len(self.gaps)} "
            f"overlaps={len(self.overlaps)} duplicated_outcomes="
            f"{len(self.duplicated_outcomes)}; first problems: lost={self.lost[:3]} "
            f"unfinished={self.unfinished[:3]} gaps={self.gaps[:3]} "
            f"overlaps={self.overlaps[:3]} duplicated={self.duplicated_outcomes[:3]}"
        )


def check(system: System, accepted_ids: set[str]) -> Report:
    """Every 202'd event is in the journal and terminal, per-client seqs are gapless and were
    processed one at a time in order, and no outcome was written twice."""
    rows = system.sql(
        "SELECT id::text, client_id::text, seq, status, started_at, finished_at FROM events "
        "ORDER BY client_id, seq"
    )
    journal_ids = {row["id"] for row in rows}
    by_client: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_client[row["client_id"]].append(row)
    gaps = [
        cid
        for cid, events in by_client.items()
        if [e["seq"] for e in events] != list(range(1, len(events) + 1))
    ]
    overlaps = [
        (cid, b["seq"])
        for cid, events in by_client.items()
        for a, b in itertools.pairwise(events)
        if a["finished_at"] and b["started_at"] and a["finished_at"] > b["started_at"]
    ]
    audit = system.sql(
        "SELECT event_id::text, count(*) AS n FROM outcome_audit "
        "GROUP BY event_id HAVING count(*) > 1"
    )
    return Report(
        accepted=len(accepted_ids),
        journal=len(rows),
        lost=sorted(accepted_ids - journal_ids),
        unfinished=[
            (r["client_id"], r["seq"], r["status"])
            for r in rows
            if r["status"] not in ("succeeded", "dead")
        ],
        gaps=gaps,
        overlaps=overlaps,
        duplicated_outcomes=[r["event_id"] for r in audit],
    )


def all_terminal(system: System) -> bool:
    return not system.sql("SELECT 1 FROM events WHERE status NOT IN ('succeeded', 'dead') LIMIT 1")
