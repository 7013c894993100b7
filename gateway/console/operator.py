"""The operators' pages (clients, one client's tape, one event, the audit log) and their
actions, each going through gateway/operations.py like the admin API."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actors.states import DeadEventPolicy
from gateway import intake, operations
from gateway.bodies import mailbox_json
from gateway.clients import DEFAULT_GRACE
from gateway.clients import _changes as client_changes  # the PATCH body's validation
from gateway.console.charts import MINUTES, chart
from gateway.console.guard import Console
from gateway.console.sessions import Session
from gateway.console.tape import parse_id, tape_of, trace_id, window
from gateway.console.views import redirect
from gateway.problems import Problem
from gateway.services import services_of

PAGE = 50
PAYLOAD_CHARS = 4096
SORTS = ("backlog", "age")
STATES = ("idle", "active", "suspended")
DONE = {  # ?done= codes and what the client's page says for each
    "resumed": "Mailbox resumed.",
    "suspended": "Mailbox suspended.",
    "policy": "Policy saved.",
    "limits": "Limits saved.",
}


def operator_routes(console: Console) -> list[BaseRoute]:
    page, action = console.page(operator=True), console.action(operator=True)

    async def clients(request: Request, session: Session) -> Response:
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in STATES:
            raise Problem(400, "invalid-query", f"state must be one of {', '.join(STATES)}")
        sort = params.get("sort") or "backlog"
        if sort not in SORTS:
            raise Problem(400, "invalid-query", "sort must be backlog or age")
        name = (params.get("name") or "").strip()[:200]
        like = "%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        hide_idle = params.get("hide_idle") == "1"
        rows = await console.reads(request).clients(
            state=state,
            name_like=like if name else None,
            hide_idle=hide_idle,
            sort=sort,
            after=_cursor(params.get("after")),
            limit=PAGE + 1,
        )
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        query = {
            "state": state or "",
            "name": name,
            "sort": sort,
            "hide_idle": "1" if hide_idle else "",
        }
        following = None
        if more:
            following = urlencode({**query, "after": f"{rows[-1].sort_key!r}~{rows[-1].id}"})
        template = "clients_live.html" if params.get("fragment") else "clients.html"
        minutes = await console.reads(request).minutes(None, MINUTES)
        return console.render(
            request,
            template,
            session,
            rows=rows,
            query=query,
            following=following,
            states=STATES,
            chart=chart(minutes),
        )

    async def client(request: Request, session: Session) -> Response:
        client_id = _path_id(request, "client_id")
        services = services_of(request)
        row = await services.journal.mailbox(client_id)
        settings = await services.tenancy.settings(client_id)
        if row is None or settings is None:
            raise Problem(404, "not-found", "no such client")
        low, high = window(row)
        events = await console.reads(request).tape(client_id, low, high)
        shown = mailbox_json(row, services.intensity)
        tape = tape_of(row, events, str(shown["state"]))
        template = "client_live.html" if request.query_params.get("fragment") else "client.html"
        minutes = await console.reads(request).minutes(client_id, MINUTES)
        return console.render(
            request,
            template,
            session,
            client=settings,
            mailbox=shown,
            tape=tape,
            defaults=services.settings,
            policies=list(DeadEventPolicy),
            done=DONE.get(request.query_params.get("done", "")),
            grafana=_grafana(console, client_id),
            chart=chart(minutes),
        )

    async def event(request: Request, session: Session) -> Response:
        client_id = _path_id(request, "client_id")
        detail = await console.reads(request).event(
            client_id, _path_id(request, "event_id"), PAYLOAD_CHARS
        )
        if detail is None:
            raise Problem(404, "not-found", "no such event")
        trace = trace_id(detail.traceparent)
        trace_url = console.settings.trace_url.replace("{trace_id}", trace) if trace else None
        return console.render(
            request,
            "event.html",
            session,
            event=detail,
            attempts=await console.reads(request).attempts(client_id, detail.id),
            cut=detail.payload_length > PAYLOAD_CHARS,
            trace_url=trace_url if console.settings.trace_url else None,
            grafana=_grafana(console, client_id),
            base=f"/console/clients/{client_id}",
        )

    async def audit(request: Request, session: Session) -> Response:
        before_text = request.query_params.get("before")
        before = None
        if before_text:
            if not before_text.isdigit() or len(before_text) > 18:
                raise Problem(400, "invalid-query", "before must be an entry id")
            before = int(before_text)
        entries = await services_of(request).audit.entries(before=before, limit=PAGE)
        following = entries[-1].id if len(entries) == PAGE else None
        return console.render(request, "audit.html", session, entries=entries, following=following)

    async def resume(request: Request, session: Session, fields: dict[str, str]) -> Response:
        client_id = _path_id(request, "client_id")
        await operations.resume_mailbox(services_of(request), session.client_id, client_id)
        return _done(client_id, "resumed")

    async def suspend(request: Request, session: Session, fields: dict[str, str]) -> Response:
        client_id = _path_id(request, "client_id")
        await operations.suspend_mailbox(
            services_of(request), session.client_id, client_id, fields.get("reason", "")
        )
        return _done(client_id, "suspended")

    async def policy(request: Request, session: Session, fields: dict[str, str]) -> Response:
        client_id = _path_id(request, "client_id")
        body: dict[str, object] = {"policy": fields.get("policy", "")}
        if fields.get("intensity") == "default":
            body["restart_intensity"] = None
        elif fields.get("max_restarts") or fields.get("within"):
            body["restart_intensity"] = {
                "max_restarts": _number(fields.get("max_restarts", ""), "max restarts", int),
                "within": _number(fields.get("within", ""), "within", float),
            }
        changes = intake.policy_body(body)
        await operations.set_policy(services_of(request), session.client_id, client_id, changes)
        return _done(client_id, "policy")

    async def limits(request: Request, session: Session, fields: dict[str, str]) -> Response:
        client_id = _path_id(request, "client_id")
        if fields.get("rate") == "default":
            rate: object = None
        else:
            rate = {
                "per_second": _number(fields.get("per_second", ""), "per second", float),
                "burst": _number(fields.get("burst", ""), "burst", int),
            }
        backlog_text = fields.get("max_backlog", "").strip()
        backlog = (
            None if backlog_text in ("", "default") else _number(backlog_text, "max backlog", int)
        )
        changes = client_changes({"rate_limit": rate, "max_backlog": backlog})
        await operations.change_client(services_of(request), session.client_id, client_id, changes)
        return _done(client_id, "limits")

    async def webhook_secret(
        request: Request, session: Session, fields: dict[str, str]
    ) -> Response:
        client_id = _path_id(request, "client_id")
        stored, text = await operations.add_webhook_secret(
            services_of(request), session.client_id, client_id, DEFAULT_GRACE
        )
        return console.render(
            request, "secret.html", session, client_id=client_id, secret=text, stored=stored
        )

    async def redrive(request: Request, session: Session, fields: dict[str, str]) -> Response:
        client_id = _path_id(request, "client_id")
        accepted = await operations.redrive(
            services_of(request), session.client_id, client_id, _path_id(request, "event_id")
        )
        return redirect(f"/console/clients/{client_id}/events/{accepted.event.id}")

    return [
        Route("/clients", page(clients), methods=["GET"]),
        Route("/clients/{client_id}", page(client), methods=["GET"]),
        Route("/clients/{client_id}/events/{event_id}", page(event), methods=["GET"]),
        Route("/audit", page(audit), methods=["GET"]),
        Route("/clients/{client_id}/resume", action(resume), methods=["POST"]),
        Route("/clients/{client_id}/suspend", action(suspend), methods=["POST"]),
        Route("/clients/{client_id}/policy", action(policy), methods=["POST"]),
        Route("/clients/{client_id}/limits", action(limits), methods=["POST"]),
        Route("/clients/{client_id}/webhook-secret", action(webhook_secret), methods=["POST"]),
        Route("/clients/{client_id}/events/{event_id}/redrive", action(redrive), methods=["POST"]),
    ]


def _path_id(request: Request, name: str) -> uuid.UUID:
    found = parse_id(request.path_params[name])
    if found is None:
        raise Problem(404, "not-found", f"no such {name.removesuffix('_id')}")
    return found


def _cursor(text: str | None) -> tuple[float, uuid.UUID] | None:
    if not text:
        return None
    key, _, raw_id = text.partition("~")
    found = parse_id(raw_id)
    try:
        value = float(key)
    except ValueError:
        found = None
    if found is None:
        raise Problem(400, "invalid-query", "'after' is not a cursor this page gave")
    return value, found


def _number(text: str, name: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text.strip())
    except ValueError:
        raise Problem(422, "invalid-form", f"{name} must be a number") from None


def _done(client_id: uuid.UUID, code: str) -> Response:
    """Back to the client's page, which says what was done: a code from DONE, never text
    from the URL (a crafted link must not put words in our page)."""
    return redirect(f"/console/clients/{client_id}?done={code}")


def _grafana(console: Console, client_id: uuid.UUID) -> str | None:
    url = console.settings.grafana_url
    return url.replace("{client_id}", str(client_id)) if url else None
