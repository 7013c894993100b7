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

# What the supervisor does to a mailbox that escalated (suspend_mailbox in queries.sql).
SUSPEND = """
UPDATE clients SET state = 'suspended', host = NULL, suspended_reason = 'test', suspended_at = now()
WHERE id = $1::uuid
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


def statuses(system: System, client_id: str) -> list[str]:
    rows = system.sql(
        "SELECT status FROM events WHERE client_id = $1::uuid ORDER BY seq", client_id
    )
    return [row["status"] for row in rows]


def test_a_client_the_broker_refuses_does_not_hold_up_the_others_relayed_events(
    system: System, broker: RabbitNode
) -> None:
    """On main (35eeb40) this failed: the relay stopped its pass at A's first refused
    publish (`PublishFailed`, nacked) every sweep, so B's event, behind A's in the journal,
    was never relayed (not within 30 s, on classic and on quorum queues)."""
    # Given client B with an active mailbox waiting on its empty queue
    b = system.admin_client("b")
    token = system.token(b)
    system.post_event(token, "demo.echo", {})
    wait_for(lambda: statuses(system, b["client_id"]) == ["succeeded"], 60, "B's first event")

    # And client A, suspended, whose queue is full for the broker (an operator's length cap
    # with reject-publish: a classic queue refuses at once, a quorum queue once it holds one)
    a = system.admin_client("a")
    system.sql(SUSPEND, a["client_id"])
    policy = f"relay-test-{a['client_id']}"
    pattern = "^" + system.settings_queue(a["client_id"]).replace(".", r"\.") + "$"
    broker.ctl("set_policy", "--apply-to", "queues", policy, pattern, REJECT_EVERY_PUBLISH)
    try:
        # When A's events and then one of B's are committed but never published, so that
        # only the relay can bring B's event to its waiting mailbox
        for _ in range(2):
            system.sql(COMMIT_WITHOUT_PUBLISH, a["client_id"], "demo.echo", "{}")
        system.sql(COMMIT_WITHOUT_PUBLISH, b["client_id"], "demo.echo", "{}")

        # Then B's event is relayed and processed all the same
        wait_for(
            lambda: statuses(system, b["client_id"]) == ["succeeded"] * 2,
            30,
            "B's relayed event to succeed",
        )
    finally:
        broker.ctl("clear_policy", policy)
    # And the relay said which client it skipped, and why; A's events wait, unfinished
    assert f"relay skipped client {a['client_id']}" in system.logs()
    assert "nacked" in system.logs()
    assert statuses(system, a["client_id"]) == ["queued"] * 2


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
            assert len(await relay.run_once()) == 1
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
            assert relayed == set()
            assert skipped_clients() - skipped == 2
            for client in (a, b):
                assert any(
                    str(client) in r.getMessage() and "confirm" in r.getMessage()
                    for r in caplog.records
                ), caplog.text
            # And once the alarm is over, the next pass relays them
            assert len(await relay.run_once()) == 2  # clients
    finally:
        await pool.close()
        await journal.close()
