"""The supervisor actor: a cluster singleton that activates mailboxes where there is room.

Every worker process runs a candidate consuming the supervisor queue; the queue's
single-active-consumer flag makes exactly one of them active and the others hot standbys.
Its state lives in the journal, so a standby that takes over starts with all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from actors.amqp import AmqpChannel, AmqpConnection, AmqpError, Delivery, PublishFailed
from actors.broker import BrokerLink, supervisor_arguments
from actors.protocol import (
    Control,
    MailboxPassivated,
    MailboxWanted,
    ProtocolError,
    StartMailbox,
    Tick,
    WorkerStopped,
)
from actors.settings import Settings
from actors.store import Journal
from supervision.placement import least_loaded
from supervision.relay import Relay

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
WORKER_ALIVE_WITHIN = 5.0
STRANDED_BATCH = 1000


class Supervisor:
    """Handles MailboxWanted / MailboxPassivated / WorkerStopped / Tick, one at a time."""

    def __init__(self, settings: Settings, journal: Journal, link: BrokerLink) -> None:
        self._settings = settings
        self._journal = journal
        self._link = link
        self._relay = Relay(journal, link, settings.relay_after)
        self._inbox: asyncio.Queue[tuple[AmqpChannel, Delivery]] = asyncio.Queue()
        self._workers: dict[str, int] = {}
        self._workers_read = 0.0
        self._last_sweep = 0.0

    async def attach(self, connection: AmqpConnection) -> None:
        """Become a candidate on a new connection: consume the supervisor queue."""
        channel = await connection.channel()
        await channel.qos(50)
        queue = self._settings.supervisor_queue
        await channel.declare_queue(queue, supervisor_arguments(self._settings))
        await channel.consume(queue, lambda delivery: self._inbox.put_nowait((channel, delivery)))

    async def run(self, stopping: asyncio.Event) -> None:
        """Handle messages in arrival order until `stopping` is set."""
        while not stopping.is_set():
            getter = asyncio.ensure_future(self._inbox.get())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait([getter, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not getter.done():
                getter.cancel()
                return
            channel, delivery = getter.result()
            await self._handle(channel, delivery)

    async def tick(self, stopping: asyncio.Event) -> None:
        """Ask the active supervisor (whichever it is) to sweep, every SWEEP_INTERVAL."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SWEEP_INTERVAL)
            publisher = self._link.publisher
            if publisher is not None and not stopping.is_set():
                with contextlib.suppress(PublishFailed):
                    await publisher.tell_supervisor(Tick())

    async def _handle(self, channel: AmqpChannel, delivery: Delivery) -> None:
        try:
            message = Control.decode(delivery.body)
        except ProtocolError as error:
            log.error("supervisor drops a message: %s", error)
            channel.ack(delivery.delivery_tag)
            return
        try:
            await self._dispatch(message)
        except (TimeoutError, OSError, AmqpError) as error:
            log.warning("supervisor could not handle %s (%s); it is requeued", message.kind, error)
            await asyncio.sleep(0.5)
            channel.nack(delivery.delivery_tag, requeue=True)
            return
        channel.ack(delivery.delivery_tag)

    async def _dispatch(self, message: Control) -> None:
        if isinstance(message, MailboxWanted):
            await self._ensure_active(message.client_id)
        elif isinstance(message, MailboxPassivated):
            self._workers[message.worker_id] = max(0, self._workers.get(message.worker_id, 1) - 1)
            await self._ensure_active(message.client_id, only_with_backlog=True)
        elif isinstance(message, WorkerStopped):
            self._workers.pop(message.worker_id, None)
            await self.sweep()
        elif isinstance(message, Tick) and self._sweep_due():
            await self.sweep()

    def _sweep_due(self) -> bool:
        return time.monotonic() - self._last_sweep >= SWEEP_INTERVAL * 0.8

    async def sweep(self) -> None:
        """Place every stranded mailbox and republish what was never published."""
        self._last_sweep = time.monotonic()
        await self._refresh_workers(force=True)
        for client_id in await self._journal.stranded_mailboxes(
            WORKER_ALIVE_WITHIN, STRANDED_BATCH
        ):
            await self._place(client_id)
        await self._relay.run_once()

    async def _ensure_active(
        self, client_id: uuid.UUID, *, only_with_backlog: bool = False
    ) -> None:
        wanted = await self._journal.wanted(client_id, WORKER_ALIVE_WITHIN)
        if wanted is None or wanted.state == "suspended":
            return
        if wanted.state == "active" and wanted.host_alive:
            return
        if only_with_backlog and not wanted.has_backlog:
            return
        await self._place(client_id)

    async def _refresh_workers(self, *, force: bool = False) -> None:
        if force or time.monotonic() - self._workers_read > SWEEP_INTERVAL:
            self._workers = await self._journal.live_workers(WORKER_ALIVE_WITHIN)
            self._workers_read = time.monotonic()

    async def _place(self, client_id: uuid.UUID) -> None:
        await self._refresh_workers()
        publisher = self._link.publisher
        candidates = dict(self._workers)
        while candidates and publisher is not None:
            worker = least_loaded(candidates)
            if not await self._journal.place_mailbox(client_id, worker):
                return  # suspended meanwhile
            try:
                await publisher.tell_worker(worker, StartMailbox(client_id))
            except PublishFailed:
                log.warning("worker %s is gone; placing mailbox %s elsewhere", worker, client_id)
                candidates.pop(worker)
                self._workers.pop(worker, None)
                continue
            self._workers[worker] = self._workers.get(worker, 0) + 1
            log.info("mailbox %s placed on %s", client_id, worker)
            return
        log.warning("no live worker for mailbox %s yet; the next sweep retries", client_id)
