"""AMQP connections and channels as awaitables, over pika's asyncio adapter.

One connection per process; channels are cheap. Publishing on a channel with confirms
returns only when the broker has taken responsibility for the message (ack) and routed it
(mandatory: an unroutable message fails instead of vanishing).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from actors import metrics

log = logging.getLogger(__name__)

#: How long a channel operation (declare, consume, cancel, qos) may wait for the broker. A
#: quorum queue that is still recovering after a node crash can leave one hanging for a minute.
RPC_TIMEOUT = 10.0
#: How long a publish waits for the broker's confirm. A healthy broker confirms a persistent
#: message at its next disk sync (milliseconds to a few hundred under load); without a deadline
#: a confirm the broker withholds (a memory or disk alarm blocks the connection, a quorum queue
#: has no leader) held the caller for ever, or for pika's 60 s blocked-connection timeout at
#: best. Past it the publish fails and the event stays with the relay, which publishes it again
#: (a late duplicate is acked by its seq). The same bound as RPC_TIMEOUT: long enough for a
#: broker that is slow, short enough that the supervisor's sweep, which waits for the relay,
#: moves on.
CONFIRM_TIMEOUT = 10.0
#: AMQP heartbeat (s) unless the URL sets one: RabbitMQ drops a frozen process's connection,
#: and with it its single-active-consumer hold on a mailbox, after about three of these.
HEARTBEAT = 5
#: Frames waiting for the end of the loop's turn are handed to the socket at once past this.
COALESCE_BYTES = 256 * 1024


_METHODS = {
    method: metrics.AMQP_METHODS.labels(method)
    for method in (
        "queue_declare",
        "queue_declare_wait",
        "queue_delete_wait",
        "basic_qos_wait",
        "confirm_select_wait",
        "basic_publish",
        "basic_consume_wait",
        "basic_cancel",
        "basic_cancel_wait",
        "basic_ack",
        "basic_nack",
    )
}


class AmqpError(Exception):
    """The broker refused an operation, or the channel or connection went away."""


class ChannelClosed(AmqpError):
    """The channel closed under the operation. `reply_code` is the broker's when the broker
    closed it, or its connection, over a method it refused (404 NOT_FOUND, 406
    PRECONDITION_FAILED: the channel; 541 INTERNAL_ERROR, a hard error: the whole connection)
    or for a reason of its own (320 CONNECTION_FORCED); None when the connection was lost or
    we closed it."""

    def __init__(self, message: str, reply_code: int | None = None) -> None:
        super().__init__(message)
        self.reply_code = reply_code


class RpcTimeout(AmqpError):
    """The broker did not answer a synchronous method within RPC_TIMEOUT; the method may
    still take effect later (pika holds the channel's next methods back until it does)."""


class PublishFailed(AmqpError):
    """The broker nacked, returned (unroutable) or lost a published message."""


class Unroutable(PublishFailed):
    """The broker returned the message: no queue took it, so nobody ever received it."""


class Nacked(PublishFailed):
    """The broker nacked the message: it did not take it (a quorum queue being deleted)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to a consumer; settle it with the channel's ack or nack."""

    delivery_tag: int
    redelivered: bool
    properties: BasicProperties
    body: bytes


OnMessage = Callable[[Delivery], None]


@dataclasses.dataclass(frozen=True, slots=True)
class QueueCounts:
    """What queue.declare-ok reports: ready messages (unacked ones excluded) and consumers."""

    messages: int
    consumers: int


class CoalescingConnection(AsyncioConnection):  # type: ignore[misc]  # pika is untyped
    """pika's asyncio connection, writing each turn of the loop's frames in one piece.

    pika hands its transport every frame separately (three per publish: method, header,
    body) and the transport sends each with its own send(); under load that was 14% of the
    gateway's time. Here the frames emitted during one turn of the event loop are joined
    and handed over together, in the order they were emitted; past COALESCE_BYTES they are
    handed over at once, so that a large body is not copied again on a partial send.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outgoing: list[bytes] = []
        self._outgoing_bytes = 0
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._outgoing:
            self.ioloop.call_soon(self._emit_outgoing)
        self._outgoing.append(data)
        self._outgoing_bytes += len(data)
        if self._outgoing_bytes >= COALESCE_BYTES:
            self._emit_outgoing()

    def _emit_outgoing(self) -> None:
        if not self._outgoing:  # handed over already, past COALESCE_BYTES
            return
        data = b"".join(self._outgoing)
        self._outgoing, self._outgoing_bytes = [], 0
        if self._transport is not None:  # gone with the connection: nothing left to send to
            super()._adapter_emit_data(data)


class AmqpConnection:
    """An open AMQP connection; `closed` resolves (with the reason) when it closes."""

    def __init__(
        self,
        connection: AsyncioConnection,
        closed: asyncio.Future[BaseException],
        *,
        url: str = "",
        name: str = "",
    ):
        self._connection = connection
        self.closed = closed
        self._url, self._name = url, name

    @classmethod
    async def open(cls, url: str, name: str, *, heartbeat: int = HEARTBEAT) -> AmqpConnection:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()
        closed: asyncio.Future[BaseException] = loop.create_future()
        params = pika.URLParameters(url)
        if "heartbeat" not in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query):
            params.heartbeat = heartbeat
        params.blocked_connection_timeout = 60
        params.client_properties = {"connection_name": name}

        def on_open_error(_conn: Any, error: BaseException | str) -> None:
            if not opened.done():
                opened.set_exception(AmqpError(f"cannot connect to RabbitMQ: {error}"))

        def on_close(_conn: Any, reason: BaseException) -> None:
            if not closed.done():
                closed.set_result(reason)
            on_open_error(_conn, reason)

        CoalescingConnection(
            params,
            on_open_callback=opened.set_result,
            on_open_error_callback=on_open_error,
            on_close_callback=on_close,
            custom_ioloop=loop,
        )
        return cls(await opened, closed, url=url, name=name)

    async def another(self, purpose: str) -> AmqpConnection:
        """A new connection to the same node, for `purpose` (in its name): one whose methods
        a broker may answer with a connection error (541) without closing this one."""
        if not self._url:
            raise AmqpError("this connection cannot open another")
        return await AmqpConnection.open(self._url, f"{self._name} ({purpose})")

    @property
    def is_open(self) -> bool:
        return bool(self._connection.is_open)

    async def channel(self) -> AmqpChannel:
        future: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        if not self._connection.is_open:
            raise AmqpError("connection is closed")
        self._connection.channel(on_open_callback=future.set_result)
        done, _ = await asyncio.wait([future, self.closed], return_when=asyncio.FIRST_COMPLETED)
        if future not in done:
            raise AmqpError("connection closed while opening a channel")
        return AmqpChannel(future.result())

    async def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout=5)


class AmqpChannel:
    """A channel; every operation fails with AmqpError once the channel closes."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[BaseException] = self._loop.create_future()
        self._rpcs: set[asyncio.Future[Any]] = set()
        self._confirms: dict[int, asyncio.Future[None]] = {}
        self._returned: set[int] = set()
        self._tag_of: dict[str, int] = {}
        self._next_tag = 0
        self._confirming = False
        self._on_cancel: dict[str, Callable[[], None]] = {}
        channel.add_on_close_callback(self._closed)
        channel.add_on_return_callback(self._returned_message)
        channel.add_on_cancel_callback(self._cancelled_by_broker)

    @property
    def is_open(self) -> bool:
        return bool(self._channel.is_open)

    @property
    def waiting(self) -> bool:
        """A synchronous method is still waiting for its answer (ours, or one pika holds
        after our timeout): pika sends the next one only after it, but publishes at once."""
        return bool(self._rpcs) or bool(getattr(self._channel, "_blocking", None))

    def _closed(self, _channel: Any, reason: BaseException) -> None:
        by_broker = isinstance(
            reason,
            (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker),
        )
        code: int | None = getattr(reason, "reply_code", None) if by_broker else None
        error = ChannelClosed(f"channel closed: {reason}", code)
        if not self.closed.done():
            self.closed.set_result(reason)
        for future in [*self._rpcs, *self._confirms.values()]:
            if not future.done():
                future.set_exception(error)
        self._rpcs.clear()
        self._confirms.clear()

    async def _rpc(self, method: str, start: Callable[[Callable[[Any], None]], Any]) -> Any:
        if not self._channel.is_open:
            raise AmqpError("channel is closed")
        _METHODS[f"{method}_wait"].inc()
        future: asyncio.Future[Any] = self._loop.create_future()
        self._rpcs.add(future)

        def done(frame: Any) -> None:
            self._rpcs.discard(future)
            if not future.done():
                future.set_result(frame)

        start(done)
        try:
            return await asyncio.wait_for(future, RPC_TIMEOUT)
        except TimeoutError:
            self._rpcs.discard(future)
            raise RpcTimeout(f"the broker did not answer within {RPC_TIMEOUT:g} s") from None

    async def declare_queue(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
    ) -> QueueCounts:
        """Declare a queue; returns its ready messages and consumers."""
        frame = await self._rpc(
            "queue_declare",
            lambda cb: self._channel.queue_declare(
                name,
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments,
                callback=cb,
            ),
        )
        return QueueCounts(int(frame.method.message_count), int(frame.method.consumer_count))

    def declare_queue_nowait(self, name: str, arguments: dict[str, Any] | None = None) -> None:
        """Declare a durable queue without waiting for declare-ok. The broker handles a
        channel's methods in order, so a publish sent next is routed to the queue; a refused
        declare closes the channel. Before a publish, only while the channel is not `waiting`:
        pika would hold the declare back behind the pending method and let the publish
        overtake it. A synchronous method sent next (basic.consume) keeps its place after it
        either way: pika holds both back in order."""
        if not self._channel.is_open:
            raise AmqpError("channel is closed")
        _METHODS["queue_declare"].inc()
        self._channel.queue_declare(name, durable=True, arguments=arguments)

    async def delete_queue(self, name: str, *, only_if_idle: bool = False) -> None:
        """Delete a queue; with `only_if_idle` (if-empty and if-unused) the broker refuses one
        that holds a ready message or has a consumer (406, which closes the channel). Quorum
        queues refuse both flags (540, which closes the whole connection): never ask them."""
        await self._rpc(
            "queue_delete",
            lambda cb: self._channel.queue_delete(
                name, if_unused=only_if_idle, if_empty=only_if_idle, callback=cb
            ),
        )

    async def qos(self, prefetch_count: int) -> None:
        """Per-consumer prefetch (RabbitMQ's meaning of global_qos=False)."""
        await self._rpc(
            "basic_qos",
            lambda cb: self._channel.basic_qos(
                prefetch_count=prefetch_count, global_qos=False, callback=cb
            ),
        )

    async def enable_confirms(self) -> None:
        await self._rpc(
            "confirm_select",
            lambda cb: self._channel.confirm_delivery(self._confirmed, callback=cb),
        )
        self._confirming = True

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        exchange: str = "",
        mandatory: bool = True,
        persistent: bool = True,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish and, on a confirming channel, wait for the broker's ack.

        Raises PublishFailed when the broker nacks or returns the message, when the channel
        closes, or when no confirm came within CONFIRM_TIMEOUT (the message may still arrive).
        """
        if not self._channel.is_open:
            raise PublishFailed("channel is closed")
        properties = BasicProperties(
            message_id=message_id,
            delivery_mode=2 if persistent else 1,
            content_type="application/json",
            headers=headers,
        )
        _METHODS["basic_publish"].inc()
        self._channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)
        if not self._confirming:
            return
        self._next_tag += 1
        tag = self._next_tag
        future: asyncio.Future[None] = self._loop.create_future()
        self._confirms[tag] = future
        self._tag_of[message_id] = tag
        try:
            await asyncio.wait_for(future, CONFIRM_TIMEOUT)
        except TimeoutError:
            raise PublishFailed(
                f"the broker did not confirm the message within {CONFIRM_TIMEOUT:g} s"
            ) from None
        finally:
            self._confirms.pop(tag, None)  # a late confirm or return finds nothing to settle
            self._returned.discard(tag)
            self._tag_of.pop(message_id, None)

    def _returned_message(
        self, _channel: Any, method: Basic.Return, properties: BasicProperties, _body: bytes
    ) -> None:
        tag = self._tag_of.get(properties.message_id)
        if tag is not None:
            self._returned.add(tag)
        log.warning("message returned by broker: %s (%s)", method.reply_text, method.routing_key)

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, Basic.Ack)
        tags = (
            [tag for tag in self._confirms if tag <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        for tag in tags:
            future = self._confirms.pop(tag, None)
            if future is None or future.done():
                continue
            if not acked:
                future.set_exception(Nacked("broker nacked the message"))
            elif tag in self._returned:
                future.set_exception(Unroutable("message unroutable: no such queue"))
            else:
                future.set_result(None)
            self._returned.discard(tag)

    async def consume(
        self, queue: str, on_message: OnMessage, on_cancel: Callable[[], None] | None = None
    ) -> str:
        """Start a consumer; returns its tag. on_cancel runs if the broker cancels it.

        A consume the broker has not answered within RPC_TIMEOUT may still register later: it
        is cancelled before RpcTimeout is raised (sent after it, without waiting; what reaches
        it meanwhile goes back to the queue), so that no consumer the caller never heard of
        takes the queue's messages (as the single active consumer, all of them)."""

        def deliver(_ch: Any, method: Basic.Deliver, props: BasicProperties, body: bytes) -> None:
            on_message(Delivery(method.delivery_tag, method.redelivered, props, body))

        tags: list[str] = []

        def start(callback: Callable[[Any], None]) -> None:
            tag = self._channel.basic_consume(queue, deliver, auto_ack=False, callback=callback)
            tags.append(tag)
            if on_cancel is not None:  # now: the broker's cancel can follow consume-ok at once
                self._on_cancel[tag] = on_cancel

        try:
            await self._rpc("basic_consume", start)
        except AmqpError as error:
            for tag in tags:
                self._on_cancel.pop(tag, None)
            if isinstance(error, RpcTimeout) and tags and self._channel.is_open:
                _METHODS["basic_cancel"].inc()
                self._channel.basic_cancel(tags[0])  # nowait: pika sends it after the consume
            raise
        return tags[0]

    def _cancelled_by_broker(self, frame: Any) -> None:
        callback = self._on_cancel.pop(frame.method.consumer_tag, None)
        if callback is not None:
            callback()

    async def cancel(self, consumer_tag: str) -> None:
        self._on_cancel.pop(consumer_tag, None)
        if self._channel.is_open:
            await self._rpc(
                "basic_cancel", lambda cb: self._channel.basic_cancel(consumer_tag, callback=cb)
            )

    def ack(self, delivery_tag: int) -> None:
        if self._channel.is_open:
            _METHODS["basic_ack"].inc()
            self._channel.basic_ack(delivery_tag)

    def nack(self, delivery_tag: int, *, requeue: bool = True) -> None:
        if self._channel.is_open:
            _METHODS["basic_nack"].inc()
            self._channel.basic_nack(delivery_tag, requeue=requeue)

    async def close(self) -> None:
        if self._channel.is_open:
            self._channel.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout=5)
