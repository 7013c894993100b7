"""Log configuration shared by every seriatim process: one line per record on stdout."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO", role: str = "seriatim") -> None:
    """Send log records to stdout, prefixed with the process role and pid."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s {role}[%(process)d] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncio", "dramatiq"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every failed connection attempt at ERROR, seven lines each; BrokerLink says
    # what matters (unreachable, reconnected) once.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
