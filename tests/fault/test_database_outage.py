"""Database outages under steady load: PostgreSQL restarted fast, and stopped immediately.

The system's journal lives on a private PostgreSQL cluster (tests/fault/nodes.py), never on
the machine's shared one. While the journal is down the gateway refuses with 503 and
Retry-After (never a 202 without a commit), /readyz says what is missing, and every process
reconnects by itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from actors.outages import UNAVAILABLE
from actors.settings import Settings
from actors.store import Journal
from actors.store.lease import Lease
from supervision.supervisor import Supervisor
from tests import harness
from tests.fault.load import Load
from tests.fault.nodes import PostgresCluster
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.recovery import (
    Readiness,
    dead_processes,
    eventually,
    now,
    recovery,
    terminal_since,
    under_load,
)
from tests.harness import System, running_system, wait_for

pytestmark = pytest.mark.integration

HOLD = 3.0  # seconds the database stays down in the immediate-stop scenario
ANSWERS_WHILE_DOWN = {200, 202, 409, 503}  # replays, accepts, a key in use, the refusal


@pytest.fixture
def system(services: None, postgres: PostgresCluster, tmp_path: Path) -> Iterator[System]:
    """A gateway and two workers on the private PostgreSQL and the shared broker."""
    with running_system(tmp_path, pg_url=postgres.url) as running:
        try:
            yield running
        finally:
            postgres.ensure_running()  # the teardown drops the database


def post(system: System, token: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{system.base_url}/v1/events",
        json={"type": "witnessed.sleep", "payload": {"ms": 5}},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        timeout=10,
    )


async def recovered(system: System, readiness: Readiness, back: datetime.datetime) -> None:
    """/readyz answers 200 again and events accepted since `back` are processed."""
    await eventually(readiness.ready_again, 30, "/readyz to answer 200 again")
    await eventually(lambda: terminal_since(system, back) >= 20, 60, "new events to finish")


def settle(system: System, name: str, load: Load, back: datetime.datetime) -> None:
    """Every 202'd event is in the journal and terminal, in order, once; print the figures;
    every process still runs."""
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    report = check(system, load.answered, may_fail=False)
    print(f"\n[{name}] {recovery(system, back)}; HTTP statuses {load.statuses}; {report}")
    assert set(load.statuses) <= ANSWERS_WHILE_DOWN, load.statuses
    assert load.statuses.get(503, 0) > 0, "no request met the outage"
    assert load.missing_retry_after == 0, "a 5xx came without Retry-After"
    assert report.ok, report


@contextlib.contextmanager
def every_process_survives(system: System) -> Iterator[None]:
    """No process of the system exits during the scenario."""
    yield
    assert not dead_processes(system), f"processes died: {dead_processes(system)}"


async def test_a_fast_database_restart_refuses_with_503_and_loses_nothing(
    system: System, postgres: PostgresCluster
) -> None:
    # Given the outcome audit, steady load from several clients, and events flowing
    install_audit(system)
    started = now()
    with every_process_survives(system):
        async with under_load(system) as (load, readiness):
            await eventually(lambda: terminal_since(system, started) >= 20, 30, "load to flow")

            # When PostgreSQL is restarted in fast mode (sessions terminated, back at once)
            await asyncio.to_thread(postgres.restart_fast)
            back = now()

            # Then /readyz named the journal while it was down and everything reconnects
            await recovered(system, readiness, back)
            assert readiness.named("postgresql"), readiness.answers

        # And every request that met the outage got 503, none was accepted uncommitted
        settle(system, "restart -m fast", load, back)


async def test_an_immediate_database_stop_refuses_with_503_and_loses_nothing(
    system: System, postgres: PostgresCluster
) -> None:
    # Given the outcome audit, steady load from several clients, events flowing, and a
    # client of our own with a token (the token endpoint needs the journal)
    install_audit(system)
    prober = system.admin_client("probe")
    probe = system.token(prober)
    key = uuid.uuid4().hex
    started = now()
    with every_process_survives(system):
        async with under_load(system) as (load, readiness):
            await eventually(lambda: terminal_since(system, started) >= 20, 30, "load to flow")

            # When PostgreSQL stops in immediate mode (as if it crashed) for a few seconds
            await asyncio.to_thread(postgres.stop_immediate)
            await eventually(lambda: readiness.named("postgresql"), 15, "/readyz to say so")
            refused = await asyncio.to_thread(post, system, probe, key)
            await asyncio.sleep(HOLD)  # the outage itself, not a wait for a condition
            await asyncio.to_thread(postgres.start)
            back = now()

            # Then an event posted meanwhile was refused with 503 and Retry-After
            assert refused.status_code == 503, refused.text
            assert refused.headers.get("retry-after"), refused.headers
            assert refused.headers["content-type"] == "application/problem+json"

            # And everything reconnects by itself: the same request is now accepted
            await recovered(system, readiness, back)
            retried = await asyncio.to_thread(post, system, probe, key)
            assert retried.status_code == 202, retried.text
            answer = retried.json()
            load.answered[prober["client_id"]] = [(answer["seq"], answer["id"])]

        # And every request that met the outage got 503, none was accepted uncommitted
        settle(system, "stop -m immediate", load, back)


def terminate_blocking(url: str, pid: int) -> None:
    """Terminate a server session and wait until its backend has exited, blocking the
    calling thread (and so its event loop)."""

    async def terminate() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("SELECT pg_terminate_backend($1, 10000)", pid)
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, terminate()).result()


async def test_a_query_racing_the_end_of_a_terminated_session_counts_as_an_outage(
    postgres: PostgresCluster,
) -> None:
    # Given a journal whose pool holds one idle session
    journal = await Journal.connect(postgres.url, min_size=1, max_size=1)
    try:
        async with journal.pool.acquire() as connection:
            pid = connection.get_server_pid()

        # When the server terminates that session, as a restart does, while this event loop
        # is busy (its FATAL message and the end of the stream both wait in the socket)
        terminate_blocking(postgres.url, pid)
        # and a query starts once the loop has read the FATAL message but not yet closed the
        # connection (two iterations of the loop: it reads the message, then the end)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

        # Then the error is one every process treats as "the journal is unavailable"
        with pytest.raises(UNAVAILABLE):
            await journal.ping()
    finally:
        await journal.close()


class _NoBroker:
    """The supervisor's link, never used here: only its liveness judgement is."""

    publisher = None


async def test_a_backends_crash_ends_the_leases_and_the_supervisor_waits_for_their_renewal(
    postgres: PostgresCluster,
) -> None:
    """On main (9394d3b) the supervisor took the worker for dead here: the server keeps its
    start time through a crash cycle, so live_worker_ids trusts the locks, and the worker's
    lock is gone until its next renewal, while its handler may still run (an I3 overlap)."""
    await asyncio.to_thread(harness.build_template, postgres.url)
    name = await asyncio.to_thread(harness.create_database, postgres.url)
    url = harness.database_url(name, postgres.url)
    journal = await Journal.connect(url, min_size=2, max_size=2)
    lease = Lease(url, "w1", "host", 1)
    supervisor = Supervisor(Settings(), journal, _NoBroker(), "w0")  # type: ignore[arg-type]
    try:
        # Given a worker whose lease holds its lock, and a supervisor that trusts locks
        await lease.renew()
        assert supervisor._by_lock()
        assert set(await journal.live_workers(60.0, True)) == {"w1"}

        # When a backend crashes (SIGKILL): the postmaster ends every session, the lease's
        # and the supervisor's too, and reinitializes without restarting itself
        before = journal.session_lost_at
        victim = await asyncpg.connect(url)
        os.kill(await victim.fetchval("SELECT pg_backend_pid()"), signal.SIGKILL)
        victim.terminate()
        await eventually(lambda: journal.session_lost_at > before, 30, "a session to end")
        await eventually(lambda: asyncio.run(answers(url)), 30, "PostgreSQL to answer again")

        # Then the lock alone would say the worker is dead (same server, lock gone) ...
        for _ in range(3):  # a pooled session may not know yet that it ended
            with contextlib.suppress(*UNAVAILABLE):
                await journal.ping()
                break
        assert set(await journal.live_workers(60.0, True)) == set()
        # ... but the supervisor saw its own sessions end and judges by heartbeats for now
        assert not supervisor._by_lock()
        assert set(await journal.live_workers(60.0, supervisor._by_lock())) == {"w1"}
    finally:
        await lease.close()
        await journal.close()


async def answers(url: str) -> bool:
    with contextlib.suppress(*UNAVAILABLE):
        connection = await asyncpg.connect(url)
        await connection.close()
        return True
    return False
