"""Publishing accepted events after the answer: confirmed publishes off the request path, then
marks in the journal in batches. What is never confirmed is left to the relay."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable

from actors.amqp import PublishFailed
from actors.broker import BrokerLink, Publisher
from actors.outages import UNAVAILABLE
from actors.protocol import EventMessage, MailboxesWanted
from actors.store import Journal

log = logging.getLogger(__name__)

MAX_PUBLISHING = 10_000
#: Seconds from a confirm to the journal's published mark at the earliest (PublishedMarks).
MARK_DELAY = 0.5
#: Clients per MailboxesWanted message.
MAX_WANTED = 1000
#: A mailbox told to the supervisor this recently is not told again (seconds): at most the
#: supervisor's sweep interval (supervision/supervisor.py SWEEP_INTERVAL), which places a
#: stranded mailbox anyway, and at most half the idle timeout (see Wants).
WANT_AGAIN_AFTER = 1.0
#: Events of a batch per message: a batch goes out as the last event of each hundred, and the
#: mailbox runs the events below one from the journal, all under its delivery. Bounds what one
#: delivery holds unacked (RabbitMQ's consumer_timeout) and reads from the journal at once
#: (as actors/mailbox.py CATCH_UP_PAGE does for a catch-up).
BATCH_MESSAGE_EVENTS = 100


class PublishedMarks:
    """Marks published events in the journal in batches, off the request path, each event
    `delay` seconds after its confirm at the earliest.

    The delay saves an update per event: a worker's attempt start marks a delivered event
    published in the update it makes anyway (queries.sql `mark_attempts`), so by the time
    this mark comes most single events have started and it finds nothing to update. A
    batch's events below each of its messages run from the journal and are marked here. It must stay
    well under the relay's SERIATIM_RELAY_AFTER, or the relay publishes again what is
    merely waiting for its mark. A mark lost in a crash only costs a duplicate publish by the
    relay, which the mailbox acks as a duplicate.
    """

    def __init__(
        self,
        journal: Journal,
        delay: float = MARK_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._delay = delay
        self._clock = clock
        self._pending: collections.deque[tuple[float, uuid.UUID]] = collections.deque()
        self._wake = asyncio.Event()

    def add(self, event_id: uuid.UUID) -> None:
        self._pending.append((self._clock(), event_id))
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            if not self._pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            # the oldest is due `delay` after it came; those that came in the next half delay
            # go with it (a batch), so a busy gateway marks about twice per `delay`
            due = self._pending[0][0] + self._delay * 1.5 - self._clock()
            if due > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), due)
            await self.flush(self._clock() - self._delay)
        await self.flush()

    async def flush(self, came_before: float = math.inf) -> None:
        """Mark the events whose confirms came before `came_before` (all by default)."""
        batch = []
        while self._pending and self._pending[0][0] <= came_before:
            batch.append(self._pending.popleft()[1])
        if batch:
            try:
                await self._journal.mark_published(batch)
            except UNAVAILABLE as error:
                log.warning(
                    "could not mark %d events published (%s); the relay will publish them again",
                    len(batch),
                    error,
                )


class Wants:
    """The mailboxes a gateway wants active, gathered over one loop turn and told to the
    supervisor in one MailboxesWanted (one publish, one ack and one supervisor batch for a
    burst of new clients, instead of one each).

    A mailbox told less than `again_after` seconds ago is not told again: under light load
    every event finds its mailbox caught up, and telling the supervisor each time cost a
    publish, an ack and a journal read per event for a mailbox that is active anyway.
    A want not told is not lost: the supervisor's sweep places every mailbox with a backlog
    and no live host within a second (SWEEP_INTERVAL), and a mailbox that passivates with a
    backlog is placed again by the supervisor itself (docs/decisions.md, "Light load")."""

    def __init__(
        self,
        link: BrokerLink,
        again_after: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._link = link
        self._again_after = again_after
        self._clock = clock
        self._pending: dict[uuid.UUID, str] = {}
        self._told: dict[uuid.UUID, float] = {}  # client -> when it was last told
        self._pruned = clock()
        self._telling: set[asyncio.Task[bool]] = set()

    def add(self, message: EventMessage, *, again: bool = False) -> None:
        """Want the message's mailbox; told at the end of this loop turn, unless it was told
        less than `again_after` seconds ago and this is not wanted `again` (a late publish:
        Publisher.publish_event's `on_late`)."""
        now = self._clock()
        if not again and now - self._told.get(message.client_id, -math.inf) < self._again_after:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.setdefault(message.client_id, message.traceparent or "")

    def _remember(self, clients: list[uuid.UUID]) -> None:
        if not self._again_after:
            return
        now = self._clock()
        if now - self._pruned > self._again_after:  # forget what is too old to matter
            self._told = {c: t for c, t in self._told.items() if now - t < self._again_after}
            self._pruned = now
        self._told.update(dict.fromkeys(clients, now))

    def _flush(self) -> None:
        wanted, self._pending = list(self._pending.items()), {}
        self._remember([client for client, _ in wanted])
        for start in range(0, len(wanted), MAX_WANTED):
            fact = MailboxesWanted(tuple(wanted[start : start + MAX_WANTED]))
            task = asyncio.ensure_future(self._link.tell_supervisor(fact))  # it logs a failure
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)

    async def finish(self, deadline: float) -> None:
        if self._telling:
            await asyncio.wait(list(self._telling), timeout=deadline)


class Publishing:
    """Publishes committed events in the background, at most MAX_PUBLISHING at once."""

    def __init__(
        self,
        link: BrokerLink,
        journal: Journal,
        want_again_after: float = 0.0,
        mark_delay: float = MARK_DELAY,
    ) -> None:
        self.link = link
        self.marks = PublishedMarks(journal, mark_delay)
        self.wants = Wants(link, want_again_after)
        self._publishing: set[asyncio.Task[None]] = set()
        self._broker_down = False

    def soon(self, message: EventMessage, *, wake_supervisor: bool) -> None:
        """Publish after answering: the event is durable already, and RabbitMQ confirms a
        persistent message only after its next disk sync. What is never confirmed is left
        to the relay."""
        if len(self._publishing) >= MAX_PUBLISHING:
            log.warning(
                "%d publishes pending; event seq %d is left to the relay",
                len(self._publishing),
                message.seq,
            )
            return
        task = asyncio.create_task(self._publish(message, wake_supervisor=wake_supervisor))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    def soon_in_order(self, messages: list[EventMessage], *, wake_supervisor: bool) -> None:
        """Publish one client's consecutive events after answering, as one message per
        BATCH_MESSAGE_EVENTS of them: the last event of each run of them, in seq order. The
        mailbox that takes one finds the events below it missing and runs them from the
        journal first, in seq order (a gap: actors/mailbox.py), so each confirmed message
        marks its run of events published. What is not confirmed is left to the relay, all of
        it when too many publishes are pending."""
        if len(self._publishing) >= MAX_PUBLISHING:
            log.warning(
                "%d publishes pending; events seq %d-%d are left to the relay",
                len(self._publishing),
                messages[0].seq,
                messages[-1].seq,
            )
            return
        task = asyncio.create_task(self._publish_all(messages, wake_supervisor=wake_supervisor))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def finish(self, deadline: float) -> None:
        """Wait up to `deadline` seconds for publishes still in flight (at shutdown)."""
        if self._publishing:
            await asyncio.wait(list(self._publishing), timeout=deadline)
        await self.wants.finish(deadline)

    def _publisher(self) -> Publisher | None:
        publisher = self.link.publisher
        if publisher is None:
            if not self._broker_down:
                self._broker_down = True
                log.warning(
                    "RabbitMQ is unreachable: accepted events are left to the relay "
                    "until it is back"
                )
            return None
        self._broker_down = False
        return publisher

    async def _publish_all(self, messages: list[EventMessage], *, wake_supervisor: bool) -> None:
        publisher = self._publisher()
        if publisher is None:
            return
        runs = [
            messages[start : start + BATCH_MESSAGE_EVENTS]
            for start in range(0, len(messages), BATCH_MESSAGE_EVENTS)
        ]
        failures = await publisher.publish_events([run[-1] for run in runs], on_late=self._late)
        published = 0
        for run, failure in zip(runs, failures, strict=True):
            if failure is not None:
                log.warning(
                    "publishing events seq %d-%d failed (%s); they are left to the relay",
                    run[0].seq,
                    run[-1].seq,
                    failure,
                )
                continue
            for message in run:
                self.marks.add(message.event_id)
            published += 1
        if wake_supervisor and published:
            self.wants.add(messages[0])

    async def _publish(self, message: EventMessage, *, wake_supervisor: bool) -> None:
        publisher = self._publisher()
        if publisher is None:
            return
        try:
            if wake_supervisor:  # told after this turn: after the event's basic.publish
                self.wants.add(message)
            await publisher.publish_event(message, on_late=self._late)
            self.marks.add(message.event_id)
        except PublishFailed as error:
            log.warning(
                "publishing event seq %d failed (%s); it is left to the relay", message.seq, error
            )

    def _late(self, message: EventMessage) -> None:
        """A publish that went out late may have made the event's queue again after its
        mailbox ran the event from the journal and deleted the queue as idle: the mailbox is
        wanted again, whatever the supervisor was told before, so that the copy left there
        is acked as a duplicate and the queue deleted at the next passivation."""
        self.wants.add(message, again=True)
