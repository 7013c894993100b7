"""Handlers and a middleware of the project's own, for tests of SERIATIM_MIDDLEWARE.

Loaded through SERIATIM_HANDLERS and SERIATIM_MIDDLEWARE by a system's workers. The handlers
return what `CurrentMessage` tells them; `Recording` appends each hook it receives to the
file SERIATIM_TEST_HOOKS names (one JSON line per hook), skips `hooks.skip` events and fails
in its own hook for `hooks.broken_hook` events. Nothing here imports the demo handlers.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, SkipMessage

from actors import Event, handler

HOOKS_ENV = "SERIATIM_TEST_HOOKS"


def _current(event: Event) -> dict[str, Any]:
    message = CurrentMessage.get_current_message()
    if message is None:
        raise LookupError("CurrentMessage has no message")
    return {"message_id": message.message_id, "seq": message.kwargs["seq"], "id": str(event.id)}


@handler("hooks.current")
async def current(event: Event) -> dict[str, Any]:
    """The current message as a coroutine handler sees it."""
    return _current(event)


@handler("hooks.current_plain")
def current_plain(event: Event) -> dict[str, Any]:
    """The current message as a plain handler (on a handler thread) sees it."""
    return _current(event)


@handler("hooks.fail")
async def fail(event: Event) -> None:
    raise ValueError(f"planned failure of attempt {event.attempt}")


@handler("hooks.skip")
async def skip(event: Event) -> None:
    raise AssertionError("a skipped message must not reach its handler")


@handler("hooks.broken_hook")
async def broken_hook(event: Event) -> str:
    return "ran"


class Recording(dramatiq.Middleware):
    """Writes down every message hook it receives."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _write("before_process_message", message)
        if message.kwargs["type"] == "hooks.skip":
            raise SkipMessage("hooks.skip is skipped")
        if message.kwargs["type"] == "hooks.broken_hook":
            raise RuntimeError("a middleware bug")

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        _write(
            "after_process_message",
            message,
            result=result,
            exception=None if exception is None else [type(exception).__name__, str(exception)],
        )

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _write("after_skip_message", message)


def _write(hook: str, message: Any, **details: Any) -> None:
    line = {"hook": hook, "message_id": message.message_id, "seq": message.kwargs["seq"]}
    with open(os.environ[HOOKS_ENV], "a", encoding="utf-8") as ledger:
        ledger.write(json.dumps({**line, **details}, default=str) + "\n")
