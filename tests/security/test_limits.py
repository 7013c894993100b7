"""Per-client limits: a rate limit and a backlog cap (429 + Retry-After) that leave other
clients alone, and a global limit on concurrent requests (503)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import System, assert_problem, running_system, wait_for
from tests.security import wire
from tests.security.conftest import Tenant, assert_refused

pytestmark = pytest.mark.integration

ECHO = {"type": "demo.echo", "payload": {"n": 1}}


@pytest.fixture(scope="module")
def admin(system: System) -> Iterator[httpx.Client]:
    token = system.token(system.create_client("limits-admin", admin=True))
    with httpx.Client(
        base_url=system.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def limit(admin: httpx.Client, tenant: Tenant, **settings: Any) -> dict[str, Any]:
    response = admin.patch(f"/v1/admin/clients/{tenant.id}", json=settings)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_client_over_its_rate_gets_429_while_others_are_served(
    system: System, admin: httpx.Client
) -> None:
    # Given a client allowed 1 event per second in bursts of 3
    runaway, calm = Tenant(system, "runaway"), Tenant(system, "calm")
    settings = limit(admin, runaway, rate_limit={"per_second": 1, "burst": 3})
    assert settings["rate_limit"] == {"per_second": 1.0, "burst": 3, "default": False}

    answers = [runaway.http.post("/v1/events", json=ECHO) for _ in range(3)]
    before = runaway.journal()
    refused = runaway.http.post("/v1/events", json=ECHO)

    assert [a.status_code for a in answers] == [202, 202, 202]
    problem = assert_refused(runaway, before, refused, 429)
    assert problem["type"] == "urn:seriatim:problem:rate-limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    # While the runaway is limited, another client is not
    assert [calm.http.post("/v1/events", json=ECHO).status_code for _ in range(10)] == [202] * 10
    runaway.http.close()
    calm.http.close()


def test_a_client_whose_backlog_is_full_gets_429_while_others_are_served(
    system: System, admin: httpx.Client
) -> None:
    # Given a client that may have 2 unfinished events, and has 2 slow ones
    slow, calm = Tenant(system, "slow"), Tenant(system, "calm-2")
    limit(admin, slow, max_backlog=2)
    for _ in range(2):
        posted = slow.http.post("/v1/events", json={"type": "demo.sleep", "payload": {"ms": 4000}})
        assert posted.status_code == 202, posted.text
    [row] = system.sql("SELECT last_seq, done_seq FROM clients WHERE id = $1::uuid", slow.id)

    refused = slow.http.post("/v1/events", json=ECHO)

    problem = assert_problem(refused, 429)
    assert problem["type"] == "urn:seriatim:problem:backlog-full"
    assert int(refused.headers["retry-after"]) >= 1
    assert system.sql("SELECT count(*) FROM events WHERE client_id = $1::uuid", slow.id)[0][0] == 2
    assert row["last_seq"] == 2
    assert calm.http.post("/v1/events", json=ECHO).status_code == 202
    # Once the backlog has drained, the client is accepted again
    slow.journal()
    assert slow.http.post("/v1/events", json=ECHO).status_code == 202
    slow.http.close()
    calm.http.close()


@pytest.mark.parametrize(
    "body",
    [
        {"rate_limit": {"per_second": 0, "burst": 1}},
        {"rate_limit": {"per_second": 1}},
        {"rate_limit": {"per_second": "fast", "burst": 1}},
        {"max_backlog": 0},
        {"max_backlog": True},
        {"colour": "red"},
        {},
    ],
)
def test_bad_limit_settings_are_a_422(admin: httpx.Client, system: System, body: Any) -> None:
    tenant = Tenant(system, "bad-settings")
    before = system.sql(
        "SELECT rate_per_second, max_backlog FROM clients WHERE id = $1::uuid", tenant.id
    )

    assert_problem(admin.patch(f"/v1/admin/clients/{tenant.id}", json=body), 422)
    after = system.sql(
        "SELECT rate_per_second, max_backlog FROM clients WHERE id = $1::uuid", tenant.id
    )
    assert before == after
    tenant.http.close()


def test_null_restores_the_default_limits(admin: httpx.Client, system: System) -> None:
    tenant = Tenant(system, "restored")
    limit(admin, tenant, rate_limit={"per_second": 5, "burst": 5}, max_backlog=7)

    settings = limit(admin, tenant, rate_limit=None, max_backlog=None)

    assert settings["rate_limit"]["default"] is True
    assert settings["max_backlog"]["default"] is True
    tenant.http.close()


# --- the global limit on concurrent requests ------------------------------------------------------


@pytest.fixture(scope="module")
def narrow(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A gateway that serves at most 2 requests at once."""
    env = {"SERIATIM_MAX_CONCURRENT_REQUESTS": "2", "SERIATIM_BODY_TIMEOUT": "20"}
    with running_system(Path(tmp_path_factory.mktemp("narrow")), workers=1, env=env) as running:
        yield running


def test_requests_beyond_the_concurrency_limit_get_503_and_health_still_answers(
    narrow: System,
) -> None:
    tenant = Tenant(narrow, "patient")
    held: list[socket.socket] = []
    try:
        # Given two requests in progress: their heads are in, their bodies never come
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", narrow.port), timeout=30)
            held.append(sock)
            sock.sendall(
                wire.request(
                    "POST",
                    "/v1/events",
                    {
                        "Authorization": f"Bearer {tenant.token}",
                        "Content-Type": "application/json",
                        "Content-Length": "100",
                    },
                )
            )
        before = tenant.journal()

        third = tenant.http.post("/v1/events", json=ECHO)

        assert third.status_code == 503, third.text
        assert third.headers["content-type"] == "application/problem+json"
        assert third.json()["type"] == "urn:seriatim:problem:overloaded"
        assert third.headers["retry-after"] == "1"
        assert tenant.journal() == before
        assert httpx.get(f"{narrow.base_url}/healthz").status_code == 200

        # Once the held requests are gone, requests are served again
        for sock in held:
            sock.close()
        wait_for(
            lambda: tenant.http.post("/v1/events", json=ECHO).status_code == 202,
            30,
            "a request to be served after the held ones ended",
        )
    finally:
        for sock in held:
            sock.close()
        tenant.http.close()
