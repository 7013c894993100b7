"""JSON Schemas of the API's bodies, for the OpenAPI document."""

from __future__ import annotations

import enum
from typing import Any

from actors.bounds import MAX_RESTARTS, RATE_BURST, RATE_PER_SECOND, RESTART_WITHIN
from actors.states import DeadEventPolicy, EventStatus, MailboxState

UUID = {"type": "string", "format": "uuid"}
TIME = {"type": ["string", "null"], "format": "date-time"}
ANY_JSON: dict[str, Any] = {}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def object_of(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def one_of(kind: type[enum.StrEnum]) -> dict[str, list[str]]:
    """The schema of a value of `kind`: one of its values, in their order."""
    return {"enum": [member.value for member in kind]}


RATE = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["per_second", "burst"],
    "properties": {"per_second": RATE_PER_SECOND.schema(), "burst": RATE_BURST.schema()},
}
RESTART_INTENSITY = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["max_restarts", "within"],
    "properties": {"max_restarts": MAX_RESTARTS.schema(), "within": RESTART_WITHIN.schema()},
}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
    },
    "Accepted": object_of(
        ["id", "client_id", "seq", "type", "status", "accepted_at"],
        id=UUID,
        client_id=UUID,
        seq={"type": "integer"},
        type={"type": "string"},
        status={"const": EventStatus.QUEUED.value},
        accepted_at=TIME,
        redrive_of=UUID,
        replayed={"const": True},
    ),
    "BatchAccepted": object_of(["items"], items={"type": "array", "items": ref("Accepted")}),
    "Event": object_of(
        ["id", "client_id", "seq", "type", "payload", "status", "attempts", "accepted_at"],
        id=UUID,
        client_id=UUID,
        seq={"type": "integer"},
        type={"type": "string"},
        payload={"type": "object"},
        status=one_of(EventStatus),
        attempts={"type": "integer"},
        accepted_at=TIME,
        started_at=TIME,
        finished_at=TIME,
        result=ANY_JSON,
        error=ANY_JSON,
        redrive_of=UUID,
        attempt_log={
            "type": "array",
            "items": ref("Attempt"),
            "description": "each attempt, oldest first (GET /v1/events/{id} only)",
        },
    ),
    "Attempt": object_of(
        ["attempt", "started_at", "finished_at", "duration_ms", "error"],
        attempt={"type": "integer"},
        started_at=TIME,
        finished_at=TIME,
        duration_ms={"type": ["number", "null"]},
        error=ANY_JSON,
    ),
    "EventList": object_of(
        ["items", "next_after_seq"],
        items={"type": "array", "items": ref("Event")},
        next_after_seq={"type": ["integer", "null"]},
    ),
    "Mailbox": object_of(
        ["client_id", "state", "last_seq", "done_seq", "backlog", "policy"],
        client_id=UUID,
        state=one_of(MailboxState),
        last_seq={"type": "integer"},
        done_seq={"type": "integer"},
        backlog={"type": "integer"},
        in_flight_seq={"type": ["integer", "null"]},
        restarts={"type": "integer"},
        host={"type": ["string", "null"]},
        policy=one_of(DeadEventPolicy),
    ),
    "MailboxList": object_of(
        ["items", "next_after"],
        items={"type": "array", "items": ref("Mailbox")},
        next_after={"type": ["string", "null"], "format": "uuid"},
    ),
    "Token": object_of(
        ["access_token", "token_type", "expires_in", "scope"],
        access_token={"type": "string"},
        token_type={"const": "Bearer"},
        expires_in={"type": "integer"},
        scope={"type": "string"},
    ),
    "ClientCreated": object_of(
        ["client_id", "client_secret", "name"],
        client_id=UUID,
        client_secret={"type": "string"},
        name={"type": "string"},
        admin={"type": "boolean"},
    ),
    "ClientSecret": object_of(
        ["client_id", "client_secret"], client_id=UUID, client_secret={"type": "string"}
    ),
    "ClientSettings": object_of(
        ["client_id", "name", "webhook_type_pointer", "rate_limit", "max_backlog"],
        client_id=UUID,
        name={"type": "string"},
        admin={"type": "boolean"},
        disabled={"type": "boolean"},
        webhook_type_pointer={"type": "string"},
        rate_limit={"type": "object"},
        max_backlog={"type": "object"},
        backlog={"type": "integer"},
        max_stored_events={"type": "object"},
        max_stored_bytes={"type": "object"},
        stored={"type": "object"},
    ),
    "WebhookSecret": object_of(
        ["id", "client_id", "secret", "created_at"],
        id=UUID,
        client_id=UUID,
        secret={"type": "string", "pattern": "^whsec_"},
        created_at=TIME,
        previous_valid_for={"type": "number"},
    ),
    "WebhookSecretList": object_of(
        ["items"],
        items={
            "type": "array",
            "items": object_of(["id", "created_at"], id=UUID, created_at=TIME, expires_at=TIME),
        },
    ),
    "SigningKey": object_of(["kid", "jwks"], kid={"type": "string"}, jwks={"type": "object"}),
    "RevokedKey": object_of(
        ["revoked", "kid", "jwks"],
        revoked={"type": "string"},
        kid={"type": "string"},
        jwks={"type": "object"},
    ),
    "Status": object_of(["status"], status={"type": "string"}),
}
