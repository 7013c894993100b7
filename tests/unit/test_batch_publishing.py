"""A batch's events are published in seq order: every basic.publish goes out before the next
one's, whatever order the confirms come back in (a fake channel records the order). Beside
the real broker in tests/integration/test_batch_intake.py; red on the code before batches
(no publish_events), and red with the gather's order reversed (checked by planting it)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

from actors.amqp import PublishFailed, Unroutable
from actors.broker import Publisher
from actors.protocol import EventMessage
from actors.settings import Settings


class RecordingChannel:
    """Records publishes; confirms them in reverse order, and refuses `refuse` (by seq)."""

    def __init__(self, refuse: int | None = None) -> None:
        self.is_open = True
        self.waiting = False
        self.published: list[str] = []
        self.declared: list[str] = []
        self._refuse = refuse
        self._confirms: list[asyncio.Future[None]] = []

    async def declare_queue(self, queue: str, arguments: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a round trip: the publishes must not overtake it
        self.declared.append(queue)

    def declare_queue_nowait(self, queue: str, arguments: dict[str, Any]) -> None:
        self.declared.append(queue)

    async def publish(self, queue: str, body: bytes, *, message_id: str) -> None:
        assert queue in self.declared, "published before the queue was declared"
        self.published.append(message_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirms.append(future)
        if len(self._confirms) == self.expected:
            for each in reversed(self._confirms):
                each.set_result(None)
        await future
        if self._refuse is not None and self.published.index(message_id) == self._refuse:
            raise PublishFailed("refused")

    expected = 0


def publisher_on(channel: RecordingChannel) -> Publisher:
    """A Publisher whose channel is open already (the connection is never used)."""
    publisher = Publisher(Settings(), cast(Any, None))
    publisher._channel = cast(Any, channel)
    return publisher


def messages(count: int) -> list[EventMessage]:
    client = uuid.uuid4()
    return [
        EventMessage(uuid.uuid4(), client, seq, "demo.echo", {"n": seq}, "")
        for seq in range(1, count + 1)
    ]


async def test_the_batch_is_published_in_seq_order_after_one_declare() -> None:
    channel = RecordingChannel()
    channel.expected = 20
    batch = messages(20)

    failures = await publisher_on(channel).publish_events(batch)

    assert failures == [None] * 20
    assert channel.published == [str(message.event_id) for message in batch]
    assert len(channel.declared) == 1


async def test_one_refused_publish_is_reported_for_that_event_only() -> None:
    channel = RecordingChannel(refuse=2)
    channel.expected = 4

    failures = await publisher_on(channel).publish_events(messages(4))

    assert [failure is None for failure in failures] == [True, True, False, True]


class DeletingChannel(RecordingChannel):
    """Confirms at once; the first publish to a queue in `gone` is returned (the queue was
    deleted since this channel declared it) and the queue is back once declared again."""

    def __init__(self) -> None:
        super().__init__()
        self.gone: set[str] = set()

    async def publish(self, queue: str, body: bytes, *, message_id: str) -> None:
        if queue in self.gone:
            self.gone.discard(queue)
            raise Unroutable(f"NO_ROUTE ({queue})")
        self.published.append(message_id)


async def test_a_publish_is_reported_late_only_when_it_was_returned_and_published_again() -> None:
    """A returned publish declares the queue again and goes out once more: late, so that the
    gateway asks for the mailbox again (on_late); one that went straight in is not. Planted:
    `late = True` removed from Publisher._publish_once's return path → fails at `late`
    ([] == [...])."""
    channel = DeletingChannel()
    publisher = publisher_on(channel)
    on_time, returned = messages(2)
    queue = publisher._settings.mailbox_queue(str(on_time.client_id))
    late: list[EventMessage] = []

    await publisher.publish_event(on_time, on_late=late.append)
    assert late == []  # declared and published on an open channel
    channel.gone.add(queue)  # its mailbox passivated and deleted the queue
    await publisher.publish_event(returned, on_late=late.append)

    assert late == [returned]
    assert channel.published == [str(on_time.event_id), str(returned.event_id)]
    assert channel.declared == [queue, queue]
