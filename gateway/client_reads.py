"""What a gateway last read of each client (its standing and its limits), read for many
clients at once: the lookups of requests waiting at the same moment go to PostgreSQL as one
statement (as accepts are group-committed), and one read serves both the token check and the
limits."""

from __future__ import annotations

import time
import uuid

from actors.store import IntakeRow, Tenancy
from actors.store.group_commit import GroupCommit

KNOWN_CLIENTS = 100_000  # clients kept; the oldest read is dropped first
#: Clients read in one statement at most, and statements in flight at once.
READ_BATCH = 512
READS_IN_FLIGHT = 2


class ClientReads:
    """Each client's IntakeRow as last read, re-read once older than what the caller accepts."""

    def __init__(self, tenancy: Tenancy) -> None:
        self._tenancy = tenancy
        self._known: dict[uuid.UUID, tuple[IntakeRow | None, float]] = {}  # -> (row, read at)
        self._reads: GroupCommit[uuid.UUID, IntakeRow | None] = GroupCommit(
            self._read, max_batch=READ_BATCH, max_in_flight=READS_IN_FLIGHT
        )

    async def row(self, client_id: uuid.UUID, max_age: float) -> IntakeRow | None:
        """The client's row read at most `max_age` seconds ago (None: no such client)."""
        now = time.monotonic()
        known = self._known.get(client_id)
        if known is not None and now - known[1] < max_age:
            return known[0]
        row = await self._reads.submit(client_id)
        self._known.pop(client_id, None)
        if len(self._known) >= KNOWN_CLIENTS:
            del self._known[next(iter(self._known))]
        self._known[client_id] = (row, now)  # as of before the read: never trusted longer
        return row

    def forget(self, client_id: uuid.UUID) -> None:
        """Read this client again on its next request (it was just changed here)."""
        self._known.pop(client_id, None)

    async def _read(self, client_ids: list[uuid.UUID]) -> list[IntakeRow | Exception | None]:
        rows = await self._tenancy.intake(list(dict.fromkeys(client_ids)))
        return [rows.get(client_id) for client_id in client_ids]
