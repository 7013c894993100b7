"""A worker's lease on life: its heartbeat, sent over a connection that holds an advisory lock.

The heartbeat alone can only say a worker is dead once it has been silent for the whole
liveness window. The lock says it at once: when a worker process dies, the kernel closes its
connection, PostgreSQL ends the session and the session's advisory lock goes with it, so
the supervisor's next sweep sees a worker whose lock nobody holds (docs/decisions.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import asyncpg

from actors.store.queries import QUERIES

#: The first key of every worker's advisory lock; the second is the worker's `lock_key`.
LOCK_CLASS = 7215010
#: So that PostgreSQL notices a lease connection whose worker vanished without a FIN.
_KEEPALIVE = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}


class Lease:
    """Renewed every heartbeat; a broken connection is replaced on the next renewal."""

    def __init__(
        self,
        dsn: str,
        worker_id: str,
        hostname: str,
        pid: int,
        losing: Callable[[str], None] = lambda _: None,
        supervising: Callable[[], bool] = lambda: False,
    ) -> None:
        self.worker_id = worker_id
        #: Called before the lease is given up, while the lock is still held.
        self._losing = losing
        #: Whether this worker's supervisor is the active one, told with each heartbeat.
        self._supervising = supervising
        self.key = 0  # drawn anew with each connection (see renew)
        self._dsn = dsn
        self._hostname = hostname
        self._pid = pid
        self._connection: asyncpg.Connection | None = None

    async def renew(self) -> None:
        """Hold the lock (reconnecting if need be), then record the heartbeat over it."""
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(
                    self._dsn, command_timeout=10, server_settings=_KEEPALIVE
                )
                # A fresh key each time: an old session of ours that PostgreSQL has not reaped
                # yet (a half-open connection) may still hold the previous one.
                while True:
                    self.key = secrets.randbelow(2**31 - 2) + 1  # a positive oid in pg_locks
                    if await self._connection.fetchval(
                        QUERIES["take_worker_lock"], LOCK_CLASS, self.key
                    ):
                        break
            await self._connection.execute(
                QUERIES["heartbeat"],
                self.worker_id,
                self._hostname,
                self._pid,
                self.key,
                self._supervising(),
            )
        except BaseException as error:
            self._losing(f"renewal failed: {type(error).__name__}")
            await self.close()
            raise

    async def close(self) -> None:
        """Give the lock up (the session ends); renewing takes it again."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._losing("the lease is given up")
        if connection is not None and not connection.is_closed():
            connection.terminate()
