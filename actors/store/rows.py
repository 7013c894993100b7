"""The journal's rows and errors: frozen row types, what intake refuses, and the JSON encoding
for jsonb columns (what "unreachable" means is actors/outages.py)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import uuid
from typing import Any

import asyncpg

from actors.states import DeadEventPolicy, EventStatus, MailboxState

Json = Any
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL, not an escaped backslash


def dump_json(value: Json) -> str:
    """Encode for a jsonb column; raises ValueError for what jsonb cannot store."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if _NUL.search(text):
        raise ValueError("jsonb cannot store the NUL character (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("lone surrogates cannot be stored") from None
    return text


def dump_error(value: Json) -> str:
    """Encode an error for a jsonb column, whatever its texts hold: NUL and lone surrogates
    (which a handler's message may carry, from a C library or `surrogateescape` decoding)
    become U+FFFD, so that the attempt's outcome can always be written."""
    return dump_json(_storable(value))


def _storable(value: Json) -> Json:
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


def _storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD (a valid pair is joined)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: utf-16 joins the pairs, replaces the lone ones
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.replace("\x00", "\ufffd")


class KeyTaken(Exception):
    """The client already has an event with this idempotency key."""


class BacklogFull(Exception):
    """The client has as many accepted, unfinished events as it may have."""

    def __init__(self, backlog: int) -> None:
        super().__init__(f"{backlog} events accepted and not finished")
        self.backlog = backlog


class QuotaFull(Exception):
    """The event would take the client's stored events or bytes past its quota."""

    def __init__(self) -> None:
        super().__init__("the client's stored events are at its quota")


class EventGone(Exception):
    """The event a redrive names was deleted (by retention) before the redrive committed."""


@dataclasses.dataclass(frozen=True, slots=True)
class EventRow:
    id: uuid.UUID
    client_id: uuid.UUID
    seq: int
    type: str
    payload: Json
    status: EventStatus
    attempts: int
    accepted_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    result: Json
    error: Json
    redrive_of: uuid.UUID | None
    traceparent: str | None

    @classmethod
    def of(cls, record: asyncpg.Record) -> EventRow:
        values = {field.name: record[field.name] for field in dataclasses.fields(cls)}
        return cls(**{**values, "status": EventStatus(values["status"])})


@dataclasses.dataclass(frozen=True, slots=True)
class ListedEvent:
    """An event as a page lists it: payload, result and error are the JSON text PostgreSQL
    sent (`jsonb::text`), never decoded, so that a page costs its size in bytes and no more."""

    id: uuid.UUID
    client_id: uuid.UUID
    seq: int
    type: str
    payload: str
    status: EventStatus
    attempts: int
    accepted_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    result: str | None
    error: str | None
    redrive_of: uuid.UUID | None
    traceparent: str | None

    @classmethod
    def of(cls, record: asyncpg.Record) -> ListedEvent:
        values = {field.name: record[field.name] for field in dataclasses.fields(cls)}
        return cls(**{**values, "status": EventStatus(values["status"])})


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRow:
    """One attempt at an event, for its timeline. `finished_at` None: still running, or its
    worker died or lost the mailbox during it; `error` is the failure's JSON text (None when it
    succeeded or has not finished); `worker` is the mailbox's host when it started."""

    attempt: int
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    error: str | None
    worker: str | None

    @classmethod
    def of(cls, record: asyncpg.Record) -> AttemptRow:
        return cls(**{field.name: record[field.name] for field in dataclasses.fields(cls)})

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish; None while unfinished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclasses.dataclass(frozen=True, slots=True)
class EventPage:
    """A page of a client's events, cut at a count or at a size in bytes; `more` when it was
    cut (a page cut at its count may still be the last one)."""

    events: tuple[ListedEvent, ...]
    more: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    event: EventRow
    caught_up: bool  # the mailbox had nothing unfinished before this event: it may be idle


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    id: uuid.UUID
    secret_hash: str
    admin: bool
    disabled: bool = False
    #: Tokens issued before this are refused (None: none are).
    tokens_valid_after: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class MailboxRow:
    client_id: uuid.UUID
    state: MailboxState
    last_seq: int
    done_seq: int
    host: str | None
    restarts: int
    policy: DeadEventPolicy
    max_restarts: int | None
    restart_period: float | None
    suspended_reason: str | None
    suspended_at: datetime.datetime | None
    in_flight_seq: int | None
    head_status: EventStatus | None

    @classmethod
    def of(cls, record: asyncpg.Record) -> MailboxRow:
        values = {field.name: record[field.name] for field in dataclasses.fields(cls)}
        head = values["head_status"]
        return cls(
            **{
                **values,
                "state": MailboxState(values["state"]),
                "policy": DeadEventPolicy(values["policy"]),
                "head_status": None if head is None else EventStatus(head),
            }
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Position:
    done_seq: int
    last_seq: int
    state: MailboxState
    policy: DeadEventPolicy
    max_restarts: int | None
    restart_period: float | None
    host: str | None = None
    epoch: int = 0

    @classmethod
    def of(cls, record: asyncpg.Record) -> Position:
        values = dict(record)
        return cls(
            **{
                **values,
                "state": MailboxState(values["state"]),
                "policy": DeadEventPolicy(values["policy"]),
            }
        )

    def placed(self, epoch: int) -> bool:
        """Whether the mailbox is still under the placement `epoch`."""
        return self.state is MailboxState.ACTIVE and self.epoch == epoch


@dataclasses.dataclass(frozen=True, slots=True)
class Placed:
    """A placement just made: its epoch, and the client's position as the placement found it.

    `done_seq` is exact for the new owner until it writes: the placement's epoch fences every
    earlier owner's outcome (docs/reliability.md, "done_seq travels with the placement")."""

    epoch: int
    done_seq: int
    last_seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class Wanted:
    client_id: uuid.UUID
    state: MailboxState
    has_backlog: bool
    host_alive: bool

    @classmethod
    def of(cls, record: asyncpg.Record) -> Wanted:
        values = dict(record)
        return cls(**{**values, "state": MailboxState(values["state"])})
