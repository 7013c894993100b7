"""Handlers loaded through SERIATIM_HANDLERS by the failure tests: each misbehaves one way."""

from __future__ import annotations

import time
from typing import Any

from actors import Event, handler


@handler("test.unserialisable")
async def unserialisable(event: Event) -> Any:
    return {"when": object()}


@handler("test.nan")
async def not_a_number(event: Event) -> Any:
    return {"value": float("nan")}


@handler("test.blocking")
def blocking(event: Event) -> dict[str, int]:
    """A plain function: runs in a thread, so a slow one cannot stall the event loop."""
    time.sleep(event.payload.get("ms", 0) / 1000)
    return {"slept_ms": event.payload.get("ms", 0)}


@handler("test.crash")
async def crash(event: Event) -> None:
    raise ZeroDivisionError("handler bug")


@handler("test.nul_error")
async def nul_error(event: Event) -> None:
    """An error message holding NUL, as from a C library or binary data: jsonb refuses it."""
    raise RuntimeError("device said b'\x00\x01' and stopped")


@handler("test.surrogate_error")
async def surrogate_error(event: Event) -> None:
    """An error message holding a lone surrogate, as `surrogateescape` decoding leaves."""
    raise ValueError(b"caf\xe9 not found".decode("utf-8", "surrogateescape"))
