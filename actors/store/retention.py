"""Retention in the journal: deleting finished events in bounded batches, by one deleter at a
time across every process (a session advisory lock)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from actors.store.queries import QUERIES
from actors.store.traced import TracedPool


class Retirer:
    """Deletes batches of finished events over the connection that holds the deleter's lock.
    Each batch is one statement, so one short transaction: the rows it locks (its clients',
    then its events') are held only while it runs."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def retire(self, older_than: float, limit: int) -> int:
        """Delete at most `limit` events finished more than `older_than` seconds ago (never
        one a redrive names); how many were deleted. A redrive committed while the batch
        waited for its clients' locks is not in the statement's snapshot, so deleting its
        original breaks the redrive's foreign key and the whole batch rolls back: the batch
        is then tried again, once, with a fresh snapshot that sees the redrive."""
        for last_try in (False, True):
            try:
                deleted: int = await self._connection.fetchval(
                    QUERIES["retire_events"], older_than, limit
                )
            except asyncpg.ForeignKeyViolationError:
                if last_try:
                    return 0  # redrives keep arriving: the next round tries again
                continue
            return deleted
        return 0


@contextlib.asynccontextmanager
async def sole_retirer(pool: TracedPool) -> AsyncIterator[Retirer | None]:
    """A Retirer while this session holds the deleter's lock; None when another session holds
    it (another process is deleting). The lock is given up on exit; if the session ends first
    (the process died, the connection broke), PostgreSQL gives it up with it."""
    async with pool.acquire() as connection:
        if not await connection.fetchval(QUERIES["take_retention_lock"]):
            yield None
            return
        try:
            yield Retirer(connection)
        finally:
            if not connection.is_closed():
                try:
                    await connection.fetchval(QUERIES["give_retention_lock"])
                except (asyncpg.PostgresError, OSError):
                    connection.terminate()  # the lock must not stay with a pooled connection
