"""Batches through a gateway killed with SIGKILL.

A batch is accepted in one transaction and published as one message per hundred events, the
last event's of each (gateway/publishing.py); the mailbox runs the events below it from the
journal (the gap rule), and the relay publishes, one message each, what a gateway accepted
but never published. The load's senders retry a batch whose answer they lost with the same
item keys, as a client library does; the answer to that retry is the original events.
(The broker's faults with batches: tests/fault/test_broker_outage.py.)
"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.processes import kill
from tests.fault.recovery import (
    dead_processes,
    eventually,
    now,
    recovery,
    terminal_since,
    under_load,
)
from tests.harness import System

pytestmark = pytest.mark.integration

BATCH = 20  # events per request: several batches in flight at any moment
KILLS = 3  # gateway kills, one after the other, each once the load flows again


async def test_batches_survive_gateways_killed_with_sigkill(system: System) -> None:
    # Given six senders posting batches of 20 events, and events flowing
    install_audit(system)
    started = now()
    async with under_load(system, clients=6, per_second=120, batch=BATCH) as (load, _):
        await flowing(system, started, "the load")
        for _ in range(KILLS):
            # When the gateway is killed with SIGKILL (batches in flight: some committed and
            # not yet published, some not yet committed) and a new one started on its port
            await asyncio.to_thread(kill, system, "gateway")
            system.processes.pop("gateway")
            system.spawn("gateway", "gateway")
            await eventually(system.ready, 30, "the new gateway to be ready")
            back = now()

            # Then the senders' retries are answered, and new batches flow to their outcome
            await flowing(system, back, "new events")

    # And every event a 202 or 200 answered is in the journal, run once, in its seq order
    await eventually(lambda: all_terminal(system), 60, "all events to finish")
    report = check(system, load.answered, may_fail=False)
    replays = load.statuses.get(200, 0)
    print(
        f"\n[gateway killed {KILLS}x under batches of {BATCH}] {recovery(system, back)}; "
        f"HTTP statuses {load.statuses} ({replays} whole-batch replays); "
        f"connection errors {load.errors}; {report}"
    )
    assert report.ok, report
    assert report.accepted >= 300
    assert not dead_processes(system), f"processes died: {dead_processes(system)}"


async def flowing(system: System, since: datetime.datetime, what: str) -> None:
    """Wait until 100 events accepted after `since` have reached their outcome."""
    await eventually(lambda: terminal_since(system, since) >= 100, 60, what)
