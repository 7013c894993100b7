"""Admission of requests: two budgets of requests in progress, one for tenants and one for work
done before authentication, so that unauthenticated clients cannot take the tenants' slots."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.auth import CALLER, caller_of
from gateway.problems import Problem
from gateway.tokens import Principal

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNLIMITED = ("/healthz", "/readyz", "/metrics")
#: Routes that authenticate by what they read (a form, a signed body), never by a bearer token.
_PREAUTH_ROUTES = ("/v1/token",)
_PREAUTH_PREFIXES = ("/v1/hooks/",)


class Budget:
    """At most `limit` requests of one kind in progress at once."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.active = 0


class Admission:
    """Pure ASGI middleware: a request whose bearer token verifies counts against the tenants'
    budget (`SERIATIM_MAX_CONCURRENT_REQUESTS`); every other one (the token endpoint, webhooks,
    requests with no or a bad token) against the pre-authentication budget
    (`SERIATIM_MAX_PREAUTH_REQUESTS`). A request over its budget gets a 503 at once.

    The token is checked here without I/O (a verified token is a dict lookup); what the check
    found is left in the scope under `CALLER` for the route, which does not check it again.
    """

    def __init__(self, app: ASGIApp, tenants: int, preauth: int) -> None:
        self.app = app
        self.tenants = Budget("tenants", tenants)
        self.preauth = Budget("preauth", preauth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNLIMITED:
            await self.app(scope, receive, send)
            return
        budget = self._budget_of(scope)
        if budget.active >= budget.limit:
            await _overloaded(budget).response(scope["path"])(scope, receive, send)
            return
        budget.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            budget.active -= 1

    def _budget_of(self, scope: Scope) -> Budget:
        path: str = scope["path"]
        if path in _PREAUTH_ROUTES or path.startswith(_PREAUTH_PREFIXES):
            return self.preauth
        services = scope.get("state", {}).get("services")
        if services is None:
            return self.preauth
        caller = caller_of(services.tokens, _header(scope, b"authorization"))
        if caller is not None:
            scope[CALLER] = caller
        return self.tenants if isinstance(caller, Principal) else self.preauth


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _overloaded(budget: Budget) -> Problem:
    which = "unauthenticated " if budget.name == "preauth" else ""
    return Problem(
        503,
        "overloaded",
        f"the gateway is serving as many {which}requests as it may; retry shortly",
        headers={"Retry-After": "1"},
    )
