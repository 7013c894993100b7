"""The gateway's composition root: `create_app(settings)` builds the Starlette application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors.broker import BrokerLink
from actors.handlers import load_handlers
from actors.heap import freeze_startup_objects
from actors.outages import UNAVAILABLE
from actors.settings import Settings
from actors.store import Journal
from gateway import clients, console, discovery, events, health, hooks, mailboxes, openapi
from gateway.admission import Admission
from gateway.auth import jwks_endpoint, revoke_signing_key, rotate_signing_key, token_endpoint
from gateway.problems import Problem, on_http_exception, on_problem, on_unexpected
from gateway.services import Services
from gateway.telemetry import Telemetry
from gateway.tokens import load_tokens

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(**endpoints: Endpoint) -> Endpoint:
    """One endpoint for a path served by several methods, so that 405 lists them all."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return dispatch


def only(method: str, endpoint: Endpoint) -> Endpoint:
    """An endpoint that answers 405 for every other method itself: for a fixed path that a
    parameterised route of other methods would otherwise match (`/v1/events/batch` and
    `GET /v1/events/{event_id}`)."""

    async def dispatch(request: Request) -> Response:
        if request.method != method:
            raise HTTPException(405, headers={"Allow": method})
        return await endpoint(request)

    return dispatch


#: Every method a fixed path takes in, to answer 405 for those it does not serve.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def routes() -> list[Route]:
    return [
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks_endpoint, methods=["GET"]),
        Route(discovery.PATH, discovery.authorization_server, methods=["GET"]),
        Route("/v1/token", token_endpoint, methods=["POST"]),
        Route(
            "/v1/events",
            by_method(GET=events.list_events, POST=events.post_event),
            methods=["GET", "POST"],
        ),
        Route("/v1/events/batch", only("POST", events.post_batch), methods=ANY_METHOD),
        Route("/v1/events/{event_id}", events.get_event, methods=["GET"]),
        Route("/v1/events/{event_id}/redrive", events.redrive_event, methods=["POST"]),
        Route("/v1/mailbox", mailboxes.get_own_mailbox, methods=["GET"]),
        Route("/v1/mailbox/resume", mailboxes.resume_own_mailbox, methods=["POST"]),
        Route("/v1/admin/clients", clients.create_client, methods=["POST"]),
        Route("/v1/admin/mailboxes", mailboxes.list_mailboxes, methods=["GET"]),
        Route(
            "/v1/admin/mailboxes/{client_id}",
            by_method(GET=mailboxes.get_mailbox, PATCH=mailboxes.set_policy),
            methods=["GET", "PATCH"],
        ),
        Route("/v1/admin/mailboxes/{client_id}/resume", mailboxes.resume_mailbox, methods=["POST"]),
        Route(
            "/v1/admin/mailboxes/{client_id}/suspend", mailboxes.suspend_mailbox, methods=["POST"]
        ),
        Route("/v1/admin/signing-keys", rotate_signing_key, methods=["POST"]),
        Route("/v1/admin/signing-keys/{kid}", revoke_signing_key, methods=["DELETE"]),
        Route(
            "/v1/admin/clients/{client_id}",
            by_method(
                GET=clients.get_client, PATCH=clients.patch_client, DELETE=clients.delete_client
            ),
            methods=["GET", "PATCH", "DELETE"],
        ),
        Route(
            "/v1/admin/clients/{client_id}/rotate-secret", clients.rotate_secret, methods=["POST"]
        ),
        Route("/v1/admin/clients/{client_id}/secret", clients.rotate_secret, methods=["POST"]),
        Route(
            "/v1/admin/clients/{client_id}/webhook-secrets",
            by_method(GET=clients.list_webhook_secrets, POST=clients.add_webhook_secret),
            methods=["GET", "POST"],
        ),
        Route("/v1/hooks/{client_id}", hooks.receive, methods=["POST"]),
    ]


async def _database_down(request: Request, exc: Exception) -> Response:
    log.warning(
        "PostgreSQL unavailable during %s %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return Problem(
        503,
        "database-unavailable",
        "the journal is unreachable; retry shortly",
        headers={"Retry-After": "2"},
    ).response(request.url.path)


def create_app(settings: Settings) -> Starlette:
    """The HTTP application; it connects to PostgreSQL and RabbitMQ in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        handlers = load_handlers(settings.handlers, demo=settings.demo)
        journal = await Journal.connect(settings.database_url, min_size=2, max_size=20)
        try:
            await journal.check_durability()
            tokens = await load_tokens(settings, journal)
            link = BrokerLink(settings, f"seriatim-gateway-{os.getpid()}")
            services = Services.create(settings, journal, tokens, handlers, link)
            stopping = asyncio.Event()
            background = [
                asyncio.create_task(link.run(stopping)),
                asyncio.create_task(services.publishing.marks.run(stopping)),
                asyncio.create_task(services.keys.run(stopping)),
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.connected.wait(), 5)
            freeze_startup_objects()
            log.info("gateway ready")
            try:
                yield {"services": services}
            finally:
                await services.publishing.finish(5.0)
                stopping.set()
                await asyncio.gather(*background)
                services.credential_checks.close()
        finally:
            await journal.close()

    return Starlette(
        routes=[*routes(), *console.routes(settings)],
        lifespan=lifespan,
        middleware=[
            Middleware(Telemetry),
            Middleware(
                Admission,
                tenants=settings.max_concurrent_requests,
                preauth=settings.max_preauth_requests,
            ),
        ],
        exception_handlers={
            Problem: on_problem,
            HTTPException: on_http_exception,
            **dict.fromkeys(UNAVAILABLE, _database_down),
            Exception: on_unexpected,
        },
    )
