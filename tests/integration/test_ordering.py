"""Per-client order under concurrency: interleaved clients, retries, several workers."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict

import httpx
import pytest

from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

CLIENTS = 50
EVENTS = 40


def plan(rng: random.Random) -> list[dict[str, object]]:
    """A mix of echo, short sleeps and events that fail once or twice before succeeding."""
    events = []
    for n in range(EVENTS):
        kind = rng.choices(["echo", "sleep", "fail"], weights=[6, 3, 1])[0]
        if kind == "echo":
            events.append({"type": "demo.echo", "payload": {"n": n}})
        elif kind == "sleep":
            events.append({"type": "demo.sleep", "payload": {"ms": rng.randint(1, 15)}})
        else:
            events.append({"type": "demo.fail", "payload": {"times": rng.randint(1, 2)}})
    return events


async def test_interleaved_clients_are_each_processed_in_acceptance_order(system: System) -> None:
    # Given 50 clients, each with 40 events of mixed kinds
    rng = random.Random(20261128)
    clients = [system.admin_client(f"order-{i}") for i in range(CLIENTS)]
    tokens = {c["client_id"]: system.token(c) for c in clients}
    plans = {cid: plan(rng) for cid in tokens}

    # When every client posts its events in order, all clients concurrently (interleaved)
    async def post_all(http: httpx.AsyncClient, cid: str) -> list[int]:
        seqs = []
        for body in plans[cid]:
            response = await http.post(
                "/v1/events", json=body, headers={"Authorization": f"Bearer {tokens[cid]}"}
            )
            assert response.status_code == 202, response.text
            seqs.append(response.json()["seq"])
        return seqs

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=system.base_url, timeout=30, limits=limits) as http:
        accepted = await asyncio.gather(*(post_all(http, cid) for cid in tokens))

    # Then each client's seqs are 1..40 in the order it posted them
    assert all(seqs == list(range(1, EVENTS + 1)) for seqs in accepted)

    # And every event ends succeeded
    total = CLIENTS * EVENTS
    wait_for(
        lambda: (
            system.sql("SELECT count(*) FROM events WHERE status IN ('succeeded', 'dead')")[0][0]
            == total
        ),
        180,
        f"all {total} events to finish",
        interval=0.5,
    )
    rows = system.sql(
        "SELECT client_id::text, seq, type, status, attempts, started_at, finished_at "
        "FROM events ORDER BY client_id, seq"
    )
    assert {row["status"] for row in rows} == {"succeeded"}

    # And per client, processing intervals follow seq order and never overlap
    by_client: dict[str, list[object]] = defaultdict(list)
    for row in rows:
        by_client[row["client_id"]].append(row)
    assert len(by_client) == CLIENTS
    for cid, events in by_client.items():
        assert [e["seq"] for e in events] == list(range(1, EVENTS + 1)), cid
        for earlier, later in itertools.pairwise(events):
            assert earlier["finished_at"] <= later["started_at"], (
                f"client {cid}: seq {later['seq']} started before seq {earlier['seq']} finished"
            )

    # And failing events were retried in place, as many times as they were told to fail
    for cid, events in by_client.items():
        for body, event in zip(plans[cid], events, strict=True):
            if body["type"] == "demo.fail":
                assert event["attempts"] == body["payload"]["times"] + 1  # type: ignore[index]

    # And the mailboxes were spread over both workers
    hosts = system.sql("SELECT count(DISTINCT host) FROM clients WHERE host IS NOT NULL")
    assert hosts[0][0] == 2
