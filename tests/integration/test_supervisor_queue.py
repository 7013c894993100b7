"""The supervisor queue's type: replicated in a quorum namespace, an existing one kept.

Against the shared RabbitMQ, in a namespace of the test's own. On the starting code the
first test failed: the supervisor queue was classic whatever SERIATIM_QUEUE_TYPE said, so
in a cluster it was lost to every reconnecting process while its one node was down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors.amqp import AmqpConnection, AmqpError
from actors.broker import declare_supervisor_queue
from actors.settings import Settings
from tests import harness

pytestmark = pytest.mark.integration


@pytest.fixture
async def connection(services: None) -> AsyncIterator[AmqpConnection]:
    opened = await AmqpConnection.open(harness.AMQP_URL, "test-supervisor-queue")
    try:
        yield opened
    finally:
        await opened.close()


async def queue_type_is(connection: AmqpConnection, queue: str, kind: str) -> bool:
    """Whether `queue` is of type `kind`: a declare naming the other type fails with 406."""
    other = "classic" if kind == "quorum" else "quorum"
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue, {"x-queue-type": other})
    except AmqpError:
        return getattr(channel.closed.result(), "reply_code", None) == 406
    return False


async def delete(connection: AmqpConnection, queue: str) -> None:
    channel = await connection.channel()
    await channel.delete_queue(queue)
    await channel.close()


async def test_a_quorum_namespace_declares_a_quorum_supervisor_queue(
    connection: AmqpConnection,
) -> None:
    settings = Settings(namespace=harness.new_namespace(), queue_type="quorum")
    try:
        await declare_supervisor_queue(connection, settings)

        assert await queue_type_is(connection, settings.supervisor_queue, "quorum")
    finally:
        await delete(connection, settings.supervisor_queue)


async def test_an_existing_classic_supervisor_queue_is_taken_as_it_is(
    connection: AmqpConnection,
) -> None:
    # Given a namespace that ran on classic queues, now switched to quorum
    classic = Settings(namespace=harness.new_namespace())
    await declare_supervisor_queue(connection, classic)
    quorum = Settings(namespace=classic.namespace, queue_type="quorum")
    try:
        # When a process of the quorum namespace declares the supervisor queue, then it
        # neither fails (406) nor changes the queue
        await declare_supervisor_queue(connection, quorum)

        assert await queue_type_is(connection, quorum.supervisor_queue, "classic")
    finally:
        await delete(connection, classic.supervisor_queue)
