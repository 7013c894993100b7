"""The gateway's peak memory while it serves the largest allowed pages of `GET /v1/events`
concurrently.

    .venv/bin/python bench/read_memory.py [--clients 4] [--events 60] [--items 20000]
                                          [--concurrency 64] [--seconds 15]

One gateway (default page cap and settings, rates lifted), one worker, a fresh database. Each
client posts `--events` `demo.echo` events whose payload is `{"items": [{}, {}, …]}` with
`--items` empty objects, the shape that costs most Python objects per byte if decoded (the
result echoes it, so each event holds it twice). Then the gateway's peak RSS is reset
(/proc/<pid>/clear_refs) and `--concurrency` readers each walk their client's events with
`limit=1000`, page after page, for `--seconds`; every page is as full as the byte cap allows.
Reported: the gateway's RSS before, its peak (VmHWM) during the reads, pages and bytes served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.rig import (  # noqa: E402
    SYSTEM_ENV,
    load_average,
    process_figures,
    summary,
    write_results,
)
from tests import harness  # noqa: E402

READ_ENV = {
    **SYSTEM_ENV,
    "SERIATIM_READ_RATE_PER_SECOND": "1000000",
    "SERIATIM_READ_RATE_BURST": "1000000",
}


def fill(system: harness.System, args: argparse.Namespace) -> list[str]:
    """One token per client, each client holding `--events` finished events."""
    body = json.dumps(
        {"type": "demo.echo", "payload": {"items": [{}] * args.items}}, separators=(",", ":")
    )
    tokens = []
    for n in range(args.clients):
        token = system.token(system.create_client(f"reader-{n}"))
        with httpx.Client(base_url=system.base_url, timeout=60) as http:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for _ in range(args.events):
                http.post("/v1/events", content=body, headers=headers).raise_for_status()
        tokens.append(token)
    harness.wait_for(
        lambda: system.sql("SELECT bool_and(done_seq = last_seq) FROM clients")[0][0],
        300,
        "every event to finish",
    )
    return tokens


async def read(base_url: str, tokens: list[str], args: argparse.Namespace) -> dict:
    """`--concurrency` readers walking pages for `--seconds`: latencies, pages, bytes."""
    latencies: list[float] = []
    sizes: list[int] = []
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:

        async def reader(n: int) -> None:
            headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
            after = 0
            while time.monotonic() < deadline:
                started = time.monotonic()
                page = await http.get(
                    "/v1/events", params={"limit": 1000, "after_seq": after}, headers=headers
                )
                page.raise_for_status()
                latencies.append(time.monotonic() - started)
                sizes.append(len(page.content))
                after = page.json()["next_after_seq"] or 0

        await asyncio.gather(*(reader(n) for n in range(args.concurrency)))
    return {
        "pages": len(sizes),
        "largest_page_bytes": max(sizes),
        "mean_page_bytes": sum(sizes) // len(sizes),
        "latency_s": summary(latencies),
    }


def run(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=1, env=READ_ENV) as system,
    ):
        tokens = fill(system, args)
        gateway = system.processes["gateway"].pid
        Path(f"/proc/{gateway}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = process_figures(gateway)
        load = load_average()
        reads = asyncio.run(read(system.base_url, tokens, args))
        after = process_figures(gateway)
    figures = {
        "rss_before_kib": before["rss_kib"],
        "peak_rss_kib": after["peak_rss_kib"],
        "peak_growth_kib": after["peak_rss_kib"] - before["rss_kib"],
        "load_average_before": load,
        **reads,
    }
    for name, value in figures.items():
        print(f"{name:>22}: {value}")
    print(f"results: {write_results('read_memory', {'args': vars(args), 'figures': figures})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--events", type=int, default=60, help="per client")
    parser.add_argument("--items", type=int, default=20_000, help="empty objects per payload")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
