"""Pure ASGI middleware (not BaseHTTPMiddleware, whose tasks lose context variables): a
SERVER span, request metrics and a `Trace-Id` response header for every HTTP request."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors import metrics, tracing

TRACE_ID_HEADER = b"trace-id"
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_INTAKE = frozenset(("/v1/events", "/v1/events/{event_id}/redrive"))


class Telemetry:
    """Traces and counts each HTTP request under its route template, never its raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        carrier = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        status = 500
        started = time.perf_counter()
        with tracing.tracer().start_as_current_span(
            method,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
            },
        ) as span:
            ids = tracing.current_ids()

            async def answer(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if ids is not None:
                        headers = [*message.get("headers", []), (TRACE_ID_HEADER, ids[0].encode())]
                        message = {**message, "headers": headers}
                await send(message)

            metrics.HTTP_IN_FLIGHT.inc()
            try:
                await self.app(scope, receive, answer)
            finally:
                metrics.HTTP_IN_FLIGHT.dec()
                route = _route(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                _count(method, route, status, time.perf_counter() - started)


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _count(method: str, route: str, status: int, seconds: float) -> None:
    metrics.HTTP_REQUESTS.labels(route, method, f"{status // 100}xx").inc()
    metrics.HTTP_SECONDS.labels(route, method).observe(seconds, metrics.exemplar())
    if method == "POST" and route in _INTAKE and status >= 400:
        metrics.EVENTS_REJECTED.labels(metrics.REJECTION_REASONS.get(status, "other")).inc()
