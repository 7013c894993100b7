"""The outbox relay: events committed but never published are published again."""

from __future__ import annotations

import logging

from actors import metrics
from actors.amqp import PublishFailed
from actors.broker import BrokerLink
from actors.protocol import EventMessage
from actors.store import Journal

log = logging.getLogger(__name__)

BATCH = 500


class Relay:
    """Publishes journal rows left with `published_at IS NULL` for longer than `after` s.

    A second copy of an event that was in fact published is harmless: the mailbox acks
    it as a duplicate by its seq.
    """

    def __init__(self, journal: Journal, link: BrokerLink, after: float) -> None:
        self._journal = journal
        self._link = link
        self._after = after

    async def run_once(self) -> int:
        """One pass; returns how many events were republished."""
        publisher = self._link.publisher
        if publisher is None:
            return 0
        rows = await self._journal.unpublished(self._after, BATCH)
        published = []
        for row in rows:
            try:
                await publisher.publish_event(EventMessage.of(row))
            except PublishFailed as error:
                log.warning("relay could not publish event seq %d: %s", row.seq, error)
                break
            published.append(row.id)
        if published:
            metrics.RELAYED.inc(len(published))
            await self._journal.mark_published(published)
            log.info("relay republished %d events", len(published))
        return len(published)
