"""A burst of activations overlaps its basic.consume round trips over a few channels.

pika runs one synchronous method per channel at a time; the fake channel here does the same
(a lock per channel) and holds each basic.consume until the test lets the broker answer, so
the number of consumes waiting at once is the number of round trips that overlap. No timing.

On the starting code (one consume channel) at most 1 consume waits at a time: the burst of 16
is 16 round trips one after another (and as many waited queue.declare before them).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from dramatiq.brokers.stub import StubBroker

from actors.amqp import QueueCounts
from actors.channels import CONSUME_CHANNELS
from actors.handlers import HandlerRegistry
from actors.host import MailboxHost
from actors.settings import Settings
from actors.store.memory import MemoryJournal

WORKER = "w-1"


class Broker:
    """Counts consumes waiting for their answer, across channels."""

    def __init__(self) -> None:
        self.waiting = 0
        self.most_waiting = 0
        self.answer = asyncio.Event()
        self.answer.set()  # until the burst: attach's own consume is answered at once
        self.declared: list[str] = []


class Channel:
    is_open = True

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._synchronous = asyncio.Lock()  # pika: one synchronous method at a time
        self._tags = 0

    async def qos(self, prefetch_count: int) -> None:
        pass

    async def declare_queue(self, name: str, *args: Any, **kwargs: Any) -> QueueCounts:
        async with self._synchronous:
            self.broker.declared.append(name)
            return QueueCounts(1, 0)

    def declare_queue_nowait(self, name: str, arguments: Any = None) -> None:
        self.broker.declared.append(name)

    async def consume(self, queue: str, on_message: Any, on_cancel: Any = None) -> str:
        async with self._synchronous:
            self.broker.waiting += 1
            self.broker.most_waiting = max(self.broker.most_waiting, self.broker.waiting)
            await self.broker.answer.wait()
            self.broker.waiting -= 1
            self._tags += 1
            return f"ctag-{self._tags}"


class Connection:
    is_open = True

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def channel(self) -> Channel:
        return Channel(self.broker)


class Publisher:
    """The starting code's waited declare went through the publisher's channel."""

    def __init__(self, broker: Broker) -> None:
        self.channel = Channel(broker)

    async def declare_mailbox(self, client_id: str, *, fresh: bool = False) -> QueueCounts:
        return await self.channel.declare_queue(client_id)


class Link:
    def __init__(self, broker: Broker) -> None:
        self.publisher = Publisher(broker)


async def test_a_burst_of_activations_overlaps_its_consume_round_trips() -> None:
    broker = Broker()
    journal = MemoryJournal()
    host = MailboxHost(
        Settings(),
        journal,
        HandlerRegistry(),
        StubBroker(),
        WORKER,
        Link(broker),  # type: ignore[arg-type]
    )
    await host.attach(Connection(broker))  # type: ignore[arg-type]
    broker.answer.clear()
    broker.declared.clear()
    clients = [uuid.UUID(int=n + 1) for n in range(16)]  # every channel gets 4

    starts = [
        asyncio.ensure_future(host.start(client, 1, done_seq=0, last_seq=0)) for client in clients
    ]
    for _ in range(1000):  # loop turns, no timer: the starts run to their consumes
        if broker.waiting >= CONSUME_CHANNELS:
            break
        await asyncio.sleep(0)
    broker.answer.set()
    await asyncio.gather(*starts)

    assert broker.most_waiting == CONSUME_CHANNELS > 1
    assert all(host._active[client].consumer_tag for client in clients)
    assert len(broker.declared) == len(clients)
