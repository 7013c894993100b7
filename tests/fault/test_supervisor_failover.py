"""kill -9 of the worker running the active supervisor: a hot standby takes over.

Every worker runs a supervisor candidate on the single-active-consumer queue
`<ns>.supervisor`; when the active one's connection dies, RabbitMQ makes a standby active and
hands it the unacknowledged messages. The takeover is measured from the kill to the log line
"supervisor active on worker ..." of the new supervisor (its log's clock, same machine).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests import harness
from tests.fault.load import Load
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.processes import (
    SUPERVISOR_ACTIVE,
    active_supervisor,
    event,
    eventually,
    hosted,
    install_attempt_audit,
    kill,
    log_of,
    now,
    post,
    seconds,
    start_workers,
    supervisor_taken_at,
    worker_id,
    writes,
)
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

WORKERS = ("worker-1", "worker-2", "worker-3")


@pytest.fixture
def system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A gateway and three labelled workers: one active supervisor, two standbys."""
    with harness.running_system(tmp_path_factory.mktemp("supervisor"), workers=0) as running:
        start_workers(running, *WORKERS)
        yield running


def claims(system: System) -> list[str]:
    """The worker processes, alive or dead, whose log says their supervisor became active."""
    return sorted(name for name in WORKERS if SUPERVISOR_ACTIVE in log_of(system, name))


async def test_a_standby_supervisor_takes_over_when_the_active_one_is_killed(
    system: System,
) -> None:
    """Planted: `x-single-active-consumer` dropped from supervisor_arguments (every candidate
    active at once) → fails before the kill with
    `assert ['worker-1', ...', 'worker-3'] == ['worker-1']`. (The old `successor != supervisor`
    could not fail: active_supervisor() never returns a dead process.)"""
    # Given both audits, steady load from eight clients, and the worker running the
    # active supervisor
    install_audit(system)
    install_attempt_audit(system)
    load = Load(
        system, clients=8, per_second=40, body={"type": "witnessed.sleep", "payload": {"ms": 20}}
    )
    await load.prepare()
    running = asyncio.create_task(load.run())
    ids = {name: worker_id(system, name) for name in WORKERS}
    supervisor = await eventually(lambda: active_supervisor(system), 30, "an active supervisor")
    await eventually(
        lambda: sum(map(len, hosted(system).values())) >= 8, 30, "every load client to be placed"
    )
    orphans = sorted(hosted(system).get(ids[supervisor] or "", set()))
    # (one supervisor, and only one, was active before the kill: the standbys were idle)
    assert claims(system) == [supervisor]

    # When that worker is killed with SIGKILL under load
    killed_at = kill(system, supervisor)

    # Then a surviving worker's candidate becomes the active supervisor
    successor = await eventually(lambda: active_supervisor(system), 30, "a standby to take over")
    takeover = seconds(supervisor_taken_at(system, successor), killed_at)
    assert takeover > 0, f"{successor} claimed the supervisor {-takeover:.3f} s before the kill"
    assert claims(system) == sorted([supervisor, successor])

    # And a brand-new client's first event is still placed and processed
    token = system.token(system.admin_client("newcomer"))
    posted_at = now()
    event_id = post(system, token, 5)
    row: Any = await eventually(
        lambda: (r := event(system, event_id))["status"] == "succeeded" and r,
        30,
        "the new client's first event to succeed",
    )
    assert row["host"] in {ids[name] for name in WORKERS if name != supervisor}
    first_event = seconds(row["finished_at"], posted_at)

    await asyncio.sleep(1)
    load.stop()
    await running

    # And every accepted event is terminal, in order, once
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    report = check(system, load.answered, also=[event_id], may_fail=False)
    assert report.ok, report

    resumed = writes(
        system,
        "kind = 'attempt' AND at > $1 AND client_id::text = ANY($2) AND process <> $3",
        killed_at,
        orphans,
        supervisor,
    )
    mailbox_failover = (
        f"its {len(orphans)} mailboxes resumed {seconds(resumed[0].at, killed_at):.2f} s "
        "after the kill"
        if resumed
        else f"its {len(orphans)} mailboxes had no events after the kill"
    )
    print(
        f"\n[supervisor failover] kill -9 of {supervisor} (active supervisor): {successor} "
        f"logged taking over {takeover:.3f} s after the kill; a new client's first event "
        f"succeeded {first_event:.2f} s after it was posted "
        f"({seconds(posted_at, killed_at):.2f} s after the kill); {mailbox_failover}; {report}"
    )
