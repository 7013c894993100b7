"""The start-up durability check against a real streaming standby.

A failover to an asynchronous standby can lose commits the primary had confirmed, and with
them events that got a 202 (and their seqs, which are then given again). Two private
clusters (tests/fault/nodes.py): a primary and a standby made from it with
`pg_basebackup -R`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import asyncpg
import pytest
from prometheus_client import REGISTRY

from actors.store import Journal
from tests.fault import nodes
from tests.harness import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[nodes.PostgresCluster, nodes.PostgresCluster]]:
    """A private primary with a private streaming standby, both dropped afterwards."""
    with (
        nodes.private_postgres("primary") as primary,
        nodes.private_standby(primary, "standby") as standby,
    ):
        yield primary, standby


async def replication(primary: nodes.PostgresCluster) -> list[tuple[str, str]]:
    """The primary's (state, sync_state) of each standby."""
    connection = await asyncpg.connect(primary.url)
    try:
        rows = await connection.fetch("SELECT state, sync_state FROM pg_stat_replication")
        return [(row["state"], row["sync_state"]) for row in rows]
    finally:
        await connection.close()


async def until(primary: nodes.PostgresCluster, wanted: tuple[str, str]) -> None:
    """Wait until the primary has exactly one standby, in this (state, sync_state)."""
    await asyncio.to_thread(
        wait_for,
        lambda: asyncio.run(replication(primary)) == [wanted],
        30,
        f"the standby to be {wanted}",
    )


async def set_synchronous_standbys(primary: nodes.PostgresCluster, names: str) -> None:
    connection = await asyncpg.connect(primary.url)
    try:
        await connection.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()


async def check(url: str, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Run the start-up check; the log records of WARNING and above it made."""
    caplog.clear()
    journal = await Journal.connect(url, min_size=1, max_size=1)
    try:
        with caplog.at_level(logging.WARNING):
            await journal.check_durability()
    finally:
        await journal.close()
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def async_standbys() -> float | None:
    return REGISTRY.get_sample_value("seriatim_journal_async_standbys")


async def test_an_asynchronous_standby_is_reported_loudly_and_a_synchronous_one_passes(
    replicated: tuple[nodes.PostgresCluster, nodes.PostgresCluster],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On main (35eeb40) this failed: the check passed silently with an asynchronous standby
    streaming (no log line, no gauge)."""
    primary, _ = replicated
    # Given a standby streaming asynchronously (synchronous_standby_names is empty)
    await until(primary, ("streaming", "async"))

    # When the start-up check runs, then it says at ERROR level what a failover can lose
    (record,) = await check(primary.url, caplog)
    print(f"\n[standby] async: {record.levelname}: {record.getMessage()}")
    assert record.levelno == logging.ERROR
    assert "asynchronous" in record.getMessage()
    assert async_standbys() == 1

    # Given the primary waits for that standby (synchronous_standby_names = '*')
    await set_synchronous_standbys(primary, "*")
    try:
        await until(primary, ("streaming", "sync"))

        # Then the check passes quietly
        assert await check(primary.url, caplog) == []
        assert async_standbys() == 0
    finally:
        await set_synchronous_standbys(primary, "")
