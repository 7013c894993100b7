"""The JSON bodies the API answers with, built from journal rows and accepted events."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from actors import tracing
from actors.policy import RestartIntensity
from actors.states import EventStatus, MailboxState
from actors.store import EventRow, MailboxRow
from gateway.accepting import AcceptedEvent


def event_json(row: EventRow) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(row.id),
        "client_id": str(row.client_id),
        "seq": row.seq,
        "type": row.type,
        "payload": row.payload,
        "status": row.status,
        "attempts": row.attempts,
        "accepted_at": rfc3339(row.accepted_at),
        "started_at": rfc3339(row.started_at),
        "finished_at": rfc3339(row.finished_at),
        "result": row.result,
        "error": row.error,
        "trace_id": tracing.trace_id_of(row.traceparent),
    }
    if row.redrive_of is not None:
        body["redrive_of"] = str(row.redrive_of)
    return body


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


def rfc3339(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def mailbox_json(row: MailboxRow, defaults: RestartIntensity) -> dict[str, Any]:
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
        "host": row.host,
        "policy": row.policy,
        "restart_intensity": {
            "max_restarts": row.max_restarts or defaults.max_restarts,
            "within": row.restart_period or defaults.within,
            "default": row.max_restarts is None and row.restart_period is None,
        },
        "suspended_reason": row.suspended_reason,
        "suspended_at": rfc3339(row.suspended_at),
    }
