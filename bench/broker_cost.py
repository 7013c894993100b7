"""What the broker pays per mailbox queue: memory and Erlang processes, classic vs quorum.

Starts a three-node cluster of private RabbitMQ nodes (tests/cluster/rabbit_cluster.py; the
machine's shared broker is never used), and for each queue type and count declares that many
mailbox queues (seriatim's own arguments, actors/broker.py) spread over the nodes, then reads
every node's `erlang:memory(total)` and `erlang:system_info(process_count)`:

- idle: the queues declared, empty, no consumer (a registered client at rest);
- active: one single-active consumer on each and one message published to and acked from
  each (a client whose mailbox is live).

Prints and writes (bench/results/broker_cost-*.json) the cluster-wide cost per queue above
the empty cluster. Quorum queues have three replicas (one member per node). Only loopback
traffic; bounded by the counts given. Deterministic enough to run anywhere; still, the
figures are for a quiet machine:

    .venv/bin/python bench/broker_cost.py                       # 1,000 and 10,000 queues
    .venv/bin/python bench/broker_cost.py --queues 20 --types quorum   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from rig import write_results

from actors.broker import mailbox_arguments
from actors.settings import Settings
from tests.cluster.rabbit_cluster import RabbitCluster, private_cluster

SETTLE = 5.0  # seconds for the nodes' memory to settle after a phase (a bench, not a test)


def usage(cluster: RabbitCluster) -> tuple[int, int]:
    """Bytes of memory and Erlang processes, summed over the cluster's nodes."""
    memory = processes = 0
    for node in cluster.nodes:
        # Collect every process's garbage first, so that memory is what is live; with
        # 10,000 quorum queues on a busy machine that one call outran rabbitmqctl's 120 s
        # and ended a run: the reading is then taken without it (a little higher).
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.ctl("eval", "[erlang:garbage_collect(P) || P <- erlang:processes()], ok.")
        memory += int(node.ctl("eval", "erlang:memory(total).").strip())
        processes += int(node.ctl("eval", "erlang:system_info(process_count).").strip())
    return memory, processes


RETRIES = 5  # a quorum declare refused for `cluster_not_formed` (a busy machine) is retried


def parameters(url: str, *, held: bool = False) -> pika.URLParameters:
    """Connection parameters that survive nodes busy with 30,000 quorum members: the AMQP
    handshake gets 120 s (pika's default 15 s ended a 10,000-queue run while opening the
    active phase's connections); a connection `held` idle while other nodes are worked on
    has no heartbeat, so that the broker keeps its consumers however long that takes."""
    params = pika.URLParameters(url)
    params.socket_timeout = params.stack_timeout = 120
    if held:
        params.heartbeat = 0
    return params


def connect(params: pika.URLParameters) -> pika.BlockingConnection:
    """A connection, tried up to RETRIES more times (a handshake can time out on a node that
    is still electing leaders for thousands of queues)."""
    for attempt in range(RETRIES + 1):
        try:
            return pika.BlockingConnection(params)
        except (pika.exceptions.AMQPConnectionError, AMQPConnectorException):
            if attempt == RETRIES:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def _per_node(cluster: RabbitCluster, names: list[str], method: str, **kwargs: Any) -> int:
    """Call `channel.<method>(name, **kwargs)` for every name, in parallel per node, each
    node's thread on its own connection with every third name (so leaders spread round the
    nodes). A call that fails (RabbitMQ 3.10 answers a quorum declare with 541
    `cluster_not_formed` when the new queue's members do not elect a leader in time, and
    closes the connection) is retried on a new connection. Returns how many were retried."""
    size = len(cluster.nodes)

    def run(index: int) -> int:
        params = parameters(cluster.nodes[index].url)
        connection = connect(params)
        channel = connection.channel()
        retried = 0
        try:
            for name in names[index::size]:
                for attempt in range(RETRIES + 1):
                    try:
                        getattr(channel, method)(name, **kwargs)
                        break
                    except pika.exceptions.AMQPError:
                        if attempt == RETRIES:
                            raise
                        retried += 1
                        if connection.is_open:
                            connection.close()
                        connection = connect(params)
                        channel = connection.channel()
            return retried
        finally:
            if connection.is_open:
                connection.close()

    with ThreadPoolExecutor(size) as pool:
        return sum(pool.map(run, range(size)))


def measure(cluster: RabbitCluster, queue_type: str, count: int) -> dict[str, Any]:
    settings = Settings(queue_type=queue_type, namespace=f"cost{queue_type}")
    arguments = mailbox_arguments(settings)
    names = [settings.mailbox_queue(f"q{n}") for n in range(count)]
    held: list[pika.BlockingConnection] = []
    time.sleep(SETTLE)
    base = usage(cluster)
    started = time.monotonic()

    retried = _per_node(cluster, names, "queue_declare", durable=True, arguments=arguments)
    declared_s = time.monotonic() - started
    time.sleep(SETTLE)
    idle = usage(cluster)
    print(  # kept if the active phase is cut short
        f"{queue_type:7} {count:6} queues: idle "
        f"{(idle[0] - base[0]) / count / 1024:8.1f} KiB "
        f"{(idle[1] - base[1]) / count:5.2f} processes per queue "
        f"(declared in {declared_s:.0f} s, {retried} declares retried)",
        flush=True,
    )

    # active: a consumer on every queue, one message through each, consumers kept attached;
    # one connection per node, opened when its node's turn comes
    size = len(cluster.nodes)
    try:
        for index, node in enumerate(cluster.nodes):
            connection = connect(parameters(node.url, held=True))
            held.append(connection)
            channel = connection.channel()
            acked = [0]

            def ack(ch: Any, method: Any, _p: Any, _b: Any, acked: list[int] = acked) -> None:
                ch.basic_ack(method.delivery_tag)
                acked[0] += 1

            mine = names[index::size]
            for name in mine:
                channel.basic_publish("", name, b"{}", pika.BasicProperties(delivery_mode=2))
                channel.basic_consume(name, ack)
            while acked[0] < len(mine):
                connection.process_data_events(time_limit=1)
        time.sleep(SETTLE)
        active = usage(cluster)
    finally:
        for connection in held:
            if connection.is_open:
                connection.close()

    _per_node(cluster, names, "queue_delete")
    return {
        "type": queue_type,
        "queues": count,
        "declare_seconds": round(declared_s, 1),
        "declares_retried": retried,
        "load_average": os.getloadavg(),
        "idle_bytes_per_queue": (idle[0] - base[0]) / count,
        "idle_processes_per_queue": (idle[1] - base[1]) / count,
        "active_bytes_per_queue": (active[0] - base[0]) / count,
        "active_processes_per_queue": (active[1] - base[1]) / count,
        "baseline_bytes": base[0],
        "baseline_processes": base[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", default="1000,10000", help="comma-separated counts")
    parser.add_argument("--types", default="classic,quorum", help="classic, quorum or both")
    args = parser.parse_args()
    counts = [int(n) for n in args.queues.split(",")]
    types = [t.strip() for t in args.types.split(",")]
    if not counts or min(counts) < 1 or not set(types) <= {"classic", "quorum"}:
        parser.error("--queues takes positive counts; --types classic and/or quorum")
    results = []
    with private_cluster(3) as cluster:
        for queue_type in types:
            for count in counts:
                row = measure(cluster, queue_type, count)
                print(
                    f"{queue_type:7} {count:6} queues: idle "
                    f"{row['idle_bytes_per_queue'] / 1024:8.1f} KiB "
                    f"{row['idle_processes_per_queue']:5.2f} processes; active "
                    f"{row['active_bytes_per_queue'] / 1024:8.1f} KiB "
                    f"{row['active_processes_per_queue']:5.2f} processes per queue",
                    flush=True,
                )
                results.append(row)
                print(json.dumps(row), flush=True)  # kept if a later count is cut short
    print(f"written to {write_results('broker_cost', {'results': results})}")


if __name__ == "__main__":
    main()
