"""The built-in demo handlers: demo.echo, demo.sleep and demo.fail."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.handlers import Event, handler


@handler("demo.echo")
async def echo(event: Event) -> Any:
    """The result is the payload."""
    return event.payload


@handler("demo.sleep")
async def sleep(event: Event) -> dict[str, Any]:
    """Sleep `payload.ms` milliseconds (at most an hour)."""
    ms = event.payload.get("ms", 0) if isinstance(event.payload, dict) else None
    if not isinstance(ms, int | float) or isinstance(ms, bool) or not 0 <= ms <= 3_600_000:
        raise ValueError('demo.sleep wants {"ms": n} with 0 <= n <= 3600000')
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@handler("demo.fail")
async def fail(event: Event) -> dict[str, Any]:
    """Fail the first `payload.times` attempts, then succeed."""
    times = event.payload.get("times", 1) if isinstance(event.payload, dict) else None
    if not isinstance(times, int) or isinstance(times, bool) or times < 0:
        raise ValueError('demo.fail wants {"times": n} with n >= 0')
    if event.attempt <= times:
        raise RuntimeError(f"demo.fail: attempt {event.attempt} of {times} planned failures")
    return {"failed_attempts": times}
