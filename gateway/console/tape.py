"""A client's sequence tape as the console shows it: done_seq, the event in flight, the event
blocking the mailbox (with its error), the events queued behind, dead and redriven ones."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

from actors.states import EventStatus, MailboxState
from actors.store import MailboxRow
from actors.store.console import TapeEvent

BEFORE = 5  # finished events shown before the head
AFTER = 40  # events shown from the head on


@dataclasses.dataclass(frozen=True, slots=True)
class Tape:
    events: list[TapeEvent]
    blocking: TapeEvent | None
    blocked: int  # events accepted and not finished
    since: datetime.datetime | None  # since when the blocking event blocks
    state: str
    done_seq: int
    last_seq: int

    @property
    def head_seq(self) -> int:
        return self.done_seq + 1


def window(row: MailboxRow) -> tuple[int, int]:
    return max(1, row.done_seq - BEFORE + 1), row.done_seq + AFTER


def tape_of(row: MailboxRow, events: list[TapeEvent], state: str) -> Tape:
    """The tape of a mailbox from its events around the head (`window`)."""
    head = next((e for e in events if e.seq == row.done_seq + 1), None)
    blocking: TapeEvent | None = None
    if head is not None and head.error and head.status != EventStatus.SUCCEEDED:
        blocking = head
    elif row.state is MailboxState.SUSPENDED:
        dead = [e for e in events if e.seq <= row.done_seq and e.status == EventStatus.DEAD]
        blocking = dead[-1] if dead else head
    since = None
    if blocking is not None:
        since = row.suspended_at or blocking.started_at or blocking.accepted_at
    return Tape(
        events, blocking, row.last_seq - row.done_seq, since, state, row.done_seq, row.last_seq
    )


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`)."""
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        return parts[1]
    return None


def parse_id(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
