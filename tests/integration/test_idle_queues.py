"""Idle mailbox queues are deleted, raced against new accepts, with nothing lost.

Real processes (a gateway and two workers) with a 0.2 s idle timeout: each client posts
about every 0.3 s, so its mailbox is passivated, and its queue deleted, again and again,
and new events land before, during and after each delete (some publishes find the queue
gone: the broker returns them). Judged as tests/fault judges: the journal and the
handlers' own ledger (tests/witness.py), lost, duplicated, gaps and order breaks all 0.
Every event reached its queue on the gateway's own publish (a returned one is published
again into the queue declared anew), and once every client is idle its queue is gone.

Shown to fail: with the starting code (no delete; or SERIATIM_DELETE_IDLE_QUEUES=off) at
"the idle clients' queues to go"; with Publisher.publish_event's `except Unroutable` retry
planted out at "every event to be marked published" (the returned events are still run,
from the journal, but only once their mailbox is activated again); on quorum queues with
the events published on the process's one connection (as before the events connection),
at "every event to be marked published": RabbitMQ 3.10 closed the gateway's connection
(541) whenever a first publish met a delete, and the events failed with it went to the
relay, which skips those the next activation ran from the journal first.

A few queues only: the shared broker, as the other integration tests use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker
from prometheus_client import REGISTRY

from actors.amqp import AmqpConnection, AmqpError
from actors.broker import Publisher
from actors.protocol import EventMessage
from actors.settings import Settings
from tests import harness
from tests.fault.load import Load
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.recovery import eventually

pytestmark = pytest.mark.integration

IDLE = {"SERIATIM_IDLE_TIMEOUT": "0.2"}


@pytest.fixture(params=["classic", "quorum"])
def idle_system(
    request: pytest.FixtureRequest, services: None, tmp_path: Path
) -> Iterator[harness.System]:
    env = {**IDLE, "SERIATIM_QUEUE_TYPE": request.param}
    with harness.running_system(tmp_path, workers=2, env=env) as running:
        yield running


def queues_left(system: harness.System) -> list[str]:
    """The mailbox queues of the system's clients that exist on the broker."""
    clients = [str(row["id"]) for row in system.sql("SELECT id FROM clients")]
    connection = pika.BlockingConnection(pika.URLParameters(system.amqp_url))
    left = []
    try:
        for client in clients:
            channel = connection.channel()
            try:
                channel.queue_declare(system.settings_queue(client), passive=True)
            except ChannelClosedByBroker as error:
                if error.reply_code != 404:  # 404: gone
                    raise
                continue
            left.append(client)
            channel.close()
    finally:
        connection.close()
    return left


def logged(system: harness.System, text: str) -> int:
    return sum(path.read_text().count(text) for path in system.tmp.glob("*.log"))


async def test_deleting_idle_queues_races_new_accepts_and_loses_nothing(
    idle_system: harness.System,
) -> None:
    system = idle_system
    install_audit(system)
    load = Load(system, clients=10, per_second=30)  # each client every ~0.33 s
    running = asyncio.create_task(load.run())

    await eventually(lambda: len(load.accepted) >= 200, 180, "200 events to be accepted")
    load.stop()
    await running

    harness.wait_for(lambda: all_terminal(system), 120, "all events to finish")
    report = check(system, load.answered, may_fail=False)
    assert report.ok, report
    assert report.accepted >= 200
    # every event reached its queue on the gateway's own publish, none left to the relay:
    # one that found the queue deleted was published again into the queue declared anew
    harness.wait_for(
        lambda: not system.sql("SELECT 1 FROM events WHERE published_at IS NULL"),
        30,
        "every event to be marked published",
    )
    # every client idle: its mailbox passivated and its queue deleted
    harness.wait_for(lambda: not queues_left(system), 60, "the idle clients' queues to go")
    passivated = logged(system, "passivated")
    returned = logged(system, "message returned by broker")
    stayed = logged(system, "an event came as its queue was deleted")
    print(f"passivations {passivated}, publishes returned {returned}, stayed {stayed}")
    assert passivated > len(load.answered)  # each client's queue deleted more than once


ROUNDS = 60


async def test_a_quorum_queue_deleted_under_a_first_publish_costs_no_publish_and_no_connection(
    services: None,
) -> None:
    """RabbitMQ 3.10 closes the whole connection (541 INTERNAL_ERROR, the channel process
    crashing in register_enqueuer) when a channel's first publish to a quorum queue meets
    that queue's delete. Here one client's queue is deleted once a round, as a passivating
    worker deletes it, while its events are published: every publish is confirmed (retried
    on a new events connection when the broker closed it, and after a nack, which such a
    publish also gets) and the connection the publisher
    was given, which a process's consumers and control messages share, stays open.

    Shown to fail with the events published on that connection (`events_url=None`): a
    PublishFailed ("channel closed: (541, 'INTERNAL_ERROR')") within the first rounds."""
    settings = Settings(namespace=f"seriatim-test-{uuid.uuid4().hex[:12]}", queue_type="quorum")
    link = await AmqpConnection.open(harness.AMQP_URL, "test-link")
    deleter = await AmqpConnection.open(harness.AMQP_URL, "test-deleter")
    publisher = Publisher(settings, link, events_url=harness.AMQP_URL)
    client = uuid.uuid4()
    queue = settings.mailbox_queue(str(client))
    retried = retries()

    async def delete(name: str) -> None:
        channel = await deleter.channel()
        with contextlib.suppress(AmqpError):
            await channel.delete_queue(name)
        await channel.close()

    try:
        seq = 0
        for _ in range(ROUNDS):
            deleting = asyncio.ensure_future(delete(queue))
            await asyncio.sleep(random.uniform(0, 0.01))
            for _ in range(3):  # the first may meet the delete; the next ones follow it
                seq += 1
                await publisher.publish_event(EventMessage(uuid.uuid4(), client, seq, "t", {}))
            await deleting
        assert link.is_open
    finally:
        await publisher.close()
        await delete(queue)
        await delete(settings.supervisor_queue)
        await deleter.close()
        await link.close()
    print(f"publishes retried (nacked, or their events connection closed): {retries() - retried:g}")


def retries() -> float:
    return REGISTRY.get_sample_value("seriatim_event_publish_retries_total") or 0.0
