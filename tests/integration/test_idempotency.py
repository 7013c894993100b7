"""Idempotent intake and redrive: a retried request is one event; a dead event comes back once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


@dataclasses.dataclass(frozen=True)
class Tenant:
    """A client and its authenticated HTTP session."""

    id: str
    http: httpx.Client


@contextlib.contextmanager
def new_tenant(system: System, name: str) -> Iterator[Tenant]:
    client = system.admin_client(name)
    headers = {"Authorization": f"Bearer {system.token(client)}"}
    with httpx.Client(base_url=system.base_url, headers=headers, timeout=30) as http:
        yield Tenant(client["client_id"], http)


@pytest.fixture
def tenant(system: System) -> Iterator[Tenant]:
    """A fresh client per test, so its seqs start at 1 and its keys are unused."""
    with new_tenant(system, "idempotency") as fresh:
        yield fresh


def post(tenant: Tenant, body: Any, key: str | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return tenant.http.post("/v1/events", content=content, headers=headers)


def rows(system: System, tenant: Tenant) -> list[Any]:
    return system.sql(
        "SELECT id::text, seq, idempotency_key, redrive_of::text FROM events "
        "WHERE client_id = $1::uuid ORDER BY seq",
        tenant.id,
    )


def status_of(tenant: Tenant, event_id: str) -> str:
    response = tenant.http.get(f"/v1/events/{event_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def test_the_same_key_and_body_replays_the_original_answer(system: System, tenant: Tenant) -> None:
    # Given an event accepted with an Idempotency-Key
    body = {"type": "demo.echo", "payload": {"order": 42}}
    first = post(tenant, body, key="order-42")
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers

    # When the same request is sent again
    again = post(tenant, body, key="order-42")

    # Then the original answer comes back as a 200 replay, and there is still one event
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert [(row["id"], row["seq"]) for row in rows(system, tenant)] == [
        (first.json()["id"], first.json()["seq"])
    ]


def test_a_replay_after_the_event_finished_still_returns_the_original_answer(
    system: System, tenant: Tenant
) -> None:
    body = {"type": "demo.echo", "payload": {"n": 1}}
    first = post(tenant, body, key="k1")
    wait_for(lambda: status_of(tenant, first.json()["id"]) == "succeeded", 30, "the event")

    again = post(tenant, body, key="k1")

    assert (again.status_code, again.json()) == (200, first.json())
    assert len(rows(system, tenant)) == 1


def test_the_same_key_with_a_different_body_is_a_422(system: System, tenant: Tenant) -> None:
    # Given an event accepted with a key
    original = {"type": "demo.echo", "payload": {"amount": 10}}
    first = post(tenant, original, key="payment-7")
    assert first.status_code == 202, first.text

    # When the key comes back with another payload, or another type
    changed_payload = post(tenant, {"type": "demo.echo", "payload": {"amount": 11}}, "payment-7")
    changed_type = post(tenant, {"type": "demo.sleep", "payload": {"amount": 10}}, "payment-7")

    # Then both are refused, nothing new is stored, and the original still replays
    for response in (changed_payload, changed_type):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 422
    assert len(rows(system, tenant)) == 1
    assert post(tenant, original, key="payment-7").json() == first.json()


def test_key_order_and_white_space_do_not_make_a_different_body(
    system: System, tenant: Tenant
) -> None:
    compact = b'{"type":"demo.echo","payload":{"a":1,"b":{"x":[1,2],"y":"z"}}}'
    spaced = (
        b'{\n  "payload" : { "b" : { "y" : "z", "x" : [ 1, 2 ] }, "a" : 1 },\n'
        b'  "type" : "demo.echo"\n}'
    )

    first = post(tenant, compact, key="same-thing")
    again = post(tenant, spaced, key="same-thing")

    assert first.status_code == 202, first.text
    assert (again.status_code, again.json()) == (200, first.json())
    assert len(rows(system, tenant)) == 1


def test_keys_are_scoped_to_the_client(system: System) -> None:
    # Given two clients that happen to pick the same key
    body = {"type": "demo.echo", "payload": {"shared": True}}
    answers = []
    for name in ("first", "second"):
        with new_tenant(system, name) as tenant:
            # When each sends its request with that key
            answers.append(post(tenant, body, key="invoice-1"))
            # Then each has exactly its own one event
            assert [row["idempotency_key"] for row in rows(system, tenant)] == ["invoice-1"]

    # And both were accepted as new, independent events
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json()["id"] != answers[1].json()["id"]
    assert answers[0].json()["client_id"] != answers[1].json()["client_id"]


async def test_concurrent_requests_with_one_key_make_one_event(
    system: System, tenant: Tenant
) -> None:
    # Given eight identical requests with the same key, sent all at once
    body = {"type": "demo.echo", "payload": {"burst": True}}
    headers = {**tenant.http.headers, "Idempotency-Key": "burst-1"}
    async with httpx.AsyncClient(base_url=system.base_url, headers=headers, timeout=30) as http:
        answers = await asyncio.gather(*(http.post("/v1/events", json=body) for _ in range(8)))

    # Then exactly one was accepted; each other one is a replay of it or "still in progress"
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(202) == 1, statuses
    assert set(statuses) <= {200, 202, 409}, statuses
    [accepted] = [a.json() for a in answers if a.status_code == 202]
    assert all(a.json() == accepted for a in answers if a.status_code == 200)
    assert [row["id"] for row in rows(system, tenant)] == [accepted["id"]]


def test_requests_without_a_key_are_never_deduplicated(system: System, tenant: Tenant) -> None:
    body = {"type": "demo.echo", "payload": {"same": True}}

    answers = [post(tenant, body) for _ in range(3)]

    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json()["seq"] for a in answers] == [1, 2, 3]
    assert len(rows(system, tenant)) == 3


# --- redrive --------------------------------------------------------------------------------


def test_an_event_that_is_not_dead_cannot_be_redriven(system: System, tenant: Tenant) -> None:
    accepted = post(tenant, {"type": "demo.echo", "payload": {}}).json()
    wait_for(lambda: status_of(tenant, accepted["id"]) == "succeeded", 30, "the event")

    response = tenant.http.post(f"/v1/events/{accepted['id']}/redrive")

    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert len(rows(system, tenant)) == 1


def test_a_dead_event_is_redriven_as_a_new_event_at_the_tail(
    system: System, tenant: Tenant
) -> None:
    # Given an event that fails every attempt, followed by one that succeeds
    dead = post(tenant, {"type": "demo.fail", "payload": {"times": 100}}).json()
    later = post(tenant, {"type": "demo.echo", "payload": {}}).json()
    wait_for(lambda: status_of(tenant, dead["id"]) == "dead", 60, "the failing event to die")

    # When it is redriven
    response = tenant.http.post(f"/v1/events/{dead['id']}/redrive")

    # Then it is queued again as a new event with a new id and a seq after everything else
    assert response.status_code == 202, response.text
    redriven = response.json()
    assert redriven["id"] != dead["id"]
    assert redriven["seq"] > later["seq"] > dead["seq"]
    assert redriven["redrive_of"] == dead["id"]
    assert redriven["status"] == "queued"
    assert response.headers["location"] == f"/v1/events/{redriven['id']}"

    # And the journal has the original, still dead, and the copy pointing at it
    [copy] = [row for row in rows(system, tenant) if row["id"] == redriven["id"]]
    assert copy["redrive_of"] == dead["id"]
    assert status_of(tenant, dead["id"]) == "dead"
    detail = tenant.http.get(f"/v1/events/{redriven['id']}").json()
    assert (detail["type"], detail["payload"]) == ("demo.fail", {"times": 100})
    assert detail["redrive_of"] == dead["id"]
