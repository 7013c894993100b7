"""The audit log: who did which operator action, when, to which client or event.

Every operator action (admin API, console, command line) is written through `AuditLog.record`,
in the same transaction as the action: the action's statements run on the connection it
yields (`via=`), and the entry is inserted before the commit, so an action that fails (or
raises) leaves no entry and an entry never names an action that did not happen. The detail is
a small JSON object that never holds a secret: names that look like one are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import uuid
from collections.abc import AsyncIterator
from typing import Any

from actors.store.queries import QUERIES
from actors.store.rows import dump_json

#: Detail keys refused outright: an audit entry is read by every operator.
_SECRET_WORDS = ("secret", "token", "password", "private", "jwk")
MAX_DETAIL_BYTES = 2048


class AuditAction(enum.StrEnum):
    """The operator actions the audit log knows."""

    CLIENT_CREATE = "client.create"
    CLIENT_SETTINGS = "client.settings"  # PATCH: limits, type pointer, disabled, admin
    CLIENT_DELETE = "client.delete"
    CLIENT_ROTATE_SECRET = "client.rotate_secret"
    WEBHOOK_SECRET_CREATE = "webhook_secret.create"
    MAILBOX_RESUME = "mailbox.resume"
    MAILBOX_SUSPEND = "mailbox.suspend"
    MAILBOX_POLICY = "mailbox.policy"
    EVENT_REDRIVE = "event.redrive"
    SIGNING_KEY_ROTATE = "signing_key.rotate"
    SIGNING_KEY_REVOKE = "signing_key.revoke"
    CONSOLE_KEY_ROTATE = "console_key.rotate"


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime.datetime
    actor: uuid.UUID
    action: AuditAction
    client_id: uuid.UUID | None
    event_id: uuid.UUID | None
    detail: dict[str, Any]


@dataclasses.dataclass(slots=True)
class Recording:
    """An action being recorded: run its statements `via` this connection; set what it
    touched (`client_id`, `event_id`) and what to say of it (`detail`) until it ends."""

    via: Any
    client_id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


def checked_detail(detail: dict[str, Any]) -> str:
    """The detail as jsonb text; raises ValueError when a key names a secret or it is large."""
    for key in _keys(detail):
        if any(word in key.lower() for word in _SECRET_WORDS):
            raise ValueError(f"an audit detail must not hold a secret (key {key!r})")
    text = dump_json(detail)
    if len(text.encode()) > MAX_DETAIL_BYTES:
        raise ValueError(f"an audit detail is at most {MAX_DETAIL_BYTES} bytes")
    return text


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(k) for k in value] + [k for v in value.values() for k in _keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


class AuditLog:
    """Writes and reads the audit log on the journal's pool."""

    def __init__(self, pool: Any, origin: dict[str, Any] | None = None) -> None:
        self.pool = pool
        #: Added to every entry's detail (the command line says it wrote the entry).
        self.origin = dict(origin or {})

    @contextlib.asynccontextmanager
    async def record(
        self,
        actor: uuid.UUID,
        action: AuditAction,
        *,
        client_id: uuid.UUID | None = None,
        event_id: uuid.UUID | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AsyncIterator[Recording]:
        """A transaction for the action, its entry written last; an exception rolls both
        back (and no entry is written)."""
        recording = Recording(None, client_id, event_id, dict(detail or {}))
        async with self.pool.acquire() as connection, connection.transaction():
            recording.via = connection
            yield recording
            await connection.fetchrow(
                QUERIES["insert_audit_entry"],
                actor,
                str(action),
                recording.client_id,
                recording.event_id,
                checked_detail({**recording.detail, **self.origin}),
            )

    async def write(
        self,
        actor: uuid.UUID,
        action: AuditAction,
        *,
        client_id: uuid.UUID | None = None,
        event_id: uuid.UUID | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """An entry on its own, for an action committed elsewhere (a redrive's accept goes
        through the group commit)."""
        await self.pool.fetchrow(
            QUERIES["insert_audit_entry"],
            actor,
            str(action),
            client_id,
            event_id,
            checked_detail({**(detail or {}), **self.origin}),
        )

    async def entries(
        self, *, before: int | None = None, client_id: uuid.UUID | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        """Newest first; `before` an entry id for the next page."""
        rows = await self.pool.fetch(QUERIES["audit_entries"], before, client_id, limit)
        return [
            AuditEntry(
                id=row["id"],
                at=row["at"],
                actor=row["actor"],
                action=AuditAction(row["action"]),
                client_id=row["client_id"],
                event_id=row["event_id"],
                detail=row["detail"],
            )
            for row in rows
        ]
