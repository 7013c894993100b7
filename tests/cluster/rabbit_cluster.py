"""A three-node RabbitMQ cluster of private nodes, started and joined by the tests.

Each node is a tests/fault/nodes.py RabbitNode (own name, AMQP port, distribution port,
data and logs under /tmp); the three share one Erlang cookie and are joined with
`rabbitmqctl join_cluster`, as an operator would. The machine's shared broker is never used.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from tests.fault import nodes


class RabbitCluster:
    """Three joined nodes; `url` lists every node's AMQP URL, comma-separated."""

    def __init__(self, members: list[nodes.RabbitNode], bin_dir: Path) -> None:
        self.nodes = members
        self._bin = bin_dir
        self.url = ",".join(node.url for node in members)

    def join(self) -> None:
        """Join the second and third (running) nodes to the first: their applications
        stopped and started again at once, the joins one at a time."""
        first, joining = self.nodes[0], self.nodes[1:]
        nodes.each_at_once(nodes.RabbitNode.stop_app, joining)
        for node in joining:
            node.ctl("join_cluster", first.name)
        nodes.each_at_once(nodes.RabbitNode.start_app, joining)
        running = self.running()
        assert running == {node.name for node in self.nodes}, running

    def running(self) -> set[str]:
        """The names of the cluster's running nodes, as the first live node sees them."""
        for node in self.nodes:
            with contextlib.suppress(RuntimeError):
                status = node.ctl("eval", "rabbit_nodes:all_running().")
                return {name.strip(" '[]\n") for name in status.split(",") if name.strip(" []\n")}
        return set()

    def by_name(self, name: str) -> nodes.RabbitNode:
        return next(node for node in self.nodes if node.name == name)

    def leaders(self, prefix: str) -> dict[str, int]:
        """Node name → how many quorum queues named `prefix`… it leads."""
        counts = {node.name: 0 for node in self.nodes}
        for node in self.nodes:
            with contextlib.suppress(RuntimeError):
                listing = node.ctl("list_queues", "--no-table-headers", "name", "leader")
                for line in listing.splitlines():
                    name, _, leader = line.partition("\t")
                    if name.startswith(prefix) and leader.strip() in counts:
                        counts[leader.strip()] += 1
                return counts
        return counts

    def connections(self) -> list[tuple[str, str]]:
        """(node name, connection_name) of every seriatim connection to the cluster, from
        one listing: a node with its application running lists the whole cluster's."""
        for node in self.nodes:
            if not node.listening():  # its application is stopped, or the node is down
                continue
            with contextlib.suppress(RuntimeError):
                listing = node.ctl(
                    "list_connections", "--no-table-headers", "pid", "client_properties"
                )
                return [
                    (owner.name, name)
                    for pid, name in _named(listing)
                    for owner in self.nodes  # a connection's pid, <name@host.N.N.N>, names it
                    if pid.startswith(f"<{owner.name}.") and name.startswith("seriatim-")
                ]
        return []

    def close_connection(self, name: str) -> None:
        """Close the connection named `name` from the broker's side, as a cut would."""
        for node in self.nodes:
            with contextlib.suppress(RuntimeError):
                listing = node.ctl(
                    "list_connections", "--no-table-headers", "pid", "client_properties"
                )
                for pid, named in _named(listing):
                    if named == name:
                        node.ctl("close_connection", pid, "spreading")
                        return
        raise AssertionError(f"no connection named {name}")

    def placement(self) -> dict[str, list[str]]:
        """Node name → the seriatim processes connected to it (nodes with none left out).
        A process's events connection (`<name> events`, actors/broker.Publisher) is opened
        to its link's node and counts as the process itself."""
        placed: dict[str, list[str]] = {}
        for node, name in sorted(self.connections()):
            process = name.removesuffix(" events")
            if process not in placed.setdefault(node, []):
                placed[node].append(process)
        return placed

    def restart_gracefully(self, node: nodes.RabbitNode) -> None:
        """One step of a rolling restart: wait until the node is not quorum-critical,
        stop it (`rabbitmqctl stop`), start it again and wait until it serves."""
        deadline = time.monotonic() + 60
        while True:
            try:
                nodes._run(
                    [str(self._bin / "rabbitmq-queues"), "-n", node.name,
                     "check_if_node_is_quorum_critical"],
                    node._env, node.root,
                )  # fmt: skip
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        node.ctl("stop")
        assert node.pid is not None
        nodes._wait_gone(node.pid, 30)
        node.start()

    def heal(self, node: nodes.RabbitNode) -> int:
        """Play the operator for rabbitmq/rabbitmq-server#10070 on a node restarted after
        kill -9, as tests/fault does; the number of quorum queues that needed it."""
        return node.heal_quorum_queues(grace=10)

    def ensure_running(self) -> None:
        for node in self.nodes:
            node.ensure_running()


def _named(listing: str) -> list[tuple[str, str]]:
    """(pid, connection_name) of each connection in a `pid client_properties` listing."""
    return [
        (line.split("\t")[0], line.split('"connection_name","')[1].split('"')[0])
        for line in listing.splitlines()
        if '"connection_name","' in line
    ]


@contextlib.contextmanager
def private_cluster(size: int = 3) -> Iterator[RabbitCluster]:
    """A started and joined cluster of `size` private nodes (booted at once, then joined);
    every node shut down and deleted on exit."""
    bin_dir = nodes.rabbitmq_bin()
    if bin_dir is None or not (bin_dir / "rabbitmqctl").exists():
        nodes.unavailable("rabbitmq-server is not installed: the cluster suite needs it")
    assert bin_dir is not None
    with nodes.private_rabbitmq_nodes(size, cookie=secrets.token_hex(16).upper()) as members:
        cluster = RabbitCluster(members, bin_dir)
        cluster.join()
        yield cluster
