"""Handlers loaded through SERIATIM_HANDLERS that report each execution to the witness ledger.

`witnessed.echo`, `witnessed.sleep` and `witnessed.fail` are the demo handlers inside
`tests.witness.executing`; `witnessed.blocking` is a plain function (run in a thread).
"""

from __future__ import annotations

import time
from typing import Any

from actors import Event, demo, handler
from tests.witness import executing


@handler("witnessed.echo")
async def echo(event: Event) -> Any:
    with executing(event):
        return await demo.echo(event)


@handler("witnessed.sleep")
async def sleep(event: Event) -> dict[str, Any]:
    with executing(event):
        return await demo.sleep(event)


@handler("witnessed.fail")
async def fail(event: Event) -> dict[str, Any]:
    with executing(event):
        return await demo.fail(event)


@handler("witnessed.blocking")
def blocking(event: Event) -> dict[str, Any]:
    """Sleep `payload.ms` milliseconds in the handler's thread."""
    with executing(event):
        time.sleep(event.payload.get("ms", 0) / 1000)
        return {"slept_ms": event.payload.get("ms", 0)}
