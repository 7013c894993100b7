"""The handler plug-in API: `@handler("type")` functions, their registry and their loading."""

from __future__ import annotations

import dataclasses
import importlib
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

#: What an event type may look like: 1-200 letters, digits and ._:-
TYPE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """What a handler receives. `id` is the idempotency key for outside effects."""

    id: uuid.UUID
    client_id: uuid.UUID
    seq: int
    type: str
    payload: Any
    attempt: int
    #: The mailbox placement's fencing token, higher with every placement: pass it to your own
    #: downstream writes and let them refuse a lower one than they have seen (a worker that
    #: was frozen and lost the mailbox still holds the old one).
    fence: int = 0


Handler = Callable[[Event], Awaitable[Any]] | Callable[[Event], Any]


class HandlerRegistry:
    """Event type → handler. A type is registered once; a second registration is an error."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, type_: str, fn: Handler) -> None:
        if not TYPE_PATTERN.fullmatch(type_):
            raise ValueError(
                f"handler type {type_!r} must be 1-200 characters of letters, digits and ._:-"
            )
        existing = self._handlers.get(type_)
        if existing is not None and existing is not fn:
            raise ValueError(f"a handler for {type_!r} is already registered: {existing!r}")
        self._handlers[type_] = fn

    def get(self, type_: str) -> Handler | None:
        return self._handlers.get(type_)

    def __contains__(self, type_: object) -> bool:
        return type_ in self._handlers

    def types(self) -> list[str]:
        return sorted(self._handlers)


#: Where `@handler` puts what it decorates; load_handlers() returns it.
registry = HandlerRegistry()


def handler(type_: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of events of `type_`."""

    def register(fn: Handler) -> Handler:
        registry.register(type_, fn)
        return fn

    return register


def load_handlers(modules: Iterable[str], *, demo: bool = True) -> HandlerRegistry:
    """Import the demo handlers (unless `demo` is false: SERIATIM_DEMO_HANDLERS=off) and each
    module named; raise ImportError naming a bad one."""
    if demo:
        importlib.import_module("actors.demo")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(
                f"SERIATIM_HANDLERS names {name!r}, which cannot be imported: {error}"
            ) from error
    return registry
