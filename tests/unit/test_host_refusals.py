"""A consume channel the broker closes: a refused queue.declare is told apart and fails its own
mailbox only, the channel is reopened after a backoff, and no consumer is forgotten.

The fake channel does what RabbitMQ does with a nowait queue.declare it refuses: it closes the
whole channel at its next turn, failing every basic.consume still waiting on it (pika hands
them the close reason, here ChannelClosed with the reply code). Real RabbitMQ does the same in
tests/integration/test_queue_refusal.py.

Planted (each fails the test named, on this fake):
- `entry.suspect = True` removed from MailboxHost._subscribe → the refused mailbox declares
  nowait on every reopened channel and never escalates: the first two tests time out waiting
  for MailboxFailed, the consume channel closed again and again;
- the `Stage.CONSUMING and entry.channel is ...` skip removed from MailboxHost._resubscribe →
  test_a_mailbox_started_while_attach_opens_the_channels_keeps_one_consumer (two consumers of
  one queue on the channel, the first forgotten);
- ConsumeChannels.pause skipped in _reopen (the old code reopened at once) →
  test_a_consume_channel_closed_again_and_again_is_reopened_after_a_growing_backoff;
- `continue` in ConsumeChannels._reopen made `return` (the old code never retried a failed
  reopen) → test_a_consume_channel_that_fails_to_reopen_is_reopened_later.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import REGISTRY

from actors.amqp import AmqpError, ChannelClosed, QueueCounts
from actors.channels import CHANNEL_BACKOFF, CONSUME_CHANNELS, ConsumeChannels
from actors.handlers import HandlerRegistry
from actors.host import MailboxHost
from actors.lifecycle import Stage
from actors.protocol import Control, MailboxFailed
from actors.settings import Settings
from actors.states import SuspensionCause
from actors.store.memory import MemoryJournal

WORKER = "w-1"
SETTINGS = Settings(backoff_min=0.0, backoff_max=0.0)
# Three clients whose mailboxes share consume channel 0.
GOOD, BAD, OTHER = (uuid.UUID(int=CONSUME_CHANNELS * n) for n in (1, 2, 3))


def queue(client: uuid.UUID) -> str:
    return SETTINGS.mailbox_queue(str(client))


class Broker:
    """Refuses the declares of the queues in `refusing`: {queue: [reply codes, in turn]},
    then declares them."""

    def __init__(self) -> None:
        self.refusing: dict[str, list[int]] = {}
        self.refused_on_consume_channels = 0
        self.apart: list[str] = []  # queues declared waited, on a throwaway connection

    def refusal(self, name: str) -> int | None:
        codes = self.refusing.get(name)
        return codes.pop(0) if codes else None


#: Hard errors: RabbitMQ closes the whole connection (541 INTERNAL_ERROR: a quorum queue whose
#: cluster is not formed); the others close the channel (404, 406).
HARD = frozenset({541})


class Channel:
    def __init__(self, broker: Broker, connection: Connection) -> None:
        self.broker = broker
        self.connection = connection
        self.is_open = True
        self.closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.consumers: dict[str, str] = {}  # tag -> queue
        self._waiting: list[asyncio.Future[None]] = []
        self._tags = 0

    async def qos(self, prefetch_count: int) -> None:
        pass

    def declare_queue_nowait(self, name: str, arguments: Any = None) -> None:
        if not self.is_open:
            raise AmqpError("channel is closed")
        code = self.broker.refusal(name)
        if code is not None:  # the broker answers with a close, after this turn
            self.broker.refused_on_consume_channels += 1
            asyncio.get_running_loop().call_soon(self.refused, code)

    async def declare_queue(self, name: str, arguments: Any = None, **kwargs: Any) -> QueueCounts:
        self.broker.apart.append(name)
        code = self.broker.refusal(name)
        if code is not None:
            self.refused(code)
            raise ChannelClosed(f"channel closed: ({code}, 'refused {name}')", code)
        return QueueCounts(0, 0)

    def refused(self, code: int) -> None:
        if code in HARD:
            self.connection.lose(code)
        else:
            self.refuse(code)

    def refuse(self, code: int) -> None:
        if not self.is_open:
            return
        self.is_open = False
        error = ChannelClosed(f"channel closed: ({code}, 'refused')", code)
        for waiting in self._waiting:
            if not waiting.done():
                waiting.set_exception(error)
        self.consumers.clear()
        self.closed.set_result(error)

    async def consume(self, name: str, on_message: Any, on_cancel: Any = None) -> str:
        if not self.is_open:
            raise AmqpError("channel is closed")
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        asyncio.get_running_loop().call_soon(lambda: answer.done() or answer.set_result(None))
        await answer  # consume-ok at the next turn, unless the channel closes first
        self._tags += 1
        tag = f"ctag-{id(self)}-{self._tags}"
        self.consumers[tag] = name
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        self.consumers.pop(consumer_tag, None)

    async def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self.closed.set_result(ChannelClosed("closed by us"))

    def ack(self, delivery_tag: int) -> None:
        pass

    def nack(self, delivery_tag: int, *, requeue: bool = True) -> None:
        pass


class Connection:
    """Opens channels; the `gate_at`-th waits for `gate` (counting from 1), and the next
    `failing` fail."""

    def __init__(self, broker: Broker, gate_at: int = 0) -> None:
        self.broker = broker
        self.is_open = True
        self.channels: list[Channel] = []
        self.gate_at = gate_at
        self.gate = asyncio.Event()
        self.gated = asyncio.Event()
        self.failing = 0
        self.opened = asyncio.Event()  # set by each channel opened

    async def channel(self) -> Channel:
        if self.failing:
            self.failing -= 1
            raise AmqpError("the broker did not answer within 10 s")
        if len(self.channels) + 1 == self.gate_at:
            self.gated.set()
            await self.gate.wait()
        self.channels.append(Channel(self.broker, self))
        self.opened.set()
        return self.channels[-1]

    def lose(self, code: int) -> None:
        """The broker closes the connection, and every channel with it."""
        self.is_open = False
        for channel in self.channels:
            channel.refuse(code)

    async def another(self, purpose: str) -> Connection:
        return Connection(self.broker)  # its channels are not counted with this one's

    async def close(self) -> None:
        pass


class Publisher:
    def __init__(self) -> None:
        self.told: asyncio.Queue[Control] = asyncio.Queue()

    async def tell_supervisor(self, control: Control, *, persistent: bool = False) -> None:
        self.told.put_nowait(control)


class Link:
    def __init__(self) -> None:
        self.publisher = Publisher()

    async def tell_supervisor(self, fact: Control, *, persistent: bool = False) -> bool:
        await self.publisher.tell_supervisor(fact, persistent=persistent)
        return True


class Placed(MemoryJournal):
    """Places the three clients on this worker (read by attach on a reconnection)."""

    async def mailboxes_placed_on(self, worker_id: str) -> dict[uuid.UUID, int]:
        return dict.fromkeys((GOOD, BAD, OTHER), 1)


def hosting(link: Link, journal: MemoryJournal | None = None) -> MailboxHost:
    return MailboxHost(
        SETTINGS,
        journal or MemoryJournal(),
        HandlerRegistry(),
        StubBroker(middleware=[]),
        WORKER,
        link,  # type: ignore[arg-type]
    )


async def settled(host: MailboxHost) -> None:
    while pending := [task for task in host._tasks if not task.done()]:
        await asyncio.wait(pending)


def refusals(code: str) -> float:
    return REGISTRY.get_sample_value("seriatim_mailbox_queue_refusals_total", {"code": code}) or 0


async def start_three(host: MailboxHost) -> None:
    """As a StartMailboxes does: every start spawned at once, in this order."""
    await asyncio.gather(
        *(host.start(client, 1, done_seq=0, last_seq=0) for client in (GOOD, BAD, OTHER))
    )


def consuming_once(host: MailboxHost, client: uuid.UUID) -> bool:
    """The client's mailbox consumes on its slot's open channel, with one consumer there."""
    entry = host._active.get(client)
    channel: Any = host._channels.of(client)
    return (
        entry is not None
        and entry.stage is Stage.CONSUMING
        and channel is not None
        and channel.is_open
        and entry.channel is channel
        and [q for q in channel.consumers.values() if q == queue(client)] == [queue(client)]
    )


async def test_a_refused_declare_fails_its_own_mailbox_and_the_others_consume_again() -> None:
    # Given a mailbox whose queue exists with other arguments (406), between two on its channel
    broker = Broker()
    broker.refusing[queue(BAD)] = [406, 406]
    link = Link()
    host = hosting(link)
    connection = Connection(broker)
    await host.attach(connection)  # type: ignore[arg-type]
    refused_before = refusals("406")

    # When the three are started at once
    await start_three(host)
    told = await asyncio.wait_for(link.publisher.told.get(), 5)
    await settled(host)

    # Then the refusal is the refused mailbox's alone: it escalates, once, ...
    assert isinstance(told, MailboxFailed)
    assert (told.client_id, told.cause, told.epoch) == (BAD, SuspensionCause.QUEUE_REFUSED, 1)
    assert "406" in told.reason
    assert BAD not in host._active
    assert refusals("406") - refused_before == 1
    # ...told by a waited declare apart, after one refusal on the shared channel, ...
    assert broker.refused_on_consume_channels == 1
    assert queue(BAD) in broker.apart
    # ...and the others consume again on the reopened channel, one consumer each
    assert consuming_once(host, GOOD)
    assert consuming_once(host, OTHER)
    assert link.publisher.told.empty()
    await host.drain(1)


async def test_a_refusal_that_passes_is_retried_with_backoff_and_the_mailbox_consumes() -> None:
    """404 (a classic queue whose node is down): not the mailbox's fault for long."""
    # Given a queue refused three times with 404, then declared
    broker = Broker()
    broker.refusing[queue(BAD)] = [404, 404, 404]
    link = Link()
    host = hosting(link)
    connection = Connection(broker)
    await host.attach(connection)  # type: ignore[arg-type]
    refused_before = refusals("404")

    # When the three are started at once
    await start_three(host)
    await settled(host)

    # Then it consumes after two retries apart (the policy's backoff, 0 s here), nothing
    # escalated; the shared channel was closed once, and the others consume too
    assert consuming_once(host, BAD)
    assert refusals("404") - refused_before == 2
    assert link.publisher.told.empty()
    assert broker.refused_on_consume_channels == 1
    assert broker.apart.count(queue(BAD)) == 3
    assert consuming_once(host, GOOD)
    assert consuming_once(host, OTHER)
    await host.drain(1)


async def test_a_refusal_that_closes_the_connection_is_told_apart_on_the_next_one() -> None:
    """541 is a hard error: RabbitMQ closes the whole connection, every channel with it."""
    # Given a queue refused twice with 541 (then declared), and the three mailboxes placed here
    broker = Broker()
    broker.refusing[queue(BAD)] = [541, 541]
    link = Link()
    host = hosting(link, Placed())
    first = Connection(broker)
    await host.attach(first)  # type: ignore[arg-type]
    refused_before = refusals("541")

    # When the three are started at once, the connection is lost, and the link reconnects
    await start_three(host)
    await settled(host)
    assert not first.is_open
    second = Connection(broker)
    await host.attach(second)  # type: ignore[arg-type]
    await settled(host)

    # Then the refusal is told apart (on a connection of its own, counted once, retried), and
    # the new connection stays up with the three consuming on it, nothing escalated
    assert second.is_open
    assert broker.refused_on_consume_channels == 1
    assert refusals("541") - refused_before == 1
    assert broker.apart.count(queue(BAD)) == 2
    assert all(consuming_once(host, client) for client in (GOOD, BAD, OTHER))
    assert link.publisher.told.empty()
    await host.drain(1)


async def test_a_mailbox_started_while_attach_opens_the_channels_keeps_one_consumer() -> None:
    # Given attach waiting for consume channel 1 (the control channel and channel 0 open)
    broker = Broker()
    host = hosting(Link(), Placed())
    connection = Connection(broker, gate_at=3)
    attaching = asyncio.ensure_future(host.attach(connection))  # type: ignore[arg-type]
    await connection.gated.wait()

    # When a mailbox of channel 0 is started meanwhile (a StartMailboxes), then attach ends
    await host.start(GOOD, 1, done_seq=0, last_seq=0)
    assert host._active[GOOD].stage is Stage.CONSUMING
    connection.gate.set()
    await attaching
    await settled(host)

    # Then it has one consumer, the one the host knows
    entry = host._active[GOOD]
    channel = connection.channels[1]
    assert list(channel.consumers) == [entry.consumer_tag]
    await host.drain(1)


async def test_a_consume_channel_closed_again_and_again_is_reopened_after_a_growing_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a host whose backoff waits are held until the test lets them end
    broker = Broker()
    host = hosting(Link())
    connection = Connection(broker)
    await host.attach(connection)  # type: ignore[arg-type]
    waits: asyncio.Queue[tuple[float, asyncio.Event]] = asyncio.Queue()

    async def held(seconds: float) -> None:
        done = asyncio.Event()
        waits.put_nowait((seconds, done))
        await done.wait()

    monkeypatch.setattr(host._channels, "pause", held)
    opened = len(connection.channels)

    # When the broker closes consume channel 0 five times in a row
    delays = []
    for _ in range(5):
        host._channels.channels[0].refuse(406)  # type: ignore[union-attr]
        seconds, done = await asyncio.wait_for(waits.get(), 5)
        # Then nothing is reopened before the wait ends...
        await asyncio.sleep(0)
        assert len(connection.channels) == opened
        delays.append(seconds)
        connection.opened.clear()
        done.set()
        await asyncio.wait_for(connection.opened.wait(), 5)
        opened = len(connection.channels)

    # ...and each wait is the channel backoff's for that many closes in a row (jittered)
    for closes, seconds in enumerate(delays, start=1):
        longest = CHANNEL_BACKOFF.delay(closes, rand=0.0)
        assert longest * (1 - CHANNEL_BACKOFF.jitter) <= seconds <= longest
    assert delays[4] > delays[0]
    await host.drain(1)


async def test_a_consume_channel_that_fails_to_reopen_is_reopened_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a consuming mailbox, and a host whose backoff waits end at once
    broker = Broker()
    host = hosting(Link())
    connection = Connection(broker)
    await host.attach(connection)  # type: ignore[arg-type]
    await host.start(GOOD, 1, done_seq=0, last_seq=0)

    async def at_once(seconds: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(host._channels, "pause", at_once)

    # When the broker closes its channel, and the first two reopens fail
    connection.failing = 2
    host._channels.channels[0].refuse(404)  # type: ignore[union-attr]
    await asyncio.sleep(0)
    await settled(host)

    # Then the channel is reopened all the same, and the mailbox consumes on it
    assert connection.failing == 0
    assert consuming_once(host, GOOD)
    await host.drain(1)


def test_the_consume_channel_of_a_client_is_fixed() -> None:
    assert {ConsumeChannels.slot(client) for client in (GOOD, BAD, OTHER)} == {0}
