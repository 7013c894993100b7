"""Who may see a console page: sign-in and sign-out, the session guard of every other page
(operators' pages refuse tenant sessions), CSRF checks of every changing form."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from actors.settings import Settings
from actors.store.console import ConsoleReads
from gateway.auth import checked_client
from gateway.console import sessions
from gateway.console.sessions import Session, Sessions
from gateway.console.views import Pages, form, redirect
from gateway.problems import Problem
from gateway.services import services_of

log = logging.getLogger(__name__)
SIGNIN_PATH = "/console/signin"

Page = Callable[[Request, Session], Awaitable[Response]]
Action = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


class Console:
    """The console's pages and its sessions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pages = Pages()
        self.sessions = Sessions(settings)

    def reads(self, request: Request) -> ConsoleReads:
        return ConsoleReads(services_of(request).journal.pool)

    def render(
        self, request: Request, name: str, session: Session | None, **context: Any
    ) -> Response:
        return self.pages.render(name, session=session, path=request.url.path, **context)

    def refusal(
        self, request: Request, status: int, detail: str, session: Session | None
    ) -> Response:
        return self.pages.render(
            "refused.html", status=status, session=session, detail=detail, path=request.url.path
        )

    # --- sign-in ----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session = await self.sessions.current(request)
        if session is None:
            return redirect("/console/signin")
        return redirect("/console/clients" if session.admin else "/console/me")

    async def signin_page(self, request: Request) -> Response:
        return await self.signin_form(request, 200, None)

    async def signin_form(self, request: Request, status: int, error: str | None) -> Response:
        """The sign-in page with a new form token (and its cookie)."""
        token = await self.sessions.signin_token(request)
        response = self.pages.render(
            "signin.html", status=status, session=None, error=error, token=token, path=SIGNIN_PATH
        )
        self.sessions.hold_signin_token(request, response, token)
        return response

    async def signin(self, request: Request) -> Response:
        try:
            fields = await form(request)
        except Problem as refused:
            return self.refusal(request, refused.status, refused.detail, None)
        if not await self.sessions.signin_ok(request, fields.get("token")):
            return await self.signin_form(request, 403, "This sign-in form has expired; try again.")
        services = services_of(request)
        try:
            client_id: uuid.UUID | None = uuid.UUID(fields.get("client_id", "").strip())
        except ValueError:
            client_id = None
        secret = fields.get("client_secret", "")
        try:
            if not secret or len(secret) > 1024:
                raise Problem(401, "invalid-client", "client authentication failed")
            peer = request.client.host if request.client else "unknown"
            stored = await checked_client(services, peer, client_id, secret)
        except Problem as refused:
            detail = (
                "Too many sign-in attempts; wait a moment and try again."
                if refused.status in (429, 503)
                else "That client id and secret do not sign in."
            )
            return await self.signin_form(request, refused.status, detail)
        response = redirect("/console/clients" if stored.admin else "/console/me")
        if not await self.sessions.begin(request, response, stored.id, stored.admin):
            return await self.signin_form(request, 401, "That client id and secret do not sign in.")
        log.info("console sign-in of client %s (admin=%s)", stored.id, stored.admin)
        return response

    async def signout(self, request: Request) -> Response:
        try:
            fields = await form(request)
        except Problem as refused:
            return self.refusal(request, refused.status, refused.detail, None)
        session = await self.sessions.current(request)
        if session is not None and not sessions.csrf_ok(session, fields.get("csrf")):
            return self.refusal(request, 403, "This form has expired; reload the page.", session)
        response = redirect("/console/signin")
        await self.sessions.end(request, response, session)
        return response

    # --- guards -----------------------------------------------------------------------

    def page(self, *, operator: bool) -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
        """A GET page that needs a session (an operator's, when `operator`)."""

        def wrap(view: Page) -> Callable[[Request], Awaitable[Response]]:
            @functools.wraps(view)
            async def guarded(request: Request) -> Response:
                session = await self.sessions.current(request)
                if session is None:
                    if request.query_params.get("fragment"):
                        return self.refusal(request, 401, "Your session has ended.", None)
                    return redirect("/console/signin")
                if operator and not session.admin:
                    return self.refusal(request, 403, "This page is for operators.", session)
                try:
                    return await view(request, session)
                except Problem as problem:
                    return self.refusal(request, problem.status, problem.detail, session)

            return guarded

        return wrap

    def action(
        self, *, operator: bool
    ) -> Callable[[Action], Callable[[Request], Awaitable[Response]]]:
        """A POST form that changes something: a session, its CSRF token, and (when
        `operator`) an operator's session; a refused operation is shown, nothing changed."""

        def wrap(act: Action) -> Callable[[Request], Awaitable[Response]]:
            @functools.wraps(act)
            async def guarded(request: Request) -> Response:
                session = await self.sessions.current(request)
                if session is None:
                    return self.refusal(request, 401, "Sign in first.", None)
                if operator and not session.admin:
                    return self.refusal(request, 403, "This action is for operators.", session)
                try:
                    fields = await form(request)
                    if not sessions.csrf_ok(session, fields.get("csrf")):
                        return self.refusal(
                            request, 403, "This form has expired; reload the page.", session
                        )
                    return await act(request, session, fields)
                except Problem as problem:
                    return self.refusal(request, problem.status, problem.detail, session)

            return guarded

        return wrap
