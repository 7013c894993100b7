"""Revocation against a running gateway: tokens cannot outlive the configured TTL, clients can
be disabled and their secrets rotated, and what is taken away stops working within the stated
bound."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from joserfc import jwk, jwt
from joserfc.jwk import ECKey

from tests.harness import System, assert_problem

pytestmark = pytest.mark.integration

TTL = 3600  # SERIATIM_TOKEN_TTL's default, which the `system` fixture runs with


def signing_key(system: System) -> ECKey:
    [row] = system.sql("SELECT private_jwk FROM signing_keys ORDER BY created_at DESC LIMIT 1")
    private = row["private_jwk"]
    key = jwk.import_key(json.loads(private) if isinstance(private, str) else private)
    assert isinstance(key, ECKey)
    return key


def minted(key: ECKey, subject: str, **changes: Any) -> str:
    """A token signed with the gateway's own key (as a leaked key would sign it)."""
    now = int(time.time())
    claims = {
        "iss": "seriatim",
        "sub": subject,
        "aud": "seriatim",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "scope": "events:write events:read admin",
        **changes,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    header = {"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}
    return jwt.encode(header, claims, key, algorithms=["ES256"])


def events_with(system: System, token: str) -> httpx.Response:
    return httpx.get(
        f"{system.base_url}/v1/events", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_a_token_living_longer_than_the_ttl_is_refused_though_correctly_signed(
    system: System,
) -> None:
    """Before: only `exp` was checked, so a leaked key minted tokens valid for decades (200),
    and one whose `iat` lay years ahead lived as long (200)."""
    key, client = signing_key(system), system.create_client("long-lived")
    now = int(time.time())
    assert events_with(system, minted(key, client["client_id"], exp=now + TTL)).status_code == 200
    for token in (
        minted(key, client["client_id"], exp=now + 30 * 365 * 86400),
        minted(key, client["client_id"], iat=now - 86400, exp=now + TTL),
        minted(
            key,
            client["client_id"],
            iat=now + 10 * 365 * 86400,
            nbf=None,
            exp=now + 10 * 365 * 86400 + TTL,
        ),
        minted(key, client["client_id"], iat=None),
    ):
        problem = assert_problem(events_with(system, token), 401)
        assert problem["type"].endswith("invalid-token")
