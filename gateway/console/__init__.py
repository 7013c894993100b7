"""The operator console under /console: server-rendered pages over the same operations as the
admin API (gateway/operations.py). `routes(settings)` is all the gateway mounts; it is empty
when SERIATIM_CONSOLE=off."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from actors.settings import Settings
from gateway.console.guard import Console
from gateway.console.operator import operator_routes
from gateway.console.redrives import redrive_routes
from gateway.console.tenant import tenant_routes


def routes(settings: Settings) -> list[BaseRoute]:
    if settings.console == "off":
        return []
    console = Console(settings)
    return [
        Mount(
            "/console",
            routes=[
                Route("/", console.home, methods=["GET"]),
                Route("/signin", console.signin_page, methods=["GET"]),
                Route("/signin", console.signin, methods=["POST"]),
                Route("/signout", console.signout, methods=["POST"]),
                Mount("/static", StaticFiles(packages=[("gateway.console", "static")])),
                *operator_routes(console),
                *redrive_routes(console),
                *tenant_routes(console),
            ],
        )
    ]
