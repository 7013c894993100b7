"""Tenant isolation: a client can neither see, nor tell apart, nor touch another client's events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


class Tenant:
    """A client with its own HTTP session."""

    def __init__(self, system: System, name: str) -> None:
        self.credentials = system.admin_client(name)
        self.id = self.credentials["client_id"]
        self.http = httpx.Client(
            base_url=system.base_url,
            headers={"Authorization": f"Bearer {system.token(self.credentials)}"},
            timeout=30,
        )

    def post(self, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/v1/events", json={"type": type_, "payload": payload})
        assert response.status_code == 202, response.text
        return dict(response.json())

    def status(self, event_id: str) -> str:
        return str(self.http.get(f"/v1/events/{event_id}").json()["status"])


@pytest.fixture(scope="module")
def alice(system: System) -> Iterator[Tenant]:
    tenant = Tenant(system, "alice")
    yield tenant
    tenant.http.close()


@pytest.fixture(scope="module")
def bob(system: System) -> Iterator[Tenant]:
    tenant = Tenant(system, "bob")
    yield tenant
    tenant.http.close()


@pytest.fixture(scope="module")
def bobs_events(alice: Tenant, bob: Tenant) -> dict[str, dict[str, Any]]:
    """Bob's events: one that succeeds and one that dies (so a redrive of it would be legal)."""
    # Given both clients have events of their own, all finished so none changes under a test
    alices = [alice.post("demo.echo", {"owner": "alice", "n": n}) for n in range(3)]
    events = {
        "succeeded": bob.post("demo.echo", {"owner": "bob"}),
        "dead": bob.post("demo.fail", {"times": 100}),
    }
    finished = [(alice, event, "succeeded") for event in alices]
    finished += [(bob, event, status) for status, event in events.items()]
    for owner, event, status in finished:
        wait_for(
            lambda o=owner, e=event, s=status: o.status(e["id"]) == s,
            60,
            f"event seq {event['seq']} to be {status}",
        )
    return events


def journal_of(system: System, client_id: str) -> list[tuple[Any, ...]]:
    """A client's events and mailbox counters, to compare before and after."""
    events = system.sql(
        "SELECT id, seq, status, attempts FROM events WHERE client_id = $1::uuid ORDER BY seq",
        client_id,
    )
    mailbox = system.sql("SELECT last_seq, done_seq FROM clients WHERE id = $1::uuid", client_id)
    return [tuple(row) for row in [*events, *mailbox]]


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem body without `instance`, which names the path asked for."""
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return {name: value for name, value in response.json().items() if name != "instance"}


@pytest.mark.parametrize("status", ["succeeded", "dead"])
def test_another_clients_event_is_not_found_like_an_unknown_one(
    system: System, alice: Tenant, bob: Tenant, bobs_events: dict[str, Any], status: str
) -> None:
    # Given Bob's event, an id nobody has, and an id that is not even a UUID
    bobs = bobs_events[status]["id"]
    before = journal_of(system, bob.id)

    # When Alice asks for each of them
    foreign = alice.http.get(f"/v1/events/{bobs}")
    unknown = alice.http.get(f"/v1/events/{uuid.uuid4()}")
    malformed = alice.http.get("/v1/events/not-a-uuid")

    # Then all three are the same 404, so Alice learns nothing about Bob's ids
    assert foreign.status_code == unknown.status_code == malformed.status_code == 404
    assert problem_of(foreign) == problem_of(unknown) == problem_of(malformed)
    assert journal_of(system, bob.id) == before
    # And Bob himself still sees it
    assert bob.http.get(f"/v1/events/{bobs}").status_code == 200


@pytest.mark.parametrize("status", ["succeeded", "dead"])
def test_another_clients_event_cannot_be_redriven(
    system: System, alice: Tenant, bob: Tenant, bobs_events: dict[str, Any], status: str
) -> None:
    # Given Bob's event (the dead one is one Bob himself could redrive)
    bobs = bobs_events[status]["id"]
    before_bob = journal_of(system, bob.id)
    before_alice = journal_of(system, alice.id)

    # When Alice tries to redrive it, an unknown id and a malformed one
    foreign = alice.http.post(f"/v1/events/{bobs}/redrive")
    unknown = alice.http.post(f"/v1/events/{uuid.uuid4()}/redrive")
    malformed = alice.http.post("/v1/events/not-a-uuid/redrive")

    # Then each is the same 404, and nothing was written for Bob or for Alice
    assert foreign.status_code == unknown.status_code == malformed.status_code == 404
    assert problem_of(foreign) == problem_of(unknown) == problem_of(malformed)
    assert journal_of(system, bob.id) == before_bob
    assert journal_of(system, alice.id) == before_alice


@pytest.mark.parametrize(
    "query",
    ["", "?limit=1000", "?status=succeeded", "?status=dead", "?after_seq=0&limit=1"],
)
def test_a_clients_list_never_contains_another_clients_events(
    alice: Tenant, bob: Tenant, bobs_events: dict[str, Any], query: str
) -> None:
    # When Alice lists her events, filtered or not
    response = alice.http.get(f"/v1/events{query}")

    # Then every item is hers and none of Bob's ids appear
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert {item["client_id"] for item in items} <= {alice.id}
    assert not {e["id"] for e in bobs_events.values()} & {item["id"] for item in items}


def test_each_client_lists_exactly_its_own_events(
    alice: Tenant, bob: Tenant, bobs_events: dict[str, Any]
) -> None:
    alices = alice.http.get("/v1/events?limit=1000").json()["items"]
    bobs = bob.http.get("/v1/events?limit=1000").json()["items"]

    assert [item["seq"] for item in alices] == [1, 2, 3]
    assert all(item["payload"]["owner"] == "alice" for item in alices)
    assert {item["id"] for item in bobs} == {e["id"] for e in bobs_events.values()}


def test_a_clients_mailbox_is_its_own(alice: Tenant, bob: Tenant) -> None:
    mine = alice.http.get("/v1/mailbox")

    assert mine.status_code == 200, mine.text
    assert mine.json()["client_id"] == alice.id
    assert alice.http.get(f"/v1/admin/mailboxes/{bob.id}").status_code == 403
