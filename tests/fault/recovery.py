"""Watching a system through an outage: what /readyz said, and how long recovery took.

Figures come from the journal's own timestamps after the fact (same machine, same clock),
so scenarios print them instead of asserting on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from tests.fault.load import Load
from tests.harness import System, wait_for


def now() -> datetime.datetime:
    """The wall clock, comparable with the journal's timestamps."""
    return datetime.datetime.now(datetime.UTC)


async def eventually(condition: Callable[[], Any], within: float, what: str) -> Any:
    """`wait_for` in a thread, so that the load sharing the event loop keeps posting."""
    return await asyncio.to_thread(wait_for, condition, within, what)


@dataclasses.dataclass
class Readiness:
    """Polls /readyz in the background and keeps every answer: (status, missing services)."""

    system: System
    answers: list[tuple[int, tuple[str, ...]]] = dataclasses.field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        async with httpx.AsyncClient(base_url=self.system.base_url, timeout=5) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.get("/readyz")
                    missing = response.json().get("missing", []) if response.is_error else []
                    self.answers.append((response.status_code, tuple(missing)))
                await asyncio.sleep(0.05)

    def named(self, service: str, since: int = 0) -> bool:
        """Some answer (from the `since`-th on) was 503 naming `service` as unreachable."""
        return any(status == 503 and service in missing for status, missing in self.answers[since:])

    def ready_again(self, since: int = 0) -> bool:
        """The latest answer is 200, after at least one 503 (from the `since`-th answer on,
        so that one of several outages in a run is judged by its own answers)."""
        statuses = [status for status, _ in self.answers[since:]]
        return 503 in statuses and statuses[-1] == 200


def terminal_since(system: System, moment: datetime.datetime) -> int:
    """Events accepted after `moment` that have reached a terminal state."""
    return int(
        system.sql(
            "SELECT count(*) FROM events WHERE accepted_at > $1 "
            "AND status IN ('succeeded', 'dead')",
            moment,
        )[0][0]
    )


def dead_processes(system: System) -> dict[str, int]:
    """The system's processes that have exited, with their exit codes."""
    return {
        name: process.returncode
        for name, process in system.processes.items()
        if process.poll() is not None
    }


@contextlib.asynccontextmanager
async def under_load(
    system: System, clients: int = 6, per_second: float = 30, batch: int = 1
) -> AsyncIterator[tuple[Load, Readiness]]:
    """Steady load and a /readyz watch for the duration of the block, which starts once the
    load's clients exist (Load.prepare).

    On leaving normally, the load finishes its requests in flight (and raises what it met);
    on an error, it is cancelled at once, since the service it waits for may still be down.
    """
    load = Load(system, clients=clients, per_second=per_second, batch=batch)
    await load.prepare()  # the clients exist before the block's clocks start
    readiness = Readiness(system)
    running = asyncio.create_task(load.run())
    readiness.start()
    try:
        yield load, readiness
    except BaseException:
        running.cancel()
        raise
    finally:
        load.stop()
        await readiness.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await running


@dataclasses.dataclass(frozen=True)
class Recovery:
    """Seconds from the service being back to the first event accepted after it, to the
    first outcome recorded after it, and to the last outcome of the events accepted before
    it (the backlog drained)."""

    first_accepted: float
    first_processed: float
    drained: float

    def __str__(self) -> str:
        return (
            f"back -> first event accepted {self.first_accepted:.2f} s, "
            f"-> first event processed {self.first_processed:.2f} s, "
            f"-> backlog drained {self.drained:.2f} s"
        )


def recovery(system: System, back: datetime.datetime) -> Recovery:
    """Read the recovery figures from the journal once every event is terminal."""
    row = system.sql(
        "SELECT (SELECT min(accepted_at) FROM events WHERE accepted_at > $1) AS accepted, "
        "(SELECT min(finished_at) FROM events WHERE finished_at > $1) AS processed, "
        "(SELECT max(finished_at) FROM events WHERE accepted_at <= $1) AS drained",
        back,
    )[0]
    assert row["accepted"] is not None, "nothing was accepted after the service came back"
    assert row["processed"] is not None, "nothing was processed after the service came back"
    return Recovery(
        (row["accepted"] - back).total_seconds(),
        (row["processed"] - back).total_seconds(),
        max(((row["drained"] or back) - back).total_seconds(), 0.0),
    )
