"""The tenant view: a client signed in with its own, non-admin credentials sees its own
mailbox, tape and events, and submits events; never another client's data."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import intake
from gateway.bodies import mailbox_json
from gateway.console.guard import Console
from gateway.console.sessions import Session
from gateway.console.tape import parse_id, tape_of, window
from gateway.console.views import redirect
from gateway.problems import Problem
from gateway.services import services_of

PAYLOAD_CHARS = 4096


def tenant_routes(console: Console) -> list[BaseRoute]:
    page, action = console.page(operator=False), console.action(operator=False)

    async def own(request: Request, session: Session) -> Response:
        services = services_of(request)
        row = await services.journal.mailbox(session.client_id)
        if row is None:
            raise Problem(404, "not-found", "no such mailbox")
        low, high = window(row)
        events = await console.reads(request).tape(session.client_id, low, high)
        shown = mailbox_json(row, services.intensity)
        template = "tenant_live.html" if request.query_params.get("fragment") else "tenant.html"
        return console.render(
            request,
            template,
            session,
            mailbox=shown,
            tape=tape_of(row, events, str(shown["state"])),
            types=sorted(services.handlers.types()),
            done=_accepted(request.query_params.get("accepted", "")),
        )

    async def own_event(request: Request, session: Session) -> Response:
        event_id = parse_id(request.path_params["event_id"])
        detail = None
        if event_id is not None:
            detail = await console.reads(request).event(session.client_id, event_id, PAYLOAD_CHARS)
        if detail is None:
            raise Problem(404, "not-found", "no such event")
        return console.render(
            request,
            "event.html",
            session,
            event=detail,
            attempts=await console.reads(request).attempts(session.client_id, detail.id),
            cut=detail.payload_length > PAYLOAD_CHARS,
            trace_url=None,
            grafana=None,
            base="/console/me",
        )

    async def submit(request: Request, session: Session, fields: dict[str, str]) -> Response:
        services = services_of(request)
        await services.limits.admit(session.client_id)
        # the API's own JSON rules: depth, no NaN or Infinity, nothing jsonb cannot store
        try:
            payload = intake.parse_json((fields.get("payload") or "{}").encode("utf-8"))
        except Problem as bad:
            raise Problem(
                422, "invalid-payload", f"the payload must be a JSON object: {bad.detail}"
            ) from None
        type_, payload = intake.event_body(
            {"type": fields.get("type", ""), "payload": payload}, services.handlers
        )
        accepted = await services.acceptor.accept(session.client_id, type_, payload)
        return redirect(f"/console/me?accepted={accepted.event.seq}")

    return [
        Route("/me", page(own), methods=["GET"]),
        Route("/me/events/{event_id}", page(own_event), methods=["GET"]),
        Route("/me/events", action(submit), methods=["POST"]),
    ]


def _accepted(seq: str) -> str | None:
    """What the page says after a submit: only ever about a sequence number, never text
    from the URL."""
    return f"Event {int(seq)} accepted." if seq.isdigit() and len(seq) <= 18 else None
