"""The mailbox routes: a client's own mailbox, and every mailbox for operators."""

from __future__ import annotations

import logging
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors.states import MailboxState
from gateway import intake, operations
from gateway.auth import principal
from gateway.bodies import mailbox_json
from gateway.problems import Problem
from gateway.services import services_of
from gateway.tokens import ADMIN_SCOPE

log = logging.getLogger(__name__)


async def _mailbox(request: Request, client_id: uuid.UUID, *, show_host: bool) -> Response:
    row = await services_of(request).journal.mailbox(client_id)
    if row is None:
        raise Problem(404, "not-found", "no such mailbox")
    return JSONResponse(mailbox_json(row, services_of(request).intensity, show_host=show_host))


async def _resume(
    request: Request, actor: uuid.UUID, client_id: uuid.UUID, *, show_host: bool
) -> Response:
    await operations.resume_mailbox(services_of(request), actor, client_id)
    return await _mailbox(request, client_id, show_host=show_host)


def _client_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["client_id"])
    except ValueError:
        raise Problem(404, "not-found", "no such mailbox") from None


async def get_own_mailbox(request: Request) -> Response:
    """GET /v1/mailbox: the caller's mailbox; `host` is null unless the caller is an admin."""
    caller = await principal(request, "events:read")
    services_of(request).limits.admit_read(caller.client_id)
    return await _mailbox(request, caller.client_id, show_host=caller.admin)


async def resume_own_mailbox(request: Request) -> Response:
    """POST /v1/mailbox/resume: resuming changes what runs, so it needs `events:write` (a
    read-only token, a dashboard's, cannot restart a halted mailbox)."""
    caller = await principal(request, "events:write")
    return await _resume(request, caller.client_id, caller.client_id, show_host=caller.admin)


async def get_mailbox(request: Request) -> Response:
    await principal(request, ADMIN_SCOPE)
    return await _mailbox(request, _client_id(request), show_host=True)


async def resume_mailbox(request: Request) -> Response:
    caller = await principal(request, ADMIN_SCOPE)
    return await _resume(request, caller.client_id, _client_id(request), show_host=True)


async def suspend_mailbox(request: Request) -> Response:
    """POST /v1/admin/mailboxes/{client_id}/suspend: body `{"reason": "..."}`."""
    caller = await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    intake.require_json(request.headers.get("content-type"))
    body = intake.parse_json(await intake.read_body(request, services.settings, limit=4096))
    if not isinstance(body, dict) or set(body) != {"reason"} or not isinstance(body["reason"], str):
        raise Problem(422, "invalid-reason", 'the body must be {"reason": "<why>"}')
    client_id = _client_id(request)
    await operations.suspend_mailbox(services, caller.client_id, client_id, body["reason"])
    return await _mailbox(request, client_id, show_host=True)


async def list_mailboxes(request: Request) -> Response:
    await principal(request, ADMIN_SCOPE)
    params = request.query_params
    intake.only_params(params, ("state", "after", "limit"))
    state = intake.query_choice(params, "state", tuple(MailboxState))
    limit = intake.query_int(params, "limit", 100, intake.PAGE_LIMIT)
    after = None
    if params.get("after") is not None:
        try:
            after = uuid.UUID(params["after"])
        except ValueError:
            raise Problem(400, "invalid-query", "'after' must be a client id") from None
    stored_state = MailboxState.ACTIVE if state == MailboxState.BACKING_OFF else state
    rows = await services_of(request).journal.mailboxes(stored_state, after, limit)
    items = [mailbox_json(row, services_of(request).intensity) for row in rows]
    if state is not None:
        items = [item for item in items if item["state"] == state]
    following = str(rows[-1].client_id) if len(rows) == limit else None
    return JSONResponse({"items": items, "next_after": following})


async def set_policy(request: Request) -> Response:
    """PATCH /v1/admin/mailboxes/{client_id}: the client's dead-event policy and intensity."""
    caller = await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    client_id = _client_id(request)
    intake.require_json(request.headers.get("content-type"))
    body = intake.parse_json(await intake.read_body(request, services.settings))
    changes = intake.policy_body(body)
    await operations.set_policy(services, caller.client_id, client_id, changes)
    return await _mailbox(request, client_id, show_host=True)
