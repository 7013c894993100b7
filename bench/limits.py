"""What the per-client limits cost per request: the GCRA limiter in memory, the cached
settings lookup, and the backlog cap folded into the accept statement.

    .venv/bin/python bench/limits.py [--accepts 2000]

Prints nanoseconds per limiter decision and the accept statement's mean time with and
without the backlog condition, on a fresh database built from schema.sql.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import timeit
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from actors.settings import Settings  # noqa: E402
from actors.store import Tenancy  # noqa: E402
from actors.store.queries import QUERIES  # noqa: E402
from gateway.client_reads import ClientReads  # noqa: E402
from gateway.limits import ClientLimits, Rate, RateLimiter  # noqa: E402
from tests import harness  # noqa: E402

# The accept statement as it was before the backlog cap, for comparison.
UNCAPPED = QUERIES["accept_event"].replace(
    "WHERE id = $1 AND last_seq - done_seq < coalesce(max_backlog, $8)",
    "WHERE id = $1 AND $8::bigint IS NOT NULL",
)


def limiter_ns(clients: int, rounds: int = 200_000) -> float:
    limiter, rate = RateLimiter(), Rate(1e9, 10**9)  # never refuses: the common path
    ids = [uuid.uuid4() for _ in range(clients)]
    n = len(ids)
    counter = iter(range(10**12))

    def decide() -> None:
        limiter.wait(ids[next(counter) % n], rate)

    return min(timeit.repeat(decide, number=rounds, repeat=5)) / rounds * 1e9


async def admit_ns(database: str, rounds: int = 100_000) -> float:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        client = await pool.fetchval(
            "INSERT INTO clients (name, secret_hash) VALUES ('b', 'x') RETURNING id"
        )
        limits = ClientLimits(
            Settings(rate_per_second=1e6, rate_burst=10**6), ClientReads(Tenancy(pool))
        )
        await limits.admit(client)  # fills the settings cache
        started = time.perf_counter()
        for _ in range(rounds):
            await limits.admit(client)
        return (time.perf_counter() - started) / rounds * 1e9
    finally:
        await pool.close()


async def accept_ms(database: str, query: str, accepts: int) -> list[float]:
    connection = await asyncpg.connect(database)
    try:
        client = await connection.fetchval(
            "INSERT INTO clients (name, secret_hash) VALUES ('b', 'x') RETURNING id"
        )
        statement = await connection.prepare(query)
        times = []
        for _ in range(accepts):
            started = time.perf_counter()
            await statement.fetchrow(
                client, "demo.echo", '{"n": 1}', None, None, None, None, 10**12
            )
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        await connection.close()


async def main(accepts: int) -> None:
    await asyncio.to_thread(harness.build_template)
    name = await asyncio.to_thread(harness.create_database)
    database = harness.database_url(name)
    try:
        for clients in (1, 10_000):
            print(f"GCRA decision, {clients:>6} clients: {limiter_ns(clients):7.0f} ns")
        print(f"admit() with cached settings:    {await admit_ns(database):7.0f} ns")
        for label, query in (("without", UNCAPPED), ("with", QUERIES["accept_event"])):
            runs = [statistics.mean(await accept_ms(database, query, accepts)) for _ in range(3)]
            print(
                f"accept statement {label:>7} the backlog cap: mean {min(runs):.3f} ms "
                f"(best of 3 runs of {accepts})"
            )
    finally:
        await asyncio.to_thread(harness.drop_database, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accepts", type=int, default=2000)
    asyncio.run(main(parser.parse_args().accepts))
