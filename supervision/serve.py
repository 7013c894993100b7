"""Serves the gateway with uvicorn.

The gateway sits above supervision in the import layers, so it is named here by its import
string (`gateway.app:from_env`) and loaded by uvicorn, never imported.
"""

from __future__ import annotations

import uvicorn

from actors.settings import Settings
from supervision.wire import guarded_protocol

APP = "gateway.app:from_env"
MAX_HEAD = 16384  # bytes of request line and headers; more is a 431


def serve_gateway(settings: Settings, host: str | None, port: int | None) -> int:
    config = uvicorn.Config(
        APP,
        factory=True,
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
