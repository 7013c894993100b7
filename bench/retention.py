"""The hot path (accept -> finished latency and rate) without, then with, the retention deleter
working through a large backlog of finished events, in the same run.

    .venv/bin/python bench/retention.py [--seconds 20] [--rate 200] [--backlog 500000]
        [--payload-bytes 1024] [--batch 500] [--pause 0.1]

One gateway and one worker on a fresh database, retention on (SERIATIM_RETENTION=3600, so the
events posted here are never old enough). Before the first phase, `--backlog` finished
events of `--payload-bytes` each, finished two hours ago, are written straight into the
journal for 100 other clients, while this script holds the deleter's advisory lock; it holds
it through the first phase, so no worker can delete, and lets go for the second, in which the
worker deletes the backlog in batches of `--batch` with `--pause` between them while the
tenants post. Both phases: `--tenants` clients post `demo.echo` in an open loop at `--rate`
per second for `--seconds`; reported are the
request latency, accept -> finished latency (the journal's timestamps) and processed/s, and in
the second phase how many backlog events were deleted (it must not have run out: then raise
`--backlog`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bench.rig import (  # noqa: E402
    SYSTEM_ENV,
    bulk_clients,
    minter,
    paced_events,
    summary,
    tokens_for,
    write_results,
)
from tests import harness  # noqa: E402

RETENTION_LOCK = 7215011  # actors/store/queries.sql: take_retention_lock
BACKLOG_CLIENTS = 100


def fill_backlog(system: harness.System, count: int, payload_bytes: int) -> None:
    """`count` events finished two hours ago, spread over BACKLOG_CLIENTS clients, with the
    clients' counters (seq, stored events and bytes) as the journal would keep them."""
    clients = bulk_clients(system, BACKLOG_CLIENTS, "old-")
    payload = '{"pad":"' + "x" * max(0, payload_bytes - 10) + '"}'
    per_client = -(-count // BACKLOG_CLIENTS)
    system.sql(
        "WITH c AS (SELECT id, row_number() OVER () AS n FROM unnest($1::uuid[]) AS id),"
        " made AS ("
        "  INSERT INTO events (client_id, seq, type, payload, status, attempts, accepted_at,"
        "                      published_at, started_at, finished_at, result, bytes)"
        "  SELECT c.id, s, 'demo.echo', ($2::text)::jsonb, 'succeeded', 1,"
        "         now() - interval '2 hours', now() - interval '2 hours',"
        "         now() - interval '2 hours', now() - interval '2 hours', $2::jsonb,"
        "         2 * octet_length($2::text)"
        "  FROM c, generate_series(1, $3::bigint) AS s"
        "  WHERE (c.n - 1) * $3 + s <= $4"
        "  RETURNING client_id, bytes)"
        " UPDATE clients SET last_seq = m.n, done_seq = m.n, stored_events = m.n,"
        "                    stored_bytes = m.bytes"
        " FROM (SELECT client_id, count(*) AS n, sum(bytes) AS bytes FROM made"
        "       GROUP BY client_id) AS m"
        " WHERE clients.id = m.client_id",
        clients,
        payload,
        per_client,
        count,
    )
    system.execute("VACUUM ANALYZE events")


def backlog_left(system: harness.System) -> int:
    return int(
        system.sql("SELECT count(*) FROM events WHERE finished_at < now() - interval '1 hour'")[0][
            0
        ]
    )


async def phase(
    system: harness.System, tokens: dict[str, str], rate: float, seconds: float
) -> dict[str, Any]:
    """Post for `seconds`, wait for every event to finish; the figures of these events."""
    since = system.sql("SELECT now()")[0][0]
    latencies = await paced_events(
        system.base_url, tokens, rate, int(rate * seconds), {"type": "demo.echo", "payload": {}}
    )
    count = len(latencies)
    harness.wait_for(
        lambda: (
            system.sql(
                "SELECT count(*) FROM events WHERE accepted_at >= $1 AND status = 'succeeded'",
                since,
            )[0][0]
            == count
        ),
        600,
        f"{count} events to succeed",
        interval=0.2,
    )
    rows = system.sql("SELECT accepted_at, finished_at FROM events WHERE accepted_at >= $1", since)
    span = max(r["finished_at"] for r in rows) - min(r["accepted_at"] for r in rows)
    return {
        "events": count,
        "request_latency_s": summary(latencies),
        "accepted_to_finished_s": summary(
            [(r["finished_at"] - r["accepted_at"]).total_seconds() for r in rows]
        ),
        "processed_per_s": count / span.total_seconds(),
    }


async def measure(args: argparse.Namespace, system: harness.System) -> dict[str, Any]:
    tokens = tokens_for(minter(system), bulk_clients(system, args.tenants, "hot-"))
    phases: dict[str, Any] = {}
    # Without: this session holds the deleter's lock, so every worker skips its rounds.
    holder = await asyncpg.connect(system.env["SERIATIM_DATABASE_URL"])
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", RETENTION_LOCK)  # after a round
        fill_backlog(system, args.backlog, args.payload_bytes)
        before = backlog_left(system)
        phases["without deleter"] = {
            **await phase(system, tokens, args.rate, args.seconds),
            "backlog_deleted": before - backlog_left(system),
        }
    finally:
        await holder.close()  # the lock goes with the session
    before, started = backlog_left(system), time.perf_counter()
    figures = await phase(system, tokens, args.rate, args.seconds)
    left = backlog_left(system)
    phases["with deleter"] = {
        **figures,
        "backlog_deleted": before - left,
        "backlog_deleted_per_s": (before - left) / (time.perf_counter() - started),
        "backlog_left": left,
    }
    return phases


def run(args: argparse.Namespace) -> None:
    harness.build_template()
    env = {
        **SYSTEM_ENV,
        "SERIATIM_RETENTION": "3600",
        "SERIATIM_RETENTION_INTERVAL": "0.5",
        "SERIATIM_RETENTION_BATCH": str(args.batch),
        "SERIATIM_RETENTION_PAUSE": str(args.pause),
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=1, env=env) as system,
    ):
        phases = asyncio.run(measure(args, system))
    report(args, phases)


def report(args: argparse.Namespace, phases: dict[str, Any]) -> None:
    print(
        f"{args.tenants} tenants posting {args.rate:g} events/s for {args.seconds:g} s; backlog "
        f"{args.backlog} finished events of {args.payload_bytes} B, batches of {args.batch}, "
        f"pause {args.pause:g} s"
    )
    print(f"{'':16} {'req p99 ms':>10} {'fin p50 ms':>10} {'fin p99 ms':>10} {'done/s':>8} deleted")
    for label, p in phases.items():
        print(
            f"{label:16} {p['request_latency_s']['p99'] * 1000:10.1f} "
            f"{p['accepted_to_finished_s']['p50'] * 1000:10.1f} "
            f"{p['accepted_to_finished_s']['p99'] * 1000:10.1f} "
            f"{p['processed_per_s']:8.1f} {p['backlog_deleted']}"
        )
    if phases["with deleter"]["backlog_left"] == 0:
        print("the deleter ran out of backlog during the phase: raise --backlog")
    print(f"results: {write_results('retention', {'args': vars(args), 'phases': phases})}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=500_000)
    parser.add_argument("--payload-bytes", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pause", type=float, default=0.1)
    run(parser.parse_args())
