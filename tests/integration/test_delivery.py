"""Nothing stranded: unpublished events are relayed, gaps in delivery are filled in order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pika
import pytest

from tests import harness
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

# What a gateway that died between its commit and its publish leaves behind.
COMMIT_WITHOUT_PUBLISH = """
WITH counter AS (UPDATE clients SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq)
INSERT INTO events (client_id, seq, type, payload)
SELECT $1, last_seq, 'demo.echo', '{"unpublished": true}'::jsonb FROM counter
RETURNING id, seq
"""


def start(tmp: pytest.TempPathFactory, relay_after: str) -> Iterator[System]:
    env = {"SERIATIM_RELAY_AFTER": relay_after}
    with harness.running_system(tmp.mktemp("delivery"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def fast_relay(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from start(tmp_path_factory, "0.5")


@pytest.fixture(scope="module")
def no_relay(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from start(tmp_path_factory, "3600")


def statuses(system: System, client_id: str) -> list[tuple[int, str]]:
    rows = system.sql(
        "SELECT seq, status FROM events WHERE client_id = $1::uuid ORDER BY seq", client_id
    )
    return [(row["seq"], row["status"]) for row in rows]


def test_an_event_committed_but_never_published_is_delivered_by_the_relay(
    fast_relay: System,
) -> None:
    # Given an active mailbox, waiting on its empty queue
    client = fast_relay.admin_client()
    token = fast_relay.token(client)
    response = httpx.post(
        f"{fast_relay.base_url}/v1/events",
        json={"type": "demo.echo", "payload": {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202
    wait_for(
        lambda: statuses(fast_relay, client["client_id"]) == [(1, "succeeded")],
        60,
        "the first event to succeed",
    )

    # When an event is committed but its publish is lost (the gateway died in between)
    (row,) = fast_relay.sql(COMMIT_WITHOUT_PUBLISH, client["client_id"])

    # Then the relay publishes it and the mailbox processes it
    wait_for(
        lambda: statuses(fast_relay, client["client_id"]) == [(1, "succeeded"), (2, "succeeded")],
        60,
        "the relay to deliver the unpublished event",
    )
    published = fast_relay.sql("SELECT published_at FROM events WHERE id = $1", row["id"])
    assert published[0]["published_at"] is not None


def test_a_gap_in_delivery_is_filled_from_the_journal_in_order(no_relay: System) -> None:
    # Given seq 1 committed but never published (and no relay to rescue it)
    client = no_relay.admin_client()
    token = no_relay.token(client)
    no_relay.sql(COMMIT_WITHOUT_PUBLISH, client["client_id"])

    # When seq 2 arrives through the API
    response = httpx.post(
        f"{no_relay.base_url}/v1/events",
        json={"type": "demo.echo", "payload": {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.json()["seq"] == 2

    # Then the mailbox processes seq 1 from the journal first, then seq 2
    wait_for(
        lambda: statuses(no_relay, client["client_id"]) == [(1, "succeeded"), (2, "succeeded")],
        60,
        "both events to succeed",
    )
    rows = no_relay.sql(
        "SELECT seq, started_at, finished_at, published_at FROM events "
        "WHERE client_id = $1::uuid ORDER BY seq",
        client["client_id"],
    )
    assert rows[0]["finished_at"] <= rows[1]["started_at"]
    assert rows[0]["published_at"] is None  # it never went through the broker


def test_a_queue_deleted_while_holding_messages_loses_no_event(no_relay: System) -> None:
    # Given a client whose mailbox is busy with a slow event, four more queued behind it
    client = no_relay.admin_client()
    token = no_relay.token(client)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=no_relay.base_url, headers=headers, timeout=10) as http:
        http.post("/v1/events", json={"type": "demo.sleep", "payload": {"ms": 1500}})
        for n in range(4):
            http.post("/v1/events", json={"type": "demo.echo", "payload": {"n": n}})
        wait_for(
            lambda: statuses(no_relay, client["client_id"])[0][1] == "processing",
            30,
            "the slow event to start",
        )

        # When an operator deletes the mailbox's queue, messages and all
        connection = pika.BlockingConnection(pika.URLParameters(harness.AMQP_URL))
        try:
            deleted = connection.channel().queue_delete(
                no_relay.settings_queue(client["client_id"])
            )
        finally:
            connection.close()
        assert deleted.method.message_count == 4

    # Then the journal's unfinished events are processed anyway, in order (no relay here)
    wait_for(
        lambda: statuses(no_relay, client["client_id"]) == [(n, "succeeded") for n in range(1, 6)],
        60,
        "all five events to succeed",
    )
    rows = no_relay.sql(
        "SELECT started_at, finished_at FROM events WHERE client_id = $1::uuid ORDER BY seq",
        client["client_id"],
    )
    assert all(a["finished_at"] <= b["started_at"] for a, b in itertools.pairwise(rows))


def test_events_never_published_are_taken_from_the_journal_without_the_relay(
    no_relay: System,
) -> None:
    # Given three events committed but never published, and no relay to publish them
    client = no_relay.admin_client()
    for _ in range(3):
        no_relay.sql(COMMIT_WITHOUT_PUBLISH, client["client_id"])

    # Then the supervisor activates the mailbox (it has a backlog) and the mailbox, finding
    # its queue empty, takes the events from the journal
    wait_for(
        lambda: (
            statuses(no_relay, client["client_id"])
            == [(1, "succeeded"), (2, "succeeded"), (3, "succeeded")]
        ),
        60,
        "the never-published events to succeed",
    )
