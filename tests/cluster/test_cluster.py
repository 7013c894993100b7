"""A three-node RabbitMQ cluster under steady load, through the faults a cluster is for.

Two gateways and three workers on quorum mailbox queues with three replicas (tests/cluster/
rig.py). Each scenario prints the events accepted while its fault lasted and the longest any
mailbox went without an outcome across it; each passes only with nothing lost, no outcome
written twice, no gap, no overlap and no order break (tests/fault/oracle.py and the witness).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.cluster.rig import Rig, every_mailbox_since, ride_out
from tests.fault.load import Load
from tests.fault.recovery import now
from tests.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

STOPPED_APP = 30.0  # seconds one node's application stays stopped: the scenario itself


def until_every_mailbox_processes(rig: Rig, load: Load, what: str) -> None:
    """Wait (the fault still in place) until every mailbox of the load has an outcome
    recorded after this moment: the cluster serves without the node."""
    moment = now()
    wait_for(lambda: every_mailbox_since(rig.system, list(load.answered), moment), 90, what)


async def test_kill_9_of_the_node_leading_most_mailbox_queues(healthy: Rig) -> None:
    rig = healthy

    def fault(load: Load) -> int:
        leaders = rig.cluster.leaders(f"{rig.system.namespace}.mailbox.")
        node = rig.cluster.by_name(max(leaders, key=lambda name: leaders[name]))
        print(f"\n[kill -9 of the leader] mailbox queue leaders per node: {leaders}")
        node.kill()
        until_every_mailbox_processes(rig, load, "the two other nodes to serve every mailbox")
        node.start()
        return rig.cluster.heal(node)

    await ride_out(rig, "kill -9 of the node leading most mailbox queues", fault)


@pytest.mark.timeout(900)  # three node boots: 30-100 s each on a busy 2-core machine
async def test_a_rolling_restart_of_all_three_nodes(healthy: Rig) -> None:
    rig = healthy

    def fault(load: Load) -> int:
        for node in rig.cluster.nodes:  # a graceful stop: rabbitmq-server#10070 is kill -9's
            rig.cluster.restart_gracefully(node)
            until_every_mailbox_processes(rig, load, f"every mailbox after {node.name}")
        return 0

    await ride_out(rig, "rolling restart of the three nodes", fault)


async def test_one_nodes_application_stopped_for_30_seconds(healthy: Rig) -> None:
    rig = healthy

    def fault(load: Load) -> int:
        leaders = rig.cluster.leaders(f"{rig.system.namespace}.mailbox.")
        node = rig.cluster.by_name(max(leaders, key=lambda name: leaders[name]))
        node.stop_app()
        time.sleep(STOPPED_APP)  # the outage itself, not a wait for a condition
        node.start_app()
        return 0

    await ride_out(rig, f"one node's app stopped for {STOPPED_APP:.0f} s", fault)


async def test_a_gateway_killed_while_the_other_serves(healthy: Rig) -> None:
    rig = healthy

    def fault(load: Load) -> int:
        rig.system.processes["gateway-2"].kill()
        rig.system.processes["gateway-2"].wait()
        accepted = len(load.accepted)
        wait_for(lambda: len(load.accepted) >= accepted + 40, 60, "the other gateway to accept")
        until_every_mailbox_processes(rig, load, "every mailbox with one gateway")
        rig.spawn_second_gateway()
        return 0

    await ride_out(rig, "a gateway killed while the other serves", fault)


async def test_a_worker_whose_node_dies(healthy: Rig) -> None:
    rig = healthy
    # processes drift as they move round the ring at each restart: the workers on three
    # nodes again, so that the node killed is one worker's, not all three's
    await asyncio.to_thread(rig.spread)

    def fault(load: Load) -> int:
        placement = rig.placement()
        name = next(n for n, procs in placement.items() if any("worker" in p for p in procs))
        workers = [p for p in placement[name] if "worker" in p]
        print(f"\n[worker's node killed] processes per node: {placement}; killing {name}")
        node = rig.cluster.by_name(name)
        node.kill()
        wait_for(
            lambda: all(any(w in procs for procs in rig.placement().values()) for w in workers),
            60,
            f"{workers} to reconnect to another node",
        )
        until_every_mailbox_processes(rig, load, "every mailbox without the worker's node")
        node.start()
        return rig.cluster.heal(node)

    await ride_out(rig, "a worker whose node dies", fault)
