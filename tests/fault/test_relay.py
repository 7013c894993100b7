"""The outbox relay when the broker will not take one client's events, or confirms nothing.

Both run on the private RabbitMQ node (tests/fault/nodes.py): the first puts a queue policy
on one client's queue, the second raises a memory alarm, neither of which a test may do to
the machine's shared broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from actors.broker import BrokerLink
from actors.settings import Settings
from actors.store import Journal
from supervision.relay import Relay
from tests import harness
from tests.fault.nodes import RabbitNode
from tests.harness import System, running_system, wait_for

pytestmark = pytest.mark.integration

# What a gateway that died between its commit and its publish leaves behind.
COMMIT_WITHOUT_PUBLISH = """
WITH counter AS (UPDATE clients SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq)
INSERT INTO events (client_id, seq, type, payload)
SELECT $1, last_seq, $2, $3::jsonb FROM counter
RETURNING id, seq
"""

#: Every publish to the queue is refused (basic.nack): what an operator's length cap does to
#: a full queue.
REJECT_EVERY_PUBLISH = '{"max-length": 0, "overflow": "reject-publish"}'


@pytest.fixture
def system(services: None, broker: RabbitNode, tmp_path: Path) -> Iterator[System]:
    """A gateway and two workers on the shared PostgreSQL and the private broker, with a
    relay that republishes after half a second."""
    env = {"SERIATIM_RELAY_AFTER": "0.5"}
    with running_system(tmp_path, env=env, amqp_url=broker.url) as running:
        try:
            yield running
        finally:
            broker.ensure_running()


def rows(system: System, client_id: str) -> list[asyncpg.Record]:
    return system.sql(
        "SELECT seq, status, finished_at FROM events WHERE client_id = $1::uuid ORDER BY seq",
        client_id,
    )


def test_a_client_the_broker_refuses_does_not_hold_up_the_others_relayed_events(
    system: System, broker: RabbitNode
) -> None:
    """On main (35eeb40) this failed: the relay stopped its pass at A's first `PublishFailed`
    (nacked) every sweep, so B's event was relayed only once A's events had finished from the
    journal, 15 s later (B2 finished 0.01 s after A1). Fixed: B2 finished 15.01 s before A1.
    """
    # Given client B with an active mailbox waiting on its empty queue
    b = system.admin_client("b")
    token = system.token(b)
    posted = httpx.post(
        f"{system.base_url}/v1/events",
        json={"type": "demo.echo", "payload": {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert posted.status_code == 202
    wait_for(lambda: [r["status"] for r in rows(system, b["client_id"])] == ["succeeded"], 60, "B1")

    # And client A, whose queue the broker refuses every publish to (a length-cap policy)
    a = system.admin_client("a")
    broker.ctl(
        "set_policy",
        "--apply-to",
        "queues",
        f"relay-test-{a['client_id']}",
        f"^{system.settings_queue(a['client_id'])}$".replace(".", r"\."),
        REJECT_EVERY_PUBLISH,
    )
    try:
        # When A's events (a 15 s one first) and then one of B's are committed but never
        # published, so that only the relay can bring B's event to its waiting mailbox
        system.sql(COMMIT_WITHOUT_PUBLISH, a["client_id"], "demo.sleep", '{"ms": 15000}')
        system.sql(COMMIT_WITHOUT_PUBLISH, a["client_id"], "demo.echo", "{}")
        system.sql(COMMIT_WITHOUT_PUBLISH, b["client_id"], "demo.echo", "{}")

        # Then B's event is relayed and processed while A's first event is still running
        wait_for(
            lambda: [r["status"] for r in rows(system, b["client_id"])] == ["succeeded"] * 2,
            60,
            "B's relayed event to succeed",
        )
        wait_for(
            lambda: [r["status"] for r in rows(system, a["client_id"])] == ["succeeded"] * 2,
            60,
            "A's events to succeed (from the journal)",
        )
    finally:
        broker.ctl("clear_policy", f"relay-test-{a['client_id']}")
    a1 = rows(system, a["client_id"])[0]
    b2 = rows(system, b["client_id"])[1]
    print(
        f"\n[relay] B2 finished {(a1['finished_at'] - b2['finished_at']).total_seconds():.2f} s "
        "before A1"
    )
    assert b2["finished_at"] < a1["finished_at"], "B's event waited for A's"
    # And the relay said which client it skipped, and why
    assert f"client {a['client_id']}" in system.logs()
    assert "nacked" in system.logs()


@contextlib.asynccontextmanager
async def linked(settings: Settings) -> AsyncIterator[BrokerLink]:
    """A BrokerLink connected to `settings.amqp_url`, stopped on exit."""
    link = BrokerLink(settings, "test-relay")
    stopping = asyncio.Event()
    task = asyncio.ensure_future(link.run(stopping))
    try:
        await asyncio.wait_for(link.connected.wait(), 30)
        yield link
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def memory_alarm(broker: RabbitNode) -> AsyncIterator[None]:
    """The private node in a memory alarm: it blocks every publishing connection."""
    await asyncio.to_thread(broker.ctl, "set_vm_memory_high_watermark", "0")
    try:
        await asyncio.to_thread(
            wait_for,
            lambda: "memory" in broker.ctl("eval", "rabbit_alarm:get_alarms()."),
            30,
            "the memory alarm",
        )
        yield
    finally:
        await asyncio.to_thread(broker.ctl, "set_vm_memory_high_watermark", "0.4")


def skipped_clients() -> float:
    return REGISTRY.get_sample_value("seriatim_relay_skipped_clients_total") or 0.0


async def unpublished(pool: asyncpg.Pool, journal: Journal, name: str) -> uuid.UUID:
    """A new client with one event committed but never published."""
    client = await journal.create_client(name, "not-a-hash", False)
    await pool.execute(COMMIT_WITHOUT_PUBLISH, client, "demo.echo", json.dumps({"of": name}))
    return client


async def test_a_withheld_confirm_ends_the_relays_pass_with_a_timeout_not_a_hang(
    database: str, broker: RabbitNode, caplog: pytest.LogCaptureFixture
) -> None:
    """On main (35eeb40) this failed: the pass did not end within the test's 45 s (a confirm
    had no deadline; only pika's 60 s blocked-connection timeout would have ended it). Fixed:
    the pass ends after 10.01 s, both clients skipped."""
    settings = Settings(amqp_url=broker.url, namespace=harness.new_namespace())
    journal = await Journal.connect(database, min_size=1, max_size=2)
    pool = await asyncpg.connect(database)
    try:
        async with linked(settings) as link:
            relay = Relay(journal, link, after=0)
            # Given a relay whose channel is open and working
            await unpublished(pool, journal, "warm-up")
            assert await relay.run_once() == 1
            # When the broker stops confirming (a memory alarm blocks the connection) while
            # two clients have events to relay
            a = await unpublished(pool, journal, "a")
            b = await unpublished(pool, journal, "b")
            skipped = skipped_clients()
            async with memory_alarm(broker):
                started = time.monotonic()
                with caplog.at_level(logging.WARNING, "supervision.relay"):
                    async with asyncio.timeout(45):
                        relayed = await relay.run_once()
                took = time.monotonic() - started
            # Then the pass ends with both clients skipped for a confirm timeout
            print(f"\n[relay] pass with confirms withheld ended after {took:.2f} s")
            assert relayed == 0
            assert skipped_clients() - skipped == 2
            for client in (a, b):
                assert any(
                    str(client) in r.getMessage() and "confirm" in r.getMessage()
                    for r in caplog.records
                ), caplog.text
            # And once the alarm is over, the next pass relays them
            assert await relay.run_once() == 2
    finally:
        await pool.close()
        await journal.close()
