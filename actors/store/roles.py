"""What the mailbox, the host and the supervisor need of a journal: one Protocol each.

`Journal` (PostgreSQL) and `MemoryJournal` (actors/store/memory.py, for tests) both satisfy
all of them; tests/integration/test_journal_contract.py proves the two agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from actors.store.rows import EventRow, Json, Placed, Position, Wanted


class MailboxJournal(Protocol):
    """A mailbox's reads of its position and backlog, and its fenced writes."""

    async def position(self, client_id: uuid.UUID) -> Position | None:
        """The mailbox's progress, policy and placement; None when there is no such client."""
        ...

    async def events_between(self, client_id: uuid.UUID, low: int, high: int) -> list[EventRow]:
        """Events with low < seq < high, in order."""
        ...

    async def mark_attempt(
        self, event_id: uuid.UUID, *, epoch: int | None, delivered: bool = False
    ) -> int | None:
        """Count a new attempt; its number, or None when the event is terminal or the
        placement `epoch` is not current. `delivered`: RabbitMQ delivered the event, so it
        is marked published too, if it was not yet."""
        ...

    async def mark_retrying(self, event_id: uuid.UUID, error: Json, *, epoch: int | None) -> bool:
        """Record a failed attempt to be retried and count a restart; False when refused."""
        ...

    async def record_outcome(
        self,
        event_id: uuid.UUID,
        client_id: uuid.UUID,
        seq: int,
        status: str,
        attempts: int,
        result: Json,
        error: Json,
        *,
        epoch: int | None,
    ) -> bool:
        """Record a terminal outcome and move done_seq to `seq`; False unless done_seq was
        `seq - 1` and the placement `epoch` is current (the fence)."""
        ...


class HostJournal(MailboxJournal, Protocol):
    """A worker's mailbox host: its placements, and what its mailboxes need."""

    async def mailboxes_placed_on(self, worker_id: str) -> dict[uuid.UUID, int]:
        """The clients placed on this worker, each with its placement's epoch."""
        ...

    async def release_mailbox(
        self, client_id: uuid.UUID, worker_id: str, *, epoch: int | None = None
    ) -> None:
        """Passivate: the mailbox, if active on this worker (under placement `epoch`, when
        given), becomes idle (a new epoch)."""
        ...

    async def suspend_mailbox(
        self, client_id: uuid.UUID, reason: str, *, epoch: int | None = None
    ) -> bool:
        """Suspend (a new epoch); False when suspended already or `epoch` is not current."""
        ...


class RelayJournal(Protocol):
    """The outbox relay: events committed but not published."""

    async def unpublished(self, older_than: float, limit: int) -> list[EventRow]:
        """Unfinished events never published, accepted more than `older_than` s ago."""
        ...

    async def mark_published(self, event_ids: Sequence[uuid.UUID]) -> None: ...


class SupervisorJournal(RelayJournal, Protocol):
    """The supervisor's view: where mailboxes stand, live workers, placements, suspensions.

    Liveness (`alive_within`, `by_lock`) is as in live_worker_ids (schema.sql).
    """

    @property
    def session_lost_at(self) -> float:
        """When one of the journal's database sessions last ended (time.monotonic())."""
        ...

    async def wanted(
        self, client_ids: Sequence[uuid.UUID], alive_within: float, by_lock: bool
    ) -> list[Wanted]: ...

    async def stranded_mailboxes(
        self, alive_within: float, by_lock: bool, limit: int
    ) -> dict[uuid.UUID, str | None]:
        """Mailboxes with a backlog, not suspended, without a live host: client -> the
        traceparent of its head event."""
        ...

    async def live_workers(self, alive_within: float, by_lock: bool) -> dict[str, int]:
        """Live, not draining workers, with the number of active mailboxes each holds."""
        ...

    async def place_mailboxes(
        self, plan: dict[uuid.UUID, str], alive_within: float, by_lock: bool
    ) -> dict[uuid.UUID, Placed]:
        """Place each client on its worker under a new epoch; the ones placed (never a
        suspended one, never one active on a live worker), with the epoch and position."""
        ...

    async def release_mailbox(
        self, client_id: uuid.UUID, worker_id: str, *, epoch: int | None = None
    ) -> None: ...

    async def suspend_mailbox(
        self, client_id: uuid.UUID, reason: str, *, epoch: int | None = None
    ) -> bool: ...
