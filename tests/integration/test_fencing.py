"""Placement epochs in the real journal: a stale owner can neither start, retry, record nor
suspend, and a stale supervisor cannot move a mailbox off a live worker (I3).

Planted: the epoch condition removed from `mark_attempt` in queries.sql (the single-row
form these one-at-a-time calls run; `mark_attempts` for larger batches) → the stale owner's
attempt test fails (attempt 2 is counted); the liveness condition removed from
`place_mailboxes` → the stale supervisor's placement goes through.
"""

from __future__ import annotations

import uuid

import pytest

from actors.store import Journal

pytestmark = pytest.mark.integration

ALIVE_WITHIN = 5.0


async def worker(journal: Journal, worker_id: str) -> str:
    """A live worker row (a fresh heartbeat; liveness judged without the lock)."""
    await journal.pool.execute(
        "INSERT INTO workers (id, hostname, pid) VALUES ($1, 'h', 1)", worker_id
    )
    return worker_id


async def client_with_event(journal: Journal) -> tuple[uuid.UUID, uuid.UUID]:
    client = await journal.create_client("c", "x", False)
    accepted = await journal.accept(client, "demo.echo", {})
    assert accepted is not None
    return client, accepted.event.id


async def test_every_placement_gets_a_higher_epoch(journal: Journal) -> None:
    client, _ = await client_with_event(journal)
    w1 = await worker(journal, "w1")

    first = await journal.place_mailboxes({client: w1}, ALIVE_WITHIN, False)
    await journal.release_mailbox(client, w1)
    second = await journal.place_mailboxes({client: w1}, ALIVE_WITHIN, False)

    assert second[client].epoch > first[client].epoch > 0
    assert (await journal.mailboxes_placed_on(w1)) == {client: second[client].epoch}


async def test_a_stale_supervisor_cannot_move_a_mailbox_off_a_live_worker(
    journal: Journal,
) -> None:
    client, _ = await client_with_event(journal)
    w1, w2 = await worker(journal, "w1"), await worker(journal, "w2")
    placed = await journal.place_mailboxes({client: w2}, ALIVE_WITHIN, False)

    # A supervisor that read the mailbox as idle before that placement, and places it now
    stale = await journal.place_mailboxes({client: w1}, ALIVE_WITHIN, False)

    assert stale == {}
    position = await journal.position(client)
    assert position is not None
    assert (position.host, position.epoch) == (w2, placed[client].epoch)


async def test_a_mailbox_moves_off_a_dead_worker(journal: Journal) -> None:
    client, _ = await client_with_event(journal)
    w1, w2 = await worker(journal, "w1"), await worker(journal, "w2")
    first = await journal.place_mailboxes({client: w1}, ALIVE_WITHIN, False)
    await journal.pool.execute("UPDATE workers SET last_seen = now() - interval '1 minute'")
    await journal.pool.execute("UPDATE workers SET last_seen = now() WHERE id = $1", w2)

    moved = await journal.place_mailboxes({client: w2}, ALIVE_WITHIN, False)

    assert moved[client].epoch > first[client].epoch


async def test_a_stale_owner_can_neither_start_retry_record_nor_suspend(
    journal: Journal,
) -> None:
    client, event = await client_with_event(journal)
    w1, w2 = await worker(journal, "w1"), await worker(journal, "w2")
    old = (await journal.place_mailboxes({client: w1}, ALIVE_WITHIN, False))[client].epoch
    assert await journal.mark_attempt(event, epoch=old) == 1
    await journal.pool.execute("UPDATE workers SET last_seen = now() - interval '1 minute'")
    await journal.pool.execute("UPDATE workers SET last_seen = now() WHERE id = $1", w2)
    new = (await journal.place_mailboxes({client: w2}, ALIVE_WITHIN, False))[client].epoch

    assert await journal.mark_attempt(event, epoch=old) is None
    assert not await journal.mark_retrying(event, {"type": "X", "message": ""}, epoch=old)
    assert not await journal.record_outcome(event, client, 1, "dead", 1, None, {}, epoch=old)
    assert not await journal.suspend_mailbox(client, "stale report", epoch=old)
    # ...while the new owner goes on
    assert await journal.mark_attempt(event, epoch=new) == 2
    assert await journal.record_outcome(event, client, 1, "succeeded", 2, {}, None, epoch=new)
    row = await journal.pool.fetchrow("SELECT status, attempts FROM events WHERE id = $1", event)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)


async def test_a_suspension_ends_the_placement(journal: Journal) -> None:
    client, event = await client_with_event(journal)
    w1 = await worker(journal, "w1")
    epoch = (await journal.place_mailboxes({client: w1}, ALIVE_WITHIN, False))[client].epoch

    assert await journal.suspend_mailbox(client, "operator", epoch=None)

    assert await journal.mark_attempt(event, epoch=epoch) is None
    assert not await journal.record_outcome(event, client, 1, "dead", 1, None, {}, epoch=epoch)
