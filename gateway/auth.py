"""Authentication: the OAuth2 client-credentials token endpoint and JWT access tokens."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from joserfc import jwk, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors.credentials import verify_secret
from actors.settings import Settings
from actors.store import Journal
from gateway.problems import MEDIA_TYPE, Problem

ORDINARY_SCOPES = ("events:write", "events:read")
ADMIN_SCOPE = "admin"
TOKEN_TYPE = "at+jwt"  # RFC 9068
LEEWAY = 30
_ALGORITHMS = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("RSA", None): "RS256",
               ("OKP", "Ed25519"): "EdDSA"}


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    client_id: uuid.UUID
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


class TokenService:
    """Signs access tokens with the newest key and verifies them against all known keys."""

    def __init__(self, settings: Settings, keys: list[Any]) -> None:
        self._settings = settings
        self._signing = keys[-1]
        self._algorithm = _algorithm(self._signing)
        self._keys = KeySet(keys)
        self._registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY,
            iss={"essential": True, "value": settings.jwt_issuer},
            aud={"essential": True, "value": settings.jwt_audience},
            exp={"essential": True}, iat={"essential": True},
            sub={"essential": True}, jti={"essential": True},
        )

    def jwks(self) -> dict[str, Any]:
        return dict(self._keys.as_dict(private=False))

    def issue(self, client_id: uuid.UUID, scopes: list[str]) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self._settings.jwt_issuer, "sub": str(client_id),
            "aud": self._settings.jwt_audience, "iat": now, "nbf": now,
            "exp": now + self._settings.token_ttl, "jti": str(uuid.uuid4()),
            "scope": " ".join(scopes),
        }
        header = {"alg": self._algorithm, "kid": self._signing.kid, "typ": TOKEN_TYPE}
        token = jwt.encode(header, claims, self._signing, algorithms=[self._algorithm])
        return {"access_token": token, "token_type": "Bearer",
                "expires_in": self._settings.token_ttl, "scope": claims["scope"]}

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises Problem(401) for anything else."""
        try:
            decoded = jwt.decode(token, self._keys, algorithms=[self._algorithm])
            if decoded.header.get("typ") != TOKEN_TYPE:
                raise _invalid_token("the token is not a seriatim access token")
            self._registry.validate(decoded.claims)
            scope = decoded.claims.get("scope", "")
            if not isinstance(scope, str):
                raise _invalid_token("the token's scope claim is malformed")
            return Principal(uuid.UUID(decoded.claims["sub"]), frozenset(scope.split()))
        except (JoseError, ValueError, TypeError, KeyError, binascii.Error) as error:
            raise _invalid_token(f"the access token is invalid: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    return getattr(error, "description", None) or getattr(error, "error", None) or "malformed"


def _invalid_token(detail: str) -> Problem:
    return Problem(401, "invalid-token", detail,
                   headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _algorithm(key: Any) -> str:
    curve = key.get("crv") if key.key_type in ("EC", "OKP") else None
    algorithm = _ALGORITHMS.get((key.key_type, curve))
    if algorithm is None:
        raise ValueError(f"unsupported signing key: {key.key_type} {curve or ''}".strip())
    return algorithm


async def load_tokens(settings: Settings, journal: Journal) -> TokenService:
    """Keys from SERIATIM_JWT_KEY_FILE, else the journal's (a P-256 key made on first start)."""
    if settings.jwt_key_file:
        path = Path(settings.jwt_key_file)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ValueError(f"SERIATIM_JWT_KEY_FILE cannot be read: {error}") from None
        key = _import_private_key(data)
        return TokenService(settings, [key])
    rows = await journal.ensure_signing_key(_new_key)
    return TokenService(settings, [jwk.import_key(private) for _, private in rows])


def _import_private_key(data: bytes) -> Any:
    for key_type in ("EC", "RSA", "OKP"):
        try:
            key = jwk.import_key(data, key_type)  # type: ignore[call-overload]
        except (JoseError, ValueError, TypeError):
            continue
        if not key.is_private:
            raise ValueError("SERIATIM_JWT_KEY_FILE holds a public key; a private key is needed")
        if key.key_type == "RSA" and key.raw_value.key_size < 2048:
            raise ValueError("SERIATIM_JWT_KEY_FILE: RSA keys must have at least 2048 bits")
        key.ensure_kid()
        _algorithm(key)
        return key
    raise ValueError("SERIATIM_JWT_KEY_FILE is not a PEM private key (EC, RSA or Ed25519)")


def _new_key() -> tuple[str, dict[str, Any]]:
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    return str(key.kid), dict(key.as_dict(private=True))


# --- request side --------------------------------------------------------------------------


def principal(request: Request, scope: str) -> Principal:
    """The caller of this request, who must hold `scope`; raises Problem 401/403."""
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise _invalid_token("an 'Authorization: Bearer <token>' header is required")
    tokens: TokenService = request.state.services.tokens
    caller = tokens.verify(token.strip())
    if scope not in caller.scopes:
        raise Problem(403, "insufficient-scope", f"this request needs the scope {scope!r}",
                      headers={"WWW-Authenticate":
                               f'Bearer error="insufficient_scope", scope="{scope}"'})
    return caller


def _oauth_error(status: int, error: str, description: str,
                 headers: dict[str, str] | None = None) -> Response:
    body = {"error": error, "error_description": description,
            "type": f"urn:seriatim:problem:oauth-{error.replace('_', '-')}",
            "title": "Unauthorized" if status == 401 else "Bad Request",
            "status": status, "detail": description}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE,
                        headers={"Cache-Control": "no-store", **(headers or {})})


async def token_endpoint(request: Request) -> Response:
    """POST /v1/token: the client-credentials grant (RFC 6749 section 4.4)."""
    services = request.state.services
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return _oauth_error(400, "invalid_request",
                            "the body must be application/x-www-form-urlencoded")
    body = await services.read_body(request, limit=8192)
    try:
        form = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the form body is malformed")
    if any(len(values) > 1 for values in form.values()):
        return _oauth_error(400, "invalid_request", "a form field is repeated")
    fields = {name: values[0] for name, values in form.items()}
    if fields.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type",
                            "only grant_type=client_credentials is supported")
    credentials = _client_credentials(request, fields)
    if credentials is None:
        return _oauth_error(401, "invalid_client", "client authentication failed",
                            {"WWW-Authenticate": 'Basic realm="seriatim"'})
    client_id, secret = credentials
    stored = await services.journal.credentials(client_id) if client_id else None
    valid = await asyncio.to_thread(verify_secret, stored.secret_hash if stored else None, secret)
    if not valid or stored is None:
        return _oauth_error(401, "invalid_client", "client authentication failed",
                            {"WWW-Authenticate": 'Basic realm="seriatim"'})
    allowed = [*ORDINARY_SCOPES, ADMIN_SCOPE] if stored.admin else list(ORDINARY_SCOPES)
    requested = fields.get("scope", "").split() or allowed
    if not set(requested) <= set(allowed):
        return _oauth_error(400, "invalid_scope",
                            f"this client may only request: {' '.join(allowed)}")
    grant = services.tokens.issue(stored.id, [s for s in allowed if s in requested])
    return JSONResponse(grant, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _client_credentials(request: Request, fields: dict[str, str]) -> tuple[uuid.UUID | None, str] | None:
    header = request.headers.get("authorization")
    if header:
        kind, _, encoded = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        raw_id, sep, secret = decoded.partition(":")
        if not sep:
            return None
    else:
        raw_id, secret = fields.get("client_id", ""), fields.get("client_secret", "")
    if not raw_id or not secret or len(secret) > 1024:
        return None
    try:
        return uuid.UUID(raw_id), secret
    except ValueError:
        return None, secret


async def jwks_endpoint(request: Request) -> Response:
    return JSONResponse(request.state.services.tokens.jwks(),
                        headers={"Cache-Control": "public, max-age=300"})


__all__ = ["Principal", "TokenService", "jwks_endpoint", "load_tokens", "principal",
           "token_endpoint"]
