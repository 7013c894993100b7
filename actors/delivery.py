"""One delivery from a mailbox queue, settled: what the mailbox made of it decides whether the
message is acknowledged, requeued or dropped, and whether the mailbox escalates.

The host applies the verdict to the channel; nothing here touches the broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from actors.backoff import Backoff
from actors.mailbox import Escalate, Fenced, Lapsed, Mailbox, Stopped
from actors.outages import OUTAGES
from actors.protocol import EventMessage, ProtocolError, decode_dramatiq

log = logging.getLogger(__name__)

#: The mailbox cannot go on now: an outage, or this worker's own lease until it is renewed.
NOT_NOW: tuple[type[BaseException], ...] = (*OUTAGES, Lapsed)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Ack the message, or nack it (back to the queue when `requeue`); maybe escalate; when
    `lost`, the mailbox was placed elsewhere: stop consuming it before the nack."""

    ack: bool
    requeue: bool = True
    escalation: Escalate | None = None
    lost: bool = False


ACK = Verdict(ack=True)
REQUEUE = Verdict(ack=False)
DROP = Verdict(ack=False, requeue=False)
LOST = Verdict(ack=False, lost=True)


async def settle(
    mailbox: Mailbox, body: bytes, accepting: Callable[[], bool], retry: Backoff
) -> Verdict:
    """Process one message in its mailbox, retrying in place while the journal is away."""
    try:
        message = EventMessage.from_dramatiq(decode_dramatiq(body))
    except ProtocolError as error:
        log.error("dropping a message that is not a seriatim event: %s", error)
        return DROP
    if message.client_id != mailbox.client_id:
        log.error("dropping event %s: it belongs to another client's mailbox", message.event_id)
        return DROP
    failures = 0
    while True:
        try:
            await mailbox.process(message)
            return ACK
        except Fenced:
            return LOST
        except Stopped:
            return REQUEUE
        except Escalate as escalation:  # settled: the event itself is finished (dead)
            return Verdict(ack=escalation.settled, escalation=escalation)
        except NOT_NOW as error:
            failures += 1  # the journal is unreachable: keep the message, try again
            log.warning("mailbox %s cannot go on now (%s); retrying", mailbox.client_id, error)
            if not accepting():
                return REQUEUE
            await asyncio.sleep(retry.delay(min(failures, 10)))
        except Exception:
            log.exception(
                "mailbox %s failed on seq %d; the message is requeued",
                mailbox.client_id,
                message.seq,
            )
            await asyncio.sleep(retry.delay(1))
            return REQUEUE
