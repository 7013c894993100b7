"""The in-memory journal agrees with the real one: every case runs against both.

What the mailbox, the host and the supervisor rely on (actors/store/roles.py): the seq
fence, attempts, placement epochs, suspension and resumption, policies, restart counting,
the liveness of workers, the outbox; and what the gateway's batch intake relies on:
accept_batch (all or nothing, consecutive seqs, backlog and quota for the whole batch,
idempotency keys) and the events under keys that a replay is judged against. The unit
tests drive the runtime through `MemoryJournal`; this suite is what makes their answers
worth having.

Planted: the fence `client.done_seq != seq - 1` removed from `MemoryJournal.record_outcome`
→ `test_an_outcome_is_recorded_only_for_the_next_event[memory]` fails (`assert not True`:
seq 2 recorded before seq 1) while `[sql]` passes. `c.host in live` removed from
`MemoryJournal.place_mailboxes` → `test_a_mailbox_never_moves_off_a_live_worker[memory]`
fails (`assert {…: 2} == {}`). `len(set(keys)) < len(keys) or` removed from
`MemoryJournal.accept_batch` → `test_a_batch_is_all_or_nothing[memory]` fails (DID NOT RAISE
KeyTaken: a key used twice in one batch) while `[sql]` passes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from actors.store import BacklogFull, BatchRequest, Journal, KeyTaken, QuotaFull
from actors.store.memory import MemoryJournal
from actors.store.queries import QUERIES

pytestmark = pytest.mark.integration

ALIVE = 5.0


class Scene:
    """A journal of either kind, and the workers' heartbeats it is told of."""

    def __init__(self, journal: Journal | MemoryJournal) -> None:
        self.journal = journal

    async def worker(self, worker_id: str, *, holds_lock: bool | None = None) -> str:
        """A live worker (seen now); `holds_lock` False: its lease's lock is gone."""
        if isinstance(self.journal, MemoryJournal):
            await self.journal.heartbeat(worker_id, holds_lock=holds_lock)
        else:  # a lock_key nobody holds stands for a lease whose session ended
            key = None if holds_lock is None else 2**31 - 7
            assert holds_lock is not True, "the SQL scene holds no lease locks"
            await self.journal.pool.execute(QUERIES["heartbeat"], worker_id, "h", 1, key, False)
        return worker_id

    async def client(self, events: int = 0, **accept: str) -> tuple[uuid.UUID, list[uuid.UUID]]:
        client = await self.journal.create_client("c", "x", False)
        ids = []
        for _ in range(events):
            accepted = await self.journal.accept(client, "demo.echo", {"n": len(ids)}, **accept)
            assert accepted is not None
            ids.append(accepted.event.id)
        return client, ids


@pytest.fixture(params=["sql", "memory"])
def database_or_memory(request: pytest.FixtureRequest) -> str | None:
    """A fresh database's URL for the real journal, None for the memory one."""
    return request.getfixturevalue("database") if request.param == "sql" else None


@pytest.fixture
async def scene(database_or_memory: str | None) -> AsyncIterator[Scene]:
    if database_or_memory is None:
        yield Scene(MemoryJournal())
        return
    journal = await Journal.connect(database_or_memory, min_size=1, max_size=2)
    try:
        yield Scene(journal)
    finally:
        await journal.close()


async def test_a_new_client_has_an_idle_empty_mailbox(scene: Scene) -> None:
    client, _ = await scene.client()

    position = await scene.journal.position(client)

    assert position is not None
    assert (position.done_seq, position.last_seq, position.state, position.epoch) == (
        0,
        0,
        "idle",
        0,
    )
    assert (position.policy, position.max_restarts, position.host) == ("skip", None, None)
    assert await scene.journal.position(uuid.uuid4()) is None


async def test_events_between_are_the_open_interval_in_order(scene: Scene) -> None:
    client, ids = await scene.client(5)

    rows = await scene.journal.events_between(client, 1, 5)

    assert [(row.seq, row.id, row.payload) for row in rows] == [
        (2, ids[1], {"n": 1}),
        (3, ids[2], {"n": 2}),
        (4, ids[3], {"n": 3}),
    ]
    assert await scene.journal.events_between(client, 5, 100) == []


async def test_an_outcome_is_recorded_only_for_the_next_event(scene: Scene) -> None:
    journal = scene.journal
    client, (first, second) = await scene.client(2)

    assert not await journal.record_outcome(second, client, 2, "succeeded", 1, {}, None, epoch=None)
    assert await journal.record_outcome(
        first, client, 1, "succeeded", 1, {"ok": 1}, None, epoch=None
    )
    assert not await journal.record_outcome(first, client, 1, "dead", 1, None, {}, epoch=None)
    assert await journal.record_outcome(second, client, 2, "dead", 3, None, {"e": 1}, epoch=None)

    position = await journal.position(client)
    assert position is not None
    assert position.done_seq == 2
    one, two = await journal.event(client, first), await journal.event(client, second)
    assert one is not None
    assert two is not None
    assert (one.status, one.attempts, one.result, one.error) == ("succeeded", 1, {"ok": 1}, None)
    assert (two.status, two.attempts, two.result, two.error) == ("dead", 3, None, {"e": 1})
    assert two.finished_at is not None
    assert two.started_at is not None


async def test_attempts_are_counted_until_the_event_is_terminal(scene: Scene) -> None:
    journal = scene.journal
    client, (event,) = await scene.client(1)

    assert await journal.mark_attempt(event, epoch=None) == 1
    assert await journal.mark_retrying(event, {"type": "Boom", "message": "a\x00b"}, epoch=None)
    mailbox = await journal.mailbox(client)
    assert mailbox is not None
    assert (mailbox.restarts, mailbox.in_flight_seq, mailbox.head_status) == (1, 1, "retrying")
    retrying = await journal.event(client, event)
    assert retrying is not None
    assert retrying.error == {"type": "Boom", "message": "a\ufffdb"}  # NUL is not storable
    assert await journal.mark_attempt(event, epoch=None) == 2
    assert await journal.record_outcome(event, client, 1, "succeeded", 2, 7, None, epoch=None)

    assert await journal.mark_attempt(event, epoch=None) is None
    assert not await journal.mark_retrying(event, {}, epoch=None)
    row = await journal.event(client, event)
    assert row is not None
    assert (row.status, row.attempts, row.result) == ("succeeded", 2, 7)
    assert row.error is None  # the outcome's, not the failed attempt's
    mailbox = await journal.mailbox(client)
    assert mailbox is not None
    assert (mailbox.restarts, mailbox.in_flight_seq, mailbox.head_status) == (1, None, None)


async def test_every_placement_and_every_end_of_one_bumps_the_epoch(scene: Scene) -> None:
    journal = scene.journal
    client, _ = await scene.client(1)
    w1 = await scene.worker("w1")

    placed = await journal.place_mailboxes({client: w1}, ALIVE, False)
    assert {c: p.epoch for c, p in placed.items()} == {client: 1}
    assert await journal.mailboxes_placed_on(w1) == {client: 1}
    await journal.release_mailbox(client, "w-other")  # not its host: nothing happens
    await journal.release_mailbox(client, w1)
    assert await journal.mailboxes_placed_on(w1) == {}
    await journal.release_mailbox(client, w1)  # not active any more: nothing happens
    assert {
        c: p.epoch for c, p in (await journal.place_mailboxes({client: w1}, ALIVE, False)).items()
    } == {client: 3}
    assert await journal.suspend_mailbox(client, "operator")
    assert await journal.resume_mailbox(client)

    position = await journal.position(client)
    assert position is not None
    assert (position.state, position.host, position.epoch) == ("idle", None, 5)


async def test_each_attempt_is_in_the_timeline_with_its_worker_and_error(scene: Scene) -> None:
    journal = scene.journal
    client, (event, other) = await scene.client(2)
    w1 = await scene.worker("w1")
    w2 = await scene.worker("w2")
    epoch = (await journal.place_mailboxes({client: w1}, ALIVE, False))[client].epoch
    assert await journal.mark_attempt(event, epoch=epoch) == 1
    assert await journal.mark_retrying(event, {"type": "Boom", "message": "one"}, epoch=epoch)
    assert await journal.mark_attempt(event, epoch=epoch) == 2  # its worker dies in it
    await journal.release_mailbox(client, w1)
    epoch = (await journal.place_mailboxes({client: w2}, ALIVE, False))[client].epoch
    assert await journal.mark_attempt(event, epoch=epoch) == 3
    assert await journal.record_outcome(
        event, client, 1, "dead", 3, None, {"type": "Boom", "message": "three"}, epoch=epoch
    )
    assert await journal.mark_attempt(other, epoch=epoch) == 1
    assert await journal.record_outcome(other, client, 2, "succeeded", 1, 1, None, epoch=epoch)

    timeline = await journal.event_attempts(client, event)

    assert [(a.attempt, a.worker, a.error) for a in timeline] == [
        (1, "w1", '{"type": "Boom", "message": "one"}'),
        (2, "w1", None),
        (3, "w2", '{"type": "Boom", "message": "three"}'),
    ]
    assert [a.finished_at is None for a in timeline] == [False, True, False]
    assert all(a.duration is None or a.duration >= 0 for a in timeline)
    assert [(a.attempt, a.error) for a in await journal.event_attempts(client, other)] == [
        (1, None)
    ]
    assert (await journal.event_attempts(client, other))[0].finished_at is not None
    stranger, _ = await scene.client()
    assert await journal.event_attempts(stranger, event) == []


async def test_a_stale_epoch_can_neither_start_retry_record_nor_suspend(scene: Scene) -> None:
    journal = scene.journal
    client, (event,) = await scene.client(1)
    w1 = await scene.worker("w1")
    old = (await journal.place_mailboxes({client: w1}, ALIVE, False))[client].epoch
    assert await journal.mark_attempt(event, epoch=old) == 1
    await journal.release_mailbox(client, w1)
    new = (await journal.place_mailboxes({client: w1}, ALIVE, False))[client].epoch

    assert await journal.mark_attempt(event, epoch=old) is None
    assert not await journal.mark_retrying(event, {}, epoch=old)
    assert not await journal.record_outcome(event, client, 1, "dead", 1, None, {}, epoch=old)
    assert not await journal.suspend_mailbox(client, "stale report", epoch=old)
    assert await journal.mark_attempt(event, epoch=new) == 2
    assert await journal.mark_retrying(event, {}, epoch=new)
    assert await journal.record_outcome(event, client, 1, "succeeded", 2, 1, None, epoch=new)


async def test_an_idle_or_suspended_mailbox_refuses_every_epoch(scene: Scene) -> None:
    journal = scene.journal
    client, (event,) = await scene.client(1)
    w1 = await scene.worker("w1")
    epoch = (await journal.place_mailboxes({client: w1}, ALIVE, False))[client].epoch

    assert await journal.suspend_mailbox(client, "halt", epoch=epoch)

    assert await journal.mark_attempt(event, epoch=epoch + 1) is None  # the suspension's own
    assert not await journal.record_outcome(event, client, 1, "dead", 1, None, {}, epoch=epoch + 1)
    assert not await journal.suspend_mailbox(client, "again")
    mailbox = await journal.mailbox(client)
    assert mailbox is not None
    assert (mailbox.state, mailbox.host, mailbox.suspended_reason) == ("suspended", None, "halt")
    assert mailbox.suspended_at is not None


async def test_a_mailbox_never_moves_off_a_live_worker(scene: Scene) -> None:
    journal = scene.journal
    client, _ = await scene.client(1)
    w1, w2 = await scene.worker("w1"), await scene.worker("w2")
    placed = await journal.place_mailboxes({client: w1}, ALIVE, False)

    assert await journal.place_mailboxes({client: w2}, ALIVE, False) == {}
    assert await journal.place_mailboxes({client: w1}, ALIVE, False) == {}

    await journal.forget_worker(w1)
    moved = await journal.place_mailboxes({client: w2}, ALIVE, False)
    assert moved[client].epoch > placed[client].epoch
    position = await journal.position(client)
    assert position is not None
    assert (position.state, position.host) == ("active", w2)


async def test_a_suspended_mailbox_is_never_placed_until_resumed(scene: Scene) -> None:
    journal = scene.journal
    client, _ = await scene.client(1)
    w1 = await scene.worker("w1")
    assert await journal.suspend_mailbox(client, "operator")

    assert await journal.place_mailboxes({client: w1}, ALIVE, False) == {}
    assert await journal.stranded_mailboxes(ALIVE, False, 10) == {}
    assert await journal.resume_mailbox(client)
    assert not await journal.resume_mailbox(client)
    assert await journal.stranded_mailboxes(ALIVE, False, 10) == {client: None}
    assert list(await journal.place_mailboxes({client: w1}, ALIVE, False)) == [client]


async def test_policies_are_set_kept_and_reset(scene: Scene) -> None:
    journal = scene.journal
    client, _ = await scene.client()

    assert await journal.set_mailbox_policy(client, policy="halt", max_restarts=3)
    assert await journal.set_mailbox_policy(client, restart_period=2.5)
    position = await journal.position(client)
    assert position is not None
    assert (position.policy, position.max_restarts, position.restart_period) == ("halt", 3, 2.5)

    assert await journal.set_mailbox_policy(client, default_intensity=True)
    position = await journal.position(client)
    assert position is not None
    assert (position.policy, position.max_restarts, position.restart_period) == ("halt", None, None)
    assert not await journal.set_mailbox_policy(uuid.uuid4(), policy="skip")


async def test_live_workers_are_seen_not_draining_and_hold_their_lock(scene: Scene) -> None:
    journal = scene.journal
    client, _ = await scene.client(1)
    w1, w2 = await scene.worker("w1"), await scene.worker("w2")
    unlocked = await scene.worker("w3", holds_lock=False)
    await scene.worker("w4")
    await journal.place_mailboxes({client: w1}, ALIVE, False)

    await journal.mark_draining(w2)
    await journal.forget_worker("w4")

    assert await journal.live_workers(ALIVE, False) == {w1: 1, unlocked: 0}
    assert await journal.live_workers(ALIVE, True) == {w1: 1}


async def test_what_the_supervisor_reads_of_wanted_and_stranded_mailboxes(scene: Scene) -> None:
    journal = scene.journal
    on_live, _ = await scene.client(1, traceparent="00-aa-01")
    on_dead, _ = await scene.client(2)
    (idle, _), (done, (event,)) = await scene.client(1), await scene.client(1)
    assert await journal.record_outcome(event, done, 1, "succeeded", 1, 1, None, epoch=None)
    w1, w2 = await scene.worker("w1"), await scene.worker("w2")
    await journal.place_mailboxes({on_live: w1, on_dead: w2}, ALIVE, False)
    await journal.forget_worker(w2)

    wanted = await journal.wanted([on_live, on_dead, idle, done, uuid.uuid4()], ALIVE, False)
    stranded = await journal.stranded_mailboxes(ALIVE, False, 10)

    assert sorted((w.client_id, w.state, w.has_backlog, w.host_alive) for w in wanted) == sorted(
        [
            (on_live, "active", True, True),
            (on_dead, "active", True, False),
            (idle, "idle", True, False),
            (done, "idle", False, False),
        ]
    )
    assert stranded == {on_dead: None, idle: None}
    assert list(await journal.stranded_mailboxes(ALIVE, False, 1)) == [min(on_dead, idle)]
    await journal.forget_worker(w1)
    assert (await journal.stranded_mailboxes(ALIVE, False, 10))[on_live] == "00-aa-01"


async def test_the_outbox_holds_unfinished_unpublished_events(scene: Scene) -> None:
    journal = scene.journal
    client, (first, second, third) = await scene.client(3)
    assert await journal.record_outcome(first, client, 1, "succeeded", 1, 1, None, epoch=None)

    assert [row.id for row in await journal.unpublished(0, 10)] == [second, third]
    assert await journal.unpublished(3600, 10) == []
    await journal.mark_published([second])
    assert [row.id for row in await journal.unpublished(0, 10)] == [third]


async def test_an_attempt_on_a_delivered_event_takes_it_out_of_the_outbox(scene: Scene) -> None:
    """The attempt start marks a delivered event published (the gateway's mark comes later
    and finds nothing to do); an event the journal gave (a gap, a catch-up) stays in the
    outbox until it finishes, as it never went through RabbitMQ."""
    journal = scene.journal
    _, (delivered, from_journal) = await scene.client(2)

    assert await journal.mark_attempt(delivered, epoch=None, delivered=True) == 1
    assert await journal.mark_attempt(from_journal, epoch=None) == 1

    assert [row.id for row in await journal.unpublished(0, 10)] == [from_journal]
    await journal.mark_published([delivered])  # the gateway's late mark: nothing changes
    assert [row.id for row in await journal.unpublished(0, 10)] == [from_journal]


def item(n: int, key: str | None = None) -> BatchRequest:
    """A batch item whose payload is {"n": n}, under `key` with a hash of its own."""
    return BatchRequest("demo.echo", f'{{"n":{n}}}', key, None if key is None else b"h%d" % n)


async def test_a_batch_takes_consecutive_seqs_in_the_order_given(scene: Scene) -> None:
    journal = scene.journal
    client, ids = await scene.client(2)

    accepted = await journal.accept_batch(
        client, [item(10, "a"), item(11), item(12, "c")], traceparent="00-ab-01"
    )

    assert accepted is not None
    assert [(a.event.seq, a.event.payload, a.event.traceparent) for a in accepted] == [
        (3, {"n": 10}, "00-ab-01"),
        (4, {"n": 11}, "00-ab-01"),
        (5, {"n": 12}, "00-ab-01"),
    ]
    assert [a.caught_up for a in accepted] == [False, False, False]  # seq 1 is not done
    assert [row.id for row in await journal.events_between(client, 0, 6)] == ids + [
        a.event.id for a in accepted
    ]
    position = await journal.position(client)
    assert position is not None
    assert position.last_seq == 5
    fresh, _ = await scene.client()
    first = await journal.accept_batch(fresh, [item(1), item(2)])
    assert first is not None
    assert [(a.event.seq, a.caught_up) for a in first] == [(1, True), (2, False)]
    assert await journal.accept_batch(uuid.uuid4(), [item(1)]) is None


async def test_a_batch_is_all_or_nothing(scene: Scene) -> None:
    journal = scene.journal
    client, _ = await scene.client()
    assert await journal.accept(client, "demo.echo", {"n": 0}, idempotency_key="k") is not None

    with pytest.raises(KeyTaken):  # a key used before
        await journal.accept_batch(client, [item(1, "x"), item(2, "k")])
    with pytest.raises(KeyTaken):  # a key used twice in the batch
        await journal.accept_batch(client, [item(1, "y"), item(2), item(3, "y")])

    position = await journal.position(client)
    assert position is not None
    assert position.last_seq == 1
    assert await journal.events_by_keys(client, ["x", "y"]) == {}
    assert [row.seq for row in await journal.events_between(client, 0, 10)] == [1]


async def test_a_batch_must_fit_the_backlog_and_the_quota_whole(scene: Scene) -> None:
    journal = scene.journal
    client, _ = await scene.client(1)  # its payload {"n":0} stores 7 bytes
    batch = [item(1), item(2), item(3)]  # 7 bytes each

    with pytest.raises(BacklogFull) as full:
        await journal.accept_batch(client, batch, max_backlog=3)
    assert full.value.backlog == 1
    with pytest.raises(QuotaFull):
        await journal.accept_batch(client, batch, max_stored_events=3)
    with pytest.raises(QuotaFull):
        await journal.accept_batch(client, batch, max_stored_bytes=7 + 3 * 7 - 1)
    position = await journal.position(client)
    assert position is not None
    assert position.last_seq == 1

    accepted = await journal.accept_batch(
        client, batch, max_backlog=4, max_stored_events=4, max_stored_bytes=7 + 3 * 7
    )
    assert accepted is not None
    assert [a.event.seq for a in accepted] == [2, 3, 4]


async def test_events_by_key_are_what_a_replay_compares_against(scene: Scene) -> None:
    journal = scene.journal
    client, _ = await scene.client()
    other, _ = await scene.client()
    single = await journal.accept(
        client, "demo.echo", {"n": 0}, idempotency_key="one", request_hash=b"h0"
    )
    batch = await journal.accept_batch(client, [item(1, "two"), item(2), item(3, "three")])
    assert single is not None
    assert batch is not None
    assert await journal.accept_batch(other, [item(9, "two")]) is not None

    found = await journal.events_by_keys(client, ["one", "two", "three", "none"])

    assert {key: (row.id, digest) for key, (row, digest) in found.items()} == {
        "one": (single.event.id, b"h0"),
        "two": (batch[0].event.id, b"h1"),
        "three": (batch[2].event.id, b"h3"),
    }
    assert await journal.events_by_keys(client, []) == {}
    by_key = await journal.event_by_key(client, "three")
    assert by_key is not None
    assert (by_key[0].id, by_key[1]) == (batch[2].event.id, b"h3")
    assert await journal.event_by_key(client, "none") is None
