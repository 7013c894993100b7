"""The peer: Dramatiq's stock worker with a no-op actor over 200 queues, beside seriatim.

In one run, back to back:
  dramatiq  the stock `dramatiq` CLI (default processes and threads) on RabbitmqBroker with
            confirm_delivery on; `--total` Dramatiq-encoded persistent messages published with
            publisher confirms (pipelined pika, so that the publisher is not the bottleneck),
            spread over `--queues` queues; processed/s from first publish to last message done.
            No journal, no ordering guarantee.
  raw       bench/raw.py's per-event baseline for the same clients and events (asyncpg +
            pika only: the accept, publish, consume, outcome and ack every journalled event
            needs, with no HTTP and no seriatim code);
  seriatim  the same number of clients and events through bench/throughput.py's system run
            (HTTP intake, journal, strict per-client order).
Then seriatim again as a drain: every event accepted first, the workers started after, so that
the figure is processing alone, as Dramatiq's is (its publisher outruns its worker).
Every live run also reports the CPU the whole machine spent per event (/proc/stat: PostgreSQL,
RabbitMQ, publisher and load generator included) and how many cores were busy: on a machine
whose cores are all busy, throughput is CPU per event. Only loopback traffic; bounded by the
counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dramatiq
import guard
import pika
import raw
from rig import load_average, machine_busy, rabbitmqctl, write_results
from throughput import drain_run, system_run

from tests import harness

HERE = Path(__file__).resolve().parent


def queue_consumers(prefix: str) -> dict[str, int]:
    # rabbitmqctl fails now and then on a busy node: ask again
    out = rabbitmqctl("list_queues", "name", "consumers", check=False)
    pairs = (line.split() for line in out.splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[0].startswith(prefix)}


def tree_threads(session: int) -> tuple[int, int]:
    """Processes and threads of a process session (the worker and its children)."""
    processes = threads = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            processes += 1
            threads += int(fields[17])
    return processes, threads


async def publish(queues: list[str], total: int) -> float:
    """Publish `total` Dramatiq messages round robin with confirms; returns the start time."""
    amqp = await raw.Amqp.open(harness.AMQP_URL)
    await amqp.enable_confirms()
    started = time.monotonic()
    confirms = []
    for n in range(total):
        queue = queues[n % len(queues)]
        message = dramatiq.Message(
            queue_name=queue, actor_name=f"noop{n % len(queues)}", args=(), kwargs={}, options={}
        )
        confirms.append(amqp.publish(queue, message.encode(), message.message_id))
        if len(confirms) % 500 == 0:
            await asyncio.sleep(0)  # let confirms in
    await asyncio.gather(*confirms)
    amqp.close()
    return started


def peer_connections(queues: int) -> int:
    """The AMQP connections a run opens at most: the stock Dramatiq worker (one process per
    core) consumes each queue and its delay queue on a connection of its own (about 800 for
    200 queues on 2 cores, as issue 14 saw), and seriatim's gateway and workers a few."""
    return 2 * (os.cpu_count() or 1) * queues + 20


def peer_run(queues: int, total: int) -> dict[str, Any]:
    """The stock Dramatiq worker, up and consuming `queues` queues, then `total` no-op
    messages published; processed/s from the first publish to the last message done.

    The publisher (pipelined confirms) is faster than the worker, so this is the worker's
    processing rate; the publish rate is reported beside it to show that.
    """
    prefix = f"{harness.new_namespace()}.peer"
    names = [f"{prefix}{n}" for n in range(queues)]
    with tempfile.TemporaryDirectory() as counts:
        worker = start_worker(prefix, queues, counts)
        try:
            harness.wait_for(
                lambda: all(c > 0 for c in map(queue_consumers(prefix).get, names, [0] * queues)),
                120,
                "the Dramatiq worker to consume every queue",
                interval=1,
            )
            processes, threads = tree_threads(worker.pid)

            def done() -> int:
                return sum(p.stat().st_size for p in Path(counts).iterdir())

            busy = machine_busy()
            started = asyncio.run(publish(names, total))
            published = time.monotonic()
            while done() < total:
                time.sleep(0.005)
            finished = time.monotonic()
            busy = machine_busy() - busy
        finally:
            stop_worker(worker)
            delete_queues(names)
    return {
        "queues": queues,
        "messages": total,
        "processed_per_s": total / (finished - started),
        "published_per_s": total / (published - started),
        "worker_processes": processes,
        "worker_threads": threads,
        # Every process on the machine (the publisher, RabbitMQ and the worker included).
        "machine_cpu_ms_per_event": busy * 1000 / total,
        "cores_busy": busy / (finished - started),
    }


def start_worker(prefix: str, queues: int, counts: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PEER_PREFIX": prefix,
        "PEER_QUEUES": str(queues),
        "PEER_COUNT_DIR": counts,
        "PEER_AMQP_URL": harness.AMQP_URL,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "peer_actors", "--path", str(HERE)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def delete_queues(names: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(harness.AMQP_URL))
    channel = connection.channel()
    for name in names:
        for queue in (name, f"{name}.DQ", f"{name}.XQ"):
            channel.queue_delete(queue)
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=200, help="queues (seriatim: clients)")
    parser.add_argument("--total", type=int, default=4000, help="messages (seriatim: events)")
    parser.add_argument("--concurrency", type=int, default=64, help="seriatim requests in flight")
    parser.add_argument("--workers", type=int, default=2, help="seriatim workers")
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="seriatim events per request (POST /v1/events/batch when more than 1)",
    )
    parser.add_argument(
        "--shared-broker",
        action="store_true",
        help="run on the broker SERIATIM_TEST_AMQP_URL names (default: the shared one) instead "
        "of a private node started for the run; refused when that node's file-descriptor "
        "limit is too low for the connections the Dramatiq worker opens",
    )
    args = parser.parse_args()
    if not (
        1 <= args.batch <= 1000
        and 1 <= args.queues <= 1000
        and args.queues <= args.total <= 200000
        and 1 <= args.concurrency <= 1000
        and 1 <= args.workers <= 16
    ):
        parser.error("counts out of range")
    if guard.on_a_safe_broker(args.shared_broker, peer_connections(args.queues), sys.argv):
        return  # it ran on a private node
    harness.build_template()
    load_start = load_average()
    per_client = args.total // args.queues
    peer = peer_run(args.queues, args.total)
    baseline = raw.run(args.queues, per_client, args.concurrency, args.workers, full=True)
    seriatim = system_run(args.queues, per_client, args.concurrency, args.workers, args.batch)
    seriatim_drain = drain_run(args.queues, per_client, args.concurrency, args.workers, args.batch)
    result = {
        "dramatiq": peer,
        "raw": baseline,
        "seriatim": {
            "clients": args.queues,
            "events": args.queues * per_client,
            "batch": args.batch,
            **seriatim,
        },
        "ratio_seriatim_to_dramatiq": seriatim["processed_per_s"] / peer["processed_per_s"],
        "seriatim_drain": seriatim_drain,
        "ratio_seriatim_drain_to_dramatiq": (
            seriatim_drain["processed_per_s"] / peer["processed_per_s"]
        ),
        "load_average": {"start": load_start, "end": load_average()},
    }
    print(
        f"{args.total} events over {args.queues} queues/clients; load average "
        f"{load_start:.2f} -> {result['load_average']['end']:.2f}"
    )
    print(
        f"live   dramatiq stock worker (no-op, confirms): {peer['processed_per_s']:6.0f}/s   "
        f"{peer['worker_processes']} processes, {peer['worker_threads']} threads; "
        f"published at {peer['published_per_s']:.0f}/s"
    )
    print(
        f"live   raw per event (asyncpg + pika only):    {baseline['processed_per_s']:6.0f}/s   "
        f"raw / dramatiq {baseline['processed_per_s'] / peer['processed_per_s']:.0%}"
    )
    a2f = seriatim["accepted_to_finished_s"]
    print(
        f"live   seriatim (HTTP, journal, order):         {seriatim['processed_per_s']:6.0f}/s   "
        f"accepted->finished p50 {a2f['p50'] * 1000:.0f} ms p99 {a2f['p99'] * 1000:.0f} ms, "
        f"order violations {seriatim['order_violations']}   "
        f"seriatim / dramatiq {result['ratio_seriatim_to_dramatiq']:.0%}"
    )
    print(
        f"drain  seriatim (accepted first, workers after): "
        f"{seriatim_drain['processed_per_s']:6.0f}/s   steady 10-90% of the events; first to "
        f"last {seriatim_drain['first_to_last_per_s']:.0f}/s; order violations "
        f"{seriatim_drain['order_violations']}   seriatim / dramatiq "
        f"{result['ratio_seriatim_drain_to_dramatiq']:.0%}"
    )
    cores = os.cpu_count() or 1
    for name, run in (("dramatiq", peer), ("raw", baseline), ("seriatim", seriatim)):
        busy = f", {run['cores_busy']:.2f} of its {cores} cores busy" if "cores_busy" in run else ""
        print(
            f"live   {name}: the whole machine spent {run['machine_cpu_ms_per_event']:.2f} ms "
            f"of CPU per event{busy}"
        )
    print(f"results: {write_results('peer', result)}")


if __name__ == "__main__":
    main()
