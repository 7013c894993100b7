"""The mailbox actor on the in-memory journal: retries and backoff, `skip` and `halt`,
escalation, the seq rule under duplicate, late and out-of-order deliveries, and fencing.

No services: `MemoryJournal` keeps the journal's rules (proven against PostgreSQL by
tests/integration/test_journal_contract.py), `StubBroker` stands in for Dramatiq's broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import Awaitable, Callable

import pytest
from dramatiq.brokers.stub import StubBroker

from actors.backoff import Backoff
from actors.handlers import Event, HandlerRegistry
from actors.mailbox import Escalate, Fenced, Mailbox, RunPolicy, Stopped
from actors.policy import RestartIntensity
from actors.protocol import EventMessage
from actors.store.memory import MemoryJournal

WORKER = "w-1"
FAST = RunPolicy(max_attempts=5, handler_timeout=5.0, backoff=Backoff(0.0, 0.0))


class Handler:
    """The handler of `demo.t`: fails its first `failures` calls; `on_call` runs first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[int, int]] = []  # (seq, attempt)
        self.times: list[float] = []
        self.gate: asyncio.Event | None = None  # set: the handler may return
        self.called = asyncio.Event()
        self.on_call: list[Callable[[], Awaitable[None]]] = []  # once, at the next call

    async def handle(self, event: Event) -> dict[str, int]:
        self.calls.append((event.seq, event.attempt))
        self.times.append(asyncio.get_running_loop().time())
        self.called.set()
        for effect in self.on_call:
            await effect()
        self.on_call.clear()
        if self.gate is not None:
            await self.gate.wait()
        if len(self.calls) <= self.failures:
            raise RuntimeError("boom")
        return {"seq": event.seq}


@dataclasses.dataclass
class Scene:
    journal: MemoryJournal
    client: uuid.UUID
    epoch: int
    messages: list[EventMessage]
    handler: Handler
    mailbox: Mailbox

    def owner(self, epoch: int) -> Mailbox:
        """Another mailbox object for this client: a new owner under `epoch`."""
        return mailbox_of(self.journal, self.client, self.handler, FAST, epoch)

    async def status(self, seq: int) -> tuple[str, int]:
        row = await self.journal.event(self.client, self.messages[seq - 1].event_id)
        assert row is not None
        return row.status, row.attempts

    async def move(self) -> int:
        """The supervisor places the mailbox on another worker (this one died)."""
        await self.journal.forget_worker(WORKER)
        await self.journal.heartbeat("w-2")
        placed = await self.journal.place_mailboxes({self.client: "w-2"}, 5.0, True)
        return placed[self.client].epoch


def mailbox_of(
    journal: MemoryJournal, client: uuid.UUID, handler: Handler, policy: RunPolicy, epoch: int
) -> Mailbox:
    handlers = HandlerRegistry()
    handlers.register("demo.t", handler.handle)
    broker = StubBroker(middleware=[])
    return Mailbox(client, journal, handlers, policy, broker, "q", epoch=epoch)


async def scene(
    events: int, *, failures: int = 0, run: RunPolicy = FAST, **client: object
) -> Scene:
    """A client with `events` accepted events, its mailbox placed on a live worker."""
    journal = MemoryJournal()
    client_id = await journal.create_client("c", "x", False)
    if client:
        assert await journal.set_mailbox_policy(client_id, **client)  # type: ignore[arg-type]
    for n in range(events):
        await journal.accept(client_id, "demo.t", {"n": n})
    await journal.heartbeat(WORKER)
    epoch = (await journal.place_mailboxes({client_id: WORKER}, 5.0, True))[client_id].epoch
    rows = await journal.events_between(client_id, 0, events + 1)
    handler = Handler(failures)
    mailbox = mailbox_of(journal, client_id, handler, run, epoch)
    return Scene(journal, client_id, epoch, [EventMessage.of(r) for r in rows], handler, mailbox)


# --- retries and backoff ---------------------------------------------------------------


async def test_a_failed_attempt_is_retried_in_place_until_it_succeeds() -> None:
    s = await scene(1, failures=2)

    await s.mailbox.process(s.messages[0])

    assert s.handler.calls == [(1, 1), (1, 2), (1, 3)]
    assert await s.status(1) == ("succeeded", 3)
    mailbox = await s.journal.mailbox(s.client)
    assert mailbox is not None
    assert (mailbox.done_seq, mailbox.restarts) == (1, 2)


async def test_retries_wait_out_the_backoff_between_attempts() -> None:
    """Planted: `await self._backoff(delay)` removed from `Mailbox._attempts` → fails at
    `assert min(gaps) >= 0.04` (the attempts follow each other at once)."""
    s = await scene(1, failures=2, run=dataclasses.replace(FAST, backoff=Backoff(0.05, 0.05, 0)))

    await s.mailbox.process(s.messages[0])

    times = s.handler.times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 2
    assert min(gaps) >= 0.04


async def test_a_stop_during_the_backoff_leaves_the_event_for_redelivery() -> None:
    s = await scene(1, failures=99, run=dataclasses.replace(FAST, backoff=Backoff(30, 30)))
    processing = asyncio.create_task(s.mailbox.process(s.messages[0]))
    await asyncio.wait_for(s.handler.called.wait(), 5)

    s.mailbox.stop()  # during the first attempt: its backoff is cut short

    with pytest.raises(Stopped):
        await asyncio.wait_for(processing, 5)
    assert s.handler.calls == [(1, 1)]
    assert await s.status(1) == ("retrying", 1)


# --- skip and halt ---------------------------------------------------------------------


async def test_under_skip_an_event_out_of_attempts_is_dead_and_the_next_one_runs() -> None:
    s = await scene(2, failures=3, run=dataclasses.replace(FAST, max_attempts=3))

    await s.mailbox.process(s.messages[0])
    await s.mailbox.process(s.messages[1])

    assert s.handler.calls == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert await s.status(1) == ("dead", 3)
    assert await s.status(2) == ("succeeded", 1)
    dead = await s.journal.event(s.client, s.messages[0].event_id)
    assert dead is not None
    assert dead.error == {"type": "RuntimeError", "message": "boom"}
    position = await s.journal.position(s.client)
    assert position is not None
    assert (position.state, position.done_seq) == ("active", 2)


async def test_under_halt_a_dead_event_escalates_once_it_is_recorded() -> None:
    """Planted: `position.policy == "halt"` changed to `"skip"` in `Mailbox._failed` → fails
    with `DID NOT RAISE Escalate` (the mailbox goes on to seq 2)."""
    s = await scene(2, failures=99, run=dataclasses.replace(FAST, max_attempts=2), policy="halt")

    with pytest.raises(Escalate) as escalation:
        await s.mailbox.process(s.messages[0])

    assert (escalation.value.cause, escalation.value.settled) == ("halt", True)
    assert await s.status(1) == ("dead", 2)
    with pytest.raises(Stopped):  # nothing more runs here until the supervisor suspends it
        await s.mailbox.process(s.messages[1])
    assert s.handler.calls == [(1, 1), (1, 2)]


# --- escalation (restart intensity) ----------------------------------------------------


async def test_too_many_failures_within_the_period_escalate_before_the_event_is_dead() -> None:
    """Planted: the `if too_many: raise Escalate(..., settled=False)` after `mark_retrying` in
    `Mailbox._failed` removed → fails with `('restart_intensity', True) != (…, False)`: the
    event ran all ten attempts and died before the mailbox escalated."""
    policy = dataclasses.replace(FAST, max_attempts=10, intensity=RestartIntensity(2, 60))
    s = await scene(1, failures=99, run=policy)

    with pytest.raises(Escalate) as escalation:
        await s.mailbox.process(s.messages[0])

    assert (escalation.value.cause, escalation.value.settled) == ("restart_intensity", False)
    assert s.handler.calls == [(1, 1), (1, 2), (1, 3)]
    assert await s.status(1) == ("retrying", 3)  # not finished: its message goes back
    with pytest.raises(Stopped):
        await s.mailbox.process(s.messages[0])


async def test_a_clients_own_restart_intensity_overrides_the_default() -> None:
    s = await scene(1, failures=99, run=dataclasses.replace(FAST, max_attempts=10), max_restarts=1)

    with pytest.raises(Escalate):
        await s.mailbox.process(s.messages[0])

    assert s.handler.calls == [(1, 1), (1, 2)]


# --- the seq rule ----------------------------------------------------------------------


async def test_a_duplicate_delivery_is_not_run_again() -> None:
    s = await scene(1)

    await s.mailbox.process(s.messages[0])
    await s.mailbox.process(s.messages[0])

    assert s.handler.calls == [(1, 1)]


async def test_a_late_copy_of_an_earlier_event_is_a_duplicate() -> None:
    s = await scene(2)

    for seq in (1, 2, 1):
        await s.mailbox.process(s.messages[seq - 1])

    assert s.handler.calls == [(1, 1), (2, 1)]


async def test_an_event_delivered_ahead_of_its_turn_runs_after_the_earlier_ones() -> None:
    """Planted: the `if step is Step.GAP:` block removed from `Mailbox._process` → fails at
    the first assert (`[(3, 1)]`: seq 3 ran first, and the fence refused its outcome)."""
    s = await scene(3)

    await s.mailbox.process(s.messages[2])
    assert s.handler.calls == [(1, 1), (2, 1), (3, 1)]

    await s.mailbox.process(s.messages[0])  # the earlier copies arrive late
    await s.mailbox.process(s.messages[1])
    assert s.handler.calls == [(1, 1), (2, 1), (3, 1)]
    assert [await s.status(seq) for seq in (1, 2, 3)] == [("succeeded", 1)] * 3


async def test_concurrent_copies_of_one_delivery_run_it_once() -> None:
    s = await scene(1)
    s.handler.gate = asyncio.Event()
    first = asyncio.create_task(s.mailbox.process(s.messages[0]))
    second = asyncio.create_task(s.mailbox.process(s.messages[0]))  # a redelivered copy
    await asyncio.wait_for(s.handler.called.wait(), 5)

    s.handler.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)

    assert s.handler.calls == [(1, 1)]


async def test_an_event_finished_by_another_copy_is_not_run_again() -> None:
    """Planted: `event.status in TERMINAL` removed from `MemoryJournal._fenced_event` →
    fails with `[(2, 2)] == []`: seq 2 ran a second time."""
    s = await scene(2)
    await s.mailbox.process(s.messages[0])  # the mailbox now takes seq 2 to be next
    other = s.owner(s.epoch)  # a copy of seq 2 ran elsewhere under the same placement
    await other.process(s.messages[1])
    s.handler.calls.clear()

    await s.mailbox.process(s.messages[1])

    assert s.handler.calls == []
    assert await s.status(2) == ("succeeded", 1)


# --- fencing ---------------------------------------------------------------------------


async def test_a_mailbox_placed_elsewhere_starts_nothing_and_stops() -> None:
    s = await scene(2)
    await s.move()

    with pytest.raises(Fenced):
        await s.mailbox.process(s.messages[0])

    assert s.handler.calls == []
    assert await s.status(1) == ("queued", 0)
    with pytest.raises(Stopped):
        await s.mailbox.process(s.messages[1])


async def test_an_outcome_from_a_stale_placement_is_refused_and_the_new_owner_runs_it() -> None:
    """Planted: `_Client.placed` in actors/store/memory.py returning True → fails with
    `DID NOT RAISE Fenced` (the stale owner records the outcome)."""
    s = await scene(1)
    moved: list[int] = []

    async def move() -> None:
        moved.append(await s.move())

    s.handler.on_call.append(move)  # the mailbox is moved while its handler runs

    with pytest.raises(Fenced):
        await s.mailbox.process(s.messages[0])

    assert await s.status(1) == ("processing", 1)
    await s.owner(moved[0]).process(s.messages[0])
    assert s.handler.calls == [(1, 1), (1, 2)]
    assert await s.status(1) == ("succeeded", 2)


async def test_a_retry_from_a_stale_placement_is_refused() -> None:
    s = await scene(1, failures=99)

    async def move() -> None:
        await s.move()

    s.handler.on_call.append(move)

    with pytest.raises(Fenced):
        await s.mailbox.process(s.messages[0])

    assert s.handler.calls == [(1, 1)]
    assert await s.status(1) == ("processing", 1)
    mailbox = await s.journal.mailbox(s.client)
    assert mailbox is not None
    assert mailbox.restarts == 0


# --- published marks -------------------------------------------------------------------------


async def test_a_delivered_event_leaves_the_outbox_when_its_attempt_starts() -> None:
    """Planted: `delivered=True` dropped from `Mailbox._process` → the event is still in the
    outbox while its handler runs (the gateway's mark would have to update the row again)."""
    s = await scene(1)
    s.handler.gate = asyncio.Event()
    running = asyncio.create_task(s.mailbox.process(s.messages[0]))
    await asyncio.wait_for(s.handler.called.wait(), 5)

    assert await s.journal.unpublished(0, 10) == []

    s.handler.gate.set()
    await asyncio.wait_for(running, 5)


async def test_an_event_the_journal_gave_stays_in_the_outbox_while_it_runs() -> None:
    """Planted: `delivered=True` on every attempt (catch-ups included) → the event leaves the
    outbox although it never went through RabbitMQ, and the relay would never publish it."""
    s = await scene(1)
    s.handler.gate = asyncio.Event()
    catching_up = asyncio.create_task(s.mailbox.catch_up())
    await asyncio.wait_for(s.handler.called.wait(), 5)

    assert [row.id for row in await s.journal.unpublished(0, 10)] == [s.messages[0].event_id]

    s.handler.gate.set()
    await asyncio.wait_for(catching_up, 5)
