"""Counts, not timings: what each event costs in round trips to PostgreSQL and RabbitMQ and in
CPU seconds, per process, at a given number of clients (issue 14, "Activation in bulk: spike").

For each client count: a gateway and `--workers` workers (each with its metrics endpoint), the
clients made in bulk, `--total` demo.echo events spread over them (`--batch` per request), and
the difference of every process's counters across the run, divided by the events:
`seriatim_journal_statements` (one round trip each, one commit each outside a transaction) by
query, `seriatim_amqp_methods` by method (`*_wait`: a synchronous round trip), CPU seconds, and
PostgreSQL's own commit count for the run's database (pg_stat_database.xact_commit: background
work such as heartbeats included). Deterministic up to timing-dependent grouping (group commit,
the supervisor's batches), unlike throughput. Runs on a private RabbitMQ node unless
`--shared-broker`: 10,000 clients are 10,000 queues.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import guard
from rig import SYSTEM_ENV, bulk_clients, cpu_seconds, minter, tokens_for, write_results
from throughput import all_succeeded, post_echo

from tests import harness

_SAMPLE = re.compile(
    r'^(seriatim_journal_statements|seriatim_amqp_methods)_total\{\w+="([^"]+)"\} (\S+)$'
)


def scrape(url: str) -> dict[str, float]:
    """The statement and AMQP method counters of one process's /metrics."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found:
            family = "sql" if found.group(1).endswith("statements") else "amqp"
            counts[f"{family}:{found.group(2)}"] = float(found.group(3))
    return counts


def commits(system: harness.System) -> int:
    rows = system.sql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    return int(rows[0][0])


def count_run(
    clients: int, per_client: int, workers: int, concurrency: int, batch: int
) -> dict[str, Any]:
    total = clients * per_client
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=0, env=dict(SYSTEM_ENV)) as system,
    ):
        ports = {}
        for n in range(1, workers + 1):
            ports[f"worker-{n}"] = harness.free_port()
            system.spawn(f"worker-{n}", "worker", "--metrics-port", str(ports[f"worker-{n}"]))
        harness.wait_for(lambda: system.live_workers() >= workers, 60, "workers to register")
        urls = {"gateway": f"{system.base_url}/metrics"}
        urls.update({name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()})
        harness.wait_for(lambda: _answers(urls), 30, "every metrics endpoint")
        tokens = tokens_for(minter(system), bulk_clients(system, clients, "ac-"))
        before = {name: scrape(url) for name, url in urls.items()}
        cpu = {name: cpu_seconds(p.pid) for name, p in system.processes.items()}
        committed = commits(system)
        started = time.monotonic()
        post_echo(system, tokens, per_client, concurrency, batch)
        all_succeeded(system, total)
        seconds = time.monotonic() - started
        committed = commits(system) - committed
        cpu = {n: cpu_seconds(p.pid) - cpu[n] for n, p in system.processes.items()}
        after = {name: scrape(url) for name, url in urls.items()}
    per_event: dict[str, dict[str, float]] = {}
    for name in urls:
        delta = {
            key: (after[name].get(key, 0) - before[name].get(key, 0)) / total for key in after[name]
        }
        per_event[name] = {key: value for key, value in sorted(delta.items()) if value}
    return {
        "clients": clients,
        "events": total,
        "batch": batch,
        "seconds": seconds,
        "per_event": per_event,
        "round_trips_per_event": {
            name: {
                "postgresql": sum(v for k, v in counts.items() if k.startswith("sql:")),
                "rabbitmq_waited": sum(
                    v for k, v in counts.items() if k.startswith("amqp:") and k.endswith("_wait")
                ),
                "rabbitmq_methods": sum(v for k, v in counts.items() if k.startswith("amqp:")),
            }
            for name, counts in per_event.items()
        },
        "commits_per_event_database": committed / total,
        "cpu_ms_per_event": {name: s * 1000 / total for name, s in cpu.items()},
    }


def _answers(urls: dict[str, str]) -> bool:
    try:
        for url in urls.values():
            scrape(url)
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument(
        "--total", type=int, default=4000, help="events per run (at least one per client)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="events per request")
    parser.add_argument(
        "--shared-broker", action="store_true", help="run on SERIATIM_TEST_AMQP_URL's broker"
    )
    args = parser.parse_args()
    if not (
        all(1 <= c <= 20000 for c in args.clients)
        and 1 <= args.total <= 200000
        and 1 <= args.concurrency <= 1000
        and 1 <= args.workers <= 16
        and 1 <= args.batch <= 1000
    ):
        parser.error("counts out of range")
    if guard.on_a_safe_broker(args.shared_broker, 10 + args.workers * 2, sys.argv):
        return
    harness.build_template()
    runs = []
    for clients in args.clients:
        per_client = max(1, args.total // clients)
        run = count_run(clients, per_client, args.workers, args.concurrency, args.batch)
        runs.append(run)
        print(f"\n{clients} clients x {per_client} events (batch {args.batch}):")
        for name, trips in run["round_trips_per_event"].items():
            print(
                f"  {name:>9}: PostgreSQL {trips['postgresql']:.3f} statements/event, "
                f"RabbitMQ {trips['rabbitmq_waited']:.3f} waited + "
                f"{trips['rabbitmq_methods'] - trips['rabbitmq_waited']:.3f} unwaited "
                f"methods/event, CPU {run['cpu_ms_per_event'].get(name, 0):.3f} ms/event"
            )
            for key, value in run["per_event"][name].items():
                print(f"             {key:<40} {value:.4f}")
        print(
            f"  database commits per event (all processes): {run['commits_per_event_database']:.3f}"
        )
    table: dict[str, dict[int, float]] = defaultdict(dict)
    for run in runs:
        for name, ms in run["cpu_ms_per_event"].items():
            table[name][run["clients"]] = ms
    print("\nCPU ms per event: " + json.dumps(table))
    print(f"results: {write_results('activation', {'runs': runs})}")


if __name__ == "__main__":
    main()
