"""JWT hardening (RFC 8725) against a running gateway: every forged token is a 401, header
keys are never fetched, signing keys rotate by `kid`, weak key files stop the start."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwk, jwt
from joserfc.jwk import ECKey, OctKey

from gateway.tokens import keys_in_use
from tests.harness import System, assert_problem, free_port, wait_for
from tests.security.conftest import Tenant

pytestmark = pytest.mark.integration


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class KeyServer:
    """A local HTTP server that would hand out an attacker's JWKS, and counts its visitors."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.requests: list[str] = []
        body = json.dumps(jwks).encode()
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def attacker() -> ECKey:
    return ECKey.generate_key("P-256", private=True, auto_kid=True)


@pytest.fixture(scope="module")
def key_server(attacker: ECKey) -> Iterator[KeyServer]:
    server = KeyServer({"keys": [attacker.as_dict(private=False)]})
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway_key(system: System) -> ECKey:
    [row] = system.sql("SELECT private_jwk FROM signing_keys")
    private = row["private_jwk"]
    key = jwk.import_key(json.loads(private) if isinstance(private, str) else private)
    assert isinstance(key, ECKey)
    return key


class Forge:
    def __init__(self, key: ECKey, subject: str) -> None:
        self.key, self.subject, self.now = key, subject, int(time.time())

    def claims(self, **changes: Any) -> dict[str, Any]:
        values = {
            "iss": "seriatim",
            "sub": self.subject,
            "aud": "seriatim",
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + 600,
            "jti": str(uuid.uuid4()),
            "scope": "events:write events:read admin",
            **changes,
        }
        return {name: value for name, value in values.items() if value is not None}

    def sign(
        self, key: ECKey | None = None, header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        key = key or self.key
        full = {"alg": "ES256", "kid": key.kid, "typ": "at+jwt", **(header or {})}
        return jwt.encode(full, self.claims(**claims), key, algorithms=["ES256"])

    def hmac_with(self, secret: bytes) -> str:
        header = {"alg": "HS256", "kid": self.key.kid, "typ": "at+jwt"}
        signing_input = (
            f"{b64(json.dumps(header).encode())}.{b64(json.dumps(self.claims()).encode())}"
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    def unsigned(self) -> str:
        header = {"alg": "none", "kid": self.key.kid, "typ": "at+jwt"}
        return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(self.claims()).encode())}."


@pytest.fixture(scope="module")
def forge(gateway_key: ECKey, mallory: Tenant) -> Forge:
    return Forge(gateway_key, mallory.id)


FORGED: dict[str, Callable[[Forge], str]] = {
    "alg-none": lambda f: f.unsigned(),
    "HS256-keyed-with-the-public-PEM": lambda f: f.hmac_with(f.key.as_pem(private=False)),
    "HS256-keyed-with-the-public-JWK": lambda f: f.hmac_with(
        json.dumps(f.key.as_dict(private=False)).encode()
    ),
    "missing-exp": lambda f: f.sign(exp=None),
    "nbf-in-the-future": lambda f: f.sign(nbf=f.now + 3600),
    "wrong-iss": lambda f: f.sign(iss="https://evil.example"),
    "wrong-aud": lambda f: f.sign(aud="another-api"),
    "typ-JWT": lambda f: f.sign(header={"typ": "JWT"}),
    "typ-missing": lambda f: jwt.encode(
        {"alg": "ES256", "kid": f.key.kid}, f.claims(), f.key, algorithms=["ES256"]
    ),
}


@pytest.mark.parametrize("forgery", FORGED.values(), ids=FORGED.keys())
def test_a_forged_token_is_a_401(
    system: System, forge: Forge, forgery: Callable[[Forge], str]
) -> None:
    response = httpx.get(
        f"{system.base_url}/v1/mailbox", headers={"Authorization": f"Bearer {forgery(forge)}"}
    )

    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_the_gateways_own_key_passes_the_same_checks(system: System, forge: Forge) -> None:
    # The positive control: the forge builds tokens the gateway accepts when nothing is broken
    response = httpx.get(
        f"{system.base_url}/v1/mailbox", headers={"Authorization": f"Bearer {forge.sign()}"}
    )

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("kid_of", ["attacker", "gateway"])
def test_jku_x5u_and_jwk_headers_are_never_fetched_nor_used(
    system: System, forge: Forge, attacker: ECKey, key_server: KeyServer, kid_of: str
) -> None:
    # Given a token signed by the attacker, whose header points at the attacker's key three ways
    kid = attacker.kid if kid_of == "attacker" else forge.key.kid
    header = {
        "kid": kid,
        "jku": key_server.url,
        "x5u": key_server.url.replace("jwks.json", "cert.pem"),
        "jwk": attacker.as_dict(private=False),
    }
    signer = ECKey.import_key(attacker.as_dict(private=True) | {"kid": kid})
    token = forge.sign(key=signer, header=header)

    response = httpx.get(
        f"{system.base_url}/v1/mailbox", headers={"Authorization": f"Bearer {token}"}
    )

    assert_problem(response, 401)
    assert key_server.requests == []


# --- rotation ---------------------------------------------------------------------------------


def kids(system: System, url: str | None = None) -> set[str]:
    keys = httpx.get(f"{url or system.base_url}/.well-known/jwks.json").json()["keys"]
    return {key["kid"] for key in keys}


def header_kid(token: str) -> str:
    encoded = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(encoded + "==="))["kid"])


def test_a_rotated_key_signs_new_tokens_and_old_tokens_stay_valid(
    system: System, mallory: Tenant
) -> None:
    # Given a second gateway on the same journal, started before the rotation
    port = free_port()
    second = system.spawn("gateway-2", "gateway", "--port", str(port))
    other = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(other), 30, "the second gateway")
    try:
        old_token, old_kids = mallory.token, kids(system)
        admin = system.token(system.create_client("key-admin", admin=True))

        # When an operator rotates the signing key
        response = httpx.post(
            f"{system.base_url}/v1/admin/signing-keys",
            headers={"Authorization": f"Bearer {admin}"},
        )

        # Then the JWKS lists the old and the new key, and new tokens carry the new kid
        assert response.status_code == 201, response.text
        new_kid = response.json()["kid"]
        assert kids(system) == {*old_kids, new_kid}
        new_token = system.token(mallory.credentials)
        assert header_kid(new_token) == new_kid != header_kid(old_token)
        # Both tokens are accepted, here and by the gateway that has not seen the rotation
        for base in (system.base_url, other):
            for token in (old_token, new_token):
                got = httpx.get(f"{base}/v1/mailbox", headers={"Authorization": f"Bearer {token}"})
                assert got.status_code == 200, (base, got.text)
        assert kids(system, other) == {*old_kids, new_kid}

        # When the key is rotated again and the second gateway is shown no token of the new key
        newest = httpx.post(
            f"{system.base_url}/v1/admin/signing-keys",
            headers={"Authorization": f"Bearer {admin}"},
        ).json()["kid"]

        # Then it still starts signing with it within its refresh period
        def signed_by_the_second_gateway() -> str | None:
            grant = httpx.post(
                f"{other}/v1/token",
                data={"grant_type": "client_credentials"},
                auth=(mallory.credentials["client_id"], mallory.credentials["client_secret"]),
            )
            return header_kid(grant.json()["access_token"])

        wait_for(
            lambda: signed_by_the_second_gateway() == newest, 40, "the second gateway's reload"
        )
    finally:
        second.terminate()
        second.wait(30)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_rotation_needs_the_admin_scope(system: System, mallory: Tenant) -> None:
    before = system.sql("SELECT count(*) FROM signing_keys")[0][0]

    response = mallory.http.post("/v1/admin/signing-keys")

    assert_problem(response, 403)
    assert system.sql("SELECT count(*) FROM signing_keys")[0][0] == before


def test_a_key_retires_once_every_token_it_signed_has_expired() -> None:
    now = datetime.datetime.now(datetime.UTC)
    ago = lambda seconds: now - datetime.timedelta(seconds=seconds)  # noqa: E731
    keep_for = datetime.timedelta(seconds=3630)
    rows = [
        ("k1", {"kid": "k1"}, ago(90000)),
        ("k2", {"kid": "k2"}, ago(4000)),  # k1 stopped signing 4,000 s ago: retired
        ("k3", {"kid": "k3"}, ago(60)),  # k2 stopped signing 60 s ago: still verifies
    ]

    assert [key["kid"] for key in keys_in_use(rows, keep_for)] == ["k2", "k3"]
    assert [key["kid"] for key in keys_in_use(rows[:1], keep_for)] == ["k1"]


# --- key files ----------------------------------------------------------------------------------


def _weak_keys(tmp: Path) -> dict[str, Path]:
    files = {
        "hmac-secret-as-text": b"secret",
        "hmac-key-as-jwk": json.dumps(OctKey.generate_key(256).as_dict(private=True)).encode(),
        "rsa-1024": rsa.generate_private_key(65537, 1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "public-key-only": ECKey.generate_key("P-256").as_pem(private=False),
        "empty": b"",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp / f"{name}.key"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize(
    "name", ["hmac-secret-as-text", "hmac-key-as-jwk", "rsa-1024", "public-key-only", "empty"]
)
def test_the_gateway_refuses_to_start_with_a_weak_or_unusable_key_file(
    database: str, tmp_path: Path, name: str
) -> None:
    path = _weak_keys(tmp_path)[name]
    env = {
        **os.environ,
        "SERIATIM_DATABASE_URL": database,
        "SERIATIM_JWT_KEY_FILE": str(path),
        "SERIATIM_HTTP_PORT": str(free_port()),
    }

    run = subprocess.run(
        [sys.executable, "-m", "seriatim", "gateway"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert run.returncode != 0
    assert b"SERIATIM_JWT_KEY_FILE" in run.stdout + run.stderr, run.stderr[-2000:]
