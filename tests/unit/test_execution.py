"""How a mailbox calls its handlers: on the loop or on the handler threads, never two calls
of one mailbox at once, whatever the handler does (actors/execution.py, actors/threads.py).

The witness here is the handlers' own record of when they ran, not what execution reports.
Planted: `Execution._plain` returning at its timeout instead of waiting for the thread (as
`asyncio.to_thread` under `asyncio.timeout` did) → `test_a_plain_handler_past_its_timeout_is
_waited_for` fails: the second call starts while the first still sleeps.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import threading
import time
import uuid
from typing import Any

import pytest

from actors.execution import Execution
from actors.handlers import Event, HandlerRegistry
from actors.threads import HandlerThreads
from actors.watchdog import Watchdog


def event(payload: Any = None, *, type_: str = "t", seq: int = 1) -> Event:
    return Event(uuid.uuid4(), uuid.uuid4(), seq, type_, payload, 1, 7)


def execution(fn: Any, *, timeout: float = 5.0, threads: int = 4, **kwargs: Any) -> Execution:
    handlers = HandlerRegistry()
    handlers.register("t", fn)
    return Execution(handlers, timeout, HandlerThreads(threads), **kwargs)


async def eventually(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - a plain attribute, nothing to wait on
            await asyncio.sleep(0.01)


class Ledger:
    """When each call really started and ended, written by the handlers themselves."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def record(self, started: float) -> None:
        with self._lock:
            self.spans.append((started, time.monotonic()))

    def overlaps(self) -> int:
        spans = sorted(self.spans)
        return sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])


async def test_async_handler_runs_on_the_event_loop() -> None:
    loop = asyncio.get_running_loop()
    seen: list[object] = []

    async def handler(event: Event) -> str:
        seen.extend([asyncio.get_running_loop(), threading.current_thread()])
        return "done"

    outcome = await execution(handler).run(event())

    assert (outcome.ok, outcome.value) == (True, "done")
    assert seen == [loop, threading.current_thread()]


async def test_plain_function_runs_in_another_thread() -> None:
    seen: list[threading.Thread] = []

    def handler(event: Event) -> Any:
        seen.append(threading.current_thread())
        return event.payload

    outcome = await execution(handler).run(event({"k": 1}))

    assert outcome.value == {"k": 1}
    assert seen
    assert seen[0] is not threading.current_thread()


TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="none")


async def test_a_plain_function_runs_in_its_caller_s_context() -> None:
    """As asyncio.to_thread did: the trace and Dramatiq's current message reach the handler."""
    TRACE.set("the caller's")

    outcome = await execution(lambda e: TRACE.get()).run(event())

    assert outcome.value == "the caller's"


async def test_plain_function_returning_an_awaitable_is_awaited() -> None:
    async def echo(event: Event) -> Any:
        return event.payload

    outcome = await execution(lambda e: echo(e)).run(event("payload"))

    assert outcome.value == "payload"


async def test_the_handler_sees_the_placement_fence() -> None:
    outcome = await execution(lambda e: e.fence).run(event())

    assert outcome.value == 7


@pytest.mark.parametrize("error", [KeyError("boom"), SystemExit(3), KeyboardInterrupt()])
async def test_anything_a_plain_handler_raises_is_a_failed_outcome(error: BaseException) -> None:
    def handler(event: Event) -> Any:
        raise error

    outcome = await execution(handler).run(event())

    assert not outcome.ok
    assert type(error).__name__ in outcome.value["type"] + outcome.value["message"]


@pytest.mark.parametrize("error", [KeyError("boom"), SystemExit(3), KeyboardInterrupt()])
async def test_anything_an_async_handler_raises_is_a_failed_outcome(error: BaseException) -> None:
    async def handler(event: Event) -> Any:
        raise error

    outcome = await execution(handler).run(event())

    assert (outcome.ok, outcome.value["type"]) == (False, type(error).__name__)


async def test_a_plain_handler_past_its_timeout_is_waited_for() -> None:
    ledger = Ledger()

    def handler(event: Event) -> None:
        started = time.monotonic()
        time.sleep(0.3)  # blocks, ignores every timeout
        ledger.record(started)

    runs = execution(handler, timeout=0.05)
    first = await runs.run(event())
    assert not runs.running  # the call has really ended when its outcome is known
    await runs.run(event(seq=2))

    assert first.value["type"] == "HandlerTimeout"
    assert len(ledger.spans) == 2
    assert ledger.overlaps() == 0


async def test_an_async_handler_that_swallows_cancellation_is_waited_for() -> None:
    ledger = Ledger()

    async def handler(event: Event) -> str:
        started = time.monotonic()
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # ignores the cancellation and goes on
        ledger.record(started)
        return "late"

    runs = execution(handler, timeout=0.05)
    first = await runs.run(event())
    await runs.run(event(seq=2))

    assert first.value["type"] == "HandlerTimeout"
    assert ledger.overlaps() == 0


async def test_a_cancelled_awaiter_leaves_the_call_running() -> None:
    release = threading.Event()
    runs = execution(lambda e: release.wait(5), timeout=5)
    task = asyncio.ensure_future(runs.run(event()))
    await asyncio.sleep(0.05)

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert runs.running  # the host keeps the message while this is true
    release.set()
    await eventually(lambda: not runs.running)


async def test_hung_handlers_of_some_mailboxes_never_fail_another_s_call() -> None:
    """Every slot held by a hung call: a new call waits for a slot, then runs (never times
    out without having run)."""
    threads = HandlerThreads(2)
    release = threading.Event()
    handlers = HandlerRegistry()
    handlers.register("hang", lambda e: release.wait(10))
    handlers.register("quick", lambda e: "ran")
    hung = [Execution(handlers, 0.05, threads) for _ in range(2)]
    calls = [asyncio.ensure_future(h.run(event(type_="hang"))) for h in hung]
    await eventually(lambda: threads.overdue == 2)
    assert threads.exhausted

    quick = asyncio.ensure_future(Execution(handlers, 0.05, threads).run(event(type_="quick")))
    await asyncio.sleep(0.2)  # four times its timeout: still waiting, not failed
    assert not quick.done()
    assert threads.waiting == 1
    release.set()

    assert (await quick).value == "ran"
    assert [c.value["type"] for c in await asyncio.gather(*calls)] == ["HandlerTimeout"] * 2
    assert (threads.running, threads.overdue, threads.waiting) == (0, 0, 0)


def test_the_watchdog_ends_a_process_whose_lease_lapses_while_a_handler_runs() -> None:
    reasons: list[str] = []
    watchdog = Watchdog(0.05, kill=reasons.append)
    watchdog.renewed(time.monotonic())
    watchdog.tick()
    time.sleep(0.1)
    assert watchdog.expired() is None  # nothing runs: nothing can overlap

    with watchdog.executing():
        watchdog.tick()
        assert watchdog.expired() is not None
        assert "lease" in str(watchdog.expired())
        watchdog.lapsing("connection lost")
    assert reasons == ["its lease is lost (connection lost) while 1 handler(s) run"]
    assert not watchdog.fresh()


def test_the_watchdog_names_a_blocked_loop() -> None:
    watchdog = Watchdog(0.05, kill=lambda _: None)
    watchdog.renewed(time.monotonic() + 10)
    with watchdog.executing():
        time.sleep(0.1)
        assert "event loop has been blocked" in str(watchdog.expired())


class AsyncCallable:
    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog

    async def __call__(self, event: Event) -> Any:
        return (threading.current_thread() is threading.main_thread(), self.watchdog.executions)


def plain_decorator(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(event: Event) -> Any:
        return fn(event)

    return wrapper


async def test_async_handlers_the_inspect_module_misses_run_on_the_loop_watched() -> None:
    """An object with `async def __call__`, and a coroutine function behind a plain
    decorator: both run on the loop and count as running for the watchdog. Planted: routing
    them by `inspect.iscoroutinefunction` alone, and awaiting a coroutine a "plain" handler
    returns without counting it (as before issue 12's review) → `(True, 0) == (True, 1)`."""
    watchdog = Watchdog(60, kill=lambda _: None)

    @plain_decorator
    async def wrapped(event: Event) -> Any:
        return (threading.current_thread() is threading.main_thread(), watchdog.executions)

    for handler in (AsyncCallable(watchdog), wrapped):
        outcome = await execution(handler, watchdog=watchdog).run(event())

        assert outcome.value == (True, 1)
