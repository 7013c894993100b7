"""Access tokens: signing keys, issuing and verifying JWTs (algorithm pinned, RFC 8725)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import itertools
import json
import logging
import math
import time
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from joserfc import jwk, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from actors.outages import UNAVAILABLE
from actors.settings import Settings
from actors.store import Journal
from gateway.problems import Problem

log = logging.getLogger(__name__)

ORDINARY_SCOPES = ("events:write", "events:read")
ADMIN_SCOPE = "admin"
TOKEN_TYPE = "at+jwt"  # RFC 9068
LEEWAY = 30
#: Tokens verified lately, so that a client's next request (a rate-limited one included) costs
#: a dict lookup instead of a signature check (~150 µs for ES256). Forged tokens still pay it.
VERIFIED_CACHE = 10_000
KEY_RELOAD_INTERVAL = 1.0  # at most one signing-key reload per this many seconds
#: Every gateway reloads the signing keys this often, so that a rotation made through another
#: gateway reaches it (it signs with the new key, and retires the old one on time).
KEY_REFRESH_PERIOD = 15.0
_ALGORITHMS = {
    ("EC", "P-256"): "ES256",
    ("EC", "P-384"): "ES384",
    ("RSA", None): "RS256",
    ("OKP", "Ed25519"): "EdDSA",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    client_id: uuid.UUID
    scopes: frozenset[str]
    issued_at: float = 0.0  # the token's `iat`

    @property
    def admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


class TokenService:
    """Signs access tokens with the newest key and verifies them against all known keys."""

    def __init__(self, settings: Settings, keys: list[Any]) -> None:
        self._settings = settings
        self._kids: frozenset[str] = frozenset()
        self._verified: dict[str, tuple[Principal, float]] = {}  # token -> (caller, until)
        self.use(keys)
        self._registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY,
            iss={"essential": True, "value": settings.jwt_issuer},
            aud={"essential": True, "value": settings.jwt_audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
        )

    def use(self, keys: list[Any]) -> None:
        """Verify with all of `keys` (oldest first) and sign with the newest."""
        self._signing = keys[-1]
        self._algorithm = _algorithm(self._signing)
        self._keys = KeySet(keys)
        kids = frozenset(str(key.kid) for key in keys)
        if kids != self._kids:  # a reload of the same keys keeps the cache
            self._verified = {}
        self._kids = kids

    def knows_key_of(self, token: str) -> bool:
        """False when the token names a `kid` this service does not hold (yet)."""
        kid = _kid_of(token)
        return kid is None or kid in self._kids

    def jwks(self) -> dict[str, Any]:
        return dict(self._keys.as_dict(private=False))

    def issue(
        self,
        client_id: uuid.UUID,
        scopes: list[str],
        not_before: datetime.datetime | None = None,
    ) -> dict[str, Any]:
        """A token for the client; its `iat` is no earlier than `not_before` (the client's
        tokens issued before that are revoked), which lies at most a second ahead."""
        now = int(time.time())
        if not_before is not None:
            now = max(now, math.ceil(not_before.timestamp()))
        claims = {
            "iss": self._settings.jwt_issuer,
            "sub": str(client_id),
            "aud": self._settings.jwt_audience,
            "iat": now,
            "nbf": now,
            "exp": now + self._settings.token_ttl,
            "jti": str(uuid.uuid4()),
            "scope": " ".join(scopes),
        }
        header = {"alg": self._algorithm, "kid": self._signing.kid, "typ": TOKEN_TYPE}
        token = jwt.encode(header, claims, self._signing, algorithms=[self._algorithm])
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self._settings.token_ttl,
            "scope": claims["scope"],
        }

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises Problem(401) for anything else."""
        hit = self._verified.get(token)
        if hit is not None:
            if time.time() < hit[1]:
                return hit[0]
            del self._verified[token]
        caller, expires = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (caller, expires + LEEWAY)
        return caller

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            decoded = jwt.decode(token, self._keys, algorithms=[self._algorithm])
            if decoded.header.get("typ") != TOKEN_TYPE:
                raise invalid_token("the token is not a seriatim access token")
            self._registry.validate(decoded.claims)
            self._check_lifetime(decoded.claims)
            scope = decoded.claims.get("scope", "")
            if not isinstance(scope, str):
                raise invalid_token("the token's scope claim is malformed")
            caller = Principal(
                uuid.UUID(decoded.claims["sub"]),
                frozenset(scope.split()),
                float(decoded.claims["iat"]),
            )
            return caller, float(decoded.claims["exp"])
        except (JoseError, ValueError, TypeError, KeyError, RecursionError) as error:
            raise invalid_token(f"the access token is invalid: {_reason(error)}") from None

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """Refuse a token meant to live longer than this deployment issues them, or issued
        in the future: a leaked signing key must not mint tokens valid for decades."""
        issued, expires = _time(claims.get("iat")), _time(claims.get("exp"))
        if issued is None or expires is None:
            raise invalid_token("the access token is invalid: 'iat' and 'exp' must be numbers")
        if issued > time.time() + LEEWAY:
            raise invalid_token("the access token is invalid: it was issued in the future")
        if expires - issued > self._settings.token_ttl + LEEWAY:
            raise invalid_token("the access token lives longer than this gateway issues them")


def _time(value: Any) -> float | None:
    """A NumericDate claim's value; None when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer past a float's range: no date at all
        return None
    return seconds if math.isfinite(seconds) else None


def _kid_of(token: str) -> str | None:
    """The `kid` of a token's header, unverified; None when there is none to read.

    Only `kid` is ever read from a header: `jku`, `x5u` and `jwk` name keys the sender
    chose, and are never fetched nor used (RFC 8725 section 3.10).
    """
    encoded = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, RecursionError):  # not base64, not JSON, or JSON nested too deep
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _reason(error: Exception) -> str:
    return getattr(error, "description", None) or getattr(error, "error", None) or "malformed"


def invalid_token(detail: str) -> Problem:
    return Problem(
        401, "invalid-token", detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


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
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as error:
            raise ValueError(f"SERIATIM_JWT_KEY_FILE cannot be read: {error}") from None
        key = _import_private_key(data)
        return TokenService(settings, [key])
    return TokenService(settings, await journal_keys(settings, journal))


async def journal_keys(settings: Settings, journal: Journal) -> list[Any]:
    """The journal's signing keys still in use, oldest first (a P-256 key made if none)."""
    rows, revoked = await journal.ensure_signing_key(_new_key)
    keep_for = datetime.timedelta(seconds=settings.token_ttl + LEEWAY)
    return [jwk.import_key(private) for private in keys_in_use(rows, keep_for, revoked)]


class KeyRefresh:
    """Reloads the journal's signing keys into the token service: another gateway may have
    rotated them (it signs with the new key, and retires the old one on time)."""

    def __init__(self, settings: Settings, journal: Journal, tokens: TokenService) -> None:
        self._settings = settings
        self._journal = journal
        self._tokens = tokens
        self._loaded = float("-inf")

    async def refresh(self, *, now: bool = False) -> None:
        """Reload the keys; without `now`, at most once per KEY_RELOAD_INTERVAL, so tokens
        with unknown kids cost little. Keys from SERIATIM_JWT_KEY_FILE are never reloaded."""
        if self._settings.jwt_key_file:
            return
        clock = asyncio.get_running_loop().time()
        if not now and clock - self._loaded < KEY_RELOAD_INTERVAL:
            return
        self._loaded = clock
        self._tokens.use(await journal_keys(self._settings, self._journal))

    async def run(self, stopping: asyncio.Event) -> None:
        """Reload the keys every KEY_REFRESH_PERIOD until `stopping` is set."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), KEY_REFRESH_PERIOD)
            if stopping.is_set():
                return
            try:
                await self.refresh(now=True)
            except UNAVAILABLE as error:
                log.warning("could not reload the signing keys: %s", error)


def keys_in_use(
    rows: Sequence[tuple[str, dict[str, Any], datetime.datetime]],
    keep_for: datetime.timedelta,
    revoked: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The newest key, and each older one that may have signed a token still valid: a key
    stopped signing when its successor was made, so it retires `keep_for` after that. A key
    in `revoked` is left out at once (the newest is never revoked)."""
    now = datetime.datetime.now(datetime.UTC)
    older = [
        private
        for (kid, private, _), (_, _, successor_made) in itertools.pairwise(rows)
        if now - successor_made < keep_for and kid not in revoked
    ]
    return [*older, rows[-1][1]]


def new_signing_key() -> tuple[str, dict[str, Any]]:
    """A fresh P-256 key as (kid, private JWK)."""
    return _new_key()


def _import_private_key(data: bytes) -> Any:
    for key_type in ("EC", "RSA", "OKP"):
        try:
            key = jwk.import_key(data, key_type)
        except (JoseError, ValueError, TypeError):
            continue
        if not key.is_private:
            raise ValueError("SERIATIM_JWT_KEY_FILE holds a public key; a private key is needed")
        if key.key_type == "RSA" and getattr(key.raw_value, "key_size", 0) < 2048:
            raise ValueError("SERIATIM_JWT_KEY_FILE: RSA keys must have at least 2048 bits")
        key.ensure_kid()
        _algorithm(key)
        return key
    raise ValueError("SERIATIM_JWT_KEY_FILE is not a PEM private key (EC, RSA or Ed25519)")


def _new_key() -> tuple[str, dict[str, Any]]:
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    return str(key.kid), dict(key.as_dict(private=True))
