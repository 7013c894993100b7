"""Whether a verified token still stands: its client exists, is not disabled, and has not had
the tokens issued before a time revoked. Each gateway re-reads a client's standing from the
journal at most every SERIATIM_CLIENT_RECHECK seconds, so a revocation made anywhere takes
effect everywhere within that bound (at once on the gateway that made it)."""

from __future__ import annotations

import time
import uuid

from actors.settings import Settings
from actors.store import Standing, Tenancy
from gateway.tokens import Principal, invalid_token

KNOWN_CLIENTS = 100_000  # standings kept; the oldest read is dropped first


class Revocations:
    """Checks verified callers against their client's standing, read at most once per
    `client_recheck` seconds per client."""

    def __init__(self, settings: Settings, tenancy: Tenancy) -> None:
        self._recheck = settings.client_recheck
        self._tenancy = tenancy
        self._known: dict[uuid.UUID, tuple[Standing | None, float]] = {}  # -> (standing, read at)

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
        self._known.pop(client_id, None)

    async def _standing(self, client_id: uuid.UUID) -> Standing | None:
        now = time.monotonic()
        known = self._known.get(client_id)
        if known is not None and now - known[1] < self._recheck:
            return known[0]
        standing = await self._tenancy.standing(client_id)
        self._known.pop(client_id, None)
        if len(self._known) >= KNOWN_CLIENTS:
            del self._known[next(iter(self._known))]
        self._known[client_id] = (standing, now)
        return standing
