"""A worker paused mid-event (a zombie) whose mailbox moved on: its late outcome is refused.

SIGSTOP freezes a worker while a 2 s handler runs; the broker closes its connection (as a
network cut would), so the unacknowledged message goes back to the queue, and its heartbeat
stops, so the supervisor places the mailbox on the other worker, which runs the event
again and records it. When the zombie is resumed it must abandon its run at the first point
it can (docs/reliability.md, "A frozen worker"): its lease has lapsed with a handler running,
so its watchdog ends it; had the handler returned first, the fence (the placement epoch and
`done_seq = seq - 1`) would refuse its outcome.

What "no overlap" can mean here: the zombie's handler really did run while the survivor ran
the same event (nothing can stop a paused process from finishing what it started; outside
effects are made safe by the event id, I5). What must hold is that the journal shows one
outcome, written by the survivor, that done_seq advanced once per event, and that the
witness ledger shows the survivor running the client's events one at a time, in order, the
zombie's one execution being the only run that overlaps them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.amqp import HEARTBEAT
from tests import harness, witness
from tests.fault.load import Load
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.processes import (
    close_broker_connection,
    consumers,
    event,
    eventually,
    install_attempt_audit,
    log_of,
    now,
    pause,
    post,
    resume,
    seconds,
    start_workers,
    worker_id,
    writes,
)
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

LONG_MS = 2000


async def long_event_with_two_behind(system: System, client: str) -> tuple[str, list[str], Any]:
    """A new client's 2 s event, running, with two short events queued behind it."""
    token = system.token(system.admin_client(client))
    long_id = post(system, token, LONG_MS)
    behind = [post(system, token, 20) for _ in range(2)]
    row = await eventually(
        lambda: (r := event(system, long_id))["status"] == "processing" and r["host"] and r,
        30,
        "the 2 s event to start",
    )
    return long_id, behind, row


async def abandoned(system: System, name: str) -> None:
    """Wait until a resumed worker has given up what it ran: its watchdog ended it (its lease
    lapsed while a handler ran; the kill is then marked in the witness ledger), or the
    journal refused its write."""

    def gave_up() -> bool:
        process, log = system.processes[name], log_of(system, name)
        if process.poll() is not None:
            assert "seriatim watchdog" in log, log[-2000:]
            return True
        return "fence refused the outcome of seq 1" in log or "lost its placement" in log

    await eventually(gave_up, 30, f"the resumed {name} to abandon its run")
    if system.processes[name].poll() is not None:
        witness.mark_killed(system.ledger, system.processes[name].pid)


@dataclasses.dataclass(frozen=True)
class Freeze:
    """When a worker was paused and resumed: wall clock (comparable with the database's)
    and monotonic (comparable with the witness ledger's), each taken on the safe side: the
    frozen process can have run nothing between `frozen_at` and `resumed_mono`."""

    paused_at: Any
    resumed_at: Any  # just before SIGCONT
    frozen_at: float  # just after SIGSTOP
    resumed_mono: float  # just before SIGCONT


async def frozen_until(
    system: System, name: str, done: Callable[[], Any], within: float, what: str, cut: str = ""
) -> Freeze:
    """SIGSTOP a worker (and close its broker connection if `cut` names it) until `done`;
    then SIGCONT it, whatever happened."""
    paused_at = pause(system, name)
    frozen_at = time.monotonic()  # after SIGSTOP: every run of it started before this
    resumed = False
    try:
        if cut:
            await asyncio.to_thread(close_broker_connection, cut)
        await eventually(done, within, what)
        resumed_at, resumed_mono = now(), time.monotonic()
        resume(system, name)
        resumed = True
    finally:
        if not resumed:
            resume(system, name)
    return Freeze(paused_at, resumed_at, frozen_at, resumed_mono)


def without_frozen_runs(system: System, pid: int, frozen_at: float) -> Path:
    """A copy of the witness ledger without the runs `pid` had in flight when it was frozen
    (time.monotonic() `frozen_at`): a frozen process cannot be stopped, so those runs are the
    one overlap the rule allows (docs/reliability.md, "A frozen worker")."""
    frozen = {
        run.id
        for run in witness.read(system.ledger)
        if run.pid == pid and run.start < frozen_at and (run.end is None or run.end > frozen_at)
    }
    kept = [
        line
        for line in system.ledger.read_text().splitlines()
        if json.loads(line).get("id") not in frozen
    ]
    filtered = system.tmp / "ledger-without-frozen-runs.jsonl"
    filtered.write_text("".join(f"{line}\n" for line in kept))
    return filtered


@pytest.fixture
def system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with harness.running_system(tmp_path_factory.mktemp("zombie"), workers=0) as running:
        start_workers(running, "worker-1", "worker-2")
        yield running


async def test_a_paused_worker_s_late_outcome_is_refused_by_the_fence(system: System) -> None:
    ids = {name: worker_id(system, name) for name in ("worker-1", "worker-2")}
    names = {wid: name for name, wid in ids.items()}

    # Given both audits, steady load from six clients, and one more client whose first
    # event sleeps 2 s with two short events queued behind it
    install_audit(system)
    install_attempt_audit(system)
    load = Load(
        system, clients=6, per_second=30, body={"type": "witnessed.sleep", "payload": {"ms": 20}}
    )
    await load.prepare()
    running = asyncio.create_task(load.run())
    # (every load client past seq 3 first, so that a refusal of seq 1 is this client's)
    await eventually(
        lambda: system.sql(
            "SELECT count(*) >= 6 AND min(done_seq) >= 3 FROM clients WHERE last_seq > 0"
        )[0][0],
        30,
        "every load client to have finished three events",
    )
    long_id, behind, row = await long_event_with_two_behind(system, "haunted")
    client = str(row["client_id"])
    zombie = names[row["host"]]
    survivor = next(name for name in names.values() if name != zombie)

    # When its worker is paused mid-event and the broker closes that worker's connection,
    # Then the other worker takes the mailbox over and finishes all three events; and when
    # the zombie resumes
    freeze = await frozen_until(
        system,
        zombie,
        lambda: all(event(system, e)["status"] == "succeeded" for e in [long_id, *behind]),
        30,
        "the survivor to finish the paused worker's event and those behind it",
        cut=ids[zombie] or "",
    )
    paused_at, resumed_at = freeze.paused_at, freeze.resumed_at

    # Then it abandons what it ran
    await abandoned(system, zombie)
    load.stop()
    await running
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    zombie_pid = system.processes[zombie].pid
    report = check(
        system,
        load.answered,
        also=[long_id, *behind],
        may_fail=False,
        ledger=without_frozen_runs(system, zombie_pid, freeze.frozen_at),
    )
    assert report.ok, report

    # And the journal holds one outcome, from the survivor's second attempt, recorded
    # before the zombie was resumed
    audit = system.sql("SELECT recorded_at FROM outcome_audit WHERE event_id::text = $1", long_id)
    assert len(audit) == 1
    assert audit[0]["recorded_at"] < resumed_at
    trail = writes(system, "event_id::text = $1", long_id)
    assert [(w.kind, w.attempt, w.process) for w in trail] == [
        ("attempt", 1, zombie),
        ("attempt", 2, survivor),
        ("outcome", 2, survivor),
    ]
    assert trail[1].at > paused_at

    # And done_seq advanced once per event, and each later event started after the
    # recorded finish of the one before
    position = system.sql("SELECT done_seq, last_seq FROM clients WHERE id::text = $1", client)[0]
    assert (position["done_seq"], position["last_seq"]) == (3, 3)
    outcomes = system.sql(
        "SELECT count(*) FROM outcome_audit a JOIN events e ON e.id = a.event_id "
        "WHERE e.client_id::text = $1",
        client,
    )[0][0]
    assert outcomes == 3
    # And the witness saw the survivor run them one at a time, in order, while the zombie's
    # one run of seq 1 (attempt 1) ended only after it was resumed
    runs = [run for run in witness.read(system.ledger) if run.client == client]
    haunting = [run for run in runs if run.pid == system.processes[zombie].pid]
    assert [(run.event, run.attempt) for run in haunting] == [(long_id, 1)]
    assert (haunting[0].end or 0) > freeze.resumed_mono
    survivors = [run for run in runs if run not in haunting]
    assert [(run.seq, run.attempt) for run in survivors] == [(1, 2), (2, 1), (3, 1)]
    for earlier, later in itertools.pairwise(survivors):
        assert earlier.end is not None
        assert earlier.end <= later.start

    # And the zombie wrote nothing for this client after it was resumed
    assert not writes(
        system, "client_id::text = $1 AND process = $2 AND at > $3", client, zombie, resumed_at
    )

    print(
        f"\n[zombie] {zombie} paused {seconds(paused_at, trail[0].at):.2f} s into a {LONG_MS} ms "
        f"event; {survivor} started it again {seconds(trail[1].at, paused_at):.2f} s after the "
        f"pause and recorded it {seconds(trail[2].at, paused_at):.2f} s after the pause; the "
        f"zombie, resumed {seconds(resumed_at, paused_at):.2f} s after the pause, abandoned its "
        f"run; {report}"
    )


async def test_a_worker_that_comes_back_does_not_consume_mailboxes_placed_elsewhere(
    system: System,
) -> None:
    ids = {name: worker_id(system, name) for name in ("worker-1", "worker-2")}
    names = {wid: name for name, wid in ids.items()}

    # Given a client whose mailbox is active on a worker
    token = system.token(system.admin_client("moved"))
    first = post(system, token, 5)
    row: Any = await eventually(
        lambda: (r := event(system, first))["status"] == "succeeded" and r, 30, "the first event"
    )
    client, absent = str(row["client_id"]), names[row["host"]]
    other = next(name for name in names.values() if name != absent)

    # When that worker is paused and cut off from the broker until the supervisor has placed
    # the mailbox on the other worker (which runs the client's next event), then resumed
    pause(system, absent)
    resumed = False
    try:
        await asyncio.to_thread(close_broker_connection, ids[absent] or "")
        second = post(system, token, 5)
        await eventually(
            lambda: (
                (r := event(system, second))["status"] == "succeeded" and r["host"] == ids[other]
            ),
            30,
            "the mailbox to move to the other worker",
        )
        resume(system, absent)
        resumed = True
    finally:
        if not resumed:
            resume(system, absent)
    await eventually(
        lambda: log_of(system, absent).count("connected to RabbitMQ") >= 2,
        30,
        "the resumed worker to reconnect",
    )

    # Then the mailbox has one consumer, the other worker's, where the journal places it
    queue = f"{system.namespace}.mailbox.{client}"
    found = await asyncio.to_thread(consumers, queue)
    print(f"\n[zombie comes back] consumers of the moved mailbox after it reconnected: {found}")
    assert event(system, second)["host"] == ids[other]
    assert len(found) == 1, found


async def test_a_frozen_worker_whose_connection_stays_up_loses_its_mailbox_to_the_heartbeat(
    system: System,
) -> None:
    """SIGSTOP alone, with no network cut: the frozen worker's TCP connection stays up, so it
    stays the mailbox queue's single active consumer until RabbitMQ misses its AMQP
    heartbeats (actors.amqp.HEARTBEAT) and closes the connection."""
    ids = {name: worker_id(system, name) for name in ("worker-1", "worker-2")}
    names = {wid: name for name, wid in ids.items()}
    install_attempt_audit(system)

    # Given a client whose 2 s event runs on a worker, with two events queued behind it
    long_id, behind, row = await long_event_with_two_behind(system, "frozen")
    frozen = names[row["host"]]
    survivor = next(name for name in names.values() if name != frozen)

    # When that worker is frozen, its connection left as it is, Then the other worker
    # finishes all three events once RabbitMQ drops the frozen one
    paused_at = (
        await frozen_until(
            system,
            frozen,
            lambda: all(event(system, e)["status"] == "succeeded" for e in [long_id, *behind]),
            60,
            "the survivor to take the frozen worker's mailbox over",
        )
    ).paused_at

    # And the one outcome is the survivor's; the frozen worker's is refused when it wakes
    trail = writes(system, "event_id::text = $1", long_id)
    assert [(w.kind, w.process) for w in trail][-2:] == [
        ("attempt", survivor),
        ("outcome", survivor),
    ]
    await abandoned(system, frozen)
    print(
        f"\n[frozen worker, connection up] {survivor} started the frozen worker's event again "
        f"{seconds(trail[-2].at, paused_at):.2f} s after the freeze and recorded it "
        f"{seconds(trail[-1].at, paused_at):.2f} s after it (AMQP heartbeat {HEARTBEAT} s)"
    )
