"""EXPLAIN (ANALYZE, BUFFERS) of a page of `GET /v1/events` over large events: the `event_page`
query as it is, and as it was before the page's byte cut moved ahead of building the JSON
text, in the same run on the same rows.

    .venv/bin/python bench/page_sql.py [--events 2000] [--payload-kb 50] [--limit 1000]

A scratch database from the tests' template; one client with `--events` finished events whose
payload (and echoed result) is about `--payload-kb` KiB of JSON strings (md5 hex, so TOAST
cannot shrink them much); a page of `--limit` after seq 0 under the default 1 MiB cap. Each
query runs three times; the last run's plan and figures are printed (execution time, rows
turned into text, shared buffers touched).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from actors.store.queries import QUERIES  # noqa: E402
from tests import harness  # noqa: E402

#: event_page before issue 18's last change: every one of the `limit` rows became text first.
BEFORE = """
WITH listed AS (
    SELECT id, client_id, seq, type, status, attempts, accepted_at, started_at, finished_at,
           redrive_of, traceparent, payload::text AS payload, result::text AS result,
           error::text AS error
    FROM events
    WHERE client_id = $1 AND seq > $2 AND ($3::text IS NULL OR status = $3)
    ORDER BY seq
    LIMIT $4
), sized AS (
    SELECT *, octet_length(payload) + coalesce(octet_length(result), 0)
              + coalesce(octet_length(error), 0) + octet_length(type) + $6::int AS bytes
    FROM listed
), measured AS (
    SELECT *, sum(bytes) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running,
           row_number() OVER (ORDER BY seq) AS n
    FROM sized
)
SELECT id, client_id, seq, type, status, attempts, accepted_at, started_at, finished_at,
       redrive_of, traceparent, fits,
       CASE WHEN fits THEN payload END AS payload,
       CASE WHEN fits THEN result END AS result,
       CASE WHEN fits THEN error END AS error
FROM (SELECT *, n = 1 OR running <= $5::bigint AS fits FROM measured) AS judged
WHERE n <= 2 OR running - bytes <= $5::bigint
ORDER BY seq;
"""
PAGE_MAX_BYTES = 1024 * 1024 - 64  # SERIATIM_PAGE_MAX_BYTES less the envelope
ITEM_BYTES = 512


async def fill(connection: asyncpg.Connection, events: int, payload_kb: int) -> str:
    client = await connection.fetchval(
        "INSERT INTO clients (name, secret_hash) VALUES ('pages', 'x') RETURNING id"
    )
    strings = max(1, payload_kb * 1024 // 35)
    await connection.execute(
        """
        WITH made AS (
            INSERT INTO events (client_id, seq, type, payload, status, attempts, finished_at,
                                result, bytes)
            SELECT $1, s, 'demo.echo', p.doc, 'succeeded', 1, now(), p.doc,
                   2 * octet_length(p.doc::text)
            FROM generate_series(1, $2::int) AS s,
                 LATERAL (SELECT jsonb_build_object('items', jsonb_agg(md5(s::text || ':' || i)))
                                     AS doc
                          FROM generate_series(1, $3::int) AS i) AS p
            RETURNING bytes
        )
        UPDATE clients SET last_seq = $2, done_seq = $2, stored_events = $2,
                           stored_bytes = (SELECT sum(bytes) FROM made)
        WHERE id = $1
        """,
        client,
        events,
        strings,
    )
    await connection.execute("VACUUM ANALYZE events")
    return str(client)


async def explain(connection: asyncpg.Connection, sql: str, client: str, limit: int) -> str:
    plan = ""
    for _ in range(3):
        rows = await connection.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql,
            client,
            0,
            None,
            limit,
            PAGE_MAX_BYTES,
            ITEM_BYTES,
        )
        plan = "\n".join(row[0] for row in rows)
    return plan


def figures(plan: str) -> str:
    time = re.search(r"Execution Time: ([0-9.]+) ms", plan)
    buffers = re.search(r"Buffers: (shared [^\n]*)", plan)
    return (
        f"execution {time.group(1) if time else '?'} ms; "
        f"first plan line's buffers: {buffers.group(1) if buffers else '?'}"
    )


def run(args: argparse.Namespace) -> None:
    harness.build_template()
    name = harness.create_database()
    try:
        asyncio.run(measure(args, name))
    finally:
        harness.drop_database(name)


async def measure(args: argparse.Namespace, name: str) -> None:
    connection = await asyncpg.connect(harness.database_url(name))
    try:
        client = await fill(connection, args.events, args.payload_kb)
        size = await connection.fetchval("SELECT pg_size_pretty(pg_total_relation_size('events'))")
        print(f"{args.events} events of ~{args.payload_kb} KiB (+ result); events: {size}")
        for label, sql in (("before", BEFORE), ("after", QUERIES["event_page"])):
            plan = await explain(connection, sql, client, args.limit)
            page = await connection.fetch(
                sql, client, 0, None, args.limit, PAGE_MAX_BYTES, ITEM_BYTES
            )
            fits = sum(1 for row in page if row["fits"])
            print(f"\n=== {label}: {figures(plan)}; page: {fits} events + {len(page) - fits}")
            print(plan)
    finally:
        await connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--payload-kb", type=int, default=50)
    parser.add_argument("--limit", type=int, default=1000)
    run(parser.parse_args())
