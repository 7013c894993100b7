"""The console's server-side sessions and their signing keys in the journal; one method per
named query. Times are the database's, so gateways with skewed clocks agree."""

from __future__ import annotations

import dataclasses
import datetime
import secrets
import uuid
from typing import Any

from actors.store.queries import QUERIES


@dataclasses.dataclass(frozen=True, slots=True)
class StoredSession:
    client_id: uuid.UUID
    admin: bool
    csrf: str
    issued_at: datetime.datetime
    expires_at: datetime.datetime


def new_key() -> tuple[str, bytes]:
    """A new signing key and its id."""
    return secrets.token_hex(6), secrets.token_bytes(32)


class ConsoleSessions:
    """Console sessions and signing keys, on the journal's pool (or a given connection)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def signing_key(self) -> tuple[str, bytes]:
        """The (kid, key) new sessions are signed with (made on first use)."""
        kid, key = new_key()
        row = await self.pool.fetchrow(QUERIES["console_signing_key"], kid, key)
        if row is None:  # another gateway made one in the same instant: read it now
            row = await self.pool.fetchrow(QUERIES["console_signing_key"], kid, key)
        return str(row["kid"]), bytes(row["key"])

    async def verifying_key(self, kid: str) -> bytes | None:
        key = await self.pool.fetchval(QUERIES["console_verifying_key"], kid)
        return None if key is None else bytes(key)

    async def rotate_key(self, kid: str, key: bytes, *, via: Any = None) -> int:
        """`kid` signs from now on; the number of older keys dropped (no live session
        needs them)."""
        row = await (via or self.pool).fetchrow(QUERIES["rotate_console_key"], kid, key)
        return int(row["dropped"])

    async def start(
        self,
        *,
        id_hash: bytes,
        client_id: uuid.UUID,
        admin: bool,
        kid: str,
        csrf: str,
        ttl: int,
    ) -> StoredSession | None:
        """A new session; None when the client is gone."""
        row = await self.pool.fetchrow(
            QUERIES["console_session_start"], client_id, admin, kid, id_hash, csrf, float(ttl)
        )
        if row is None:
            return None
        return StoredSession(client_id, admin, csrf, row["issued_at"], row["expires_at"])

    async def find(self, id_hash: bytes, kid: str) -> StoredSession | None:
        """The live session of this id and key; None when it ended, expired or its client was
        disabled, deleted or revoked since."""
        row = await self.pool.fetchrow(QUERIES["console_session"], id_hash, kid)
        if row is None:
            return None
        return StoredSession(
            row["client_id"], row["admin"], row["csrf"], row["issued_at"], row["expires_at"]
        )

    async def end(self, id_hash: bytes) -> None:
        await self.pool.execute(QUERIES["console_session_end"], id_hash)
