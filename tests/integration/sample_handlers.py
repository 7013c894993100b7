"""Handlers loaded through SERIATIM_HANDLERS by the failure tests: each misbehaves one way.

Each body runs inside `tests.witness.executing`, so that the tests judge what really ran (how
often, in which order) from the witness ledger, not from the journal.
"""

from __future__ import annotations

import time
from typing import Any

from actors import Event, handler
from tests.witness import executing


@handler("test.unserialisable")
async def unserialisable(event: Event) -> Any:
    with executing(event):
        return {"when": object()}


@handler("test.nan")
async def not_a_number(event: Event) -> Any:
    with executing(event):
        return {"value": float("nan")}


@handler("test.blocking")
def blocking(event: Event) -> dict[str, int]:
    """A plain function: runs in a thread, so a slow one cannot stall the event loop."""
    with executing(event):
        time.sleep(event.payload.get("ms", 0) / 1000)
        return {"slept_ms": event.payload.get("ms", 0)}


@handler("test.crash")
async def crash(event: Event) -> None:
    with executing(event):
        raise ZeroDivisionError("handler bug")


@handler("test.nul_error")
async def nul_error(event: Event) -> None:
    """An error message holding NUL, as from a C library or binary data: jsonb refuses it."""
    with executing(event):
        raise RuntimeError("device said b'\x00\x01' and stopped")


@handler("test.surrogate_error")
async def surrogate_error(event: Event) -> None:
    """An error message holding a lone surrogate, as `surrogateescape` decoding leaves."""
    with executing(event):
        raise ValueError(b"caf\xe9 not found".decode("utf-8", "surrogateescape"))
