"""Group commit: batching, results per item, errors, cancellation, no idle delay."""

from __future__ import annotations

import asyncio

import pytest

from actors.store.batch import GroupCommit


class Writer:
    """Records each batch; `gate` holds a batch in flight until the test opens it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None
        self.called = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.called.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


async def test_items_submitted_in_one_loop_turn_go_as_one_batch() -> None:
    writer = Writer()
    batch = GroupCommit(writer)

    results = await asyncio.gather(*(batch.submit(n) for n in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert writer.batches == [[0, 1, 2, 3, 4]]


async def test_a_lone_item_is_written_alone_without_waiting_for_company() -> None:
    writer = Writer()
    batch = GroupCommit(writer)

    assert await batch.submit(7) == 70
    assert await batch.submit(8) == 80
    assert writer.batches == [[7], [8]]


async def test_items_arriving_while_batches_are_in_flight_form_the_next_batch() -> None:
    # Given one batch in flight and the limit of one in flight
    writer = Writer()
    writer.gate.clear()
    batch = GroupCommit(writer, max_in_flight=1)
    first = asyncio.ensure_future(batch.submit(1))
    await writer.called.wait()
    assert writer.batches == [[1]]

    # When more items arrive, one after another, while it is held
    later = [asyncio.ensure_future(batch.submit(n)) for n in (2, 3, 4)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert writer.batches == [[1]]
    writer.gate.set()

    # Then they are written together once the first batch is done
    assert await first == 10
    assert [await item for item in later] == [20, 30, 40]
    assert writer.batches == [[1], [2, 3, 4]]


async def test_batches_are_bounded_in_size() -> None:
    writer = Writer()
    batch = GroupCommit(writer, max_size=3, max_in_flight=4)

    await asyncio.gather(*(batch.submit(n) for n in range(7)))

    assert writer.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_every_item_of_a_failed_batch_gets_the_error_and_later_batches_still_run() -> None:
    writer = Writer()
    writer.fail = ConnectionResetError("journal went away")
    batch = GroupCommit(writer)

    results = await asyncio.gather(batch.submit(1), batch.submit(2), return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionResetError] * 2

    writer.fail = None
    assert await batch.submit(3) == 30


async def test_a_cancelled_caller_leaves_the_other_items_of_its_batch_unharmed() -> None:
    writer = Writer()
    writer.gate.clear()
    batch = GroupCommit(writer)
    leaving = asyncio.ensure_future(batch.submit(1))
    staying = asyncio.ensure_future(batch.submit(2))
    await writer.called.wait()

    leaving.cancel()
    writer.gate.set()

    assert await staying == 20
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert writer.batches == [[1, 2]]  # the item was sent: like a statement, it may commit


async def test_a_writer_returning_the_wrong_number_of_results_fails_the_batch_not_hangs() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batch = GroupCommit(short)

    results = await asyncio.gather(batch.submit(1), batch.submit(2), return_exceptions=True)

    assert all(isinstance(result, RuntimeError) for result in results)
