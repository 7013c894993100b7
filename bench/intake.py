"""Intake: POST /v1/events at fixed concurrency, then at half that peak rate, beside raw intake.

In one run, back to back: the raw intake baseline (bench/raw.py: accept transaction + confirmed
publish, same clients, events and concurrency), then a gateway (no workers by default, as the
raw intake has no consumers) loaded from this process over loopback with pre-minted tokens:
  peak  closed loop, `--concurrency` requests in flight: accepted/s, p50/p99/p99.9;
  half  open loop paced at half the peak rate for `--half-seconds`: latency from each
        request's scheduled time (no coordinated omission); then the raw intake paced at the
        same rate, the same count, on a fresh database: the floor this machine's PostgreSQL
        and RabbitMQ set for that latency.
The peak run also reports CPU per accepted event of the gateway and of the PostgreSQL backends
serving the system's database: steadier than rates when other work shares the cores.
Bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import raw
from rig import (
    SYSTEM_ENV,
    bulk_clients,
    cpu_seconds,
    load_average,
    minter,
    paced_events,
    post_events,
    summary,
    tokens_for,
    write_results,
)

from tests import harness

BODY = {"type": "demo.echo", "payload": {"n": 1}}


def ms(figures: dict[str, float]) -> str:
    return " / ".join(f"{figures[k] * 1000:.1f}" for k in ("p50", "p99", "p999")) + " ms"


def backend_cpu(system: harness.System) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend serving the system's database."""
    rows = system.sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    cpu = {}
    for row in rows:
        with contextlib.suppress(FileNotFoundError):
            cpu[row["pid"]] = cpu_seconds(row["pid"])
    return cpu


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two snapshots; a backend started in between counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=50, help="events per client (peak run)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--workers", type=int, default=0, help="workers running meanwhile")
    parser.add_argument("--half-seconds", type=float, default=10.0, help="paced run length")
    args = parser.parse_args()
    if not (
        1 <= args.clients <= 20000
        and 1 <= args.events <= 10000
        and 1 <= args.concurrency <= 1000
        and 0 <= args.workers <= 16
        and 1 <= args.half_seconds <= 300
    ):
        parser.error("counts out of range")
    total = args.clients * args.events
    load_start = load_average()
    baseline = raw.run(args.clients, args.events, args.concurrency, 2, full=False)
    env = dict(SYSTEM_ENV)
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=args.workers, env=env) as system,
    ):
        service = minter(system)
        tokens = tokens_for(service, bulk_clients(system, args.clients, "in-"))
        gateway = system.processes["gateway"].pid
        cpu_before = cpu_seconds(gateway), backend_cpu(system)
        started = time.perf_counter()
        peak = asyncio.run(
            post_events(system.base_url, tokens, args.events, BODY, args.concurrency)
        )
        peak_rate = total / (time.perf_counter() - started)
        cpu_ms = {
            "gateway": (cpu_seconds(gateway) - cpu_before[0]) / total * 1000,
            "postgresql": spent(cpu_before[1], backend_cpu(system)) / total * 1000,
        }
        # Rows committed by one statement share accepted_at (the transaction's start).
        per_commit = system.sql("SELECT count(*)::float / count(DISTINCT accepted_at) FROM events")
        half_rate = peak_rate / 2
        count = int(half_rate * args.half_seconds)
        started = time.perf_counter()
        half = asyncio.run(paced_events(system.base_url, tokens, half_rate, count, BODY))
        achieved = count / (time.perf_counter() - started)
    raw_half = raw.run_paced(args.clients, half_rate, count)
    result: dict[str, Any] = {
        "clients": args.clients,
        "events": total,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "raw_intake": baseline,
        "accepted_per_s": peak_rate,
        "ratio_to_raw": peak_rate / baseline["intake_per_s"],
        "latency_s": summary(peak),
        "cpu_ms_per_accept": cpu_ms,
        "events_per_commit": per_commit[0][0],
        "half_rate": {"target_per_s": half_rate, "achieved_per_s": achieved, "count": count},
        "half_rate_latency_s": summary(half),
        "raw_half_rate": raw_half,
        "load_average": {"start": load_start, "end": load_average()},
    }
    print(
        f"{total} events, {args.clients} clients, {args.concurrency} in flight, "
        f"{args.workers} workers; load average {load_start:.2f} -> "
        f"{result['load_average']['end']:.2f}"
    )
    print(f"{'':30}{'per s':>8}   p50 / p99 / p99.9")
    print(
        f"{'raw intake (asyncpg + pika)':30}{baseline['intake_per_s']:>8.0f}   "
        f"{ms(baseline['accept_latency_s'])} (transaction only)"
    )
    print(f"{'POST /v1/events, peak':30}{peak_rate:>8.0f}   {ms(result['latency_s'])}")
    print(
        f"{'POST /v1/events, half peak':30}{achieved:>8.0f}   {ms(result['half_rate_latency_s'])}"
    )
    print(
        f"{'raw intake, half peak':30}{raw_half['achieved_per_s']:>8.0f}   "
        f"{ms(raw_half['accept_latency_s'])} (to the commit)"
    )
    print(f"ratio to raw intake: {result['ratio_to_raw']:.0%}")
    print(
        f"CPU ms per accepted event at peak: gateway {cpu_ms['gateway']:.2f}, "
        f"PostgreSQL {cpu_ms['postgresql']:.2f}; "
        f"{result['events_per_commit']:.1f} events per commit"
    )
    print(f"results: {write_results('intake', result)}")


if __name__ == "__main__":
    main()
