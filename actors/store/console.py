"""What the operator console reads from the journal (lists, a client's tape, one event); one
method per named query, returning frozen rows."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

from actors.store.queries import QUERIES
from actors.store.rows import AttemptRow


@dataclasses.dataclass(frozen=True, slots=True)
class ClientLine:
    """A client as the console's list shows it."""

    id: uuid.UUID
    name: str
    admin: bool
    disabled: bool
    state: str
    host: str | None
    restarts: int
    backlog: int
    done_seq: int
    last_seq: int
    suspended_reason: str | None
    oldest_unfinished: datetime.datetime | None
    head_status: str | None
    last_error: str | None  # JSON text
    sort_key: float


@dataclasses.dataclass(frozen=True, slots=True)
class TapeEvent:
    id: uuid.UUID
    seq: int
    type: str
    status: str
    attempts: int
    accepted_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    error: str | None  # JSON text
    redrive_of: uuid.UUID | None
    redriven_by: tuple[uuid.UUID, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class EventDetail:
    id: uuid.UUID
    client_id: uuid.UUID
    seq: int
    type: str
    status: str
    attempts: int
    accepted_at: datetime.datetime
    published_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    redrive_of: uuid.UUID | None
    traceparent: str | None
    payload: str  # JSON text, cut
    payload_length: int
    result: str | None
    error: str | None
    redriven_by: tuple[uuid.UUID, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerLine:
    """A live worker as `seriatim status` shows it; `supervising_since` is None on a standby."""

    id: str
    hostname: str
    pid: int
    started_at: datetime.datetime
    last_seen: datetime.datetime
    draining: bool
    supervising_since: datetime.datetime | None
    load: int


def _row(cls: Any, record: Any) -> Any:
    values = {field.name: record[field.name] for field in dataclasses.fields(cls)}
    if "redriven_by" in values:
        values["redriven_by"] = tuple(values["redriven_by"] or ())
    return cls(**values)


class ConsoleReads:
    """The console's queries, on the journal's pool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def clients(
        self,
        *,
        state: str | None,
        name_like: str | None,
        hide_idle: bool,
        sort: str,
        after: tuple[float, uuid.UUID] | None,
        limit: int,
    ) -> list[ClientLine]:
        key, after_id = after if after else (None, None)
        rows = await self.pool.fetch(
            QUERIES["console_clients"], state, name_like, hide_idle, sort, key, after_id, limit
        )
        return [_row(ClientLine, row) for row in rows]

    async def tape(self, client_id: uuid.UUID, low: int, high: int) -> list[TapeEvent]:
        rows = await self.pool.fetch(QUERIES["console_tape"], client_id, low, high)
        return [_row(TapeEvent, row) for row in rows]

    async def event(
        self, client_id: uuid.UUID, event_id: uuid.UUID, max_chars: int
    ) -> EventDetail | None:
        row = await self.pool.fetchrow(QUERIES["console_event"], client_id, event_id, max_chars)
        return _row(EventDetail, row) if row else None

    async def workers(self, alive_within: float, by_lock: bool) -> list[WorkerLine]:
        """Every live worker, draining ones too, by id (liveness: live_worker_ids)."""
        rows = await self.pool.fetch(QUERIES["cluster_workers"], alive_within, by_lock)
        return [_row(WorkerLine, row) for row in rows]

    async def attempts(self, client_id: uuid.UUID, event_id: uuid.UUID) -> list[AttemptRow]:
        """The event's attempts, oldest first: its timeline."""
        rows = await self.pool.fetch(QUERIES["event_attempts"], event_id, client_id)
        return [AttemptRow.of(row) for row in rows]

    async def dead_events(
        self,
        *,
        client_id: uuid.UUID | None,
        since: datetime.datetime | None,
        until: datetime.datetime | None,
        limit: int,
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(client id, event id) of the dead events not redriven yet that match, in `seq`
        order per client."""
        rows = await self.pool.fetch(
            QUERIES["dead_events_matching"], client_id, since, until, limit
        )
        return [(row["client_id"], row["id"]) for row in rows]

    async def event_owner(self, event_id: uuid.UUID) -> uuid.UUID | None:
        """The client of an event; None when there is no such event."""
        owner: uuid.UUID | None = await self.pool.fetchval(QUERIES["event_owner"], event_id)
        return owner

    async def minutes(
        self, client_id: uuid.UUID | None, minutes: int
    ) -> dict[datetime.datetime, tuple[int, int]]:
        """Minute -> (succeeded, dead) of the events that ended in the last `minutes`."""
        rows = await self.pool.fetch(QUERIES["console_minutes"], client_id, minutes)
        return {row["minute"]: (row["succeeded"], row["dead"]) for row in rows}
