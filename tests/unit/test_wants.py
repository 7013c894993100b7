"""The gateway tells the supervisor about the mailboxes one loop turn wants in one message.

A fake publisher records what goes to the broker. On the starting code each caught-up event
sends a MailboxWanted of its own: 40 messages for this burst instead of 1 (and
`MailboxesWanted` does not exist there).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, cast

from actors.broker import BrokerLink
from actors.protocol import Control, EventMessage, MailboxesWanted
from gateway.publishing import Publishing, Wants


class Publisher:
    def __init__(self) -> None:
        self.order: list[str] = []  # "event <client>" and "wanted <n clients>", as sent
        self.told: list[Control] = []
        self.late: set[uuid.UUID] = set()  # events whose publish goes out late
        self.telling = asyncio.Event()  # set at every tell

    async def publish_event(
        self, message: EventMessage, *, on_late: Callable[[EventMessage], None] | None = None
    ) -> None:
        self.order.append(f"event {message.client_id}")
        await asyncio.sleep(0)  # its confirm comes later
        if message.event_id in self.late and on_late is not None:
            on_late(message)

    async def tell_supervisor(self, control: Control, *, persistent: bool = False) -> None:
        self.told.append(control)
        self.order.append(f"wanted {len(getattr(control, 'wanted', ()))}")
        self.telling.set()

    async def told_at_least(self, count: int) -> None:
        """Wait (at most 5 s) until `count` messages were told."""
        async with asyncio.timeout(5):
            while len(self.told) < count:
                self.telling.clear()
                await self.telling.wait()


class Link:
    def __init__(self) -> None:
        self.publisher = Publisher()

    tell_supervisor = BrokerLink.tell_supervisor


class Journal:
    async def mark_published(self, event_ids: Any) -> None:
        pass


async def test_a_burst_of_caught_up_events_is_one_mailboxes_wanted() -> None:
    link = Link()
    publishing = Publishing(cast(Any, link), cast(Any, Journal()))
    burst = [EventMessage(uuid.uuid4(), uuid.uuid4(), 1, "demo.echo", {}, "") for _ in range(40)]
    twice = burst[0]  # a client wanted twice in the turn is told once

    for message in burst:
        publishing.soon(message, wake_supervisor=True)
    publishing.soon(
        EventMessage(uuid.uuid4(), twice.client_id, 2, "demo.echo", {}), wake_supervisor=True
    )
    publishing.soon(
        EventMessage(uuid.uuid4(), uuid.uuid4(), 1, "demo.echo", {}), wake_supervisor=False
    )
    await publishing.finish(5)

    (told,) = link.publisher.told
    assert isinstance(told, MailboxesWanted)
    assert [client for client, _ in told.wanted] == [m.client_id for m in burst]
    # every event's basic.publish went out before the want that names its client
    assert link.publisher.order.index("wanted 40") == 42


async def test_a_mailbox_told_recently_is_not_told_again_until_the_window_has_passed() -> None:
    # Given a gateway that tells a mailbox again only after 1 s, on a clock the test moves
    link = Link()
    now = [100.0]
    publishing = Publishing(cast(Any, link), cast(Any, Journal()))
    publishing.wants = Wants(cast(Any, link), 1.0, clock=lambda: now[0])
    client, other = uuid.uuid4(), uuid.uuid4()

    def caught_up(client_id: uuid.UUID, seq: int) -> None:
        message = EventMessage(uuid.uuid4(), client_id, seq, "demo.echo", {}, "")
        publishing.soon(message, wake_supervisor=True)

    # When its caught-up events come in three turns within the second, and once after it
    caught_up(client, 1)
    await publishing.finish(5)
    now[0] += 0.4
    caught_up(client, 2)
    caught_up(other, 1)  # another client is told, the first one is not
    await publishing.finish(5)
    now[0] += 0.5
    caught_up(client, 3)
    await publishing.finish(5)
    now[0] += 0.2  # 1.1 s after the first want
    caught_up(client, 4)
    await publishing.finish(5)

    # Then it was told at its first event and again after the window, not in between
    told = [m for m in link.publisher.told if isinstance(m, MailboxesWanted)]
    assert len(told) == len(link.publisher.told)
    wanted = [[c for c, _ in message.wanted] for message in told]
    assert wanted == [[client], [other], [client]]


async def test_a_late_publish_tells_its_mailbox_again_within_the_window() -> None:
    """A publish that went out late (a retry, a return, a new connection) may have made its
    queue again after the mailbox ran the event from the journal and deleted the queue: the
    mailbox is told again, even though it was told a moment ago. Planted: `again=True` left
    out in Publishing._late fails at `told_at_least` (TimeoutError: told once)."""
    link = Link()
    now = [100.0]
    publishing = Publishing(cast(Any, link), cast(Any, Journal()))
    publishing.wants = Wants(cast(Any, link), 1.0, clock=lambda: now[0])
    client = uuid.uuid4()
    late = EventMessage(uuid.uuid4(), client, 1, "demo.echo", {}, "")
    link.publisher.late.add(late.event_id)

    publishing.soon(late, wake_supervisor=True)
    await publishing.finish(5)
    await link.publisher.told_at_least(2)  # the second is told at the end of its loop turn

    told = [[c for c, _ in m.wanted] for m in link.publisher.told if isinstance(m, MailboxesWanted)]
    assert told == [[client], [client]]
