"""The outbox relay: events committed but never published are published again."""

from __future__ import annotations

import asyncio
import logging
import uuid

from actors import metrics
from actors.amqp import PublishFailed
from actors.broker import BrokerLink, Publisher
from actors.protocol import EventMessage
from actors.store import EventRow
from actors.store.roles import RelayJournal

log = logging.getLogger(__name__)

BATCH = 500


class Relay:
    """Publishes journal rows left with `published_at IS NULL` for longer than `after` s.

    Each client's events go out in seq order, one after the other, and the clients side by
    side, so that a pass takes about as long as its slowest client. A client whose publish
    fails (its queue refuses it, returns it, or no confirm comes within the channel's
    deadline) is skipped for the rest of the pass, logged and counted; the other clients go
    on. A second copy of an event that was in fact published is harmless: the mailbox acks
    it as a duplicate by its seq.
    """

    def __init__(self, journal: RelayJournal, link: BrokerLink, after: float) -> None:
        self._journal = journal
        self._link = link
        self._after = after

    async def run_once(self) -> set[uuid.UUID]:
        """One pass; returns the clients some of whose events were republished.

        A republished event may have been run from the journal meanwhile, by a mailbox that
        has since deleted its idle queue: the copy then sits in a queue declared again, which
        nothing in the journal asks to activate. The caller (Supervisor.sweep) places these
        clients' mailboxes, so that the copy is acked as a duplicate and the queue deleted
        at the next passivation."""
        publisher = self._link.publisher
        if publisher is None:
            return set()
        rows = await self._journal.unpublished(self._after, BATCH)
        groups = _by_client(rows)
        done = await asyncio.gather(*(_publish_in_order(publisher, events) for events in groups))
        published = [event_id for ids in done for event_id in ids]
        if published:
            metrics.RELAYED.inc(len(published))
            await self._journal.mark_published(published)
            log.info("relay republished %d events", len(published))
        return {events[0].client_id for events, ids in zip(groups, done, strict=True) if ids}


def _by_client(rows: list[EventRow]) -> list[list[EventRow]]:
    """The rows grouped by client, each group in the journal's (seq) order."""
    groups: dict[uuid.UUID, list[EventRow]] = {}
    for row in rows:
        groups.setdefault(row.client_id, []).append(row)
    return [sorted(group, key=lambda row: row.seq) for group in groups.values()]


async def _publish_in_order(publisher: Publisher, events: list[EventRow]) -> list[uuid.UUID]:
    """Publish one client's events in order until one fails; returns the ids published.

    After a failure the client's later events wait for the next pass, so that they never
    overtake the one that failed.
    """
    published: list[uuid.UUID] = []
    for row in events:
        try:
            await publisher.publish_event(EventMessage.of(row))
        except PublishFailed as error:
            metrics.RELAY_SKIPPED.inc()
            log.warning(
                "relay skipped client %s for this pass: event seq %d could not be published "
                "(%s); %d of its events wait for the next pass",
                row.client_id,
                row.seq,
                error,
                len(events) - len(published),
            )
            break
        published.append(row.id)
    return published
