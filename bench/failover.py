"""Failover cost: from kill -9 of a worker to its mailboxes processing again on another worker.

A gateway and `--workers` workers; `--clients` clients get one event each so that their
mailboxes are active and placed. Each run kills (SIGKILL) the worker hosting the most
mailboxes, at once posts one new event to each of its clients, and measures, per mailbox,
kill -> that event started (journal timestamps, same clock), then starts a replacement worker.
Reports per run the first, median and last mailbox back, and the median over runs.
Timing settings (liveness window, sweeps) come from the usual SERIATIM_* environment.
Only loopback traffic; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rig import (
    SYSTEM_ENV,
    bulk_clients,
    load_average,
    minter,
    post_events,
    summary,
    tokens_for,
    write_results,
)

from tests import harness

BODY = {"type": "demo.echo", "payload": {"n": 1}}


def succeeded(system: harness.System) -> int:
    return int(system.sql("SELECT count(*) FROM events WHERE status = 'succeeded'")[0][0])


def one_run(system: harness.System, tokens: dict[str, str], spawned: int) -> dict[str, Any]:
    rows = system.sql(
        "SELECT w.pid, array_agg(c.id::text) FROM clients c JOIN workers w ON w.id = c.host "
        "WHERE c.state = 'active' GROUP BY w.pid ORDER BY count(*) DESC LIMIT 1"
    )
    pid, victims = rows[0][0], list(rows[0][1])
    name = next(n for n, p in system.processes.items() if p.pid == pid)
    done = succeeded(system)
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    system.processes[name].wait()
    asyncio.run(post_events(system.base_url, {c: tokens[c] for c in victims}, 1, BODY, 32))
    harness.wait_for(
        lambda: succeeded(system) >= done + len(victims),
        120,
        "the killed worker's mailboxes to process again",
        interval=0.05,
    )
    back = [
        row[0] - killed
        for row in system.sql(
            "SELECT extract(epoch FROM e.started_at)::float FROM events e "
            "JOIN clients c ON c.id = e.client_id "
            "WHERE e.client_id = ANY($1::uuid[]) AND e.seq = c.last_seq",
            victims,
        )
    ]
    del system.processes[name]
    system.spawn(f"worker-r{spawned}", "worker")
    harness.wait_for(lambda: system.live_workers() >= 2, 60, "a replacement worker")
    return {"killed": name, "mailboxes": len(victims), "back_s": summary(back)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="kill -9 runs")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (1 <= args.runs <= 20 and 1 <= args.clients <= 10000 and 2 <= args.workers <= 16):
        parser.error("counts out of range")
    harness.build_template()
    load_start = load_average()
    timing = {k: v for k, v in os.environ.items() if k.startswith("SERIATIM_")}
    timing.pop("SERIATIM_TEST_AMQP_URL", None)
    env = dict(SYSTEM_ENV)
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=args.workers, env=env) as system,
    ):
        service = minter(system)
        tokens = tokens_for(service, bulk_clients(system, args.clients, "fo-"))
        asyncio.run(post_events(system.base_url, tokens, 1, BODY, 32))
        harness.wait_for(lambda: succeeded(system) >= args.clients, 120, "activation")
        runs = [one_run(system, tokens, n) for n in range(args.runs)]
    medians = [run["back_s"]["p50"] for run in runs]
    lasts = [run["back_s"]["max"] for run in runs]
    result = {
        "clients": args.clients,
        "workers": args.workers,
        "timing_environment": timing,
        "runs": runs,
        "median_of_run_medians_s": statistics.median(medians),
        "median_of_run_last_s": statistics.median(lasts),
        "load_average": {"start": load_start, "end": load_average()},
    }
    print(
        f"{args.runs} kill -9 runs, {args.clients} clients, {args.workers} workers; timing env "
        f"{timing or 'defaults'}; load average {load_start:.2f} -> "
        f"{result['load_average']['end']:.2f}"
    )
    print(f"{'run':>4}{'mailboxes':>11}{'first':>9}{'median':>9}{'last':>9}  s after kill")
    for n, run in enumerate(runs, 1):
        back = run["back_s"]
        print(
            f"{n:>4}{run['mailboxes']:>11}{back['min']:>9.2f}{back['p50']:>9.2f}{back['max']:>9.2f}"
        )
    print(
        f"failover, median over runs: median mailbox {result['median_of_run_medians_s']:.2f} s, "
        f"last mailbox {result['median_of_run_last_s']:.2f} s"
    )
    print(f"results: {write_results('failover', result)}")


if __name__ == "__main__":
    main()
