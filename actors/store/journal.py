"""The PostgreSQL journal: what was accepted, in which order, and what became of it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import asyncpg

from actors import metrics
from actors.outages import UNAVAILABLE
from actors.store import durability
from actors.store.group_commit import GroupCommit
from actors.store.queries import QUERIES
from actors.store.retention import Retirer, sole_retirer
from actors.store.rows import (
    Accepted,
    AttemptRow,
    BacklogFull,
    Credentials,
    EventGone,
    EventPage,
    EventRow,
    Json,
    KeyTaken,
    ListedEvent,
    MailboxRow,
    Placed,
    Position,
    QuotaFull,
    Wanted,
    dump_error,
    dump_json,
)
from actors.store.traced import TracedPool


@dataclasses.dataclass(frozen=True, slots=True)
class AcceptRequest:
    """accept_event's parameters, in its order ($1..$10)."""

    client_id: uuid.UUID
    type: str
    payload: str  # JSON text
    idempotency_key: str | None
    request_hash: bytes | None
    redrive_of: uuid.UUID | None
    traceparent: str | None
    max_backlog: int
    max_stored_events: int
    max_stored_bytes: int

    def params(self) -> tuple[Any, ...]:
        return (
            self.client_id,
            self.type,
            self.payload,
            self.idempotency_key,
            self.request_hash,
            self.redrive_of,
            self.traceparent,
            self.max_backlog,
            self.max_stored_events,
            self.max_stored_bytes,
        )


class BatchRequest(NamedTuple):
    """One item of accept_batch, in its arrays' order ($2..$5)."""

    type: str
    payload: str  # JSON text
    idempotency_key: str | None
    request_hash: bytes | None


#: What one accept request gets from a batch: its event, None (no such client), or the
#: exception it raises (KeyTaken, BacklogFull, QuotaFull, EventGone, a journal error).
AcceptOutcome = Accepted | None | Exception

#: Accepts committed together at most, and batches in flight at once (see docs/decisions.md).
ACCEPT_BATCH = 256
ACCEPT_BATCHES_IN_FLIGHT = 2
#: Errors that roll back a whole batch for no fault of its requests: run it again.
ROLLED_BACK_BY_CONFLICT = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
BATCH_ATTEMPTS = 3


def _columns(requests: list[AcceptRequest]) -> list[list[Any]]:
    """accept_events' parallel arrays: one per accept_event parameter."""
    return [list(column) for column in zip(*(r.params() for r in requests), strict=True)]


def _accept_outcome(row: asyncpg.Record) -> AcceptOutcome:
    if row["admitted"] is None:
        return None  # no such client
    if not row["admitted"] and row["refusal"] == "quota":
        return QuotaFull()
    if not row["admitted"]:
        return BacklogFull(row["backlog"])
    return Accepted(EventRow.of(row), caught_up=row["done_seq"] == row["seq"] - 1)


class _Outcome(NamedTuple):
    """One row of record_outcomes, in the order of its arrays."""

    event_id: uuid.UUID
    client_id: uuid.UUID
    seq: int
    status: str
    attempts: int
    result: str | None  # JSON text
    error: str | None
    epoch: int | None  # the placement the writer holds (None: unfenced, tests only)


#: The worker's writes committed together at most, and batches in flight at once.
WORKER_BATCH = 256
WORKER_BATCHES_IN_FLIGHT = 2


async def _retry_conflicts(
    fetch: Callable[..., Awaitable[list[Any]]], sql: str, *args: Any
) -> list[Any]:
    """Run a batch statement; one rolled back by a deadlock or serialization failure wrote
    nothing and is run again, BATCH_ATTEMPTS times in all."""
    for _ in range(BATCH_ATTEMPTS - 1):
        try:
            return await fetch(sql, *args)
        except ROLLED_BACK_BY_CONFLICT:
            continue
    return await fetch(sql, *args)


async def _end_transaction(connection: asyncpg.Connection) -> None:
    """What a pooled connection needs on release: seriatim keeps no session state (no SET,
    LISTEN, cursors or session advisory locks), so asyncpg's default reset query, one more
    round trip per query, is replaced by a rollback only if a transaction was left open."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=lambda text: text, decoder=json.loads
    )


class Sessions:
    """When a session of the pool last ended (time.monotonic(); -inf: none yet).

    PostgreSQL ends every session at once when it restarts, after a backend's crash (the
    postmaster reinitializes without restarting itself) and when a standby is promoted: the
    workers' lease locks go with them while the workers live on. The supervisor judges by
    heartbeats alone for a while after any session of its pool ended (Supervisor._by_lock).
    The pool also ends sessions itself (surplus idle connections, recycled ones, failed
    resets); each only makes the supervisor more patient for a moment."""

    def __init__(self) -> None:
        self.lost_at = -math.inf

    async def init(self, connection: asyncpg.Connection) -> None:
        await _init_connection(connection)
        connection.add_termination_listener(self._ended)

    def _ended(self, _: Any) -> None:
        self.lost_at = time.monotonic()


class Journal:
    """One method per named query; each shapes arguments and returns frozen rows."""

    def __init__(self, pool: asyncpg.Pool, sessions: Sessions | None = None) -> None:
        self.pool = TracedPool(pool)
        self._sessions = sessions or Sessions()
        # Writes of many requests or mailboxes at once, one statement each (group_commit.py):
        # the gateway's accepts, the worker's two writes per event.
        self._accepts: GroupCommit[AcceptRequest, Accepted | None] = GroupCommit(
            self._commit_accepts,
            max_batch=ACCEPT_BATCH,
            max_in_flight=ACCEPT_BATCHES_IN_FLIGHT,
        )
        self._attempts: GroupCommit[tuple[uuid.UUID, int | None, bool], int | None] = GroupCommit(
            self._mark_attempts, max_batch=WORKER_BATCH, max_in_flight=WORKER_BATCHES_IN_FLIGHT
        )
        self._outcomes: GroupCommit[_Outcome, bool] = GroupCommit(
            self._record_outcomes, max_batch=WORKER_BATCH, max_in_flight=WORKER_BATCHES_IN_FLIGHT
        )

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Journal:
        sessions = Sessions()
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=sessions.init,
            reset=_end_transaction,
            command_timeout=30,
        )
        journal = cls(pool, sessions)
        metrics.watch_pool(journal.pool.get_size, journal.pool.get_idle_size)
        return journal

    async def close(self) -> None:
        await self.pool.close()

    @property
    def session_lost_at(self) -> float:
        """When a session of this journal's pool last ended (time.monotonic(); -inf: never)."""
        return self._sessions.lost_at

    @contextlib.asynccontextmanager
    async def _transaction(self, via: Any) -> AsyncIterator[Any]:
        """A transaction of its own, or a savepoint in `via`'s (an audited action's)."""
        if via is not None:
            async with via.transaction():
                yield via
            return
        async with self.pool.acquire() as connection, connection.transaction():
            yield connection

    async def ping(self) -> None:
        """Raise unless PostgreSQL answers."""
        await self.pool.fetchval(QUERIES["ping"])

    async def check_durability(self) -> None:
        """Raise RuntimeError when PostgreSQL would lose commits on a crash; say at ERROR
        level when a failover to an asynchronous standby would (durability.py)."""
        row = await self.pool.fetchrow(QUERIES["durability"])
        durability.check(durability.Durability(**dict(row)))

    # --- clients and credentials -------------------------------------------------------

    async def create_client(
        self, name: str, secret_hash: str, admin: bool, *, via: Any = None
    ) -> uuid.UUID:
        row = await (via or self.pool).fetchrow(QUERIES["insert_client"], name, secret_hash, admin)
        return row["id"]  # type: ignore[no-any-return]

    async def create_first_admin(self, name: str, secret_hash: str) -> uuid.UUID | None:
        """An admin client when there is no client yet (a first start); else None."""
        created: uuid.UUID | None = await self.pool.fetchval(
            QUERIES["insert_first_admin"], name, secret_hash
        )
        return created

    async def credentials(self, client_id: uuid.UUID) -> Credentials | None:
        row = await self.pool.fetchrow(QUERIES["client_credentials"], client_id)
        return Credentials(**dict(row)) if row else None

    # --- intake ------------------------------------------------------------------------

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
        """Commit a new event at the tail of the client's mailbox; return once it committed.

        Returns None when the client does not exist; raises KeyTaken when the idempotency
        key is already used, BacklogFull when the client has `max_backlog` (or its own
        `clients.max_backlog`) events unfinished, QuotaFull when the event would take the
        client's stored events past `max_stored_events` or `max_stored_bytes` (or its own
        quota), EventGone when `redrive_of` was deleted by retention meanwhile. Nothing is
        written in any of these cases.
        Accepts waiting at the same moment are committed together (group commit).
        """
        request = AcceptRequest(
            client_id,
            type_,
            dump_json(payload),
            idempotency_key,
            request_hash,
            redrive_of,
            traceparent,
            max_backlog,
            max_stored_events,
            max_stored_bytes,
        )
        with self.pool.span(QUERIES["accept_event"]):  # this request's part of the batch
            return await self._accepts.submit(request)

    async def _commit_accepts(self, requests: list[AcceptRequest]) -> list[AcceptOutcome]:
        """One accept_events statement for the batch. A lone request runs accept_event, which
        costs PostgreSQL less for one row; so does every request of a batch refused for one
        request's sake (a unique violation rolls back the whole statement). A batch rolled
        back by a deadlock or serialization failure is run again, BATCH_ATTEMPTS times."""
        if len(requests) > 1:
            try:
                rows = await _retry_conflicts(
                    self.pool.fetch, QUERIES["accept_events"], *_columns(requests)
                )
            except UNAVAILABLE:
                raise
            except asyncpg.PostgresError:  # a unique violation, or conflicts every time
                pass
            else:
                return [_accept_outcome(row) for row in rows]
        return await self._accept_each(requests)

    async def _accept_each(self, requests: list[AcceptRequest]) -> list[AcceptOutcome]:
        """accept_event per request, in order: each gets the answer it would have had alone.
        Once the journal is unreachable, the rest fail with the same error untried."""
        outcomes: list[AcceptOutcome] = []
        for request in requests:
            try:
                outcomes.append(await self._accept_one(request))
            except Exception as error:
                outcomes.append(error)
                if isinstance(error, UNAVAILABLE):
                    outcomes += [error] * (len(requests) - len(outcomes))
                    break
        return outcomes

    async def _accept_one(self, request: AcceptRequest) -> Accepted | None:
        try:
            row = await self.pool.fetchrow(QUERIES["accept_event"], *request.params())
        except asyncpg.UniqueViolationError:
            raise KeyTaken(request.idempotency_key) from None
        except asyncpg.ForeignKeyViolationError:  # retention deleted the redriven event
            raise EventGone() from None
        if row is None:
            refusal = await self.pool.fetchrow(
                QUERIES["accept_refusal"],
                request.client_id,
                request.max_backlog,
                request.max_stored_events,
                request.max_stored_bytes,
            )
            if refusal is None or not refusal["accepts"]:
                return None  # no such client, or disabled or deleted
            if refusal["backlog_full"]:
                raise BacklogFull(refusal["backlog"])
            raise QuotaFull()
        return Accepted(EventRow.of(row), caught_up=row["done_seq"] == row["seq"] - 1)

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
        """Commit a batch of one client's events, all or nothing, with consecutive seqs in
        the order given; return them in that order once committed.

        Returns None when the client does not exist (or is disabled or deleted); raises
        KeyTaken when one of the idempotency keys is already used, BacklogFull when the
        client's backlog with the whole batch would pass `max_backlog` (or its own
        `clients.max_backlog`), QuotaFull when the batch would take its stored events past
        its quota (as `accept` judges one event). Nothing is written in any of these cases.
        One statement: the batch is its own group, it does not wait for the group commit of
        single accepts.
        """
        columns = [list(column) for column in zip(*items, strict=True)] or [[], [], [], []]
        try:
            rows = await self.pool.fetch(
                QUERIES["accept_batch"],
                client_id,
                *columns,
                traceparent,
                max_backlog,
                max_stored_events,
                max_stored_bytes,
            )
        except asyncpg.UniqueViolationError:
            raise KeyTaken(None) from None
        if not rows:
            refusal = await self.pool.fetchrow(
                QUERIES["accept_refusal"],
                client_id,
                max_backlog,
                max_stored_events,
                max_stored_bytes,
            )
            if refusal is None or not refusal["accepts"]:
                return None  # no such client, or disabled or deleted
            if refusal["backlog"] + len(items) > refusal["max_backlog"]:
                raise BacklogFull(refusal["backlog"])
            raise QuotaFull()
        ordered = sorted(rows, key=lambda row: row["seq"])
        done_seq = ordered[0]["done_seq"]
        return [
            Accepted(EventRow.of(row), caught_up=n == 0 and done_seq == row["seq"] - 1)
            for n, row in enumerate(ordered)
        ]

    async def events_by_keys(
        self, client_id: uuid.UUID, keys: Sequence[str]
    ) -> dict[str, tuple[EventRow, bytes]]:
        """The client's events under these idempotency keys, by key, with their request
        hashes; one round trip whatever the number of keys."""
        if not keys:
            return {}
        rows = await self.pool.fetch(QUERIES["events_by_keys"], client_id, list(keys))
        return {
            row["idempotency_key"]: (EventRow.of(row), bytes(row["request_hash"] or b""))
            for row in rows
        }

    async def event_by_key(self, client_id: uuid.UUID, key: str) -> tuple[EventRow, bytes] | None:
        row = await self.pool.fetchrow(QUERIES["event_by_key"], client_id, key)
        return (EventRow.of(row), bytes(row["request_hash"])) if row else None

    async def event(self, client_id: uuid.UUID, event_id: uuid.UUID) -> EventRow | None:
        row = await self.pool.fetchrow(QUERIES["event_by_id"], event_id, client_id)
        return EventRow.of(row) if row else None

    async def event_text(self, client_id: uuid.UUID, event_id: uuid.UUID) -> ListedEvent | None:
        """The event with its payload, result and error as the JSON text PostgreSQL sends,
        never decoded (a read then costs its size in bytes, whatever the JSON's shape)."""
        row = await self.pool.fetchrow(QUERIES["event_text_by_id"], event_id, client_id)
        return ListedEvent.of(row) if row else None

    async def event_attempts(self, client_id: uuid.UUID, event_id: uuid.UUID) -> list[AttemptRow]:
        """The client's event's attempts, oldest first (none for another client's event)."""
        rows = await self.pool.fetch(QUERIES["event_attempts"], event_id, client_id)
        return [AttemptRow.of(row) for row in rows]

    async def events(
        self, client_id: uuid.UUID, *, after_seq: int, status: str | None, limit: int
    ) -> list[EventRow]:
        rows = await self.pool.fetch(QUERIES["list_events"], client_id, after_seq, status, limit)
        return [EventRow.of(row) for row in rows]

    async def event_page(
        self,
        client_id: uuid.UUID,
        *,
        after_seq: int,
        status: str | None,
        limit: int,
        max_bytes: int,
        item_bytes: int,
    ) -> EventPage:
        """At most `limit` events after `after_seq` and, past the first, at most `max_bytes` of
        JSON text (counting `item_bytes` per event for its other fields); the page's payloads,
        results and errors are never decoded."""
        rows = await self.pool.fetch(
            QUERIES["event_page"], client_id, after_seq, status, limit, max_bytes, item_bytes
        )
        events = tuple(ListedEvent.of(row) for row in rows if row["fits"])
        return EventPage(events, more=len(events) < len(rows) or len(events) == limit)

    async def events_between(self, client_id: uuid.UUID, low: int, high: int) -> list[EventRow]:
        """Events with low < seq < high, in order."""
        rows = await self.pool.fetch(QUERIES["events_between"], client_id, low, high)
        return [EventRow.of(row) for row in rows]

    async def mark_published(self, event_ids: Sequence[uuid.UUID]) -> None:
        await self.pool.execute(QUERIES["mark_published"], list(event_ids))

    async def unpublished(self, older_than: float, limit: int) -> list[EventRow]:
        rows = await self.pool.fetch(QUERIES["unpublished_events"], older_than, limit)
        return [EventRow.of(row) for row in rows]

    # --- processing --------------------------------------------------------------------

    async def position(self, client_id: uuid.UUID) -> Position | None:
        row = await self.pool.fetchrow(QUERIES["client_position"], client_id)
        return Position.of(row) if row else None

    async def mark_attempt(
        self, event_id: uuid.UUID, *, epoch: int | None, delivered: bool = False
    ) -> int | None:
        """Count a new attempt under the placement `epoch`; its number, or None when the event
        is terminal already or the placement is no longer current. `delivered`: RabbitMQ
        delivered the event, so the same update marks it published if it was not yet (the
        gateway's own mark, which comes later, then has nothing left to update)."""
        with self.pool.span(QUERIES["mark_attempts"]):
            return await self._attempts.submit((event_id, epoch, delivered))

    async def _mark_attempts(
        self, items: list[tuple[uuid.UUID, int | None, bool]]
    ) -> list[int | Exception | None]:
        if len(items) == 1:  # the usual batch at light load: the cheaper single-row form
            rows = await _retry_conflicts(self.pool.fetch, QUERIES["mark_attempt"], *items[0])
            return [rows[0]["attempts"] if rows else None]
        ids, epochs = [item[0] for item in items], [item[1] for item in items]
        delivered = [item[2] for item in items]
        rows = await _retry_conflicts(
            self.pool.fetch, QUERIES["mark_attempts"], ids, epochs, delivered
        )
        attempts = {row["id"]: row["attempts"] for row in rows}
        # The statement counts an id once: a second submission of it in the batch gets None.
        return [attempts.pop(event_id, None) for event_id in ids]

    async def mark_retrying(self, event_id: uuid.UUID, error: Json, *, epoch: int | None) -> bool:
        """Record a failed attempt that will be retried; False when refused (the event is
        terminal or the placement `epoch` is no longer current)."""
        row = await self.pool.fetchrow(QUERIES["mark_retrying"], event_id, dump_error(error), epoch)
        return row is not None

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
        """Record a terminal outcome and advance done_seq; False when the fence refused (the
        event is not next, or the placement `epoch` is no longer current)."""
        outcome = _Outcome(
            event_id,
            client_id,
            seq,
            status,
            attempts,
            None if result is None else dump_json(result),
            None if error is None else dump_error(error),
            epoch,
        )
        with self.pool.span(QUERIES["record_outcomes"]):
            return await self._outcomes.submit(outcome)

    async def _record_outcomes(self, outcomes: list[_Outcome]) -> list[bool | Exception]:
        if len(outcomes) == 1:  # the usual batch at light load: the cheaper single-row form
            rows = await _retry_conflicts(self.pool.fetch, QUERIES["record_outcome"], *outcomes[0])
            return [bool(rows)]
        columns = [list(column) for column in zip(*outcomes, strict=True)]
        rows = await _retry_conflicts(self.pool.fetch, QUERIES["record_outcomes"], *columns)
        recorded = {row["id"] for row in rows}
        results: list[bool | Exception] = []
        for outcome in outcomes:  # one event recorded twice in a batch: the second is refused
            results.append(outcome.event_id in recorded)
            recorded.discard(outcome.event_id)
        return results

    # --- mailboxes and placement -------------------------------------------------------

    async def mailbox(self, client_id: uuid.UUID) -> MailboxRow | None:
        row = await self.pool.fetchrow(QUERIES["mailbox"], client_id)
        return MailboxRow.of(row) if row else None

    async def mailboxes(
        self, state: str | None, after: uuid.UUID | None, limit: int
    ) -> list[MailboxRow]:
        rows = await self.pool.fetch(QUERIES["mailboxes"], state, after or uuid.UUID(int=0), limit)
        return [MailboxRow.of(row) for row in rows]

    async def place_mailboxes(
        self, plan: dict[uuid.UUID, str], alive_within: float, by_lock: bool
    ) -> dict[uuid.UUID, Placed]:
        """Record client → worker assignments; returns the clients placed (neither suspended
        nor active on a live worker), each with its new placement's epoch and position."""
        rows = await _retry_conflicts(
            self.pool.fetch,
            QUERIES["place_mailboxes"],
            list(plan),
            [plan[c] for c in plan],
            alive_within,
            by_lock,
        )
        return {row["id"]: Placed(row["epoch"], row["done_seq"], row["last_seq"]) for row in rows}

    async def release_mailbox(
        self, client_id: uuid.UUID, worker_id: str, *, epoch: int | None = None
    ) -> None:
        """The mailbox, if active on this worker (under placement `epoch`, when given),
        becomes idle under a new epoch."""
        await self.pool.execute(QUERIES["release_mailbox"], client_id, worker_id, epoch)

    async def suspend_mailbox(
        self, client_id: uuid.UUID, reason: str, *, epoch: int | None = None, via: Any = None
    ) -> bool:
        """Suspend a mailbox; False when it was suspended already, or when `epoch` (the
        placement of the mailbox asking for it) is no longer current."""
        row = await (via or self.pool).fetchrow(
            QUERIES["suspend_mailbox"], client_id, reason[:500], epoch
        )
        return row is not None

    async def set_mailbox_policy(
        self,
        client_id: uuid.UUID,
        *,
        policy: str | None = None,
        max_restarts: int | None = None,
        restart_period: float | None = None,
        default_intensity: bool = False,
        via: Any = None,
    ) -> bool:
        """Change a client's supervision policy; False when there is no such client."""
        row = await (via or self.pool).fetchrow(
            QUERIES["set_mailbox_policy"],
            client_id,
            policy,
            max_restarts,
            restart_period,
            default_intensity,
        )
        return row is not None

    async def resume_mailbox(self, client_id: uuid.UUID, *, via: Any = None) -> bool:
        """Take a suspended mailbox out of suspension; False when it was not suspended."""
        row = await (via or self.pool).fetchrow(QUERIES["resume_mailbox"], client_id)
        return row is not None

    async def release_worker(self, worker_id: str) -> None:
        await _retry_conflicts(self.pool.fetch, QUERIES["release_worker_mailboxes"], worker_id)

    # Liveness (`alive_within`, `by_lock`): see live_worker_ids in schema.sql.

    async def wanted(
        self, client_ids: Sequence[uuid.UUID], alive_within: float, by_lock: bool
    ) -> list[Wanted]:
        """Where each of these mailboxes stands, for the supervisor's decisions."""
        rows = await self.pool.fetch(
            QUERIES["mailboxes_wanted"], list(client_ids), alive_within, by_lock
        )
        return [Wanted.of(row) for row in rows]

    async def stranded_mailboxes(
        self, alive_within: float, by_lock: bool, limit: int
    ) -> dict[uuid.UUID, str | None]:
        """Client -> the traceparent of the first event of its backlog."""
        rows = await self.pool.fetch(QUERIES["stranded_mailboxes"], alive_within, by_lock, limit)
        return {row["id"]: row["traceparent"] for row in rows}

    async def mark_draining(self, worker_id: str) -> None:
        """The worker finishes what it has and takes no new mailboxes."""
        await self.pool.execute(QUERIES["mark_draining"], worker_id)

    async def mailboxes_placed_on(self, worker_id: str) -> dict[uuid.UUID, int]:
        """The clients whose mailboxes the journal places on this worker, with the epoch of
        each placement."""
        rows = await self.pool.fetch(QUERIES["mailboxes_placed_on"], worker_id)
        return {row["id"]: row["epoch"] for row in rows}

    async def forget_worker(self, worker_id: str) -> None:
        await self.pool.execute(QUERIES["forget_worker"], worker_id)

    async def observability_gauges(self) -> Any:
        """One row: mailboxes by state, backlog, oldest unfinished event, relay lag."""
        return await self.pool.fetchrow(QUERIES["observability_gauges"])

    async def live_workers(self, alive_within: float, by_lock: bool) -> dict[str, int]:
        """Live worker ids with the number of mailboxes each holds."""
        rows = await self.pool.fetch(QUERIES["live_workers"], alive_within, by_lock)
        return {row["id"]: row["load"] for row in rows}

    # --- retention ---------------------------------------------------------------------

    def retirer(self) -> contextlib.AbstractAsyncContextManager[Retirer | None]:
        """The sole deleter of finished events while inside, or None when another process
        is it (actors/store/retention.py)."""
        return sole_retirer(self.pool)

    # --- signing keys ------------------------------------------------------------------

    async def ensure_signing_key(
        self, generate: Callable[[], tuple[str, dict[str, Any]]]
    ) -> tuple[list[tuple[str, dict[str, Any], datetime.datetime]], frozenset[str]]:
        """All signing keys as (kid, private JWK, created_at), oldest first, and the kids of
        the revoked ones (never the newest); the first caller ever stores one from
        `generate`."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(QUERIES["lock_signing_keys"])
            rows = await connection.fetch(QUERIES["signing_keys"])
            if not rows:
                kid, private_jwk = generate()
                await connection.execute(QUERIES["insert_signing_key"], kid, dump_json(private_jwk))
                rows = await connection.fetch(QUERIES["signing_keys"])
        keys = [(row["kid"], row["private_jwk"], row["created_at"]) for row in rows]
        return keys, frozenset(row["kid"] for row in rows if row["revoked"])

    async def revoke_signing_key(
        self, kid: str, successor: tuple[str, dict[str, Any]], *, via: Any = None
    ) -> bool:
        """Revoke the key `kid` and store `successor` (kid, private JWK), which signs from now
        on, so that the newest key is never a revoked one; False (nothing stored) when there
        is no such key or it was revoked already."""
        async with self._transaction(via) as connection:
            await connection.execute(QUERIES["lock_signing_keys"])
            if await connection.fetchval(QUERIES["revoke_signing_key"], kid) is None:
                return False
            await connection.execute(
                QUERIES["insert_signing_key"], successor[0], dump_json(successor[1])
            )
        return True

    async def add_signing_key(
        self, kid: str, private_jwk: dict[str, Any], *, via: Any = None
    ) -> None:
        """Store a new signing key; it signs from now on (the newest key signs)."""
        async with self._transaction(via) as connection:
            await connection.execute(QUERIES["lock_signing_keys"])
            await connection.execute(QUERIES["insert_signing_key"], kid, dump_json(private_jwk))
