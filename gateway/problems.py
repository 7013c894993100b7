"""Problem details (RFC 9457): the one renderer of every error the gateway answers, from a
route, from middleware, or from the HTTP/1.1 wire guard before a request reaches the app."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

MEDIA_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """Raise to answer with a problem+json body; `slug` names the problem type."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    @property
    def title(self) -> str:
        return _TITLES.get(self.status, "Error")

    def document(self, instance: str | None = None) -> dict[str, Any]:
        """The problem as a JSON object; `instance` is the path it happened on, if any."""
        body: dict[str, Any] = {
            "type": f"urn:seriatim:problem:{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        if instance:
            body["instance"] = instance
        return body

    def encoded(self, instance: str | None = None) -> bytes:
        """The body as bytes (compact UTF-8 JSON, as Starlette's JSONResponse writes it)."""
        text = json.dumps(
            self.document(instance), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        return text.encode("utf-8")

    def response(self, instance: str | None = None) -> Response:
        """The answer of an application route or middleware (it is an ASGI app too)."""
        return Response(
            self.encoded(instance),
            status_code=self.status,
            headers=self.headers,
            media_type=MEDIA_TYPE,
        )


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(request.url.path)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    detail = {
        404: f"no route for {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return Problem(exc.status_code, slug, detail, headers=dict(exc.headers or {})).response(
        request.url.path
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    return Problem(
        500, "internal-error", "an unexpected error occurred; it has been logged"
    ).response(request.url.path)
