"""The OpenAPI 3.1 document of the v1 API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors.states import DeadEventPolicy, EventStatus, MailboxState
from gateway.intake import AFTER_SEQ, PAGE_LIMIT, PREVIOUS_VALID_FOR
from gateway.problems import MEDIA_TYPE
from gateway.schemas import RATE, RESTART_INTENSITY, SCHEMAS, UUID, object_of, one_of, ref
from gateway.services import services_of

JSON = "application/json"
PROBLEM = MEDIA_TYPE


def _answer(status: int, schema: str | None, description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {JSON: {"schema": ref(schema)}}
    if headers:
        answer["headers"] = {name: {"schema": {"type": kind}} for name, kind in headers.items()}
    return {str(status): answer}


def _operation(
    summary: str,
    *answers: dict[str, Any],
    secured: bool = True,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for answer in answers:
        responses.update(answer)
    responses["default"] = {
        "description": "an error (RFC 9457 problem details)",
        "content": {PROBLEM: {"schema": ref("Problem")}},
    }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    operation["security"] = [{"bearer": []}] if secured else []
    if body is not None:
        operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    return operation


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


EVENT_ID = _path_id("event_id")
CLIENT_ID = _path_id("client_id")


def _event_body(types: list[str]) -> dict[str, Any]:
    return _json_body(
        {
            "type": "object",
            "required": ["type", "payload"],
            "additionalProperties": False,
            "properties": {"type": {"enum": types}, "payload": {"type": "object"}},
        }
    )


def _batch_body(types: list[str], max_items: int) -> dict[str, Any]:
    item = {
        "type": "object",
        "required": ["type", "payload"],
        "additionalProperties": False,
        "properties": {
            "type": {"enum": types},
            "payload": {"type": "object"},
            "idempotency_key": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,255}$"},
        },
    }
    return _json_body(
        {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "properties": {
                "events": {"type": "array", "minItems": 1, "maxItems": max_items, "items": item}
            },
        }
    )


POLICY_BODY = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "policy": one_of(DeadEventPolicy),
        "restart_intensity": RESTART_INTENSITY,
    },
}


def _paths(types: list[str], max_batch: int) -> dict[str, Any]:
    return {
        "/healthz": {
            "get": _operation("liveness", _answer(200, "Status", "serving"), secured=False)
        },
        "/readyz": {"get": _operation("readiness", _answer(200, "Status", "ready"), secured=False)},
        "/openapi.json": {
            "get": _operation(
                "this document", {"200": {"description": "OpenAPI 3.1"}}, secured=False
            )
        },
        "/.well-known/jwks.json": {
            "get": _operation(
                "public signing keys", {"200": {"description": "a JWK set"}}, secured=False
            )
        },
        "/.well-known/oauth-authorization-server": {
            "get": _operation(
                "RFC 8414 authorization server metadata",
                {"200": {"description": "issuer, token endpoint, jwks_uri, grants, methods"}},
                secured=False,
            )
        },
        "/v1/token": {
            "post": _operation(
                "OAuth 2.0 client-credentials grant",
                _answer(200, "Token", "an access token"),
                secured=False,
                body={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                **object_of(
                                    ["grant_type"],
                                    grant_type={"const": "client_credentials"},
                                    client_id={"type": "string", "format": "uuid"},
                                    client_secret={"type": "string", "maxLength": 1024},
                                    scope={"enum": ["events:write", "events:read"]},
                                ),
                                "additionalProperties": False,
                            }
                        }
                    },
                },
            )
        },
        "/v1/events": {
            "get": _operation(
                "the caller's events in seq order",
                _answer(200, "EventList", "a page of events"),
                parameters=[
                    _query("status", one_of(EventStatus)),
                    _query("after_seq", AFTER_SEQ.schema()),
                    _query("limit", PAGE_LIMIT.schema()),
                ],
            ),
            "post": _operation(
                "accept an event",
                _answer(202, "Accepted", "committed to the journal", Location="string"),
                _answer(200, "Accepted", "an idempotent replay"),
                body=_event_body(types),
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,255}$"},
                    }
                ],
            ),
        },
        "/v1/events/batch": {
            "post": _operation(
                "accept a batch of events, all or nothing, with consecutive seqs in order",
                _answer(202, "BatchAccepted", "committed to the journal in one transaction"),
                _answer(200, "BatchAccepted", "every item was an idempotent replay"),
                body=_batch_body(types, max_batch),
            )
        },
        "/v1/events/{event_id}": {
            "get": _operation(
                "one event", _answer(200, "Event", "the event"), parameters=[EVENT_ID]
            )
        },
        "/v1/events/{event_id}/redrive": {
            "post": _operation(
                "queue a dead event again",
                _answer(202, "Accepted", "the new event"),
                parameters=[EVENT_ID],
            )
        },
        "/v1/mailbox": {"get": _operation("the caller's mailbox", _answer(200, "Mailbox", "it"))},
        "/v1/mailbox/resume": {
            "post": _operation("resume the caller's mailbox", _answer(200, "Mailbox", "resumed"))
        },
        "/v1/admin/clients": {
            "post": _operation(
                "create a client",
                _answer(201, "ClientCreated", "its secret, shown only here"),
                body=_json_body(
                    {
                        **object_of(
                            ["name"],
                            name={
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 200,
                                "pattern": "^\\S(.*\\S)?$",
                            },
                            admin={"type": "boolean"},
                        ),
                        "additionalProperties": False,
                    }
                ),
            )
        },
        "/v1/admin/clients/{client_id}": {
            "get": _operation(
                "a client's intake settings",
                _answer(200, "ClientSettings", "them"),
                parameters=[CLIENT_ID],
            ),
            "patch": _operation(
                "change a client's type pointer, limits, admin right; disable or enable it",
                _answer(200, "ClientSettings", "the settings now"),
                parameters=[CLIENT_ID],
                body=_json_body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "minProperties": 1,
                        "properties": {
                            "webhook_type_pointer": {
                                "type": "string",
                                "maxLength": 200,
                                "pattern": "^(/([^~/]|~[01])*)*$",
                            },
                            "rate_limit": RATE,
                            "max_backlog": {"type": ["integer", "null"], "minimum": 1},
                            "max_stored_events": {"type": ["integer", "null"], "minimum": 1},
                            "max_stored_bytes": {"type": ["integer", "null"], "minimum": 1},
                            "disabled": {"type": "boolean"},
                            "admin": {"type": "boolean"},
                        },
                    }
                ),
            ),
            "delete": _operation(
                "delete a client (its events are kept and unfinished ones still run)",
                _answer(204, None, "deleted"),
                parameters=[CLIENT_ID],
            ),
        },
        "/v1/admin/clients/{client_id}/rotate-secret": {
            "post": _operation(
                "a new client secret (rotation); the old one and the client's tokens stop working",
                _answer(200, "ClientSecret", "the secret, shown only here"),
                parameters=[CLIENT_ID],
            ),
        },
        "/v1/admin/clients/{client_id}/secret": {
            "post": _operation(
                "the same as rotate-secret, under its earlier name",
                _answer(200, "ClientSecret", "the secret, shown only here"),
                parameters=[CLIENT_ID],
            ),
        },
        "/v1/admin/clients/{client_id}/webhook-secrets": {
            "get": _operation(
                "a client's valid webhook secrets (without the secrets)",
                _answer(200, "WebhookSecretList", "them"),
                parameters=[CLIENT_ID],
            ),
            "post": _operation(
                "a new webhook secret (rotation)",
                _answer(201, "WebhookSecret", "the secret, shown only here"),
                parameters=[CLIENT_ID],
                body=_json_body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"previous_valid_for": PREVIOUS_VALID_FOR.schema()},
                    },
                    required=False,
                ),
            ),
        },
        "/v1/admin/mailboxes": {
            "get": _operation(
                "every mailbox",
                _answer(200, "MailboxList", "a page of mailboxes"),
                parameters=[
                    _query("state", one_of(MailboxState)),
                    _query("after", UUID),
                    _query("limit", PAGE_LIMIT.schema()),
                ],
            )
        },
        "/v1/admin/mailboxes/{client_id}": {
            "get": _operation("a mailbox", _answer(200, "Mailbox", "it"), parameters=[CLIENT_ID]),
            "patch": _operation(
                "a mailbox's dead-event policy and restart intensity",
                _answer(200, "Mailbox", "the mailbox now"),
                parameters=[CLIENT_ID],
                body=_json_body(POLICY_BODY),
            ),
        },
        "/v1/admin/mailboxes/{client_id}/resume": {
            "post": _operation(
                "resume a suspended mailbox",
                _answer(200, "Mailbox", "resumed"),
                parameters=[CLIENT_ID],
            )
        },
        "/v1/admin/mailboxes/{client_id}/suspend": {
            "post": _operation(
                "suspend a mailbox by hand, with a reason",
                _answer(200, "Mailbox", "suspended"),
                parameters=[CLIENT_ID],
                body=_json_body(
                    {
                        "type": "object",
                        "required": ["reason"],
                        "additionalProperties": False,
                        "properties": {"reason": {"type": "string", "minLength": 1}},
                    }
                ),
            )
        },
        "/v1/admin/signing-keys": {
            "post": _operation(
                "rotate the token signing key", _answer(201, "SigningKey", "the new kid")
            )
        },
        "/v1/admin/signing-keys/{kid}": {
            "delete": _operation(
                "revoke a signing key at once (a new key signs from now on)",
                _answer(200, "RevokedKey", "the revoked kid and the new one"),
                parameters=[
                    {"name": "kid", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            )
        },
        "/v1/hooks/{client_id}": {
            "post": _operation(
                "a Standard Webhooks delivery",
                _answer(202, "Accepted", "committed to the journal"),
                _answer(200, "Accepted", "a redelivery: the original event"),
                secured=False,
                parameters=[
                    CLIENT_ID,
                    *(
                        {
                            "name": name,
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
                    ),
                    *(
                        {
                            "name": name,
                            "in": "header",
                            "required": False,
                            "description": f"Svix's name for webhook-{name.removeprefix('svix-')}"
                            " (either brand; both present must agree)",
                            "schema": {"type": "string"},
                        }
                        for name in ("svix-id", "svix-timestamp", "svix-signature")
                    ),
                ],
                body=_json_body({"type": "object"}),
            )
        },
    }


WEBHOOK_HEADERS = {
    "webhook-id": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    "webhook-timestamp": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    "webhook-signature": {"type": "string", "minLength": 1},
}


def document(types: list[str], max_batch: int = 1000) -> dict[str, Any]:
    """The document for a gateway whose handlers take these event types and batches of at
    most `max_batch` events."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "seriatim", "version": "1"},
        "paths": _paths(types, max_batch),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


async def openapi(request: Request) -> Response:
    services = services_of(request)
    return JSONResponse(document(sorted(services.handlers.types()), services.settings.max_batch))
