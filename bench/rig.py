"""The benchmark rig: a running system, bulk clients, minted tokens, a lean HTTP load, figures."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.settings import Settings  # noqa: E402
from gateway.tokens import TokenService  # noqa: E402
from tests import harness  # noqa: E402

RESULTS = ROOT / "bench" / "results"
#: The system under measurement: mailboxes stay active, quiet logs, and no per-client rate
#: limit, backlog cap or quota (a benchmark's clients post as fast as they can by design).
SYSTEM_ENV = {
    "SERIATIM_IDLE_TIMEOUT": "3600",
    "SERIATIM_LOG_LEVEL": "WARNING",
    "SERIATIM_RATE_PER_SECOND": "1000000",
    "SERIATIM_RATE_BURST": "1000000",
    "SERIATIM_MAX_BACKLOG": "1000000000",
    "SERIATIM_MAX_STORED_EVENTS": str(2**53),
    "SERIATIM_MAX_STORED_BYTES": str(2**53),
}


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every figure."""
    return os.getloadavg()[0]


def bulk_clients(system: harness.System, count: int, prefix: str) -> list[str]:
    rows = system.sql(
        "INSERT INTO clients (name, secret_hash) SELECT $1 || g, 'bench:no-secret' "
        "FROM generate_series(1, $2) AS g RETURNING id::text",
        prefix,
        count,
    )
    return [row[0] for row in rows]


def tokens_for(
    service: TokenService, clients: Iterable[str], scopes: Sequence[str] = ("events:write",)
) -> dict[str, str]:
    """A pre-minted access token per client id."""
    return {cid: service.issue(uuid.UUID(cid), list(scopes))["access_token"] for cid in clients}


def minter(system: harness.System) -> TokenService:
    """Tokens signed with the system's own key, so thousands of clients need no token calls."""
    from joserfc import jwk

    (private,) = [row[0] for row in system.sql("SELECT private_jwk FROM signing_keys")]
    key = jwk.import_key(json.loads(private) if isinstance(private, str) else private)
    return TokenService(Settings(), [key])


class Connection:
    """A minimal HTTP/1.1 keep-alive client: httpx costs more CPU per request than the
    gateway does at 64 connections, which would make the load generator the bottleneck."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        parts = urlsplit(base_url)
        return cls(*await asyncio.open_connection(parts.hostname, parts.port))

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def post_events(
    base_url: str,
    tokens: dict[str, str],
    per_client: int,
    body: dict[str, Any],
    concurrency: int,
    batch: int = 1,
) -> list[float]:
    """Post `per_client` events for every client, clients interleaved; returns latencies (one
    per request). With `batch` > 1 each request is one client's POST /v1/events/batch of up
    to `batch` events."""
    latencies: list[float] = []
    chunks = [min(batch, per_client - done) for done in range(0, per_client, batch)]
    pending = [(cid, size) for size in chunks for cid in tokens]
    pending.reverse()
    single = json.dumps(body).encode()
    path = "/v1/events" if batch == 1 else "/v1/events/batch"
    expected = 202

    def payload(size: int) -> bytes:
        return single if batch == 1 else json.dumps({"events": [body] * size}).encode()

    async def worker() -> None:
        connection = await Connection.open(base_url)
        try:
            while pending:
                cid, size = pending.pop()
                started = time.perf_counter()
                status, answer = await connection.post(path, payload(size), tokens[cid])
                latencies.append(time.perf_counter() - started)
                if status != expected:
                    raise RuntimeError(f"{status}: {answer[:300]!r}")
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def open_loop(
    rate: float, count: int, start: Callable[[int, float], Awaitable[None]]
) -> float:
    """Start `start(n, due)` for n in range(count) at `rate` per second, each at its due time
    (perf_counter) whatever the earlier ones take; the seconds until all have finished."""
    tasks = []
    began = time.perf_counter()
    for n in range(count):
        due = began + n / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(n, due)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - began


async def paced_events(
    base_url: str, tokens: dict[str, str], rate: float, count: int, body: dict[str, Any]
) -> list[float]:
    """Open loop: `count` requests at `rate` per second, clients in turn, whatever the answers
    take; each latency runs from the request's scheduled time (no coordinated omission)."""
    payload = json.dumps(body).encode()
    now = time.monotonic()
    idle = [(await Connection.open(base_url), now) for _ in range(32)]
    cids = list(tokens)
    latencies: list[float] = []

    async def one(cid: str, due: float) -> None:
        connection = await pooled(idle, base_url)
        status, answer = await connection.post("/v1/events", payload, tokens[cid])
        latencies.append(time.perf_counter() - due)
        idle.append((connection, time.monotonic()))
        if status != 202:
            raise RuntimeError(f"{status}: {answer[:300]!r}")

    await open_loop(rate, count, lambda n, due: one(cids[n % len(cids)], due))
    for connection, _ in idle:
        connection.close()
    return latencies


#: The gateway closes a keep-alive connection idle for its head deadline (10 s); a pooled
#: connection idle longer than this is dropped rather than reused, as an HTTP client's pool does.
POOL_IDLE = 8.0


async def pooled(idle: list[tuple[Connection, float]], base_url: str) -> Connection:
    """The most recently used connection of `idle` that the gateway cannot have closed for
    idleness yet, or a new one."""
    while idle:
        connection, used = idle.pop()
        if time.monotonic() - used <= POOL_IDLE:
            return connection
        connection.close()
    return await Connection.open(base_url)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values) if values else float("nan"),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "p999": percentile(values, 0.999),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def machine_busy() -> float:
    """CPU seconds this machine's cores have spent busy so far, every process together
    (/proc/stat: user, nice, system, irq, softirq and steal time)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


#: Processes by their command name (/proc/<pid>/stat): PostgreSQL's, RabbitMQ's (Erlang's).
PARTS = {
    "postgres": "postgres",
    "beam.smp": "rabbitmq",
    "erl_child_setup": "rabbitmq",
    "inet_gethost": "rabbitmq",
    "epmd": "rabbitmq",
}


def cpu_by_part() -> dict[str, float]:
    """CPU seconds the machine's parts have spent so far: PostgreSQL, RabbitMQ, this process
    (the load generator), the other Python processes (the system under test, or the raw
    baseline's consumers and HTTP intake) and the rest. A process that has ended counts
    through its parent's reaped-children times (PostgreSQL's backends through the
    postmaster, this process's children through it), so the difference of two readings
    holds every process that ran between them."""
    tick = os.sysconf("SC_CLK_TCK")
    parts = dict.fromkeys(("postgres", "rabbitmq", "load generator", "python", "other"), 0.0)
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            head, tail = Path(entry.path, "stat").read_text().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended while the reading was taken
        command = head.split("(", 1)[1]
        fields = tail.split()
        own, reaped = (
            (int(fields[11]) + int(fields[12])) / tick,
            (int(fields[13]) + int(fields[14])) / tick,
        )
        if int(entry.name) == me:
            parts["load generator"] += own
            parts["python"] += reaped
            continue
        part = PARTS.get(command, "python" if command.startswith("python") else "other")
        parts[part] += own + reaped
    return parts


def parts_since(before: dict[str, float], per: int) -> dict[str, float]:
    """Milliseconds of CPU per one of `per` events, by part, since the reading `before`."""
    return {part: (now - before[part]) * 1000 / per for part, now in cpu_by_part().items()}


def process_figures(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    fields = {key: value.split()[0] for key, value in fields.items() if value.split()}
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return {
        "rss_kib": int(fields["VmRSS"]),
        "peak_rss_kib": int(fields["VmHWM"]),
        "threads": threads,
    }


def rabbitmqctl(*args: str, check: bool = True) -> str:
    """rabbitmqctl against the benchmarks' broker: the shared one, or bench/broker.py's."""
    node = os.environ.get("BENCH_RABBITMQ_NODE")
    env = {**os.environ, "HOME": os.environ.get("BENCH_RABBITMQ_HOME", os.environ["HOME"])}
    program = "rabbitmqctl"
    if node:  # the real script: Debian's wrapper switches to the rabbitmq user and its cookie
        program = str(Path(os.path.realpath(shutil.which("rabbitmq-server") or "")).parent)
        program += "/rabbitmqctl"
    command = [program, "-q", *(["-n", node] if node else []), *args]
    return subprocess.run(command, capture_output=True, text=True, check=check, env=env).stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def amqp_connections(name_fragment: str) -> int:
    out = rabbitmqctl("list_connections", "client_properties")
    return sum(1 for line in out.splitlines() if name_fragment in line)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str))
    return path
