"""Fixtures of the fault suite: private RabbitMQ and PostgreSQL that tests may take down.

Each is started once per session, on first use, and removed at its end (also when tests
fail); a scenario that leaves it down gets it back before the next test starts, and a test's
`system` fixture brings it back before tearing the system down.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import harness
from tests.fault import nodes


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[nodes.RabbitNode]:
    """A RabbitMQ node of this session's own (not the machine's shared broker)."""
    with nodes.private_rabbitmq() as node:
        yield node


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[nodes.PostgresCluster]:
    """A PostgreSQL cluster of this session's own, with the schema's template database."""
    with nodes.private_postgres() as cluster:
        harness.build_template(cluster.url)
        yield cluster


@pytest.fixture
def broker(private_rabbitmq: nodes.RabbitNode) -> nodes.RabbitNode:
    """The private broker, running (whatever the previous test did to it)."""
    private_rabbitmq.ensure_running()
    return private_rabbitmq


@pytest.fixture
def postgres(private_postgres: nodes.PostgresCluster) -> nodes.PostgresCluster:
    """The private PostgreSQL, running (whatever the previous test did to it)."""
    private_postgres.ensure_running()
    return private_postgres
