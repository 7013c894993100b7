"""A basic.consume the broker answers too late leaves no consumer behind, and one the broker
closes says why (actors/amqp.py).

pika's channel is faked at its own interface: the broker never answers the consume, so it
times out (RPC_TIMEOUT made 0). The consume may still register on the broker after that; the
channel must have sent a basic.cancel for it by then.

Planted: the `except RpcTimeout` branch of AmqpChannel.consume removed → fails at
`assert pika_channel.cancelled == [...]` (nothing cancelled: a consumer nobody knows of would
take the queue's messages, as the single active consumer all of them).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pika.exceptions
import pytest

from actors import amqp
from actors.amqp import AmqpChannel, AmqpError, ChannelClosed, RpcTimeout


class PikaChannel:
    """pika's Channel as AmqpChannel uses it; the broker never answers a basic.consume."""

    is_open = True

    def __init__(self) -> None:
        self.consumed: list[str] = []
        self.cancelled: list[tuple[str, Any]] = []
        self.on_close: Any = None

    def add_on_close_callback(self, callback: Any) -> None:
        self.on_close = callback

    def add_on_return_callback(self, callback: Any) -> None:
        pass

    def add_on_cancel_callback(self, callback: Any) -> None:
        pass

    def basic_consume(
        self, queue: str, on_message_callback: Any, auto_ack: bool = False, callback: Any = None
    ) -> str:
        self.consumed.append(queue)
        return f"ctag1.{len(self.consumed)}"  # pika names the consumer before the broker answers

    def basic_cancel(self, consumer_tag: str = "", callback: Any = None) -> None:
        self.cancelled.append((consumer_tag, callback))


async def test_a_consume_that_times_out_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a channel whose broker does not answer a basic.consume in time
    monkeypatch.setattr(amqp, "RPC_TIMEOUT", 0.0)
    pika_channel = PikaChannel()
    channel = AmqpChannel(pika_channel)  # type: ignore[arg-type]

    # When a consume times out
    with pytest.raises(RpcTimeout):
        await channel.consume("q", lambda delivery: None)

    # Then its consumer is cancelled (without waiting: pika sends it after the consume)
    assert pika_channel.cancelled == [("ctag1.1", None)]
    assert issubclass(RpcTimeout, AmqpError)  # callers catching AmqpError still catch it


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg"), 406),
        (pika.exceptions.ConnectionClosedByBroker(541, "INTERNAL_ERROR - cluster_not_formed"), 541),
        (pika.exceptions.StreamLostError("Transport indicated EOF"), None),
    ],
)
async def test_a_consume_the_broker_closes_says_its_reply_code(
    reason: BaseException, code: int | None
) -> None:
    """A refusal closes the channel (406) or, as a hard error, the connection (541): both
    carry the broker's code, which the host takes for a refusal; a lost connection none."""
    pika_channel = PikaChannel()
    channel = AmqpChannel(pika_channel)  # type: ignore[arg-type]
    consuming = asyncio.ensure_future(channel.consume("q", lambda delivery: None))
    await asyncio.sleep(0)  # waiting for consume-ok

    pika_channel.on_close(pika_channel, reason)

    with pytest.raises(ChannelClosed) as closed:
        await consuming
    assert closed.value.reply_code == code
