"""Fairness: light clients' latency with and without one heavy client's backlog beside them.

One system (gateway + `--workers` workers), two runs of the same light load:
  alone  `--light` new clients post `--light-events` demo.echo events each, paced open loop at
         `--rate` per second in total;
  heavy  one client first posts a `--backlog`-event backlog (closed loop), then the same light
         load runs with fresh light clients while that backlog drains.
Reports the light clients' accepted -> finished percentiles (journal timestamps) of both runs,
their ratio, and how much of the heavy backlog was still queued when the light load ended.
Only loopback traffic; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from rig import (
    SYSTEM_ENV,
    bulk_clients,
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


def light_run(system: harness.System, service: Any, args: argparse.Namespace, name: str) -> Any:
    clients = bulk_clients(system, args.light, name)
    tokens = tokens_for(service, clients)
    count = args.light * args.light_events
    asyncio.run(paced_events(system.base_url, tokens, args.rate, count, BODY))
    harness.wait_for(
        lambda: (
            system.sql(
                "SELECT count(*) FROM events WHERE status = 'succeeded' "
                "AND client_id = ANY($1::uuid[])",
                clients,
            )[0][0]
            == count
        ),
        600,
        f"{count} light events to succeed",
        interval=0.1,
    )
    rows = system.sql(
        "SELECT extract(epoch FROM finished_at - accepted_at)::float FROM events "
        "WHERE client_id = ANY($1::uuid[])",
        clients,
    )
    return summary([row[0] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=10000, help="the heavy client's events")
    parser.add_argument("--light", type=int, default=100, help="light clients")
    parser.add_argument("--light-events", type=int, default=5, help="events per light client")
    parser.add_argument("--rate", type=float, default=50.0, help="light events per second")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (
        1 <= args.backlog <= 100000
        and 1 <= args.light <= 10000
        and 1 <= args.light_events <= 1000
        and 1 <= args.rate <= 5000
        and 1 <= args.workers <= 16
    ):
        parser.error("counts out of range")
    harness.build_template()
    load_start = load_average()
    env = dict(SYSTEM_ENV)
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=args.workers, env=env) as system,
    ):
        service = minter(system)
        alone = light_run(system, service, args, "light-a-")
        (heavy,) = bulk_clients(system, 1, "heavy-")
        token = service.issue(uuid.UUID(heavy), ["events:write"])["access_token"]
        asyncio.run(post_events(system.base_url, {heavy: token}, args.backlog, BODY, 32))
        backlog = "SELECT last_seq - done_seq FROM clients WHERE id = $1::uuid"
        at_start = system.sql(backlog, heavy)[0][0]
        beside = light_run(system, service, args, "light-b-")
        remaining = system.sql(backlog, heavy)[0][0]
    result = {
        "light_clients": args.light,
        "light_events": args.light * args.light_events,
        "rate_per_s": args.rate,
        "backlog": args.backlog,
        "alone_s": alone,
        "beside_heavy_s": beside,
        "p99_ratio": beside["p99"] / alone["p99"],
        "heavy_backlog_at_light_start": at_start,
        "heavy_backlog_left_at_end": remaining,
        "load_average": {"start": load_start, "end": load_average()},
    }
    print(
        f"{args.light} light clients x {args.light_events} events at {args.rate:g}/s; heavy "
        f"backlog {args.backlog}; load average {load_start:.2f} -> "
        f"{result['load_average']['end']:.2f}"
    )
    print(f"{'light clients, accepted->finished':36}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}  ms")
    for label, figures in (("alone", alone), ("beside the heavy backlog", beside)):
        print(
            f"{label:36}"
            + "".join(f"{figures[k] * 1000:>8.0f}" for k in ("p50", "p95", "p99", "max"))
        )
    print(
        f"p99 ratio {result['p99_ratio']:.2f}; heavy backlog queued when the light load "
        f"started: {at_start}, when it finished: {remaining}"
    )
    print(f"results: {write_results('fairness', result)}")


if __name__ == "__main__":
    main()
