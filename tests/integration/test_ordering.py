"""Per-client order under concurrency: interleaved clients, retries, several workers.

Order and overlap are judged by the witness ledger that the `witnessed.*` handlers write from
inside the workers, not by the journal's timestamps.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict

import httpx
import pytest

from tests import witness
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
            events.append({"type": "witnessed.echo", "payload": {"n": n}})
        elif kind == "sleep":
            events.append({"type": "witnessed.sleep", "payload": {"ms": rng.randint(1, 15)}})
        else:
            events.append({"type": "witnessed.fail", "payload": {"times": rng.randint(1, 2)}})
    return events


async def test_interleaved_clients_are_each_processed_in_acceptance_order(system: System) -> None:
    """Planted: Mailbox.process without its lock → fails with `AssertionError: executions=2318
    overlaps=1 ...` (a client's seq 2 run twice at once by one worker)."""
    # Given 50 clients, each with 40 events of mixed kinds
    rng = random.Random(20261128)
    clients = [system.admin_client(f"order-{i}") for i in range(CLIENTS)]
    tokens = {c["client_id"]: system.token(c) for c in clients}
    plans = {cid: plan(rng) for cid in tokens}

    # When every client posts its events in order, all clients concurrently (interleaved)
    answered: dict[str, list[tuple[int, str]]] = {cid: [] for cid in tokens}

    async def post_all(http: httpx.AsyncClient, cid: str) -> None:
        for body in plans[cid]:
            response = await http.post(
                "/v1/events", json=body, headers={"Authorization": f"Bearer {tokens[cid]}"}
            )
            assert response.status_code == 202, response.text
            answered[cid].append((response.json()["seq"], response.json()["id"]))

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=system.base_url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(post_all(http, cid) for cid in tokens))

    # Then each client's seqs are 1..40 in the order it posted them
    assert all(
        [seq for seq, _ in pairs] == list(range(1, EVENTS + 1)) for pairs in answered.values()
    )

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
        "SELECT id::text, client_id::text, seq, type, status, attempts "
        "FROM events ORDER BY client_id, seq"
    )
    assert {row["status"] for row in rows} == {"succeeded"}

    # And per client, the handlers' own runs follow seq order and never overlap (the
    # witness; failing runs of witnessed.fail are expected)
    judgement = witness.judge(system.ledger, answered, may_fail=True)
    assert judgement.ok, judgement
    by_client: dict[str, list[object]] = defaultdict(list)
    for row in rows:
        by_client[row["client_id"]].append(row)
    assert len(by_client) == CLIENTS

    # And failing events were retried in place, as many times as they were told to fail,
    # in the journal and in the witness's ledger
    runs = Counter(run.event for run in witness.read(system.ledger))
    for cid, events in by_client.items():
        for body, event in zip(plans[cid], events, strict=True):
            if body["type"] == "witnessed.fail":
                assert event["attempts"] == body["payload"]["times"] + 1  # type: ignore[index]
                assert runs[str(event["id"])] == event["attempts"]

    # And the mailboxes were spread over both workers
    hosts = system.sql("SELECT count(DISTINCT host) FROM clients WHERE host IS NOT NULL")
    assert hosts[0][0] == 2
