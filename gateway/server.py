"""Serves the gateway's application with uvicorn, over the guarded HTTP/1.1 protocol."""

from __future__ import annotations

import uvicorn

from actors.settings import Settings
from gateway.app import create_app
from gateway.wire import guarded_protocol

MAX_HEAD = 16384  # bytes of request line and headers; more is a 431


def serve_gateway(settings: Settings, host: str | None, port: int | None) -> int:
    """Serve until SIGINT or SIGTERM; 0 after a clean stop, 1 when the server never started."""
    config = uvicorn.Config(
        create_app(settings),
        host=host or settings.http_host,
        port=port or settings.http_port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=65,
        http=guarded_protocol(MAX_HEAD, settings.header_timeout, settings.body_timeout),
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
