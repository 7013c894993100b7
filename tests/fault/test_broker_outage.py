"""Broker outages under steady load: RabbitMQ's application stopped, and its node killed.

The system runs on a private RabbitMQ node (tests/fault/nodes.py), never on the machine's
shared broker. While the broker is down the gateway keeps accepting (the journal is the
outbox), /readyz says what is missing, and nobody is restarted by hand afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fault.nodes import RabbitNode, start_killed
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.recovery import (
    dead_processes,
    eventually,
    now,
    recovery,
    terminal_since,
    under_load,
)
from tests.harness import System, running_system, wait_for

pytestmark = pytest.mark.integration

HOLD = 3.0  # seconds the broker stays down once the gateway has noticed


@pytest.fixture
def system(services: None, broker: RabbitNode, tmp_path: Path) -> Iterator[System]:
    """A gateway and two workers on the shared PostgreSQL and the private broker."""
    with running_system(tmp_path, amqp_url=broker.url) as running:
        try:
            yield running
        finally:
            broker.ensure_running()  # so the system leaves cleanly, whatever the test did


async def ride_out(
    system: System,
    name: str,
    take_down: Callable[[], None],
    bring_back: Callable[[], None],
    batch: int = 1,
) -> None:
    """Steady load (of batches of `batch` events, above 1) through a broker outage; then the
    gateway, workers and oracle are fine."""
    # Given the outcome audit, steady load from several clients, and events flowing
    install_audit(system)
    started = now()
    async with under_load(system, per_second=30 * min(batch, 3), batch=batch) as (load, readiness):
        await eventually(lambda: terminal_since(system, started) >= 20, 30, "the load to flow")

        # When the broker goes down, stays down a few seconds, and comes back
        await asyncio.to_thread(take_down)
        before = set(load.accepted)
        await eventually(lambda: readiness.named("rabbitmq"), 15, "/readyz to name rabbitmq")
        await asyncio.sleep(HOLD)  # the outage itself, not a wait for a condition
        accepted_while_down = len(load.accepted - before)
        await asyncio.to_thread(bring_back)
        back = now()

        # Then everything reconnects by itself and processes new events
        await eventually(readiness.ready_again, 30, "/readyz to answer 200 again")
        await eventually(lambda: terminal_since(system, back) >= 20, 60, "new events to finish")

    # And every accepted event is terminal, in order, once
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    report = check(system, load.answered, may_fail=False)
    figures = recovery(system, back)
    print(
        f"\n[{name}] accepted while the broker was down: {accepted_while_down}; {figures}; "
        f"HTTP statuses {load.statuses}; {report}"
    )
    assert accepted_while_down > 0, "the gateway accepted nothing while the broker was down"
    assert not [status for status in load.statuses if status >= 500], load.statuses
    assert report.ok, report
    assert not dead_processes(system), f"processes died: {dead_processes(system)}"


async def test_a_stopped_broker_application_is_ridden_out_without_losing_events(
    system: System, broker: RabbitNode
) -> None:
    # Given steady load, When `rabbitmqctl stop_app` holds the broker down ~3 s and
    # `start_app` brings it back, Then (ride_out) nothing is lost and everyone reconnects
    await ride_out(system, "rabbitmqctl stop_app", broker.stop_app, broker.start_app)


async def test_a_killed_broker_node_is_ridden_out_without_losing_events(
    system: System, broker: RabbitNode
) -> None:
    # Given steady load, When the broker's beam process is killed with SIGKILL and the node
    # is started again ~3 s later, Then (ride_out) nothing is lost and everyone reconnects
    await ride_out(system, "kill -9 of the broker", broker.kill, lambda: start_killed(broker))


async def test_batches_ride_out_a_killed_broker_node_without_losing_events(
    system: System, broker: RabbitNode
) -> None:
    # Given senders posting batches of 20 events (one message per batch, the mailbox running
    # the rest from the journal), When the broker's node is killed with SIGKILL mid-stream
    # (batches accepted while it is down are published by the relay, one message per event)
    # and started again, Then (ride_out) nothing is lost, nothing runs twice or out of order
    await ride_out(
        system,
        "kill -9 of the broker, batches of 20",
        broker.kill,
        lambda: start_killed(broker),
        batch=20,
    )
