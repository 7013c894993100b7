"""How one worker process holds many active mailboxes: threads, AMQP connections, memory.

Starts a gateway and ONE worker, activates `--baseline` mailboxes (one demo.echo event each),
measures the worker, activates up to `--mailboxes`, measures again, and reports the memory per
active mailbox and the activation latency (a new client's first event: accepted → started).
Only loopback traffic; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

from rig import (
    SYSTEM_ENV,
    amqp_connections,
    bulk_clients,
    load_average,
    minter,
    post_events,
    process_figures,
    summary,
    write_results,
)

from tests import harness


def measure(system: harness.System, worker_id: str) -> dict[str, int]:
    figures = process_figures(system.processes["worker-1"].pid)
    figures["amqp_connections"] = amqp_connections(f"seriatim-worker-{worker_id}")
    figures["active_mailboxes"] = int(
        system.sql("SELECT count(*) FROM clients WHERE state = 'active'")[0][0]
    )
    return figures


def activate(
    system: harness.System, tokens: dict[str, str], expected_done: int, per_client: int = 1
) -> None:
    asyncio.run(
        post_events(system.base_url, tokens, per_client, {"type": "demo.echo", "payload": {}}, 32)
    )
    harness.wait_for(
        lambda: (
            system.sql("SELECT count(*) FROM events WHERE status = 'succeeded'")[0][0]
            >= expected_done
        ),
        600,
        f"{expected_done} events to succeed",
        interval=0.2,
    )


def one_at_a_time(system: harness.System, service: object, count: int) -> list[float]:
    """Activation latency of a lone new client on an otherwise quiet system."""
    latencies = []
    for cid in bulk_clients(system, count, "lone-"):
        token = service.issue(uuid.UUID(cid), ["events:write"])["access_token"]  # type: ignore[attr-defined]
        activate(system, {cid: token}, 0)
        harness.wait_for(
            lambda cid=cid: system.sql(
                "SELECT started_at FROM events WHERE client_id = $1::uuid", cid
            )[0][0],
            60,
            "the lone client's event to start",
            interval=0.01,
        )
        latencies.append(
            system.sql(
                "SELECT extract(epoch FROM started_at - accepted_at)::float FROM events "
                "WHERE client_id = $1::uuid",
                cid,
            )[0][0]
        )
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=1000, help="active mailboxes in the end")
    parser.add_argument("--baseline", type=int, default=10, help="active mailboxes at first")
    parser.add_argument("--events", type=int, default=1, help="events per client of the burst")
    parser.add_argument(
        "--single", type=int, default=20, help="lone new clients activated one at a time afterwards"
    )
    args = parser.parse_args()
    if not (1 <= args.baseline < args.mailboxes <= 20000 and 1 <= args.events <= 100):
        parser.error("need 1 <= --baseline < --mailboxes <= 20000 and 1 <= --events <= 100")
    load_start = load_average()
    harness.build_template()
    env = dict(SYSTEM_ENV)
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=1, env=env) as system,
    ):
        worker_id = system.sql("SELECT id FROM workers")[0][0]
        tokens_service = minter(system)
        clients = bulk_clients(system, args.mailboxes, "scale-")
        tokens = {
            cid: tokens_service.issue(uuid.UUID(cid), ["events:write", "events:read"])[
                "access_token"
            ]
            for cid in clients
        }
        first = dict(list(tokens.items())[: args.baseline])
        rest = dict(list(tokens.items())[args.baseline :])
        activate(system, first, args.baseline)
        small = measure(system, worker_id)
        burst = (args.mailboxes - args.baseline) * args.events
        activate(system, rest, args.baseline + burst, args.events)
        large = measure(system, worker_id)
        latency = [
            row[0]
            for row in system.sql(
                "SELECT extract(epoch FROM e.started_at - e.accepted_at)::float FROM events e "
                "JOIN clients c ON c.id = e.client_id WHERE c.name LIKE 'scale-%' AND e.seq = 1"
            )
        ]
        single = one_at_a_time(system, tokens_service, args.single)
    per_mailbox = (large["rss_kib"] - small["rss_kib"]) * 1024 / (args.mailboxes - args.baseline)
    result = {
        "small": small,
        "large": large,
        "bytes_per_active_mailbox": per_mailbox,
        "activation_latency_s": summary(latency),
        "lone_activation_latency_s": summary(single),
        "events_per_client": args.events,
        "load_average": {"start": load_start, "end": load_average()},
    }
    print(f"{'':24}{args.baseline:>10}{args.mailboxes:>10}")
    for key in ("active_mailboxes", "threads", "amqp_connections", "rss_kib", "peak_rss_kib"):
        print(f"{key:24}{small[key]:>10}{large[key]:>10}")
    print(f"memory per active mailbox: {per_mailbox / 1024:.1f} KiB")
    s = result["activation_latency_s"]
    print(
        f"burst of {args.mailboxes - args.baseline} new clients (accepted -> started): "
        f"p50 {s['p50'] * 1000:.0f} ms, p95 {s['p95'] * 1000:.0f} ms, max {s['max'] * 1000:.0f} ms"
    )
    s = result["lone_activation_latency_s"]
    print(
        f"lone new client (accepted -> started), {args.single} runs: "
        f"p50 {s['p50'] * 1000:.0f} ms, p95 {s['p95'] * 1000:.0f} ms, max {s['max'] * 1000:.0f} ms"
    )
    print(f"load average {load_start:.2f} -> {result['load_average']['end']:.2f}")
    print(f"results: {write_results('scale', result)}")


if __name__ == "__main__":
    main()
