"""Several broker nodes in SERIATIM_AMQP_URL: a process whose node is killed moves on.

Two private RabbitMQ nodes (tests/fault/nodes.py), not clustered: this proves the choice of
node, not replication (test_cluster.py runs a real cluster). On the starting code the
comma-separated list passed the settings check as one URL whose vhost was "/,amqp:" (pika's
reading of it), so no process connected to either node and the system never became ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault import nodes
from tests.harness import running_system, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[nodes.RabbitNode, nodes.RabbitNode]]:
    with nodes.private_rabbitmq_nodes(2) as (first, second):
        yield first, second


def connections(node: nodes.RabbitNode) -> list[str]:
    """The connection_name of every client connection of `node`."""
    listing = node.ctl("list_connections", "--no-table-headers", "client_properties")
    return [
        line.split('"connection_name","')[1].split('"')[0]
        for line in listing.splitlines()
        if '"connection_name","' in line
    ]


def our(names: list[str]) -> list[str]:
    return sorted(name for name in names if name.startswith("seriatim-"))


def test_processes_on_a_killed_node_move_to_the_other_one(
    services: None, two_nodes: tuple[nodes.RabbitNode, nodes.RabbitNode], tmp_path: Path
) -> None:
    first, second = two_nodes
    # Given a gateway and three workers told of both nodes
    with running_system(tmp_path, workers=3, amqp_url=f"{first.url},{second.url}") as system:
        try:
            wait_for(
                lambda: len(our(connections(first) + connections(second))) == 4,
                30,
                "every process to connect to a node",
            )
            before = {n.name: our(connections(n)) for n in two_nodes}
            print(f"\n[broker nodes] connections per node at start: {before}")
            # When the node holding most of them is killed with SIGKILL
            doomed, survivor = sorted(two_nodes, key=lambda n: -len(our(connections(n))))
            moved = our(connections(doomed))
            doomed.kill()
            # Then every process is connected to the survivor, and the gateway is ready again
            wait_for(
                lambda: len(our(connections(survivor))) == 4,
                30,
                f"{moved} to reconnect to the surviving node",
            )
            wait_for(system.ready, 30, "the gateway to be ready again")
            assert not [n for n, p in system.processes.items() if p.poll() is not None]
        finally:
            for node in two_nodes:  # so that the system leaves cleanly
                node.ensure_running()
