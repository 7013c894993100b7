"""actors/amqp.py against a real RabbitMQ: frames written together, in order, all confirmed."""

from __future__ import annotations

import asyncio
import uuid

from actors.amqp import AmqpConnection, Delivery
from tests import harness

MESSAGES = 300


async def test_one_turns_publishes_go_out_in_one_write_and_arrive_in_order(
    services: None,
) -> None:
    connection = await AmqpConnection.open(harness.AMQP_URL, "test-amqp")
    channel = await connection.channel()
    queue = f"seriatim-test-amqp-{uuid.uuid4().hex}"
    try:
        await channel.declare_queue(queue, durable=False, auto_delete=False)
        await channel.enable_confirms()
        transport = connection._connection._transport  # counting its writes
        writes: list[int] = []
        write = transport.write
        transport.write = lambda data: (writes.append(len(data)), write(data))[1]

        # Created in one turn of the loop: every publish's frames are emitted in that turn.
        publishes = [
            asyncio.ensure_future(channel.publish(queue, str(n).encode(), message_id=str(n)))
            for n in range(MESSAGES)
        ]
        await asyncio.gather(*publishes)  # every one confirmed
        # 3 frames per publish; pika alone would write each separately (900 writes).
        assert 1 <= len(writes) <= 2, writes
        transport.write = write

        got: list[bytes] = []
        all_in = asyncio.Event()

        def on_message(delivery: Delivery) -> None:
            got.append(delivery.body)
            channel.ack(delivery.delivery_tag)
            if len(got) == MESSAGES:
                all_in.set()

        await channel.consume(queue, on_message)
        await asyncio.wait_for(all_in.wait(), 30)
        assert got == [str(n).encode() for n in range(MESSAGES)]
    finally:
        await channel.delete_queue(queue)
        await connection.close()
