"""The gateway's process-wide services, built in the lifespan: journal, tokens, publishing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from actors import metrics, tracing
from actors.amqp import PublishFailed
from actors.broker import BrokerLink
from actors.handlers import HandlerRegistry
from actors.outages import UNAVAILABLE
from actors.policy import RestartIntensity
from actors.protocol import EventMessage, MailboxWanted
from actors.settings import Settings
from actors.store import BacklogFull, Journal, Tenancy
from gateway.bodies import accepted_json
from gateway.guesses import CredentialChecks
from gateway.intake import content_length
from gateway.limits import ClientLimits, backlog_full
from gateway.problems import Problem
from gateway.tokens import TokenService, invalid_token, journal_keys

log = logging.getLogger(__name__)

MAX_PUBLISHING = 10_000
KEY_RELOAD_INTERVAL = 1.0  # at most one signing-key reload per this many seconds
#: Every gateway reloads the signing keys this often, so that a rotation made through another
#: gateway reaches it (it signs with the new key, and retires the old one on time).
KEY_REFRESH_PERIOD = 15.0


class PublishedMarks:
    """Marks published events in the journal in batches, off the request path.

    A mark lost in a crash only costs a duplicate publish by the relay, which the mailbox
    acks as a duplicate.
    """

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._pending: list[uuid.UUID] = []
        self._wake = asyncio.Event()

    def add(self, event_id: uuid.UUID) -> None:
        self._pending.append(event_id)
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()
            await asyncio.sleep(0.02)  # let a batch gather
            await self.flush()
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            try:
                await self._journal.mark_published(batch)
            except UNAVAILABLE as error:
                log.warning(
                    "could not mark %d events published (%s); the relay will publish them again",
                    len(batch),
                    error,
                )


class Services:
    """Everything a request handler needs, reached as `request.state.services`."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        tokens: TokenService,
        handlers: HandlerRegistry,
        link: BrokerLink,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.tokens = tokens
        self.handlers = handlers
        self.link = link
        self.marks = PublishedMarks(journal)
        self.tenancy = Tenancy(journal.pool)
        self.limits = ClientLimits(settings, self.tenancy)
        self.credential_checks = CredentialChecks(settings)
        self.intensity = RestartIntensity(settings.restart_intensity, settings.restart_period)
        self.in_progress: set[tuple[uuid.UUID, str]] = set()
        self._publishing: set[asyncio.Task[None]] = set()
        self._broker_down = False
        self._keys_loaded = float("-inf")

    async def refresh_keys(self, *, now: bool = False) -> None:
        """Reload the signing keys from the journal (another gateway may have rotated them);
        without `now`, at most once per KEY_RELOAD_INTERVAL, so unknown kids cost little."""
        if self.settings.jwt_key_file:
            return
        clock = asyncio.get_running_loop().time()
        if not now and clock - self._keys_loaded < KEY_RELOAD_INTERVAL:
            return
        self._keys_loaded = clock
        self.tokens.use(await journal_keys(self.settings, self.journal))

    async def keep_keys_fresh(self, stopping: asyncio.Event) -> None:
        """Reload the signing keys every KEY_REFRESH_PERIOD until `stopping` is set."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), KEY_REFRESH_PERIOD)
            if stopping.is_set():
                return
            try:
                await self.refresh_keys(now=True)
            except UNAVAILABLE as error:
                log.warning("could not reload the signing keys: %s", error)

    async def read_body(
        self, request: Request, limit: int | None = None, within: float | None = None
    ) -> bytes:
        """The whole body, refused with 413 as soon as it exceeds `limit` (default
        SERIATIM_MAX_BODY_BYTES), and with 408 when it takes longer than `within` seconds
        (default SERIATIM_BODY_TIMEOUT)."""
        limit = self.settings.max_body_bytes if limit is None else limit
        declared = content_length(request.headers.get("content-length"))
        if declared is not None and declared > limit:
            raise _too_large(limit)
        chunks, size = [], 0
        try:
            async with asyncio.timeout(within or self.settings.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
        except TimeoutError:
            # The rest of the body may still come: the connection cannot carry another request.
            raise Problem(
                408,
                "request-timeout",
                "the body was not received in time",
                headers={"Connection": "close"},
            ) from None
        except ClientDisconnect:
            raise Problem(400, "invalid-request", "the client disconnected mid-body") from None
        return b"".join(chunks)

    async def accept(
        self,
        client_id: uuid.UUID,
        type_: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        request_hash: bytes | None = None,
        redrive_of: uuid.UUID | None = None,
    ) -> Response:
        """Commit, then publish, then answer 202; raises KeyTaken, or Problem 429 when the
        client's backlog is full (nothing written either way)."""
        limits = await self.limits.of(client_id)
        try:
            accepted = await self.journal.accept(
                client_id,
                type_,
                payload,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                redrive_of=redrive_of,
                max_backlog=limits.max_backlog,
                traceparent=tracing.current_traceparent(),
            )
        except BacklogFull as full:
            raise backlog_full(full.backlog) from None
        if accepted is None:
            raise invalid_token("the token's client no longer exists")
        metrics.EVENTS_ACCEPTED.inc()
        row = accepted.event
        tracing.annotate(client_id=str(row.client_id), event_id=str(row.id), seq=row.seq)
        self._publish_soon(EventMessage.of(row), wake_supervisor=accepted.caught_up)
        return JSONResponse(
            accepted_json(row), status_code=202, headers={"Location": f"/v1/events/{row.id}"}
        )

    def _publish_soon(self, message: EventMessage, *, wake_supervisor: bool) -> None:
        """Publish after answering: the event is durable already, and RabbitMQ confirms a
        persistent message only after its next disk sync. What is never confirmed is left
        to the relay."""
        if len(self._publishing) >= MAX_PUBLISHING:
            log.warning(
                "%d publishes pending; event seq %d is left to the relay",
                len(self._publishing),
                message.seq,
            )
            return
        task = asyncio.create_task(self._publish(message, wake_supervisor=wake_supervisor))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def finish_publishing(self, deadline: float) -> None:
        """Wait up to `deadline` seconds for publishes still in flight (at shutdown)."""
        if self._publishing:
            await asyncio.wait(list(self._publishing), timeout=deadline)

    async def _publish(self, message: EventMessage, *, wake_supervisor: bool) -> None:
        publisher = self.link.publisher
        if publisher is None:
            if not self._broker_down:
                self._broker_down = True
                log.warning(
                    "RabbitMQ is unreachable: accepted events are left to the relay "
                    "until it is back"
                )
            return
        self._broker_down = False
        try:
            if wake_supervisor:  # both on one channel: RabbitMQ routes them in this order
                await asyncio.gather(
                    publisher.publish_event(message),
                    publisher.tell_supervisor(
                        MailboxWanted(message.client_id, message.traceparent or "")
                    ),
                )
            else:
                await publisher.publish_event(message)
            self.marks.add(message.event_id)
        except PublishFailed as error:
            log.warning(
                "publishing event seq %d failed (%s); it is left to the relay", message.seq, error
            )


def _too_large(limit: int) -> Problem:
    """413; the unread rest of the body leaves the connection unusable, so it is closed."""
    return Problem(
        413,
        "payload-too-large",
        f"the body is larger than {limit} bytes",
        headers={"Connection": "close"},
        limit=limit,
    )


def services_of(request: Request) -> Services:
    """The services of the application serving `request`."""
    services: Services = request.state.services
    return services
