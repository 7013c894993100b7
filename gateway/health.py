"""Liveness, readiness and metrics: the routes that need no token."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors import metrics as telemetry
from gateway.problems import Problem
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
        return Problem(
            503,
            "not-ready",
            f"unreachable: {', '.join(missing)}",
            headers={"Retry-After": "5"},
            missing=missing,
        ).response()
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    body, kind = telemetry.exposition(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": kind})
