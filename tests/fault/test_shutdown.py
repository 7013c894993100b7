"""SIGTERM of a worker with handlers in flight: it drains, leaves, and its mailboxes move.

A stopping worker cancels its mailbox consumers, lets the events it holds finish (up to
DRAIN_DEADLINE), releases its mailboxes in the journal, tells the supervisor and exits 0;
the supervisor's sweep then places the mailboxes that still have a backlog elsewhere.

The two expected failures show what goes wrong when a drain lasts longer than the liveness
window (handlers of 8 s): the draining worker's mailbox is run elsewhere while it still holds
an event, and a draining active supervisor stops supervising without handing over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from seriatim.worker import DRAIN_DEADLINE
from tests import harness
from tests.fault.load import Load
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.processes import (
    active_supervisor,
    event,
    eventually,
    install_attempt_audit,
    log_of,
    now,
    post,
    seconds,
    start_workers,
    worker_id,
    writes,
)
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

HANDLER_MS = 500


@pytest.fixture
def system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with harness.running_system(tmp_path_factory.mktemp("shutdown"), workers=0) as running:
        start_workers(running, "worker-1", "worker-2")
        yield running


def in_flight(system: System) -> dict[str, tuple[set[str], set[str]]]:
    """Worker id → (its clients, the ids of its events in status processing)."""
    rows = system.sql(
        "SELECT c.host, c.id::text AS client_id, e.id::text AS event_id "
        "FROM clients c LEFT JOIN events e ON e.client_id = c.id AND e.status = 'processing' "
        "WHERE c.host IS NOT NULL"
    )
    found: dict[str, tuple[set[str], set[str]]] = {}
    for row in rows:
        clients, events = found.setdefault(row["host"], (set(), set()))
        clients.add(row["client_id"])
        if row["event_id"] is not None:
            events.add(row["event_id"])
    return found


async def test_a_terminated_worker_finishes_its_in_flight_events_and_hands_its_mailboxes_over(
    system: System,
) -> None:
    ids = {name: worker_id(system, name) for name in ("worker-1", "worker-2")}
    names = {wid: name for name, wid in ids.items()}

    # Given both audits and steady load of 500 ms events from six clients, so that each
    # worker is nearly always mid-way through several of them
    install_audit(system)
    install_attempt_audit(system)
    load = Load(
        system,
        clients=6,
        per_second=12,
        body={"type": "witnessed.sleep", "payload": {"ms": HANDLER_MS}},
    )
    await load.prepare()
    running = asyncio.create_task(load.run())
    await eventually(
        lambda: sum(len(c) for c, _ in in_flight(system).values()) >= 6,
        30,
        "every load client to be placed",
    )
    shot: dict[str, tuple[set[str], set[str]]] = await eventually(
        lambda: (s := in_flight(system)) and max(len(e) for _, e in s.values()) >= 2 and s,
        30,
        "a worker with two events in flight",
    )

    # When the worker with the most events in flight gets SIGTERM
    leaver_id = max(shot, key=lambda wid: len(shot[wid][1]))
    leaver = names[leaver_id]
    stayer = next(name for name in names.values() if name != leaver)
    clients, held = shot[leaver_id]
    process = system.processes[leaver]
    terminated_at = now()
    started = time.monotonic()
    process.terminate()

    # Then it exits 0 within the drain deadline
    code = await asyncio.to_thread(process.wait, DRAIN_DEADLINE + 10)
    drained = time.monotonic() - started
    assert code == 0, log_of(system, leaver)
    await asyncio.sleep(1.5)  # the load keeps posting to the mailboxes it held
    load.stop()
    await running

    # And every accepted event is terminal, in order, once
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    report = check(system, load.answered, may_fail=False)
    assert report.ok, report

    # And the events it had in flight finished there, once, not re-run elsewhere
    for event_id in held:
        row = system.sql("SELECT status, attempts FROM events WHERE id::text = $1", event_id)[0]
        assert (row["status"], row["attempts"]) == ("succeeded", 1), event_id
        assert [(w.kind, w.process) for w in writes(system, "event_id::text = $1", event_id)] == [
            ("attempt", leaver),
            ("outcome", leaver),
        ]

    # And it took no new message after the signal: every event accepted since then ran on
    # the other worker, which now hosts the mailboxes that had a backlog
    later: list[Any] = system.sql(
        "SELECT id::text FROM events WHERE accepted_at > $1 AND client_id::text = ANY($2)",
        terminated_at,
        sorted(clients),
    )
    assert later, "the load posted nothing to the leaving worker's mailboxes after SIGTERM"
    ran = writes(system, "event_id::text = ANY($1)", [row["id"] for row in later])
    assert {w.process for w in ran} == {stayer}
    hosts = system.sql(
        "SELECT DISTINCT host FROM clients WHERE id::text = ANY($1)", sorted(clients)
    )
    assert {row["host"] for row in hosts} <= {ids[stayer], None}
    assert not system.sql("SELECT 1 FROM workers WHERE id = $1", leaver_id)
    assert f"worker {leaver_id} stopped" in log_of(system, leaver)

    moved = writes(
        system,
        "kind = 'attempt' AND at > $1 AND client_id::text = ANY($2)",
        terminated_at,
        sorted(clients),
    )
    assert moved[0].process == stayer
    print(
        f"\n[shutdown] SIGTERM to {leaver} with {len(held)} events of {HANDLER_MS} ms in flight: "
        f"it exited 0 after {drained:.2f} s (drain deadline {DRAIN_DEADLINE:g} s); its "
        f"{len(clients)} mailboxes resumed on {stayer} {seconds(moved[0].at, terminated_at):.2f} s "
        f"after the signal; {report}"
    )


LONG_MS = 8000  # longer than the liveness window, well within the drain deadline


def long_events_on_every_worker(
    system: System, workers: set[str], posted: set[str]
) -> dict[str, tuple[str, str]]:
    """New clients, each with an 8 s event and a short one queued behind it, until every
    worker runs one of the 8 s events: worker id → (long event id, follower id). Adds the
    ids of every event it posted to `posted`."""
    on: dict[str, tuple[str, str]] = {}
    for n in range(6):
        token = system.token(system.admin_client(f"long-{n}"))
        long_id, follower = post(system, token, LONG_MS), post(system, token, 20)
        posted |= {long_id, follower}
        row = wait_for(
            lambda long_id=long_id: (r := event(system, long_id))["status"] == "processing" and r,
            30,
            "the long event to start",
        )
        on.setdefault(row["host"], (long_id, follower))
        if set(on) >= workers:
            return on
    raise AssertionError(f"six clients were placed on {set(on)} only, not on all of {workers}")


def test_a_worker_draining_a_handler_longer_than_the_liveness_window_keeps_its_mailbox(
    system: System,
) -> None:
    ids = {name: worker_id(system, name) for name in ("worker-1", "worker-2")}
    names = {wid: name for name, wid in ids.items()}
    install_audit(system)
    install_attempt_audit(system)
    supervisor = wait_for(lambda: active_supervisor(system), 30, "an active supervisor")

    # Given clients, each with an 8 s event in flight and a short one queued behind it, on
    # both workers
    started: set[str] = set()
    on = long_events_on_every_worker(system, set(ids.values()), started)

    # When the worker that is not the supervisor gets SIGTERM mid-way through one of them
    leaver = next(name for name in names.values() if name != supervisor)
    process = system.processes[leaver]
    process.terminate()
    assert process.wait(DRAIN_DEADLINE + 10) == 0, log_of(system, leaver)
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    report = check(system, {}, also=started, may_fail=False)
    assert report.ok, report

    # Then it finished its in-flight event itself, once, and nobody else started that client's
    # events before the recorded finish (I3: never two events of a client in flight)
    long_id, follower = on[ids[leaver] or ""]
    finished = event(system, long_id)["finished_at"]
    trail = writes(system, "event_id::text = ANY($1)", [long_id, follower])
    early = [w for w in trail if w.process != leaver and w.at < finished]
    summary = [
        (w.seq, w.kind, w.attempt, w.process, round(seconds(w.at, trail[0].at), 2)) for w in trail
    ]
    print(
        f"\n[shutdown, {LONG_MS} ms handler] {leaver} got SIGTERM; that client's journal writes "
        f"(seq, kind, attempt, process, s after the first): {summary}"
    )
    assert not early, early
    assert [(w.kind, w.process) for w in trail if w.event_id == long_id] == [
        ("attempt", leaver),
        ("outcome", leaver),
    ]


def test_a_new_client_is_served_while_the_supervisor_s_worker_drains(system: System) -> None:
    ids = {name: worker_id(system, name) for name in ("worker-1", "worker-2")}
    install_audit(system)
    supervisor = wait_for(lambda: active_supervisor(system), 30, "an active supervisor")

    # Given both workers busy with an 8 s event each
    posted: set[str] = set()
    on = long_events_on_every_worker(system, set(ids.values()), posted)

    # When the worker running the active supervisor gets SIGTERM, and then a brand-new
    # client posts its first event
    process = system.processes[supervisor]
    process.terminate()
    token = system.token(system.admin_client("newcomer"))
    posted_at = now()
    first = post(system, token, 5)

    # Then that event is processed while the old supervisor's worker is still draining, that
    # is before the 8 s event it holds is finished
    assert process.wait(DRAIN_DEADLINE + 10) == 0
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    report = check(system, {}, also=[first, *posted], may_fail=False)
    assert report.ok, report
    held = event(system, on[ids[supervisor] or ""][0])
    served = event(system, first)
    print(
        f"\n[shutdown of the supervisor's worker, {LONG_MS} ms handlers] the new client's first "
        f"event succeeded {seconds(served['finished_at'], held['finished_at']):+.2f} s after the "
        f"draining worker finished its last event "
        f"({seconds(served['finished_at'], posted_at):.2f} s after it was posted)"
    )
    assert served["finished_at"] < held["finished_at"]
