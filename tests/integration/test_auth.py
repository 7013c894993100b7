"""Authentication over HTTP: bearer tokens, scopes, the token endpoint and the JWKS."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwk, jwt
from joserfc.jwk import ECKey

from tests.harness import System, assert_problem

pytestmark = pytest.mark.integration

EVENT = {"type": "demo.echo", "payload": {"n": 1}}


@pytest.fixture(scope="module")
def tenant(system: System) -> dict[str, Any]:
    return system.admin_client("auth-tenant")


@pytest.fixture(scope="module")
def http(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.base_url, timeout=30) as client:
        yield client


class Forger:
    """Builds access tokens the way the gateway does, so each test can break one thing."""

    def __init__(self, key: ECKey, subject: str) -> None:
        self.key = key
        self.subject = subject
        self.now = int(time.time())

    def sign(
        self, key: ECKey | None = None, header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        key = key or self.key
        body = {
            "iss": "seriatim",
            "sub": self.subject,
            "aud": "seriatim",
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + 600,
            "jti": str(uuid.uuid4()),
            "scope": "events:write events:read",
            **claims,
        }
        full_header = {"alg": "ES256", "kid": self.key.kid, "typ": "at+jwt", **(header or {})}
        return jwt.encode(full_header, body, key, algorithms=["ES256"])

    def unsigned(self) -> str:
        _, body, _ = self.sign().split(".")
        none = {"alg": "none", "kid": self.key.kid, "typ": "at+jwt"}
        return f"{_b64(json.dumps(none).encode())}.{body}."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture(scope="module")
def forger(system: System, tenant: dict[str, Any]) -> Forger:
    """A forger holding the gateway's own signing key, read from its database."""
    [row] = system.sql("SELECT private_jwk FROM signing_keys")
    private = row["private_jwk"]
    key = jwk.import_key(json.loads(private) if isinstance(private, str) else private)
    assert isinstance(key, ECKey)
    return Forger(key, tenant["client_id"])


def stranger() -> ECKey:
    return ECKey.generate_key("P-256", private=True, auto_kid=True)


def assert_invalid_token(response: httpx.Response) -> None:
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def events_of(system: System, tenant: dict[str, Any]) -> int:
    query = "SELECT count(*) FROM events WHERE client_id = $1::uuid"
    return int(system.sql(query, tenant["client_id"])[0][0])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- bearer tokens on /v1 routes ----------------------------------------------------------------

FORGED: dict[str, Callable[[Forger], str]] = {
    "expired": lambda f: f.sign(iat=f.now - 7200, nbf=f.now - 7200, exp=f.now - 3600),
    "unsigned-alg-none": lambda f: f.unsigned(),
    "signed-by-another-key": lambda f: f.sign(key=stranger()),
    "signed-by-another-key-with-our-kid": lambda f: f.sign(
        key=ECKey.import_key(stranger().as_dict(private=True) | {"kid": f.key.kid})
    ),
    "wrong-audience": lambda f: f.sign(aud="another-api"),
    "wrong-issuer": lambda f: f.sign(iss="https://issuer.example"),
    "typ-JWT": lambda f: f.sign(header={"typ": "JWT"}),
    "not-yet-valid": lambda f: f.sign(nbf=f.now + 3600),
}


def test_a_token_forged_like_the_gateways_own_is_accepted(
    http: httpx.Client, forger: Forger
) -> None:
    # The positive control for the forgeries below: each differs from this in one thing only
    assert http.get("/v1/events", headers=bearer(forger.sign())).status_code == 200


@pytest.mark.parametrize("forgery", FORGED)
@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/events"), ("POST", "/v1/events")])
def test_a_bad_token_is_rejected_with_401(
    system: System,
    tenant: dict[str, Any],
    http: httpx.Client,
    forger: Forger,
    forgery: str,
    method: str,
    path: str,
) -> None:
    response = http.request(method, path, json=EVENT, headers=bearer(FORGED[forgery](forger)))

    assert_invalid_token(response)
    assert events_of(system, tenant) == 0


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param("BearerXYZ", id="no-space-after-scheme"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("Token abc", id="other-scheme"),
        pytest.param("Bearer not-a-jwt", id="not-a-jwt"),
        pytest.param("Bearer a.b.c", id="three-garbage-segments"),
    ],
)
def test_a_missing_or_malformed_authorization_is_rejected_with_401(
    http: httpx.Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    assert_invalid_token(http.get("/v1/events", headers=headers))


@pytest.mark.parametrize(
    ("scope", "method", "path"),
    [
        ("events:read", "POST", "/v1/events"),
        ("events:write", "GET", "/v1/events"),
        ("events:write", "GET", "/v1/mailbox"),
    ],
)
def test_a_valid_token_without_the_needed_scope_is_a_403(
    system: System, tenant: dict[str, Any], http: httpx.Client, scope: str, method: str, path: str
) -> None:
    token = system.token(tenant, scope=scope)

    response = http.request(method, path, json=EVENT, headers=bearer(token))

    assert_problem(response, 403)
    assert events_of(system, tenant) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/admin/clients"),
        ("GET", "/v1/admin/mailboxes"),
        ("GET", "/v1/admin/mailboxes/{client_id}"),
        ("POST", "/v1/admin/mailboxes/{client_id}/resume"),
    ],
)
def test_an_ordinary_client_is_forbidden_the_admin_routes(
    system: System, tenant: dict[str, Any], http: httpx.Client, method: str, path: str
) -> None:
    clients_before = system.sql("SELECT count(*) FROM clients")[0][0]

    response = http.request(
        method,
        path.format(client_id=tenant["client_id"]),
        json={"name": "sneaky", "admin": True},
        headers=bearer(system.token(tenant)),
    )

    assert_problem(response, 403)
    assert system.sql("SELECT count(*) FROM clients")[0][0] == clients_before


# --- the token endpoint ---------------------------------------------------------------------


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")


def token_request(
    http: httpx.Client, authorization: str | None = None, **form: str
) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return http.post(
        "/v1/token", data={"grant_type": "client_credentials", **form}, headers=headers
    )


def test_credentials_as_basic_auth_get_a_bearer_token(
    http: httpx.Client, tenant: dict[str, Any]
) -> None:
    response = token_request(http, basic(tenant["client_id"], tenant["client_secret"]))

    assert response.status_code == 200, response.text
    grant = response.json()
    assert grant["token_type"] == "Bearer"
    assert grant["expires_in"] == 3600
    assert grant["scope"].split() == ["events:write", "events:read"]
    assert response.headers["cache-control"] == "no-store"
    assert http.get("/v1/events", headers=bearer(grant["access_token"])).status_code == 200


def test_credentials_as_form_fields_get_a_token_with_the_requested_scope(
    http: httpx.Client, tenant: dict[str, Any]
) -> None:
    response = token_request(
        http,
        client_id=tenant["client_id"],
        client_secret=tenant["client_secret"],
        scope="events:read",
    )

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "events:read"


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(lambda t: basic(t["client_id"], "wrong-secret"), id="bad-secret"),
        pytest.param(lambda t: basic(str(uuid.uuid4()), t["client_secret"]), id="unknown-client"),
        pytest.param(lambda t: basic("not-a-uuid", t["client_secret"]), id="client-id-not-a-uuid"),
        pytest.param(lambda t: "Basic !!!not-base64!!!", id="basic-not-base64"),
        pytest.param(lambda t: "Basic " + base64.b64encode(b"no-colon").decode(), id="no-colon"),
        pytest.param(lambda t: basic(t["client_id"], ""), id="empty-secret"),
        pytest.param(lambda t: "Bearer " + t["client_secret"], id="not-basic"),
    ],
)
def test_bad_client_credentials_are_a_401_invalid_client(
    http: httpx.Client, tenant: dict[str, Any], authorization: Callable[[dict[str, Any]], str]
) -> None:
    response = token_request(http, authorization(tenant))

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


def test_a_bad_secret_in_form_fields_is_a_401_invalid_client(
    http: httpx.Client, tenant: dict[str, Any]
) -> None:
    response = token_request(http, client_id=tenant["client_id"], client_secret="wrong")

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", ""])
def test_a_grant_type_other_than_client_credentials_is_a_400(
    http: httpx.Client, tenant: dict[str, Any], grant_type: str
) -> None:
    response = http.post(
        "/v1/token",
        data={"grant_type": grant_type},
        auth=(tenant["client_id"], tenant["client_secret"]),
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("scope", ["admin", "events:delete", "events:read admin"])
def test_a_scope_beyond_the_clients_rights_is_a_400_invalid_scope(
    http: httpx.Client, tenant: dict[str, Any], scope: str
) -> None:
    response = token_request(http, basic(tenant["client_id"], tenant["client_secret"]), scope=scope)

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_scope"


# --- the JWKS ----------------------------------------------------------------------------------


def test_the_jwks_lists_the_public_signing_key_only(http: httpx.Client, forger: Forger) -> None:
    response = http.get("/.well-known/jwks.json")

    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert "d" not in key
    assert key["kid"] == forger.key.kid
    ours = forger.key.as_dict(private=True)
    assert {name: key[name] for name in ("kty", "crv", "x", "y")} == {
        name: ours[name] for name in ("kty", "crv", "x", "y")
    }
