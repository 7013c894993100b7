"""Dramatiq middleware around mailbox attempts: loaded from SERIATIM_MIDDLEWARE and called
with the hook semantics of Dramatiq's own worker (`dramatiq/worker.py: process_message`).

Per attempt: `before_process_message`, the handler call, then `after_process_message` with
`result=` or with `exception=` (what the handler raised, or an `AttemptFailed` naming a
failure that raised nothing, such as a timeout). Hooks are called through the broker, so a
hook that raises is logged and ignored, as in Dramatiq, except in `before_process_message`:

- `SkipMessage` there skips the attempt: no handler call, `after_skip_message`, and the event
  is dead at once (Dramatiq acks a skipped message and never retries it); the client's
  dead-event policy then decides whether the mailbox goes on.
- any other `MiddlewareError` there fails the attempt like a handler error (no handler call,
  `after_process_message` with it): retried in place like any failure.
- a middleware that marks the message failed (`message.fail()`) without raising also gets
  no handler call; the event is dead at once, as Dramatiq dead-letters a failed message.

Hooks run on the worker's event loop, in the mailbox's context: context variables they set
reach coroutine handlers and plain ones (run in a copy of that context, actors/threads.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import dramatiq
from dramatiq.middleware import (
    Callbacks,
    GroupCallbacks,
    MiddlewareError,
    Pipelines,
    Retries,
    ShutdownNotifications,
    SkipMessage,
    TimeLimit,
)

from actors.execution import Outcome, failure
from actors.settings import SettingsError

#: Stock middleware that cannot work around a mailbox attempt, and why.
UNSUPPORTED: dict[type[dramatiq.Middleware], str] = {
    TimeLimit: "it raises into the thread that ran the hook, here the event loop; "
    "SERIATIM_HANDLER_TIMEOUT limits handlers",
    ShutdownNotifications: "it raises into the thread that ran the hook, here the event loop",
    Retries: "it re-enqueues Dramatiq messages; mailboxes retry in place (SERIATIM_MAX_ATTEMPTS)",
    Callbacks: "it enqueues Dramatiq messages, which no seriatim worker consumes",
    Pipelines: "it enqueues Dramatiq messages, which no seriatim worker consumes",
    GroupCallbacks: "it enqueues Dramatiq messages, which no seriatim worker consumes",
}


def load_middleware(paths: Iterable[str]) -> list[dramatiq.Middleware]:
    """The middleware each dotted path names: a Dramatiq middleware class (made with no
    arguments) or instance. Raises ImportError or SettingsError naming a bad path."""
    return [_load(path) for path in paths]


def _load(path: str) -> dramatiq.Middleware:
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise SettingsError(f"SERIATIM_MIDDLEWARE names {path!r}, which is not module.Name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"SERIATIM_MIDDLEWARE names {path!r}, whose module cannot be imported: {error}"
        ) from error
    found = getattr(module, name, None)
    if isinstance(found, type) and issubclass(found, dramatiq.Middleware):
        try:
            found = found()
        except TypeError as error:
            raise SettingsError(
                f"SERIATIM_MIDDLEWARE names {path!r}, which cannot be made without arguments "
                f"({error}): name an instance instead"
            ) from error
    if not isinstance(found, dramatiq.Middleware):
        raise SettingsError(
            f"SERIATIM_MIDDLEWARE names {path!r}, which is not a Dramatiq middleware class "
            "or instance"
        )
    for kind, reason in UNSUPPORTED.items():
        if isinstance(found, kind):
            raise SettingsError(f"SERIATIM_MIDDLEWARE names {path!r}, unsupported: {reason}")
    return found


class AttemptHooks:
    """Calls the broker's middleware around each attempt, as Dramatiq's worker does."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker

    async def around(
        self, envelope: dramatiq.Message[Any], call: Callable[[], Awaitable[Outcome]]
    ) -> Outcome:
        """The attempt's outcome: `call()`'s, or the one the middleware decided on."""
        message = dramatiq.MessageProxy(envelope)
        try:
            self._broker.emit_before("process_message", message)
        except SkipMessage as skip:
            self._broker.emit_after("skip_message", message)
            return failure("SkipMessage", str(skip) or "skipped by middleware", skip, final=True)
        except MiddlewareError as error:
            self._broker.emit_after("process_message", message, exception=error)
            return failure(type(error).__name__, str(error), error)
        if message.failed:
            self._broker.emit_after("process_message", message, result=None)
            return failure("MessageFailed", "failed by middleware before the call", final=True)
        try:
            outcome = await call()
        except BaseException as error:  # stopped, fenced or cancelled mid-call: still paired
            self._broker.emit_after("process_message", message, exception=error)
            raise
        if outcome.ok:
            self._broker.emit_after("process_message", message, result=outcome.value)
        else:
            self._broker.emit_after("process_message", message, exception=outcome.error)
        return outcome

    def skipped(self, envelope: dramatiq.Message[Any]) -> None:
        """A delivered message that the seq rule found done already: no attempt, no call."""
        self._broker.emit_after("skip_message", dramatiq.MessageProxy(envelope))
