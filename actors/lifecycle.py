"""The life of a mailbox hosted by a worker: its stages and the only moves allowed between them.

A move the table does not allow is a bug in the host: it is logged and raised, never applied.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging

from actors.amqp import AmqpChannel
from actors.mailbox import Mailbox

log = logging.getLogger(__name__)


class Stage(enum.Enum):
    STARTING = "starting"  # hosted here, not consuming: not yet, or no more (channel, cancel)
    SUBSCRIBING = "subscribing"  # declaring its queue and registering a consumer
    CONSUMING = "consuming"  # a consumer takes its deliveries
    PASSIVATING = "passivating"  # idle: consumer cancelled, placement handed back; may resume
    LEAVING = "leaving"  # placed elsewhere, fenced or escalated: nothing more runs here
    STOPPED = "stopped"  # the host forgot it (let go, passivated, or drained)

    @property
    def takes_deliveries(self) -> bool:
        """Whether a delivery that reaches it is processed (else it goes back to its queue);
        a delivery can come before the consumer's registration has returned."""
        return self in _TAKING


_TAKING = frozenset({Stage.STARTING, Stage.SUBSCRIBING, Stage.CONSUMING})

#: Every move allowed, from each stage.
TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.STARTING: frozenset({Stage.SUBSCRIBING, Stage.LEAVING, Stage.STOPPED}),
    Stage.SUBSCRIBING: frozenset({Stage.CONSUMING, Stage.STARTING, Stage.LEAVING, Stage.STOPPED}),
    Stage.CONSUMING: frozenset({Stage.STARTING, Stage.PASSIVATING, Stage.LEAVING, Stage.STOPPED}),
    Stage.PASSIVATING: frozenset({Stage.STARTING, Stage.LEAVING, Stage.STOPPED}),
    Stage.LEAVING: frozenset({Stage.STOPPED}),
    Stage.STOPPED: frozenset(),
}


class ForbiddenTransition(RuntimeError):
    """A hosted mailbox was asked to move where its current stage does not lead."""


@dataclasses.dataclass
class Hosted:
    """A mailbox on this worker: its stage, its consumer, and the work it has in flight."""

    mailbox: Mailbox
    stage: Stage = Stage.STARTING
    consumer_tag: str | None = None  # its consumer's, from CONSUMING until it is cancelled
    channel: AmqpChannel | None = None
    inflight: int = 0  # deliveries and catch-ups running now
    catch_up_due: bool = False  # the journal has events the queue may not: take them from it
    catch_up_through: int | None = None  # ...up to this seq (None: the journal's last_seq)
    #: (done_seq, last_seq) as its placement found them, until its first subscription.
    placed_backlog: tuple[int, int] | None = None
    #: The broker closed the channel (or connection) under its queue declare: the refusal may
    #: be its own, so its next declare is waited for apart (MailboxHost._declare_apart).
    suspect: bool = False
    not_before: float = 0.0  # monotonic: no subscription before (a refused declare's backoff)
    #: Passivations in a row whose queue delete failed with the link up (MailboxHost._delete_queue).
    delete_failures: int = 0
    refusals: collections.deque[float] = dataclasses.field(default_factory=collections.deque)

    def move(self, to: Stage) -> None:
        """Enter stage `to`; ForbiddenTransition (logged) if the table does not allow it."""
        if to not in TRANSITIONS[self.stage]:
            log.error(
                "mailbox %s cannot move from %s to %s",
                self.mailbox.client_id,
                self.stage.value,
                to.value,
            )
            raise ForbiddenTransition(f"{self.stage.value} -> {to.value}")
        self.stage = to

    def subscribing(self) -> bool:
        """Enter SUBSCRIBING if it is STARTING; whether it did."""
        if self.stage is not Stage.STARTING:
            return False
        self.move(Stage.SUBSCRIBING)
        return True

    def consuming(self, channel: AmqpChannel, consumer_tag: str) -> None:
        self.move(Stage.CONSUMING)
        self.channel, self.consumer_tag = channel, consumer_tag

    def unsubscribed(self) -> None:
        """Its consumer is gone (the channel closed, the broker cancelled it)."""
        self.consumer_tag = None
        if self.stage is Stage.CONSUMING:
            self.move(Stage.STARTING)

    def leave(self) -> None:
        """No more deliveries or catch-ups here; a mailbox already leaving or stopped stays so."""
        if self.stage not in (Stage.LEAVING, Stage.STOPPED):
            self.move(Stage.LEAVING)

    def forget(self) -> None:
        """The host no longer holds it (idempotent)."""
        if self.stage is not Stage.STOPPED:
            self.move(Stage.STOPPED)
