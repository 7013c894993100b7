"""What becomes of one delivery: the verdict `settle` hands the host for the channel."""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg
import pytest

from actors.backoff import Backoff
from actors.delivery import ACK, DROP, REQUEUE, settle
from actors.mailbox import Escalate, Mailbox, Stopped
from actors.protocol import EventMessage

CLIENT = uuid.UUID("6f1c2e2a-0000-4000-8000-000000000001")
RETRY = Backoff(min=0.001, max=0.001)


class Outcomes:
    """Stands in for a Mailbox: raises the given exceptions in turn, then processes."""

    def __init__(self, *raises: BaseException) -> None:
        self.client_id = CLIENT
        self.raises = list(raises)
        self.processed: list[int] = []

    async def process(self, message: EventMessage) -> None:
        if self.raises:
            raise self.raises.pop(0)
        self.processed.append(message.seq)


def body(client: uuid.UUID = CLIENT, seq: int = 1) -> bytes:
    message = EventMessage(uuid.uuid4(), client, seq, "demo.echo", {})
    return bytes(message.to_dramatiq("ns.mailbox.x").encode())


async def verdict_of(mailbox: Outcomes, data: bytes, accepting: bool = True) -> Any:
    return await settle(cast(Mailbox, mailbox), data, lambda: accepting, RETRY)


async def test_a_processed_event_is_acked() -> None:
    mailbox = Outcomes()

    assert await verdict_of(mailbox, body(seq=3)) == ACK
    assert mailbox.processed == [3]


@pytest.mark.parametrize("data", [b"{not json", b'{"queue_name": "x"}'])
async def test_a_message_that_is_not_an_event_is_dropped(data: bytes) -> None:
    assert await verdict_of(Outcomes(), data) == DROP


async def test_another_client_s_event_is_dropped_unprocessed() -> None:
    mailbox = Outcomes()

    assert await verdict_of(mailbox, body(client=uuid.uuid4())) == DROP
    assert mailbox.processed == []


async def test_a_stopping_mailbox_requeues() -> None:
    assert await verdict_of(Outcomes(Stopped()), body()) == REQUEUE


@pytest.mark.parametrize("settled", [True, False])
async def test_an_escalation_acks_only_a_finished_event_and_is_handed_on(settled: bool) -> None:
    escalation = Escalate("halt", "dead event", settled=settled)

    verdict = await verdict_of(Outcomes(escalation), body())

    assert (verdict.ack, verdict.requeue, verdict.escalation) == (settled, True, escalation)


async def test_a_journal_outage_is_retried_in_place_until_it_passes() -> None:
    mailbox = Outcomes(OSError("down"), asyncpg.PostgresConnectionError("down"))

    assert await verdict_of(mailbox, body(seq=7)) == ACK
    assert mailbox.processed == [7]


async def test_a_journal_outage_during_shutdown_requeues() -> None:
    mailbox = Outcomes(OSError("down"))

    assert await verdict_of(mailbox, body(), accepting=False) == REQUEUE
    assert mailbox.processed == []


async def test_an_unexpected_error_requeues() -> None:
    assert await verdict_of(Outcomes(RuntimeError("bug")), body()) == REQUEUE
