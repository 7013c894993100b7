"""Revocation against a running gateway: tokens cannot outlive the configured TTL, clients can
be disabled and their secrets rotated, and what is taken away stops working within the stated
bound."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwk, jwt
from joserfc.jwk import ECKey

from tests.harness import System, assert_problem, running_system, wait_for
from tests.security.test_webhooks import Sender

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
        minted(key, client["client_id"], iat=10**400, nbf=None),  # past a float: was a 500
    ):
        problem = assert_problem(events_with(system, token), 401)
        assert problem["type"].endswith("invalid-token")


def test_a_key_id_postgresql_cannot_hold_is_no_such_key(system: System) -> None:
    """Before: a NUL in the key id reached PostgreSQL, which refused it: 500."""
    admin_token = system.token(system.create_client("keys", admin=True))

    answer = httpx.delete(
        f"{system.base_url}/v1/admin/signing-keys/bad%00kid",
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=10,
    )

    assert_problem(answer, 404)


RECHECK = "0.2"  # SERIATIM_CLIENT_RECHECK of `quick`: changes made elsewhere arrive this fast


@pytest.fixture(scope="module")
def quick(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A gateway (and one worker) that re-reads a client's standing every 0.2 s; the worker
    does not wait for a long demo.sleep when it stops."""
    env = {"SERIATIM_CLIENT_RECHECK": RECHECK, "SERIATIM_DRAIN_TIMEOUT": "1"}
    with running_system(tmp_path_factory.mktemp("quick"), 1, env) as running:
        yield running


@pytest.fixture(scope="module")
def admin(quick: System) -> Iterator[httpx.Client]:
    token = quick.token(quick.create_client("root", admin=True))
    with httpx.Client(
        base_url=quick.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        yield client


def new_client(admin: httpx.Client, name: str, *, is_admin: bool = False) -> dict[str, Any]:
    response = admin.post("/v1/admin/clients", json={"name": name, "admin": is_admin})
    assert response.status_code == 201, response.text
    return dict(response.json())


def grant(system: System, client: dict[str, Any], scope: str | None = None) -> httpx.Response:
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    return httpx.post(
        f"{system.base_url}/v1/token",
        data=data,
        auth=(client["client_id"], client["client_secret"]),
        timeout=10,
    )


def admin_route(system: System, token: str) -> httpx.Response:
    return httpx.get(
        f"{system.base_url}/v1/admin/mailboxes", headers={"Authorization": f"Bearer {token}"}
    )


def test_a_disabled_client_gets_no_token_and_its_tokens_are_refused_at_once(
    quick: System, admin: httpx.Client
) -> None:
    """Before: nothing could disable a client (422 'unknown field(s): disabled')."""
    # Given a client with a token in use, and a webhook sender
    client = new_client(admin, "to-disable")
    token = quick.token(client)
    assert events_with(quick, token).status_code == 200
    added = admin.post(f"/v1/admin/clients/{client['client_id']}/webhook-secrets")
    hooks = Sender(quick, client["client_id"], added.json()["secret"])
    assert hooks.deliver(b'{"type": "demo.echo"}').status_code == 202
    # When an admin disables it
    changed = admin.patch(f"/v1/admin/clients/{client['client_id']}", json={"disabled": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["disabled"] is True
    # Then its token is refused on the next request, and it gets no new one
    assert_problem(events_with(quick, token), 401)
    refused = assert_problem(grant(quick, client), 400)
    assert refused["error"] == "unauthorized_client"
    assert_problem(hooks.deliver(b'{"type": "demo.echo"}'), 401)
    # And enabling it again gives it new tokens, while the old one stays refused
    enabled = admin.patch(f"/v1/admin/clients/{client['client_id']}", json={"disabled": False})
    assert enabled.json()["disabled"] is False
    assert_problem(events_with(quick, token), 401)
    assert events_with(quick, quick.token(client)).status_code == 200


def test_a_client_whose_admin_right_is_taken_away_loses_it_at_once(
    quick: System, admin: httpx.Client
) -> None:
    """Before: the admin flag could not be changed (422), and a token kept its admin scope."""
    client = new_client(admin, "ex-admin", is_admin=True)
    token = quick.token(client)
    assert admin_route(quick, token).status_code == 200
    changed = admin.patch(f"/v1/admin/clients/{client['client_id']}", json={"admin": False})
    assert changed.status_code == 200, changed.text
    assert changed.json()["admin"] is False
    assert_problem(admin_route(quick, token), 401)
    assert grant(quick, client, "admin").json()["error"] == "invalid_scope"
    assert_problem(admin_route(quick, quick.token(client)), 403)


def test_a_rotated_secret_replaces_the_old_one_and_revokes_its_tokens(
    quick: System, admin: httpx.Client
) -> None:
    """Before: there was no way to rotate a client secret (404)."""
    client = new_client(admin, "rotated")
    token = quick.token(client)
    rotated = admin.post(f"/v1/admin/clients/{client['client_id']}/secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    fresh = {**client, "client_secret": rotated.json()["client_secret"]}
    assert fresh["client_secret"] != client["client_secret"]
    assert grant(quick, client).json()["error"] == "invalid_client"
    assert_problem(events_with(quick, token), 401)
    assert events_with(quick, quick.token(fresh)).status_code == 200
    assert client["client_secret"] not in quick.logs()
    assert fresh["client_secret"] not in quick.logs()


def test_a_change_made_elsewhere_reaches_the_gateway_within_the_recheck_bound(
    quick: System, admin: httpx.Client
) -> None:
    """Before: the CLI had no `client disable` nor `rotate-secret`, and a token was never
    checked against its client again; a deleted admin client's token kept working (200)."""
    # Given tokens in use, their client's standing read by the gateway
    client, boss = new_client(admin, "cli-disabled"), new_client(admin, "deleted", is_admin=True)
    token, boss_token = quick.token(client), quick.token(boss)
    assert events_with(quick, token).status_code == 200
    assert admin_route(quick, boss_token).status_code == 200
    # When the CLI disables one (another process: this gateway's cache is not told) and
    # the other's row is deleted
    cli(quick, "client", "disable", client["client_id"])
    quick.execute(f"DELETE FROM clients WHERE id = '{uuid.UUID(boss['client_id'])}'")
    # Then both tokens are refused once the gateway re-reads the standing (every 0.2 s)
    wait_for(lambda: events_with(quick, token).status_code == 401, 10, "the token refused")
    wait_for(lambda: admin_route(quick, boss_token).status_code == 401, 10, "boss refused")
    # And `rotate-secret` prints a secret that works once the client is enabled again
    cli(quick, "client", "enable", client["client_id"])
    secret = json.loads(cli(quick, "client", "rotate-secret", client["client_id"]))
    assert grant(quick, {**client, **secret}).status_code == 200


def cli(system: System, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "seriatim", *args], env=system.env, capture_output=True, check=True
    )
    return out.stdout.decode()


def test_bad_revocation_requests_are_refused_and_change_nothing(
    quick: System, admin: httpx.Client
) -> None:
    """Before: 'disabled' and 'admin' were refused only as unknown fields, rotation was a 404
    for every id, and a client without the admin scope got a 404 instead of a 403."""
    client = new_client(admin, "untouched")
    url = f"/v1/admin/clients/{client['client_id']}"
    for body in ({"disabled": "yes"}, {"admin": 1}, {"disabled": None}):
        problem = assert_problem(admin.patch(url, json=body), 422)
        assert "true or false" in problem["detail"]
    assert admin.get(url).json()["disabled"] is False
    assert_problem(admin.post(f"/v1/admin/clients/{uuid.uuid4()}/secret"), 404)
    assert_problem(admin.patch(f"/v1/admin/clients/{uuid.uuid4()}", json={"disabled": True}), 404)
    tenant = httpx.post(
        f"{quick.base_url}{url}/secret",
        headers={"Authorization": f"Bearer {quick.token(client)}"},
        timeout=10,
    )
    assert_problem(tenant, 403)
    assert grant(quick, client).status_code == 200  # the secret was not changed


def test_a_client_is_deleted_only_once_its_events_are_finished_and_its_journal_is_kept(
    quick: System, admin: httpx.Client
) -> None:
    """Before: there was no way to delete a client (405 on DELETE)."""
    # Given a client whose event is still running
    busy = new_client(admin, "busy")
    busy_token = quick.token(busy)
    running = quick.post_event(busy_token, "demo.sleep", {"ms": 1500})
    # When it is deleted, Then it can no longer authenticate at once (the contract), and the
    # event it had accepted still runs to its outcome: nothing is dropped
    assert admin.delete(f"/v1/admin/clients/{busy['client_id']}").status_code == 204
    assert_problem(events_with(quick, busy_token), 401)
    wait_for(
        lambda: (
            quick.sql("SELECT status FROM events WHERE id = $1::uuid", running["id"])[0][0]
            == "succeeded"
        ),
        30,
        "the deleted client's running event to finish",
    )
    # Given a client whose events are all finished, with a token and webhooks
    done = new_client(admin, "done")
    token = quick.token(done)
    quick.post_event(token, "demo.echo", {"n": 1})
    added = admin.post(f"/v1/admin/clients/{done['client_id']}/webhook-secrets")
    hooks = Sender(quick, done["client_id"], added.json()["secret"])

    def settled() -> bool:
        [row] = quick.sql(
            "SELECT done_seq = last_seq AS settled FROM clients WHERE id = $1::uuid",
            done["client_id"],
        )
        return bool(row["settled"])

    wait_for(settled, 30, "the client's event to finish")
    # When it is deleted
    url = f"/v1/admin/clients/{done['client_id']}"
    assert admin.delete(url).status_code == 204
    # Then it is gone from the API, its credentials, token and webhooks are refused
    assert_problem(admin.get(url), 404)
    assert_problem(admin.patch(url, json={"disabled": False}), 404)
    assert_problem(admin.post(f"{url}/rotate-secret"), 404)
    assert_problem(admin.delete(url), 404)
    assert grant(quick, done).json()["error"] == "invalid_client"
    assert_problem(events_with(quick, token), 401)
    assert_problem(hooks.deliver(b'{"type": "demo.echo"}'), 401)
    # And its events are kept in the journal
    [row] = quick.sql("SELECT count(*) FROM events WHERE client_id = $1::uuid", done["client_id"])
    assert row[0] == 1
    # And the CLI deletes a settled client too (and refuses an unknown one)
    idle = new_client(admin, "idle")
    assert json.loads(cli(quick, "client", "delete", idle["client_id"]))["deleted"] is True
    with pytest.raises(subprocess.CalledProcessError):
        cli(quick, "client", "delete", idle["client_id"])


def test_a_revoked_signing_key_verifies_nothing_at_once(system: System) -> None:
    """Before: a signing key could only be rotated, and kept verifying for the token TTL
    (DELETE /v1/admin/signing-keys/{kid} was a 404)."""
    # Given tokens signed by the current key, verified (and cached) by the gateway
    root = system.create_client("key-revoker", admin=True)
    tenant = system.create_client("key-holder")
    token, admin_token = system.token(tenant), system.token(root)
    assert events_with(system, token).status_code == 200
    old = signing_key(system).kid
    # Then a client without the admin scope cannot revoke it
    url = f"{system.base_url}/v1/admin/signing-keys/{old}"
    assert_problem(httpx.delete(url, headers={"Authorization": f"Bearer {token}"}), 403)
    # When an admin revokes it
    revoked = httpx.delete(url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] == old
    # Then every token it signed is refused at once, the admin's own included
    assert_problem(events_with(system, token), 401)
    assert_problem(
        events_with(system, minted(signing_key_by(system, old), tenant["client_id"])), 401
    )
    jwks = httpx.get(f"{system.base_url}/.well-known/jwks.json").json()
    assert old not in {key["kid"] for key in jwks["keys"]}
    # And new tokens are signed by the new key and work
    fresh = system.token(root)
    assert events_with(system, fresh).status_code == 200
    again = httpx.delete(url, headers={"Authorization": f"Bearer {fresh}"}, timeout=10)
    assert_problem(again, 404)
    unknown = f"{system.base_url}/v1/admin/signing-keys/no-such-kid"
    assert_problem(httpx.delete(unknown, headers={"Authorization": f"Bearer {fresh}"}), 404)


def signing_key_by(system: System, kid: str) -> ECKey:
    [row] = system.sql("SELECT private_jwk FROM signing_keys WHERE kid = $1", kid)
    private = row["private_jwk"]
    key = jwk.import_key(json.loads(private) if isinstance(private, str) else private)
    assert isinstance(key, ECKey)
    return key


@pytest.fixture(scope="module")
def trusting(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A gateway that trusts what it read of a client for 300 s: it stands for the gateways
    that did not make a change and have not re-read the client yet."""
    env = {"SERIATIM_CLIENT_RECHECK": "300"}
    with running_system(tmp_path_factory.mktemp("trusting"), 1, env) as running:
        yield running


@pytest.mark.parametrize("change", ["disabled = true", "deleted_at = now()"])
def test_no_event_is_accepted_for_a_client_disabled_or_deleted_elsewhere(
    trusting: System, change: str
) -> None:
    """Before: the accept did not look at the client's standing, so a gateway that had not
    re-read the client yet (up to SERIATIM_CLIENT_RECHECK) stored events for a client that
    was disabled or deleted: 202, and a deleted client's backlog grew."""
    client = trusting.create_client(f"gone-{uuid.uuid4().hex[:6]}")
    token = trusting.token(client)
    trusting.post_event(token, "demo.echo", {})  # the gateway has now read the client
    trusting.sql(f"UPDATE clients SET {change} WHERE id = $1::uuid", client["client_id"])

    answer = httpx.post(
        f"{trusting.base_url}/v1/events",
        json={"type": "demo.echo", "payload": {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )

    assert_problem(answer, 401)
    [row] = trusting.sql("SELECT last_seq FROM clients WHERE id = $1::uuid", client["client_id"])
    assert row[0] == 1
