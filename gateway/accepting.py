"""The accept use case: commit an event, have it published after, and say what was accepted.

Under an idempotency key, the first request makes the event and the same request again finds
it; the routes turn the outcome into an answer.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

from actors import metrics, tracing
from actors.protocol import EventMessage
from actors.settings import Settings
from actors.store import Accepted, BacklogFull, EventGone, EventRow, Journal, KeyTaken, QuotaFull
from gateway import intake
from gateway.batches import BatchItem
from gateway.limits import ClientLimits, Limits, backlog_full, quota_full
from gateway.problems import Problem
from gateway.publishing import Publishing
from gateway.tokens import invalid_token


@dataclasses.dataclass(frozen=True)
class AcceptedEvent:
    """An accepted event; `replayed` when an earlier request under the same key made it."""

    event: EventRow
    replayed: bool = False


#: Times a batch is tried when another gateway commits one of its keys in between.
BATCH_KEY_RACES = 2


class Acceptor:
    """Accepts events: commit first (the promise), publish after."""

    def __init__(
        self, journal: Journal, limits: ClientLimits, publishing: Publishing, settings: Settings
    ) -> None:
        self._journal = journal
        self._settings = settings
        self._limits = limits
        self._publishing = publishing
        self._in_progress: set[tuple[uuid.UUID, str]] = set()  # (client, key) being accepted

    async def accept(
        self,
        client_id: uuid.UUID,
        type_: str,
        payload: Any,
        *,
        key: str | None = None,
        redrive_of: uuid.UUID | None = None,
    ) -> AcceptedEvent:
        """The event, committed. Under `key` the same request again gets the original event
        (`replayed`). Raises Problem: 429 when the client's backlog is full or its quota of
        stored events reached, 404 when the redriven event was retired, 409 while the key
        is in use by another request, 422 when the key was used with another body, 401 when
        the client no longer exists; nothing is written then."""
        if key is None:
            return await self._commit(client_id, type_, payload, redrive_of=redrive_of)
        return await self._accept_once(client_id, type_, payload, key, redrive_of)

    async def _accept_once(
        self,
        client_id: uuid.UUID,
        type_: str,
        payload: Any,
        key: str,
        redrive_of: uuid.UUID | None = None,
    ) -> AcceptedEvent:
        fingerprint = intake.request_hash(type_, payload)
        slot = (client_id, key)
        if slot in self._in_progress:
            raise _key_in_use()
        self._in_progress.add(slot)
        try:
            replay = await self._replay(client_id, key, fingerprint)
            if replay is not None:
                return replay
            try:
                return await self._commit(
                    client_id,
                    type_,
                    payload,
                    idempotency_key=key,
                    request_hash=fingerprint,
                    redrive_of=redrive_of,
                )
            except KeyTaken:  # another gateway won the race and has committed by now
                replay = await self._replay(client_id, key, fingerprint)
                if replay is not None:
                    return replay
                raise _key_in_use() from None
        finally:
            self._in_progress.discard(slot)

    async def _replay(
        self, client_id: uuid.UUID, key: str, fingerprint: bytes
    ) -> AcceptedEvent | None:
        found = await self._journal.event_by_key(client_id, key)
        if found is None:
            return None
        row, original = found
        if original != fingerprint:
            raise Problem(
                422,
                "idempotency-key-reused",
                "this Idempotency-Key was used with a different request body",
            )
        return AcceptedEvent(row, replayed=True)

    async def _commit(
        self,
        client_id: uuid.UUID,
        type_: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        request_hash: bytes | None = None,
        redrive_of: uuid.UUID | None = None,
    ) -> AcceptedEvent:
        """Commit, then publish soon; raises KeyTaken, or Problem 429 when the client's
        backlog is full or its quota reached (nothing written either way)."""
        limits = await self._limits.of(client_id)
        try:
            accepted = await self._journal.accept(
                client_id,
                type_,
                payload,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                redrive_of=redrive_of,
                max_backlog=limits.max_backlog,
                max_stored_events=limits.max_stored_events,
                max_stored_bytes=limits.max_stored_bytes,
                traceparent=tracing.current_traceparent(),
            )
        except BacklogFull as full:
            raise backlog_full(full.backlog) from None
        except QuotaFull:
            raise quota_full(self._settings) from None
        except EventGone:
            raise Problem(404, "not-found", "no such event") from None
        if accepted is None:
            raise invalid_token("the token's client no longer exists")
        metrics.EVENTS_ACCEPTED.inc()
        row = accepted.event
        tracing.annotate(client_id=str(row.client_id), event_id=str(row.id), seq=row.seq)
        self._publishing.soon(EventMessage.of(row), wake_supervisor=accepted.caught_up)
        return AcceptedEvent(row)

    async def accept_batch(
        self, client_id: uuid.UUID, items: Sequence[BatchItem]
    ) -> list[AcceptedEvent]:
        """The batch's events, one per item in the order given, all committed in one
        transaction with consecutive seqs; an item whose key was seen before with the same
        body (earlier, or by an earlier item of this batch) is that event, `replayed`.
        Raises Problem as `accept` does (422 naming every item whose key was used with another
        body); nothing is written then. The new events are published in seq order."""
        keys = sorted({item.key for item in items if item.key is not None})
        slots = {(client_id, key) for key in keys}
        if slots & self._in_progress:
            raise _key_in_use()
        self._in_progress |= slots
        try:
            for _ in range(BATCH_KEY_RACES):
                try:
                    return await self._accept_batch_once(client_id, items, keys)
                except KeyTaken:  # another gateway committed one of the keys: look again
                    continue
            raise _key_in_use()
        finally:
            self._in_progress -= slots

    async def _accept_batch_once(
        self, client_id: uuid.UUID, items: Sequence[BatchItem], keys: list[str]
    ) -> list[AcceptedEvent]:
        found = await self._journal.events_by_keys(client_id, keys)
        reused = [
            {
                "index": index,
                "detail": f"idempotency_key {item.key!r} was used with a different body",
            }
            for index, item in enumerate(items)
            if item.key in found and found[item.key][1] != item.fingerprint
        ]
        if reused:
            raise Problem(
                422,
                "idempotency-key-reused",
                "an idempotency_key of this batch was used before with a different body; "
                "none was accepted",
                errors=reused,
            )
        fresh: list[int] = []  # the items that make new events, in order
        first_of: dict[str, int] = {}
        for index, item in enumerate(items):
            if item.key is not None:
                if item.key in found or item.key in first_of:
                    continue
                first_of[item.key] = index
            fresh.append(index)
        committed = await self._commit_batch(client_id, [items[i] for i in fresh])
        made = dict(zip(fresh, committed, strict=True))
        answers: list[AcceptedEvent] = []
        for index, item in enumerate(items):
            if index in made:
                answers.append(AcceptedEvent(made[index].event))
            elif item.key is not None and item.key in found:
                answers.append(AcceptedEvent(found[item.key][0], replayed=True))
            else:
                assert item.key is not None
                answers.append(AcceptedEvent(made[first_of[item.key]].event, replayed=True))
        return answers

    async def _commit_batch(self, client_id: uuid.UUID, items: list[BatchItem]) -> list[Accepted]:
        """Commit the items (all or nothing), then publish them soon, in seq order; raises
        KeyTaken, or Problem 429 when the client's backlog cannot take them all or its quota
        cannot hold them."""
        if not items:
            return []
        limits = await self._limits.of(client_id)
        _fits_at_all(items, limits)
        try:
            accepted = await self._journal.accept_batch(
                client_id,
                [item.request() for item in items],
                traceparent=tracing.current_traceparent(),
                max_backlog=limits.max_backlog,
                max_stored_events=limits.max_stored_events,
                max_stored_bytes=limits.max_stored_bytes,
            )
        except BacklogFull as full:
            raise backlog_full(full.backlog, len(items)) from None
        except QuotaFull:
            raise quota_full(self._settings) from None
        if accepted is None:
            raise invalid_token("the token's client no longer exists")
        metrics.EVENTS_ACCEPTED.inc(len(accepted))
        tracing.annotate(client_id=str(client_id), seq=accepted[0].event.seq, events=len(accepted))
        self._publishing.soon_in_order(
            [EventMessage.of(each.event) for each in accepted],
            wake_supervisor=accepted[0].caught_up,
        )
        return accepted


def _fits_at_all(items: list[BatchItem], limits: Limits) -> None:
    """Problem 422 for a batch larger than the client's backlog cap or quota could ever take
    (a 429 would never clear, whatever the client waited for); the batch-over-burst rule."""
    size = sum(item.size for item in items)
    if len(items) > limits.max_backlog:
        raise Problem(
            422,
            "batch-over-backlog",
            f"a batch of {len(items)} new events is more than this client's backlog cap of "
            f"{limits.max_backlog} unfinished events; send smaller batches",
        )
    if len(items) > limits.max_stored_events or size > limits.max_stored_bytes:
        raise Problem(
            422,
            "batch-over-quota",
            f"a batch of {len(items)} new events ({size} bytes) is more than this client's "
            f"quota of {limits.max_stored_events} events and {limits.max_stored_bytes} bytes "
            "could ever hold; send smaller batches",
        )


def _key_in_use() -> Problem:
    return Problem(
        409, "idempotency-key-in-use", "a request with this Idempotency-Key is still in progress"
    )
