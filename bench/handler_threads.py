"""What running plain-function handlers on seriatim's handler threads costs, per call.

In one process and one event loop, back to back and interleaved `--rounds` times: `--calls`
calls of a no-op plain function, `--concurrency` at a time, through `asyncio.to_thread` (what
seriatim used before issue 12; the baseline) and through `actors.execution.Execution` on a
`HandlerThreads` pool (slot, thread hand-off, timeout, watchdog count). Prints µs per call for
each and their ratio, with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from actors.execution import Execution
from actors.handlers import Event, HandlerRegistry
from actors.threads import HandlerThreads
from actors.watchdog import Watchdog


def noop(event: Event) -> Any:
    return event.seq


async def per_call_us(
    call: Callable[[Event], Awaitable[Any]], calls: int, concurrency: int
) -> float:
    events = [Event(uuid.uuid4(), uuid.uuid4(), n, "noop", None, 1, 1) for n in range(calls)]
    queue = iter(events)

    async def lane() -> None:
        for event in queue:
            await call(event)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return (time.perf_counter() - started) / calls * 1e6


async def main(calls: int, concurrency: int, rounds: int) -> None:
    handlers = HandlerRegistry()
    handlers.register("noop", noop)
    threads = HandlerThreads(32)
    watchdog = Watchdog(2.5, kill=lambda _: None)
    executions = [Execution(handlers, 30.0, threads, watchdog) for _ in range(concurrency)]
    pool = iter(executions * (calls // concurrency + 1))

    async def via_pool(event: Event) -> Any:
        return await next(pool).run(event)

    async def via_to_thread(event: Event) -> Any:
        async with asyncio.timeout(30.0):
            return await asyncio.to_thread(noop, event)

    results: dict[str, list[float]] = {"to_thread": [], "handler threads": []}
    for _ in range(rounds):
        results["to_thread"].append(await per_call_us(via_to_thread, calls, concurrency))
        pool = iter(executions * (calls // concurrency + 1))
        results["handler threads"].append(await per_call_us(via_pool, calls, concurrency))
    load = os.getloadavg()
    print(f"{calls} no-op plain calls x {rounds} rounds, {concurrency} at a time; load {load}")
    base = statistics.median(results["to_thread"])
    for name, values in results.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:>16}: median {median:6.1f} µs/call ({runs}); ratio {median / base:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (1 <= args.calls <= 10**6 and 1 <= args.concurrency <= 32 and 1 <= args.rounds <= 20):
        parser.error("counts out of range")
    asyncio.run(main(args.calls, args.concurrency, args.rounds))
