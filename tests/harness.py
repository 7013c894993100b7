"""Test harness: real PostgreSQL databases, broker namespaces and running seriatim processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pika
import pytest

from actors.settings import Settings
from actors.store.migrate import migrate, schema_text
from seriatim.cli import _create_client
from tests import witness

PG_URL = os.environ.get(
    "SERIATIM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("SERIATIM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TEMPLATE = "seriatim_test_" + hashlib.sha256(schema_text().encode()).hexdigest()[:12]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def database_url(name: str, pg_url: str = PG_URL) -> str:
    return urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))


def require_services() -> None:
    """Skip when PostgreSQL or RabbitMQ is missing, but fail under CI."""
    missing = []
    for name, host, port in (
        ("PostgreSQL", _host(PG_URL), _port(PG_URL, 5432)),
        ("RabbitMQ", _host(AMQP_URL), _port(AMQP_URL, 5672)),
    ):
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError:
            missing.append(f"{name} at {host}:{port}")
    if missing:
        message = f"integration services unreachable: {', '.join(missing)}"
        if IN_CI:
            pytest.fail(message + " (CI=true: integration tests must not skip)")
        pytest.skip(message)


def _host(url: str) -> str:
    return urlsplit(url).hostname or "127.0.0.1"


def _port(url: str, default: int) -> int:
    return urlsplit(url).port or default


async def _admin(query: str, pg_url: str) -> None:
    connection = await asyncpg.connect(pg_url)
    try:
        await connection.execute(query)
    finally:
        await connection.close()


def build_template(pg_url: str = PG_URL) -> None:
    """The template database for this schema.sql, built once and shared by test sessions.

    Its name carries a hash of schema.sql, so a changed schema gets a new template; an
    advisory lock keeps concurrent sessions from building it twice.
    """

    async def build() -> None:
        connection = await asyncpg.connect(pg_url)
        try:
            await connection.execute("SELECT pg_advisory_lock(7215003)")
            exists = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", TEMPLATE
            )
            if not exists:
                await migrate(database_url(TEMPLATE, pg_url))
        finally:
            await connection.close()

    asyncio.run(build())


def create_database(pg_url: str = PG_URL) -> str:
    name = f"seriatim_t_{secrets.token_hex(5)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"', pg_url))
    return name


def drop_database(name: str, pg_url: str = PG_URL) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', pg_url))


def new_namespace() -> str:
    return f"t{secrets.token_hex(5)}"


def delete_namespace(
    namespace: str, database: str, pg_url: str = PG_URL, amqp_url: str = AMQP_URL
) -> None:
    """Delete the broker queues a test created: the supervisor's and every mailbox."""

    async def client_ids() -> list[str]:
        connection = await asyncpg.connect(database_url(database, pg_url))
        try:
            return [str(row["id"]) for row in await connection.fetch("SELECT id FROM clients")]
        finally:
            await connection.close()

    queues = [f"{namespace}.supervisor"]
    queues += [f"{namespace}.mailbox.{cid}" for cid in asyncio.run(client_ids())]
    # a cluster's comma-separated nodes: pika tries each in turn
    nodes = [pika.URLParameters(url.strip()) for url in amqp_url.split(",")]
    connection = pika.BlockingConnection(nodes)
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
    finally:
        connection.close()


def _run_sync(factory: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """`status` with an RFC 9457 problem+json body (never a 5xx); returns the body."""
    assert response.status_code < 500, response.text
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert problem["status"] == status
    return dict(problem)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class System:
    """A gateway and N workers as real processes, each with its own log file."""

    def __init__(
        self,
        tmp: Path,
        database: str,
        namespace: str,
        workers: int = 2,
        env: dict[str, str] | None = None,
        *,
        pg_url: str = PG_URL,
        amqp_url: str = AMQP_URL,
    ) -> None:
        self.tmp = tmp
        self.database = database
        self.namespace = namespace
        self.pg_url = pg_url
        self.amqp_url = amqp_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SERIATIM_DATABASE_URL": database_url(database, pg_url),
            "SERIATIM_AMQP_URL": amqp_url,
            "SERIATIM_NAMESPACE": namespace,
            "SERIATIM_HTTP_PORT": str(self.port),
            "SERIATIM_BACKOFF_MIN": "0.05",
            "SERIATIM_BACKOFF_MAX": "0.5",
            "PYTHONUNBUFFERED": "1",
            **witness.environment(tmp / "ledger.jsonl"),
            **(env or {}),
        }
        #: What the witnessed handlers of this system ran (tests/witness.py).
        self.ledger = Path(self.env[witness.LEDGER_ENV])
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[Any] = []
        self._workers = workers

    def start(self) -> System:
        self.spawn("gateway", "gateway")
        for n in range(1, self._workers + 1):
            self.spawn(f"worker-{n}", "worker")
        wait_for(self.ready, 30, "the gateway to be ready")
        wait_for(lambda: self.live_workers() >= self._workers, 30, "workers to register")
        return self

    def spawn(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `seriatim *args` as process `name`; `env` adds to or overrides the system's."""
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._log_files.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "seriatim", *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        return process

    def ready(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.logs()}")
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def settings_queue(self, client_id: str) -> str:
        """The name of a client's mailbox queue in this system's namespace."""
        return f"{self.namespace}.mailbox.{client_id}"

    def live_workers(self) -> int:
        return int(
            self.sql("SELECT count(*) FROM workers WHERE last_seen > now() - interval '5 seconds'")[
                0
            ][0]
        )

    def sql(self, query: str, *args: Any) -> list[Any]:
        async def run() -> list[Any]:
            connection = await asyncpg.connect(database_url(self.database, self.pg_url))
            try:
                return list(await connection.fetch(query, *args))
            finally:
                await connection.close()

        return _run_sync(run)

    def execute(self, script: str) -> None:
        """Run a SQL script (several statements, no parameters) on the test database."""

        async def run() -> None:
            connection = await asyncpg.connect(database_url(self.database, self.pg_url))
            try:
                await connection.execute(script)
            finally:
                await connection.close()

        _run_sync(run)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.tmp.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name} ---\n{text[-6000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._log_files:
            log.close()

    # --- clients and tokens ------------------------------------------------------------

    def create_client(self, name: str = "test", admin: bool = False) -> dict[str, Any]:
        """A new client, made by what `seriatim client create` runs (audited as the command
        line), in this process: a Python start-up per client cost a second or more on a busy
        machine, ~100 times a suite. test_cli_operator runs the command itself."""
        settings = Settings.from_env(self.env)
        return dict(_run_sync(lambda: _create_client(settings, name, admin)))

    def token(self, client: dict[str, Any], scope: str | None = None) -> str:
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        response = httpx.post(
            f"{self.base_url}/v1/token",
            data=data,
            auth=(client["client_id"], client["client_secret"]),
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def post_event(self, token: str, type_: str, payload: Any) -> dict[str, Any]:
        """POST one event as the token's client; its 202 body (id, client_id, seq, ...)."""
        response = httpx.post(
            f"{self.base_url}/v1/events",
            json={"type": type_, "payload": payload},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        return dict(response.json())

    def admin_client(self, name: str = "tenant") -> dict[str, Any]:
        """A new ordinary client, created through the admin API (one admin per system)."""
        if not hasattr(self, "_admin_token"):
            self._admin_token = self.token(self.create_client("ops", admin=True))
        response = httpx.post(
            f"{self.base_url}/v1/admin/clients",
            json={"name": name},
            headers={"Authorization": f"Bearer {self._admin_token}"},
            timeout=10,
        )
        response.raise_for_status()
        return dict(response.json())


@contextlib.contextmanager
def running_system(
    tmp: Path,
    workers: int = 2,
    env: dict[str, str] | None = None,
    *,
    pg_url: str = PG_URL,
    amqp_url: str = AMQP_URL,
) -> Iterator[System]:
    """A started System on its own database and namespace of these services."""
    database = create_database(pg_url)
    namespace = new_namespace()
    system = System(tmp, database, namespace, workers, env, pg_url=pg_url, amqp_url=amqp_url)
    try:
        yield system.start()
    finally:
        system.stop()
        with contextlib.suppress(Exception):
            delete_namespace(namespace, database, pg_url, amqp_url)
        drop_database(database, pg_url)
