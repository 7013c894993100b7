"""actors/amqp.py against a real RabbitMQ: frames written together, in order, all confirmed."""

from __future__ import annotations

import asyncio
import uuid

from actors.amqp import AmqpConnection, Delivery
from tests import harness

MESSAGES = 300
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"


async def test_one_turns_publishes_go_out_in_one_write_and_arrive_in_order(
    services: None,
) -> None:
    connection = await AmqpConnection.open(harness.AMQP_URL, "test-amqp")
    channel = await connection.channel()
    queue = f"seriatim-test-amqp-{uuid.uuid4().hex}"
    try:
        await channel.declare_queue(queue, durable=False)
        await channel.enable_confirms()
        transport = connection._connection._transport  # counting its writes
        writes: list[int] = []
        write = transport.write

        def counting(data: bytes) -> None:
            if data != HEARTBEAT_FRAME:  # pika's own, whenever it is due
                writes.append(len(data))
            write(data)

        transport.write = counting
        try:
            # Created in one turn of the loop: every publish's frames are emitted in one turn.
            publishes = [
                asyncio.ensure_future(channel.publish(queue, str(n).encode(), message_id=str(n)))
                for n in range(MESSAGES)
            ]
            await asyncio.gather(*publishes)  # every one confirmed
        finally:
            transport.write = write
        # 3 frames per publish; pika alone writes each separately (900 writes).
        assert len(writes) == 1, writes

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
        try:
            await channel.delete_queue(queue)
        finally:
            await connection.close()


async def test_a_body_larger_than_the_coalescing_limit_arrives_whole(services: None) -> None:
    connection = await AmqpConnection.open(harness.AMQP_URL, "test-amqp-large")
    channel = await connection.channel()
    queue = f"seriatim-test-amqp-{uuid.uuid4().hex}"
    bodies = [bytes([n]) * (700 * 1024 + n) for n in range(3)]  # frame_max splits each
    try:
        await channel.declare_queue(queue, durable=False)
        await channel.enable_confirms()
        await asyncio.gather(
            *(channel.publish(queue, b, message_id=str(n)) for n, b in enumerate(bodies))
        )
        got: list[bytes] = []
        all_in = asyncio.Event()

        def on_message(delivery: Delivery) -> None:
            got.append(delivery.body)
            channel.ack(delivery.delivery_tag)
            if len(got) == len(bodies):
                all_in.set()

        await channel.consume(queue, on_message)
        await asyncio.wait_for(all_in.wait(), 30)
        assert got == bodies
    finally:
        try:
            await channel.delete_queue(queue)
        finally:
            await connection.close()
