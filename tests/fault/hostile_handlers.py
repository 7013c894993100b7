"""Handlers that misbehave as other people's code does, each writing the outside witness.

Loaded through SERIATIM_HANDLERS by tests/fault/test_exclusion.py. Every call is recorded
by `tests.witness.executing` (its start and end, from inside the worker process), so that
overlaps are judged from what really ran, not from the journal.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from actors import Event, handler
from tests.witness import executing


def _ms(event: Event, key: str) -> float:
    return float(event.payload.get(key, 0)) / 1000


class Planned(Exception):
    """A failure the test asked for."""


@handler("hostile.sleep")
def plain_sleep(event: Event) -> dict[str, Any]:
    """A plain function that blocks its thread for `ms` (its first `first_attempts` attempts:
    `first_ms`, and they fail when `fail_first`), as an HTTP call without a timeout does; it
    ignores the handler timeout."""
    with executing(event):
        first = event.attempt <= event.payload.get("first_attempts", 0)
        time.sleep(_ms(event, "first_ms") if first else _ms(event, "ms"))
        if first and event.payload.get("fail_first"):
            raise Planned(f"attempt {event.attempt} fails as planned")
        return {"attempt": event.attempt}


@handler("hostile.block_loop")
async def block_loop(event: Event) -> dict[str, Any]:
    """An async handler that blocks its worker's event loop on its first attempt."""
    with executing(event):
        if event.attempt == 1:
            time.sleep(_ms(event, "ms"))  # noqa: ASYNC251 - exactly what it is here to do
        return {"attempt": event.attempt}


@handler("hostile.stubborn")
async def stubborn(event: Event) -> dict[str, Any]:
    """An async handler that ignores cancellation and sleeps on."""
    with executing(event):
        deadline = time.monotonic() + _ms(event, "ms")
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(deadline - time.monotonic())
            except asyncio.CancelledError:
                continue  # swallowed: the handler goes on
        return {"attempt": event.attempt}
