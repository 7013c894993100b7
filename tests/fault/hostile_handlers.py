"""Handlers that misbehave as other people's code does, each writing an outside witness.

Loaded through SERIATIM_HANDLERS by tests/fault/test_exclusion.py. Every call appends a
`start` and an `end` line to the ledger file named by SERIATIM_TEST_LEDGER (one `os.write`
on an O_APPEND descriptor each, with CLOCK_MONOTONIC times, comparable across processes),
so that overlaps are judged from what really ran, not from the journal.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

from actors import Event, handler

LEDGER_ENV = "SERIATIM_TEST_LEDGER"


def _write(kind: str, event: Event, execution: str) -> None:
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    line = {
        "kind": kind,
        "x": execution,
        "client": str(event.client_id),
        "seq": event.seq,
        "attempt": event.attempt,
        "fence": getattr(event, "fence", 0),  # 0 before placements had epochs
        "pid": os.getpid(),
        "t": time.monotonic(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def _ms(event: Event, key: str) -> float:
    return float(event.payload.get(key, 0)) / 1000


class Planned(Exception):
    """A failure the test asked for."""


@handler("hostile.sleep")
def plain_sleep(event: Event) -> dict[str, Any]:
    """A plain function that blocks its thread for `ms` (its first `first_attempts` attempts:
    `first_ms`, and they fail when `fail_first`), as an HTTP call without a timeout does; it
    ignores the handler timeout."""
    execution = uuid.uuid4().hex
    _write("start", event, execution)
    try:
        first = event.attempt <= event.payload.get("first_attempts", 0)
        time.sleep(_ms(event, "first_ms") if first else _ms(event, "ms"))
        if first and event.payload.get("fail_first"):
            raise Planned(f"attempt {event.attempt} fails as planned")
        return {"attempt": event.attempt}
    finally:
        _write("end", event, execution)


@handler("hostile.block_loop")
async def block_loop(event: Event) -> dict[str, Any]:
    """An async handler that blocks its worker's event loop on its first attempt."""
    execution = uuid.uuid4().hex
    _write("start", event, execution)
    try:
        if event.attempt == 1:
            time.sleep(_ms(event, "ms"))  # noqa: ASYNC251 - exactly what it is here to do
        return {"attempt": event.attempt}
    finally:
        _write("end", event, execution)


@handler("hostile.stubborn")
async def stubborn(event: Event) -> dict[str, Any]:
    """An async handler that ignores cancellation and sleeps on."""
    execution = uuid.uuid4().hex
    _write("start", event, execution)
    try:
        deadline = time.monotonic() + _ms(event, "ms")
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(deadline - time.monotonic())
            except asyncio.CancelledError:
                continue  # swallowed: the handler goes on
        return {"attempt": event.attempt}
    finally:
        _write("end", event, execution)
