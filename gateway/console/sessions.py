"""Console sessions, kept server-side in the journal (actors/store/console_sessions.py) so that
signing out, disabling a client or rotating its secret ends them on every gateway at once.

The cookie carries a random session id signed with HMAC-SHA256 under a key id
(`kid.id.mac`); the journal stores only the id's SHA-256. Keys rotate (`seriatim keys
rotate-console`): the newest signs, an older one verifies its sessions until they expire.
The cookie is HttpOnly, SameSite=Strict, and Secure over HTTPS or when
SERIATIM_CONSOLE_SECURE_COOKIE=on (a proxy in front terminates TLS). Sign-in itself needs a
token from the sign-in page (a signed double-submit cookie) besides the Origin check."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
import uuid

from starlette.requests import Request
from starlette.responses import Response

from actors.settings import Settings
from actors.store.console_sessions import ConsoleSessions, StoredSession
from gateway.services import services_of
from gateway.tokens import ADMIN_SCOPE, ORDINARY_SCOPES, Principal

COOKIE = "seriatim_console"
SIGNIN_COOKIE = "seriatim_signin"
PATH = "/console"
SIGNIN_TTL = 3600  # seconds a sign-in page's token is good for
_SESSION, _SIGNIN = "session", "signin"  # what a signature is for: one never passes as the other
_PART = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    client_id: uuid.UUID
    admin: bool
    issued_at: float
    expires_at: float
    csrf: str
    id_hash: bytes

    @property
    def principal(self) -> Principal:
        scopes = [*ORDINARY_SCOPES, ADMIN_SCOPE] if self.admin else list(ORDINARY_SCOPES)
        return Principal(self.client_id, frozenset(scopes), self.issued_at)

    @classmethod
    def of(cls, stored: StoredSession, id_hash: bytes) -> Session:
        return cls(
            stored.client_id,
            stored.admin,
            stored.issued_at.timestamp(),
            stored.expires_at.timestamp(),
            stored.csrf,
            id_hash,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Signed:
    """A signed cookie value: `kid.value.mac`."""

    kid: str
    value: str
    mac: str


def _mac(key: bytes, purpose: str, kid: str, value: str) -> str:
    digest = hmac.new(key, f"{purpose}.{kid}.{value}".encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(kid: str, key: bytes, value: str, purpose: str = _SESSION) -> str:
    return f"{kid}.{value}.{_mac(key, purpose, kid, value)}"


def parse(text: str | None) -> Signed | None:
    """The parts of a signed value; None when it is not one."""
    parts = (text or "").split(".")
    if len(parts) != 3 or not all(_PART.match(part) for part in parts):
        return None
    return Signed(*parts)


def verified(signed: Signed, key: bytes, purpose: str = _SESSION) -> bool:
    return hmac.compare_digest(signed.mac, _mac(key, purpose, signed.kid, signed.value))


def id_hash(value: str) -> bytes:
    return hashlib.sha256(value.encode("ascii")).digest()


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), session.csrf.encode())


class Sessions:
    """Begins, finds and ends the sessions of console requests. Verifying keys are kept by
    kid (a kid's key never changes); the signing key is read at each sign-in, so a rotation
    on any gateway signs every gateway's next session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._keys: dict[str, bytes] = {}

    def store(self, request: Request) -> ConsoleSessions:
        return ConsoleSessions(services_of(request).journal.pool)

    async def current(self, request: Request) -> Session | None:
        """The request's live session, or None (no cookie, forged, ended, expired, or its
        client disabled, deleted or revoked since)."""
        signed = await self._verified(request, request.cookies.get(COOKIE), _SESSION)
        if signed is None:
            return None
        digest = id_hash(signed.value)
        stored = await self.store(request).find(digest, signed.kid)
        return None if stored is None else Session.of(stored, digest)

    async def begin(
        self, request: Request, response: Response, client_id: uuid.UUID, admin: bool
    ) -> bool:
        """Start a session and set its cookie on `response`; False when the client is gone."""
        store = self.store(request)
        kid, key = await store.signing_key()
        value = secrets.token_urlsafe(32)
        stored = await store.start(
            id_hash=id_hash(value),
            client_id=client_id,
            admin=admin,
            kid=kid,
            csrf=secrets.token_urlsafe(24),
            ttl=self.settings.console_session_ttl,
        )
        if stored is None:
            return False
        ttl = self.settings.console_session_ttl
        self._set(request, response, COOKIE, sign(kid, key, value), ttl)
        response.delete_cookie(SIGNIN_COOKIE, path=PATH)
        return True

    async def end(self, request: Request, response: Response, session: Session | None) -> None:
        if session is not None:
            await self.store(request).end(session.id_hash)
        response.delete_cookie(
            COOKIE, path=PATH, secure=self.secure(request), httponly=True, samesite="strict"
        )

    async def signin_token(self, request: Request) -> str:
        """A new sign-in form token: the form and a cookie (`hold_signin_token`) carry it."""
        kid, key = await self.store(request).signing_key()
        return sign(kid, key, secrets.token_urlsafe(24), _SIGNIN)

    def hold_signin_token(self, request: Request, response: Response, token: str) -> None:
        self._set(request, response, SIGNIN_COOKIE, token, SIGNIN_TTL)

    async def signin_ok(self, request: Request, sent: str | None) -> bool:
        """The sign-in form's token is one of ours and the browser's sign-in cookie holds it
        (a cross-site form has no such cookie: it is SameSite=Strict)."""
        held = request.cookies.get(SIGNIN_COOKIE)
        if not sent or not held or not hmac.compare_digest(sent.encode(), held.encode()):
            return False
        return await self._verified(request, sent, _SIGNIN) is not None

    def secure(self, request: Request) -> bool:
        return self.settings.console_secure_cookie == "on" or request.url.scheme == "https"

    async def _verified(self, request: Request, text: str | None, purpose: str) -> Signed | None:
        signed = parse(text)
        if signed is None:
            return None
        key = self._keys.get(signed.kid)
        if key is None:
            key = await self.store(request).verifying_key(signed.kid)
            if key is None:
                return None
            self._keys[signed.kid] = key
        return signed if verified(signed, key, purpose) else None

    def _set(self, request: Request, response: Response, name: str, value: str, ttl: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=ttl,
            path=PATH,
            secure=self.secure(request),
            httponly=True,
            samesite="strict",
        )
