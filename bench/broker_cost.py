"""What the broker pays per mailbox queue: memory and Erlang processes, classic vs quorum.

Starts a three-node cluster of private RabbitMQ nodes (tests/cluster/rabbit_cluster.py; the
machine's shared broker is never used), and for each queue type and count declares that many
mailbox queues (seriatim's own arguments, actors/broker.py) spread over the nodes, then reads
every node's `erlang:memory(total)` and `erlang:system_info(process_count)`:

- idle: the queues declared, empty, no consumer (a registered client at rest);
- active: one single-active consumer on each and one message published to and acked from
  each (a client whose mailbox is live).

The work goes over `--connections` connections per node in parallel (8), all opened before
the first declare: RabbitMQ 3.10 makes a new connection wait in its handshake once quorum
members have used up the node's file handles (about 3 each), and each node's count is read
and printed after the declares. Prints and writes (bench/results/broker_cost-*.json) the
cluster-wide cost per queue above the empty cluster. Quorum queues have three replicas (one
member per node). Only loopback traffic; bounded by the counts given. Deterministic enough
to run anywhere; still, the figures are for a quiet machine:

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
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
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


def _slices(
    cluster: RabbitCluster, names: list[str], connections: int
) -> list[tuple[int, list[str]]]:
    """(connection number, names) for each of `connections` connections per node: node i
    takes every third name (so leaders spread round the nodes), cut into `connections`
    slices; connection number i * connections + k is node i's k-th."""
    size = len(cluster.nodes)
    jobs = []
    for index in range(size):
        mine = names[index::size]
        jobs += [(index * connections + k, mine[k::connections]) for k in range(connections)]
    return [(number, part) for number, part in jobs if part]


def _per_node(
    cluster: RabbitCluster,
    names: list[str],
    method: str,
    connections: int,
    held: list[pika.BlockingConnection] | None = None,
    **kwargs: Any,
) -> int:
    """Call `channel.<method>(name, **kwargs)` for every name, `connections` connections per
    node in parallel, each with its own slice of that node's names. A call that fails
    (RabbitMQ 3.10 answers a quorum declare with 541 `cluster_not_formed` when the new
    queue's members do not elect a leader in time, and closes the connection) is retried on a
    new channel, on a new connection if the old one was closed. With `held` (from
    `_open_held`), works on those connections and leaves them open. Returns how many were
    retried."""

    def run(job: tuple[int, list[str]]) -> int:
        number, mine = job
        params = parameters(cluster.nodes[number // connections].url)
        connection = connect(params) if held is None else held[number]
        channel = connection.channel()
        retried = 0
        try:
            for name in mine:
                for attempt in range(RETRIES + 1):
                    try:
                        getattr(channel, method)(name, **kwargs)
                        break
                    except pika.exceptions.AMQPError:
                        if attempt == RETRIES:
                            raise
                        retried += 1
                        # a 541 closes the connection, a channel error only the channel: a
                        # held connection is not reopened needlessly (a node past its file
                        # handles would keep the new one waiting in the handshake)
                        if not connection.is_open:
                            connection = connect(params)
                        elif channel.is_open:
                            channel.close()
                        channel = connection.channel()
            return retried
        finally:
            if held is not None and connection is held[number]:
                if channel.is_open:
                    channel.close()
            elif connection.is_open:
                connection.close()

    jobs = _slices(cluster, names, connections)
    with ThreadPoolExecutor(len(jobs)) as pool:
        return sum(pool.map(run, jobs))


def _open_held(cluster: RabbitCluster, connections: int) -> list[pika.BlockingConnection]:
    """The active phase's connections, `connections` per node in node order, opened before
    any queue is declared (their cost is in the baseline, not per queue) and held idle with
    no heartbeat until the phase. Opened later they may not open at all: RabbitMQ 3.10 takes
    a file handle for every new connection, and a node holding 10,000 quorum members had
    used ~30,000 of its 19,903 (ulimit -n 20,000 here), so new connections waited in the
    AMQP handshake for minutes (`handles` reads the count)."""
    held: list[pika.BlockingConnection] = []
    try:
        for node in cluster.nodes:
            for _ in range(connections):
                held.append(connect(parameters(node.url, held=True)))
    except BaseException:
        for connection in held:
            connection.close()
        raise
    return held


def handles(cluster: RabbitCluster) -> list[tuple[int, int]]:
    """Every node's (file handles used, limit), as RabbitMQ's file handle cache counts them."""
    counts = []
    for node in cluster.nodes:
        info = node.ctl(
            "eval",
            "I = file_handle_cache:info([total_used, total_limit]), "
            "[proplists:get_value(K, I) || K <- [total_used, total_limit]].",
        )
        used, limit = (int(n) for n in info.strip().strip("[]").split(","))
        counts.append((used, limit))
    return counts


def _activate(
    cluster: RabbitCluster,
    names: list[str],
    connections: int,
    held: list[pika.BlockingConnection],
    channels: list[Any],
) -> float:
    """Make every queue active: a consumer on it and one persistent message published to it
    and acked, the consumer kept attached (its channel goes to `channels`). The `held`
    connections (from `_open_held`) work in parallel, each on its own slice of its node's
    queues: a quorum consume and ack each go through a Raft commit. Prints a progress line
    every 30 s; returns the seconds it took."""
    jobs = _slices(cluster, names, connections)
    progress = [0] * len(jobs)  # queues acked, one slot per connection (each its own thread)
    started = time.monotonic()

    def run(job: tuple[int, list[str]], slot: int) -> None:
        number, mine = job
        connection = held[number]
        channel = connection.channel()
        channels.append(channel)

        def ack(ch: Any, method: Any, _p: Any, _b: Any) -> None:
            ch.basic_ack(method.delivery_tag)
            progress[slot] += 1

        for name in mine:
            channel.basic_publish("", name, b"{}", pika.BasicProperties(delivery_mode=2))
            channel.basic_consume(name, ack)
        while progress[slot] < len(mine):
            connection.process_data_events(time_limit=1)

    with ThreadPoolExecutor(len(jobs)) as pool:
        pending = {pool.submit(run, job, slot) for slot, job in enumerate(jobs)}
        while pending:
            done, pending = wait(pending, timeout=30, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # a failed connection ends the run, with its error
            print(
                f"  active: {sum(progress):,} of {len(names):,} queues "
                f"after {time.monotonic() - started:.0f} s",
                flush=True,
            )
    return time.monotonic() - started


def measure(
    cluster: RabbitCluster, queue_type: str, count: int, connections: int
) -> dict[str, Any]:
    settings = Settings(queue_type=queue_type, namespace=f"cost{queue_type}")
    arguments = mailbox_arguments(settings)
    names = [settings.mailbox_queue(f"q{n}") for n in range(count)]
    held = _open_held(cluster, connections)
    try:
        return _measure(cluster, queue_type, names, arguments, held, connections)
    finally:
        for connection in held:
            if connection.is_open:
                connection.close()


def _measure(
    cluster: RabbitCluster,
    queue_type: str,
    names: list[str],
    arguments: dict[str, Any],
    held: list[pika.BlockingConnection],
    connections: int,
) -> dict[str, Any]:
    count = len(names)
    time.sleep(SETTLE)
    base = usage(cluster)
    started = time.monotonic()

    retried = _per_node(
        cluster, names, "queue_declare", connections, durable=True, arguments=arguments
    )
    declared_s = time.monotonic() - started
    time.sleep(SETTLE)
    idle = usage(cluster)
    idle_handles = handles(cluster)
    print(  # kept if the active phase is cut short
        f"{queue_type:7} {count:6} queues: idle "
        f"{(idle[0] - base[0]) / count / 1024:8.1f} KiB "
        f"{(idle[1] - base[1]) / count:5.2f} processes per queue "
        f"(declared in {declared_s:.0f} s, {retried} declares retried); file handles used "
        f"per node: {', '.join(f'{used:,} of {limit:,}' for used, limit in idle_handles)}",
        flush=True,
    )

    channels: list[Any] = []
    activated_s = _activate(cluster, names, connections, held, channels)
    time.sleep(SETTLE)
    active = usage(cluster)
    for channel in channels:  # the consumers cancelled before their queues are deleted
        if channel.is_open:
            channel.close()
    _per_node(cluster, names, "queue_delete", connections, held)
    return {
        "type": queue_type,
        "queues": count,
        "declare_seconds": round(declared_s, 1),
        "declares_retried": retried,
        "activate_seconds": round(activated_s, 1),
        "connections_per_node": connections,
        "load_average": os.getloadavg(),
        "idle_bytes_per_queue": (idle[0] - base[0]) / count,
        "idle_processes_per_queue": (idle[1] - base[1]) / count,
        "active_bytes_per_queue": (active[0] - base[0]) / count,
        "active_processes_per_queue": (active[1] - base[1]) / count,
        "baseline_bytes": base[0],
        "baseline_processes": base[1],
        "idle_file_handles_per_node": idle_handles,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", default="1000,10000", help="comma-separated counts")
    parser.add_argument("--types", default="classic,quorum", help="classic, quorum or both")
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="connections per node working in parallel to declare, activate and delete (8)",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.queues.split(",")]
    types = [t.strip() for t in args.types.split(",")]
    if not counts or min(counts) < 1 or not set(types) <= {"classic", "quorum"}:
        parser.error("--queues takes positive counts; --types classic and/or quorum")
    if not 1 <= args.connections <= 64:
        parser.error("--connections takes 1 to 64 (per node)")
    results = []
    with private_cluster(3) as cluster:
        for queue_type in types:
            for count in counts:
                row = measure(cluster, queue_type, count, args.connections)
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
