"""Group commit: what callers submit while earlier batches are in flight goes as one batch.

There is no timer. A lone submission when nothing is in flight is taken by the next turn of
the event loop; while `max_in_flight` batches are running, submissions wait and go together
(up to `max_batch`) as soon as one finishes. Each caller gets its own item's outcome.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Runs a batch; returns one outcome per item, in order: a result, or the exception that
#: item's caller raises. An exception it raises fails every item of the batch.
Commit = Callable[[list[T]], Awaitable[list[R | Exception]]]


class GroupCommit(Generic[T, R]):
    """Batches submissions to `commit`; `submit` returns (or raises) its item's outcome.

    A caller cancelled before its item was taken is left out of the batch; once taken, the
    item may still be committed (as when a client goes away after its commit).
    """

    def __init__(self, commit: Commit[T, R], *, max_batch: int, max_in_flight: int) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: collections.deque[tuple[T, asyncio.Future[R]]] = collections.deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._gathering = False  # a batch task is scheduled and has not taken its items yet

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start_batch()
        return await future

    def _start_batch(self) -> None:
        if self._gathering or not self._waiting or len(self._in_flight) >= self._max_in_flight:
            return
        self._gathering = True
        # Its own empty context: a batch belongs to no one request's trace.
        task = asyncio.create_task(self._run(), context=contextvars.Context())
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if task.cancelled():  # perhaps before it took its items: let another batch gather
            self._gathering = False
        self._start_batch()

    async def _run(self) -> None:
        """Take what waits now (everything submitted in the same turn of the loop), let the
        next batch start if there is room, and commit."""
        self._gathering = False
        batch = self._take()
        self._start_batch()
        if batch:
            await self._deliver(batch)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while self._waiting and len(batch) < self._max_batch:
            item, future = self._waiting.popleft()
            if not future.done():  # a cancelled caller is not sent
                batch.append((item, future))
        return batch

    async def _deliver(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._commit([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            outcomes = [error] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # its caller went away meanwhile
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
