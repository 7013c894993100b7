"""A batch's events go to the queue as one message per hundred, the last event's of each, in
seq order, and each confirmed message marks its hundred published (the mailbox runs the
others from the journal first: a gap); a refused one leaves its events to the relay. A fake
channel records what the broker was sent. Beside the real broker in
tests/integration/test_batch_intake.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

from actors.amqp import PublishFailed, Unroutable
from actors.broker import Publisher
from actors.protocol import EventMessage, MailboxesWanted
from actors.settings import Settings
from gateway.publishing import BATCH_MESSAGE_EVENTS, Publishing


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


class Link:
    """The gateway's broker link: its publisher, and the facts told to the supervisor."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.told: list[MailboxesWanted] = []

    async def tell_supervisor(self, fact: MailboxesWanted) -> bool:
        self.told.append(fact)
        return True


class MarkingJournal:
    def __init__(self) -> None:
        self.marked: list[uuid.UUID] = []

    async def mark_published(self, event_ids: list[uuid.UUID]) -> None:
        self.marked.extend(event_ids)


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


async def publish(
    batch: list[EventMessage], *, sent: int, refuse: int | None = None, wake: bool = True
) -> tuple[RecordingChannel, Link, MarkingJournal]:
    """The gateway's Publishing of `batch` (`sent` messages expected), through to its marks."""
    channel = RecordingChannel(refuse)
    channel.expected = sent
    link, journal = Link(publisher_on(channel)), MarkingJournal()
    publishing = Publishing(cast(Any, link), cast(Any, journal))
    publishing.soon_in_order(batch, wake_supervisor=wake)
    await publishing.finish(5)
    await publishing.marks.flush()
    return channel, link, journal


async def test_a_batch_goes_out_as_one_message_and_all_its_events_are_marked_published() -> None:
    """Planted: _publish_all publishing every message again → 20 published, not 1."""
    batch = messages(20)

    channel, link, journal = await publish(batch, sent=1)

    assert channel.published == [str(batch[-1].event_id)]
    assert len(channel.declared) == 1
    assert journal.marked == [message.event_id for message in batch]
    assert [fact.wanted for fact in link.told] == [((batch[0].client_id, ""),)]


async def test_a_long_batch_is_one_message_per_hundred_events_the_last_of_each() -> None:
    """A delivery runs at most BATCH_MESSAGE_EVENTS events under it (consumer_timeout).
    Planted: the runs' size ignored (one message for all 250) → 1 published, not 3."""
    batch = messages(250)

    channel, _, journal = await publish(batch, sent=3, wake=False)

    assert BATCH_MESSAGE_EVENTS == 100
    assert channel.published == [str(batch[i].event_id) for i in (99, 199, 249)]
    assert journal.marked == [message.event_id for message in batch]


async def test_a_refused_message_leaves_its_run_of_events_to_the_relay() -> None:
    batch = messages(250)

    _, link, journal = await publish(batch, sent=3, refuse=1)

    # events 101-200 stay unpublished: the relay publishes them
    assert journal.marked == [message.event_id for message in batch[:100] + batch[200:]]
    assert len(link.told) == 1


async def test_a_refused_batch_message_leaves_every_event_to_the_relay() -> None:
    _, link, journal = await publish(messages(5), sent=1, refuse=0)

    assert journal.marked == []  # unpublished: the relay publishes them
    assert link.told == []  # nothing in the queue for a mailbox to take


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
