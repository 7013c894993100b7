"""Tenants' `POST /v1/events` latency and success rate without, then with, a flood of work
before authentication: held unauthenticated heads plus wrong-secret guesses, in the same run.

    .venv/bin/python bench/preauth.py [--seconds 20] [--rate 100] [--heads 530] [--guessers 8]

One gateway (default settings), one worker, a fresh database. The tenants post `demo.echo`
events in an open loop at `--rate` per second (latency from each request's scheduled time).
The flood: `--heads` connections that each send a `POST /v1/token` or `POST /v1/hooks/<id>`
head announcing a body they never send, and open again whenever the gateway answers; and
`--guessers` connections that post wrong client secrets as fast as they are answered, from
four local addresses. The flood may cost the gateway CPU; it must not cost tenants requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.rig import (  # noqa: E402
    SYSTEM_ENV,
    Connection,
    cpu_seconds,
    load_average,
    open_loop,
    summary,
    write_results,
)
from tests import harness  # noqa: E402

BODY = json.dumps({"type": "demo.echo", "payload": {"n": 1}}).encode()
GUESS_PEERS = [f"127.0.2.{n}" for n in range(1, 5)]
# The gateway closes a keep-alive connection idle for its head deadline (10 s): a tenant's pooled
# connection idle longer is dropped rather than reused, as an HTTP client's pool does.
POOL_IDLE = 8.0
REOPEN_AFTER = 0.2  # seconds a held head waits, once answered, before it is sent again


async def tenants(base_url: str, tokens: list[str], rate: float, seconds: float) -> dict:
    """Open loop at `rate`: latencies of every request and the count of each status."""
    now = time.monotonic()
    idle = [(await Connection.open(base_url), now) for _ in range(32)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def one(n: int, due: float) -> None:
        connection = None
        while idle and connection is None:
            connection, used = idle.pop()
            if time.monotonic() - used > POOL_IDLE:  # the gateway may have closed it by now
                connection.close()
                connection = None
        if connection is None:
            connection = await Connection.open(base_url)
        try:
            status, _ = await connection.post("/v1/events", BODY, tokens[n % len(tokens)])
        except (OSError, asyncio.IncompleteReadError):
            status = 0
            connection.close()
        else:
            idle.append((connection, time.monotonic()))
        latencies.append(time.perf_counter() - due)
        statuses[status] += 1

    await open_loop(rate, int(rate * seconds), one)
    for connection, _ in idle:
        connection.close()
    return {"latency": summary(latencies), "statuses": statuses}


def _held_head(port: int, n: int, hook: str) -> bytes:
    if n % 4 == 3:  # a quarter on the webhook endpoint, the rest on the token endpoint
        path, kind, length = hook, "application/json", 100_000
        extra = (
            f"webhook-id: msg_{n}\r\nwebhook-timestamp: {int(time.time())}\r\n"
            "webhook-signature: v1,AAAA\r\n"
        )
    else:
        path, kind, length, extra = "/v1/token", "application/x-www-form-urlencoded", 8192, ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


async def hold(port: int, n: int, hook: str, stop: asyncio.Event, answers: Counter[str]) -> None:
    """Keep one head held: send it, wait for the gateway's answer, send it again."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            answers["connect-error"] += 1
            await asyncio.sleep(REOPEN_AFTER)
            continue
        try:
            writer.write(_held_head(port, n, hook))
            line = await _until(stop, reader.readline())
            answers[line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "closed"] += 1
        except (OSError, asyncio.IncompleteReadError):
            answers["reset"] += 1
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(REOPEN_AFTER)


async def _until(stop: asyncio.Event, read: object) -> bytes:
    reading = asyncio.ensure_future(read)  # type: ignore[arg-type]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not reading.done():
        reading.cancel()
        raise asyncio.CancelledError
    return reading.result()


async def guess(
    base_url: str, peer: str, targets: list[str], stop: asyncio.Event, answers: Counter[str]
) -> None:
    """Post wrong secrets, for the tenants' ids and random ones, as fast as answered."""
    transport = httpx.AsyncHTTPTransport(local_address=peer)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60) as client:
        n = 0
        while not stop.is_set():
            target = targets[n % len(targets)] if n % 2 else str(uuid.uuid4())
            n += 1
            try:
                response = await client.post(
                    "/v1/token",
                    data={"grant_type": "client_credentials"},
                    auth=(target, "wrong-secret"),
                )
                answers[str(response.status_code)] += 1
            except httpx.HTTPError:
                answers["error"] += 1


async def flooded(args: argparse.Namespace, system: harness.System, tokens: list[str]) -> dict:
    stop, held, guessed = asyncio.Event(), Counter[str](), Counter[str]()
    hook = f"/v1/hooks/{system.admin_client('hooked')['client_id']}"
    targets = [str(uuid.uuid4())]
    flood = [hold(system.port, n, hook, stop, held) for n in range(args.heads)]
    flood += [
        guess(system.base_url, GUESS_PEERS[n % len(GUESS_PEERS)], targets, stop, guessed)
        for n in range(args.guessers)
    ]
    tasks = [asyncio.create_task(task) for task in flood]
    await asyncio.sleep(args.warmup)  # the heads are in, the guesses are running
    figures = await tenants(system.base_url, tokens, args.rate, args.seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {**figures, "held_head_answers": held, "guess_answers": guessed}


def run(args: argparse.Namespace) -> None:
    harness.build_template()
    with (
        tempfile.TemporaryDirectory() as tmp,
        harness.running_system(Path(tmp), workers=1, env=SYSTEM_ENV) as system,
    ):
        tokens = [system.token(system.admin_client(f"tenant-{n}")) for n in range(args.tenants)]
        gateway = system.processes["gateway"].pid
        phases = {}
        for label, flood in (("without flood", False), ("with flood", True)):
            cpu, load = cpu_seconds(gateway), load_average()
            if flood:
                figures = asyncio.run(flooded(args, system, tokens))
            else:
                figures = asyncio.run(tenants(system.base_url, tokens, args.rate, args.seconds))
            phases[label] = {
                **figures,
                "gateway_cpu_s": cpu_seconds(gateway) - cpu,
                "load_before": load,
            }
    report(args, phases)


def report(args: argparse.Namespace, phases: dict[str, dict]) -> None:
    print(
        f"tenants: {args.tenants} posting {args.rate:g} events/s for {args.seconds:g} s; "
        f"flood: {args.heads} held heads, {args.guessers} guessers from {len(GUESS_PEERS)} peers"
    )
    print(f"{'':15} {'p50 ms':>8} {'p99 ms':>8} {'success':>9} {'gw CPU s':>9}  statuses")
    for label, phase in phases.items():
        statuses, latency = phase["statuses"], phase["latency"]
        success = statuses[202] / max(1, sum(statuses.values()))
        print(
            f"{label:15} {latency['p50'] * 1000:8.1f} {latency['p99'] * 1000:8.1f} "
            f"{success:9.2%} {phase['gateway_cpu_s']:9.1f}  {dict(sorted(statuses.items()))}"
        )
    flooded_phase = phases["with flood"]
    print(f"held heads' answers: {dict(flooded_phase['held_head_answers'])}")
    print(f"wrong-secret guesses' answers: {dict(flooded_phase['guess_answers'])}")
    print(f"results: {write_results('preauth', {'args': vars(args), 'phases': phases})}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0, help="tenants' events per second")
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--heads", type=int, default=530)
    parser.add_argument("--guessers", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of flood first")
    run(parser.parse_args())
