"""OAuth 2.0 as third-party clients do it: RFC 8414 discovery, then authlib's own OAuth2 clients
fetching tokens with both client authentication methods and using them."""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client import OAuthError
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.harness import System

with warnings.catch_warnings():  # authlib nudges towards httpx2; the submitters use httpx
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client

pytestmark = pytest.mark.integration

METADATA = "/.well-known/oauth-authorization-server"


@pytest.fixture(scope="module")
def discovered(system: System) -> dict[str, Any]:
    response = httpx.get(system.base_url + METADATA, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_metadata_names_the_token_endpoint_keys_grants_and_methods(
    system: System, discovered: dict[str, Any]
) -> None:
    """Before the metadata route this is a 404."""
    assert discovered["token_endpoint"] == f"{system.base_url}/v1/token"
    assert discovered["jwks_uri"] == f"{system.base_url}/.well-known/jwks.json"
    assert discovered["grant_types_supported"] == ["client_credentials"]
    assert set(discovered["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    # authlib's RFC 8414 validators agree with every field they check. `issuer` is the token's
    # `iss` (not an https URL by default) and `response_types_supported` is honestly empty
    # (there is no authorization endpoint), which authlib's validators would refuse.
    checked = AuthorizationServerMetadata(discovered)
    for field in (
        "token_endpoint",
        "jwks_uri",
        "grant_types_supported",
        "token_endpoint_auth_methods_supported",
        "scopes_supported",
    ):
        getattr(checked, f"validate_{field}")()
    assert httpx.get(discovered["jwks_uri"], timeout=10).json()["keys"]


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlibs_client_fetches_a_token_with_either_method_and_uses_it(
    system: System, discovered: dict[str, Any], method: str
) -> None:
    credentials = system.admin_client(f"authlib-{method}")

    with OAuth2Client(
        credentials["client_id"],
        credentials["client_secret"],
        token_endpoint_auth_method=method,
        scope="events:read",
        timeout=10,
    ) as client:
        token = client.fetch_token(discovered["token_endpoint"], grant_type="client_credentials")
        mailbox = client.get(f"{system.base_url}/v1/mailbox")

    assert token["token_type"] == "Bearer"
    assert token["scope"] == "events:read"
    claims = jwt.decode(token["access_token"], _public_keys(discovered)).claims
    assert claims["iss"] == discovered["issuer"]
    assert claims["sub"] == credentials["client_id"]
    assert mailbox.status_code == 200, mailbox.text


async def test_authlibs_async_client_fetches_a_token_through_discovery(
    system: System, discovered: dict[str, Any]
) -> None:
    credentials = system.admin_client("authlib-async")

    async with AsyncOAuth2Client(
        credentials["client_id"], credentials["client_secret"], timeout=10
    ) as client:
        await client.fetch_token(discovered["token_endpoint"], grant_type="client_credentials")
        sent = await client.post(
            f"{system.base_url}/v1/events", json={"type": "demo.echo", "payload": {"n": 1}}
        )

    assert sent.status_code == 202, sent.text


def test_authlibs_client_gets_invalid_client_for_a_wrong_secret(
    system: System, discovered: dict[str, Any]
) -> None:
    credentials = system.admin_client("authlib-wrong")

    with (
        OAuth2Client(credentials["client_id"], "not-the-secret", timeout=10) as client,
        pytest.raises(OAuthError, match="invalid_client"),
    ):
        client.fetch_token(discovered["token_endpoint"], grant_type="client_credentials")


def _public_keys(discovered: dict[str, Any]) -> KeySet:
    return KeySet.import_key_set(httpx.get(discovered["jwks_uri"], timeout=10).json())
