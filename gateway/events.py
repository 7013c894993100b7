"""The events routes: accept, read, list and redrive a client's events."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors.states import EventStatus
from actors.store import KeyTaken
from gateway import intake
from gateway.auth import principal
from gateway.bodies import accepted_json, event_json
from gateway.problems import Problem
from gateway.services import Services, services_of

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
    body = await services.read_body(request)
    type_, payload = intake.event_body(intake.parse_json(body), services.handlers)
    if key is None:
        return await services.accept(caller.client_id, type_, payload)
    return await accept_once(services, caller.client_id, type_, payload, key)


async def accept_once(
    services: Services, client_id: uuid.UUID, type_: str, payload: Any, key: str
) -> Response:
    """Accept under an idempotency key: the first request makes the event, the same request
    again gets the original answer (200), another body under the key a 422."""
    fingerprint = intake.request_hash(type_, payload)
    slot = (client_id, key)
    if slot in services.in_progress:
        raise _key_in_use()
    services.in_progress.add(slot)
    try:
        replay = await _replay(services, client_id, key, fingerprint)
        if replay is not None:
            return replay
        try:
            return await services.accept(
                client_id, type_, payload, idempotency_key=key, request_hash=fingerprint
            )
        except KeyTaken:  # another gateway won the race and has committed by now
            replay = await _replay(services, client_id, key, fingerprint)
            if replay is not None:
                return replay
            raise _key_in_use() from None
    finally:
        services.in_progress.discard(slot)


def _key_in_use() -> Problem:
    return Problem(
        409, "idempotency-key-in-use", "a request with this Idempotency-Key is still in progress"
    )


async def _replay(
    services: Services, client_id: uuid.UUID, key: str, fingerprint: bytes
) -> Response | None:
    found = await services.journal.event_by_key(client_id, key)
    if found is None:
        return None
    row, original = found
    if original != fingerprint:
        raise Problem(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was used with a different request body",
        )
    return JSONResponse(
        accepted_json(row),
        status_code=200,
        headers={"Idempotent-Replayed": "true", "Location": f"/v1/events/{row.id}"},
    )


async def get_event(request: Request) -> Response:
    caller = await principal(request, "events:read")
    row = await services_of(request).journal.event(caller.client_id, _event_id(request))
    if row is None:
        raise Problem(404, "not-found", "no such event")
    return JSONResponse(event_json(row))


async def list_events(request: Request) -> Response:
    caller = await principal(request, "events:read")
    params = request.query_params
    intake.only_params(params, ("status", "after_seq", "limit"))
    status = intake.query_choice(params, "status", tuple(EventStatus))
    after = intake.query_int(params, "after_seq", 0, intake.AFTER_SEQ)
    limit = intake.query_int(params, "limit", 100, intake.PAGE_LIMIT)
    rows = await services_of(request).journal.events(
        caller.client_id, after_seq=after, status=status, limit=limit
    )
    following = rows[-1].seq if len(rows) == limit else None
    return JSONResponse({"items": [event_json(row) for row in rows], "next_after_seq": following})


async def redrive_event(request: Request) -> Response:
    caller = await principal(request, "events:write")
    services = services_of(request)
    await services.limits.admit(caller.client_id)
    row = await services.journal.event(caller.client_id, _event_id(request))
    if row is None:
        raise Problem(404, "not-found", "no such event")
    if row.status is not EventStatus.DEAD:
        raise Problem(
            409, "event-not-dead", f"only dead events can be redriven; this one is {row.status}"
        )
    return await services.accept(
        caller.client_id,
        row.type,
        row.payload,
        redrive_of=row.id,
    )
