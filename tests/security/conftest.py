"""Helpers of the hostile-input suite: tenants, and what a refused request must leave behind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pika
import pika.exceptions
import pytest

from tests.harness import AMQP_URL, System, assert_problem, wait_for

#: Put in every hostile body, so the final log check can tell a logged payload.
MARKER = "hostile-payload-marker-5f3a"


class Tenant:
    """A client with its own token and HTTP session."""

    def __init__(self, system: System, name: str) -> None:
        self.system = system
        self.name = name
        self.credentials = system.admin_client(name)
        self.id: str = self.credentials["client_id"]
        self.token = system.token(self.credentials)
        self.http = httpx.Client(
            base_url=system.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def journal(self) -> tuple[int, int]:
        """(events rows, last_seq) of this client, once every event it has is finished (so
        its queue is empty too)."""

        def settled() -> tuple[int, int] | None:
            [row] = self.system.sql(
                "SELECT (SELECT count(*) FROM events WHERE client_id = $1::uuid) AS events, "
                "last_seq, done_seq FROM clients WHERE id = $1::uuid",
                self.id,
            )
            return (row["events"], row["last_seq"]) if row["done_seq"] == row["last_seq"] else None

        return tuple(wait_for(settled, 60, f"client {self.name}'s events to finish"))

    def queued(self) -> int:
        """Messages waiting in this client's mailbox queue; 0 when there is no queue."""
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            channel = connection.channel()
            try:
                declared = channel.queue_declare(self.system.settings_queue(self.id), passive=True)
            except pika.exceptions.ChannelClosedByBroker as closed:
                if closed.reply_code != 404:
                    raise
                return 0
            count = int(declared.method.message_count)
            channel.close()
            return count
        finally:
            connection.close()


def assert_untouched(tenant: Tenant, before: tuple[int, int]) -> None:
    """Nothing stored for the tenant since `before`, nothing in its queue."""
    assert tenant.journal() == before
    assert tenant.queued() == 0


def assert_refused(
    tenant: Tenant, before: tuple[int, int], response: httpx.Response, status: int
) -> dict[str, Any]:
    """A problem+json `status`, nothing stored or queued, and the gateway still serves."""
    problem = assert_problem(response, status)
    assert_untouched(tenant, before)
    assert_serving(tenant.system)
    return problem


def assert_serving(system: System) -> None:
    for name, process in system.processes.items():
        assert process.poll() is None, f"{name} exited with {process.returncode}"
    assert httpx.get(f"{system.base_url}/healthz", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def mallory(system: System) -> Iterator[Tenant]:
    """The hostile client: every request it sends must be refused."""
    tenant = Tenant(system, "mallory")
    yield tenant
    tenant.http.close()


@pytest.fixture(scope="module")
def bob(system: System) -> Iterator[Tenant]:
    """An honest client whose ids mallory tries."""
    tenant = Tenant(system, "bob")
    yield tenant
    tenant.http.close()


def full_logs(system: System) -> str:
    """Every line every process of `system` has logged so far."""
    return "\n".join(path.read_text(errors="replace") for path in sorted(system.tmp.glob("*.log")))
