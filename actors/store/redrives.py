"""Redrive-by-filter jobs in the journal: created by the gateway that runs one, reported on by
it while it runs, read by any gateway (gateway/console/redrives.py)."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

from actors.store.queries import QUERIES


@dataclasses.dataclass(frozen=True, slots=True)
class RedriveJob:
    """A job: `processed` of `total` events looked at, `redriven` of them redriven by it."""

    id: uuid.UUID
    actor: uuid.UUID
    runner: str
    total: int
    processed: int
    redriven: int
    state: str  # running, finished, failed, interrupted
    error: str | None
    created_at: datetime.datetime
    seen_at: datetime.datetime
    finished_at: datetime.datetime | None

    @classmethod
    def of(cls, record: Any) -> RedriveJob:
        return cls(**{field.name: record[field.name] for field in dataclasses.fields(cls)})

    @property
    def finished(self) -> bool:
        return self.state != "running"


class RedriveJobs:
    """The jobs' queries, on the journal's pool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def create(self, actor: uuid.UUID, runner: str, total: int) -> RedriveJob:
        return RedriveJob.of(
            await self.pool.fetchrow(QUERIES["insert_redrive_job"], actor, runner, total)
        )

    async def report(self, job_id: uuid.UUID, processed: int, redriven: int) -> bool:
        """Record a running job's progress; False when it is no longer running (it was found
        silent and marked interrupted): its runner must stop."""
        row = await self.pool.fetchrow(QUERIES["redrive_job_progress"], job_id, processed, redriven)
        return row is not None

    async def finish(
        self, job_id: uuid.UUID, processed: int, redriven: int, state: str, error: str | None
    ) -> bool:
        """End a running job; False when it was not running any more."""
        row = await self.pool.fetchrow(
            QUERIES["finish_redrive_job"], job_id, processed, redriven, state, error
        )
        return row is not None

    async def get(self, job_id: uuid.UUID, silent_after: float) -> RedriveJob | None:
        """The job; a running one not reported on for `silent_after` seconds is marked
        interrupted first."""
        row = await self.pool.fetchrow(QUERIES["redrive_job"], job_id, silent_after)
        return RedriveJob.of(row) if row else None
