"""actors/amqp.py's channel over a stand-in for pika's: what reaches our callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from actors.amqp import AmqpChannel


class PikaChannel:
    """pika's Channel as AmqpChannel drives it. The broker answers basic.consume with
    consume-ok and, at once, a basic.cancel of that consumer (its queue was deleted): pika
    hands both frames of one socket read to their callbacks in the same turn of the loop."""

    is_open = True

    def __init__(self) -> None:
        self.on_cancel: Callable[[Any], None] | None = None

    def add_on_close_callback(self, callback: Callable[..., None]) -> None:
        pass

    def add_on_return_callback(self, callback: Callable[..., None]) -> None:
        pass

    def add_on_cancel_callback(self, callback: Callable[[Any], None]) -> None:
        self.on_cancel = callback

    def basic_consume(
        self, queue: str, on_message: Any, auto_ack: bool, callback: Callable[[Any], None]
    ) -> str:
        frame = SimpleNamespace(method=SimpleNamespace(consumer_tag="ctag-1"))

        def read() -> None:
            callback(frame)  # consume-ok
            assert self.on_cancel is not None
            self.on_cancel(frame)  # basic.cancel from the broker

        asyncio.get_running_loop().call_soon(read)
        return "ctag-1"


async def test_a_cancel_right_behind_consume_ok_reaches_the_consumers_callback() -> None:
    """Before the callback was registered in basic_consume's own step (it was registered
    once the awaited consume returned): fails at `cancelled` ([] != ['ctag-1'])."""
    channel = AmqpChannel(cast(Any, PikaChannel()))
    cancelled: list[str] = []

    tag = await channel.consume("q", lambda delivery: None, lambda: cancelled.append("ctag-1"))

    assert tag == "ctag-1"
    assert cancelled == ["ctag-1"]
