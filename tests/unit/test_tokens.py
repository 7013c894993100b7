"""TokenService on its own: issuing and verifying access tokens with a generated key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from actors.settings import Settings
from gateway.problems import Problem
from gateway.tokens import LEEWAY, TokenService

CLIENT = uuid.UUID("0b7c6f1e-3a57-4c1e-9a59-6b0c2d5e8f10")


@pytest.fixture
def key() -> ECKey:
    return ECKey.generate_key("P-256", private=True, auto_kid=True)


@pytest.fixture
def tokens(key: ECKey) -> TokenService:
    return TokenService(Settings(), [key])


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for CLIENT; a change to None drops the claim."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": "seriatim",
        "sub": str(CLIENT),
        "aud": "seriatim",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "scope": "events:write events:read",
    }
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


def sign(key: ECKey, body: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        {"alg": "ES256", "kid": key.kid, "typ": "at+jwt", **header},
        body,
        key,
        algorithms=["ES256"],
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segments(header: dict[str, Any], body: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"


def assert_rejected(tokens: TokenService, token: str) -> Problem:
    with pytest.raises(Problem) as raised:
        tokens.verify(token)
    assert raised.value.status == 401
    assert raised.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    return raised.value


def test_an_issued_token_verifies_as_its_client_with_its_scopes(tokens: TokenService) -> None:
    grant = tokens.issue(CLIENT, ["events:write", "events:read"])

    caller = tokens.verify(grant["access_token"])

    assert caller.client_id == CLIENT
    assert caller.scopes == {"events:write", "events:read"}
    assert not caller.admin
    assert grant["token_type"] == "Bearer"
    assert grant["expires_in"] == 3600
    assert grant["scope"] == "events:write events:read"


def test_an_issued_token_carries_the_claims_and_header_of_the_contract(
    tokens: TokenService, key: ECKey
) -> None:
    token = tokens.issue(CLIENT, ["admin"])["access_token"]

    decoded = jwt.decode(token, key, algorithms=["ES256"])

    assert decoded.header == {"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}
    assert {"iss", "sub", "aud", "exp", "iat", "jti", "scope"} <= set(decoded.claims)
    assert decoded.claims["sub"] == str(CLIENT)
    assert tokens.verify(token).admin


def test_a_token_built_like_an_issued_one_is_accepted(tokens: TokenService, key: ECKey) -> None:
    # The positive control for the forged tokens below: only their one flaw differs.
    assert tokens.verify(sign(key, claims())).client_id == CLIENT


def test_a_token_expired_within_the_leeway_is_still_accepted(
    tokens: TokenService, key: ECKey
) -> None:
    now = int(time.time())
    token = sign(key, claims(iat=now - 600, nbf=now - 600, exp=now - LEEWAY // 3))

    assert tokens.verify(token).client_id == CLIENT


def test_a_verified_token_is_not_checked_again_until_it_expires(
    tokens: TokenService, key: ECKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a token verified once
    now = int(time.time())
    token = sign(key, claims(iat=now, nbf=now, exp=now + 60))
    first = tokens.verify(token)
    checks = []
    original = tokens._verify
    monkeypatch.setattr(tokens, "_verify", lambda t: checks.append(t) or original(t))

    # When it is presented again, Then it is the same caller without a second check
    assert tokens.verify(token) == first
    assert checks == []

    # And once past its expiry (and the leeway) it is checked again, and refused
    monkeypatch.setattr(time, "time", lambda: now + 60 + LEEWAY + 1)
    assert_rejected(tokens, token)
    assert checks == [token]


def test_new_keys_forget_the_tokens_verified_with_the_old_ones(
    tokens: TokenService, key: ECKey
) -> None:
    token = sign(key, claims())
    tokens.verify(token)

    tokens.use([ECKey.generate_key("P-256", parameters={"kid": "other"})])

    assert_rejected(tokens, token)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": -(LEEWAY + 60), "iat": -3600, "nbf": -3600}, id="expired"),
        pytest.param({"nbf": LEEWAY + 600}, id="not-yet-valid"),
        pytest.param({"iat": LEEWAY + 600}, id="issued-in-the-future"),
    ],
)
def test_a_token_outside_its_validity_period_is_rejected(
    tokens: TokenService, key: ECKey, changes: dict[str, int]
) -> None:
    now = int(time.time())
    token = sign(key, claims(**{name: now + offset for name, offset in changes.items()}))

    assert_rejected(tokens, token)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"iss": "https://issuer.example"}, id="wrong-issuer"),
        pytest.param({"aud": "another-api"}, id="wrong-audience"),
        pytest.param({"sub": "not-a-uuid"}, id="subject-not-a-client-id"),
        pytest.param({"scope": ["events:write"]}, id="scope-not-a-string"),
    ],
)
def test_a_token_with_a_wrong_claim_is_rejected(
    tokens: TokenService, key: ECKey, changes: dict[str, Any]
) -> None:
    assert_rejected(tokens, sign(key, claims(**changes)))


@pytest.mark.parametrize("missing", ["exp", "sub", "iss", "aud", "iat", "jti"])
def test_a_token_missing_an_essential_claim_is_rejected(
    tokens: TokenService, key: ECKey, missing: str
) -> None:
    assert_rejected(tokens, sign(key, claims(**{missing: None})))


@pytest.mark.parametrize("typ", ["JWT", "at+JWT2", None])
def test_a_token_that_is_not_typed_as_an_access_token_is_rejected(
    tokens: TokenService, key: ECKey, typ: str | None
) -> None:
    header = {"alg": "ES256", "kid": key.kid} | ({} if typ is None else {"typ": typ})

    token = jwt.encode(header, claims(), key, algorithms=["ES256"])

    assert_rejected(tokens, token)


def test_an_unsigned_alg_none_token_is_rejected(tokens: TokenService, key: ECKey) -> None:
    token = segments({"alg": "none", "kid": key.kid, "typ": "at+jwt"}, claims()) + "."

    assert_rejected(tokens, token)


def test_an_hs256_token_keyed_with_the_public_key_is_rejected(
    tokens: TokenService, key: ECKey
) -> None:
    # Given the classic algorithm confusion: HMAC with the public key as the shared secret
    public_pem = key.as_pem(private=False)
    signing_input = segments({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}, claims())
    mac = hmac.new(public_pem, signing_input.encode("ascii"), hashlib.sha256).digest()

    assert_rejected(tokens, f"{signing_input}.{b64(mac)}")


def test_a_token_signed_by_another_key_is_rejected(tokens: TokenService, key: ECKey) -> None:
    stranger = ECKey.generate_key("P-256", private=True)
    stranger_with_our_kid = ECKey.import_key(stranger.as_dict(private=True) | {"kid": key.kid})

    assert_rejected(tokens, sign(stranger, claims(), kid=stranger.thumbprint()))
    assert_rejected(tokens, sign(stranger_with_our_kid, claims()))


def test_a_token_with_a_tampered_payload_is_rejected(tokens: TokenService) -> None:
    # Given a genuine token whose payload is swapped for one granting admin
    header, _, signature = tokens.issue(CLIENT, ["events:read"])["access_token"].split(".")
    forged = b64(json.dumps(claims(scope="events:read admin")).encode())

    assert_rejected(tokens, f"{header}.{forged}.{signature}")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "...."])
def test_a_malformed_token_is_rejected(tokens: TokenService, token: str) -> None:
    assert_rejected(tokens, token)


def test_the_jwks_lists_only_public_key_material(tokens: TokenService, key: ECKey) -> None:
    (public,) = tokens.jwks()["keys"]

    assert "d" not in public
    assert public["kid"] == key.kid
    assert (public["kty"], public["crv"]) == ("EC", "P-256")
