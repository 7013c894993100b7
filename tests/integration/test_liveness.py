"""Worker liveness in the journal: a recent heartbeat, and (by lock) a lease session alive.

`live_worker_ids` (schema.sql) is what every placement decision of the supervisor rests on;
these tests hold and drop real lease locks (actors/store/lease.py) on a real PostgreSQL.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from actors.store import Journal
from actors.store.lease import Lease

pytestmark = pytest.mark.integration

WINDOW = 5.0


async def live(database: str, by_lock: bool) -> set[str]:
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch("SELECT live_worker_ids($1, $2) AS id", WINDOW, by_lock)
        return {row["id"] for row in rows}
    finally:
        await connection.close()


async def test_a_worker_with_a_renewed_lease_is_alive(database: str) -> None:
    lease = Lease(database, "w-1", "host", 1)
    try:
        await lease.renew()

        assert await live(database, by_lock=True) == {"w-1"}
    finally:
        await lease.close()


async def test_a_worker_whose_lease_session_ended_is_dead_at_once_by_lock_only(
    database: str,
) -> None:
    # Given a worker that heartbeated just now, When its lease session ends (as when the
    # process is killed and the kernel closes its socket)
    lease = Lease(database, "w-1", "host", 1)
    await lease.renew()
    await lease.close()

    # Then it is dead by lock as soon as PostgreSQL has ended the session, though its
    # heartbeat is still recent
    for _ in range(100):
        if not await live(database, by_lock=True):
            break
        await asyncio.sleep(0.05)
    assert await live(database, by_lock=True) == set()
    assert await live(database, by_lock=False) == {"w-1"}


async def test_a_stale_heartbeat_is_dead_even_with_the_lock_held(database: str) -> None:
    lease = Lease(database, "w-1", "host", 1)
    try:
        await lease.renew()
        connection = await asyncpg.connect(database)
        try:
            await connection.execute(
                "UPDATE workers SET last_seen = now() - interval '10 seconds' WHERE id = 'w-1'"
            )
        finally:
            await connection.close()

        assert await live(database, by_lock=True) == set()
    finally:
        await lease.close()


async def test_a_renewal_after_a_lost_session_takes_a_new_key_and_lives_again(
    database: str,
) -> None:
    # Given a lease whose first key is still held by another session (a half-open old one)
    lease = Lease(database, "w-1", "host", 1)
    await lease.renew()
    old_key = lease.key
    squatter = await asyncpg.connect(database)
    try:
        await lease.close()
        for _ in range(100):  # until PostgreSQL has ended the old session
            if await squatter.fetchval("SELECT pg_try_advisory_lock(7215010, $1)", old_key):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the old lease session never let its lock go")

        # When it renews on a new connection
        await lease.renew()

        # Then it holds a lock under a new key, and the worker is alive by it
        assert lease.key != old_key
        assert await live(database, by_lock=True) == {"w-1"}
    finally:
        await squatter.close()
        await lease.close()


async def test_rows_without_a_lease_key_are_judged_by_heartbeat_alone(database: str) -> None:
    journal = await Journal.connect(database)
    try:
        await journal.pool.execute(
            "INSERT INTO workers (id, hostname, pid) VALUES ('legacy', 'host', 1)"
        )

        assert await live(database, by_lock=True) == {"legacy"}
    finally:
        await journal.close()
