"""The events routes: accept, read, list and redrive a client's events."""

from __future__ import annotations

import logging
import uuid

from starlette.requests import Request
from starlette.responses import Response

from actors.states import EventStatus
from gateway import batches, intake, operations
from gateway.auth import principal
from gateway.bodies import (
    ITEM_BYTES,
    PAGE_ENVELOPE_BYTES,
    accepted_answer,
    batch_answer,
    event_answer,
    page_answer,
)
from gateway.problems import Problem
from gateway.services import services_of

log = logging.getLogger(__name__)


def _event_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["event_id"])
    except ValueError:
        raise Problem(404, "not-found", "no such event") from None


async def post_event(request: Request) -> Response:
    caller = await principal(request, "events:write")
    services = services_of(request)
    await services.limits.admit(caller.client_id)
    intake.require_json(request.headers.get("content-type"))
    key = intake.idempotency_key(request.headers.get("idempotency-key"))
    body = await intake.read_body(request, services.settings)
    type_, payload = intake.event_body(intake.parse_json(body), services.handlers)
    accepted = await services.acceptor.accept(caller.client_id, type_, payload, key=key)
    return accepted_answer(accepted)


async def post_batch(request: Request) -> Response:
    """Accept a batch of events, all or nothing; its rate-limit cost is its number of events."""
    caller = await principal(request, "events:write")
    services = services_of(request)
    settings = services.settings
    await services.limits.admit(caller.client_id, count=False)  # over its rate: not read
    intake.require_json(request.headers.get("content-type"))
    if "idempotency-key" in request.headers:
        raise Problem(
            400,
            "invalid-idempotency-key",
            "a batch takes no Idempotency-Key header; give each event its 'idempotency_key'",
        )
    body = await intake.read_body(request, settings, limit=settings.max_batch_bytes)
    items = batches.batch_items(
        intake.parse_json(body),
        services.handlers,
        max_items=settings.max_batch,
        max_item_bytes=settings.max_body_bytes,
    )
    await services.limits.admit(caller.client_id, events=len(items))
    accepted = await services.acceptor.accept_batch(caller.client_id, items)
    return batch_answer(accepted)


async def get_event(request: Request) -> Response:
    caller = await principal(request, "events:read")
    services = services_of(request)
    services.limits.admit_read(caller.client_id)
    row = await services.journal.event_text(caller.client_id, _event_id(request))
    if row is None:
        raise Problem(404, "not-found", "no such event")
    return event_answer(row, await services.journal.event_attempts(caller.client_id, row.id))


async def list_events(request: Request) -> Response:
    caller = await principal(request, "events:read")
    services = services_of(request)
    services.limits.admit_read(caller.client_id)
    params = request.query_params
    intake.only_params(params, ("status", "after_seq", "limit"))
    status = intake.query_choice(params, "status", tuple(EventStatus))
    after = intake.query_int(params, "after_seq", 0, intake.AFTER_SEQ)
    limit = intake.query_int(params, "limit", 100, intake.PAGE_LIMIT)
    page = await services.journal.event_page(
        caller.client_id,
        after_seq=after,
        status=status,
        limit=limit,
        max_bytes=services.settings.page_max_bytes - PAGE_ENVELOPE_BYTES,
        item_bytes=ITEM_BYTES,
    )
    return page_answer(page)


async def redrive_event(request: Request) -> Response:
    caller = await principal(request, "events:write")
    services = services_of(request)
    await services.limits.admit(caller.client_id)
    accepted = await operations.redrive(
        services, caller.client_id, caller.client_id, _event_id(request)
    )
    return accepted_answer(accepted)
