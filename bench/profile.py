"""Where the time goes: py-spy profiles of the gateway and a worker under the end-to-end load.

Starts a gateway and `--workers` workers, then posts `--total` demo.echo events over
`--clients` clients (as bench/throughput.py does) while `py-spy record` samples the gateway
and worker-1 (`pip install py-spy` into the venv; needs ptrace rights). Prints, per process,
the share of samples in the top functions (own time) and in chosen subsystems (inclusive),
and keeps the collapsed stacks under bench/results/ for flame graphs.
Only loopback traffic; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rig import (
    RESULTS,
    SYSTEM_ENV,
    bulk_clients,
    load_average,
    minter,
    post_events,
    tokens_for,
    write_results,
)

from tests import harness

SPY_OPTIONS = ["record", "--format", "raw", "--rate", "200", "--nonblocking", "--idle"]

#: Inclusive buckets: a sample counts for the first pattern found anywhere in its stack.
SUBSYSTEMS = {
    "asyncpg": ("asyncpg/",),
    "pika / AMQP": ("pika/", "actors/amqp.py"),
    "HTTP server (uvicorn, h11/httptools)": ("uvicorn/", "h11/", "httptools"),
    "Starlette routing and middleware": ("starlette/",),
    "JWT verification": ("joserfc/", "authlib/", "gateway/auth.py", "gateway/tokens.py"),
    "JSON": ("json/",),
    "Dramatiq envelope and middleware": ("dramatiq/",),
    "tracing and metrics": ("opentelemetry/", "prometheus_client/", "actors/metrics.py"),
    "logging": ("logging/",),
    "asyncio event loop": ("asyncio/",),
}


def analyse(path: Path, top: int) -> dict[str, Any]:
    """Shares of the main thread's busy samples (the event loop; idle = waiting in epoll)."""
    own: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack.startswith("_run_module_as_main"):  # executor threads: idle or DNS
            continue
        count = int(count_text)
        leaf = stack.split(";")[-1]
        if leaf.startswith("EpollSelector.select"):
            idle += count
            continue
        busy += count
        own[re.sub(r":\d+\)$", ")", leaf)] += count
        for name, patterns in SUBSYSTEMS.items():
            if any(p in stack for p in patterns):
                buckets[name] += count
                break
        else:
            buckets["other (seriatim code, Python runtime)"] += count
    return {
        "busy_share": busy / (busy + idle) if busy + idle else 0,
        "busy_samples": busy,
        "top_own": [(name, n / busy) for name, n in own.most_common(top)],
        "subsystems": [(name, n / busy) for name, n in buckets.most_common()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--total", type=int, default=8000, help="events in all")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top", type=int, default=15, help="functions listed per process")
    parser.add_argument(
        "--batch", type=int, default=1, help="events per request (POST /v1/events/batch when > 1)"
    )
    args = parser.parse_args()
    if not (
        1 <= args.clients <= 20000
        and args.clients <= args.total <= 200000
        and 1 <= args.concurrency <= 1000
        and 1 <= args.workers <= 16
        and 1 <= args.batch <= 1000
    ):
        parser.error("counts out of range")
    spy = shutil.which("py-spy") or str(Path(harness.sys.executable).parent / "py-spy")
    harness.build_template()
    load_start = load_average()
    env = dict(SYSTEM_ENV)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    outputs = {name: RESULTS / f"profile-{name}-{stamp}.txt" for name in ("gateway", "worker-1")}
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=args.workers, env=env) as system,
    ):
        service = minter(system)
        tokens = tokens_for(service, bulk_clients(system, args.clients, "pf-"))
        spies = [
            subprocess.Popen(
                [spy, *SPY_OPTIONS, "-o", str(out), "-p", str(system.processes[name].pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, out in outputs.items()
        ]
        time.sleep(1)
        body = {"type": "demo.echo", "payload": {"n": 1}}
        per_client = args.total // args.clients
        asyncio.run(
            post_events(
                system.base_url, tokens, per_client, body, args.concurrency, batch=args.batch
            )
        )
        total = per_client * args.clients
        harness.wait_for(
            lambda: (
                system.sql("SELECT count(*) FROM events WHERE status = 'succeeded'")[0][0] == total
            ),
            900,
            f"{total} events to succeed",
            interval=0.2,
        )
        for process in spies:
            process.send_signal(2)  # SIGINT: py-spy writes its file and exits
            process.wait(60)
    result: dict[str, Any] = {name: analyse(out, args.top) for name, out in outputs.items()}
    result["load_average"] = {"start": load_start, "end": load_average()}
    for name in outputs:
        figures = result[name]
        print(
            f"\n{name}: event loop busy {figures['busy_share']:.0%} of the run "
            f"({figures['busy_samples']} samples); shares of the busy time:"
        )
        print("  inclusive, by subsystem (first match from the top of the list):")
        for label, share in figures["subsystems"]:
            print(f"    {share:6.1%}  {label}")
        print("  own time, top functions:")
        for label, share in figures["top_own"]:
            print(f"    {share:6.1%}  {label}")
    print(f"\nstacks: {', '.join(str(p) for p in outputs.values())}")
    print(f"results: {write_results('profile', result)}")


if __name__ == "__main__":
    main()
