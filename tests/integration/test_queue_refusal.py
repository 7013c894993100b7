"""A mailbox queue RabbitMQ refuses to declare fails that mailbox alone (real broker, real journal).

The queue of one client exists already with another argument, so the broker answers its
declare with 406 PRECONDITION_FAILED, which closes the whole channel it came on: the consume
channel it shares with the other mailboxes of its slot. (A 541 closes the whole connection;
the worker's reconnection then does what the reopened channel does here.) The refused mailbox
must escalate (metric, log, MailboxFailed to the supervisor) after one such close; the others
must consume again, each with one consumer, and process what comes to them.

On the starting code (the nowait declare redone on every reopened channel, at once) the
refused mailbox never escalates: the test times out waiting for MailboxFailed, while the
shared channel is closed and reopened in a tight loop.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import REGISTRY

from actors.amqp import AmqpConnection
from actors.broker import mailbox_arguments
from actors.channels import ConsumeChannels
from actors.handlers import Event, HandlerRegistry
from actors.host import MailboxHost
from actors.protocol import Control, EventMessage, MailboxFailed
from actors.settings import Settings
from actors.states import SuspensionCause
from actors.store import Journal
from tests import harness

pytestmark = pytest.mark.integration

WORKER = "w-refusal"


class Link:
    """What the host tells the supervisor."""

    def __init__(self) -> None:
        self.told: asyncio.Queue[Control] = asyncio.Queue()
        self.publisher = self

    async def tell_supervisor(self, fact: Control, *, persistent: bool = False) -> bool:
        self.told.put_nowait(fact)
        return True


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
async def connection(services: None) -> AsyncIterator[AmqpConnection]:
    connection = await AmqpConnection.open(harness.AMQP_URL, "test-queue-refusal")
    yield connection
    await connection.close()


async def clients_of_one_channel(journal: Journal, n: int) -> list[uuid.UUID]:
    """`n` new clients whose mailboxes share a consume channel."""
    by_slot: dict[int, list[uuid.UUID]] = {}
    while True:
        client = await journal.create_client("refusal", "x", False)
        same = by_slot.setdefault(ConsumeChannels.slot(client), [])
        same.append(client)
        if len(same) == n:
            return same


async def test_a_refused_mailbox_queue_fails_its_mailbox_and_spares_its_channel(
    journal: Journal, connection: AmqpConnection
) -> None:
    settings = Settings(
        amqp_url=harness.AMQP_URL,
        namespace=harness.new_namespace(),
        queue_type=os.environ.get("SERIATIM_QUEUE_TYPE", "classic"),
    )
    good, bad, other = await clients_of_one_channel(journal, 3)
    await journal.pool.execute(  # a live worker (a fresh heartbeat, judged without the lock)
        "INSERT INTO workers (id, hostname, pid) VALUES ($1, 'h', 1)", WORKER
    )
    placed = await journal.place_mailboxes(dict.fromkeys((good, bad, other), WORKER), 5.0, False)
    seen: asyncio.Queue[uuid.UUID] = asyncio.Queue()

    async def handle(event: Event) -> None:
        seen.put_nowait(event.client_id)

    handlers = HandlerRegistry()
    handlers.register("refusal.echo", handle)
    link = Link()
    host = MailboxHost(
        settings,
        journal,
        handlers,
        StubBroker(middleware=[]),
        WORKER,
        link,  # type: ignore[arg-type]
    )
    admin = await connection.channel()
    queues = [settings.mailbox_queue(str(client)) for client in (good, bad, other)]
    try:
        # Given the bad client's queue declared before with another argument
        await admin.declare_queue(queues[1], {**mailbox_arguments(settings), "x-max-length": 7})
        await host.attach(connection)
        refused = sample("seriatim_mailbox_queue_refusals_total", {"code": "406"})
        reopened = sample("seriatim_consume_channel_reopens_total")

        # When the three mailboxes are started at once (as one StartMailboxes does)
        await asyncio.gather(
            *(
                host.start(client, placed[client].epoch, done_seq=0, last_seq=0)
                for client in (good, bad, other)
            )
        )

        # Then the bad one escalates, counted once, after one close of the shared channel
        told = await asyncio.wait_for(link.told.get(), 30)
        assert isinstance(told, MailboxFailed)
        assert (told.client_id, told.cause) == (bad, SuspensionCause.QUEUE_REFUSED)
        assert told.epoch == placed[bad].epoch
        assert bad not in host._active
        assert sample("seriatim_mailbox_queue_refusals_total", {"code": "406"}) - refused == 1
        assert sample("seriatim_consume_channel_reopens_total") - reopened == 1

        # And the others process what is published to them, each queue with one consumer
        for client, name in ((good, queues[0]), (other, queues[2])):
            assert await journal.accept(client, "refusal.echo", {}) is not None
            (row,) = await journal.events_between(client, 0, 2)
            body = EventMessage.of(row).to_dramatiq(name).encode()
            await admin.publish(name, body, message_id=str(row.id))
        assert {await asyncio.wait_for(seen.get(), 30) for _ in range(2)} == {good, other}
        for name in (queues[0], queues[2]):
            counts = await admin.declare_queue(name, mailbox_arguments(settings))
            assert counts.consumers == 1
        assert link.told.empty()
    finally:
        await host.drain(5)
        for name in queues:
            await admin.delete_queue(name)
        await admin.close()
