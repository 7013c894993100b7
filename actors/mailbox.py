"""The per-client mailbox actor: the seq rule, in-place retries and the fenced outcome."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import time
import uuid
from typing import Any

import dramatiq
from opentelemetry.trace import Span

from actors import logs, metrics, tracing
from actors.backoff import Backoff
from actors.execution import Execution, Outcome, failure
from actors.handlers import Event, HandlerRegistry
from actors.middleware import AttemptHooks
from actors.policy import RestartIntensity
from actors.protocol import EventMessage
from actors.states import DeadEventPolicy, EventStatus, SuspensionCause
from actors.store.roles import MailboxJournal
from actors.store.rows import Position
from actors.threads import HandlerThreads
from actors.watchdog import Watchdog

log = logging.getLogger(__name__)

#: Events read from the journal at a time by a catch-up.
CATCH_UP_PAGE = 100


class Step(enum.Enum):
    DUPLICATE = "duplicate"  # already terminal: ack and forget
    NEXT = "next"  # the one event the mailbox may process now
    GAP = "gap"  # earlier events first, from the journal


def classify(seq: int, done_seq: int) -> Step:
    """The seq rule: where an arriving event stands relative to the mailbox's progress."""
    if seq <= done_seq:
        return Step.DUPLICATE
    return Step.NEXT if seq == done_seq + 1 else Step.GAP


@dataclasses.dataclass(frozen=True, slots=True)
class RunPolicy:
    max_attempts: int = 5
    handler_timeout: float = 30.0
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    intensity: RestartIntensity = dataclasses.field(default_factory=RestartIntensity)

    def intensity_for(self, position: Position | None) -> RestartIntensity:
        """The client's own restart intensity where it has one, else the default."""
        if position is None or (position.max_restarts is None and position.restart_period is None):
            return self.intensity
        return RestartIntensity(
            position.max_restarts or self.intensity.max_restarts,
            position.restart_period or self.intensity.within,
        )


class Stopped(Exception):
    """The mailbox was asked to stop mid-event; the message must go back to the queue."""


class Fenced(Stopped):
    """The journal refused a write: the mailbox has been placed anew (its epoch is stale).
    It starts and records nothing more here; the message goes back to the queue, for the
    mailbox's new owner."""


class Lapsed(Exception):
    """This worker's lease is not fresh (actors/watchdog.py): no attempt may start now."""


class Escalate(Exception):
    """The mailbox must stop and be suspended by the supervisor.

    `settled` tells whether the delivered message is finished with (ack it) or not (requeue).
    """

    def __init__(self, cause: SuspensionCause, reason: str, *, settled: bool) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason
        self.settled = settled


class Mailbox:
    """Processes one client's events strictly one after another.

    The lock makes a redelivered copy wait for the original in this process; the fence in
    PostgreSQL makes a copy in another process harmless.
    """

    def __init__(
        self,
        client_id: uuid.UUID,
        journal: MailboxJournal,
        handlers: HandlerRegistry,
        policy: RunPolicy,
        broker: dramatiq.Broker,
        queue_name: str,
        *,
        epoch: int | None = None,
        done_seq: int | None = None,
        threads: HandlerThreads | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.client_id = client_id
        #: The placement this mailbox runs under (None: unfenced, for tests of the journal).
        self.epoch = epoch
        self._journal = journal
        self._policy = policy
        self._hooks = AttemptHooks(broker)
        self._queue_name = queue_name
        self._watchdog = watchdog
        self._execution = Execution(
            handlers, policy.handler_timeout, threads or HandlerThreads(4), watchdog
        )
        self._lock = asyncio.Lock()
        #: The last seq whose outcome is recorded; None: read it from the journal when needed.
        #: Given by a placement, it is exact: nobody else records under this epoch.
        self._done_seq: int | None = done_seq
        self._stopping = asyncio.Event()
        self._failures: collections.deque[float] = collections.deque()
        self.last_active = time.monotonic()
        self.last_traceparent = ""  # of the event processed last, for the passivation span

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def executing(self) -> bool:
        """A handler call has started and not ended (it may outlive a cancelled delivery)."""
        return self._execution.running

    def adopt(self, epoch: int | None) -> None:
        """Run under a newer placement of this mailbox on this worker."""
        if self.busy:  # an attempt's writes all carry one epoch; the next reconcile adopts it
            return
        if epoch is not None and (self.epoch is None or epoch > self.epoch):
            self.epoch = epoch

    def stop(self) -> None:
        """Interrupt a backoff wait and start no further attempt; the event in flight is then
        left for redelivery. A mailbox that escalated stops itself."""
        self._stopping.set()

    async def process(self, message: EventMessage) -> None:
        """Bring the mailbox up to and including `message.seq`; raises Stopped."""
        async with self._lock:
            self.last_active = time.monotonic()
            try:
                await self._process(message)
            finally:
                self.last_active = time.monotonic()

    async def catch_up(self, through: int | None = None) -> int:
        """Process, from the journal, every event after done_seq up to seq `through` (None:
        to the journal's last_seq, read now with its done_seq); returns how many.

        Events already run by then (delivered meanwhile) cost nothing: none is read."""
        count = 0
        async with self._lock:
            self.last_active = time.monotonic()
            if through is None:
                position = await self._journal.position(self.client_id)
                if position is None:
                    return 0
                self._done_seq, through = position.done_seq, position.last_seq
            while (done := await self._done()) < through:
                high = min(through, done + CATCH_UP_PAGE) + 1
                rows = await self._journal.events_between(self.client_id, done, high)
                if not rows:
                    return count
                for row in rows:
                    await self._run(EventMessage.of(row))
                    count += 1
            return count

    async def _process(self, message: EventMessage) -> None:
        done = await self._done()
        step = classify(message.seq, done)
        if step is Step.DUPLICATE:
            log.debug("duplicate delivery of seq %d (done %d)", message.seq, done)
            self._hooks.skipped(message.to_dramatiq(self._queue_name))
            return
        if step is Step.GAP:
            # The usual way a batch's events arrive: a batch is published as one message per
            # hundred events, the last event's of each (gateway/publishing.py); a lost publish
            # or a relay's copy may make one too.
            missing = await self._journal.events_between(self.client_id, done, message.seq)
            log.debug(
                "filling gap before seq %d from the journal: %d events", message.seq, len(missing)
            )
            for row in missing:
                try:
                    await self._run(EventMessage.of(row))
                except Escalate as escalation:  # the delivered message itself is untouched
                    raise Escalate(escalation.cause, escalation.reason, settled=False) from None
        await self._run(message, delivered=True)

    async def _done(self) -> int:
        if self._done_seq is None:
            position = await self._journal.position(self.client_id)
            self._done_seq = position.done_seq if position else 0
        return self._done_seq

    async def _run(self, message: EventMessage, *, delivered: bool = False) -> None:
        """Run the event to its outcome; `delivered` when RabbitMQ delivered it (rather than
        the journal giving it): its attempt start then marks it published too."""
        if message.seq <= await self._done():
            return
        with (
            tracing.processing(
                self._queue_name,
                message.event_id,
                message.client_id,
                message.seq,
                message.traceparent,
            ) as span,
            logs.bound(client_id=message.client_id, event_id=message.event_id),
        ):
            self.last_traceparent = tracing.current_traceparent() or ""
            await self._attempts(message, span, delivered)

    async def _attempts(self, message: EventMessage, span: Span, delivered: bool) -> None:
        envelope = message.to_dramatiq(self._queue_name)
        started = time.monotonic()
        while True:
            if self._stopping.is_set():  # escalated, or the worker drains: no attempt after that
                raise Stopped
            self._check_lease()
            attempt = await self._journal.mark_attempt(
                message.event_id, epoch=self.epoch, delivered=delivered
            )
            if attempt is None:  # terminal already (somebody else finished it), or fenced
                await self._refused("attempt")
                self._done_seq = None
                return
            span.set_attribute("seriatim.attempt", attempt)
            if attempt == 1 and message.accepted_at is not None:
                wait = max(0.0, time.time() - message.accepted_at)
                span.set_attribute("seriatim.queue_wait_s", round(wait, 6))
                metrics.observe_queue_wait(wait)
            if attempt > self._policy.max_attempts:
                outcome = failure("AttemptsExhausted", f"no attempts left after {attempt - 1}")
            else:
                outcome = await self._attempt(message, attempt, envelope)
            metrics.ATTEMPTS.labels("ok" if outcome.ok else "failed").inc()
            if outcome.ok:
                await self._record(message, outcome, attempt)
                metrics.observe_processing(time.monotonic() - started)
                return
            try:
                finished = await self._failed(message, outcome, attempt)
            except Escalate:
                # Whatever waits for the lock (a catch-up, a gap fill, another delivery) must
                # not run another attempt while the supervisor suspends the mailbox.
                self._stopping.set()
                raise
            if finished:
                metrics.observe_processing(time.monotonic() - started)
                return
            with tracing.restarting(attempt, self._policy.backoff.delay(attempt)) as delay:
                await self._backoff(delay)

    async def _failed(self, message: EventMessage, outcome: Outcome, attempt: int) -> bool:
        """Handle a failed attempt; True when the event is finished (dead).

        Raises Escalate when the client's restart intensity is exceeded, or when the event
        died and the client's dead-event policy is `halt`.
        """
        position = await self._journal.position(self.client_id)
        intensity = self._policy.intensity_for(position)
        too_many = intensity.exceeded(self._failures, time.monotonic())
        reason = (
            f"more than {intensity.max_restarts} failed attempts within "
            f"{intensity.within:g} s (restart intensity)"
        )
        if attempt < self._policy.max_attempts and not outcome.final:
            if not await self._journal.mark_retrying(
                message.event_id, outcome.value, epoch=self.epoch
            ):
                await self._refused("retry")
                self._done_seq = None
                return True  # terminal already: somebody else finished it
            metrics.RESTARTS.inc()
            if too_many:
                raise Escalate(SuspensionCause.RESTART_INTENSITY, reason, settled=False)
            return False
        attempts = min(attempt, self._policy.max_attempts)
        if not await self._record(message, outcome, attempts):
            return True
        if position is not None and position.policy is DeadEventPolicy.HALT:
            raise Escalate(
                SuspensionCause.HALT,
                f"event seq {message.seq} is dead and the client's dead-event policy is halt",
                settled=True,
            )
        if too_many:
            raise Escalate(SuspensionCause.RESTART_INTENSITY, reason, settled=True)
        return True

    async def _attempt(
        self, message: EventMessage, attempt: int, envelope: dramatiq.Message[Any]
    ) -> Outcome:
        event = Event(
            message.event_id,
            message.client_id,
            message.seq,
            message.type,
            message.payload,
            attempt,
            self.epoch or 0,
        )
        with tracing.attempting(event.type, attempt) as span:
            outcome = await self._hooks.around(envelope, lambda: self._execution.run(event))
            if not outcome.ok:
                tracing.failed(span, outcome.value["type"], outcome.value["message"])
        return outcome

    async def _record(self, message: EventMessage, outcome: Outcome, attempts: int) -> bool:
        """Record the outcome; False when the fence refused it (another process had it)."""
        status = EventStatus.SUCCEEDED if outcome.ok else EventStatus.DEAD
        recorded = await self._journal.record_outcome(
            message.event_id,
            message.client_id,
            message.seq,
            status,
            attempts,
            outcome.value if outcome.ok else None,
            None if outcome.ok else outcome.value,
            epoch=self.epoch,
        )
        if recorded:
            self._done_seq = message.seq
            metrics.EVENTS_PROCESSED.labels(status).inc()
            if not outcome.ok:
                log.warning(
                    "event seq %d is dead after %d attempts: %s",
                    message.seq,
                    attempts,
                    outcome.value["type"],
                )
            return True
        await self._refused("outcome")
        log.warning("fence refused the outcome of seq %d: another process recorded it", message.seq)
        self._done_seq = None
        return False

    async def _refused(self, what: str) -> None:
        """A write was refused: raise Fenced if the mailbox has been placed anew since."""
        if self.epoch is None:
            return
        position = await self._journal.position(self.client_id)
        if position is None or not position.placed(self.epoch):
            metrics.FENCED.inc()
            self._stopping.set()  # nothing more starts here under this placement
            log.warning(
                "mailbox %s lost its placement (epoch %d; the journal has %s): its %s is "
                "refused and it stops here",
                self.client_id,
                self.epoch,
                "none" if position is None else f"{position.state} epoch {position.epoch}",
                what,
            )
            raise Fenced(f"placement {self.epoch} of mailbox {self.client_id} is stale")

    def _check_lease(self) -> None:
        if self._watchdog is not None and not self._watchdog.fresh():
            raise Lapsed("this worker's lease is not fresh: no attempt starts until it is")

    async def _backoff(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return
        raise Stopped
