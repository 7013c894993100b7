"""The broker side of seriatim: queue layout, a confirmed publisher and a self-healing link."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from actors import metrics, tracing
from actors.addresses import NodeRing
from actors.amqp import (
    AmqpChannel,
    AmqpConnection,
    AmqpError,
    Nacked,
    PublishFailed,
    QueueCounts,
    Unroutable,
)
from actors.backoff import Backoff
from actors.protocol import Control, EventMessage
from actors.settings import Settings

log = logging.getLogger(__name__)

_DECLARED_CACHE = 100_000
#: Publishes of one event again after a nack or the loss of its events connection
#: (Publisher.publish_event). More than one: a retry may meet the same queue's delete again.
PUBLISH_RETRIES = 3
_RETRY_BACKOFF = Backoff(min=0.05, max=0.5, jitter=0.3)


def mailbox_arguments(settings: Settings) -> dict[str, Any]:
    """Arguments of every mailbox queue: one active consumer at a time, never expiring."""
    arguments: dict[str, Any] = {
        "x-single-active-consumer": True,
        "x-queue-type": settings.queue_type,
    }
    if settings.queue_type == "quorum":
        # Without a delivery limit, RabbitMQ 3.10-3.13 requeues a quorum message at the back.
        arguments["x-delivery-limit"] = 1_000_000
    return arguments


def supervisor_arguments(settings: Settings) -> dict[str, Any]:
    """Arguments of a new supervisor queue: replicated (quorum) in a quorum namespace, so
    that it outlives the node it was declared on in a cluster. A classic queue is lost to
    every process while its node is down: each new channel's declare of it then fails
    (404, home node down), and no process that reconnects can publish or consume."""
    arguments: dict[str, Any] = {
        "x-single-active-consumer": True,
        "x-queue-type": settings.queue_type,
    }
    if settings.queue_type == "quorum":
        arguments["x-delivery-limit"] = 1_000_000  # see mailbox_arguments
    return arguments


async def declare_supervisor_queue(connection: AmqpConnection, settings: Settings) -> None:
    """Make sure the supervisor queue exists. One that exists is taken as it is (a passive
    declare): a namespace that ran on classic queues before keeps its classic supervisor
    queue, instead of every process failing with 406 for its other arguments; an operator
    deletes it once to have it declared again replicated (docs/deployment.md)."""
    queue = settings.supervisor_queue
    probe = await connection.channel()
    try:
        await probe.declare_queue(queue, passive=True)
        return
    except AmqpError:
        reason = probe.closed.result() if probe.closed.done() else None
        if getattr(reason, "reply_code", None) != 404:
            raise
    finally:
        await probe.close()
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue, supervisor_arguments(settings))
    finally:
        await channel.close()


class _Retry(PublishFailed):
    """A publish worth making again (Publisher.publish_event): the broker nacked it, or
    closed the events connection it went out on."""


class Publisher:
    """Publishes with publisher confirms and mandatory routing on one channel of a connection.

    Every publish returns only once the broker has taken the message; it raises
    PublishFailed otherwise, and the caller keeps the event for the relay.
    """

    def __init__(
        self,
        settings: Settings,
        connection: AmqpConnection,
        *,
        events_url: str | None = None,
        name: str = "seriatim",
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._channel: AmqpChannel | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._declared: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: Events go to mailbox queues on a connection of their own, opened from this URL on
        #: the first event (None: on `connection`, as control messages). See _events_channel.
        self._events_url = events_url
        self._events_name = f"{name} events"
        self._events: AmqpConnection | None = None
        self._events_channel_: AmqpChannel | None = None
        self._events_opening: asyncio.Lock = asyncio.Lock()
        self._closing = False

    async def _open_channel(self) -> AmqpChannel:
        channel = self._channel
        if channel is not None and channel.is_open:
            return channel
        async with self._opening:
            if self._channel is None or not self._channel.is_open:
                await declare_supervisor_queue(self._connection, self._settings)
                channel = await self._connection.channel()
                await channel.enable_confirms()
                self._channel = channel
                if self._events_url is None:
                    self._declared.clear()
            return self._channel

    async def _events_channel(self) -> AmqpChannel:
        """The confirming channel events are published on: on a connection of its own, so
        that the broker closing it takes no consumer and no control message with it.

        RabbitMQ 3.10 closes a whole connection (541 INTERNAL_ERROR: the channel process
        crashes registering the publisher with the queue's Raft leader) when a channel's
        first publish to a quorum queue meets that queue's delete (an idle mailbox's,
        MailboxHost._delete_queue). Such a connection is opened again at once and the
        publish retried (publish_event), instead of waiting for the link to reconnect."""
        if self._events_url is None:
            return await self._open_channel()
        channel = self._events_channel_
        if channel is not None and channel.is_open:
            return channel
        async with self._events_opening:
            if self._events_channel_ is None or not self._events_channel_.is_open:
                if self._closing:
                    raise AmqpError("the publisher is closed")
                if self._events is None or not self._events.is_open:
                    self._events = await AmqpConnection.open(self._events_url, self._events_name)
                    if self._closing:  # closed while it opened
                        await self._events.close()
                        raise AmqpError("the publisher is closed")
                channel = await self._events.channel()
                await channel.enable_confirms()
                self._events_channel_ = channel
                self._declared.clear()
            return self._events_channel_

    def _events_ready(self) -> bool:
        """Whether an event can go out now, without waiting for a new events channel."""
        channel = self._events_channel_
        return self._events_url is None or (channel is not None and channel.is_open)

    async def close(self) -> None:
        """Close the events connection (the link closes its own)."""
        self._closing = True
        if self._events is not None:
            await self._events.close()

    async def declare_mailbox(self, client_id: str, *, fresh: bool = False) -> QueueCounts | None:
        """Declare a client's mailbox queue once per channel, or again when `fresh`.

        Returns the queue's counts when it was declared now, None when it was cached.
        """
        queue = self._settings.mailbox_queue(client_id)
        if queue in self._declared and not fresh:
            self._declared.move_to_end(queue)
            return None
        channel = await self._events_channel()
        counts = await channel.declare_queue(queue, mailbox_arguments(self._settings))
        self._remember(queue)
        return counts

    async def delete_idle_mailbox(self, client_id: str) -> bool:
        """Delete a passivating client's mailbox queue if nothing is in it; whether it is gone.

        Called with the mailbox's consumer cancelled and nothing in flight, before the journal
        releases it (docs/decisions.md, "Idle mailbox queues are deleted"). A classic queue is
        deleted with if-empty and if-unused, on a channel of its own: the broker refuses (406)
        when a message arrived meanwhile, and the mailbox stays active. A quorum queue refuses
        those flags (540, closing the connection): its counts are read and it is deleted when
        it had no message and no consumer. A message that lands between the two goes with the
        queue and is not lost: every message is a copy of a journal row, and the host reads
        the journal after the delete (MailboxHost._delete_queue) and runs what is unfinished.
        Raises AmqpError when the broker could not be asked."""
        queue = self._settings.mailbox_queue(client_id)
        self._declared.pop(queue, None)  # declared again before this process publishes to it
        channel = await self._connection.channel()
        try:
            if self._settings.queue_type == "quorum":
                counts = await channel.declare_queue(queue, passive=True)
                if counts.messages or counts.consumers:
                    return False
                await channel.delete_queue(queue)
            else:
                await channel.delete_queue(queue, only_if_idle=True)
        except AmqpError:
            reason = channel.closed.result() if channel.closed.done() else None
            code = getattr(reason, "reply_code", None)
            if code == 404:  # gone already
                return True
            if code == 406:  # a message (or a consumer) came: the queue stays
                return False
            raise
        finally:
            await channel.close()
        return True

    def _remember(self, queue: str) -> None:
        self._declared[queue] = None
        if len(self._declared) > _DECLARED_CACHE:
            self._declared.popitem(last=False)

    async def publish_event(
        self, message: EventMessage, *, on_late: Callable[[EventMessage], None] | None = None
    ) -> None:
        """Put an event in its client's mailbox queue (declared on first use), in a PRODUCER
        span whose context the message carries to the consumer.

        `on_late` is called once the event is in its queue if the publish went out late: after
        a retry, a return or a new events connection. Its declare may then have created the
        queue again after the event's mailbox ran it from the journal and deleted the queue
        as idle, leaving a copy there that no activation is coming for: the caller asks for
        the mailbox again (gateway/publishing.py), which acks the copy as a duplicate and
        deletes the queue at its next passivation.

        The declare does not wait for its answer: pika runs one synchronous method per channel
        at a time, and waiting made a burst of new clients' first publishes queue up behind one
        declare round trip each (seconds behind their 202s).

        A publish is retried (PUBLISH_RETRIES times, after a short wait, a waited declare
        first) when the broker nacked it, or closed the events connection under it (on a new
        one; see _events_channel): both are what a publish meeting a quorum queue's delete
        gets. A copy that had reached the queue is acked as a duplicate by its seq.
        """
        queue = self._settings.mailbox_queue(str(message.client_id))
        with tracing.publishing(
            queue, message.event_id, message.client_id, message.seq, message.traceparent
        ):
            traced = dataclasses.replace(
                message, traceparent=tracing.current_traceparent() or message.traceparent
            )
            body = traced.to_dramatiq(queue).encode()
            for attempt in range(1, PUBLISH_RETRIES + 2):
                try:
                    late = await self._publish_once(message, queue, body, fresh=attempt > 1)
                    if (late or attempt > 1) and on_late is not None:
                        on_late(message)
                    return
                except _Retry as failed:
                    if attempt > PUBLISH_RETRIES:
                        raise PublishFailed(str(failed)) from failed
                    log.warning(
                        "publishing event seq %d failed (%s); publishing it again",
                        message.seq,
                        failed,
                    )
                    metrics.EVENT_PUBLISH_RETRIES.inc()
                    await asyncio.sleep(_RETRY_BACKOFF.delay(attempt))

    async def _publish_once(
        self, message: EventMessage, queue: str, body: bytes, *, fresh: bool
    ) -> bool:
        """One publish (and its declare); whether it went out late (it waited for a new
        events channel, or was returned and published again). _Retry when the broker nacked
        it or closed the events connection it went out on."""
        connection: AmqpConnection | None = None
        late = not self._events_ready()
        try:
            channel = await self._events_channel()
            connection = self._events
            if fresh:  # a retry: declared (waited) before the publish
                await self.declare_mailbox(str(message.client_id), fresh=True)
            elif queue in self._declared:
                self._declared.move_to_end(queue)
            elif channel.waiting:  # the declare must not be overtaken by the publish
                await self.declare_mailbox(str(message.client_id))
            else:
                channel.declare_queue_nowait(queue, mailbox_arguments(self._settings))
                self._remember(queue)
            try:
                await channel.publish(queue, body, message_id=str(message.event_id))
            except Unroutable:
                # The queue was deleted since this channel declared it: its mailbox was
                # passivated (delete_idle_mailbox). Declare it again (waited: the
                # publish must not overtake it) and publish once more; a second return
                # is left to the caller (the relay).
                self._declared.pop(queue, None)
                await self.declare_mailbox(str(message.client_id), fresh=True)
                channel = await self._events_channel()
                await channel.publish(queue, body, message_id=str(message.event_id))
                late = True
        except AmqpError as error:
            lost = (
                self._events_url is not None
                and connection is not None
                and not connection.is_open
                and not self._closing
            )
            if lost or isinstance(error, Nacked):
                raise _Retry(str(error)) from error
            if isinstance(error, PublishFailed):
                raise
            raise PublishFailed(str(error)) from error
        return late

    async def publish_events(
        self,
        messages: Sequence[EventMessage],
        *,
        on_late: Callable[[EventMessage], None] | None = None,
    ) -> list[PublishFailed | None]:
        """Publish one client's events in the order given: the queue is declared first (once
        per channel), then every basic.publish goes out before the next one's, and the
        confirms are awaited together. One outcome per message: None or its PublishFailed.
        `on_late` as for publish_event."""
        if not messages:
            return []
        ready = self._events_ready()  # the declare below may wait for a new channel
        try:
            await self.declare_mailbox(str(messages[0].client_id))
        except AmqpError as error:
            return [PublishFailed(str(error))] * len(messages)
        reported: list[EventMessage] = []
        # Each task runs to its basic.publish before the next starts (the queue is declared,
        # the channel open: nothing in between waits), so the broker gets them in this order.
        outcomes = await asyncio.gather(
            *(self.publish_event(message, on_late=reported.append) for message in messages),
            return_exceptions=True,
        )
        failures: list[PublishFailed | None] = []
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, PublishFailed) or outcome is None:
                failures.append(outcome)
            else:
                raise outcome
            if on_late is not None and outcome is None and (not ready or message in reported):
                on_late(message)
        return failures

    async def tell_supervisor(self, control: Control, *, persistent: bool = False) -> None:
        """Send a fact to the active supervisor; `persistent` for facts the journal lacks."""
        await self._tell(self._settings.supervisor_queue, control, persistent=persistent)

    async def tell_worker(self, worker_id: str, control: Control) -> None:
        """Send a command to one worker; PublishFailed when that worker's queue is gone."""
        await self._tell(self._settings.worker_queue(worker_id), control)

    async def _tell(self, queue: str, control: Control, *, persistent: bool = False) -> None:
        # Control messages are transient by default: a persistent message is confirmed only
        # after RabbitMQ's next disk sync (up to hundreds of ms), and the supervisor's sweep
        # rebuilds from the journal anything a broker restart loses.
        try:
            channel = await self._open_channel()
            await channel.publish(
                queue,
                control.encode(),
                # unique, so that a basic.return is charged to the publish it belongs to
                message_id=f"{control.kind}-{uuid.uuid4().hex}",
                persistent=persistent,
            )
        except PublishFailed:
            raise
        except AmqpError as error:
            raise PublishFailed(str(error)) from error


OnConnect = Callable[[AmqpConnection], Awaitable[None]]


class BrokerLink:
    """Keeps one AMQP connection open for a process, reconnecting with backoff.

    `on_connect` runs on every new connection (declare, consume); `publisher` is None while
    the broker is unreachable, so callers fail fast instead of waiting.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        self._settings = settings
        self._name = name
        self._on_connect: list[OnConnect] = []
        self.publisher: Publisher | None = None
        self.connected = asyncio.Event()
        self._backoff = Backoff(min=0.2, max=2.0, jitter=0.3)  # a refused connect is cheap
        self.nodes = NodeRing(settings.amqp_urls)
        metrics.BROKER_CONNECTED.set_function(lambda: float(self.connected.is_set()))

    async def tell_supervisor(self, fact: Control, *, persistent: bool = False) -> bool:
        """Tell the active supervisor `fact` if the broker takes it now; whether it did.

        Never raises: a fact not told is not lost, the supervisor's sweep reads the journal
        (a caller that cannot wait for the sweep acts on False)."""
        publisher = self.publisher
        if publisher is None:  # unreachable: the link logs that once, not every fact
            return False
        try:
            await publisher.tell_supervisor(fact, persistent=persistent)
        except AmqpError as error:  # refused, unroutable, unconfirmed, or the channel is gone
            log.warning("supervisor not told %s: %s", fact.kind, error)
            return False
        return True

    def on_connect(self, callback: OnConnect) -> None:
        """Run `callback` on every new connection, in the order registered."""
        self._on_connect.append(callback)

    async def run(self, stopping: asyncio.Event) -> None:
        """Connect to a live node of SERIATIM_AMQP_URL and serve until `stopping`.

        A node that refuses the connection, or whose connection is lost, is left for the next
        one in the ring at once; the link backs off only once every node has failed in a row.
        """
        failures = 0
        while not stopping.is_set():
            url = self.nodes.current
            try:
                connection = await AmqpConnection.open(url, self._name)
            except AmqpError as error:
                failures += 1
                self.nodes.advance()
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "RabbitMQ unreachable at %s (%s); trying the next node", _where(url), error
                    )
                if failures % len(self.nodes) == 0:  # every node failed: back off
                    await _wait(stopping, self._backoff.delay(min(failures // len(self.nodes), 10)))
                continue
            if await self._serve(connection, url, stopping):
                failures = 0
            else:  # a broker that accepts connections but fails our set-up: back off too
                failures += 1
            if not stopping.is_set():
                self.nodes.advance()  # its node may be gone: the next one is likelier to serve
                await _wait(stopping, self._backoff.delay(max(1, min(failures, 10))))

    async def _serve(self, connection: AmqpConnection, url: str, stopping: asyncio.Event) -> bool:
        """Set up and serve one connection until it is lost or `stopping`; False when the
        set-up itself failed."""
        publisher = Publisher(self._settings, connection, events_url=url, name=self._name)
        self.publisher = publisher
        set_up = False
        try:
            for callback in self._on_connect:
                await callback(connection)
            set_up = True
            self.connected.set()
            metrics.BROKER_CONNECTS.inc()
            log.info("connected to RabbitMQ at %s", _where(url))
            stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
            await asyncio.wait([stop, connection.closed], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if connection.closed.done():
                log.warning("RabbitMQ connection lost: %s", connection.closed.result())
        except AmqpError as error:
            log.warning("RabbitMQ set-up failed: %s", error)
        finally:
            self.connected.clear()
            self.publisher = None
            with contextlib.suppress(Exception):
                await publisher.close()
            if stopping.is_set():
                await connection.close()
            else:
                with contextlib.suppress(Exception):
                    await connection.close()
        return set_up


def _where(url: str) -> str:
    """host:port of a node's URL, for logs (never its credentials)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
