"""kill -9 of a worker holding active mailboxes: they resume on another worker, nothing lost.

There is no standby consumer on a mailbox queue: a dead worker's mailboxes wait until the
supervisor sees that it is dead (its lease's advisory lock is gone at once, since PostgreSQL
ends a dead process's session; actors/store/lease.py) and its next sweep places them on a
live worker. The printed failover figures measure exactly that, per mailbox, from the
kill to the first attempt a surviving worker starts on it (the attempt audit records who
started each attempt, with the database clock).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from supervision.supervisor import SWEEP_INTERVAL
from tests import harness
from tests.fault.load import Load
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.processes import (
    active_supervisor,
    event,
    eventually,
    install_attempt_audit,
    kill,
    now,
    post,
    seconds,
    sessions,
    start_workers,
    worker_id,
    writes,
)
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

SLOW_MS = 300


def sleep(ms: int) -> dict[str, Any]:
    return {"type": "witnessed.sleep", "payload": {"ms": ms}}


@pytest.fixture(params=["classic", "quorum"])
def system(
    request: pytest.FixtureRequest, services: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    """A gateway and two labelled workers on a fresh database, with this queue type."""
    queue_type = request.param
    with harness.running_system(
        tmp_path_factory.mktemp(f"failover-{queue_type}"),
        workers=0,
        env={"SERIATIM_QUEUE_TYPE": queue_type},
    ) as running:
        start_workers(running, "worker-1", "worker-2")
        yield running


@dataclasses.dataclass
class Snapshot:
    """Where mailboxes were placed and which events were mid-handler, just before a fault."""

    hosts: dict[str, set[str]]  # worker id -> client ids
    processing: dict[str, set[str]]  # worker id -> ids of events in status processing
    slow: set[str]  # worker ids hosting a client of SLOW_MS events
    mid_slow: set[str]  # worker ids mid-way through a SLOW_MS event


def snapshot(system: System) -> Snapshot:
    rows = system.sql(
        "SELECT c.host, c.id::text AS client_id, e.id::text AS event_id, "
        "       (e.payload->>'ms')::int AS ms, "
        "       EXISTS (SELECT 1 FROM events s WHERE s.client_id = c.id "
        "               AND s.payload->>'ms' = $1) AS slow "
        "FROM clients c LEFT JOIN events e ON e.client_id = c.id AND e.status = 'processing' "
        "WHERE c.host IS NOT NULL",
        str(SLOW_MS),
    )
    shot = Snapshot({}, {}, set(), set())
    for row in rows:
        shot.hosts.setdefault(row["host"], set()).add(row["client_id"])
        if row["slow"]:
            shot.slow.add(row["host"])
        if row["event_id"] is not None:
            shot.processing.setdefault(row["host"], set()).add(row["event_id"])
            if row["ms"] == SLOW_MS:
                shot.mid_slow.add(row["host"])
    return shot


async def test_a_killed_worker_s_mailboxes_resume_on_another_worker_and_a_new_worker_takes_new_clients(  # noqa: E501
    system: System, request: pytest.FixtureRequest
) -> None:
    queue_type = request.node.callspec.params["system"]
    ids = {name: worker_id(system, name) for name in ("worker-1", "worker-2")}
    names = {wid: name for name, wid in ids.items()}

    # Given both audits and steady load: 20 ms and 50 ms events from eight clients, and
    # 300 ms events from two more whose mailboxes are nearly always mid-event
    install_audit(system)
    install_attempt_audit(system)
    loads = [
        Load(system, clients=4, per_second=20, body=sleep(20)),
        Load(system, clients=4, per_second=20, body=sleep(50)),
        Load(system, clients=2, per_second=6, body=sleep(SLOW_MS)),
    ]
    for load in loads:
        await load.prepare()  # (the clients exist before the clocks below start)
    running = [asyncio.create_task(load.run()) for load in loads]
    supervisor = await eventually(lambda: active_supervisor(system), 30, "an active supervisor")
    placed: Snapshot = await eventually(
        lambda: (s := snapshot(system)) and sum(map(len, s.hosts.values())) >= 10 and s,
        30,
        "every load client to be placed",
    )

    # When a worker mid-way through a 300 ms event is killed with SIGKILL (preferably the
    # one not running the supervisor, so that this measures mailbox failover alone)
    victim_id = sorted(placed.slow, key=lambda wid: names[wid] == supervisor)[0]
    victim = names[victim_id]
    shot: Snapshot = await eventually(
        lambda: victim_id in (s := snapshot(system)).mid_slow and s,
        30,
        f"{victim} to be mid-way through a {SLOW_MS} ms event",
    )
    killed_at = kill(system, victim)
    # (a statement it sent just before dying may still run: wait until PostgreSQL has
    # closed its sessions, after which nothing it sent can write)
    await eventually(lambda: not sessions(system, victim), 30, f"{victim}'s sessions to close")
    sessions_closed_at = now()
    survivor = next(name for name in names.values() if name != victim)
    await asyncio.sleep(2)  # the load keeps posting to the dead worker's mailboxes
    for load in loads:
        load.stop()
    await asyncio.gather(*running)

    # Then every accepted event is terminal, in order, once
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    answered = {cid: pairs for load in loads for cid, pairs in load.answered.items()}
    report = check(system, answered, may_fail=False)
    assert report.ok, report

    # And after the kill its mailboxes ran on the survivor only (the dead worker's last
    # statements, sent before it died, ran at most until PostgreSQL closed its sessions)
    orphans = sorted(shot.hosts[victim_id])
    after = writes(system, "at > $1 AND client_id::text = ANY($2)", killed_at, orphans)
    assert all(w.at <= sessions_closed_at for w in after if w.process == victim), after
    resumed = [w for w in after if w.kind == "attempt" and w.process != victim]
    assert resumed, "the dead worker's mailboxes never resumed"
    assert {w.process for w in resumed} == {survivor}

    # And the events it had mid-handler were finished exactly once: by it before the kill,
    # or re-run from the start on the survivor (a second attempt), never both
    interrupted = 0
    for event_id in shot.processing.get(victim_id, set()):
        row = event(system, event_id)
        outcome = writes(system, "kind = 'outcome' AND event_id::text = $1", event_id)
        assert row["status"] == "succeeded", dict(row)
        assert len(outcome) == 1, outcome
        if outcome[0].process == survivor:
            interrupted += 1
            assert row["attempts"] == 2, dict(row)
        else:
            assert (outcome[0].process, row["attempts"]) == (victim, 1), dict(row)
    assert interrupted >= 1, "no event was mid-handler on the killed worker"

    first: dict[str, float] = {}
    for write in resumed:
        first.setdefault(write.client_id, seconds(write.at, killed_at))
    delays = sorted(first.values())
    spread = f"median {statistics.median(delays):.2f} s, last {delays[-1]:.2f} s"
    window = f"death seen by its lease lock, sweep every {SWEEP_INTERVAL:g} s"
    print(
        f"\n[worker failover, {queue_type} queues] kill -9 of {victim} "
        f"({'also' if victim == supervisor else 'not'} the active supervisor) holding "
        f"{len(orphans)} mailboxes, {interrupted} event(s) mid-handler: the first mailbox "
        f"resumed on {survivor} {delays[0]:.2f} s after the kill, {spread} "
        f"({len(delays)} mailboxes; {window}); {report}"
    )

    # When a replacement worker starts
    start_workers(system, "worker-3")
    replacement = worker_id(system, "worker-3")
    started_at = time.monotonic()

    # Then new clients are placed on it (the least loaded) once the supervisor has seen it
    newcomers = 0

    def newcomer_on_replacement() -> Any:
        nonlocal newcomers
        newcomers += 1
        token = system.token(system.admin_client(f"newcomer-{newcomers}"))
        event_id = post(system, token, 5)
        row = wait_for(
            lambda: (r := event(system, event_id))["status"] == "succeeded" and r,
            30,
            "a new client's first event to succeed",
        )
        return row["host"] == replacement and row

    row = wait_for(newcomer_on_replacement, 30, "a new client to be placed on worker-3")
    ran = writes(system, "event_id = $1", row["id"])
    assert {w.process for w in ran} == {"worker-3"}
    print(
        f"[worker failover, {queue_type} queues] replacement worker-3 took new client "
        f"#{newcomers} {time.monotonic() - started_at:.2f} s after it registered"
    )
