"""A worker's consume channels: a few per connection, each reopened with backoff when the broker
closes it, and throwaway connections for the declares whose refusal must be told apart.

pika runs one synchronous method per channel at a time, so mailboxes subscribe over a few
channels at once. A queue.declare the broker refuses closes its whole channel (404, 406), or
its whole connection (541, a hard error: a quorum queue whose cluster is not formed), with
every consumer on it: reopened at once, a channel closed again and again would be a tight loop
that disturbs every mailbox on it, hence the backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from actors import metrics
from actors.amqp import AmqpChannel, AmqpConnection, AmqpError
from actors.backoff import Backoff

log = logging.getLogger(__name__)

#: Consume channels per connection. pika runs one synchronous method per channel at a time,
#: so a burst of activations waits one basic.consume round trip per mailbox on each channel:
#: spread over a few, the round trips overlap.
CONSUME_CHANNELS = 4
#: Between reopens of a consume channel the broker keeps closing: the first almost at once,
#: the next ones longer (jittered).
CHANNEL_BACKOFF = Backoff(min=0.05, max=5.0)
#: A consume channel that stayed open this long (s) starts its backoff afresh when it closes.
CHANNEL_SETTLED = 30.0
#: Throwaway connections open at once for declares waited for apart (`declare_apart`).
APART_DECLARES = 8


class ConsumeChannels:
    """The consume channels of the current connection, by slot; `on_reopen(slot)` runs once a
    channel the broker closed is open again (its mailboxes subscribe again)."""

    def __init__(
        self,
        on_reopen: Callable[[int], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.channels: list[AmqpChannel | None] = [None] * CONSUME_CHANNELS
        self._on_reopen = on_reopen
        self._spawn = spawn
        self._connection: AmqpConnection | None = None
        self._reopens = [0] * CONSUME_CHANNELS  # closes of each channel in a row
        self._opened_at = [0.0] * CONSUME_CHANNELS
        self._apart = asyncio.Semaphore(APART_DECLARES)
        self._stopping = asyncio.Event()

    @staticmethod
    def slot(client_id: uuid.UUID) -> int:
        """The consume channel of a client's mailbox (fixed: a reopened channel knows whose
        consumers it lost)."""
        return client_id.int % CONSUME_CHANNELS

    def of(self, client_id: uuid.UUID) -> AmqpChannel | None:
        """The consume channel of a client's mailbox, None until it is open."""
        return self.channels[self.slot(client_id)]

    async def open(self, connection: AmqpConnection) -> None:
        """Open every consume channel on a new connection (channels of an older one are
        reopened no more)."""
        self._connection = connection
        self._reopens = [0] * CONSUME_CHANNELS
        for slot in range(CONSUME_CHANNELS):
            await self._open(connection, slot)

    def stop(self) -> None:
        """Reopen nothing more; every `pause` ends now."""
        self._stopping.set()

    async def pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if `stop` is called meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def declare_apart(self, queue: str, arguments: dict[str, Any]) -> None:
        """Declare a durable queue and wait for the broker's answer, on a connection of its
        own, closed afterwards: a refusal closes that one alone, channel (406) or connection
        (541), and raises ChannelClosed with the broker's reply code; RpcTimeout if the
        broker does not answer. A throwaway channel would do for a 406, not for a 541."""
        async with self._apart:
            if self._connection is None:
                raise AmqpError("no connection")
            connection = await self._connection.another("declare")
            try:
                channel = await connection.channel()
                await channel.declare_queue(queue, arguments)
            finally:
                await connection.close()

    async def _open(self, connection: AmqpConnection, slot: int) -> None:
        channel = await connection.channel()
        try:
            await channel.qos(1)
        except AmqpError:
            await channel.close()
            raise
        self.channels[slot] = channel
        self._opened_at[slot] = time.monotonic()
        channel.closed.add_done_callback(lambda _: self._closed(connection, slot))

    def _current(self, connection: AmqpConnection) -> bool:
        return connection.is_open and connection is self._connection and not self._stopping.is_set()

    def _closed(self, connection: AmqpConnection, slot: int) -> None:
        if not self._current(connection):
            return
        if time.monotonic() - self._opened_at[slot] >= CHANNEL_SETTLED:
            self._reopens[slot] = 0  # it had settled: a close of its own, not one of a series
        delay = self._delay(slot)
        log.warning("mailbox channel %d closed by the broker; reopening it in %.2f s", slot, delay)
        self._spawn(self._reopen(connection, slot, delay))

    def _delay(self, slot: int) -> float:
        self._reopens[slot] += 1
        return CHANNEL_BACKOFF.delay(self._reopens[slot])

    async def _reopen(self, connection: AmqpConnection, slot: int, delay: float) -> None:
        """Reopen a consume channel after `delay`, after a longer one each time that fails
        (a failed reopen was never retried: its mailboxes went unconsumed until the next
        connection)."""
        while True:
            await self.pause(delay)
            if not self._current(connection):
                return
            try:
                await self._open(connection, slot)
            except AmqpError as error:
                delay = self._delay(slot)
                log.warning(
                    "cannot reopen mailbox channel %d (%s); trying again in %.2f s",
                    slot,
                    error,
                    delay,
                )
                continue
            metrics.CONSUME_CHANNEL_REOPENS.inc()
            self._on_reopen(slot)
            return
