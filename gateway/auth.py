"""Authentication of requests: bearer tokens, scopes and the OAuth2 token endpoint."""

from __future__ import annotations

import base64
import logging
import re
import uuid
from urllib.parse import parse_qs, unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors import logs
from actors.store import Credentials
from gateway import intake, operations
from gateway.problems import Problem
from gateway.services import Services, services_of
from gateway.tokens import (
    ADMIN_SCOPE,
    ORDINARY_SCOPES,
    Principal,
    TokenService,
    invalid_token,
)

log = logging.getLogger(__name__)

#: What a key id can be: printable ASCII without spaces.
KID = re.compile(r"[\x21-\x7e]{1,255}")


#: Where `Admission` leaves what it found of a request's bearer token (a Principal, or the
#: Problem that refuses the token), so that the route does not check the token again.
CALLER = "seriatim.caller"
TOKEN_FORM_LIMIT = 8192  # bytes of a token request's form body
FORM = "application/x-www-form-urlencoded"


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for any other header."""
    kind, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if kind.lower() == "bearer" and token else None


def caller_of(tokens: TokenService, header: str | None) -> Principal | Problem | None:
    """The verified caller of an `Authorization` header, or the Problem refusing its token;
    None when there is no bearer token, or its key is not known yet (`principal` reloads the
    keys then). No I/O: a token verified before is a dict lookup."""
    token = bearer_token(header)
    if token is None or not tokens.knows_key_of(token):
        return None
    try:
        return tokens.verify(token)
    except Problem as refused:
        return refused


async def principal(request: Request, scope: str) -> Principal:
    """The caller of this request, who must hold `scope`; raises Problem 401/403."""
    caller = request.scope.get(CALLER)
    if isinstance(caller, Problem):
        raise caller
    if not isinstance(caller, Principal):
        caller = await _verified_caller(request)
    logs.bind(client_id=caller.client_id)
    await services_of(request).revocations.check(caller)
    if scope not in caller.scopes:
        raise Problem(
            403,
            "insufficient-scope",
            f"this request needs the scope {scope!r}",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )
    return caller


async def _verified_caller(request: Request) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise invalid_token("an 'Authorization: Bearer <token>' header is required")
    services = services_of(request)
    if not services.tokens.knows_key_of(token):  # perhaps a key another gateway rotated in
        await services.keys.refresh()
    return services.tokens.verify(token)


def oauth_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> Problem:
    """An RFC 6749 section 5.2 error that is also a problem+json body."""
    return Problem(
        status,
        f"oauth-{error.replace('_', '-')}",
        description,
        headers={"Cache-Control": "no-store", **(headers or {})},
        error=error,
        error_description=description,
    )


def _invalid_client() -> Problem:
    return oauth_error(
        401,
        "invalid_client",
        "client authentication failed",
        {"WWW-Authenticate": 'Basic realm="seriatim"'},
    )


async def token_endpoint(request: Request) -> Response:
    """POST /v1/token: the client-credentials grant (RFC 6749 section 4.4)."""
    services = services_of(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        raise oauth_error(400, "invalid_request", f"the body must be {FORM}")
    body = await intake.read_body(
        request,
        services.settings,
        limit=TOKEN_FORM_LIMIT,
        within=services.settings.preauth_body_timeout,
    )
    fields = token_form(body)
    if fields.get("grant_type") != "client_credentials":
        raise oauth_error(
            400, "unsupported_grant_type", "only grant_type=client_credentials is supported"
        )
    credentials = client_credentials(request.headers.get("authorization"), fields)
    if credentials is None:
        raise _invalid_client()
    stored = await checked_client(services, _peer(request), *credentials)
    allowed = [*ORDINARY_SCOPES, ADMIN_SCOPE] if stored.admin else list(ORDINARY_SCOPES)
    requested = fields.get("scope", "").split() or allowed
    if not set(requested) <= set(allowed):
        raise oauth_error(
            400, "invalid_scope", f"this client may only request: {' '.join(allowed)}"
        )
    grant = services.tokens.issue(
        stored.id, [s for s in allowed if s in requested], stored.tokens_valid_after
    )
    return JSONResponse(grant, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _peer(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def checked_client(
    services: Services, peer: str, client_id: uuid.UUID | None, secret: str
) -> Credentials:
    """The client whose id and secret these are, rate-limited per peer and per client id like
    every credential check; raises Problem 401 (`invalid_client`), 400 for a disabled client,
    429 past a rate, 503 when the checks' pool is full."""
    checks = services.credential_checks
    checks.admit(peer, client_id)
    with checks.reserved():
        stored = await services.journal.credentials(client_id) if client_id else None
        valid = await checks.verify(stored.secret_hash if stored else None, secret)
    if not valid or stored is None:
        checks.failed(client_id)
        raise _invalid_client()
    # The check took a while: a rotation, a revocation or a disable committed meanwhile must
    # not be outlived by a token issued from what was read before it.
    if await services.journal.credentials(stored.id) != stored:
        raise _invalid_client()
    if stored.disabled:
        raise oauth_error(400, "unauthorized_client", "this client is disabled")
    return stored


def token_form(body: bytes) -> dict[str, str]:
    """The fields of a token request's form body; raises Problem 400 (`invalid_request`)."""
    try:
        form = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise oauth_error(400, "invalid_request", "the form body is malformed") from None
    if any(len(values) > 1 for values in form.values()):
        raise oauth_error(400, "invalid_request", "a form field is repeated")
    return {name: values[0] for name, values in form.items()}


def client_credentials(
    header: str | None, fields: dict[str, str]
) -> tuple[uuid.UUID | None, str] | None:
    """(client id, secret) from a Basic `Authorization` header, else from the form; None when
    they are missing or malformed. The id is None when it is not a UUID."""
    if header:
        kind, _, encoded = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, or non-ASCII text
            return None
        raw_id, sep, secret = decoded.partition(":")
        if not sep:
            return None
        raw_id, secret = unquote_plus(raw_id), unquote_plus(secret)  # RFC 6749 section 2.3.1
    else:
        raw_id, secret = fields.get("client_id", ""), fields.get("client_secret", "")
    if not raw_id or not secret or len(secret) > 1024:
        return None
    try:
        return uuid.UUID(raw_id), secret
    except ValueError:
        return None, secret


async def jwks_endpoint(request: Request) -> Response:
    return JSONResponse(
        services_of(request).tokens.jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


async def rotate_signing_key(request: Request) -> Response:
    """POST /v1/admin/signing-keys: a new key signs from now on; older keys keep verifying
    until every token they signed has expired."""
    caller = await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    if services.settings.jwt_key_file:
        raise _keys_from_file()
    kid = await operations.rotate_signing_key(services, caller.client_id)
    return JSONResponse({"kid": kid, "jwks": services.tokens.jwks()}, status_code=201)


async def revoke_signing_key(request: Request) -> Response:
    """DELETE /v1/admin/signing-keys/{kid}: the key verifies nothing from now on, so every
    token it signed is refused; a new key signs from now on."""
    caller = await principal(request, ADMIN_SCOPE)
    services = services_of(request)
    if services.settings.jwt_key_file:
        raise _keys_from_file()
    kid = request.path_params["kid"]
    if not KID.fullmatch(kid):  # a NUL byte, say, would reach PostgreSQL and fail there
        raise Problem(404, "not-found", "no such signing key, or it is revoked already")
    successor = await operations.revoke_signing_key(services, caller.client_id, kid)
    return JSONResponse({"revoked": kid, "kid": successor, "jwks": services.tokens.jwks()})


def _keys_from_file() -> Problem:
    return Problem(
        409,
        "keys-from-file",
        "the signing key comes from SERIATIM_JWT_KEY_FILE; rotate it by replacing the file",
    )
