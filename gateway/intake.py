"""What clients send: reading request bodies within bounds, and validating them with pure
functions; both raise Problem on bad input."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Container
from typing import Any

from starlette.requests import ClientDisconnect, Request

from actors.bounds import MAX_RESTARTS, RESTART_WITHIN, Bounds
from actors.handlers import TYPE_PATTERN
from actors.settings import Settings
from actors.states import DeadEventPolicy
from actors.store import dump_json
from gateway.problems import Problem

MAX_DEPTH = 64
MAX_LENGTH_DIGITS = 20
#: A page of a list: `limit`, and where it starts after.
PAGE_LIMIT = Bounds(1, 1000, integer=True)
AFTER_SEQ = Bounds(0, 2**62, integer=True)
#: Seconds the previous webhook secrets stay valid after a rotation.
PREVIOUS_VALID_FOR = Bounds(0, 2592000)
KEY = re.compile(r"[\x20-\x7e]{1,255}")


async def read_body(
    request: Request, settings: Settings, *, limit: int | None = None, within: float | None = None
) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds `limit` (default
    SERIATIM_MAX_BODY_BYTES), and with 408 when it takes longer than `within` seconds
    (default SERIATIM_BODY_TIMEOUT)."""
    limit = settings.max_body_bytes if limit is None else limit
    declared = content_length(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(within or settings.body_timeout):
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


def _too_large(limit: int) -> Problem:
    """413; the unread rest of the body leaves the connection unusable, so it is closed."""
    return Problem(
        413,
        "payload-too-large",
        f"the body is larger than {limit} bytes",
        headers={"Connection": "close"},
        limit=limit,
    )


def require_json(content_type: str | None) -> None:
    """415 unless the body is declared as JSON (UTF-8, the only charset JSON has)."""
    media, _, params = (content_type or "").partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise Problem(
            415, "unsupported-media-type", "the body must be sent as Content-Type: application/json"
        )
    charset = re.search(r"charset\s*=\s*\"?([^\";\s]+)", params, re.IGNORECASE)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise Problem(415, "unsupported-media-type", "JSON bodies must be UTF-8")


def content_length(header: str | None) -> int | None:
    """The size a `Content-Length` header declares; Problem 400 unless it is 1-20 ASCII digits
    (20 digits hold any size the HTTP parser accepts; more are zeros in front, refused rather
    than given to `int()`, which refuses more than 4,300 digits)."""
    if header is None:
        return None
    if not (header.isascii() and header.isdigit()) or len(header) > MAX_LENGTH_DIGITS:
        raise Problem(
            400,
            "invalid-request",
            f"Content-Length must be a number of at most {MAX_LENGTH_DIGITS} digits",
        )
    return int(header)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, storable in jsonb, nested at most MAX_DEPTH."""
    if not body.strip():
        raise Problem(400, "invalid-json", "the body is empty; a JSON object is expected")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Problem(
            400,
            "invalid-json",
            f"the body is not valid UTF-8 ({error.reason} at byte {error.start})",
        ) from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise Problem(400, "invalid-json", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {error}") from None
    if _depth(value) > MAX_DEPTH:
        raise Problem(400, "invalid-json", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        dump_json(value)
    except ValueError as error:
        raise Problem(400, "invalid-json", f"the JSON cannot be stored: {error}") from None
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def event_body(value: Any, known_types: Container[str]) -> tuple[str, dict[str, Any]]:
    """The (type, payload) of a POST /v1/events body."""
    if not isinstance(value, dict):
        raise Problem(
            422, "invalid-event", 'the body must be a JSON object {"type": "...", "payload": {...}}'
        )
    unknown = sorted(set(value) - {"type", "payload"})
    if unknown:
        raise Problem(
            422,
            "invalid-event",
            f"unknown field(s): {', '.join(unknown)}; only 'type' and 'payload' are accepted",
            fields=unknown,
        )
    type_ = value.get("type")
    if not isinstance(type_, str) or not TYPE_PATTERN.fullmatch(type_):
        raise Problem(
            422,
            "invalid-event",
            "'type' must be a string of 1-200 letters, digits and ._:- naming a registered handler",
        )
    if type_ not in known_types:
        raise Problem(422, "unknown-event-type", f"no handler is registered for type {type_!r}")
    payload = value.get("payload")
    if not isinstance(payload, dict):
        raise Problem(422, "invalid-event", "'payload' must be a JSON object")
    return type_, payload


def policy_body(value: Any) -> dict[str, Any]:
    """The changes of a PATCH /v1/admin/mailboxes/{id} body, as journal keyword arguments.

    `{"policy": "skip"|"halt", "restart_intensity": {"max_restarts": n, "within": s} | null}`;
    null restores the deployment's default intensity.
    """
    if not isinstance(value, dict) or not value:
        raise Problem(
            422,
            "invalid-policy",
            'the body must be a JSON object with "policy" and/or "restart_intensity"',
        )
    unknown = sorted(set(value) - {"policy", "restart_intensity"})
    if unknown:
        raise Problem(422, "invalid-policy", f"unknown field(s): {', '.join(unknown)}")
    changes: dict[str, Any] = {}
    if "policy" in value:
        if value["policy"] not in tuple(DeadEventPolicy):
            choices = " or ".join(f'"{policy}"' for policy in DeadEventPolicy)
            raise Problem(422, "invalid-policy", f"'policy' must be {choices}")
        changes["policy"] = DeadEventPolicy(value["policy"])
    if "restart_intensity" in value:
        intensity = value["restart_intensity"]
        if intensity is None:
            changes["default_intensity"] = True
        else:
            changes.update(_intensity(intensity))
    return changes


def _intensity(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"max_restarts", "within"}:
        raise Problem(
            422,
            "invalid-policy",
            "'restart_intensity' must be null or "
            f'{{"max_restarts": <{MAX_RESTARTS}>, "within": <seconds, {RESTART_WITHIN}>}}',
        )
    restarts, within = value["max_restarts"], value["within"]
    if not MAX_RESTARTS.holds(restarts):
        raise Problem(422, "invalid-policy", f"'max_restarts' must be an integer {MAX_RESTARTS}")
    if not RESTART_WITHIN.holds(within):
        raise Problem(
            422, "invalid-policy", f"'within' must be a number of seconds, {RESTART_WITHIN}"
        )
    return {"max_restarts": restarts, "restart_period": float(within)}


def idempotency_key(header: str | None) -> str | None:
    if header is None:
        return None
    if not KEY.fullmatch(header):
        raise Problem(
            400,
            "invalid-idempotency-key",
            "Idempotency-Key must be 1-255 printable ASCII characters",
        )
    return header


def request_hash(type_: str, payload: Any) -> bytes:
    """A fingerprint of the request body, independent of key order and white space."""
    canonical = json.dumps(
        [type_, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def query_int(params: Any, name: str, default: int, bounds: Bounds) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(400, "invalid-query", f"'{name}' must be an integer") from None
    if not bounds.holds(value):
        raise Problem(
            400, "invalid-query", f"'{name}' must be between {bounds.low} and {bounds.high}"
        )
    return value


def query_choice(params: Any, name: str, choices: tuple[str, ...]) -> str | None:
    raw = params.get(name)
    if raw is not None and raw not in choices:
        raise Problem(400, "invalid-query", f"'{name}' must be one of {', '.join(choices)}")
    return raw  # type: ignore[no-any-return]


def only_params(params: Any, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params.keys()) - set(allowed))
    if unknown:
        raise Problem(400, "invalid-query", f"unknown query parameter(s): {', '.join(unknown)}")
    repeated = sorted(name for name in allowed if len(params.getlist(name)) > 1)
    if repeated:
        raise Problem(400, "invalid-query", f"repeated query parameter(s): {', '.join(repeated)}")
