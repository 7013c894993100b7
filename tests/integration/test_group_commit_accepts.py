"""Group commit of accepts against a real journal: every rule of a lone accept holds in a batch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import httpx
import pytest

from actors.outages import UNAVAILABLE
from actors.store import Accepted, BacklogFull, Journal, KeyTaken
from tests import harness
from tests.cutoff import Cutoff, cutoff

pytestmark = pytest.mark.integration


async def new_clients(
    journal: Journal, count: int, max_backlog: int | None = None
) -> list[uuid.UUID]:
    rows = await journal.pool.fetch(
        "INSERT INTO clients (name, secret_hash, max_backlog) "
        "SELECT 'batch-' || g, 'test:no-secret', $2 FROM generate_series(1, $1) AS g "
        "RETURNING id",
        count,
        max_backlog,
    )
    return sorted(row["id"] for row in rows)


async def at_once(*accepts: Awaitable[Accepted | None]) -> list[Any]:
    """Run accepts concurrently, submitted in the order given; outcomes or exceptions."""
    return await asyncio.gather(*accepts, return_exceptions=True)


async def seqs(journal: Journal, client_id: uuid.UUID) -> list[int]:
    rows = await journal.pool.fetch(
        "SELECT seq FROM events WHERE client_id = $1 ORDER BY seq", client_id
    )
    return [row["seq"] for row in rows]


async def commits(journal: Journal) -> int:
    """How many transactions wrote the events: rows of one statement share accepted_at."""
    return int(await journal.pool.fetchval("SELECT count(DISTINCT accepted_at) FROM events"))


async def test_concurrent_accepts_give_each_client_gapless_seqs_in_submission_order(
    journal: Journal,
) -> None:
    # Given 20 idle clients
    clients = await new_clients(journal, 20)

    # When 12 accepts per client are submitted at once, clients interleaved (one batch:
    # batches in flight together are ordered by their locks, as concurrent requests always were)
    order = [(client, n) for n in range(1, 13) for client in clients]
    outcomes = await at_once(*(journal.accept(c, "demo.echo", {"n": n}) for c, n in order))

    # Then each client's n-th request got seq n, and its seqs are 1..12 with nothing else
    for (client, n), outcome in zip(order, outcomes, strict=True):
        assert isinstance(outcome, Accepted), outcome
        assert (outcome.event.client_id, outcome.event.seq) == (client, n)
        assert outcome.event.payload == {"n": n}
        # And only the first event of an idle mailbox says the mailbox had caught up
        assert outcome.caught_up == (n == 1)
    for client in clients:
        assert await seqs(journal, client) == list(range(1, 13))

    # And they were committed together
    assert await commits(journal) == 1


async def test_batches_arriving_while_others_run_continue_the_same_seqs(journal: Journal) -> None:
    # Given one client, and waves of accepts submitted while earlier waves are in flight
    [client] = await new_clients(journal, 1)
    waves = [
        asyncio.create_task(at_once(*(journal.accept(client, "demo.echo", {}) for _ in range(25))))
        for _ in range(8)
    ]
    outcomes = [outcome for wave in await asyncio.gather(*waves) for outcome in wave]

    # Then every accept got its own seq, and the client's seqs are 1..200
    assert sorted(outcome.event.seq for outcome in outcomes) == list(range(1, 201))
    assert await seqs(journal, client) == list(range(1, 201))


async def test_the_backlog_cap_accepts_a_prefix_and_refuses_the_rest(journal: Journal) -> None:
    # Given a client with its own cap of 5 and one under the deployment's cap of 3
    [own_cap] = await new_clients(journal, 1, max_backlog=5)
    [default_cap] = await new_clients(journal, 1)

    # When 8 accepts each are submitted at once
    outcomes = await at_once(
        *(journal.accept(own_cap, "demo.echo", {"n": n}, max_backlog=3) for n in range(8)),
        *(journal.accept(default_cap, "demo.echo", {"n": n}, max_backlog=3) for n in range(8)),
    )

    # Then the first 5 and the first 3 are accepted in order; the rest are refused as full
    own, default = outcomes[:8], outcomes[8:]
    assert [o.event.seq for o in own[:5]] == [1, 2, 3, 4, 5]
    assert [o.event.seq for o in default[:3]] == [1, 2, 3]
    for refused, backlog in ((own[5:], 5), (default[3:], 3)):
        assert all(isinstance(o, BacklogFull) and o.backlog == backlog for o in refused)
    assert await seqs(journal, own_cap) == [1, 2, 3, 4, 5]
    assert await seqs(journal, default_cap) == [1, 2, 3]
    assert await commits(journal) == 1  # one batch decided all of it


async def test_a_client_that_does_not_exist_does_not_disturb_the_others(journal: Journal) -> None:
    clients = await new_clients(journal, 3)
    ghost = uuid.uuid4()

    outcomes = await at_once(
        *(journal.accept(c, "demo.echo", {}) for c in clients[:2]),
        journal.accept(ghost, "demo.echo", {}),
        journal.accept(clients[2], "demo.echo", {}),
        journal.accept(ghost, "demo.echo", {}),
    )

    assert outcomes[2] is None
    assert outcomes[4] is None
    assert [o.event.client_id for o in (outcomes[0], outcomes[1], outcomes[3])] == clients
    assert all(o.event.seq == 1 for o in (outcomes[0], outcomes[1], outcomes[3]))
    assert await journal.pool.fetchval("SELECT count(*) FROM events") == 3
    assert await commits(journal) == 1


async def test_one_key_twice_in_a_batch_gives_one_event_and_key_taken(journal: Journal) -> None:
    # Given two clients, one of which sends the same idempotency key three times at once
    client, other = await new_clients(journal, 2)

    def keyed(n: int) -> Awaitable[Accepted | None]:
        return journal.accept(
            client, "demo.echo", {"n": n}, idempotency_key="k-1", request_hash=b"h-1"
        )

    outcomes = await at_once(
        keyed(0),
        journal.accept(other, "demo.echo", {}),
        keyed(1),
        journal.accept(client, "demo.echo", {"n": 9}),
        keyed(2),
    )

    # Then the first is accepted, the later ones are told the key is taken
    assert isinstance(outcomes[0], Accepted)
    assert isinstance(outcomes[2], KeyTaken)
    assert isinstance(outcomes[4], KeyTaken)
    # And the others of the batch are accepted, the client's seqs without a gap
    assert isinstance(outcomes[1], Accepted)
    assert isinstance(outcomes[3], Accepted)
    assert await seqs(journal, client) == [1, 2]
    assert (outcomes[0].event.seq, outcomes[3].event.seq) == (1, 2)
    # And the key finds the one event, with its request hash
    found = await journal.event_by_key(client, "k-1")
    assert found == (outcomes[0].event, b"h-1")


async def test_a_key_already_used_is_refused_in_a_batch_and_the_rest_accepted(
    journal: Journal,
) -> None:
    client, other = await new_clients(journal, 2)
    first = await journal.accept(client, "demo.echo", {}, idempotency_key="k", request_hash=b"h")

    outcomes = await at_once(
        journal.accept(other, "demo.echo", {}),
        journal.accept(client, "demo.echo", {}, idempotency_key="k", request_hash=b"h"),
        journal.accept(client, "demo.echo", {}, idempotency_key="k-2", request_hash=b"h"),
    )

    assert [type(o) for o in outcomes] == [Accepted, KeyTaken, Accepted]
    assert (outcomes[0].event.seq, outcomes[2].event.seq) == (1, 2)
    assert first is not None
    assert await journal.event_by_key(client, "k") == (first.event, b"h")
    assert await seqs(journal, client) == [1, 2]


async def test_every_field_of_a_batched_accept_is_stored(journal: Journal) -> None:
    client, other = await new_clients(journal, 2)
    original = await journal.accept(client, "demo.fail", {"times": 9})
    assert original is not None
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"

    redriven, _ = await at_once(
        journal.accept(
            client,
            "demo.fail",
            {"times": 9},
            idempotency_key="key",
            request_hash=b"\x00hash",
            redrive_of=original.event.id,
            traceparent=traceparent,
        ),
        journal.accept(other, "demo.echo", {}),
    )

    assert isinstance(redriven, Accepted)
    row = await journal.pool.fetchrow("SELECT * FROM events WHERE id = $1", redriven.event.id)
    assert (row["seq"], row["type"], row["payload"]) == (2, "demo.fail", {"times": 9})
    assert (row["idempotency_key"], bytes(row["request_hash"])) == ("key", b"\x00hash")
    assert (row["redrive_of"], row["traceparent"]) == (original.event.id, traceparent)
    assert (row["status"], row["attempts"]) == ("queued", 0)
    assert redriven.event.redrive_of == original.event.id
    assert redriven.event.traceparent == traceparent
    assert await commits(journal) == 2  # the original, then the batch


async def test_a_deadlock_with_a_writer_locking_in_another_order_is_retried(
    journal: Journal, database: str
) -> None:
    # Given a writer that holds the later client's row and will want the earlier one
    first, second = await new_clients(journal, 2)
    writer = await asyncpg.connect(database)
    try:
        await writer.execute("SET deadlock_timeout = '60s'")  # the batch is the one to yield
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute("UPDATE clients SET restarts = restarts WHERE id = $1", second)

        # When a batch for both clients locks the first and waits for the second
        batch = asyncio.ensure_future(
            at_once(journal.accept(first, "demo.echo", {}), journal.accept(second, "demo.echo", {}))
        )
        await asyncio.to_thread(
            harness.wait_for, lambda: lock_waits(database), 30, "the batch to wait for the lock"
        )
        # And the writer then takes the first: a deadlock, which PostgreSQL breaks in the batch
        await writer.execute("UPDATE clients SET restarts = restarts WHERE id = $1", first)
        await transaction.commit()

        # Then the batch is run again and both are accepted
        outcomes = await batch
    finally:
        await writer.close()
    assert [(o.event.client_id, o.event.seq) for o in outcomes] == [(first, 1), (second, 1)]


def lock_waits(database: str) -> bool:
    """Whether a session of `database` waits for a row lock."""

    async def count() -> int:
        connection = await asyncpg.connect(database)
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        finally:
            await connection.close()

    return asyncio.run(count()) > 0


@pytest.fixture
async def relayed(database: str) -> AsyncIterator[tuple[Journal, Cutoff]]:
    """A journal whose connections pass through a relay the test can cut."""
    with cutoff(database) as relay:
        journal = await Journal.connect(relay.url(database), min_size=2, max_size=4)
        try:
            yield journal, relay
        finally:
            relay.restore()
            await journal.close()


async def test_the_journal_going_away_fails_every_request_of_the_batch(
    relayed: tuple[Journal, Cutoff],
) -> None:
    journal, relay = relayed
    clients = await new_clients(journal, 3)

    # When the journal becomes unreachable and accepts arrive at once
    relay.cut()
    outcomes = await at_once(*(journal.accept(c, "demo.echo", {}) for c in clients * 3))

    # Then every request fails with an error that means "unreachable" (503 at HTTP level)
    assert all(isinstance(o, UNAVAILABLE) for o in outcomes), outcomes

    # And once it is back, nothing was written and the seqs start at 1
    relay.restore()
    outcomes = await at_once(*(journal.accept(c, "demo.echo", {}) for c in clients))
    assert [(o.event.client_id, o.event.seq) for o in outcomes] == [(c, 1) for c in clients]
    assert await journal.pool.fetchval("SELECT count(*) FROM events") == 3


def test_the_gateway_answers_503_while_the_journal_is_away(services: None, tmp_path: Any) -> None:
    # Given a gateway whose journal connections pass through a relay
    with (
        cutoff(harness.PG_URL) as relay,
        harness.running_system(tmp_path, workers=0, pg_url=relay.url()) as system,
    ):
        client = system.admin_client("away")
        headers = {"Authorization": f"Bearer {system.token(client)}"}
        # (one accepted event first: the client's limits and token are then cached, so the
        # requests below get as far as the accept)
        assert asyncio.run(post_at_once(system.base_url, headers, 1)) == [(202, None)]

        # When the journal goes away and several events are posted at once
        relay.cut()
        try:
            statuses = asyncio.run(post_at_once(system.base_url, headers, 6))
        finally:
            relay.restore()

        # Then each is refused with 503 and Retry-After, and none is in the journal
        assert statuses == [(503, "2")] * 6
        assert system.sql("SELECT count(*) AS n FROM events")[0]["n"] == 1


async def post_at_once(base_url: str, headers: dict[str, str], count: int) -> list[Any]:
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        responses = await asyncio.gather(
            *(
                http.post("/v1/events", json={"type": "demo.echo", "payload": {}})
                for _ in range(count)
            )
        )
    return [(r.status_code, r.headers.get("retry-after")) for r in responses]
