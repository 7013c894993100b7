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
import time
from typing import Any

import pika
from rig import write_results

from actors.broker import mailbox_arguments
from actors.settings import Settings
from tests.cluster.rabbit_cluster import RabbitCluster, private_cluster

SETTLE = 5.0  # seconds for the nodes' memory to settle after a phase (a bench, not a test)


def usage(cluster: RabbitCluster) -> tuple[int, int]:
    """Bytes of memory and Erlang processes, summed over the cluster's nodes."""
    memory = processes = 0
    for node in cluster.nodes:
        node.ctl("eval", "[erlang:garbage_collect(P) || P <- erlang:processes()], ok.")
        memory += int(node.ctl("eval", "erlang:memory(total).").strip())
        processes += int(node.ctl("eval", "erlang:system_info(process_count).").strip())
    return memory, processes


def channels(cluster: RabbitCluster) -> list[pika.BlockingConnection]:
    return [pika.BlockingConnection(pika.URLParameters(node.url)) for node in cluster.nodes]


def measure(cluster: RabbitCluster, queue_type: str, count: int) -> dict[str, Any]:
    settings = Settings(queue_type=queue_type, namespace=f"cost{queue_type}")
    arguments = mailbox_arguments(settings)
    names = [settings.mailbox_queue(f"q{n}") for n in range(count)]
    connections = channels(cluster)
    chans = [connection.channel() for connection in connections]
    try:
        time.sleep(SETTLE)
        base = usage(cluster)
        for n, name in enumerate(names):  # declared round the nodes: leaders spread
            chans[n % len(chans)].queue_declare(name, durable=True, arguments=arguments)
        time.sleep(SETTLE)
        idle = usage(cluster)
        for n, name in enumerate(names):
            channel = chans[n % len(chans)]
            channel.basic_publish("", name, b"{}", pika.BasicProperties(delivery_mode=2))
            channel.basic_consume(name, lambda ch, m, _p, _b: ch.basic_ack(m.delivery_tag))
        for channel in chans:  # deliver and ack what is there
            channel.connection.process_data_events(time_limit=1)
        time.sleep(SETTLE)
        active = usage(cluster)
        for n, name in enumerate(names):
            chans[n % len(chans)].queue_delete(name)
    finally:
        for connection in connections:
            connection.close()
    return {
        "type": queue_type,
        "queues": count,
        "idle_bytes_per_queue": (idle[0] - base[0]) / count,
        "idle_processes_per_queue": (idle[1] - base[1]) / count,
        "active_bytes_per_queue": (active[0] - base[0]) / count,
        "active_processes_per_queue": (active[1] - base[1]) / count,
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
    print(f"written to {write_results('broker_cost', {'results': results})}")


if __name__ == "__main__":
    main()
