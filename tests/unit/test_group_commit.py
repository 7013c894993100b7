"""GroupCommit without a database: what goes together, in which order, and who gets what."""

from __future__ import annotations

import asyncio

import pytest

from actors.store.group_commit import GroupCommit


class Store:
    """A commit function that records its batches and holds each until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.running = 0
        self.most_running = 0

    async def commit(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [ValueError(item) if item < 0 else item * 10 for item in items]


def group(store: Store, max_batch: int = 256, max_in_flight: int = 1) -> GroupCommit[int, int]:
    return GroupCommit(store.commit, max_batch=max_batch, max_in_flight=max_in_flight)


async def test_a_lone_submission_goes_at_once_by_itself() -> None:
    store = Store()
    assert await group(store).submit(1) == 10
    assert store.batches == [[1]]


async def test_submissions_of_one_moment_go_together_in_order() -> None:
    store = Store()
    commits = group(store)
    assert await asyncio.gather(*(commits.submit(n) for n in range(5))) == [0, 10, 20, 30, 40]
    assert store.batches == [[0, 1, 2, 3, 4]]


async def test_what_arrives_while_a_batch_is_in_flight_goes_as_the_next_batch() -> None:
    # Given a batch in flight
    store = Store()
    commits = group(store)
    store.release.clear()
    first = asyncio.ensure_future(commits.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.batches == [[1]]

    # When more arrive one by one meanwhile
    later = [asyncio.ensure_future(commits.submit(n)) for n in (2, 3, 4)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert store.batches == [[1]]

    # Then they go together once it is done
    store.release.set()
    assert await asyncio.gather(first, *later) == [10, 20, 30, 40]
    assert store.batches == [[1], [2, 3, 4]]


async def test_batches_are_bounded_in_size_and_in_number_in_flight() -> None:
    # Given 10 submissions at once, batches of at most 3, at most 2 in flight
    store = Store()
    commits = group(store, max_batch=3, max_in_flight=2)
    store.release.clear()
    results = asyncio.gather(*(commits.submit(n) for n in range(10)))
    for _ in range(5):
        await asyncio.sleep(0)

    # Then two batches of 3 are in flight and the rest waits
    assert store.batches == [[0, 1, 2], [3, 4, 5]]
    assert store.running == 2

    # And the rest follows in order once they finish
    store.release.set()
    assert await results == [n * 10 for n in range(10)]
    assert store.batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert store.most_running == 2


async def test_an_item_that_fails_fails_only_its_own_caller() -> None:
    store = Store()
    outcomes = await asyncio.gather(
        *(group(store).submit(n) for n in (1, -2, 3)), return_exceptions=True
    )
    assert outcomes[0] == 10
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == 30


async def test_a_failed_batch_fails_its_callers_and_not_the_next_batch() -> None:
    calls = 0

    async def commit(items: list[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("journal away")
        return list(items)

    commits = GroupCommit(commit, max_batch=256, max_in_flight=1)
    failed = await asyncio.gather(commits.submit(1), commits.submit(2), return_exceptions=True)
    assert [type(o) for o in failed] == [ConnectionError, ConnectionError]
    assert await commits.submit(3) == 3


async def test_a_caller_cancelled_while_waiting_is_left_out_and_the_others_served() -> None:
    # Given a batch in flight and three callers waiting behind it
    store = Store()
    commits = group(store)
    store.release.clear()
    first = asyncio.ensure_future(commits.submit(1))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(commits.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)

    # When the middle one goes away
    waiting[1].cancel()
    store.release.set()

    # Then the others get their own outcomes and the cancelled item is never committed
    assert await first == 10
    assert [await waiting[0], await waiting[2]] == [20, 40]
    assert waiting[1].cancelled()
    assert store.batches == [[1], [2, 4]]


async def test_a_caller_cancelled_after_its_batch_left_does_not_disturb_it() -> None:
    store = Store()
    commits = group(store)
    store.release.clear()
    gone = asyncio.ensure_future(commits.submit(1))
    stays = asyncio.ensure_future(commits.submit(2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.batches == [[1, 2]]  # both sent

    gone.cancel()
    store.release.set()

    assert await stays == 20
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await commits.submit(3) == 30  # and the group goes on
