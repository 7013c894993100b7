"""Where plain-function handlers run: a bounded pool of daemon threads whose slots are held
until each call really ends.

`asyncio.to_thread` shares the loop's default executor (min(32, cores + 4) threads) and
cannot stop a call: the awaiter moves on at its timeout while the call keeps running. Here
a slot is taken before a call starts and given back only when the function returns, so a
hung handler keeps its slot and the mailbox that called it waits for it (I3), and hung
handlers never take more than this pool: other clients' calls wait for a slot, counted,
instead of failing (docs/decisions.md, "Handlers that cannot be stopped").

The threads are daemons: a worker that must end with a call still hung is not held up by
it at exit, and the call ends with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from actors import metrics

log = logging.getLogger(__name__)


class HandlerThreads:
    """At most `size` plain-function calls at once; callers beyond that wait for a slot."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.running = 0  # calls started and not yet ended
        self.overdue = 0  # of those, the ones past their caller's deadline
        self.waiting = 0  # callers waiting for a slot
        self._slots: asyncio.Semaphore | None = None
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        metrics.track_handler_threads(self)

    @property
    def exhausted(self) -> bool:
        """Every slot is held by a call past its deadline: new calls can only wait."""
        return self.overdue >= self.size

    async def start(self, fn: Callable[[Any], Any], arg: Any) -> asyncio.Future[Any]:
        """Wait for a free slot, then run `fn(arg)` in a thread, in a copy of the caller's
        context (as `asyncio.to_thread` does: the trace, Dramatiq's current message); the future
        resolves (with its value or its exception) when the call has ended, never before."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        waited = time.monotonic()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        metrics.HANDLER_SLOT_WAIT.observe(time.monotonic() - waited)
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[Any] = loop.create_future()
        try:
            self._ensure_thread()
        except BaseException:  # no thread to run it (a pids limit, say): nothing started
            self._slots.release()
            raise
        self.running += 1
        context = contextvars.copy_context()
        self._work.put(lambda: self._call(loop, ended, context.run, fn, arg))
        return ended

    def _ensure_thread(self) -> None:
        """A thread for one more call: every running call holds one."""
        if len(self._threads) > self.running:
            return
        thread = threading.Thread(target=self._serve, name="seriatim-handler", daemon=True)
        thread.start()
        self._threads.append(thread)

    def mark_overdue(self, ended: asyncio.Future[Any]) -> None:
        """Count a call as past its deadline until it ends."""
        self.overdue += 1
        ended.add_done_callback(lambda _: self._not_overdue())
        if self.exhausted:
            log.error(
                "all %d handler threads hold calls past their timeout: plain-function "
                "handlers of every client wait until one ends (SERIATIM_HANDLER_THREADS)",
                self.size,
            )

    def _not_overdue(self) -> None:
        self.overdue -= 1

    def _serve(self) -> None:
        while True:
            self._work.get()()

    def _call(
        self,
        loop: asyncio.AbstractEventLoop,
        ended: asyncio.Future[Any],
        run: Callable[..., Any],
        fn: Callable[[Any], Any],
        arg: Any,
    ) -> None:
        try:
            value: Any = run(fn, arg)
            failure: BaseException | None = None
        except Exception as error:  # the handler's own failure, handed to its caller
            value, failure = None, error
        except BaseException as error:  # SystemExit and the like must not end the worker
            value, failure = None, RuntimeError(f"{type(error).__name__}: {error}")
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            loop.call_soon_threadsafe(self._ended, ended, value, failure)

    def _ended(self, ended: asyncio.Future[Any], value: Any, failure: BaseException | None) -> None:
        self.running -= 1
        assert self._slots is not None
        self._slots.release()
        if ended.done():
            return
        if failure is not None:
            ended.set_exception(failure)
        else:
            ended.set_result(value)
