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

from actors import metrics, tracing
from actors.amqp import AmqpChannel, AmqpConnection, AmqpError, Delivery, PublishFailed, Unroutable
from actors.broker import BrokerLink, Publisher, declare_supervisor_queue
from actors.outages import OUTAGES
from actors.protocol import (
    Control,
    MailboxesWanted,
    MailboxFailed,
    MailboxPassivated,
    MailboxWanted,
    ProtocolError,
    Start,
    StartMailboxes,
    Tick,
    WorkerStopped,
)
from actors.settings import Settings
from actors.states import MailboxState
from actors.store.roles import SupervisorJournal
from actors.store.rows import Placed
from supervision.placement import plan
from supervision.relay import Relay

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
#: A worker whose heartbeat is older is dead, even if its lease's lock is still held (a
#: frozen process, a half-open connection).
WORKER_ALIVE_WITHIN = 5.0
#: After an outage of its own journal, or once it sees that one of its sessions ended, the
#: supervisor trusts heartbeats alone this long: a database restart, a backend's crash or a
#: promotion ends every lease's session, and the workers need a moment to renew.
LOCK_GRACE = 3.0
STRANDED_BATCH = 1000
BATCH = 500
PLACE_ROUNDS = 3
#: Seconds a want that found its mailbox active is remembered (Supervisor._ensure_active):
#: a passivating mailbox reports MailboxPassivated well within this.
WANTED_WHILE_ACTIVE = 5.0


class Supervisor:
    """Handles MailboxesWanted / MailboxPassivated / WorkerStopped / Tick, one at a time."""

    def __init__(
        self, settings: Settings, journal: SupervisorJournal, link: BrokerLink, worker_id: str
    ) -> None:
        self.worker_id = worker_id
        self.active = False
        self._settings = settings
        self._journal = journal
        self._link = link
        self._relay = Relay(journal, link, settings.relay_after)
        self._inbox: asyncio.Queue[tuple[AmqpChannel, Delivery]] = asyncio.Queue()
        self._workers: dict[str, int] = {}
        self._workers_read = 0.0
        self._last_sweep = 0.0
        self._journal_outage = -LOCK_GRACE
        self._session_lost_seen = journal.session_lost_at
        self._consumer: tuple[AmqpChannel, str] | None = None
        self._resigned = False
        self._causes: dict[uuid.UUID, str] = {}  # client -> traceparent of the wanting event
        # client -> when it was wanted while active (see _ensure_active)
        self._wanted_while_active: dict[uuid.UUID, float] = {}
        self._wanted_pruned = time.monotonic()

    async def attach(self, connection: AmqpConnection) -> None:
        """Become a candidate on a new connection: consume the supervisor queue."""
        if self._resigned:
            return
        if self.active:  # a new consumer: active again only once the queue gives it messages
            self.active = False
            metrics.SUPERVISOR_ACTIVE.set(0)
        await declare_supervisor_queue(connection, self._settings)
        channel = await connection.channel()
        await channel.qos(50)
        queue = self._settings.supervisor_queue
        self._consumer = (
            channel,
            await channel.consume(
                queue, lambda delivery: self._inbox.put_nowait((channel, delivery))
            ),
        )

    async def resign(self) -> None:
        """Stop being a candidate now, so that a standby takes over at once (at shutdown).

        Messages received but not handled go back to the queue for the next supervisor.
        """
        self._resigned = True
        if self._consumer is not None:
            channel, tag = self._consumer
            self._consumer = None
            with contextlib.suppress(AmqpError):
                await channel.cancel(tag)
        while not self._inbox.empty():
            channel, delivery = self._inbox.get_nowait()
            channel.nack(delivery.delivery_tag, requeue=True)
        if self.active:
            log.info("supervisor on worker %s resigned", self.worker_id)
        self.active = False
        metrics.SUPERVISOR_ACTIVE.set(0)

    async def run(self, stopping: asyncio.Event) -> None:
        """Handle messages in arrival order, in batches of what has arrived, until stopped."""
        while not stopping.is_set():
            getter = asyncio.ensure_future(self._inbox.get())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait([getter, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if stopping.is_set():
                getter.cancel()
                if getter.done() and not getter.cancelled():
                    channel, delivery = getter.result()
                    channel.nack(delivery.delivery_tag, requeue=True)
                return
            batch = [getter.result()]
            while len(batch) < BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            await self._handle(batch)

    async def tick(self, stopping: asyncio.Event) -> None:
        """Ask the active supervisor (whichever it is) to sweep, every SWEEP_INTERVAL."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SWEEP_INTERVAL)
            if not stopping.is_set():
                await self._link.tell_supervisor(Tick())

    async def _handle(self, batch: list[tuple[AmqpChannel, Delivery]]) -> None:
        if not self.active:  # only the single active consumer ever receives anything
            self.active = True
            metrics.SUPERVISOR_ACTIVE.set(1)
            log.info("supervisor active on worker %s", self.worker_id)
        messages = []
        for _, delivery in batch:
            try:
                messages.append(Control.decode(delivery.body))
            except ProtocolError as error:
                log.error("supervisor drops a message: %s", error)
        try:
            await self._dispatch(messages)
        except OUTAGES as error:
            self._journal_outage = time.monotonic()
            log.warning(
                "supervisor could not handle %d messages (%s); they are requeued", len(batch), error
            )
            await asyncio.sleep(0.5)
            for channel, delivery in batch:
                channel.nack(delivery.delivery_tag, requeue=True)
            return
        for channel, delivery in batch:
            channel.ack(delivery.delivery_tag)

    async def _dispatch(self, messages: list[Control]) -> None:
        wanted: dict[uuid.UUID, bool] = {}  # client -> only if it has a backlog
        sweep = False
        for message in messages:
            if isinstance(message, MailboxWanted):  # an operator's resume; an older gateway
                self._want(wanted, message.client_id, message.traceparent)
            elif isinstance(message, MailboxesWanted):
                for client, traceparent in message.wanted:
                    self._want(wanted, client, traceparent)
            elif isinstance(message, MailboxPassivated):
                load = self._workers.get(message.worker_id, 1)
                self._workers[message.worker_id] = max(0, load - 1)
                # placed again if it has a backlog, or was wanted as it passivated
                wanted.setdefault(message.client_id, not self._was_wanted(message.client_id))
            elif isinstance(message, MailboxFailed):
                await self._suspend(message)
            elif isinstance(message, WorkerStopped):
                self._workers.pop(message.worker_id, None)
                sweep = True
            elif isinstance(message, Tick):
                sweep = sweep or self._sweep_due()
        try:
            if wanted:
                await self._ensure_active(wanted)
            if sweep:
                await self.sweep()
        finally:
            self._causes.clear()

    def _want(self, wanted: dict[uuid.UUID, bool], client: uuid.UUID, traceparent: str) -> None:
        wanted[client] = False
        if traceparent:
            self._causes[client] = traceparent

    async def _suspend(self, failed: MailboxFailed) -> None:
        """Escalation from a mailbox: suspend it until an operator resumes it."""
        with tracing.supervising("suspend", failed.client_id, failed.traceparent) as span:
            span.set_attribute("seriatim.cause", failed.cause)
            # Only the mailbox's current placement may ask: a stale owner's report (it lost
            # the mailbox while failing) must not suspend the new owner's mailbox.
            suspended = await self._journal.suspend_mailbox(
                failed.client_id, failed.reason, epoch=failed.epoch
            )
            if not suspended:
                log.info(
                    "ignoring a failure report of mailbox %s from %s: suspended already, or "
                    "placed anew since (epoch %s)",
                    failed.client_id,
                    failed.worker_id,
                    failed.epoch,
                )
            else:
                load = self._workers.get(failed.worker_id, 1)
                self._workers[failed.worker_id] = max(0, load - 1)
                metrics.SUSPENSIONS.labels(failed.cause).inc()
                log.warning("mailbox %s suspended: %s", failed.client_id, failed.reason)

    def _by_lock(self) -> bool:
        """Whether a worker whose lease lock is gone counts as dead (see LOCK_GRACE).

        A session of the journal that ended since the last look may mean that PostgreSQL
        ended every session, the leases' too, while the server kept its start time (a
        backend's crash; live_worker_ids covers a restart and a promotion itself): the grace
        then runs from now, the moment before the query this answer is for, so that it covers
        the workers' renewals on the server that answers it. A read made before the listener
        ran can only propose a placement: place_mailboxes reads this again, after the query
        that proposed it (docs/decisions.md, "A lease lock counts only on its own server")."""
        lost = self._journal.session_lost_at
        if lost > self._session_lost_seen:
            self._session_lost_seen = lost
            self._journal_outage = time.monotonic()
            log.debug("a journal session ended: workers are judged by heartbeat for a while")
        return time.monotonic() - self._journal_outage > LOCK_GRACE

    def _sweep_due(self) -> bool:
        return time.monotonic() - self._last_sweep >= SWEEP_INTERVAL * 0.8

    async def sweep(self) -> None:
        """Place every stranded mailbox and republish what was never published."""
        self._last_sweep = time.monotonic()
        await self._refresh_workers(force=True)
        stranded = await self._journal.stranded_mailboxes(
            WORKER_ALIVE_WITHIN, self._by_lock(), STRANDED_BATCH
        )
        for client, cause in stranded.items():  # activations link to the event they are for
            if cause:
                self._causes.setdefault(client, cause)
        await self._place(list(stranded))
        relayed = await self._relay.run_once()
        if relayed:  # their copies may sit in queues declared again (Relay.run_once)
            await self._ensure_active(dict.fromkeys(relayed, False))

    async def _ensure_active(self, wanted: dict[uuid.UUID, bool]) -> None:
        """Place those of these mailboxes that are neither suspended nor on a live worker.

        A mailbox wanted while it is active is remembered for a few seconds: if it was in
        fact passivating, its MailboxPassivated places it again even with no backlog. A want
        can mean a message in its queue that the journal does not show unfinished (a late
        publish's copy of an event run from the journal, gateway/publishing.py), and a
        passivation's delete that came before that publish must not leave it there."""
        rows = await self._journal.wanted(list(wanted), WORKER_ALIVE_WITHIN, self._by_lock())
        now = time.monotonic()
        if now - self._wanted_pruned > WANTED_WHILE_ACTIVE:  # forget what is too old to matter
            self._wanted_while_active = {
                client: at
                for client, at in self._wanted_while_active.items()
                if now - at < WANTED_WHILE_ACTIVE
            }
            self._wanted_pruned = now
        place = []
        for row in rows:
            if row.state is MailboxState.SUSPENDED:
                continue
            if row.state is MailboxState.ACTIVE and row.host_alive:
                if not wanted[row.client_id]:
                    self._wanted_while_active[row.client_id] = now
                continue
            if row.has_backlog or not wanted[row.client_id]:
                place.append(row.client_id)
        await self._place(place)

    def _was_wanted(self, client: uuid.UUID) -> bool:
        """Whether the mailbox was wanted while active, lately (see _ensure_active); once."""
        at = self._wanted_while_active.pop(client, None)
        return at is not None and time.monotonic() - at < WANTED_WHILE_ACTIVE

    async def _refresh_workers(self, *, force: bool = False) -> None:
        if force or time.monotonic() - self._workers_read > SWEEP_INTERVAL:
            self._workers = await self._journal.live_workers(WORKER_ALIVE_WITHIN, self._by_lock())
            self._workers_read = time.monotonic()

    async def _place(self, clients: list[uuid.UUID]) -> None:
        """Spread mailboxes over the least-loaded live workers and tell each its share, in one
        StartMailboxes per worker and round.

        A share whose StartMailboxes no queue took (the worker is gone from the broker, so it
        never heard of it) is released from that placement at once and placed elsewhere; one
        that no worker could be told about stays released, so that the next sweep places it
        again. Any other failed tell may still have reached the worker: the placement stays
        (the worker starts what is placed on it; a dead worker's mailboxes move at the sweep).
        """
        if not clients:
            return
        await self._refresh_workers()
        publisher = self._link.publisher
        for _ in range(PLACE_ROUNDS):
            if not clients or not self._workers or publisher is None:
                break
            assignment = plan(clients, self._workers)
            placed = await self._journal.place_mailboxes(
                assignment, WORKER_ALIVE_WITHIN, self._by_lock()
            )
            shares: dict[str, list[uuid.UUID]] = {}
            for client in clients:
                if client in placed:
                    shares.setdefault(assignment[client], []).append(client)
            told = sorted(shares)
            results = await asyncio.gather(
                *(self._activate(publisher, worker, shares[worker], placed) for worker in told),
                return_exceptions=True,
            )
            clients = []
            for worker, result in zip(told, results, strict=True):
                share = shares[worker]
                if isinstance(result, Unroutable):  # no queue took it: the worker never knew
                    log.warning("worker %s is gone; placing its mailboxes elsewhere", worker)
                    self._workers.pop(worker, None)
                    for client in share:
                        await self._journal.release_mailbox(
                            client, worker, epoch=placed[client].epoch
                        )
                    clients.extend(share)
                elif isinstance(result, PublishFailed):  # it may have got there: leave it
                    log.warning(
                        "worker %s may not have been told of %d mailboxes (%s); it starts what "
                        "is placed on it, and a dead worker's mailboxes move at the sweep",
                        worker,
                        len(share),
                        result,
                    )
                    self._workers.pop(worker, None)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    self._workers[worker] = self._workers.get(worker, 0) + len(share)
            placed_now = sum(len(shares[worker]) for worker in told) - len(clients)
            if placed_now:
                log.info("placed %d mailboxes", placed_now)
        if clients:
            log.warning("no live worker for %d mailboxes yet; the next sweep retries", len(clients))

    async def _activate(
        self,
        publisher: Publisher,
        worker: str,
        share: list[uuid.UUID],
        placed: dict[uuid.UUID, Placed],
    ) -> None:
        """Tell a worker to start its share of a placement round, in one message; each
        mailbox's span links to the event that wanted it."""
        starts = []
        for client in share:
            placement = placed[client]
            with tracing.supervising("activate", client, self._causes.get(client)) as span:
                span.set_attribute("seriatim.worker_id", worker)
                span.set_attribute("seriatim.epoch", placement.epoch)
            starts.append(Start(client, placement.epoch, placement.done_seq, placement.last_seq))
        await publisher.tell_worker(worker, StartMailboxes(tuple(starts)))
