"""Liveness, readiness and metrics: the routes that need no token."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.services import services_of


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services = services_of(request)
    missing = []
    try:
        async with asyncio.timeout(2):
            await services.journal.ping()
    except Exception:  # any failure to answer means not ready
        missing.append("postgresql")
    if not services.link.connected.is_set():
        missing.append("rabbitmq")
    if missing:
        return JSONResponse(
            {
                "type": "urn:seriatim:problem:not-ready",
                "title": "Service Unavailable",
                "status": 503,
                "detail": f"unreachable: {', '.join(missing)}",
                "missing": missing,
            },
            status_code=503,
            media_type="application/problem+json",
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
