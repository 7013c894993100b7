"""How long the console's clients list takes with many registered clients.

    .venv/bin/python bench/console_clients.py [--clients 100000] [--backlogged 0.1] [--runs 5]

A fresh database gets `--clients` clients (a `--backlogged` share of them with a backlog and
a head event, some of those dead with an error), then the console's list query runs `--runs`
times for each way the page is asked for (largest backlog first, oldest unfinished first,
hide idle, a name filter, the second page). Reported: the median and the worst time of each,
in milliseconds. A figure, not a test: run it on a quiet machine.

With `--explain`, each way is run once under EXPLAIN (ANALYZE, BUFFERS) instead and reported
in counts, which a busy machine does not change: the shared buffers the query touched, the
rows its sorts took in (every client, when it sorts them all) and the rows its scans read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from rig import ROOT, write_results  # noqa: F401 - ROOT puts the project on sys.path

from actors.store import Journal
from actors.store.console import ConsoleReads
from actors.store.queries import QUERIES
from tests import harness

SEED = """
INSERT INTO clients (name, secret_hash, last_seq, done_seq, state)
SELECT 'client-' || n, 'x',
       CASE WHEN n % $2 = 0 THEN 10 + n % 50 ELSE 5 END,
       5,
       CASE WHEN n % $2 = 0 THEN 'active' WHEN n % 97 = 0 THEN 'suspended' ELSE 'idle' END
FROM generate_series(1, $1) AS n;
"""
HEADS = """
INSERT INTO events (client_id, seq, type, payload, status, accepted_at, error)
SELECT id, 6, 'demo.echo', '{}'::jsonb,
       CASE WHEN random() < 0.2 THEN 'retrying' ELSE 'queued' END,
       now() - random() * interval '1 hour',
       CASE WHEN random() < 0.2 THEN '{"type": "RuntimeError", "message": "boom"}'::jsonb END
FROM clients WHERE last_seq > done_seq;
"""


async def measure(reads: ConsoleReads, runs: int, **query: Any) -> dict[str, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = await reads.clients(**query)
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(times), "max_ms": max(times), "rows": len(rows)}


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


async def explain(reads: ConsoleReads, **query: Any) -> dict[str, float]:
    """Counts of one run of the list query: buffers, rows sorted, rows scanned."""
    key, after_id = query["after"] if query["after"] else (None, None)
    arguments = [query[name] for name in ("state", "name_like", "hide_idle", "sort")]
    text = await reads.pool.fetchval(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + QUERIES["console_clients"],
        *arguments,
        key,
        after_id,
        query["limit"],
    )
    top = json.loads(text)[0]["Plan"]
    nodes = _nodes(top)
    sorted_in = [
        sum(child["Actual Rows"] * child["Actual Loops"] for child in node.get("Plans", []))
        for node in nodes
        if node["Node Type"] in ("Sort", "Incremental Sort")
    ]
    scanned = sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in nodes
        if "Scan" in node["Node Type"]
    )
    return {
        "buffers": top["Shared Hit Blocks"] + top["Shared Read Blocks"],
        "largest_sort_rows": max(sorted_in, default=0),
        "rows_scanned": scanned,
        "rows": top["Actual Rows"],
    }


async def run(args: argparse.Namespace, database: str) -> dict[str, Any]:
    journal = await Journal.connect(harness.database_url(database))
    try:
        every = max(1, round(1 / args.backlogged))
        await journal.pool.execute(SEED, args.clients, every)
        await journal.pool.execute(HEADS)
        await journal.pool.execute("ANALYZE")
        reads = ConsoleReads(journal.pool)
        base = {
            "state": None,
            "name_like": None,
            "hide_idle": False,
            "after": None,
            "limit": 51,
        }
        first = await reads.clients(sort="backlog", **base)
        cases = {
            "backlog": {**base, "sort": "backlog"},
            "age": {**base, "sort": "age"},
            "hide_idle": {**base, "sort": "backlog", "hide_idle": True},
            "name": {**base, "sort": "backlog", "name_like": "%client-4242%"},
            "suspended": {**base, "sort": "backlog", "state": "suspended"},
            "second_page": {
                **base,
                "sort": "backlog",
                "after": (first[-1].sort_key, first[-1].id),
            },
        }
        if args.explain:
            return {name: await explain(reads, **query) for name, query in cases.items()}
        return {name: await measure(reads, args.runs, **query) for name, query in cases.items()}
    finally:
        await journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--backlogged", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="counts from EXPLAIN, no times")
    args = parser.parse_args()
    harness.build_template()
    database = harness.create_database()
    try:
        figures = asyncio.run(run(args, database))
    finally:
        harness.drop_database(database)
    for name, figure in figures.items():
        if args.explain:
            print(
                f"{name:12} buffers {figure['buffers']:7.0f}  largest sort"
                f" {figure['largest_sort_rows']:7.0f} rows  scanned {figure['rows_scanned']:7.0f}"
                f"  rows {figure['rows']}"
            )
            continue
        print(
            f"{name:12} median {figure['median_ms']:8.1f} ms  max {figure['max_ms']:8.1f} ms"
            f"  rows {figure['rows']}"
        )
    path = write_results(
        "console_clients", {"args": vars(args), "figures": figures, "id": str(uuid.uuid4())}
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
