"""The journal's connection pool with a CLIENT span around every named query.

The span is named after the query (`-- name: accept_event`), so names stay few and say what
ran; the SQL text is an attribute, parameter values never are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from actors import metrics
from actors.store.queries import QUERIES

_NAMES = {sql: name for name, sql in QUERIES.items()}


_COUNTERS = {name: metrics.JOURNAL_STATEMENTS.labels(name) for name in (*QUERIES, "query")}


def _count(sql: str) -> None:
    """One more statement of this query (the counts behind docs/decisions.md "Activation in
    bulk: spike")."""
    _COUNTERS[_NAMES.get(sql, "query")].inc()


class TracedPool:
    """The subset of asyncpg.Pool the journal uses, each query in its own span."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._tracer = trace.get_tracer("seriatim.journal")

    @contextlib.contextmanager
    def span(self, sql: str) -> Iterator[None]:
        """A span for `sql` run on the caller's behalf, also when it runs elsewhere (batched)."""
        if not trace.get_current_span().is_recording():
            yield  # background work (heartbeats, sweeps) makes no traces of its own
            return
        name = _NAMES.get(sql, "query")
        with self._tracer.start_as_current_span(
            f"postgresql {name}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.system.name": "postgresql",
                "db.operation.name": name,
                "db.query.summary": name,
                "db.query.text": sql,
            },
        ):
            yield

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        _count(sql)
        with self.span(sql):
            return await self._pool.fetch(sql, *args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        _count(sql)
        with self.span(sql):
            return await self._pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _count(sql)
        with self.span(sql):
            return await self._pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        _count(sql)
        with self.span(sql):
            return await self._pool.execute(sql, *args)  # type: ignore[no-any-return]

    def acquire(self) -> Any:
        return self._pool.acquire()

    async def close(self) -> None:
        await self._pool.close()

    def get_size(self) -> int:
        return self._pool.get_size()  # type: ignore[no-any-return]

    def get_idle_size(self) -> int:
        return self._pool.get_idle_size()  # type: ignore[no-any-return]
