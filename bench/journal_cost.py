"""What the journal costs PostgreSQL per event: statements, commits, WAL bytes and syncs.

Counts, not timings, so it may run on a busy machine. A private PostgreSQL cluster
(tests/fault/nodes.py; never the shared one, whose WAL other sessions write) with
pg_stat_statements loaded, a gateway and one worker on it and on the shared RabbitMQ. The
background (heartbeats, supervisor ticks and sweeps) is measured over an idle window as long
as the measured one and subtracted. Then `--events` events of one client, posted one after
another and each processed, are counted from:

- pg_stat_statements: calls of each statement (the database's own, by query text);
- pg_stat_database: commits (xact_commit) of the system's database;
- pg_current_wal_lsn(): WAL bytes; pg_stat_wal: WAL records, full-page images, syncs;
- pg_stat_user_tables: updates of the clients table, and how many of them were HOT (an
  update that changes a column some index of the table uses, its predicate included, is not).

    .venv/bin/python bench/journal_cost.py --events 500
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from rig import SYSTEM_ENV, write_results

from tests import harness
from tests.fault import nodes

SNAPSHOT = """
SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal_bytes,
       (SELECT wal_records FROM pg_stat_wal) AS wal_records,
       (SELECT wal_fpi FROM pg_stat_wal) AS wal_fpi,
       (SELECT wal_sync FROM pg_stat_wal) AS wal_sync,
       (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,
       (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'clients') AS clients_updates,
       (SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'clients')
           AS clients_hot_updates
"""
STATEMENTS = """
SELECT calls, query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database()
"""


async def snapshot(url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        row = dict(await connection.fetchrow(SNAPSHOT))
        row["statements"] = {r["query"]: r["calls"] for r in await connection.fetch(STATEMENTS)}
        return row
    finally:
        await connection.close()


def difference(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, Any] = {
        key: float(after[key] - before[key]) for key in after if key != "statements"
    }
    counts["statements"] = {
        query: calls - before["statements"].get(query, 0)
        for query, calls in after["statements"].items()
        if calls - before["statements"].get(query, 0)
    }
    return counts


def window(url: str, act: Any) -> tuple[dict[str, Any], float]:
    """Counts over `act()` (after which the window closes) and its length in seconds."""
    before = asyncio.run(snapshot(url))
    started = time.monotonic()
    act()
    took = time.monotonic() - started
    return difference(asyncio.run(snapshot(url)), before), took


def post_and_finish(system: harness.System, token: str, events: int) -> None:
    ids = [system.post_event(token, "demo.echo", {"n": n})["id"] for n in range(events)]
    harness.wait_for(
        lambda: (
            system.sql(
                "SELECT count(*) FROM events WHERE id::text = ANY($1) AND status = 'succeeded'", ids
            )[0][0]
            == len(ids)
        ),
        120,
        "the events to finish",
    )


def per_event(
    measured: dict[str, Any], idle: dict[str, Any], scale: float, n: int
) -> dict[str, Any]:
    """(measured - idle * scale) / n, for every count and every statement."""
    result: dict[str, Any] = {
        key: (measured[key] - idle[key] * scale) / n for key in measured if key != "statements"
    }
    result["statements"] = {
        query: round((calls - idle["statements"].get(query, 0) * scale) / n, 3)
        for query, calls in measured["statements"].items()
    }
    result["statements"] = {q: c for q, c in result["statements"].items() if c >= 0.01}
    result["statements_total"] = round(sum(result["statements"].values()), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="events to post and count")
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be at least 1")
    with nodes.private_postgres() as cluster:
        asyncio.run(preload_statements(cluster.url))
        cluster.restart_fast()
        harness.build_template(cluster.url)
        with harness.running_system(
            Path(tempfile.mkdtemp(prefix="journal-cost-")), workers=1, env=SYSTEM_ENV,
            pg_url=cluster.url,
        ) as system:  # fmt: skip
            url = harness.database_url(system.database, cluster.url)
            asyncio.run(create_extension(url))
            token = system.token(system.create_client("cost"))
            post_and_finish(system, token, 20)  # warm: mailbox declared and placed
            measured, took = window(url, lambda: post_and_finish(system, token, args.events))
            idle, idle_took = window(url, lambda: time.sleep(took))
    result = per_event(measured, idle, took / idle_took, args.events)
    for query, calls in sorted(result["statements"].items(), key=lambda qc: -qc[1]):
        print(f"{calls:7.3f}  {' '.join(query.split())[:110]}")
    print({key: round(value, 2) for key, value in result.items() if key != "statements"})
    print(f"written to {write_results('journal_cost', {'events': args.events, **result})}")


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
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
