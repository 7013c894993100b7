"""Operator routes for clients: creating one, and its intake (webhook secrets, type pointer,
limits)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors.bounds import RATE_BURST, RATE_PER_SECOND
from actors.store import ClientSettings
from gateway import intake, operations
from gateway.auth import principal
from gateway.bodies import rfc3339
from gateway.operations import STANDING
from gateway.pointers import has_unicode_digits, valid_pointer
from gateway.problems import Problem
from gateway.services import Services, services_of
from gateway.tokens import ADMIN_SCOPE

log = logging.getLogger(__name__)

DEFAULT_GRACE = 86400.0  # seconds the previous secrets stay valid after a rotation
QUOTAS = ("max_backlog", "max_stored_events", "max_stored_bytes")  # null: the default


def _client_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["client_id"])
    except ValueError:
        raise Problem(404, "not-found", "no such client") from None


def _settings_json(row: ClientSettings, services: Services) -> dict[str, Any]:
    d = services.settings
    return {
        "client_id": str(row.id),
        "name": row.name,
        "admin": row.admin,
        "disabled": row.disabled,
        "webhook_type_pointer": row.webhook_type_pointer,
        "rate_limit": {
            "per_second": row.rate_per_second or d.rate_per_second,
            "burst": row.rate_burst or d.rate_burst,
            "default": row.rate_per_second is None,
        },
        "max_backlog": {
            "value": row.max_backlog or d.max_backlog,
            "default": row.max_backlog is None,
        },
        "backlog": row.backlog,
        "max_stored_events": {
            "value": row.max_stored_events or d.max_stored_events,
            "default": row.max_stored_events is None,
        },
        "max_stored_bytes": {
            "value": row.max_stored_bytes or d.max_stored_bytes,
            "default": row.max_stored_bytes is None,
        },
        "stored": {"events": row.stored_events, "bytes": row.stored_bytes},
    }


async def create_client(request: Request) -> Response:
    """POST /v1/admin/clients: a new client; its secret is shown only in this answer."""
    caller = await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    intake.require_json(request.headers.get("content-type"))
    body = intake.parse_json(await intake.read_body(request, services.settings))
    if not isinstance(body, dict):
        raise Problem(422, "invalid-client", 'the body must be {"name": "...", "admin": false}')
    unknown = sorted(set(body) - {"name", "admin"})
    if unknown:
        raise Problem(422, "invalid-client", f"unknown field(s): {', '.join(unknown)}")
    name, admin = body.get("name"), body.get("admin", False)
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise Problem(422, "invalid-client", "'name' must be a string of 1-200 characters")
    if not isinstance(admin, bool):
        raise Problem(422, "invalid-client", "'admin' must be true or false")
    client_id, secret = await operations.create_client(
        services, caller.client_id, name.strip(), admin
    )
    return JSONResponse(
        {
            "client_id": str(client_id),
            "client_secret": secret,
            "name": name.strip(),
            "admin": admin,
        },
        status_code=201,
        headers={"Cache-Control": "no-store", "Location": f"/v1/admin/mailboxes/{client_id}"},
    )


async def get_client(request: Request) -> Response:
    await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    row = await services.tenancy.settings(_client_id(request))
    if row is None:
        raise Problem(404, "not-found", "no such client")
    return JSONResponse(_settings_json(row, services))


async def patch_client(request: Request) -> Response:
    """PATCH /v1/admin/clients/{id}: `webhook_type_pointer`, `rate_limit`, `max_backlog`,
    `max_stored_events`, `max_stored_bytes`, `disabled` and `admin` (disabling or taking
    admin away revokes the client's tokens)."""
    caller = await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    client_id = _client_id(request)
    intake.require_json(request.headers.get("content-type"))
    changes = _changes(
        intake.parse_json(await intake.read_body(request, services.settings, limit=4096))
    )
    await operations.change_client(services, caller.client_id, client_id, changes)
    row = await services.tenancy.settings(client_id)  # not get_client: an admin may have
    if row is None:  # just revoked itself, and its answer is still due
        raise Problem(404, "not-found", "no such client")
    return JSONResponse(_settings_json(row, services))


def _changes(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise _invalid("the body must be a JSON object with the fields to change")
    unknown = sorted(set(value) - {"webhook_type_pointer", "rate_limit", *QUOTAS, *STANDING})
    if unknown:
        raise _invalid(f"unknown field(s): {', '.join(unknown)}")
    changes: dict[str, Any] = {}
    for name in STANDING:
        if name in value and not isinstance(value[name], bool):
            raise _invalid(f"{name!r} must be true or false")
        if name in value:
            changes[name] = value[name]
    if "webhook_type_pointer" in value:
        if not valid_pointer(value["webhook_type_pointer"]):
            raise _invalid("'webhook_type_pointer' must be a JSON pointer (RFC 6901) like /type")
        if has_unicode_digits(value["webhook_type_pointer"]):
            raise _invalid(
                "'webhook_type_pointer' may hold only the ASCII digits 0-9: others such as '²' "
                "look like array indexes and are not"
            )
        changes["type_pointer"] = value["webhook_type_pointer"]
    if "rate_limit" in value:
        changes["rate"] = _rate(value["rate_limit"])
    for name in QUOTAS:
        if name in value:
            if value[name] is not None and not _integer(value[name], 1, 2**53):
                raise _invalid(f"{name!r} must be null or an integer from 1 to 2**53")
            changes[name] = value[name]
    return changes


def _rate(value: Any) -> tuple[float, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"per_second", "burst"}:
        raise _invalid('\'rate_limit\' must be null or {"per_second": <number>, "burst": <n>}')
    per_second, burst = value["per_second"], value["burst"]
    if isinstance(per_second, bool) or not isinstance(per_second, int | float):
        raise _invalid("'per_second' must be a number")
    if not RATE_PER_SECOND.holds(per_second) or not RATE_BURST.holds(burst):
        raise _invalid(
            f"'per_second' must be {RATE_PER_SECOND} and 'burst' an integer {RATE_BURST}"
        )
    return float(per_second), int(burst)


def _integer(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _invalid(detail: str) -> Problem:
    return Problem(422, "invalid-client-settings", detail)


async def rotate_secret(request: Request) -> Response:
    """POST /v1/admin/clients/{id}/secret: a new client secret, shown only in this answer; the
    old one stops working at once, and so do the client's tokens issued until now."""
    caller = await principal(request, ADMIN_SCOPE)
    client_id = _client_id(request)
    secret = await operations.rotate_secret(services_of(request), caller.client_id, client_id)
    return JSONResponse(
        {"client_id": str(client_id), "client_secret": secret},
        headers={"Cache-Control": "no-store"},
    )


async def delete_client(request: Request) -> Response:
    """DELETE /v1/admin/clients/{id}: the client is gone from the API, its tokens and webhook
    secrets stop working; its events stay in the journal, and those not yet finished still run
    to their outcome (nothing is dropped)."""
    caller = await principal(request, ADMIN_SCOPE)
    await operations.delete_client(services_of(request), caller.client_id, _client_id(request))
    return Response(status_code=204)


async def add_webhook_secret(request: Request) -> Response:
    """POST /v1/admin/clients/{id}/webhook-secrets: a new secret, shown only in this answer;
    the previous ones stay valid `previous_valid_for` seconds (default a day)."""
    caller = await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    client_id = _client_id(request)
    grace = DEFAULT_GRACE
    body = await intake.read_body(request, services.settings, limit=4096)
    if body.strip():
        intake.require_json(request.headers.get("content-type"))
        value = intake.parse_json(body)
        if not isinstance(value, dict) or set(value) - {"previous_valid_for"}:
            raise _invalid('the body may only hold {"previous_valid_for": <seconds>}')
        grace = value.get("previous_valid_for", DEFAULT_GRACE)
        if not intake.PREVIOUS_VALID_FOR.holds(grace):
            raise _invalid(f"'previous_valid_for' must be {intake.PREVIOUS_VALID_FOR} seconds")
    stored, text = await operations.add_webhook_secret(
        services, caller.client_id, client_id, float(grace)
    )
    return JSONResponse(
        {
            "id": str(stored.id),
            "client_id": str(client_id),
            "secret": text,
            "created_at": rfc3339(stored.created_at),
            "previous_valid_for": grace,
        },
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


async def list_webhook_secrets(request: Request) -> Response:
    await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    client_id = _client_id(request)
    if await services.tenancy.settings(client_id) is None:
        raise Problem(404, "not-found", "no such client")
    rows = await services.tenancy.webhook_secrets(client_id)
    items = [
        {"id": str(r.id), "created_at": rfc3339(r.created_at), "expires_at": rfc3339(r.expires_at)}
        for r in rows
    ]
    return JSONResponse({"items": items})
