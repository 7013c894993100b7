"""The host's catch-up from the journal is retried until it succeeds (issue 12, item 6).

Fakes stand in for the broker and the journal: this checks the host's own bookkeeping. The
catch-up itself, with the real journal and broker, is proven in
tests/integration/test_delivery.py.

Planted: `entry.catch_up_due = True` removed from `MailboxHost._subscribe` → fails at
`assert host._active[CLIENT].catch_up_due` (nothing remembers that a catch-up is owed; on
35eeb40 a failed catch-up was only logged).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from dramatiq.brokers.stub import StubBroker

from actors.channels import CONSUME_CHANNELS
from actors.handlers import HandlerRegistry
from actors.host import MailboxHost
from actors.settings import Settings
from actors.states import DeadEventPolicy, MailboxState
from actors.store.rows import Position

CLIENT = uuid.UUID("6f1c2e2a-0000-4000-8000-000000000001")
WORKER = "w-1"


class Journal:
    """The few journal calls a host makes, the first catch-up read failing as in an outage."""

    def __init__(self) -> None:
        self.reads = 0

    async def position(self, client_id: uuid.UUID) -> Position:
        return Position(0, 1, MailboxState.ACTIVE, DeadEventPolicy.SKIP, None, None, WORKER, 1)

    async def events_between(self, client_id: uuid.UUID, low: int, high: int) -> list[Any]:
        self.reads += 1
        if self.reads == 1:
            raise ConnectionRefusedError("the journal is restarting")
        return []

    async def mailboxes_placed_on(self, worker_id: str) -> dict[uuid.UUID, int]:
        return {CLIENT: 1}


class Channel:
    is_open = True

    def declare_queue_nowait(self, name: str, arguments: Any = None) -> None:
        pass

    async def consume(self, queue: str, on_message: Any, on_cancel: Any = None) -> str:
        return "ctag-1"


class Link:
    publisher = None  # the host declares on its own consume channel


def hosting(journal: Journal) -> MailboxHost:
    """A host on fake consume channels, reading this journal."""
    host = MailboxHost(
        Settings(),
        journal,  # type: ignore[arg-type]
        HandlerRegistry(),
        StubBroker(),
        WORKER,
        Link(),  # type: ignore[arg-type]
    )
    host._channels.channels = [Channel()] * CONSUME_CHANNELS  # type: ignore[list-item]
    return host


async def settled(host: MailboxHost) -> None:
    while pending := [task for task in host._tasks if not task.done()]:
        await asyncio.wait(pending)


async def test_a_failed_catch_up_is_retried_by_the_next_reconcile() -> None:
    journal = Journal()
    host = hosting(journal)

    await host.start(CLIENT, 1)
    await settled(host)
    assert journal.reads == 1
    assert host._active[CLIENT].catch_up_due

    await host.reconcile()
    await settled(host)

    assert journal.reads == 2
    assert not host._active[CLIENT].catch_up_due


async def test_a_catch_up_counts_in_flight_before_its_task_first_runs() -> None:
    """A passivation that reads `inflight` between the spawn and the task's first step must
    see the catch-up, or it releases the mailbox while the catch-up starts an attempt.

    Planted: `entry.inflight += 1` moved back into `_catch_up` → `0 == 1`."""
    host = hosting(Journal())

    await host.start(CLIENT, 1)

    entry = host._active[CLIENT]
    assert entry.catch_up_due
    assert entry.inflight == 1
    await settled(host)
    assert entry.inflight == 0
