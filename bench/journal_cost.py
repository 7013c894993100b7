"""What the journal costs PostgreSQL per event: statements, commits, WAL bytes and syncs.

Counts, not timings, so it may run on a busy machine. A private PostgreSQL cluster
(tests/fault/nodes.py; never the shared one, whose WAL other sessions write) with
pg_stat_statements loaded, a gateway and `--workers` workers on it and on the shared
RabbitMQ. The background (heartbeats, supervisor ticks and sweeps) is measured over an idle
window as long as the measured one and subtracted. Then `--events` demo.echo events spread
over `--clients` clients, posted `--concurrency` at a time (1: one after another) and each
processed, are counted from:

- pg_stat_statements: calls of each statement (the database's own, by query text);
- pg_stat_database: commits (xact_commit) of the system's database;
- pg_current_wal_lsn(): WAL bytes; pg_stat_wal: WAL records, full-page images, WAL writes
  (wal_write) and WAL flushes (wal_sync: each an fsync/fdatasync, what a durable commit
  waits for unless another commit's flush covered it);
- pg_stat_user_tables: updates of the clients table, and how many of them were HOT (an
  update that changes a column some index of the table uses, its predicate included, is not).

`--raw` counts the raw per-event baseline of bench/raw.py first (accept, confirmed publish,
prefetch-1 consume, fenced outcome, ack; the same clients, events, concurrency and consumer
processes) on a scratch database of the same cluster, with nothing else running on it.

Backends report their WAL and commit counts to the statistics at most once a second, and an
idle one up to 10 s later: each window ends with a settle of SETTLE seconds before its last
snapshot (in the idle window too, so the subtraction covers it).

    .venv/bin/python bench/journal_cost.py --events 500
    .venv/bin/python bench/journal_cost.py --events 2000 --clients 10 --concurrency 4 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import raw
from rig import SYSTEM_ENV, bulk_clients, minter, post_events, tokens_for, write_results

from tests import harness
from tests.fault import nodes

#: Seconds each window waits before its last snapshot: an idle backend reports its pending
#: statistics up to 10 s late (PGSTAT_IDLE_INTERVAL).
SETTLE = 11.0

SNAPSHOT = """
SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal_bytes,
       (SELECT wal_records FROM pg_stat_wal) AS wal_records,
       (SELECT wal_fpi FROM pg_stat_wal) AS wal_fpi,
       (SELECT wal_sync FROM pg_stat_wal) AS wal_sync,
       (SELECT wal_write FROM pg_stat_wal) AS wal_write,
       (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,
       (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'clients') AS clients_updates,
       (SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'clients')
           AS clients_hot_updates
"""
#: What is counted per statement (by query text): calls, and milliseconds executing.
BY_STATEMENT = ("statements", "times", "plan_times")
STATEMENTS = """
SELECT calls, total_exec_time, total_plan_time, query
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database()
"""


async def snapshot(url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        row = dict(await connection.fetchrow(SNAPSHOT))
        statements = await connection.fetch(STATEMENTS)
        row["statements"] = {r["query"]: r["calls"] for r in statements}
        row["times"] = {r["query"]: r["total_exec_time"] for r in statements}
        row["plan_times"] = {r["query"]: r["total_plan_time"] for r in statements}
        return row
    finally:
        await connection.close()


def difference(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, Any] = {
        key: float(after[key] - before[key]) for key in after if key not in BY_STATEMENT
    }
    for key in BY_STATEMENT:
        counts[key] = {
            query: value - before[key].get(query, 0)
            for query, value in after[key].items()
            if value - before[key].get(query, 0)
        }
    return counts


def window(url: str, act: Any, settle: float = SETTLE) -> tuple[dict[str, Any], float]:
    """Counts over `act()` and `settle` seconds after it (when the window closes) and the
    window's length in seconds."""
    before = asyncio.run(snapshot(url))
    started = time.monotonic()
    act()
    time.sleep(settle)  # the backends' pending statistics reported
    took = time.monotonic() - started
    return difference(asyncio.run(snapshot(url)), before), took


def post_and_finish(
    system: harness.System, tokens: dict[str, str], events: int, concurrency: int
) -> None:
    """`events` demo.echo events spread over the clients of `tokens`, `concurrency` requests
    in flight (clients interleaved); returns once every event of the database succeeded."""
    per_client = max(1, events // len(tokens))
    finished = system.sql("SELECT count(*) FROM events WHERE status = 'succeeded'")[0][0]
    body = {"type": "demo.echo", "payload": {"n": 1}}
    asyncio.run(post_events(system.base_url, tokens, per_client, body, concurrency))
    total = finished + per_client * len(tokens)
    harness.wait_for(
        lambda: system.sql("SELECT count(*) FROM events WHERE status = 'succeeded'")[0][0] == total,
        300,
        "the events to finish",
        interval=0.2,
    )


def per_event(
    measured: dict[str, Any], idle: dict[str, Any], scale: float, n: int
) -> dict[str, Any]:
    """(measured - idle * scale) / n, for every count and every statement."""
    result: dict[str, Any] = {
        key: (measured[key] - idle[key] * scale) / n for key in measured if key not in BY_STATEMENT
    }
    result["statements"] = {
        query: round((calls - idle["statements"].get(query, 0) * scale) / n, 3)
        for query, calls in measured["statements"].items()
    }
    result["statements"] = {q: c for q, c in result["statements"].items() if c >= 0.01}
    result["statements_total"] = round(sum(result["statements"].values()), 2)
    # Milliseconds each statement ran in PostgreSQL (pg_stat_statements' total_exec_time;
    # planning and the protocol round trip not included), per event.
    result["times"] = {
        query: round((ms - idle["times"].get(query, 0) * scale) / n, 4)
        for query, ms in measured["times"].items()
    }
    result["times"] = {q: ms for q, ms in result["times"].items() if ms >= 0.001}
    result["exec_ms_total"] = round(sum(result["times"].values()), 3)
    # ... and planning it (pg_stat_statements.track_planning, on in the private cluster)
    result["plan_times"] = {
        query: round((ms - idle["plan_times"].get(query, 0) * scale) / n, 4)
        for query, ms in measured["plan_times"].items()
    }
    result["plan_times"] = {q: ms for q, ms in result["plan_times"].items() if ms >= 0.001}
    result["plan_ms_total"] = round(sum(result["plan_times"].values()), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="events to post and count")
    parser.add_argument("--clients", type=int, default=1, help="clients the events go to")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--workers", type=int, default=1, help="workers (raw: consumers)")
    parser.add_argument(
        "--raw", action="store_true", help="count the raw per-event baseline (bench/raw.py) too"
    )
    args = parser.parse_args()
    if not (
        1 <= args.clients <= 1000
        and args.clients <= args.events <= 100000
        and 1 <= args.concurrency <= 1000
        and 1 <= args.workers <= 8
    ):
        parser.error("counts out of range (1 <= clients <= events <= 100000)")
    results: dict[str, Any] = {"args": vars(args)}
    with nodes.private_postgres() as cluster:
        asyncio.run(preload_statements(cluster.url))
        cluster.restart_fast()
        harness.build_template(cluster.url)
        if args.raw:
            results["raw"] = raw_counts(cluster.url, args)
            show("raw per-event baseline", results["raw"])
        results["seriatim"] = system_counts(cluster.url, args)
        show("seriatim", results["seriatim"])
    print(f"written to {write_results('journal_cost', results)}")


def system_counts(pg_url: str, args: argparse.Namespace) -> dict[str, Any]:
    with harness.running_system(
        Path(tempfile.mkdtemp(prefix="journal-cost-")), workers=args.workers, env=SYSTEM_ENV,
        pg_url=pg_url,
    ) as system:  # fmt: skip
        url = harness.database_url(system.database, pg_url)
        asyncio.run(create_extension(url))
        tokens = tokens_for(minter(system), bulk_clients(system, args.clients, "cost-"))
        post_and_finish(system, tokens, len(tokens), min(args.concurrency, len(tokens)))  # warm
        time.sleep(SETTLE)
        measured, took = window(
            url, lambda: post_and_finish(system, tokens, args.events, args.concurrency)
        )
        idle, idle_took = window(url, lambda: time.sleep(took - SETTLE))
    events = max(1, args.events // args.clients) * args.clients
    return per_event(measured, idle, took / idle_took, events)


def raw_counts(pg_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The raw baseline's counts on a scratch database of the cluster (nothing else runs on
    it, so there is no background to subtract)."""
    database = harness.create_database(pg_url)
    url = harness.database_url(database, pg_url)
    per_client = max(1, args.events // args.clients)
    try:
        asyncio.run(create_extension(url))
        measured, _ = window(
            url,
            lambda: raw.run_in(url, args.clients, per_client, args.concurrency, args.workers),
            settle=2.0,  # its backends have exited, and report as they exit
        )
    finally:
        harness.drop_database(database, pg_url)
    nothing = {key: 0.0 for key in measured if key not in BY_STATEMENT} | {
        key: {} for key in BY_STATEMENT
    }
    return per_event(measured, nothing, 0.0, per_client * args.clients)


def show(title: str, result: dict[str, Any]) -> None:
    print(f"--- {title}, per event: calls, ms planning and executing")
    for query, calls in sorted(result["statements"].items(), key=lambda qc: -qc[1]):
        ms = result["times"].get(query, 0.0) + result["plan_times"].get(query, 0.0)
        print(f"{calls:7.3f} {ms:7.3f}  {' '.join(query.split())[:100]}")
    print({key: round(value, 3) for key, value in result.items() if key not in BY_STATEMENT})


async def preload_statements(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    finally:
        await connection.close()


async def create_extension(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await connection.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
