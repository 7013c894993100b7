"""The mailbox host: one worker process's active mailboxes on one AMQP connection.

No thread and no connection per mailbox: one consumer (prefetch 1) per active mailbox on a
shared channel, one asyncio task per delivery, idle mailboxes passivated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import dramatiq

from actors import metrics, tracing
from actors.amqp import AmqpChannel, AmqpConnection, AmqpError, Delivery
from actors.backoff import Backoff
from actors.broker import BrokerLink
from actors.delivery import OUTAGES, settle
from actors.handlers import HandlerRegistry
from actors.mailbox import Escalate, Mailbox, RunPolicy, Stopped
from actors.policy import RestartIntensity
from actors.protocol import (
    Control,
    MailboxFailed,
    MailboxPassivated,
    ProtocolError,
    StartMailbox,
)
from actors.settings import Settings
from actors.store import UNAVAILABLE, Journal

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 5.0


@dataclasses.dataclass
class _Active:
    mailbox: Mailbox
    consumer_tag: str | None = None
    channel: AmqpChannel | None = None
    passivating: bool = False
    subscribing: bool = False
    inflight: int = 0


class MailboxHost:
    """Starts, feeds and passivates the mailboxes the supervisor places on this worker."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        handlers: HandlerRegistry,
        broker: dramatiq.Broker,
        worker_id: str,
        link: BrokerLink,
    ) -> None:
        self.worker_id = worker_id
        self._settings = settings
        self._journal = journal
        self._handlers = handlers
        self._broker = broker
        self._link = link
        self._policy = RunPolicy(
            max_attempts=settings.max_attempts,
            handler_timeout=settings.handler_timeout,
            backoff=Backoff(settings.backoff_min, settings.backoff_max),
            intensity=RestartIntensity(settings.restart_intensity, settings.restart_period),
        )
        self._active: dict[uuid.UUID, _Active] = {}
        self._escalated: set[uuid.UUID] = set()
        self._starting: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: AmqpChannel | None = None
        self._accepting = True
        self._retry = Backoff(min=0.2, max=5.0)
        metrics.ACTIVE_MAILBOXES.set_function(lambda: len(self._active))

    # --- wiring to a (re)connected broker --------------------------------------------------

    async def attach(self, connection: AmqpConnection) -> None:
        """On every new connection: our command queue, a consume channel, our mailboxes."""
        control = await connection.channel()
        await control.qos(100)
        queue = self._settings.worker_queue(self.worker_id)
        await control.declare_queue(queue, durable=False, exclusive=True, auto_delete=True)
        await control.consume(queue, lambda delivery: self._on_control(control, delivery))
        await self._open_consume_channel(connection)

    async def _open_consume_channel(self, connection: AmqpConnection) -> None:
        channel = await connection.channel()
        await channel.qos(1)
        self._channel = channel
        channel.closed.add_done_callback(lambda _: self._consume_channel_closed(connection))
        if self._active:  # a reconnection: keep only what the journal still places here
            try:
                placed = await self._journal.mailboxes_placed_on(self.worker_id)
            except UNAVAILABLE:  # keep them all; reconcile() lets go of the others later
                placed = set(self._active)
            for client in [client for client in self._active if client not in placed]:
                log.info("mailbox %s was placed elsewhere while disconnected", client)
                del self._active[client]
        for entry in list(self._active.values()):
            entry.consumer_tag = None
            self._spawn(self._subscribe(entry))  # one slow queue must not hold up the rest

    async def reconcile(self) -> None:
        """Let go of idle mailboxes the journal now places elsewhere (after this worker was
        taken for dead, say), so that one worker consumes each mailbox."""
        placed = await self._journal.mailboxes_placed_on(self.worker_id)
        self._escalated &= placed  # suspended (or moved) by now: nothing to guard any more
        for client in placed - set(self._active) - self._escalated:
            if self._accepting:  # placed here, but the StartMailbox never arrived
                log.warning("mailbox %s is placed here but was not started; starting it", client)
                self._spawn(self.start(client))
        for entry in list(self._active.values()):
            client = entry.mailbox.client_id
            if client in placed and entry.consumer_tag is None and self._accepting:
                self._spawn(self._subscribe(entry))  # a subscription that failed earlier
                continue
            if client in placed or entry.inflight or entry.subscribing or entry.passivating:
                continue
            log.warning("mailbox %s is placed on another worker now; letting it go", client)
            await self._let_go(entry)

    async def _let_go(self, entry: _Active) -> None:
        """Stop consuming a mailbox and forget it; deliveries already here are requeued."""
        entry.passivating = True
        with contextlib.suppress(AmqpError):
            if entry.channel is not None and entry.consumer_tag is not None:
                await entry.channel.cancel(entry.consumer_tag)
        entry.consumer_tag = None
        if self._active.get(entry.mailbox.client_id) is entry:
            del self._active[entry.mailbox.client_id]

    def _consume_channel_closed(self, connection: AmqpConnection) -> None:
        if connection.is_open and self._accepting:
            log.warning("mailbox channel closed by the broker; reopening it")
            self._spawn(self._open_consume_channel(connection))

    def _on_control(self, channel: AmqpChannel, delivery: Delivery) -> None:
        channel.ack(delivery.delivery_tag)
        try:
            command = Control.decode(delivery.body)
        except ProtocolError as error:
            log.error("dropping control message: %s", error)
            return
        if isinstance(command, StartMailbox):
            self._spawn(self.start(command.client_id))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("mailbox task failed", exc_info=task.exception())

    # --- activation ------------------------------------------------------------------------

    async def start(self, client_id: uuid.UUID) -> None:
        """Consume a client's mailbox here (idempotent)."""
        if not self._accepting:
            return
        entry = self._active.get(client_id)
        if entry is not None and not entry.passivating and entry.consumer_tag is not None:
            return
        if entry is None or entry.passivating:
            queue = self._settings.mailbox_queue(str(client_id))
            mailbox = Mailbox(
                client_id, self._journal, self._handlers, self._policy, self._broker, queue
            )
            entry = _Active(mailbox)
            self._active[client_id] = entry
        await self._subscribe(entry)
        if entry.consumer_tag is not None:
            metrics.ACTIVATIONS.inc()
        log.info("mailbox %s active on %s", client_id, self.worker_id)

    async def _subscribe(self, entry: _Active) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        if entry.consumer_tag is not None or entry.subscribing:
            return
        entry.subscribing = True
        client = entry.mailbox.client_id
        queue = self._settings.mailbox_queue(str(client))
        publisher = self._link.publisher
        try:
            if publisher is None:
                raise AmqpError("no broker connection")
            counts = await publisher.declare_mailbox(str(client), fresh=True)
            entry.channel = channel
            entry.consumer_tag = await channel.consume(
                queue,
                lambda delivery: self._on_delivery(entry, channel, delivery),
                on_cancel=lambda: self._consumer_cancelled(entry),
            )
        except AmqpError as error:
            log.warning("cannot consume mailbox %s: %s", client, error)
            return
        finally:
            entry.subscribing = False
        if counts is not None and counts.messages == 0 and counts.consumers == 0:
            # Nothing queued and nobody else holding a message: whatever the journal still
            # has unfinished was lost by the broker or never published. Being the only
            # consumer now, this mailbox takes it from the journal.
            self._spawn(self._catch_up(entry))

    def _consumer_cancelled(self, entry: _Active) -> None:
        """The broker cancelled our consumer: the queue was deleted. Declare it again and
        take what the journal says is unfinished from the journal."""
        log.warning(
            "mailbox %s: its queue was deleted; declaring it again", entry.mailbox.client_id
        )
        entry.consumer_tag = None
        if self._accepting and not entry.passivating:
            self._spawn(self._subscribe(entry))

    async def _catch_up(self, entry: _Active) -> None:
        entry.inflight += 1
        try:
            caught_up = await entry.mailbox.catch_up()
            if caught_up:
                log.info(
                    "mailbox %s took %d unfinished events from the journal",
                    entry.mailbox.client_id,
                    caught_up,
                )
        except Stopped:
            return
        except Escalate as escalation:
            entry.passivating = True
            await self._escalate(entry, escalation)
        except OUTAGES as error:
            log.warning(
                "mailbox %s could not catch up from the journal: %s", entry.mailbox.client_id, error
            )
        finally:
            entry.inflight -= 1
            entry.mailbox.last_active = time.monotonic()

    # --- processing ------------------------------------------------------------------------

    def _on_delivery(self, entry: _Active, channel: AmqpChannel, delivery: Delivery) -> None:
        if entry.passivating or not self._accepting:
            channel.nack(delivery.delivery_tag, requeue=True)
            return
        entry.mailbox.last_active = time.monotonic()
        entry.inflight += 1
        self._spawn(self._handle(entry, channel, delivery))

    async def _handle(self, entry: _Active, channel: AmqpChannel, delivery: Delivery) -> None:
        try:
            await self._settle(entry, channel, delivery)
        except asyncio.CancelledError:  # past the drain deadline: back to the queue
            channel.nack(delivery.delivery_tag, requeue=True)
            raise
        finally:
            entry.inflight -= 1
            entry.mailbox.last_active = time.monotonic()

    async def _settle(self, entry: _Active, channel: AmqpChannel, delivery: Delivery) -> None:
        verdict = await settle(entry.mailbox, delivery.body, lambda: self._accepting, self._retry)
        if verdict.escalation is not None:
            entry.passivating = True  # no more deliveries for this mailbox here
        if verdict.ack:
            channel.ack(delivery.delivery_tag)
        else:
            channel.nack(delivery.delivery_tag, requeue=verdict.requeue)
        if verdict.escalation is not None:
            await self._escalate(entry, verdict.escalation)

    # --- passivation and shutdown -----------------------------------------------------------

    async def passivate_idle(self, stopping: asyncio.Event) -> None:
        """Passivate mailboxes idle for the idle timeout and reconcile placements with the
        journal every few seconds, until `stopping` is set."""
        period = min(max(self._settings.idle_timeout / 4, 0.05), 5.0)
        reconciled = time.monotonic()
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), period)
            if time.monotonic() - reconciled >= RECONCILE_INTERVAL and not stopping.is_set():
                reconciled = time.monotonic()
                try:
                    await self.reconcile()
                except OUTAGES as error:
                    log.warning("could not reconcile mailboxes with the journal: %s", error)
            cutoff = time.monotonic() - self._settings.idle_timeout
            for entry in list(self._active.values()):
                idle = not entry.mailbox.busy and entry.mailbox.last_active < cutoff
                if idle and not entry.passivating and entry.consumer_tag is not None:
                    await self._passivate(entry)

    async def _passivate(self, entry: _Active) -> None:
        """Stop consuming an idle mailbox and hand it back; resume it if that fails."""
        client = entry.mailbox.client_id
        with tracing.supervising("passivate", client, entry.mailbox.last_traceparent) as span:
            span.set_attribute("seriatim.worker_id", self.worker_id)
            await self._passivate_now(entry, client)

    async def _passivate_now(self, entry: _Active, client: uuid.UUID) -> None:
        entry.passivating = True
        try:
            if entry.channel is not None and entry.consumer_tag is not None:
                await entry.channel.cancel(entry.consumer_tag)
            entry.consumer_tag = None
            if entry.inflight:  # a message slipped in before the cancel took effect
                await self._resume(entry)
                return
            await self._journal.release_mailbox(client, self.worker_id)
        except OUTAGES as error:
            log.warning("passivating mailbox %s failed (%s); it stays active", client, error)
            await self._resume(entry)
            return
        if self._active.get(client) is entry:
            del self._active[client]
        metrics.PASSIVATIONS.inc()
        log.info("mailbox %s passivated", client)
        publisher = self._link.publisher
        try:
            if publisher is not None:
                await publisher.tell_supervisor(MailboxPassivated(client, self.worker_id))
        except AmqpError as error:  # the supervisor's sweep finds any backlog left behind
            log.warning("supervisor not told of passivating %s: %s", client, error)

    async def _escalate(self, entry: _Active, escalation: Escalate) -> None:
        """Stop the mailbox here and ask the supervisor to suspend it."""
        client, reason = entry.mailbox.client_id, escalation.reason
        log.warning("mailbox %s escalates to the supervisor: %s", client, reason)
        self._escalated.add(client)  # until the journal says it is suspended
        await self._let_go(entry)
        failed = MailboxFailed(
            client, self.worker_id, escalation.cause, reason, entry.mailbox.last_traceparent
        )
        publisher = self._link.publisher
        try:
            if publisher is None:
                raise AmqpError("no broker connection")
            await publisher.tell_supervisor(failed, persistent=True)
        except AmqpError as error:  # the journal must not go on saying it is active here
            log.warning(
                "supervisor unreachable (%s): suspending mailbox %s directly", error, client
            )
            await self._journal.suspend_mailbox(client, reason)

    async def _resume(self, entry: _Active) -> None:
        entry.passivating = False
        entry.consumer_tag = None
        await self._subscribe(entry)

    def stop_taking(self) -> None:
        """From now on every delivery goes back to its queue (the first step of a shutdown)."""
        self._accepting = False

    async def drain(self, deadline: float) -> None:
        """Stop taking messages, let in-flight events finish for `deadline` s, then cancel."""
        self.stop_taking()
        for entry in list(self._active.values()):
            if entry.channel is not None and entry.consumer_tag is not None:
                with contextlib.suppress(AmqpError):
                    await entry.channel.cancel(entry.consumer_tag)
            entry.mailbox.stop()
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            log.info("waiting up to %.0f s for %d in-flight events", deadline, len(pending))
            _, late = await asyncio.wait(pending, timeout=deadline)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        self._active.clear()
