"""The supervisor's decisions on the in-memory journal: which mailboxes it places, where, and
whose failure reports suspend a mailbox.

`Supervisor._dispatch` is driven with the facts a batch would hold; a fake publisher records
what the workers are told. The journal's side of placement is proven against PostgreSQL by
tests/integration/test_journal_contract.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from actors.amqp import PublishFailed, Unroutable
from actors.protocol import (
    Control,
    EventMessage,
    MailboxesWanted,
    MailboxFailed,
    MailboxPassivated,
    MailboxWanted,
    Start,
    StartMailboxes,
    Tick,
)
from actors.settings import Settings
from actors.store.memory import MemoryJournal
from supervision.relay import Relay
from supervision.supervisor import Supervisor


class Publisher:
    """Records what the supervisor tells; workers in `gone` have no queue, and tells to
    workers in `unconfirmed` fail without saying whether they arrived."""

    def __init__(self) -> None:
        self.started: dict[uuid.UUID, tuple[str, int | None]] = {}
        self.starts: dict[uuid.UUID, Start] = {}
        self.messages: list[str] = []  # the worker of each start message, in order
        self.gone: set[str] = set()
        self.unconfirmed: set[str] = set()
        self.on_publish: Callable[[EventMessage], Awaitable[None]] | None = None

    async def tell_worker(self, worker_id: str, control: Control) -> None:
        if worker_id in self.gone:
            raise Unroutable(f"no queue for worker {worker_id}")
        if worker_id in self.unconfirmed:
            raise PublishFailed("the broker did not confirm the message within 10 s")
        assert isinstance(control, StartMailboxes)
        self.messages.append(worker_id)
        for start in control.mailboxes:
            self.started[start.client_id] = (worker_id, start.epoch)
            self.starts[start.client_id] = start

    async def tell_supervisor(self, control: Control, *, persistent: bool = False) -> None:
        pass

    async def publish_event(self, message: EventMessage, **_: object) -> None:
        # the relay's (the events here are younger than its `relay_after`, but where a test
        # makes the relay see them)
        if self.on_publish is not None:
            await self.on_publish(message)


class Link:
    def __init__(self) -> None:
        self.publisher = Publisher()


@pytest.fixture
async def journal() -> MemoryJournal:
    journal = MemoryJournal()
    for worker in ("w1", "w2"):
        await journal.heartbeat(worker)
    return journal


@pytest.fixture
def link() -> Link:
    return Link()


@pytest.fixture
def supervisor(journal: MemoryJournal, link: Link) -> Supervisor:
    return Supervisor(Settings(), journal, link, "w1")  # type: ignore[arg-type]


async def client(journal: MemoryJournal, events: int = 1) -> uuid.UUID:
    client_id = await journal.create_client("c", "x", False)
    for _ in range(events):
        await journal.accept(client_id, "demo.t", {})
    return client_id


async def placement(journal: MemoryJournal, client_id: uuid.UUID) -> tuple[str, str | None, int]:
    position = await journal.position(client_id)
    assert position is not None
    return position.state, position.host, position.epoch


async def test_a_wanted_mailbox_is_placed_on_the_least_loaded_live_worker(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    busy = await client(journal)
    await journal.place_mailboxes({busy: "w1"}, 5.0, True)
    wanted = await client(journal)

    await supervisor._dispatch([MailboxWanted(wanted)])

    assert link.publisher.started == {wanted: ("w2", 1)}
    assert await placement(journal, wanted) == ("active", "w2", 1)


async def test_a_burst_of_new_clients_is_one_start_message_per_worker(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    """300 clients wanted in one batch: one placement round, one StartMailboxes per worker,
    each mailbox with the done_seq and last_seq the placement found. On the starting code
    (one StartMailbox per mailbox) the fake publisher's StartMailboxes assertion fails; with
    the share told per client it counts 300 messages."""
    clients = [await client(journal, events=2) for _ in range(300)]
    finished = clients[0]
    row = await journal.events_between(finished, 0, 2)
    await journal.record_outcome(row[0].id, finished, 1, "succeeded", 1, {}, None, epoch=None)

    await supervisor._dispatch([MailboxWanted(c) for c in clients])

    assert sorted(link.publisher.messages) == ["w1", "w2"]
    assert {worker for worker, _ in link.publisher.started.values()} == {"w1", "w2"}
    assert set(link.publisher.starts) == set(clients)
    assert link.publisher.starts[finished][2:] == (1, 2)
    assert {s[2:] for c, s in link.publisher.starts.items() if c != finished} == {(0, 2)}


async def test_a_gateways_mailboxes_wanted_places_each_mailbox(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    first, second = await client(journal), await client(journal)

    await supervisor._dispatch([MailboxesWanted(((first, ""), (second, "")))])

    assert set(link.publisher.started) == {first, second}
    assert link.publisher.messages == ["w1", "w2"] or link.publisher.messages == ["w2", "w1"]


async def test_a_mailbox_active_on_a_live_worker_or_suspended_is_left_alone(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    active, suspended = await client(journal), await client(journal)
    await journal.place_mailboxes({active: "w1"}, 5.0, True)
    await journal.suspend_mailbox(suspended, "operator")

    await supervisor._dispatch([MailboxWanted(active), MailboxWanted(suspended)])

    assert link.publisher.started == {}
    assert await placement(journal, active) == ("active", "w1", 1)
    assert await placement(journal, suspended) == ("suspended", None, 1)


async def test_a_passivated_mailbox_is_placed_again_only_if_events_came_meanwhile(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    empty, backlog = await client(journal, events=0), await client(journal)

    await supervisor._dispatch([MailboxPassivated(empty, "w1"), MailboxPassivated(backlog, "w1")])

    assert list(link.publisher.started) == [backlog]


async def test_a_mailbox_wanted_as_it_passivates_is_placed_again_once_with_nothing_unfinished(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    """A gateway's want finds the mailbox still active: it was passivating (its queue deleted,
    the journal not yet released). The want may stand for a late publish's copy of a finished
    event in a queue made again, which nothing in the journal shows: the mailbox is placed
    again when its MailboxPassivated comes, even with nothing unfinished, and only once.
    Planted: `not self._was_wanted(...)` -> `True` in Supervisor._dispatch fails at the
    first `started` assertion ({} == [...])."""
    quiet = await client(journal, events=0)
    await journal.place_mailboxes({quiet: "w1"}, 5.0, True)

    await supervisor._dispatch([MailboxesWanted(((quiet, ""),))])
    assert link.publisher.started == {}  # active on a live worker: left alone, remembered
    await journal.release_mailbox(quiet, "w1", epoch=1)
    await supervisor._dispatch([MailboxPassivated(quiet, "w1")])

    assert list(link.publisher.started) == [quiet]
    worker, epoch = link.publisher.started.pop(quiet)
    await journal.release_mailbox(quiet, worker, epoch=epoch)
    await supervisor._dispatch([MailboxPassivated(quiet, worker)])
    assert link.publisher.started == {}  # no want since: passivated for good


async def test_a_client_the_relay_republished_to_is_placed_though_its_event_finished_meanwhile(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    """The relay republishes an unfinished event; by the time its publish declares the queue
    again, the mailbox has run the event from the journal, passivated and deleted its queue.
    The copy sits in a queue no backlog asks to activate: the sweep places the mailbox, so
    that the copy is acked and the queue deleted. Planted: the `_ensure_active` after the
    relay's pass removed from Supervisor.sweep fails with `{} == [...]`."""
    supervisor._relay = Relay(journal, link, 0.0)  # type: ignore[arg-type]
    quiet = await client(journal)  # one event, never marked published
    placed = (await journal.place_mailboxes({quiet: "w1"}, 5.0, True))[quiet]

    async def finished_and_passivated(message: EventMessage) -> None:
        await journal.record_outcome(
            message.event_id, quiet, 1, "succeeded", 1, {}, None, epoch=placed.epoch
        )
        await journal.release_mailbox(quiet, "w1", epoch=placed.epoch)

    link.publisher.on_publish = finished_and_passivated

    await supervisor.sweep()

    assert list(link.publisher.started) == [quiet]


async def test_the_sweep_places_a_mailbox_stranded_on_a_dead_worker(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    """Planted: `c.host not in live` → `c.host is None` in `MemoryJournal.stranded_mailboxes`
    → fails with `{} == {…: ('w1', 2)}` (a mailbox on a dead worker is never found)."""
    orphan = await client(journal, events=2)
    await journal.heartbeat("w3")
    await journal.place_mailboxes({orphan: "w3"}, 5.0, True)
    await journal.forget_worker("w3")  # it died holding the mailbox

    await supervisor._dispatch([Tick()])

    assert link.publisher.started == {orphan: ("w1", 2)}


@pytest.mark.parametrize("sessions_ended", [False, True])
async def test_a_lease_lock_gone_with_the_journals_sessions_moves_no_mailbox_at_once(
    journal: MemoryJournal, link: Link, supervisor: Supervisor, sessions_ended: bool
) -> None:
    """A backend's crash ends every PostgreSQL session, the leases' too, and the server keeps
    its start time (so live_worker_ids still trusts the locks): a worker whose handler runs is
    alive, and its lock is gone only until its next renewal. Planted: `_by_lock` without the
    `session_lost_at` check → `[True]` fails (`{…: ('w1', 2)} == {}`: the mailbox moved)."""
    busy = await client(journal, events=2)
    await journal.heartbeat("w3", holds_lock=False)  # recent heartbeat, lock gone
    await journal.place_mailboxes({busy: "w3"}, 5.0, False)
    if sessions_ended:  # the supervisor's own sessions ended too (Journal.session_lost_at)
        journal.session_lost_at = time.monotonic()

    await supervisor._dispatch([Tick()])

    if sessions_ended:  # Then it judges by heartbeats for a while: the mailbox stays
        assert link.publisher.started == {}
        assert (await placement(journal, busy))[:2] == ("active", "w3")
    else:  # Then, as for a killed process, the lock says the worker is dead
        assert set(link.publisher.started) == {busy}


async def test_a_worker_that_cannot_be_told_loses_the_mailbox_to_another(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    wanted = await client(journal)
    link.publisher.gone.add("w1")

    await supervisor._dispatch([MailboxWanted(wanted)])

    assert link.publisher.started == {wanted: ("w2", 3)}  # placed, released, placed again
    assert await placement(journal, wanted) == ("active", "w2", 3)


async def test_a_tell_that_may_have_arrived_leaves_the_placement(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    """A StartMailbox whose confirm never came may have reached w1, which may be running the
    mailbox: it must not be released and placed on w2 (planted: releasing on any
    PublishFailed, as before issue 12's review → the mailbox ends on w2)."""
    wanted = await client(journal)
    link.publisher.unconfirmed.add("w1")

    await supervisor._dispatch([MailboxWanted(wanted)])

    assert await placement(journal, wanted) == ("active", "w1", 1)
    assert link.publisher.started == {}


async def test_without_a_live_worker_nothing_is_placed(
    journal: MemoryJournal, link: Link, supervisor: Supervisor
) -> None:
    wanted = await client(journal)
    await journal.forget_worker("w1")
    await journal.forget_worker("w2")

    await supervisor._dispatch([MailboxWanted(wanted)])

    assert link.publisher.started == {}
    assert await placement(journal, wanted) == ("idle", None, 0)


async def test_the_current_owners_failure_report_suspends_the_mailbox(
    journal: MemoryJournal, supervisor: Supervisor
) -> None:
    failing = await client(journal)
    epoch = (await journal.place_mailboxes({failing: "w1"}, 5.0, True))[failing].epoch

    report = MailboxFailed(failing, "w1", "restart_intensity", "too many", epoch=epoch)
    await supervisor._dispatch([report])

    mailbox = await journal.mailbox(failing)
    assert mailbox is not None
    assert (mailbox.state, mailbox.suspended_reason) == ("suspended", "too many")


async def test_a_stale_owners_failure_report_does_not_suspend_the_new_owners_mailbox(
    journal: MemoryJournal, supervisor: Supervisor
) -> None:
    """Planted: `epoch=failed.epoch` → `epoch=None` in `Supervisor._suspend` → fails with
    `('suspended', None, 3) == ('active', 'w2', 2)`."""
    moved = await client(journal)
    old = (await journal.place_mailboxes({moved: "w1"}, 5.0, True))[moved].epoch
    await journal.forget_worker("w1")
    new = (await journal.place_mailboxes({moved: "w2"}, 5.0, True))[moved].epoch

    await supervisor._dispatch([MailboxFailed(moved, "w1", "halt", "dead event", epoch=old)])

    assert await placement(journal, moved) == ("active", "w2", new)
