"""An in-memory journal for tests, as dramatiq ships `StubBroker`: the rules of queries.sql
(the seq fence, placement epochs, attempts, suspension, liveness, single and batch intake
with idempotency keys) without PostgreSQL.

It satisfies the journal's roles (actors/store/roles.py), plus what a test needs to set the
scene: clients, accepted events, workers' heartbeats. tests/integration/test_journal_contract.py
runs the same cases against it and the real `Journal`. Every method runs without awaiting, so
each is one atomic step, as each of the real journal's statements is.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from actors.states import DeadEventPolicy, EventStatus, MailboxState
from actors.store.rows import (
    Accepted,
    AttemptRow,
    BacklogFull,
    EventRow,
    Json,
    KeyTaken,
    MailboxRow,
    Placed,
    Position,
    QuotaFull,
    Wanted,
    dump_error,
    dump_json,
)

if TYPE_CHECKING:
    from actors.store.journal import BatchRequest
    from actors.store.roles import HostJournal, SupervisorJournal

TERMINAL = ("succeeded", "dead")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _text(value: Json) -> str:
    """What a jsonb column gives as text (`jsonb::text`)."""
    return json.dumps(value, ensure_ascii=False)


def _stored(text: str | None) -> Json:
    """What a jsonb column gives back for this JSON text."""
    return None if text is None else json.loads(text)


@dataclasses.dataclass
class _Client:
    id: uuid.UUID
    name: str
    secret_hash: str
    admin: bool
    last_seq: int = 0
    done_seq: int = 0
    state: str = "idle"
    host: str | None = None
    restarts: int = 0
    policy: str = "skip"
    max_restarts: int | None = None
    restart_period: float | None = None
    suspended_reason: str | None = None
    suspended_at: datetime.datetime | None = None
    max_backlog: int | None = None
    epoch: int = 0

    def placed(self, epoch: int | None) -> bool:
        """The fence of every attempt write: no epoch (tests of the journal alone), or the
        current placement's."""
        return epoch is None or (self.state == "active" and self.epoch == epoch)

    def replace(self, state: str, host: str | None) -> None:
        """Every placement and every end of one gives the mailbox a new epoch."""
        self.state, self.host, self.epoch = state, host, self.epoch + 1


@dataclasses.dataclass
class _Event:
    id: uuid.UUID
    client_id: uuid.UUID
    seq: int
    type: str
    payload: Json
    idempotency_key: str | None
    request_hash: bytes | None
    redrive_of: uuid.UUID | None
    traceparent: str | None
    status: str = "queued"
    attempts: int = 0
    accepted_at: datetime.datetime = dataclasses.field(default_factory=_now)
    published_at: datetime.datetime | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    result: Json = None
    error: Json = None
    size: int = 0  # its payload's JSON text in bytes, as given (events.bytes)

    def row(self) -> EventRow:
        return EventRow(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EventRow)})


@dataclasses.dataclass
class _Worker:
    last_seen: float
    holds_lock: bool | None  # None: no lease lock (lock_key NULL), alive by heartbeat alone
    draining: bool = False


class MemoryJournal:
    """The journal's rules in dictionaries. `clock` (seconds) ages the workers' heartbeats."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clients: dict[uuid.UUID, _Client] = {}
        self._events: dict[uuid.UUID, _Event] = {}
        self._by_seq: dict[tuple[uuid.UUID, int], _Event] = {}
        self._workers: dict[str, _Worker] = {}
        # (client, seq) -> its attempts, oldest first (the attempts table)
        self._attempts: dict[tuple[uuid.UUID, int], list[AttemptRow]] = {}
        #: When a database session ended (Journal.session_lost_at); a test sets it.
        self.session_lost_at = -math.inf

    # --- setting the scene ---------------------------------------------------------------

    async def create_client(self, name: str, secret_hash: str, admin: bool) -> uuid.UUID:
        client = _Client(uuid.uuid4(), name, secret_hash, admin)
        self._clients[client.id] = client
        return client.id

    async def accept(
        self,
        client_id: uuid.UUID,
        type_: str,
        payload: Json,
        *,
        idempotency_key: str | None = None,
        request_hash: bytes | None = None,
        redrive_of: uuid.UUID | None = None,
        traceparent: str | None = None,
        max_backlog: int = 2**62,
        max_stored_events: int = 2**62,
        max_stored_bytes: int = 2**62,
    ) -> Accepted | None:
        """As Journal.accept: the event at the tail of the mailbox, or None (no client);
        raises KeyTaken, BacklogFull, QuotaFull (events stored, and their payloads' bytes)."""
        client = self._clients.get(client_id)
        if client is None:
            return None
        backlog = client.last_seq - client.done_seq
        if backlog >= (client.max_backlog or max_backlog):
            raise BacklogFull(backlog)
        text = dump_json(payload)
        self._check_quota(client_id, [text], max_stored_events, max_stored_bytes)
        if idempotency_key is not None and self._keyed(client_id, [idempotency_key]):
            raise KeyTaken(idempotency_key)
        event = self._append(
            client, type_, text, idempotency_key, request_hash, redrive_of, traceparent
        )
        return Accepted(event.row(), caught_up=client.done_seq == event.seq - 1)

    async def accept_batch(
        self,
        client_id: uuid.UUID,
        items: Sequence[BatchRequest],
        *,
        traceparent: str | None = None,
        max_backlog: int = 2**62,
        max_stored_events: int = 2**62,
        max_stored_bytes: int = 2**62,
    ) -> list[Accepted] | None:
        """As Journal.accept_batch: the items' events with consecutive seqs in the order
        given, all or nothing; None (no client); raises BacklogFull when the backlog with the
        whole batch would pass the cap, QuotaFull, KeyTaken(None) when a key is used already
        (or twice in the batch, as the unique index refuses it). Nothing is written then."""
        client = self._clients.get(client_id)
        if client is None:
            return None
        backlog = client.last_seq - client.done_seq
        if backlog + len(items) > (client.max_backlog or max_backlog):
            raise BacklogFull(backlog)
        self._check_quota(
            client_id, [item.payload for item in items], max_stored_events, max_stored_bytes
        )
        keys = [item.idempotency_key for item in items if item.idempotency_key is not None]
        if len(set(keys)) < len(keys) or self._keyed(client_id, keys):
            raise KeyTaken(None)
        events = [
            self._append(
                client,
                item.type,
                item.payload,
                item.idempotency_key,
                item.request_hash,
                None,
                traceparent,
            )
            for item in items
        ]
        return [
            Accepted(event.row(), caught_up=n == 0 and client.done_seq == event.seq - 1)
            for n, event in enumerate(events)
        ]

    def _check_quota(
        self, client_id: uuid.UUID, texts: Sequence[str], max_events: int, max_bytes: int
    ) -> None:
        """QuotaFull unless the client's stored events and bytes with `texts` (payloads as
        JSON text) stay within the quota (within_quota in schema.sql)."""
        stored = [e for e in self._events.values() if e.client_id == client_id]
        stored_bytes = sum(e.size for e in stored)
        adding = sum(len(text.encode()) for text in texts)
        if len(stored) + len(texts) > max_events or stored_bytes + adding > max_bytes:
            raise QuotaFull()

    def _keyed(self, client_id: uuid.UUID, keys: Sequence[str]) -> dict[str, _Event]:
        """The client's events under any of `keys`, by key."""
        wanted = set(keys)
        found: dict[str, _Event] = {}
        for e in self._events.values():
            if e.client_id == client_id and e.idempotency_key in wanted:
                assert e.idempotency_key is not None
                found[e.idempotency_key] = e
        return found

    def _append(
        self,
        client: _Client,
        type_: str,
        text: str,
        idempotency_key: str | None,
        request_hash: bytes | None,
        redrive_of: uuid.UUID | None,
        traceparent: str | None,
    ) -> _Event:
        """A new event at the tail of the client's mailbox (`text`: its payload's JSON)."""
        client.last_seq += 1
        event = _Event(
            uuid.uuid4(),
            client.id,
            client.last_seq,
            type_,
            _stored(text),
            idempotency_key,
            request_hash,
            redrive_of,
            traceparent,
            size=len(text.encode()),
        )
        self._events[event.id] = event
        self._by_seq[client.id, event.seq] = event
        return event

    async def events_by_keys(
        self, client_id: uuid.UUID, keys: Sequence[str]
    ) -> dict[str, tuple[EventRow, bytes]]:
        """As Journal.events_by_keys: the client's events under these keys, by key, with
        their request hashes (b"" when the event has none)."""
        return {
            key: (event.row(), event.request_hash or b"")
            for key, event in self._keyed(client_id, keys).items()
        }

    async def event_by_key(self, client_id: uuid.UUID, key: str) -> tuple[EventRow, bytes] | None:
        """As Journal.event_by_key: the client's event under `key` with its request hash."""
        event = self._keyed(client_id, [key]).get(key)
        return None if event is None else (event.row(), event.request_hash or b"")

    async def heartbeat(self, worker_id: str, *, holds_lock: bool | None = None) -> None:
        """The worker is seen now (its lease's lock held or not; None: it has none)."""
        worker = self._workers.get(worker_id)
        if worker is None:
            self._workers[worker_id] = _Worker(self._clock(), holds_lock)
        else:
            worker.last_seen, worker.holds_lock = self._clock(), holds_lock

    async def mark_draining(self, worker_id: str) -> None:
        if worker_id in self._workers:
            self._workers[worker_id].draining = True

    async def forget_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    # --- reads ---------------------------------------------------------------------------

    async def position(self, client_id: uuid.UUID) -> Position | None:
        c = self._clients.get(client_id)
        if c is None:
            return None
        return Position(
            c.done_seq,
            c.last_seq,
            MailboxState(c.state),
            DeadEventPolicy(c.policy),
            c.max_restarts,
            c.restart_period,
            c.host,
            c.epoch,
        )

    async def event(self, client_id: uuid.UUID, event_id: uuid.UUID) -> EventRow | None:
        event = self._events.get(event_id)
        return event.row() if event is not None and event.client_id == client_id else None

    async def events_between(self, client_id: uuid.UUID, low: int, high: int) -> list[EventRow]:
        """Events with low < seq < high, in order."""
        client = self._clients.get(client_id)
        last = 0 if client is None else client.last_seq
        seqs = range(max(low, 0) + 1, min(high, last + 1))
        return [self._by_seq[client_id, seq].row() for seq in seqs]

    def _head(self, client_id: uuid.UUID) -> _Event:
        """The event after done_seq (there is one while the mailbox has a backlog)."""
        return self._by_seq[client_id, self._clients[client_id].done_seq + 1]

    async def mailbox(self, client_id: uuid.UUID) -> MailboxRow | None:
        c = self._clients.get(client_id)
        if c is None:
            return None
        in_flight = [
            e.seq
            for e in self._events.values()
            if e.client_id == client_id and e.status in ("processing", "retrying")
        ]
        head = self._by_seq.get((client_id, c.done_seq + 1))
        return MailboxRow(
            c.id,
            MailboxState(c.state),
            c.last_seq,
            c.done_seq,
            c.host,
            c.restarts,
            DeadEventPolicy(c.policy),
            c.max_restarts,
            c.restart_period,
            c.suspended_reason,
            c.suspended_at,
            min(in_flight, default=None),
            None if head is None else EventStatus(head.status),
        )

    # --- the outbox ----------------------------------------------------------------------

    async def unpublished(self, older_than: float, limit: int) -> list[EventRow]:
        before = _now() - datetime.timedelta(seconds=older_than)
        rows = [
            e
            for e in self._events.values()
            if e.published_at is None and e.status not in TERMINAL and e.accepted_at < before
        ]
        return [e.row() for e in sorted(rows, key=lambda e: e.accepted_at)[:limit]]

    async def mark_published(self, event_ids: Sequence[uuid.UUID]) -> None:
        for event_id in event_ids:
            event = self._events.get(event_id)
            if event is not None and event.published_at is None:
                event.published_at = _now()

    # --- attempts and outcomes (the fence) -----------------------------------------------

    def _fenced_event(self, event_id: uuid.UUID, epoch: int | None) -> _Event | None:
        """The event, if it is not terminal and its mailbox is under the placement `epoch`."""
        event = self._events.get(event_id)
        if event is None or event.status in TERMINAL:
            return None
        return event if self._clients[event.client_id].placed(epoch) else None

    async def mark_attempt(
        self, event_id: uuid.UUID, *, epoch: int | None, delivered: bool = False
    ) -> int | None:
        event = self._fenced_event(event_id, epoch)
        if event is None:
            return None
        if delivered:
            event.published_at = event.published_at or _now()
        event.status, event.attempts = "processing", event.attempts + 1
        event.started_at = event.started_at or _now()
        worker = self._clients[event.client_id].host
        timeline = self._attempts.setdefault((event.client_id, event.seq), [])
        timeline.append(AttemptRow(event.attempts, _now(), None, None, worker))
        return event.attempts

    def _finish_attempt(self, event: _Event, error: str | None) -> None:
        """The event's newest attempt ends (mark_retrying, record_outcomes)."""
        timeline = self._attempts.get((event.client_id, event.seq), [])
        for n, row in enumerate(timeline):
            if row.attempt == event.attempts and row.finished_at is None:
                timeline[n] = dataclasses.replace(row, finished_at=_now(), error=error)

    async def event_attempts(self, client_id: uuid.UUID, event_id: uuid.UUID) -> list[AttemptRow]:
        event = self._events.get(event_id)
        if event is None or event.client_id != client_id:
            return []
        return list(self._attempts.get((client_id, event.seq), []))

    async def mark_retrying(self, event_id: uuid.UUID, error: Json, *, epoch: int | None) -> bool:
        event = self._fenced_event(event_id, epoch)
        if event is None:
            return False
        event.status, event.error = "retrying", _stored(dump_error(error))
        self._finish_attempt(event, _text(event.error))
        self._clients[event.client_id].restarts += 1
        return True

    async def record_outcome(
        self,
        event_id: uuid.UUID,
        client_id: uuid.UUID,
        seq: int,
        status: str,
        attempts: int,
        result: Json,
        error: Json,
        *,
        epoch: int | None,
    ) -> bool:
        """The fence: done_seq moves from `seq - 1` to `seq` under the current placement."""
        client = self._clients.get(client_id)
        if client is None or client.done_seq != seq - 1 or not client.placed(epoch):
            return False
        client.done_seq = seq
        event = self._events.get(event_id)
        if event is None:
            return False
        self._finish_attempt(event, None if error is None else _text(_stored(dump_error(error))))
        event.status, event.attempts = status, attempts
        event.result = None if result is None else _stored(dump_json(result))
        event.error = None if error is None else _stored(dump_error(error))
        event.finished_at = _now()
        event.started_at = event.started_at or event.finished_at
        return True

    # --- placement and supervision -------------------------------------------------------

    def _live(self, alive_within: float, by_lock: bool) -> set[str]:
        """live_worker_ids (schema.sql), for one server: no lock was taken on another."""
        since = self._clock() - alive_within
        return {
            worker_id
            for worker_id, w in self._workers.items()
            if w.last_seen > since and (not by_lock or w.holds_lock is not False)
        }

    async def mailboxes_placed_on(self, worker_id: str) -> dict[uuid.UUID, int]:
        return {
            c.id: c.epoch
            for c in self._clients.values()
            if c.host == worker_id and c.state == "active"
        }

    async def live_workers(self, alive_within: float, by_lock: bool) -> dict[str, int]:
        live = self._live(alive_within, by_lock)
        return {
            worker_id: len(await self.mailboxes_placed_on(worker_id))
            for worker_id in sorted(live)
            if not self._workers[worker_id].draining
        }

    async def wanted(
        self, client_ids: Sequence[uuid.UUID], alive_within: float, by_lock: bool
    ) -> list[Wanted]:
        live = self._live(alive_within, by_lock)
        clients = [self._clients[c] for c in dict.fromkeys(client_ids) if c in self._clients]
        return [
            Wanted(c.id, MailboxState(c.state), c.last_seq > c.done_seq, c.host in live)
            for c in clients
        ]

    async def stranded_mailboxes(
        self, alive_within: float, by_lock: bool, limit: int
    ) -> dict[uuid.UUID, str | None]:
        live = self._live(alive_within, by_lock)
        stranded = sorted(
            c.id
            for c in self._clients.values()
            if c.done_seq < c.last_seq and c.state != "suspended" and c.host not in live
        )[:limit]
        return {c: self._head(c).traceparent for c in stranded}

    async def place_mailboxes(
        self, plan: dict[uuid.UUID, str], alive_within: float, by_lock: bool
    ) -> dict[uuid.UUID, Placed]:
        live = self._live(alive_within, by_lock)
        placed: dict[uuid.UUID, Placed] = {}
        for client_id, worker_id in plan.items():
            c = self._clients.get(client_id)
            if c is None or c.state == "suspended" or (c.state == "active" and c.host in live):
                continue  # suspended, or on a live worker: a mailbox moves only off a dead one
            c.replace("active", worker_id)
            placed[client_id] = Placed(c.epoch, c.done_seq, c.last_seq)
        return placed

    async def release_mailbox(
        self, client_id: uuid.UUID, worker_id: str, *, epoch: int | None = None
    ) -> None:
        c = self._clients.get(client_id)
        if c is None or c.host != worker_id or c.state != "active":
            return
        if epoch is None or c.epoch == epoch:
            c.replace("idle", None)

    async def suspend_mailbox(
        self, client_id: uuid.UUID, reason: str, *, epoch: int | None = None
    ) -> bool:
        c = self._clients.get(client_id)
        if c is None or c.state == "suspended" or (epoch is not None and c.epoch != epoch):
            return False
        c.replace("suspended", None)
        c.suspended_reason, c.suspended_at = reason[:500], _now()
        return True

    async def resume_mailbox(self, client_id: uuid.UUID) -> bool:
        c = self._clients.get(client_id)
        if c is None or c.state != "suspended":
            return False
        c.replace("idle", None)
        c.suspended_reason = c.suspended_at = None
        return True

    async def set_mailbox_policy(
        self,
        client_id: uuid.UUID,
        *,
        policy: str | None = None,
        max_restarts: int | None = None,
        restart_period: float | None = None,
        default_intensity: bool = False,
    ) -> bool:
        c = self._clients.get(client_id)
        if c is None:
            return False
        c.policy = policy or c.policy
        if default_intensity:
            c.max_restarts = c.restart_period = None
        else:
            c.max_restarts = c.max_restarts if max_restarts is None else max_restarts
            c.restart_period = c.restart_period if restart_period is None else restart_period
        return True


if TYPE_CHECKING:  # mypy proves here that the memory journal plays every role
    _ROLES: tuple[type[HostJournal], type[SupervisorJournal]] = (MemoryJournal, MemoryJournal)
