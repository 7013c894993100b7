"""The mailbox host on the in-memory journal: passivation, escalation and a delivery for a
mailbox placed elsewhere.

Small fakes stand in for the AMQP connection, its channels and the publisher (as in
test_host_catch_up.py); the host is driven only through what the worker calls (`attach`,
`start`, `passivate_idle`, `drain`) and the deliveries a channel hands it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from pika.spec import BasicProperties

from actors.amqp import AmqpError, Delivery
from actors.broker import BrokerLink
from actors.channels import ConsumeChannels
from actors.handlers import Event, HandlerRegistry
from actors.host import MailboxHost
from actors.protocol import (
    Control,
    EventMessage,
    MailboxFailed,
    MailboxPassivated,
    Start,
    StartMailboxes,
)
from actors.settings import Settings
from actors.store.memory import MemoryJournal
from actors.store.rows import Position
from supervision.supervisor import Supervisor

WORKER = "w-1"
SETTINGS = Settings(
    idle_timeout=0.1, max_attempts=10, restart_intensity=1, backoff_min=0.0, backoff_max=0.0
)


class Channel:
    """Consumers by tag; acks and nacks go to `settled` as ("ack" | "requeue" | "drop")."""

    def __init__(self) -> None:
        self.is_open = True
        self.closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.consumers: dict[str, tuple[str, Callable[[Delivery], None]]] = {}
        self.cancelled: list[str] = []
        self.settled: asyncio.Queue[str] = asyncio.Queue()
        self.subscribed = asyncio.Event()  # a consumer was registered

    async def qos(self, prefetch_count: int) -> None:
        pass

    async def declare_queue(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def declare_queue_nowait(self, name: str, arguments: Any = None) -> None:
        pass

    async def consume(
        self, queue: str, on_message: Callable[[Delivery], None], on_cancel: Any = None
    ) -> str:
        tag = f"ctag-{len(self.consumers) + len(self.cancelled) + 1}"
        self.consumers[tag] = (queue, on_message)
        self.subscribed.set()
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        self.consumers.pop(consumer_tag, None)
        self.cancelled.append(consumer_tag)

    def ack(self, delivery_tag: int) -> None:
        self.settled.put_nowait("ack")

    def nack(self, delivery_tag: int, *, requeue: bool = True) -> None:
        self.settled.put_nowait("requeue" if requeue else "drop")


class Connection:
    is_open = True

    def __init__(self) -> None:
        self.channels: list[Channel] = []

    async def channel(self) -> Channel:
        self.channels.append(Channel())
        return self.channels[-1]


class Publisher:
    """What the host tells the supervisor; `unreachable`: the broker is away."""

    def __init__(self) -> None:
        self.told: asyncio.Queue[Control] = asyncio.Queue()
        self.unreachable = False
        self.deleted: list[str] = []  # queues deleted at passivation
        self.messages_arrived = 0  # passivations whose queue holds a message by the delete
        self.deletes_failing = 0  # passivations whose delete finds the broker away

    async def delete_idle_mailbox(self, client_id: str) -> bool:
        if self.deletes_failing:
            self.deletes_failing -= 1
            raise AmqpError("channel closed: (541, 'INTERNAL_ERROR')")
        if self.messages_arrived:
            self.messages_arrived -= 1
            return False
        self.deleted.append(client_id)
        return True

    async def tell_supervisor(self, control: Control, *, persistent: bool = False) -> None:
        if self.unreachable:
            raise AmqpError("no broker connection")
        self.told.put_nowait(control)


class Link:
    def __init__(self) -> None:
        self.publisher = Publisher()

    tell_supervisor = BrokerLink.tell_supervisor  # the real rule: never raises, says if told


class Handler:
    """`demo.t`: fails when `failing`; waits for `gate` when there is one."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = asyncio.Event()
        self.failing = False
        self.gate: asyncio.Event | None = None

    async def handle(self, event: Event) -> None:
        self.calls += 1
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise RuntimeError("boom")


class Worker:
    """A host on a fake connection, with one client placed on it."""

    def __init__(
        self, journal: MemoryJournal, client: uuid.UUID, epoch: int, settings: Settings = SETTINGS
    ) -> None:
        self.journal, self.client, self.epoch = journal, client, epoch
        self.link, self.connection, self.handler = Link(), Connection(), Handler()
        handlers = HandlerRegistry()
        handlers.register("demo.t", self.handler.handle)
        broker = StubBroker(middleware=[])
        self.host = MailboxHost(settings, journal, handlers, broker, WORKER, self.link)  # type: ignore[arg-type]

    @property
    def channel(self) -> Channel:
        """The client's consume channel (attach opens the control channel first)."""
        return self.connection.channels[1 + ConsumeChannels.slot(self.client)]

    async def deliver(self, seq: int) -> None:
        (row,) = await self.journal.events_between(self.client, seq - 1, seq + 1)
        queue = SETTINGS.mailbox_queue(str(self.client))
        (on_message,) = [m for q, m in self.channel.consumers.values() if q == queue]
        body = EventMessage.of(row).to_dramatiq(queue).encode()
        on_message(Delivery(seq, False, BasicProperties(), body))

    async def told(self) -> Control:
        return await asyncio.wait_for(self.link.publisher.told.get(), 5)

    async def settled(self) -> str:
        return await asyncio.wait_for(self.channel.settled.get(), 5)


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    journal = MemoryJournal()
    client = await journal.create_client("c", "x", False)
    await journal.heartbeat(WORKER)
    placed = (await journal.place_mailboxes({client: WORKER}, 5.0, True))[client]
    await journal.accept(client, "demo.t", {})  # after the placement: it comes by the queue
    worker = Worker(journal, client, placed.epoch)
    await worker.host.attach(worker.connection)  # type: ignore[arg-type]
    await worker.host.start(client, placed.epoch, done_seq=0, last_seq=0)
    yield worker
    await worker.host.drain(5.0)


@pytest.fixture
async def passivating(worker: Worker) -> AsyncIterator[None]:
    """The host's passivation loop, running."""
    stopping = asyncio.Event()
    loop = asyncio.create_task(worker.host.passivate_idle(stopping))
    yield
    stopping.set()
    await asyncio.wait_for(loop, 5)


async def idle_until_passivated(worker: Worker) -> None:
    """Run the passivation loop until the supervisor is told the mailbox passivated."""
    stopping = asyncio.Event()
    loop = asyncio.create_task(worker.host.passivate_idle(stopping))
    try:
        assert await worker.told() == MailboxPassivated(worker.client, WORKER)
    finally:
        stopping.set()
        await asyncio.wait_for(loop, 5)


async def test_an_idle_mailbox_is_passivated_and_the_supervisor_told(
    worker: Worker, passivating: None
) -> None:
    await worker.deliver(1)  # its one event: nothing unfinished in the journal
    assert await worker.settled() == "ack"
    told = await worker.told()

    assert told == MailboxPassivated(worker.client, WORKER)
    assert worker.channel.cancelled == ["ctag-1"]
    assert worker.link.publisher.deleted == [str(worker.client)]  # its empty queue
    position = await worker.journal.position(worker.client)
    assert position is not None
    assert (position.state, position.host, position.epoch) == ("idle", None, worker.epoch + 1)


async def test_a_mailbox_whose_queue_got_a_message_meanwhile_stays_active(
    worker: Worker,
) -> None:
    """The queue's delete is refused (a message came after the consumer's cancel): the
    mailbox consumes again and stays placed here, and the next passivation deletes it.
    Planted: `_passivate_now` ignoring `_delete_queue`'s False → fails at `cancelled`
    (released after one cancel, with a message in its queue)."""
    await worker.deliver(1)
    assert await worker.settled() == "ack"
    worker.link.publisher.messages_arrived = 1
    await idle_until_passivated(worker)
    # consumed again after the refused delete, passivated again once idle
    assert worker.channel.cancelled == ["ctag-1", "ctag-2"]
    assert worker.link.publisher.deleted == [str(worker.client)]


async def test_a_mailbox_whose_queue_could_not_be_deleted_stays_until_it_can_be(
    worker: Worker,
) -> None:
    """The broker cannot be asked to delete the idle queue (the link lost under the delete):
    the mailbox is not released with its queue left behind, where nothing would delete it
    until the client's next activation. It consumes again and, at its next idle check,
    passivates with its queue deleted. Planted: `_delete_queue` returning True on an
    AmqpError (as it did) → fails at `cancelled` (released after one cancel, queue kept)."""
    await worker.deliver(1)
    assert await worker.settled() == "ack"
    worker.link.publisher.deletes_failing = 1
    await idle_until_passivated(worker)
    assert worker.channel.cancelled == ["ctag-1", "ctag-2"]
    assert worker.link.publisher.deleted == [str(worker.client)]


async def test_a_queue_the_broker_keeps_refusing_to_delete_is_kept_after_three_tries(
    worker: Worker,
) -> None:
    """The delete fails at every idle check with the link up (a queue the broker cannot
    delete now): after DELETE_TRIES tries the mailbox passivates with its queue kept, instead
    of resubscribing and catching up at every idle check for ever. Planted: DELETE_TRIES
    ignored (always False on an AmqpError) → fails at `cancelled` (a fourth subscription,
    whose delete the fake lets through)."""
    await worker.deliver(1)
    assert await worker.settled() == "ack"
    worker.link.publisher.deletes_failing = 3
    await idle_until_passivated(worker)
    assert worker.channel.cancelled == ["ctag-1", "ctag-2", "ctag-3"]
    assert worker.link.publisher.deleted == []  # kept


async def test_an_event_unfinished_when_the_queue_is_deleted_is_taken_from_the_journal(
    worker: Worker, passivating: None
) -> None:
    """The journal has an event the deleted queue may have held (its publish landed between
    a quorum queue's counts and its delete): the mailbox stays, runs it from the journal,
    and is passivated after. Planted: the journal read after the delete removed from
    `_delete_queue` → fails at `calls` (released with the event never run: 0 == 1)."""
    assert await worker.told() == MailboxPassivated(worker.client, WORKER)

    assert worker.handler.calls == 1
    assert worker.channel.cancelled == ["ctag-1", "ctag-2"]
    position = await worker.journal.position(worker.client)
    assert position is not None
    assert (position.done_seq, position.last_seq, position.state) == (1, 1, "idle")


async def test_a_mailbox_placed_elsewhere_while_idle_here_keeps_its_queue(
    worker: Worker, passivating: None
) -> None:
    """This worker was taken for dead, and the mailbox placed on w-2, while it sat idle here:
    its queue is w-2's now, so the passivation must neither delete it nor release it.
    Before the `_moved` read in `_passivate_now`: fails at `deleted` ([client] != [])."""
    await worker.deliver(1)
    assert await worker.settled() == "ack"
    await worker.journal.forget_worker(WORKER)
    await worker.journal.heartbeat("w-2")
    moved = (await worker.journal.place_mailboxes({worker.client: "w-2"}, 5.0, True))[worker.client]

    await until(lambda: not worker.host._active, "the mailbox to be let go")

    assert worker.link.publisher.deleted == []
    assert worker.link.publisher.told.empty()  # let go, not passivated
    position = await worker.journal.position(worker.client)
    assert position is not None
    assert (position.state, position.host, position.epoch) == ("active", "w-2", moved.epoch)


async def test_a_passivation_releases_only_the_placement_it_runs_under() -> None:
    """Taken for dead and placed here again under a new epoch, before reconcile() adopted
    it: the passivation of the old placement must not release the new one (deletes off,
    so that nothing else stops it). Before `release_mailbox(..., epoch=)`: fails with
    ('idle', None, ...) != ('active', 'w-1', ...)."""
    journal = MemoryJournal()
    client = await journal.create_client("c", "x", False)
    await journal.heartbeat(WORKER)
    placed = (await journal.place_mailboxes({client: WORKER}, 5.0, True))[client]
    worker = Worker(
        journal, client, placed.epoch, dataclasses.replace(SETTINGS, delete_idle_queues="off")
    )
    await worker.host.attach(worker.connection)  # type: ignore[arg-type]
    await worker.host.start(client, placed.epoch, done_seq=0, last_seq=0)
    await journal.release_mailbox(client, WORKER)
    anew = (await journal.place_mailboxes({client: WORKER}, 5.0, True))[client]
    stopping = asyncio.Event()
    loop = asyncio.create_task(worker.host.passivate_idle(stopping))
    try:
        assert await worker.told() == MailboxPassivated(client, WORKER)
    finally:
        stopping.set()
        await asyncio.wait_for(loop, 5)
        await worker.host.drain(5.0)

    position = await journal.position(client)
    assert position is not None
    assert (position.state, position.host, position.epoch) == ("active", WORKER, anew.epoch)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait up to 5 s for `condition`."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_mailbox_is_not_passivated_while_it_processes(
    worker: Worker, passivating: None
) -> None:
    """Planted: `not entry.mailbox.busy` removed from `MailboxHost.passivate_idle` → fails
    at `assert worker.channel.cancelled == []` (its consumer is cancelled mid-event)."""
    worker.handler.gate = asyncio.Event()
    await worker.deliver(1)
    await asyncio.wait_for(worker.handler.called.wait(), 5)

    with pytest.raises(TimeoutError):  # three idle timeouts pass while the handler runs
        await asyncio.wait_for(worker.link.publisher.told.get(), 3 * SETTINGS.idle_timeout)
    assert worker.channel.cancelled == []

    worker.handler.gate.set()
    assert await worker.settled() == "ack"
    assert await worker.told() == MailboxPassivated(worker.client, WORKER)


async def test_a_failing_mailbox_stops_here_and_the_supervisor_suspends_it(
    worker: Worker,
) -> None:
    worker.handler.failing = True

    await worker.deliver(1)

    assert await worker.settled() == "requeue"  # not finished: back to the queue
    failed = await worker.told()
    assert isinstance(failed, MailboxFailed)
    assert (failed.cause, failed.worker_id, failed.epoch) == ("restart_intensity", WORKER, 1)
    assert worker.channel.consumers == {}
    assert worker.handler.calls == 2  # one failure more than the intensity allows
    supervisor = Supervisor(SETTINGS, worker.journal, worker.link, "w-2")  # type: ignore[arg-type]
    await supervisor._dispatch([failed])
    position = await worker.journal.position(worker.client)
    assert position is not None
    assert position.state == "suspended"


async def test_with_the_supervisor_unreachable_the_host_suspends_the_mailbox_itself(
    worker: Worker,
) -> None:
    """Planted: the `suspend_mailbox` call removed from `MailboxHost._escalate` → fails with
    `'active' == 'suspended'` (the journal goes on placing the mailbox here)."""
    worker.handler.failing = True
    worker.link.publisher.unreachable = True

    await worker.deliver(1)

    assert await worker.settled() == "requeue"
    await worker.host.drain(5.0)  # the delivery's task ends: the escalation is done

    mailbox = await worker.journal.mailbox(worker.client)
    assert mailbox is not None
    assert mailbox.state == "suspended"
    assert mailbox.suspended_reason is not None
    assert "restart intensity" in mailbox.suspended_reason


async def test_a_delivery_for_a_mailbox_placed_elsewhere_is_requeued_and_not_consumed(
    worker: Worker,
) -> None:
    await worker.journal.forget_worker(WORKER)
    await worker.journal.heartbeat("w-2")
    await worker.journal.place_mailboxes({worker.client: "w-2"}, 5.0, True)

    await worker.deliver(1)

    assert await worker.settled() == "requeue"
    assert worker.handler.calls == 0
    assert worker.channel.cancelled == ["ctag-1"]


class CountingJournal(MemoryJournal):
    """Counts the reads of a client's position (`client_position` in the real journal)."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = 0

    async def position(self, client_id: uuid.UUID) -> Position | None:
        self.positions += 1
        return await super().position(client_id)


async def test_a_mailbox_started_by_start_mailboxes_takes_done_seq_from_the_message() -> None:
    """The placement's done_seq travels in StartMailboxes: the new mailbox runs the next
    event without reading the client's position. On the starting code the host does not
    know StartMailboxes (it is dropped as malformed: nothing consumes); planted, ignoring
    `start.done_seq` in `_on_control` → one position read."""
    journal = CountingJournal()
    client = await journal.create_client("c", "x", False)
    for _ in range(2):
        await journal.accept(client, "demo.t", {})
    (first, _) = await journal.events_between(client, 0, 3)
    await journal.record_outcome(first.id, client, 1, "succeeded", 1, {}, None, epoch=None)
    await journal.heartbeat(WORKER)
    placed = (await journal.place_mailboxes({client: WORKER}, 5.0, True))[client]
    worker = Worker(journal, client, placed.epoch)
    await worker.host.attach(worker.connection)  # type: ignore[arg-type]
    start = StartMailboxes((Start(client, placed.epoch, placed.done_seq, placed.last_seq),))
    control = worker.connection.channels[0]
    (_, on_control), *_ = control.consumers.values()
    journal.positions = 0

    on_control(Delivery(1, False, BasicProperties(), start.encode()))
    await asyncio.wait_for(worker.channel.subscribed.wait(), 5)
    await worker.deliver(2)
    assert await worker.settled() == "ack"

    assert worker.handler.calls == 1
    assert (await journal.position(client)).done_seq == 2  # type: ignore[union-attr]
    assert journal.positions == 1  # the read just above, none by the mailbox
    await worker.host.drain(5.0)
