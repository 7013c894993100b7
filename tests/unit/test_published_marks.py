"""The gateway marks events published a moment after their confirms, oldest first, so that
the workers' attempt starts (which mark delivered events themselves) leave it nothing to do;
at shutdown it marks everything still pending."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, cast

from gateway.publishing import PublishedMarks


class Journal:
    def __init__(self) -> None:
        self.marked: list[list[uuid.UUID]] = []
        self.any_marked = asyncio.Event()

    async def mark_published(self, event_ids: Sequence[uuid.UUID]) -> None:
        self.marked.append(list(event_ids))
        self.any_marked.set()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_flush_marks_only_the_events_confirmed_before_its_cut_in_order() -> None:
    journal, clock = Journal(), Clock()
    marks = PublishedMarks(cast(Any, journal), delay=0.5, clock=clock)
    ids = [uuid.uuid4() for _ in range(3)]
    for n, event_id in enumerate(ids):
        clock.now = 100.0 + n
        marks.add(event_id)

    await marks.flush(came_before=101.0)  # the first two are due
    await marks.flush(came_before=101.5)  # nothing more is
    await marks.flush()

    assert journal.marked == [ids[:2], ids[2:]]


async def test_stopping_marks_everything_pending_at_once() -> None:
    journal = Journal()
    marks = PublishedMarks(cast(Any, journal), delay=3600.0)
    ids = [uuid.uuid4() for _ in range(2)]
    for event_id in ids:
        marks.add(event_id)
    stopping = asyncio.Event()
    stopping.set()

    await asyncio.wait_for(marks.run(stopping), 5)

    assert journal.marked == [ids]


async def test_a_running_gateway_marks_an_event_once_it_is_due() -> None:
    journal = Journal()
    marks = PublishedMarks(cast(Any, journal), delay=0.01)
    stopping = asyncio.Event()
    running = asyncio.create_task(marks.run(stopping))
    event_id = uuid.uuid4()

    marks.add(event_id)

    await asyncio.wait_for(journal.any_marked.wait(), 5)
    stopping.set()
    await asyncio.wait_for(running, 5)
    assert journal.marked == [[event_id]]
