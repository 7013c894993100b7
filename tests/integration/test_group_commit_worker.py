"""The worker's grouped journal writes: one statement for many mailboxes, a fence per row."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
import pytest

from actors.store import Journal
from actors.store.journal import _Outcome
from actors.store.queries import QUERIES

pytestmark = pytest.mark.integration


async def clients_with_events(journal: Journal, clients: int, events: int) -> list[list[uuid.UUID]]:
    """Event ids per client, in seq order."""
    ids = []
    for n in range(clients):
        client = await journal.create_client(f"c{n}", "x", False)
        ids.append([])
        for _ in range(events):
            accepted = await journal.accept(client, "demo.echo", {})
            assert accepted is not None
            ids[-1].append(accepted.event.id)
    return ids


async def event_row(journal: Journal, event_id: uuid.UUID) -> EventRow:
    row = await journal.pool.fetchrow(
        "SELECT id, client_id, seq, status, result, finished_at FROM events WHERE id = $1", event_id
    )
    return EventRow(**dict(row))


@dataclasses.dataclass(frozen=True)
class EventRow:
    id: uuid.UUID
    client_id: uuid.UUID
    seq: int
    status: str
    result: object
    finished_at: object


async def done_seqs(journal: Journal) -> list[int]:
    rows = await journal.pool.fetch("SELECT done_seq FROM clients ORDER BY name")
    return [row["done_seq"] for row in rows]


async def test_outcomes_of_many_mailboxes_written_at_once_each_pass_their_own_fence(
    journal: Journal,
) -> None:
    # Given 20 clients with 3 events each
    events = await clients_with_events(journal, 20, 3)
    # When every client's first event is recorded in the same loop turn, plus one out of turn
    firsts = [(await event_row(journal, c[0])) for c in events]
    out_of_turn = await event_row(journal, events[0][2])
    results = await asyncio.gather(
        *(
            journal.record_outcome(
                e.id, e.client_id, e.seq, "succeeded", 1, {"n": e.seq}, None, epoch=None
            )
            for e in [*firsts, out_of_turn]
        )
    )

    # Then each first event passed its fence, the seq-3 event did not
    assert results == [True] * 20 + [False]
    assert await done_seqs(journal) == [1] * 20
    stored = await event_row(journal, events[0][2])
    assert stored.status == "queued"
    assert stored.finished_at is None


async def test_attempts_of_many_events_are_counted_in_one_go_and_terminal_ones_refused(
    journal: Journal,
) -> None:
    events = await clients_with_events(journal, 5, 1)
    finished = await event_row(journal, events[0][0])
    assert await journal.record_outcome(
        finished.id, finished.client_id, 1, "succeeded", 1, None, None, epoch=None
    )

    first = await asyncio.gather(*(journal.mark_attempt(c[0], epoch=None) for c in events))
    second = await asyncio.gather(*(journal.mark_attempt(c[0], epoch=None) for c in events[1:]))

    assert first == [None, 1, 1, 1, 1]
    assert second == [2, 2, 2, 2]


async def test_two_workers_racing_for_the_same_outcomes_record_each_exactly_once(
    journal: Journal, database: str
) -> None:
    # Given a second worker's journal (a zombie and its successor, say)
    other = await Journal.connect(database, min_size=1, max_size=4)
    try:
        events = await clients_with_events(journal, 30, 1)
        rows = [await event_row(journal, c[0]) for c in events]

        # When both record every outcome at once, in opposite orders
        mine = asyncio.gather(
            *(
                journal.record_outcome(e.id, e.client_id, 1, "succeeded", 1, "a", None, epoch=None)
                for e in rows
            )
        )
        theirs = asyncio.gather(
            *(
                other.record_outcome(e.id, e.client_id, 1, "succeeded", 1, "b", None, epoch=None)
                for e in reversed(rows)
            )
        )
        a, b = await asyncio.gather(mine, theirs)
    finally:
        await other.close()

    # Then each event has exactly one outcome, from whoever passed the fence
    assert [x + y for x, y in zip(a, reversed(b), strict=True)] == [1] * 30
    for row, won in zip(rows, a, strict=True):
        assert (await event_row(journal, row.id)).result == ("a" if won else "b")


async def test_overlapping_batches_in_any_order_never_deadlock(
    journal: Journal, database: str
) -> None:
    # Given many events over a few clients, and a second connection pool writing beside us
    events = await clients_with_events(journal, 8, 25)
    ids = [event for client in events for event in client]
    other = await Journal.connect(database, min_size=1, max_size=4)
    deadlocks_before = await deadlocks(journal)
    try:
        # When both mark them published and start attempts in opposite orders, many times
        for _ in range(10):
            await asyncio.gather(
                journal.mark_published(ids),
                other.mark_published(list(reversed(ids))),
                *(journal.mark_attempt(event, epoch=None) for event in ids),
                *(other.mark_attempt(event, epoch=None) for event in reversed(ids)),
            )
            await journal.pool.execute("UPDATE events SET published_at = NULL")
    finally:
        await other.close()

    # Then PostgreSQL never had to break a deadlock: every statement locks rows in id order
    assert await deadlocks(journal) == deadlocks_before
    attempts = await journal.pool.fetch("SELECT attempts FROM events")
    assert {row["attempts"] for row in attempts} == {20}


async def deadlocks(journal: Journal) -> int:
    return await journal.pool.fetchval(  # type: ignore[no-any-return]
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )


async def test_a_batch_fails_as_a_whole_when_the_journal_is_unreachable(database: str) -> None:
    journal = await Journal.connect(database, min_size=1, max_size=2)
    events = await clients_with_events(journal, 3, 1)
    await journal.close()

    results = await asyncio.gather(
        *(journal.mark_attempt(c[0], epoch=None) for c in events), return_exceptions=True
    )

    assert all(isinstance(result, asyncpg.InterfaceError) for result in results)


async def test_placement_beside_batched_accepts_never_deadlocks(
    journal: Journal, database: str
) -> None:
    # Given 40 clients, and a supervisor's journal beside the gateway's
    clients = [await journal.create_client(f"p{n}", "x", False) for n in range(40)]
    supervisor = await Journal.connect(database, min_size=1, max_size=2)
    deadlocks_before = await deadlocks(journal)
    try:
        # When placements (in descending order) and accept batches overlap, many times
        for round_ in range(15):
            plan = {client: f"w{round_ % 2}" for client in sorted(clients, reverse=True)}
            await asyncio.gather(
                supervisor.place_mailboxes(plan, 5.0, False),
                supervisor.release_worker(f"w{(round_ + 1) % 2}"),
                *(journal.accept(client, "demo.echo", {}) for client in clients),
            )
    finally:
        await supervisor.close()

    # Then no statement had to be broken out of a deadlock
    assert await deadlocks(journal) == deadlocks_before
    assert await journal.pool.fetchval("SELECT count(*) FROM events") == 15 * 40


async def test_the_single_row_forms_write_what_the_batch_forms_write(journal: Journal) -> None:
    """A batch of one runs mark_attempt and record_outcome, a larger one mark_attempts and
    record_outcomes. The same steps, on two clients, one through each form (every call of
    the second beside a filler item, so that its batch holds two): the same answers and the
    same rows in `events`, `clients` and `attempts`. Planted: the timeline in record_outcome
    matched on the new attempts count ($5) instead of the counted one → fails at `attempts`
    (the attempt left unfinished when the outcome's count differs)."""
    await journal.pool.execute(QUERIES["heartbeat"], "w1", "h", 1, None, False)  # a live worker
    single, batched, filler = [await journal.create_client(n, "x", False) for n in "abc"]
    placed = await journal.place_mailboxes({single: "w1", batched: "w1"}, 5.0, True)

    async def steps(client: uuid.UUID, paired: bool) -> list[object]:
        events = [(await journal.accept(client, "demo.echo", {"n": n})) for n in range(5)]
        ids = [accepted.event.id for accepted in events if accepted is not None]
        epoch = placed[client].epoch

        async def mark(event_id: uuid.UUID, epoch: int | None, delivered: bool) -> object:
            items = [(event_id, epoch, delivered)]
            if paired:
                spare = await journal.accept(filler, "demo.echo", {})
                assert spare is not None
                items.append((spare.event.id, None, False))
            return (await journal._mark_attempts(items))[0]

        async def outcome(event_id: uuid.UUID, seq: int, **kwargs: object) -> object:
            fields = {"status": "succeeded", "attempts": 1, "result": None, "error": None}
            fields |= {"epoch": epoch} | kwargs
            row = _Outcome(event_id, client, seq, **fields)  # type: ignore[arg-type]
            items = [row]
            if paired:  # refused: the filler's done_seq is never seq 999 - 1
                items.append(_Outcome(uuid.uuid4(), filler, 999, "succeeded", 1, None, None, None))
            return (await journal._record_outcomes(items))[0]

        answers = [
            await mark(ids[0], epoch, True),
            await mark(ids[0], epoch, False),  # its worker died in the first attempt
            await mark(ids[0], epoch + 1, False),  # a stale or future placement: refused
            await outcome(ids[0], 1, attempts=3, result='{"done": true}'),  # a count ahead
            await outcome(ids[0], 1),  # recorded already: refused
            await mark(ids[0], epoch, False),  # terminal: refused
            await mark(ids[1], epoch, True),
            await outcome(ids[1], 2, status="dead", error='{"type": "E"}', epoch=epoch + 1),
            await outcome(ids[2], 3),  # out of turn: refused
            await outcome(ids[1], 2, status="dead", attempts=1, error='{"type": "E"}'),
            await mark(ids[2], epoch, False),  # from the journal: not marked published
            await journal.mark_retrying(ids[2], {"type": "E"}, epoch=epoch),
            await mark(ids[2], None, True),  # unfenced (the journal's own tests), delivered
            await outcome(ids[2], 3, attempts=2, epoch=None),  # the retried attempt stays ended
            await mark(ids[3], epoch, False),
            await journal.suspend_mailbox(client, "operator", epoch=epoch),
            await mark(ids[3], epoch, True),  # suspended: no placement is current
            await outcome(ids[3], 4),
        ]
        rows = await journal.pool.fetch(
            "SELECT seq, status, attempts, published_at IS NOT NULL AS published, "
            "published_at = started_at AS published_at_start, "
            "started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished, "
            "started_at <= finished_at AS in_order, result, error, bytes "
            "FROM events WHERE client_id = $1 ORDER BY seq",
            client,
        )
        attempts = await journal.pool.fetch(
            "SELECT a.seq, a.attempt, a.finished_at IS NOT NULL AS finished, a.error, a.worker, "
            "a.started_at <= a.finished_at AS in_order, a.started_at >= e.accepted_at AS after "
            "FROM attempts a JOIN events e ON e.client_id = a.client_id AND e.seq = a.seq "
            "WHERE a.client_id = $1 ORDER BY a.seq, a.attempt",
            client,
        )
        counters = await journal.pool.fetchrow(
            "SELECT done_seq, stored_bytes FROM clients WHERE id = $1", client
        )
        return [answers, [dict(r) for r in rows], [dict(r) for r in attempts], dict(counters)]

    alone, beside = await steps(single, False), await steps(batched, True)

    assert alone[0][:10] == [1, 2, None, True, False, None, 1, False, False, True]
    assert alone[0][10:] == [1, True, 2, True, 1, True, None, False]
    names = ("answers", "rows", "attempts", "clients")
    for name, one, two in zip(names, alone, beside, strict=True):
        assert one == two, name
