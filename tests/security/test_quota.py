"""Quota and retention against a running gateway: a client cannot store more events or bytes
than its quota, finished events are deleted after the retention period (never unfinished ones,
never one a redrive names), and an Idempotency-Key is free again once its event is gone.

Every test here failed on the starting code: `max_stored_events` and `max_stored_bytes` were
unknown fields (422), and nothing was ever deleted."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import System, assert_problem, running_system, wait_for
from tests.security.conftest import Tenant, assert_refused

pytestmark = pytest.mark.integration

ECHO = {"type": "demo.echo", "payload": {"n": 1}}
QUOTA = "urn:seriatim:problem:quota-exceeded"


@pytest.fixture(scope="module")
def admin(system: System) -> Iterator[httpx.Client]:
    token = system.token(system.create_client("quota-admin", admin=True))
    with httpx.Client(
        base_url=system.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def limit(admin: httpx.Client, tenant: Tenant, **settings: Any) -> dict[str, Any]:
    response = admin.patch(f"/v1/admin/clients/{tenant.id}", json=settings)
    assert response.status_code == 200, response.text
    return dict(response.json())


def stored(system: System, tenant: Tenant) -> tuple[int, int]:
    """(stored_events, stored_bytes) as the journal keeps them for the client."""
    [row] = system.sql(
        "SELECT stored_events, stored_bytes FROM clients WHERE id = $1::uuid", tenant.id
    )
    return row["stored_events"], row["stored_bytes"]


def test_a_client_at_its_event_quota_gets_429_while_others_are_served(
    system: System, admin: httpx.Client
) -> None:
    # Given a client that may store 3 events, and has stored 3 (finished ones count too)
    hoarder, calm = Tenant(system, "hoarder"), Tenant(system, "calm-quota")
    settings = limit(admin, hoarder, max_stored_events=3)
    assert settings["max_stored_events"] == {"value": 3, "default": False}
    assert [hoarder.http.post("/v1/events", json=ECHO).status_code for _ in range(3)] == [202] * 3
    before = hoarder.journal()

    refused = hoarder.http.post("/v1/events", json=ECHO)

    problem = assert_refused(hoarder, before, refused, 429)
    assert problem["type"] == QUOTA
    assert "retry-after" in refused.headers  # retention is on by default: room comes back
    assert stored(system, hoarder)[0] == 3
    shown = admin.get(f"/v1/admin/clients/{hoarder.id}").json()
    assert shown["stored"]["events"] == 3
    assert calm.http.post("/v1/events", json=ECHO).status_code == 202
    # An operator raising the quota lets the client in again
    limit(admin, hoarder, max_stored_events=None)
    assert hoarder.http.post("/v1/events", json=ECHO).status_code == 202
    hoarder.http.close()
    calm.http.close()


def test_a_client_at_its_byte_quota_gets_429_and_results_count(
    system: System, admin: httpx.Client
) -> None:
    # Given a client that may store 202 bytes of JSON text
    hoarder = Tenant(system, "byte-hoarder")
    limit(admin, hoarder, max_stored_bytes=202)
    # {"pad":"x…"} is 50 bytes as sent; its result, as PostgreSQL writes jsonb, 51
    big = {"type": "demo.echo", "payload": {"pad": "x" * 40}}
    assert hoarder.http.post("/v1/events", json=big).status_code == 202
    hoarder.journal()
    assert stored(system, hoarder) == (1, 101), "the payload and the echoed result count"
    assert hoarder.http.post("/v1/events", json=big).status_code == 202
    before = hoarder.journal()
    assert stored(system, hoarder) == (2, 202)

    refused = hoarder.http.post("/v1/events", json=ECHO)

    assert assert_refused(hoarder, before, refused, 429)["type"] == QUOTA
    hoarder.http.close()


def test_the_quota_holds_for_concurrent_accepts_committed_together(
    system: System, admin: httpx.Client
) -> None:
    """Accepts sent at once are committed in batches (group commit): each batch must count
    what it adds, so exactly the quota is accepted, whatever the interleaving."""
    hoarder = Tenant(system, "concurrent-hoarder")
    limit(admin, hoarder, max_stored_events=7)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(
            pool.map(lambda _: hoarder.http.post("/v1/events", json=ECHO).status_code, range(40))
        )

    assert sorted(codes) == [202] * 7 + [429] * 33
    assert hoarder.journal() == (7, 7)
    assert stored(system, hoarder)[0] == 7
    hoarder.http.close()


def test_a_batch_is_taken_whole_within_the_quota_or_refused_whole(
    system: System, admin: httpx.Client
) -> None:
    """POST /v1/events/batch counts every item against the quota, in the same statement as
    its accept: a batch that would pass it stores nothing, one that fits stores all."""
    hoarder = Tenant(system, "batch-hoarder")
    limit(admin, hoarder, max_stored_events=5)
    assert [hoarder.http.post("/v1/events", json=ECHO).status_code for _ in range(3)] == [202] * 3
    before = hoarder.journal()

    refused = hoarder.http.post("/v1/events/batch", json={"events": [ECHO] * 3})

    assert assert_refused(hoarder, before, refused, 429)["type"] == QUOTA
    assert stored(system, hoarder)[0] == 3
    taken = hoarder.http.post("/v1/events/batch", json={"events": [ECHO] * 2})
    assert taken.status_code == 202, taken.text
    assert [item["seq"] for item in taken.json()["items"]] == [4, 5]
    assert stored(system, hoarder)[0] == 5
    # and the bytes of a batch count as the bytes of its events one by one do
    byter, single = Tenant(system, "batch-byte-hoarder"), Tenant(system, "one-by-one")
    item = {"type": "demo.echo", "payload": {"pad": "x" * 30}}
    for _ in range(3):
        assert single.http.post("/v1/events", json=item).status_code == 202
    single.journal()
    _, three = stored(system, single)  # payloads and their echoed results
    limit(admin, byter, max_stored_bytes=three)
    assert byter.http.post("/v1/events/batch", json={"events": [item] * 3}).status_code == 202
    before = byter.journal()
    assert stored(system, byter) == (3, three)
    refused = byter.http.post("/v1/events/batch", json={"events": [item]})
    assert assert_refused(byter, before, refused, 429)["type"] == QUOTA
    for tenant in (hoarder, byter, single):
        tenant.http.close()


@pytest.mark.parametrize(
    "body",
    [
        {"max_stored_events": 0},
        {"max_stored_events": "many"},
        {"max_stored_bytes": -1},
        {"max_stored_bytes": True},
        {"max_stored_bytes": 2**60},
    ],
)
def test_bad_quota_settings_are_a_422(admin: httpx.Client, system: System, body: Any) -> None:
    tenant = Tenant(system, "bad-quota")
    answer = admin.patch(f"/v1/admin/clients/{tenant.id}", json=body)
    assert_problem(answer, 422)
    shown = admin.get(f"/v1/admin/clients/{tenant.id}").json()
    assert shown["max_stored_events"]["default"]
    assert shown["max_stored_bytes"]["default"]
    tenant.http.close()


# --- retention -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retaining(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system that deletes events finished more than a second ago, in batches of 2."""
    env = {
        "SERIATIM_RETENTION": "1",
        "SERIATIM_RETENTION_INTERVAL": "0.2",
        "SERIATIM_RETENTION_BATCH": "2",
        "SERIATIM_RETENTION_PAUSE": "0.01",
        "SERIATIM_BACKOFF_MAX": "0.2",
        "SERIATIM_MAX_ATTEMPTS": "2",
        "SERIATIM_DRAIN_TIMEOUT": "1",
    }
    with running_system(Path(tmp_path_factory.mktemp("retaining")), 1, env) as running:
        yield running


def count_events(system: System, client_id: str) -> int:
    return int(
        system.sql("SELECT count(*) FROM events WHERE client_id = $1::uuid", client_id)[0][0]
    )


def test_finished_events_are_deleted_after_retention_and_their_keys_are_free_again(
    retaining: System,
) -> None:
    tenant = Tenant(retaining, "retained")
    keyed = tenant.http.post("/v1/events", json=ECHO, headers={"Idempotency-Key": "k-1"})
    assert keyed.status_code == 202
    for _ in range(4):
        assert tenant.http.post("/v1/events", json=ECHO).status_code == 202
    # A slow event stays unfinished while the others are deleted
    slow = tenant.http.post("/v1/events", json={"type": "demo.sleep", "payload": {"ms": 15000}})
    assert slow.status_code == 202

    wait_for(
        lambda: count_events(retaining, tenant.id) == 1, 30, "the finished events to be deleted"
    )

    [row] = retaining.sql("SELECT id, status FROM events WHERE client_id = $1::uuid", tenant.id)
    assert str(row["id"]) == slow.json()["id"]
    assert row["status"] != "succeeded"
    # Their attempts went with them; the slow event's, still running, stays
    attempts = "SELECT count(*) FROM attempts WHERE client_id = $1::uuid"
    wait_for(lambda: retaining.sql(attempts, tenant.id)[0][0] == 1, 10, "one attempt to stay")
    [attempt] = retaining.sql("SELECT seq FROM attempts WHERE client_id = $1::uuid", tenant.id)
    assert attempt["seq"] == 6
    assert stored(retaining, tenant) == (1, len(b'{"ms":15000}'))
    gone = tenant.http.get(f"/v1/events/{keyed.json()['id']}")
    assert_problem(gone, 404)
    # The key of a deleted event makes a new event (it was a replay, 200, before)
    again = tenant.http.post("/v1/events", json=ECHO, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 202, again.text
    assert again.json()["id"] != keyed.json()["id"]
    tenant.http.close()


def test_retention_keeps_a_dead_event_while_a_redrive_of_it_exists(retaining: System) -> None:
    # Given a mailbox that halts on a dead event, with a dead event and a redrive of it that
    # cannot run (the mailbox is suspended)
    tenant, witness = Tenant(retaining, "redriven"), Tenant(retaining, "witness")
    root = retaining.token(retaining.create_client("retention-root", admin=True))
    halted = httpx.patch(
        f"{retaining.base_url}/v1/admin/mailboxes/{tenant.id}",
        json={"policy": "halt"},
        headers={"Authorization": f"Bearer {root}"},
        timeout=10,
    )
    assert halted.status_code == 200, halted.text
    dead = tenant.http.post("/v1/events", json={"type": "demo.fail", "payload": {"times": 9}})
    dead_id = dead.json()["id"]
    wait_for(
        lambda: tenant.http.get("/v1/mailbox").json()["state"] == "suspended",
        30,
        "the mailbox to halt on the dead event",
    )
    redrive = tenant.http.post(f"/v1/events/{dead_id}/redrive")
    assert redrive.status_code == 202, redrive.text

    # When an event that finished after the dead one has been deleted (the deleter takes the
    # oldest first, so it has passed the dead event by then)
    later = witness.http.post("/v1/events", json=ECHO)
    assert later.status_code == 202
    wait_for(lambda: count_events(retaining, witness.id) == 0, 30, "the later event's deletion")

    # Then the dead event is still there: the redrive names it
    assert tenant.http.get(f"/v1/events/{dead_id}").json()["status"] == "dead"
    assert count_events(retaining, tenant.id) == 2
    tenant.http.close()
    witness.http.close()


def test_retention_keeps_the_dead_event_a_suspended_mailbox_halted_on(retaining: System) -> None:
    """Retention deleted the dead event a `halt` mailbox stopped on while the mailbox was
    still suspended, so its operator could no longer see or redrive it (review finding)."""
    # Given a mailbox that halted on a dead event, nothing redriving it
    tenant, witness = Tenant(retaining, "halted-dead"), Tenant(retaining, "halt-witness")
    root = retaining.token(retaining.create_client("halt-root", admin=True))
    operator = {"Authorization": f"Bearer {root}"}
    halted = httpx.patch(
        f"{retaining.base_url}/v1/admin/mailboxes/{tenant.id}",
        json={"policy": "halt"},
        headers=operator,
        timeout=10,
    )
    assert halted.status_code == 200, halted.text
    dead_id = tenant.http.post(
        "/v1/events", json={"type": "demo.fail", "payload": {"times": 9}}
    ).json()["id"]
    wait_for(
        lambda: tenant.http.get("/v1/mailbox").json()["state"] == "suspended",
        30,
        "the mailbox to halt on the dead event",
    )

    # When an event that finished after it has been deleted
    assert witness.http.post("/v1/events", json=ECHO).status_code == 202
    wait_for(lambda: count_events(retaining, witness.id) == 0, 30, "the later event's deletion")

    # Then the dead event is still there, and it goes once the mailbox is resumed
    assert tenant.http.get(f"/v1/events/{dead_id}").json()["status"] == "dead"
    resumed = httpx.post(
        f"{retaining.base_url}/v1/admin/mailboxes/{tenant.id}/resume", headers=operator, timeout=10
    )
    assert resumed.status_code == 200, resumed.text
    wait_for(lambda: count_events(retaining, tenant.id) == 0, 30, "the dead event's deletion")
    tenant.http.close()
    witness.http.close()
