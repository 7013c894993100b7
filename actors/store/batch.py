"""Group commit: the journal writes of many mailboxes, sent together as one statement.

Every mailbox writes its journal rows one at a time and waits for each; on a busy worker
hundreds of mailboxes do so at once, and each row costs PostgreSQL a round trip and a commit.
A `GroupCommit` collects the items submitted while earlier batches are in flight (or in the
same event-loop turn) and hands them to one function that writes them all in one statement.
An idle journal adds no delay: a lone item goes in the next loop turn, alone.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Runs `write(items) -> results` (one result per item, same order) over batches.

    `submit` resolves with the item's own result, or raises what the batch's write raised;
    a caller that stops waiting (cancelled) leaves its item in the batch, as a cancelled
    single statement may still commit.
    """

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_size: int = 256,
        max_in_flight: int = 2,
    ) -> None:
        self._write = write
        self._max_size = max_size
        self._max_in_flight = max_in_flight
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        """Start a batch in the next loop turn, so that items of the same turn go together."""
        if self._waiting and not self._scheduled and len(self._in_flight) < self._max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start, context=contextvars.Context())

    def _start(self) -> None:
        self._scheduled = False
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            batch = self._waiting[: self._max_size]
            del self._waiting[: self._max_size]
            # A fresh context: the batch belongs to no one caller's trace or log fields.
            task = asyncio.get_running_loop().create_task(
                self._run(batch), context=contextvars.Context()
            )
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._schedule()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except BaseException as error:  # every waiter gets what the statement raised
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
