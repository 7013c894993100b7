"""Whether a verified token still stands: its client exists, is not disabled, and has not had
the tokens issued before a time revoked. Each gateway re-reads a client's standing from the
journal at most every SERIATIM_CLIENT_RECHECK seconds, so a revocation made anywhere takes
effect everywhere within that bound (at once on the gateway that made it). The reads are the
gateway's ClientReads, shared with the limits and grouped across requests."""

from __future__ import annotations

import uuid

from actors.settings import Settings
from actors.store import Standing
from gateway.client_reads import ClientReads
from gateway.tokens import Principal, invalid_token


class Revocations:
    """Checks verified callers against their client's standing, read at most once per
    `client_recheck` seconds per client."""

    def __init__(self, settings: Settings, reads: ClientReads) -> None:
        self._recheck = settings.client_recheck
        self._reads = reads

    async def check(self, caller: Principal) -> None:
        """Raise Problem 401 when the caller's client is gone or disabled, or revoked the
        tokens issued before this caller's."""
        standing = await self._standing(caller.client_id)
        if standing is None or standing.disabled:
            raise invalid_token("the client of this access token is disabled or does not exist")
        valid_after = standing.tokens_valid_after
        if valid_after is not None and caller.issued_at < valid_after.timestamp():
            raise invalid_token("the access token was revoked: get a new one")

    def forget(self, client_id: uuid.UUID) -> None:
        """Read this client's standing again on its next request (it was just changed here)."""
        self._reads.forget(client_id)

    async def _standing(self, client_id: uuid.UUID) -> Standing | None:
        row = await self._reads.row(client_id, self._recheck)
        return None if row is None else row.standing
