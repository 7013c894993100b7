"""End-to-end events per second: N clients post demo.echo events over HTTP, 2 workers process.

Reports intake (accepted/s and request latency), end to end (first accept → last finish),
accepted → finished latency, and verifies per-client order from the journal afterwards.
Only loopback traffic; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from rig import bulk_clients, minter, post_events, summary, write_results

from tests import harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=50, help="events per client")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (
        1 <= args.clients <= 20000
        and 1 <= args.events <= 10000
        and 1 <= args.concurrency <= 1000
        and 1 <= args.workers <= 16
    ):
        parser.error("counts out of range")
    total = args.clients * args.events
    harness.build_template()
    env = {"SERIATIM_IDLE_TIMEOUT": "3600", "SERIATIM_LOG_LEVEL": "WARNING"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=args.workers, env=env) as system,
    ):
        service = minter(system)
        tokens = {
            cid: service.issue(uuid.UUID(cid), ["events:write"])["access_token"]
            for cid in bulk_clients(system, args.clients, "tp-")
        }
        started = time.perf_counter()
        latencies = asyncio.run(
            post_events(
                system.base_url,
                tokens,
                args.events,
                {"type": "demo.echo", "payload": {"n": 1}},
                args.concurrency,
            )
        )
        intake_seconds = time.perf_counter() - started
        harness.wait_for(
            lambda: (
                system.sql("SELECT count(*) FROM events WHERE status = 'succeeded'")[0][0] == total
            ),
            900,
            f"{total} events to succeed",
            interval=0.2,
        )
        rows = system.sql(
            "SELECT client_id::text, seq, accepted_at, started_at, finished_at FROM events "
            "ORDER BY client_id, seq"
        )
    first_accept = min(r["accepted_at"] for r in rows)
    last_finish = max(r["finished_at"] for r in rows)
    e2e_seconds = (last_finish - first_accept).total_seconds()
    by_client = defaultdict(list)
    for row in rows:
        by_client[row["client_id"]].append(row)
    violations = sum(
        1
        for events in by_client.values()
        for a, b in itertools.pairwise(events)
        if a["finished_at"] > b["started_at"]
    )
    done_latency = [(r["finished_at"] - r["accepted_at"]).total_seconds() for r in rows]
    result = {
        "clients": args.clients,
        "events": total,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "intake_per_s": total / intake_seconds,
        "intake_latency_s": summary(latencies),
        "end_to_end_per_s": total / e2e_seconds,
        "accepted_to_finished_s": summary(done_latency),
        "order_violations": violations,
    }
    print(
        f"{total} events, {args.clients} clients, {args.workers} workers, "
        f"{args.concurrency} requests in flight"
    )
    print(
        f"intake:      {result['intake_per_s']:8.0f} accepted/s   request p50 "
        f"{result['intake_latency_s']['p50'] * 1000:.1f} ms p99 "
        f"{result['intake_latency_s']['p99'] * 1000:.1f} ms"
    )
    print(
        f"end to end:  {result['end_to_end_per_s']:8.0f} events/s     accepted->finished p50 "
        f"{result['accepted_to_finished_s']['p50'] * 1000:.0f} ms p99 "
        f"{result['accepted_to_finished_s']['p99'] * 1000:.0f} ms"
    )
    print(f"order violations: {violations}")
    print(f"results: {write_results('throughput', result)}")


if __name__ == "__main__":
    main()
