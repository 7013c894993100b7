"""The mailbox host: one worker process's active mailboxes on one AMQP connection.

No thread and no connection per mailbox: one consumer (prefetch 1) per active mailbox on one
of a few shared channels, one asyncio task per delivery, idle mailboxes passivated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import dramatiq

from actors import metrics, tracing
from actors.amqp import AmqpChannel, AmqpConnection, AmqpError, ChannelClosed, Delivery, RpcTimeout
from actors.backoff import Backoff
from actors.broker import BrokerLink, mailbox_arguments
from actors.channels import ConsumeChannels
from actors.delivery import NOT_NOW, settle
from actors.handlers import HandlerRegistry
from actors.lifecycle import Hosted, Stage
from actors.mailbox import Escalate, Fenced, Mailbox, RunPolicy, Stopped
from actors.outages import OUTAGES, UNAVAILABLE
from actors.policy import RestartIntensity
from actors.protocol import (
    Control,
    MailboxFailed,
    MailboxPassivated,
    ProtocolError,
    StartMailbox,
    StartMailboxes,
)
from actors.settings import Settings
from actors.states import MailboxState, SuspensionCause
from actors.store.roles import HostJournal
from actors.threads import HandlerThreads
from actors.watchdog import Watchdog

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 5.0
#: Idle checks in a row whose queue delete fails, with the link up, before a mailbox is
#: passivated with its queue kept (MailboxHost._delete_queue).
DELETE_TRIES = 3
#: Refusals only an operator can lift (403 ACCESS_REFUSED; 406 PRECONDITION_FAILED: the queue
#: exists with other arguments): the mailbox escalates at once instead of retrying.
PERMANENT_REFUSALS = frozenset({403, 406})
_REFUSAL_CODES = frozenset({403, 404, 405, 406, 541})  # metric labels; others are "other"


class MailboxHost:
    """Starts, feeds and passivates the mailboxes the supervisor places on this worker."""

    def __init__(
        self,
        settings: Settings,
        journal: HostJournal,
        handlers: HandlerRegistry,
        broker: dramatiq.Broker,
        worker_id: str,
        link: BrokerLink,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.worker_id = worker_id
        self._settings = settings
        self._journal = journal
        self._handlers = handlers
        self._broker = broker
        self._link = link
        self._watchdog = watchdog
        self.threads = HandlerThreads(settings.handler_threads)
        self._policy = RunPolicy(
            max_attempts=settings.max_attempts,
            handler_timeout=settings.handler_timeout,
            backoff=Backoff(settings.backoff_min, settings.backoff_max),
            intensity=RestartIntensity(settings.restart_intensity, settings.restart_period),
        )
        self._active: dict[uuid.UUID, Hosted] = {}
        #: Mailboxes that escalated here: client -> (reason, epoch), until the journal shows
        #: them suspended (or placed elsewhere); reconcile() retries a suspension that failed.
        self._escalated: dict[uuid.UUID, tuple[str, int | None]] = {}
        self._starting: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._channels = ConsumeChannels(self._resubscribe, self._spawn)
        self._accepting = True
        self._retry = Backoff(min=0.2, max=5.0)
        metrics.ACTIVE_MAILBOXES.set_function(lambda: len(self._active))

    # --- wiring to a (re)connected broker --------------------------------------------------

    async def attach(self, connection: AmqpConnection) -> None:
        """On every new connection: our command queue, the consume channels, our mailboxes."""
        control = await connection.channel()
        await control.qos(100)
        queue = self._settings.worker_queue(self.worker_id)
        await control.declare_queue(queue, durable=False, exclusive=True, auto_delete=True)
        await control.consume(queue, lambda delivery: self._on_control(control, delivery))
        await self._channels.open(connection)
        if self._active:  # a reconnection: keep only what the journal still places here
            try:
                placed = set(await self._journal.mailboxes_placed_on(self.worker_id))
            except UNAVAILABLE:  # keep them all; reconcile() lets go of the others later
                placed = set(self._active)
            for entry in list(self._active.values()):
                if entry.mailbox.client_id in placed:
                    continue
                try:
                    moved = await self._moved(entry)
                except UNAVAILABLE:  # reconcile() looks again once the journal answers
                    moved = False
                if moved:
                    await self._lose(entry, "while this worker was disconnected")
        self._resubscribe(None)

    def _resubscribe(self, slot: int | None) -> None:
        """Subscribe again the mailboxes of consume channel `slot` (None: of every one),
        except those consuming on its open channel already: started since it opened, their
        consumer would be forgotten and go on taking the queue's messages."""
        for entry in list(self._active.values()):
            client = entry.mailbox.client_id
            if slot is not None and self._channels.slot(client) != slot:
                continue
            if entry.stage is Stage.CONSUMING and entry.channel is self._channels.of(client):
                continue
            entry.unsubscribed()  # its consumer went with the old channel
            self._spawn(self._subscribe(entry))  # one slow queue must not hold up the rest

    async def reconcile(self) -> None:
        """Let go of idle mailboxes the journal now places elsewhere (after this worker was
        taken for dead, say), so that one worker consumes each mailbox."""
        placed = await self._journal.mailboxes_placed_on(self.worker_id)
        for client in set(self._escalated) - set(placed):  # suspended or moved by now
            del self._escalated[client]
        for client, (reason, epoch) in list(self._escalated.items()):
            log.warning("mailbox %s escalated but is still active here; suspending it", client)
            await self._journal.suspend_mailbox(client, reason, epoch=epoch)
        for client in set(placed) - set(self._active) - set(self._escalated):
            if self._accepting:  # placed here, but the StartMailbox never arrived
                log.warning("mailbox %s is placed here but was not started; starting it", client)
                self._spawn(self.start(client, placed[client]))
        for entry in list(self._active.values()):
            client = entry.mailbox.client_id
            if client in placed:
                entry.mailbox.adopt(placed[client])
                self._resubscribe_or_catch_up(entry)
            elif entry.stage.takes_deliveries and await self._moved(entry):
                await self._lose(entry, "by the journal's latest placement")

    def _resubscribe_or_catch_up(self, entry: Hosted) -> None:
        """Retry what failed earlier: a subscription, or a catch-up from the journal."""
        if not self._accepting:
            return
        if entry.stage is Stage.STARTING:
            self._spawn(self._subscribe(entry))
        elif entry.stage is Stage.CONSUMING and entry.catch_up_due and not entry.inflight:
            self._start_catch_up(entry)

    async def _moved(self, entry: Hosted) -> bool:
        """Whether the mailbox is no longer under the placement this worker runs it with
        (read anew: a list read earlier may predate a placement made since)."""
        if entry.mailbox.epoch is None:
            return True
        position = await self._journal.position(entry.mailbox.client_id)
        return position is None or not (
            position.placed(entry.mailbox.epoch) and position.host == self.worker_id
        )

    async def _lose(self, entry: Hosted, why: str) -> None:
        """The mailbox was placed elsewhere (or ended): stop its loops, stop consuming it.
        What it has in flight ends at its next step (Stopped, Fenced) and is requeued, for
        the new owner. A handler call still running cannot be stopped, and letting go would
        let the new owner run the client beside it (a single-active-consumer queue hands the
        next message to the next consumer): the process ends instead, as the watchdog does
        when a lease lapses under a running handler (placement should never get here first)."""
        client = entry.mailbox.client_id
        log.warning("mailbox %s was placed elsewhere %s; stopping it here", client, why)
        entry.mailbox.stop()
        if entry.mailbox.executing and self._watchdog is not None:
            self._watchdog.end(f"mailbox {client} was placed elsewhere while its handler runs")
        await self._let_go(entry)

    async def _let_go(self, entry: Hosted) -> None:
        """Stop consuming a mailbox and forget it; deliveries already here are requeued."""
        entry.leave()
        with contextlib.suppress(AmqpError):
            if entry.channel is not None and entry.consumer_tag is not None:
                await entry.channel.cancel(entry.consumer_tag)
        entry.consumer_tag = None
        self._forget(entry)

    def _forget(self, entry: Hosted) -> None:
        entry.forget()
        if self._active.get(entry.mailbox.client_id) is entry:
            del self._active[entry.mailbox.client_id]

    def _on_control(self, channel: AmqpChannel, delivery: Delivery) -> None:
        channel.ack(delivery.delivery_tag)
        try:
            command = Control.decode(delivery.body)
        except ProtocolError as error:
            log.error("dropping control message: %s", error)
            return
        if isinstance(command, StartMailboxes):
            for start in command.mailboxes:
                self._spawn(
                    self.start(
                        start.client_id,
                        start.epoch,
                        done_seq=start.done_seq,
                        last_seq=start.last_seq,
                    )
                )
        elif isinstance(command, StartMailbox):  # from a supervisor of an older release
            self._spawn(self.start(command.client_id, command.epoch))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("mailbox task failed", exc_info=task.exception())

    # --- activation ------------------------------------------------------------------------

    async def start(
        self,
        client_id: uuid.UUID,
        epoch: int | None = None,
        *,
        done_seq: int | None = None,
        last_seq: int | None = None,
    ) -> None:
        """Consume a client's mailbox here under the placement `epoch` (idempotent; read from
        the journal when not given). `done_seq` and `last_seq` are the ones that placement
        found: a new mailbox starts from that done_seq instead of reading the journal's
        position, and takes the events up to that last_seq from the journal unless they were
        delivered first."""
        if not self._accepting:
            return
        if epoch is None:
            epoch = await self._placement(client_id)
            if epoch is None:
                return
        entry = self._active.get(client_id)
        if entry is not None:
            entry.mailbox.adopt(epoch)
        if entry is not None and entry.stage is Stage.CONSUMING:
            return
        if entry is None or not entry.stage.takes_deliveries:  # on its way out: a new one
            queue = self._settings.mailbox_queue(str(client_id))
            mailbox = Mailbox(
                client_id,
                self._journal,
                self._handlers,
                self._policy,
                self._broker,
                queue,
                epoch=epoch,
                done_seq=done_seq,
                threads=self.threads,
                watchdog=self._watchdog,
            )
            entry = Hosted(mailbox)
            if done_seq is not None and last_seq is not None:
                entry.placed_backlog = (done_seq, last_seq)
            self._active[client_id] = entry
        await self._subscribe(entry)
        if entry.stage is Stage.CONSUMING:
            metrics.ACTIVATIONS.inc()
        log.info("mailbox %s active on %s", client_id, self.worker_id)

    async def _placement(self, client_id: uuid.UUID) -> int | None:
        """The epoch of the mailbox's placement on this worker, or None if it is not here."""
        try:
            position = await self._journal.position(client_id)
        except UNAVAILABLE as error:  # reconcile() starts it once the journal answers
            log.warning("cannot read the placement of mailbox %s: %s", client_id, error)
            return None
        if (
            position is None
            or position.state is not MailboxState.ACTIVE
            or position.host != self.worker_id
        ):
            log.info("mailbox %s is not placed on %s; not starting it", client_id, self.worker_id)
            return None
        return position.epoch

    async def _subscribe(self, entry: Hosted) -> None:
        client = entry.mailbox.client_id
        channel = self._channels.of(client)
        if channel is None or not channel.is_open or time.monotonic() < entry.not_before:
            return
        if not entry.subscribing():  # consuming, subscribing already, or on its way out
            return
        queue = self._settings.mailbox_queue(str(client))
        if entry.suspect:
            channel = await self._declare_apart(entry, queue)
            if channel is None:
                return
        declared = False
        try:
            # Not waited for: the broker handles the channel's methods in order, so the queue
            # exists (a new client's, or one deleted while idle) before the consume reaches it.
            channel.declare_queue_nowait(queue, mailbox_arguments(self._settings))
            declared = True
            entry.channel = channel
            tag = await channel.consume(
                queue,
                lambda delivery: self._on_delivery(entry, channel, delivery),
                on_cancel=lambda: self._consumer_cancelled(entry),
            )
        except AmqpError as error:
            log.warning("cannot consume mailbox %s: %s", client, error)
            # A refused declare closes the channel under every consume waiting on it: this
            # mailbox's may be the one refused, so its next declare is waited for, apart.
            if declared and isinstance(error, ChannelClosed) and error.reply_code is not None:
                entry.suspect = True
            if entry.stage is Stage.SUBSCRIBING:
                entry.move(Stage.STARTING)  # the reopened channel or reconcile() subscribes it
            return
        if entry.stage is not Stage.SUBSCRIBING:  # let go (or drained) meanwhile
            with contextlib.suppress(AmqpError):
                await channel.cancel(tag)
            return
        entry.consuming(channel, tag)
        self._take_placed_backlog(entry)

    def _take_placed_backlog(self, entry: Hosted) -> None:
        """Once subscribed, take from the journal what it has unfinished."""
        # The journal, not the queue, says what is unfinished: the queue may have been
        # deleted while the mailbox was idle, or lost messages, or hold only later ones.
        # Whatever the journal has after done_seq is taken from it, in seq order, by the
        # mailbox's lock and seq rule: what the queue delivers first is not read again, and
        # what it delivers later is a duplicate. What is accepted after the placement is
        # published after it (or relayed), and a gap before it is filled from the journal.
        # Safe beside a previous owner: placement moves a mailbox only off a dead worker, and
        # an owner that lost its lease cannot start anything (the epoch).
        placed, entry.placed_backlog = entry.placed_backlog, None
        if placed is not None and placed[1] <= placed[0]:
            return  # nothing unfinished when it was placed: the rest comes through the queue
        entry.catch_up_through = placed[1] if placed is not None else None
        entry.catch_up_due = True  # retried by reconcile() until it succeeds
        self._start_catch_up(entry)

    async def _declare_apart(self, entry: Hosted, queue: str) -> AmqpChannel | None:
        """Declare a suspect mailbox's queue on a channel of its own, waiting for the answer:
        a refusal is then this mailbox's alone. Returns the consume channel to go on with,
        None when the subscription ends here (refused, let go, or the channel not open)."""
        try:
            await self._channels.declare_apart(queue, mailbox_arguments(self._settings))
        except AmqpError as error:
            if entry.stage is not Stage.SUBSCRIBING:  # let go meanwhile: nothing to retry
                return None
            entry.move(Stage.STARTING)
            if isinstance(error, RpcTimeout) or (
                isinstance(error, ChannelClosed) and error.reply_code is not None
            ):
                await self._queue_refused(entry, error)
            else:  # the connection went: attach() subscribes it again
                log.warning("cannot declare mailbox %s: %s", entry.mailbox.client_id, error)
            return None
        entry.suspect = False
        if entry.stage is not Stage.SUBSCRIBING:
            return None
        channel = self._channels.of(entry.mailbox.client_id)  # reopened meanwhile, maybe
        if channel is None or not channel.is_open:
            entry.move(Stage.STARTING)  # the reopened channel subscribes it
            return None
        return channel

    async def _queue_refused(self, entry: Hosted, error: AmqpError) -> None:
        """The broker refused this mailbox's queue: count it, say so, and try again after the
        run policy's backoff, as after a failed attempt. A refusal only an operator can lift,
        or more refusals than the restart intensity allows, escalate to the supervisor."""
        client = entry.mailbox.client_id
        code = error.reply_code if isinstance(error, ChannelClosed) else None
        label = "timeout" if code is None else str(code) if code in _REFUSAL_CODES else "other"
        metrics.QUEUE_REFUSALS.labels(label).inc()
        too_many = self._policy.intensity.exceeded(entry.refusals, time.monotonic())
        if code in PERMANENT_REFUSALS or too_many:
            log.error("mailbox %s: RabbitMQ refuses its queue (%s); escalating", client, error)
            entry.mailbox.stop()
            entry.leave()
            reason = f"RabbitMQ refused to declare the mailbox's queue (reply code {label})"
            await self._escalate(
                entry, Escalate(SuspensionCause.QUEUE_REFUSED, reason, settled=False)
            )
            return
        delay = self._policy.backoff.delay(len(entry.refusals))
        entry.not_before = time.monotonic() + delay
        log.warning(
            "mailbox %s: RabbitMQ refused its queue (%s); trying again in %.2f s",
            client,
            error,
            delay,
        )
        self._spawn(self._subscribe_later(entry, delay))

    async def _subscribe_later(self, entry: Hosted, delay: float) -> None:
        await self._channels.pause(delay)
        entry.not_before = 0.0
        if self._accepting:
            await self._subscribe(entry)

    def _consumer_cancelled(self, entry: Hosted) -> None:
        """The broker cancelled our consumer: the queue was deleted. Declare it again and
        take what the journal says is unfinished from the journal."""
        log.warning(
            "mailbox %s: its queue was deleted; declaring it again", entry.mailbox.client_id
        )
        entry.unsubscribed()
        if self._accepting:
            self._spawn(self._subscribe(entry))  # only if it is STARTING now

    def _start_catch_up(self, entry: Hosted) -> None:
        """Counted in flight before its task first runs, as a delivery is: a passivation
        that looks at `inflight` in between must see it and keep the mailbox."""
        entry.inflight += 1
        self._spawn(self._catch_up(entry))

    async def _catch_up(self, entry: Hosted) -> None:
        try:
            caught_up = await entry.mailbox.catch_up(entry.catch_up_through)
            entry.catch_up_due = False
            if caught_up:
                log.info(
                    "mailbox %s took %d unfinished events from the journal",
                    entry.mailbox.client_id,
                    caught_up,
                )
        except Fenced:
            await self._let_go(entry)
        except Stopped:
            return
        except Escalate as escalation:
            entry.catch_up_due = False
            entry.leave()
            await self._escalate(entry, escalation)
        except NOT_NOW as error:  # reconcile() tries it again
            log.warning(
                "mailbox %s could not catch up from the journal (%s); retrying later",
                entry.mailbox.client_id,
                error,
            )
        finally:
            entry.inflight -= 1
            entry.mailbox.last_active = time.monotonic()

    # --- processing ------------------------------------------------------------------------

    def _on_delivery(self, entry: Hosted, channel: AmqpChannel, delivery: Delivery) -> None:
        if not entry.stage.takes_deliveries or not self._accepting:
            channel.nack(delivery.delivery_tag, requeue=True)
            return
        entry.mailbox.last_active = time.monotonic()
        entry.inflight += 1
        self._spawn(self._handle(entry, channel, delivery))

    async def _handle(self, entry: Hosted, channel: AmqpChannel, delivery: Delivery) -> None:
        try:
            await self._settle(entry, channel, delivery)
        except asyncio.CancelledError:  # past the drain deadline: back to the queue...
            if entry.mailbox.executing:  # ...unless its handler still runs: the message is
                log.error(  # released only when this process ends (I3)
                    "mailbox %s: its handler has not ended; the message stays with this "
                    "process until it exits",
                    entry.mailbox.client_id,
                )
            else:
                channel.nack(delivery.delivery_tag, requeue=True)
            raise
        finally:
            entry.inflight -= 1
            entry.mailbox.last_active = time.monotonic()

    async def _settle(self, entry: Hosted, channel: AmqpChannel, delivery: Delivery) -> None:
        verdict = await settle(entry.mailbox, delivery.body, lambda: self._accepting, self._retry)
        if verdict.lost:  # consume no more, so that the requeued message goes to the new owner
            await self._let_go(entry)
        if verdict.escalation is not None:
            entry.leave()  # no more deliveries for this mailbox here
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
                if idle and entry.stage is Stage.CONSUMING:
                    await self._passivate(entry)

    async def _passivate(self, entry: Hosted) -> None:
        """Stop consuming an idle mailbox and hand it back; resume it if that fails."""
        client = entry.mailbox.client_id
        with tracing.supervising("passivate", client, entry.mailbox.last_traceparent) as span:
            span.set_attribute("seriatim.worker_id", self.worker_id)
            await self._passivate_now(entry, client)

    async def _passivate_now(self, entry: Hosted, client: uuid.UUID) -> None:
        entry.move(Stage.PASSIVATING)
        try:
            if entry.channel is not None and entry.consumer_tag is not None:
                await entry.channel.cancel(entry.consumer_tag)
            entry.consumer_tag = None
            if entry.inflight:  # a message slipped in before the cancel took effect
                await self._resume(entry)
                return
            if self._deletes_queues and await self._moved(entry):
                # Taken for dead and placed elsewhere meanwhile: the queue is the new
                # owner's now, and so is the release.
                await self._lose(entry, "before its idle queue was deleted")
                return
            if not await self._delete_queue(entry, client):  # stays active (see there)
                await self._resume(entry)
                return
            # Under the placement it runs with: a worker taken for dead and placed anew
            # since (reconcile() not yet run) must not release the new placement.
            await self._journal.release_mailbox(client, self.worker_id, epoch=entry.mailbox.epoch)
        except OUTAGES as error:
            log.warning("passivating mailbox %s failed (%s); it stays active", client, error)
            await self._resume(entry)
            return
        if entry.stage is Stage.PASSIVATING:  # not let go meanwhile: that forgets it itself
            self._forget(entry)
        metrics.PASSIVATIONS.inc()
        log.info("mailbox %s passivated", client)
        # Not told: the supervisor's sweep finds any backlog left behind.
        await self._link.tell_supervisor(MailboxPassivated(client, self.worker_id))

    @property
    def _deletes_queues(self) -> bool:
        return self._settings.delete_idle_queues == "on"

    async def _delete_queue(self, entry: Hosted, client: uuid.UUID) -> bool:
        """Delete the passivating mailbox's queue if it is empty (SERIATIM_DELETE_IDLE_QUEUES),
        while the journal still places it here (read just before: `_passivate_now`), so that
        no other worker consumes it yet. A new owner that subscribed in the moment between
        that read and the delete has its consumer cancelled by the broker: it declares the
        queue again and takes what is unfinished from the journal (_consumer_cancelled).
        False when the mailbox must stay active: a message came (the delete was refused), or
        the journal, read after the delete, has an event unfinished, whose message may have
        gone with the queue (a quorum queue's delete cannot be made conditional): the
        mailbox then takes it from the journal. An event accepted after that read is
        published after the delete, so its publish declares the queue again (see
        Publisher.publish_event) and waits there for the next activation.

        An idle quorum queue costs the broker ~200 KiB and 6 processes (docs/scaling.md).
        False too when the broker cannot be asked (no connection, the channel closed): the
        mailbox stays active, consumes again once the link is back, and passivates at its
        next idle check. Passivated with its queue kept, nothing would delete that queue
        until the client's next activation. A delete that fails DELETE_TRIES times in a row
        with the link up (a queue the broker cannot delete now) is given up: the mailbox
        passivates with its queue kept, rather than resubscribing at every idle check."""
        if not self._deletes_queues:
            return True
        publisher = self._link.publisher
        if publisher is None:
            log.warning(
                "mailbox %s: its idle queue cannot be deleted with the broker away; it stays "
                "active and passivates once the broker is back",
                client,
            )
            return False
        try:
            if not await publisher.delete_idle_mailbox(str(client)):
                return False
        except AmqpError as error:
            entry.delete_failures += 1
            if entry.delete_failures >= DELETE_TRIES:
                log.warning(
                    "mailbox %s: its idle queue could not be deleted %d times (%s); it is "
                    "passivated with its queue kept",
                    client,
                    entry.delete_failures,
                    error,
                )
                return True
            log.warning(
                "mailbox %s: its idle queue could not be deleted (%s); it stays active and "
                "passivates at its next idle check",
                client,
                error,
            )
            return False
        entry.delete_failures = 0
        metrics.QUEUES_DELETED.inc()
        entry.catch_up_due = True  # until the journal shows nothing unfinished
        position = await self._journal.position(client)
        if position is not None and position.done_seq < position.last_seq:
            log.info("mailbox %s: an event came as its queue was deleted; staying", client)
            return False
        entry.catch_up_due = False
        return True

    async def _escalate(self, entry: Hosted, escalation: Escalate) -> None:
        """Stop the mailbox here and ask the supervisor to suspend it."""
        client, reason = entry.mailbox.client_id, escalation.reason
        log.warning("mailbox %s escalates to the supervisor: %s", client, reason)
        self._escalated[client] = (reason, entry.mailbox.epoch)  # until the journal shows it
        await self._let_go(entry)
        failed = MailboxFailed(
            client,
            self.worker_id,
            escalation.cause,
            reason,
            entry.mailbox.last_traceparent,
            entry.mailbox.epoch,
        )
        if not await self._link.tell_supervisor(failed, persistent=True):
            # The journal must not go on saying it is active here.
            log.warning("supervisor unreachable: suspending mailbox %s directly", client)
            await self._journal.suspend_mailbox(client, reason, epoch=entry.mailbox.epoch)

    async def _resume(self, entry: Hosted) -> None:
        """Take deliveries again after a passivation that did not complete."""
        if entry.stage is not Stage.PASSIVATING:  # let go or drained meanwhile: stays so
            return
        entry.move(Stage.STARTING)
        entry.consumer_tag = None
        # A subscription takes what the journal has unfinished (what a deleted queue may
        # have held among it); one that fails is retried by reconcile().
        await self._subscribe(entry)

    def unready(self) -> str | None:
        """Why this worker cannot run a new plain-function handler now, or None."""
        threads = self.threads
        if threads.exhausted:
            return (
                f"all {threads.size} handler threads hold calls past their timeout; "
                f"{threads.waiting} call(s) wait for one"
            )
        return None

    def executing(self) -> int:
        """How many mailboxes here have a handler call that has not ended."""
        return sum(entry.mailbox.executing for entry in self._active.values())

    def stop_taking(self) -> None:
        """From now on every delivery goes back to its queue (the first step of a shutdown)."""
        self._accepting = False
        self._channels.stop()

    async def drain(self, deadline: float) -> int:
        """Stop taking messages, let in-flight events finish for `deadline` s, then cancel.

        Returns how many handler calls have still not ended (they cannot be stopped: the
        process must end before its mailboxes are released, see seriatim/worker.py)."""
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
        unended = self.executing()
        for entry in list(self._active.values()):
            self._forget(entry)
        return unended
