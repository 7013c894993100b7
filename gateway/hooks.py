"""Standard Webhooks intake: `POST /v1/hooks/<client_id>`, signed with the client's secret.

The signature (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`) is checked over the raw bytes
in constant time against every valid secret of the client (several during a rotation); the
`webhook-id` is the idempotency key; the event type is read with the client's JSON pointer.
Svix's `svix-id`, `svix-timestamp` and `svix-signature` are the same three headers under another
brand: each is read from either prefix, and one given under both must carry the same value.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from actors import logs
from gateway import intake
from gateway.bodies import accepted_answer
from gateway.pointers import resolve
from gateway.problems import Problem
from gateway.services import services_of
from gateway.signatures import verify

TOLERANCE = 300  # seconds a webhook-timestamp may be off from now, either way
KEY_PREFIX = "webhook\t"  # idempotency keys of webhooks; Idempotency-Key cannot hold a tab
_ID = re.compile(r"[\x21-\x7e]{1,255}")
#: Random, never stored or shown: checked in place of the secrets a client lacks, so that every
#: delivery costs SERIATIM_MAX_WEBHOOK_SECRETS HMACs whichever client, known or not, it names.
_PADDING = secrets.token_bytes(32)


BRANDS = ("webhook-", "svix-")  # Standard Webhooks' own prefix, and Svix's default one
NAMES = ("id", "timestamp", "signature")


def delivery_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """(id, timestamp, signature) from the `webhook-*` or `svix-*` headers; Problem 400 when one
    is missing, malformed or given twice with different values, 401 when the timestamp is
    outside the tolerance."""
    webhook_id, timestamp, signatures = (_branded(headers, name) for name in NAMES)
    if webhook_id is None or timestamp is None or signatures is None:
        raise Problem(
            400,
            "invalid-webhook",
            "webhook-id, webhook-timestamp and webhook-signature headers are required"
            " (or svix-id, svix-timestamp and svix-signature)",
        )
    if not _ID.fullmatch(webhook_id):
        raise Problem(400, "invalid-webhook", "webhook-id must be 1-255 printable ASCII characters")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise Problem(400, "invalid-webhook", "webhook-timestamp must be integer Unix seconds")
    if abs(time.time() - int(timestamp)) > TOLERANCE:
        raise _unverified("webhook-timestamp is more than 5 minutes from now")
    return webhook_id, timestamp, signatures


def _branded(headers: Mapping[str, str], name: str) -> str | None:
    """The header `name` under either brand; both present must agree, so the idempotency key and
    the signed content never depend on which brand a reader prefers."""
    values = {value for brand in BRANDS if (value := headers.get(brand + name)) is not None}
    if len(values) > 1:
        raise Problem(
            400,
            "invalid-webhook",
            f"webhook-{name} and svix-{name} are both given, with different values",
        )
    return values.pop() if values else None


def _unverified(detail: str) -> Problem:
    return Problem(
        401,
        "invalid-webhook-signature",
        detail,
        headers={"WWW-Authenticate": 'Webhook-Signature realm="seriatim"'},
    )


async def receive(request: Request) -> Response:
    """POST /v1/hooks/{client_id}: a signed delivery becomes an event of that client."""
    services = services_of(request)
    try:
        client_id = uuid.UUID(request.path_params["client_id"])
    except ValueError:
        raise Problem(404, "not-found", "no such webhook endpoint") from None
    webhook_id, timestamp, signatures = delivery_headers(request.headers)
    intake.require_json(request.headers.get("content-type"))
    body = await intake.read_body(
        request, services.settings, within=services.settings.preauth_body_timeout
    )
    verifiers = await services.tenancy.verifiers(client_id)
    keys = verifiers.secrets if verifiers else ()
    matched = verify(keys, webhook_id, timestamp, signatures, body)
    # The same work for an unknown client, one without secrets and one with: timing tells
    # nobody which clients exist or have secrets
    padding = (_PADDING,) * (services.settings.max_webhook_secrets - len(keys))
    verify(padding, webhook_id, timestamp, signatures, body)
    # An unknown client and a wrong signature look alike: the endpoint tells nobody who exists
    if not matched or verifiers is None:
        raise _unverified("no webhook-signature matches this endpoint's secrets")
    logs.bind(client_id=client_id)  # only now is it known who sends this
    await services.limits.admit(client_id)  # only verified senders spend the client's rate
    payload = intake.parse_json(body)
    if not isinstance(payload, dict):
        raise Problem(422, "invalid-event", "a webhook body must be a JSON object")
    try:
        type_ = resolve(payload, verifiers.type_pointer)
    except LookupError:
        raise Problem(
            422, "invalid-event", f"the body has no event type at {verifiers.type_pointer!r}"
        ) from None
    if not isinstance(type_, str) or type_ not in services.handlers:
        raise Problem(
            422, "unknown-event-type", "the event type in the body names no registered handler"
        )
    accepted = await services.acceptor.accept(
        client_id, type_, payload, key=KEY_PREFIX + webhook_id
    )
    return accepted_answer(accepted)
