"""A calm client's latency while another client floods the gateway: alone, against a flood
that is rate limited (429s), and against the same flood unlimited.

    .venv/bin/python bench/isolation.py [--events 300] [--flooders 8]

One gateway, one worker, a fresh database; the calm client posts `demo.echo` events one at a
time on one connection, the runaway client on `--flooders` connections as fast as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.rig import Connection, summary  # noqa: E402
from tests import harness  # noqa: E402

BODY = json.dumps({"type": "demo.echo", "payload": {"n": 1}}).encode()


async def calm_latencies(base_url: str, token: str, events: int) -> list[float]:
    connection = await Connection.open(base_url)
    latencies = []
    try:
        for _ in range(events):
            started = time.perf_counter()
            status, answer = await connection.post("/v1/events", BODY, token)
            latencies.append(time.perf_counter() - started)
            if status != 202:
                raise RuntimeError(f"calm client got {status}: {answer[:200]!r}")
    finally:
        connection.close()
    return latencies


async def flood(
    base_url: str, token: str, stop: asyncio.Event, statuses: Counter[int], pause: float
) -> None:
    connection = await Connection.open(base_url)
    try:
        while not stop.is_set():
            status, _ = await connection.post("/v1/events", BODY, token)
            statuses[status] += 1
            if pause:
                await asyncio.sleep(pause)
    finally:
        connection.close()


async def phase(
    base_url: str, calm: str, runaway: str | None, events: int, flooders: int, offered: float
) -> tuple[list[float], Counter[int], float]:
    stop, statuses = asyncio.Event(), Counter[int]()
    pause = flooders / offered if offered else 0.0
    floods = [
        asyncio.create_task(flood(base_url, runaway, stop, statuses, pause))
        for _ in range(flooders if runaway else 0)
    ]
    started = time.perf_counter()
    latencies = await calm_latencies(base_url, calm, events)
    elapsed = time.perf_counter() - started
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.gather(*floods)
    return latencies, statuses, elapsed


def run(events: int, flooders: int) -> None:
    harness.build_template()
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=1) as system,
    ):
        admin = system.token(system.create_client("ops", admin=True))
        calm, runaway = system.admin_client("calm"), system.admin_client("runaway")
        calm_token, runaway_token = system.token(calm), system.token(runaway)

        def limit(rate: dict[str, float] | None) -> None:
            httpx.patch(
                f"{system.base_url}/v1/admin/clients/{runaway['client_id']}",
                json={"rate_limit": rate},
                headers={"Authorization": f"Bearer {admin}"},
            ).raise_for_status()

        rows = []
        ten = {"per_second": 10, "burst": 10}
        for label, rate, flooding, offered in (
            ("alone", None, False, 0.0),
            ("runaway at ~200/s limited to 10/s", ten, True, 200.0),
            ("runaway flat out limited to 10/s", ten, True, 0.0),
            ("runaway flat out unlimited", None, True, 0.0),
        ):
            limit(rate)
            latencies, statuses, elapsed = asyncio.run(
                phase(
                    system.base_url,
                    calm_token,
                    runaway_token if flooding else None,
                    events,
                    flooders,
                    offered,
                )
            )
            rows.append((label, summary(latencies), statuses, elapsed))
    print(f"calm client: {events} sequential events; runaway: {flooders} connections")
    print(f"{'':36} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}   runaway answers")
    for label, figures, statuses, elapsed in rows:
        answers = ", ".join(f"{n / elapsed:.0f}/s {s}" for s, n in sorted(statuses.items()))
        print(
            f"{label:36} {figures['p50'] * 1000:8.1f} {figures['p95'] * 1000:8.1f} "
            f"{figures['p99'] * 1000:8.1f}   {answers or '-'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--flooders", type=int, default=8)
    args = parser.parse_args()
    run(args.events, args.flooders)
