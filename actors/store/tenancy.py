"""Per-client intake settings in the journal: webhook secrets, the webhook type pointer and
the client's limits (rate, backlog and quota)."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

import asyncpg

from actors.store.queries import QUERIES


@dataclasses.dataclass(frozen=True, slots=True)
class ClientSettings:
    """A client's intake settings; None means the deployment's default."""

    id: uuid.UUID
    name: str
    admin: bool
    disabled: bool
    webhook_type_pointer: str
    rate_per_second: float | None
    rate_burst: int | None
    max_backlog: int | None
    backlog: int
    max_stored_events: int | None
    max_stored_bytes: int | None
    #: What the client has stored now (its quota counts these).
    stored_events: int
    stored_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class Standing:
    """What a client's tokens are checked against on use."""

    disabled: bool
    #: Tokens issued before this are refused (None: none are).
    tokens_valid_after: datetime.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class IntakeRow:
    """What the gateway checks a client's request against: its standing and its limits (None:
    the deployment's default)."""

    standing: Standing
    rate_per_second: float | None
    rate_burst: int | None
    max_backlog: int | None
    max_stored_events: int | None
    max_stored_bytes: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class Verifiers:
    """What verifies a client's webhooks now: its valid secrets, newest first."""

    type_pointer: str
    secrets: tuple[bytes, ...]


class TooManySecrets(Exception):
    """The client has as many valid webhook secrets as it may have."""

    def __init__(self, valid: int) -> None:
        super().__init__(f"{valid} valid webhook secrets")
        self.valid = valid


@dataclasses.dataclass(frozen=True, slots=True)
class SecretInfo:
    id: uuid.UUID
    created_at: datetime.datetime
    expires_at: datetime.datetime | None = None


class Tenancy:
    """One method per named query, on the journal's pool; a write runs `via` a connection
    when given (an audited action's transaction: actors/store/audit.py)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def settings(self, client_id: uuid.UUID) -> ClientSettings | None:
        row = await self.pool.fetchrow(QUERIES["client_settings"], client_id)
        return ClientSettings(**dict(row)) if row else None

    async def set_settings(
        self,
        client_id: uuid.UUID,
        *,
        type_pointer: str | None = None,
        rate: tuple[float, int] | bool | None = False,
        max_backlog: int | bool | None = False,
        max_stored_events: int | bool | None = False,
        max_stored_bytes: int | bool | None = False,
        via: Any = None,
    ) -> bool:
        """Change what is given (`False`: keep; `None`: back to the default); False when
        the client does not exist."""
        per_second, burst = rate if isinstance(rate, tuple) else (None, None)
        row = await (via or self.pool).fetchrow(
            QUERIES["set_client_settings"],
            client_id,
            type_pointer,
            per_second,
            burst,
            rate is not False,
            None if isinstance(max_backlog, bool) else max_backlog,
            max_backlog is not False,
            None if isinstance(max_stored_events, bool) else max_stored_events,
            max_stored_events is not False,
            None if isinstance(max_stored_bytes, bool) else max_stored_bytes,
            max_stored_bytes is not False,
        )
        return row is not None

    async def standing(self, client_id: uuid.UUID) -> Standing | None:
        """None when the client does not exist."""
        row = await self.pool.fetchrow(QUERIES["client_standing"], client_id)
        return Standing(**dict(row)) if row else None

    async def intake(self, client_ids: list[uuid.UUID]) -> dict[uuid.UUID, IntakeRow]:
        """The standing and limits of these clients, one statement for all; a client that does
        not exist (or is deleted) is left out."""
        rows = await self.pool.fetch(QUERIES["clients_intake"], client_ids)
        return {
            row["id"]: IntakeRow(
                Standing(row["disabled"], row["tokens_valid_after"]),
                row["rate_per_second"],
                row["rate_burst"],
                row["max_backlog"],
                row["max_stored_events"],
                row["max_stored_bytes"],
            )
            for row in rows
        }

    async def set_standing(
        self,
        client_id: uuid.UUID,
        *,
        disabled: bool | None = None,
        admin: bool | None = None,
        via: Any = None,
    ) -> bool:
        """Change what is given (None: keep); disabling or taking the admin right away also
        refuses the client's tokens issued until now. False when the client does not exist."""
        row = await (via or self.pool).fetchrow(
            QUERIES["set_client_standing"], client_id, disabled, admin
        )
        return row is not None

    async def set_secret(self, client_id: uuid.UUID, secret_hash: str, *, via: Any = None) -> bool:
        """Replace the client's secret and refuse its tokens issued until now; False when the
        client does not exist."""
        row = await (via or self.pool).fetchrow(
            QUERIES["set_client_secret"], client_id, secret_hash
        )
        return row is not None

    async def delete_client(self, client_id: uuid.UUID, *, via: Any = None) -> bool | None:
        """Mark the client deleted, keeping its row and events (those unfinished still run to
        their outcome): True; None when there is no such client."""
        deleted: bool | None = await (via or self.pool).fetchval(
            QUERIES["delete_client"], client_id
        )
        return deleted

    async def verifiers(self, client_id: uuid.UUID) -> Verifiers | None:
        """None when the client does not exist or is disabled."""
        row = await self.pool.fetchrow(QUERIES["webhook_verifiers"], client_id)
        if row is None:
            return None
        return Verifiers(row["webhook_type_pointer"], tuple(bytes(s) for s in row["secrets"]))

    async def add_webhook_secret(
        self,
        client_id: uuid.UUID,
        secret: bytes,
        previous_valid_for: float,
        *,
        cap: int,
        via: Any = None,
    ) -> SecretInfo | None:
        """Store a new secret; older ones stay valid `previous_valid_for` seconds more (0:
        they expire now). None when the client does not exist; raises TooManySecrets, and
        stores nothing, when the client would then have more than `cap` valid secrets. The
        client's row is locked while the secrets are counted, so concurrent additions cannot
        both pass the cap. `via`: a connection in the caller's transaction (the audit's)."""
        if via is not None:
            return await self._add_webhook_secret(via, client_id, secret, previous_valid_for, cap)
        async with self.pool.acquire() as connection, connection.transaction():
            return await self._add_webhook_secret(
                connection, client_id, secret, previous_valid_for, cap
            )

    async def _add_webhook_secret(
        self, connection: Any, client_id: uuid.UUID, secret: bytes, grace: float, cap: int
    ) -> SecretInfo | None:
        if await connection.fetchval(QUERIES["lock_client"], client_id) is None:
            return None
        valid = await connection.fetchval(QUERIES["valid_webhook_secrets"], client_id)
        if (valid if grace > 0 else 0) + 1 > cap:
            raise TooManySecrets(valid)
        row = await connection.fetchrow(QUERIES["add_webhook_secret"], client_id, secret, grace)
        return SecretInfo(row["id"], row["created_at"]) if row else None

    async def webhook_secrets(self, client_id: uuid.UUID) -> list[SecretInfo]:
        rows = await self.pool.fetch(QUERIES["webhook_secrets"], client_id)
        return [SecretInfo(**dict(row)) for row in rows]
