"""Console sessions: a cookie signed with HMAC-SHA256 (the key is shared by every gateway
through the journal), expiring, HttpOnly, SameSite=Strict, Secure behind HTTPS, carrying a
CSRF token that every changing form must send back. A session is refused, like a token, once
its client is disabled, deleted or has rotated its secret or lost its admin right since."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import math
import secrets
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.problems import Problem
from gateway.services import services_of
from gateway.tokens import ADMIN_SCOPE, ORDINARY_SCOPES, Principal

COOKIE = "seriatim_console"
PATH = "/console"


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    client_id: uuid.UUID
    admin: bool
    issued_at: int
    expires_at: int
    csrf: str

    @property
    def principal(self) -> Principal:
        scopes = [*ORDINARY_SCOPES, ADMIN_SCOPE] if self.admin else list(ORDINARY_SCOPES)
        return Principal(self.client_id, frozenset(scopes), float(self.issued_at))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def new_session(client_id: uuid.UUID, admin: bool, ttl: int, not_before: float = 0) -> Session:
    """A session from now (no earlier than `not_before`, as a token's `iat`) for `ttl` s."""
    now = max(int(time.time()), math.ceil(not_before))
    return Session(client_id, admin, now, now + ttl, secrets.token_urlsafe(24))


def encode(session: Session, key: bytes) -> str:
    payload = {
        "c": str(session.client_id),
        "a": session.admin,
        "i": session.issued_at,
        "e": session.expires_at,
        "x": session.csrf,
    }
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_mac(key, body)}"


def decode(value: str, key: bytes, now: float | None = None) -> Session | None:
    """The session of a cookie value; None when it is forged, malformed or expired."""
    body, _, mac = value.partition(".")
    if not body or not mac or len(value) > 1024:
        return None
    try:
        if not hmac.compare_digest(mac, _mac(key, body)):
            return None
        data: Any = json.loads(_unb64(body))
        session = Session(
            uuid.UUID(data["c"]), data["a"] is True, int(data["i"]), int(data["e"]), data["x"]
        )
    except (ValueError, KeyError, TypeError, UnicodeError):
        return None
    return session if session.expires_at > (time.time() if now is None else now) else None


def set_cookie(response: Response, request: Request, session: Session, key: bytes) -> None:
    response.set_cookie(
        COOKIE,
        encode(session, key),
        max_age=session.expires_at - session.issued_at,
        path=PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path=PATH, secure=request.url.scheme == "https", httponly=True, samesite="strict"
    )


async def session_of(request: Request, key: bytes) -> Session | None:
    """The request's valid session, or None (no cookie, forged, expired, or its client has
    been disabled, deleted or revoked since)."""
    value = request.cookies.get(COOKIE)
    session = decode(value, key) if value else None
    if session is None:
        return None
    try:
        await services_of(request).revocations.check(session.principal)
    except Problem:
        return None
    return session


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), session.csrf.encode())
