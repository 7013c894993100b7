"""What RabbitMQ spends in CPU on each step of a mailbox queue's life: the activation floor.

Starts a private RabbitMQ node (the fault suite's RabbitNode; the shared broker is never used)
and, `--rounds` times over `--queues` queues with seriatim's own mailbox arguments
(actors/broker.py), measures the node's CPU time (its beam process, /proc) for:

- a fresh declare: the queue is created (a new client, or one whose queue was deleted idle);
- a declare of a queue that exists (a worker's declare before its basic.consume);
- basic.consume and basic.cancel (one activation's consumer);
- queue.delete (passivation of an idle mailbox).

Each step runs over one channel with each method waited for, then the node is left a second
to finish, and the idle node's own CPU over the same time is subtracted. The figures say how
much of an activation the broker alone costs, whatever the client does: the floor under
"1,000 clients x 4 events against queues declared before the clock" (docs/benchmarks.md).
Only loopback traffic; bounded by the counts given; for a quiet machine.

    .venv/bin/python bench/declare_cost.py                 # 2,000 queues, 3 rounds
    .venv/bin/python bench/declare_cost.py --queues 50 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
from rig import cpu_seconds, load_average, write_results

from actors.broker import mailbox_arguments
from actors.settings import Settings
from tests.fault import nodes

#: Seconds the node is left after each step's last method (its own work may trail the reply).
SETTLE = 1.0


def measure(pid: int, channel: Any, step: Callable[[], None], idle_rate: float) -> float:
    """CPU seconds the node spent on `step`, its idle rate over the same time removed."""
    time.sleep(SETTLE)
    started, cpu = time.monotonic(), cpu_seconds(pid)
    step()
    channel.connection.process_data_events(0)
    time.sleep(SETTLE)
    return cpu_seconds(pid) - cpu - idle_rate * (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=2000, help="queues per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--type", choices=("classic", "quorum"), default="classic")
    args = parser.parse_args()
    if not (1 <= args.queues <= 20000 and 1 <= args.rounds <= 10):
        parser.error("--queues must be 1-20000 and --rounds 1-10")
    bin_dir = nodes.rabbitmq_bin()
    if bin_dir is None:
        sys.exit("rabbitmq-server is not installed")
    arguments = mailbox_arguments(Settings(queue_type=args.type))
    node = nodes.RabbitNode(Path(tempfile.mkdtemp(prefix="seriatim-declare-")), bin_dir)
    load_start = load_average()
    steps: dict[str, list[float]] = {}
    try:
        node.start()
        assert node.pid is not None
        connection = pika.BlockingConnection(pika.URLParameters(node.url))
        channel = connection.channel()
        before = cpu_seconds(node.pid)
        time.sleep(5)
        idle_rate = (cpu_seconds(node.pid) - before) / 5
        for round_ in range(1, args.rounds + 1):
            names = [f"declare-cost-{round_}-{i}" for i in range(args.queues)]

            def declare(names: list[str] = names) -> None:
                for name in names:
                    channel.queue_declare(name, durable=True, arguments=arguments)

            def consume(names: list[str] = names) -> None:
                tags = [channel.basic_consume(name, lambda *_: None) for name in names]
                for tag in tags:
                    channel.basic_cancel(tag)

            def delete(names: list[str] = names) -> None:
                for name in names:
                    channel.queue_delete(name)

            for label, step in (
                ("fresh declare", declare),
                ("declare of an existing queue", declare),
                ("basic.consume + basic.cancel", consume),
                ("queue.delete", delete),
            ):
                spent = measure(node.pid, channel, step, idle_rate)
                steps.setdefault(label, []).append(1000 * spent / args.queues)
            print(
                f"round {round_}: "
                + ", ".join(f"{label} {per[-1]:.2f}" for label, per in steps.items())
                + " ms of broker CPU per queue",
                file=sys.stderr,
                flush=True,
            )
        connection.close()
    finally:
        node.remove()
    load_end = load_average()
    print(
        f"{args.queues} {args.type} queues x {args.rounds} rounds on a private node; "
        f"load average {load_start:.2f} -> {load_end:.2f}; broker CPU ms per queue:"
    )
    for label, per in steps.items():
        runs = " / ".join(f"{value:.2f}" for value in per)
        print(f"  {label:30s} median {statistics.median(per):5.2f}   ({runs})")
    result = {
        "queues": args.queues,
        "rounds": args.rounds,
        "type": args.type,
        "broker_cpu_ms_per_queue": steps,
        "load_average": {"start": load_start, "end": load_end},
    }
    print(f"results: {write_results('declare_cost', result)}")


if __name__ == "__main__":
    main()
