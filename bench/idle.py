"""Registered idle clients: start-up time and memory of a system with many clients at rest.

Starts a gateway and `--workers` workers on an empty journal, measures start-up time (spawn ->
gateway ready and every worker registered) and each process's RSS, stops; then inserts
`--clients` clients straight into the journal (no events, no queues: registered and idle) and
does the same again. The difference per client is what an idle mailbox costs at rest.
Only loopback traffic; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from rig import load_average, process_figures, write_results

from tests import harness


def start_and_measure(database: str, workers: int, tmp: Path) -> dict[str, Any]:
    env = {"SERIATIM_LOG_LEVEL": "WARNING"}
    system = harness.System(tmp, database, harness.new_namespace(), workers, env)
    started = time.perf_counter()
    try:
        system.start()
        startup = time.perf_counter() - started
        time.sleep(3)  # a supervisor sweep or two over the clients
        figures = {name: process_figures(p.pid) for name, p in system.processes.items()}
    finally:
        system.stop()
        harness.delete_namespace(system.namespace, database)
    return {"startup_s": startup, "processes": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100000, help="registered idle clients")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (1 <= args.clients <= 1000000 and 1 <= args.workers <= 16):
        parser.error("counts out of range")
    harness.build_template()
    load_start = load_average()
    database = harness.create_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            empty = start_and_measure(database, args.workers, Path(tmp))
            system = harness.System(Path(tmp), database, "unused", 0)
            began = time.perf_counter()
            system.sql(
                "INSERT INTO clients (name, secret_hash) SELECT 'idle-' || g, 'bench:no-secret' "
                "FROM generate_series(1, $1) AS g",
                args.clients,
            )
            inserted = time.perf_counter() - began
            full = start_and_measure(database, args.workers, Path(tmp))
    finally:
        harness.drop_database(database)
    per_client = {
        name: (full["processes"][name]["rss_kib"] - figures["rss_kib"]) * 1024 / args.clients
        for name, figures in empty["processes"].items()
    }
    result = {
        "clients": args.clients,
        "insert_s": inserted,
        "empty": empty,
        "with_idle_clients": full,
        "bytes_per_idle_client": per_client,
        "load_average": {"start": load_start, "end": load_average()},
    }
    print(
        f"{args.clients} idle clients ({inserted:.1f} s to insert); load average "
        f"{load_start:.2f} -> {result['load_average']['end']:.2f}"
    )
    print(f"{'':12}{'RSS empty':>12}{'RSS idle':>12}{'bytes/client':>14}")
    for name, figures in empty["processes"].items():
        print(
            f"{name:12}{figures['rss_kib'] / 1024:>10.1f}Mi"
            f"{full['processes'][name]['rss_kib'] / 1024:>10.1f}Mi{per_client[name]:>14.2f}"
        )
    print(
        f"start-up: empty {empty['startup_s']:.2f} s, with idle clients {full['startup_s']:.2f} s"
    )
    print(f"results: {write_results('idle', result)}")


if __name__ == "__main__":
    main()
