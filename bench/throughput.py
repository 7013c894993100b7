"""End to end: clients post demo.echo events over HTTP, workers process, beside the raw baseline.

For each client count, back to back: the raw per-event baseline (bench/raw.py: accept,
confirmed publish, prefetch-1 consume, fenced outcome, ack; same clients, events, concurrency
and consumer processes), the same baseline with every client's queue declared and consumed
only on its first event and cancelled after its last (`raw.run(on_demand=True)`: what
seriatim does, activating and passivating mailboxes inside the measured window), then a
gateway and `--workers` workers loaded from this process. With `--http-floor`, also the
per-event baseline with its intake behind HTTP (`raw.run(http=True)`: uvicorn, a Starlette
route, the same HTTP client), the floor of any system that takes events over HTTP. With
`--journal-floor`, also that floor with seriatim's own per-event statements in its consumers
(`raw.run(http=True, journal=True)`: the fenced attempt start before the handler, the fenced
outcome after it), the floor of any system that keeps seriatim's journal, and with only the
attempt counted under the placement's fence before the outcome (`counted=True`), the least
that keeps exclusion and counted attempts.
Reports intake, processed/s (first accept -> last finish), accepted -> finished latency from
the journal's timestamps, and verifies per-client order from the journal afterwards.
Only loopback traffic; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import raw
from rig import (
    SYSTEM_ENV,
    bulk_clients,
    cpu_by_part,
    cpu_seconds,
    load_average,
    machine_busy,
    minter,
    parts_since,
    post_events,
    summary,
    tokens_for,
    write_results,
)

from actors.broker import mailbox_arguments
from actors.settings import Settings
from tests import harness


def order_violations(rows: list[Any]) -> int:
    """Events of one client that overlap or run out of seq order, or a gap in its seqs."""
    by_client = defaultdict(list)
    for row in rows:
        by_client[row["client_id"]].append(row)
    bad = 0
    for events in by_client.values():
        bad += sum(1 for n, e in enumerate(events, 1) if e["seq"] != n)
        bad += sum(
            1
            for a, b in itertools.pairwise(events)
            if a["finished_at"] > b["started_at"] or a["started_at"] > b["started_at"]
        )
    return bad


def post_echo(
    system: harness.System,
    tokens: dict[str, str],
    per_client: int,
    concurrency: int,
    batch: int = 1,
) -> list[float]:
    """`per_client` demo.echo events for every client over HTTP, `batch` per request
    (POST /v1/events/batch when more than 1); the request latencies."""
    body = {"type": "demo.echo", "payload": {"n": 1}}
    return asyncio.run(
        post_events(system.base_url, tokens, per_client, body, concurrency, batch=batch)
    )


def all_succeeded(system: harness.System, total: int) -> list[Any]:
    """Wait for `total` events to succeed; then every event's seq and times, by client."""
    harness.wait_for(
        lambda: system.sql("SELECT count(*) FROM events WHERE status = 'succeeded'")[0][0] == total,
        900,
        f"{total} events to succeed",
        interval=0.2,
    )
    return system.sql(
        "SELECT client_id::text, seq, accepted_at, started_at, finished_at FROM events "
        "ORDER BY client_id, seq"
    )


def declare_mailboxes(system: harness.System, clients: list[str]) -> None:
    """Every client's mailbox queue, declared as a worker declares it: what declaring it when
    the client registers would leave for an activation (`--queues-at-registration`)."""

    async def declare() -> None:
        amqp = await raw.Amqp.open(system.amqp_url)
        try:
            queues = [system.settings_queue(client) for client in clients]
            await amqp.declare(queues, mailbox_arguments(Settings.from_env(system.env)))
        finally:
            amqp.close()

    asyncio.run(declare())


def system_run(
    clients: int,
    per_client: int,
    concurrency: int,
    workers: int,
    batch: int = 1,
    *,
    queues_declared: bool = False,
) -> dict[str, Any]:
    """A gateway and `workers` workers; `queues_declared`: every client's queue is declared
    before the clock, as it would be if a client's registration declared it."""
    total = clients * per_client
    env = dict(SYSTEM_ENV)
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=workers, env=env) as system,
    ):
        service = minter(system)
        registered = bulk_clients(system, clients, "tp-")
        if queues_declared:
            declare_mailboxes(system, registered)
        tokens = tokens_for(service, registered)
        cpu = {name: cpu_seconds(p.pid) for name, p in system.processes.items()}
        busy, parts = machine_busy(), cpu_by_part()
        started = time.perf_counter()
        latencies = post_echo(system, tokens, per_client, concurrency, batch)
        intake_seconds = time.perf_counter() - started
        rows = all_succeeded(system, total)
        window = time.perf_counter() - started
        busy = machine_busy() - busy
        by_part = parts_since(parts, total)
        cpu = {n: cpu_seconds(p.pid) - cpu[n] for n, p in system.processes.items()}
    e2e = max(r["finished_at"] for r in rows) - min(r["accepted_at"] for r in rows)
    return {
        "batch": batch,
        "intake_per_s": total / intake_seconds,
        "intake_latency_s": summary(latencies),
        "processed_per_s": total / e2e.total_seconds(),
        "accepted_to_finished_s": summary(
            [(r["finished_at"] - r["accepted_at"]).total_seconds() for r in rows]
        ),
        # Where an event's time goes, by the journal's clocks: accepted_at is the accept's
        # transaction start (its commit's flush and the 202 follow), started_at the first
        # mark_attempts' (after the publish, its confirm and the delivery), finished_at the
        # outcome's (after the handler; its commit's flush and the ack follow).
        "accepted_to_started_s": summary(
            [(r["started_at"] - r["accepted_at"]).total_seconds() for r in rows]
        ),
        "started_to_finished_s": summary(
            [(r["finished_at"] - r["started_at"]).total_seconds() for r in rows]
        ),
        "order_violations": order_violations(rows),
        "cpu_ms_per_event": {name: seconds * 1000 / total for name, seconds in cpu.items()},
        # Every process on the machine (PostgreSQL, RabbitMQ, this load generator included).
        "machine_cpu_ms_per_event": busy * 1000 / total,
        "cpu_ms_per_event_by_part": by_part,
        "cores_busy": busy / window,
    }


def drain_run(
    clients: int, per_client: int, concurrency: int, workers: int, batch: int = 1
) -> dict[str, Any]:
    """Processing alone: every event accepted while no worker runs, then `workers` start.

    processed/s over the steady part, from 10% to 90% of the events finished (the journal's
    finished_at), the figure to set beside a consumer draining a queue that was filled first;
    also first start -> last finish, activation of every mailbox included.
    """
    total = clients * per_client
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=0, env=dict(SYSTEM_ENV)) as system,
    ):
        tokens = tokens_for(minter(system), bulk_clients(system, clients, "dr-"))
        post_echo(system, tokens, per_client, concurrency, batch)
        for n in range(1, workers + 1):
            system.spawn(f"worker-{n}", "worker")
        rows = all_succeeded(system, total)
    drain = max(r["finished_at"] for r in rows) - min(r["started_at"] for r in rows)
    finished = sorted(r["finished_at"] for r in rows)
    low, high = finished[int(0.1 * total)], finished[min(total - 1, int(0.9 * total))]
    return {
        "processed_per_s": 0.8 * total / max((high - low).total_seconds(), 1e-6),
        "first_to_last_per_s": total / drain.total_seconds(),
        "order_violations": order_violations(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[10, 1000], help="client counts to run"
    )
    parser.add_argument(
        "--total", type=int, default=4000, help="events per run, spread over the clients"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="events per request: more than 1 posts each client's events to "
        "POST /v1/events/batch in batches of this size (the raw baseline stays per event)",
    )
    parser.add_argument(
        "--http-floor",
        action="store_true",
        help="also run the raw per-event baseline with its intake behind HTTP",
    )
    parser.add_argument(
        "--queues-at-registration",
        action="store_true",
        help="also run seriatim with every client's queue declared before the clock, as "
        "declaring it when the client registers would (a spike: seriatim does not)",
    )
    parser.add_argument(
        "--journal-floor",
        action="store_true",
        help="also run it over HTTP with seriatim's own per-event statements "
        "(fenced attempt start and outcome: bench/raw.py --journal --http), and with "
        "only the attempt counted under the fence before the outcome (--counted --http)",
    )
    args = parser.parse_args()
    if not (
        all(1 <= c <= 20000 for c in args.clients)
        and 1 <= args.batch <= 1000
        and 1 <= args.total <= 200000
        and 1 <= args.concurrency <= 1000
        and 1 <= args.workers <= 16
    ):
        parser.error("counts out of range")
    harness.build_template()
    runs = []
    for clients in args.clients:
        per_client = max(1, args.total // clients)
        load_start = load_average()

        baseline_run = functools.partial(
            raw.run, clients, per_client, args.concurrency, args.workers, full=True
        )
        baseline = baseline_run()
        on_demand = baseline_run(on_demand=True)
        floor = baseline_run(http=True) if args.http_floor else None
        journal_floor = baseline_run(http=True, journal=True) if args.journal_floor else None
        counted_floor = baseline_run(http=True, counted=True) if args.journal_floor else None
        figures = system_run(clients, per_client, args.concurrency, args.workers, args.batch)
        declared = (
            system_run(
                clients,
                per_client,
                args.concurrency,
                args.workers,
                args.batch,
                queues_declared=True,
            )
            if args.queues_at_registration
            else None
        )
        runs.append(
            {
                "clients": clients,
                "events": clients * per_client,
                "workers": args.workers,
                "concurrency": args.concurrency,
                "raw": baseline,
                "raw_on_demand": on_demand,
                "raw_over_http": floor,
                "raw_journal_over_http": journal_floor,
                "raw_counted_over_http": counted_floor,
                "seriatim_queues_at_registration": declared,
                **figures,
                "ratio_to_raw": figures["processed_per_s"] / baseline["processed_per_s"],
                "ratio_to_raw_on_demand": (
                    figures["processed_per_s"] / on_demand["processed_per_s"]
                ),
                "load_average": {"start": load_start, "end": load_average()},
            }
        )
    print(
        f"{args.concurrency} requests in flight, {args.workers} workers (raw: consumer processes)"
        + (f", seriatim in batches of {args.batch}" if args.batch > 1 else "")
    )
    print(
        f"{'clients':>8}{'events':>8}{'raw/s':>8}{'seriatim/s':>11}{'ratio':>7}"
        f"{'accepted/s':>11}  {'accepted->finished p50/p99/p99.9':>34}"
        f"{'raw p50/p99':>16}{'order':>7}{'load':>12}"
    )
    for run in runs:
        a2f, raw_a2f = run["accepted_to_finished_s"], run["raw"]["accepted_to_finished_s"]
        print(
            f"{run['clients']:>8}{run['events']:>8}{run['raw']['processed_per_s']:>8.0f}"
            f"{run['processed_per_s']:>11.0f}{run['ratio_to_raw']:>7.0%}"
            f"{run['intake_per_s']:>11.0f}  "
            f"{a2f['p50'] * 1000:>12.0f} /{a2f['p99'] * 1000:>7.0f} /{a2f['p999'] * 1000:>7.0f} ms"
            f"{raw_a2f['p50'] * 1000:>8.0f} /{raw_a2f['p99'] * 1000:>5.0f}"
            f"{run['order_violations']:>7}"
            f"{run['load_average']['start']:>6.2f}-{run['load_average']['end']:.2f}"
        )
    for run in runs:
        print(
            f"{run['clients']:>8} clients, raw with queues set up on demand: "
            f"{run['raw_on_demand']['processed_per_s']:.0f}/s, "
            f"seriatim {run['ratio_to_raw_on_demand']:.0%} of it"
        )
    for run in runs:
        declared = run["seriatim_queues_at_registration"]
        if declared is not None:
            print(
                f"{run['clients']:>8} clients, seriatim with every queue declared before the "
                f"clock: {declared['processed_per_s']:.0f}/s "
                f"({declared['processed_per_s'] / run['raw']['processed_per_s']:.0%} of raw, "
                f"{declared['processed_per_s'] / run['raw_on_demand']['processed_per_s']:.0%}"
                f" of on-demand raw), machine CPU "
                f"{declared['machine_cpu_ms_per_event']:.2f} ms per event (seriatim "
                f"{run['machine_cpu_ms_per_event']:.2f}), order violations "
                f"{declared['order_violations']}"
            )
    for run in runs:
        floor = run["raw_over_http"]
        if floor is not None:
            print(
                f"{run['clients']:>8} clients, raw with its intake over HTTP: "
                f"{floor['processed_per_s']:.0f}/s "
                f"({floor['processed_per_s'] / run['raw']['processed_per_s']:.0%} of raw), "
                f"request p50 {floor['accept_latency_s']['p50'] * 1000:.1f} ms, machine CPU "
                f"{floor['machine_cpu_ms_per_event']:.2f} ms per event (raw "
                f"{run['raw']['machine_cpu_ms_per_event']:.2f}, seriatim "
                f"{run['machine_cpu_ms_per_event']:.2f}); seriatim "
                f"{run['processed_per_s'] / floor['processed_per_s']:.0%} of it"
            )
    for run in runs:
        floor = run["raw_journal_over_http"]
        if floor is not None:
            print(
                f"{run['clients']:>8} clients, raw over HTTP with seriatim's statements: "
                f"{floor['processed_per_s']:.0f}/s "
                f"({floor['processed_per_s'] / run['raw']['processed_per_s']:.0%} of raw), "
                f"machine CPU {floor['machine_cpu_ms_per_event']:.2f} ms per event; seriatim "
                f"{run['processed_per_s'] / floor['processed_per_s']:.0%} of it"
            )
    for run in runs:
        floor = run["raw_counted_over_http"]
        if floor is not None:
            print(
                f"{run['clients']:>8} clients, raw over HTTP with its attempts counted: "
                f"{floor['processed_per_s']:.0f}/s "
                f"({floor['processed_per_s'] / run['raw']['processed_per_s']:.0%} of raw), "
                f"machine CPU {floor['machine_cpu_ms_per_event']:.2f} ms per event; seriatim "
                f"{run['processed_per_s'] / floor['processed_per_s']:.0%} of it"
            )
    for run in runs:
        request, a2s, s2f = (
            run["intake_latency_s"],
            run["accepted_to_started_s"],
            run["started_to_finished_s"],
        )
        print(
            f"{run['clients']:>8} clients, p50 / p99 ms: request {request['p50'] * 1000:.1f} / "
            f"{request['p99'] * 1000:.1f}, accepted->started {a2s['p50'] * 1000:.1f} / "
            f"{a2s['p99'] * 1000:.1f}, started->finished {s2f['p50'] * 1000:.1f} / "
            f"{s2f['p99'] * 1000:.1f}"
        )
    for run in runs:
        measured = {
            "raw": run["raw"],
            "floor": run["raw_over_http"],
            "journal floor": run["raw_journal_over_http"],
            "counted floor": run["raw_counted_over_http"],
            "seriatim": run,
        }
        shown = [name for name, result in measured.items() if result is not None]
        parts = ", ".join(
            f"{part} "
            + " / ".join(
                f"{measured[name]['cpu_ms_per_event_by_part'][part]:.2f}" for name in shown
            )
            for part in run["cpu_ms_per_event_by_part"]
        )
        print(
            f"{run['clients']:>8} clients, CPU ms per event by part ({' / '.join(shown)}): {parts}"
        )
    for run in runs:
        cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in run["cpu_ms_per_event"].items())
        print(f"{run['clients']:>8} clients, CPU ms per event: {cpu}")
    print(f"results: {write_results('throughput', {'runs': runs})}")


if __name__ == "__main__":
    main()
