"""The console's clients list (`console_clients`): every sort, filter and cursor gives what one
full sort of every client would, page after page; and the common pages (largest backlog first,
its next page) read their rows in order from indexes instead of sorting every client, counted
in EXPLAIN ANALYZE's rows (not timed). On the starting code the plan test fails: the query
sorted all 60,000 clients for every page."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest

from actors.store import Journal
from actors.store.console import ClientLine, ConsoleReads
from actors.store.queries import QUERIES

pytestmark = pytest.mark.integration

CLIENTS = 3000
PAGE = 7
SEED = """
INSERT INTO clients (name, secret_hash, last_seq, done_seq, state)
SELECT 'c-' || n, 'x',
       CASE WHEN n % 20 = 0 THEN 5 + n % 7 ELSE 5 END, 5,
       CASE WHEN n % 20 = 0 THEN 'active' WHEN n % 31 = 0 THEN 'suspended' ELSE 'idle' END
FROM generate_series(1, $1) AS n;
INSERT INTO events (client_id, seq, type, payload, status, accepted_at)
SELECT id, 6, 'demo.echo', '{}'::jsonb, 'queued',
       '2026-01-01'::timestamptz - (substr(name, 3)::int % 13) * interval '1 minute'
FROM clients WHERE last_seq > done_seq AND substr(name, 3)::int % 60 <> 0;
ANALYZE;
"""
ALL = """
SELECT c.id, c.name, c.state, c.last_seq - c.done_seq AS backlog, head.accepted_at
FROM clients c LEFT JOIN events head ON head.client_id = c.id AND head.seq = c.done_seq + 1
"""


@pytest.fixture
async def seeded(journal: Journal) -> Journal:
    await journal.pool.execute(SEED.replace("$1", str(CLIENTS)))
    return journal


@pytest.fixture
async def many(journal: Journal) -> Journal:
    await journal.pool.execute(SEED.replace("$1", str(20 * CLIENTS)))
    return journal


def expected(rows: list[Any], sort: str, state: str | None, name: str | None, hide: bool) -> list:
    def key(row: Any) -> tuple[float, uuid.UUID]:
        if sort == "backlog":
            return -row["backlog"], row["id"]
        at = row["accepted_at"]
        return (at.timestamp() if at and row["backlog"] else math.inf), row["id"]

    chosen = [
        row
        for row in rows
        if (state is None or row["state"] == state)
        and (name is None or name in row["name"])
        and not (hide and row["state"] == "idle" and row["backlog"] == 0)
    ]
    return [row["id"] for row in sorted(chosen, key=key)]


async def walk(reads: ConsoleReads, **query: Any) -> list[uuid.UUID]:
    """Every page's ids, following the cursor as the page does."""
    ids: list[uuid.UUID] = []
    after: tuple[float, uuid.UUID] | None = None
    while True:
        rows: list[ClientLine] = await reads.clients(after=after, limit=PAGE + 1, **query)
        ids += [row.id for row in rows[:PAGE]]
        if len(rows) <= PAGE:
            return ids
        after = (rows[PAGE - 1].sort_key, rows[PAGE - 1].id)


@pytest.mark.parametrize("sort", ["backlog", "age"])
@pytest.mark.parametrize(
    ("state", "name", "hide"),
    [(None, None, False), (None, None, True), ("suspended", None, False), (None, "c-12", False)],
)
async def test_every_page_is_what_one_full_sort_would_give(
    seeded: Journal, sort: str, state: str | None, name: str | None, hide: bool
) -> None:
    rows = await seeded.pool.fetch(ALL)
    like = f"%{name}%" if name else None
    got = await walk(
        ConsoleReads(seeded.pool), state=state, name_like=like, hide_idle=hide, sort=sort
    )
    assert got == expected(rows, sort, state, name, hide)


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


async def test_the_largest_backlog_pages_sort_no_more_than_a_page(many: Journal) -> None:
    first = await ConsoleReads(many.pool).clients(
        state=None, name_like=None, hide_idle=False, sort="backlog", after=None, limit=51
    )
    for key, after_id in [(None, None), (first[-1].sort_key, first[-1].id)]:
        text = await many.pool.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["console_clients"],
            None, None, False, "backlog", key, after_id, 51,
        )  # fmt: skip
        nodes = _nodes(json.loads(text)[0]["Plan"])
        sorted_in = [
            sum(child["Actual Rows"] * child["Actual Loops"] for child in node.get("Plans", []))
            for node in nodes
            if "Sort" in node["Node Type"]
        ]
        read = sum(
            (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
            for node in nodes
            if "Scan" in node["Node Type"] and node.get("Relation Name") == "clients"
        )
        assert max(sorted_in, default=0) <= 2 * 51, json.dumps(nodes)[:2000]
        assert read <= 4 * 51, read
