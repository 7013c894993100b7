"""The JSON bodies the API answers with, built from journal rows and accepted events."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response

from actors import tracing
from actors.policy import RestartIntensity
from actors.states import EventStatus, MailboxState
from actors.store import AttemptRow, EventPage, EventRow, ListedEvent, MailboxRow
from gateway.accepting import AcceptedEvent

#: Bytes a page counts for an item's fields other than its type, payload, result and error
#: (ids, timestamps, trace id and keys take about 350), and for its envelope.
ITEM_BYTES = 512
PAGE_ENVELOPE_BYTES = 64


def _event_fields(row: EventRow | ListedEvent) -> dict[str, Any]:
    """An event's fields other than its payload, result and error."""
    body: dict[str, Any] = {
        "id": str(row.id),
        "client_id": str(row.client_id),
        "seq": row.seq,
        "type": row.type,
        "status": row.status,
        "attempts": row.attempts,
        "accepted_at": rfc3339(row.accepted_at),
        "started_at": rfc3339(row.started_at),
        "finished_at": rfc3339(row.finished_at),
        "trace_id": tracing.trace_id_of(row.traceparent),
    }
    if row.redrive_of is not None:
        body["redrive_of"] = str(row.redrive_of)
    return body


def _listed_json(row: ListedEvent) -> str:
    """One item of a page as JSON text, its payload, result and error spliced in as the
    journal sent them (valid JSON: PostgreSQL's text of a jsonb value)."""
    fields = json.dumps(_event_fields(row), ensure_ascii=False, separators=(",", ":"))
    return (
        f'{fields[:-1]},"payload":{row.payload},"result":{row.result or "null"},'
        f'"error":{row.error or "null"}}}'
    )


def _attempt_json(row: AttemptRow) -> str:
    """One attempt of an event's `attempt_log`, its error spliced in as the journal sent it."""
    duration = row.duration
    fields = {
        "attempt": row.attempt,
        "started_at": rfc3339(row.started_at),
        "finished_at": rfc3339(row.finished_at),
        "duration_ms": None if duration is None else round(duration * 1000, 3),
    }
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return f'{text[:-1]},"error":{row.error or "null"}}}'


def event_answer(row: ListedEvent, attempts: list[AttemptRow]) -> Response:
    """200 with the event object, built as text like a page's items (nothing decoded), and its
    `attempt_log`: each attempt, oldest first (not on a page's items)."""
    log = ",".join(_attempt_json(attempt) for attempt in attempts)
    body = f'{_listed_json(row)[:-1]},"attempt_log":[{log}]}}'
    return Response(body.encode(), media_type="application/json")


def page_answer(page: EventPage) -> Response:
    """200 `{"items": [...], "next_after_seq": n | null}`, built as text: the page's JSON
    values are never decoded into Python objects."""
    following = page.events[-1].seq if page.more and page.events else None
    items = ",".join(_listed_json(row) for row in page.events)
    body = f'{{"items":[{items}],"next_after_seq":{json.dumps(following)}}}'
    return Response(body.encode(), media_type="application/json")


def accepted_json(row: EventRow) -> dict[str, Any]:
    """The body of the 202 (and of an idempotent replay of it)."""
    body: dict[str, Any] = {
        "id": str(row.id),
        "client_id": str(row.client_id),
        "seq": row.seq,
        "type": row.type,
        "status": EventStatus.QUEUED,
        "accepted_at": rfc3339(row.accepted_at),
    }
    if row.redrive_of is not None:
        body["redrive_of"] = str(row.redrive_of)
    return body


def accepted_answer(accepted: AcceptedEvent) -> Response:
    """202 with the event's Location; 200 marked `Idempotent-Replayed` for a replay."""
    row = accepted.event
    headers = {"Location": f"/v1/events/{row.id}"}
    if accepted.replayed:
        headers = {"Idempotent-Replayed": "true", **headers}
    status = 200 if accepted.replayed else 202
    return JSONResponse(accepted_json(row), status_code=status, headers=headers)


def batch_answer(accepted: list[AcceptedEvent]) -> Response:
    """202 `{"items": [...]}`, one accepted body per item in the order sent, a replay marked
    `"replayed": true`; 200 when every item is a replay."""
    items = []
    for each in accepted:
        body = accepted_json(each.event)
        if each.replayed:
            body["replayed"] = True
        items.append(body)
    status = 200 if all(each.replayed for each in accepted) else 202
    return JSONResponse({"items": items}, status_code=status)


def rfc3339(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def mailbox_json(
    row: MailboxRow, defaults: RestartIntensity, *, show_host: bool = True
) -> dict[str, Any]:
    """A mailbox as the API shows it; `host` (the worker's name) is null unless `show_host`
    (operators see where mailboxes run, tenants do not learn the cluster's host names)."""
    state = row.state
    if state is MailboxState.ACTIVE and row.head_status is EventStatus.RETRYING:
        state = MailboxState.BACKING_OFF
    return {
        "client_id": str(row.client_id),
        "state": state,
        "last_seq": row.last_seq,
        "done_seq": row.done_seq,
        "backlog": row.last_seq - row.done_seq,
        "in_flight_seq": row.in_flight_seq,
        "restarts": row.restarts,
        "host": row.host if show_host else None,
        "policy": row.policy,
        "restart_intensity": {
            "max_restarts": row.max_restarts or defaults.max_restarts,
            "within": row.restart_period or defaults.within,
            "default": row.max_restarts is None and row.restart_period is None,
        },
        "suspended_reason": row.suspended_reason,
        "suspended_at": rfc3339(row.suspended_at),
    }
