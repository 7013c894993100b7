"""One handler call of one mailbox, run so that it never overlaps the mailbox's next one.

Coroutine handlers run on the loop, inside the mailbox's own task: past the timeout they are
cancelled, and one that ignores the cancellation is simply waited for. Plain functions run on
the worker's handler threads (actors/threads.py): one that outlives its timeout cannot be
stopped, so its outcome (a `HandlerTimeout` failure) is reported only once it has really
ended, and until then the mailbox starts nothing else. While any call runs, the watchdog
(actors/watchdog.py) keeps the process from outliving its lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from typing import Any

from actors.handlers import Event, Handler, HandlerRegistry
from actors.store import dump_json
from actors.threads import HandlerThreads
from actors.watchdog import Watchdog

log = logging.getLogger(__name__)


class AttemptFailed(Exception):
    """An attempt that failed without an exception of its own (a timeout, an unknown type, a
    result that cannot be stored): what the middleware's `after_process_message` receives."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    value: Any  # the result when ok, else {"type", "message"}
    #: What the handler raised (or an AttemptFailed) when not ok, for the middleware.
    error: BaseException | None = dataclasses.field(default=None, compare=False, repr=False)
    #: A failure that ends the event now, whatever attempts are left (a skipped message).
    final: bool = False


def failure(
    kind: str, message: str, error: BaseException | None = None, *, final: bool = False
) -> Outcome:
    value = {"type": kind, "message": message[:2000]}
    return Outcome(False, value, error or AttemptFailed(kind, message), final)


class Execution:
    """Runs a mailbox's handler calls one at a time; `running` while one has not ended."""

    def __init__(
        self,
        handlers: HandlerRegistry,
        timeout: float,
        threads: HandlerThreads,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._handlers = handlers
        self._timeout = timeout
        self._threads = threads
        self._watchdog = watchdog or Watchdog(float("inf"))
        self._running = False  # a coroutine call in progress
        self._thread_call: asyncio.Future[Any] | None = None

    @property
    def running(self) -> bool:
        """A call of this mailbox's has started and not ended (a thread may outlive its
        awaiter, say when a drain cancels it)."""
        return self._running or (self._thread_call is not None and not self._thread_call.done())

    async def run(self, event: Event) -> Outcome:
        """Call the event's handler; a failure, a timeout and a bad result are outcomes."""
        fn = self._handlers.get(event.type)
        if fn is None:
            return failure("UnknownEventType", f"no handler is registered for {event.type!r}")
        if _is_async(fn):
            return await self._coroutine(fn, event)
        return await self._plain(fn, event)

    async def _coroutine(self, fn: Handler, event: Event) -> Outcome:
        self._running = True
        try:
            with self._watchdog.executing():
                async with asyncio.timeout(self._timeout) as deadline:
                    result = fn(event)
                    if inspect.isawaitable(result):  # not so behind some decorators
                        result = await result
        except TimeoutError:
            return self._timed_out()
        except (Exception, KeyboardInterrupt, SystemExit) as error:  # data, never a crash
            return failure(type(error).__name__, str(error), error)
        finally:
            self._running = False
        if deadline.expired():  # it swallowed the cancellation and finished late
            return self._timed_out()
        return _stored(result)

    async def _plain(self, fn: Handler, event: Event) -> Outcome:
        ended = await self._threads.start(fn, event)  # waiting for a slot is not running
        self._thread_call = ended
        self._watchdog.executions += 1
        ended.add_done_callback(self._ended)
        started = time.monotonic()
        done, _ = await asyncio.wait({ended}, timeout=self._timeout)
        if not done:
            self._threads.mark_overdue(ended)
            log.warning(
                "handler of %s seq %d has run past its %g s timeout; the mailbox waits for it "
                "to end before anything else",
                event.type,
                event.seq,
                self._timeout,
            )
            await asyncio.wait({ended})  # cancellable; the call itself is never cancelled
            log.warning(
                "overdue handler of %s seq %d ended after %.1f s",
                event.type,
                event.seq,
                time.monotonic() - started,
            )
            return self._timed_out()
        try:
            result = ended.result()
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                result = await self._awaited(result, self._timeout - (time.monotonic() - started))
        except TimeoutError:
            return self._timed_out()
        except Exception as error:
            return failure(type(error).__name__, str(error), error)
        return _stored(result)

    async def _awaited(self, awaitable: Any, seconds: float) -> Any:
        """Await what a plain handler returned, as a coroutine handler is run: counted by the
        watchdog, and waited for past its timeout if it ignores the cancellation."""
        self._running = True
        try:
            with self._watchdog.executing():
                async with asyncio.timeout(max(0.0, seconds)) as deadline:
                    result = await awaitable
        finally:
            self._running = False
        if deadline.expired():
            raise TimeoutError
        return result

    def _ended(self, ended: asyncio.Future[Any]) -> None:
        self._watchdog.executions -= 1
        if not ended.cancelled():
            ended.exception()  # retrieved: a call whose awaiter is gone is not logged by asyncio

    def _timed_out(self) -> Outcome:
        return failure("HandlerTimeout", f"handler ran longer than {self._timeout:g} s")


def _is_async(fn: Handler) -> bool:
    """A coroutine function, also behind a `functools.wraps` decorator or as an object
    with an `async def __call__` (which `inspect.iscoroutinefunction` misses on 3.11)."""
    return inspect.iscoroutinefunction(inspect.unwrap(fn)) or inspect.iscoroutinefunction(
        type(fn).__call__  # a handler is callable: its type has __call__
    )


def _stored(result: Any) -> Outcome:
    try:
        dump_json(result)
    except (TypeError, ValueError) as error:
        return failure("UnserialisableResult", f"result cannot be stored as JSON: {error}")
    return Outcome(True, result)
