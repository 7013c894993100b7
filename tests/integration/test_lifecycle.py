"""Mailbox lifecycle: activated by the first event, passivated when idle, reactivated."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests import harness
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quick_idle(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = {"SERIATIM_IDLE_TIMEOUT": "0.5"}
    with harness.running_system(tmp_path_factory.mktemp("idle"), env=env) as running:
        yield running


def mailbox(system: System, token: str) -> dict[str, object]:
    response = httpx.get(
        f"{system.base_url}/v1/mailbox", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def post_and_finish(system: System, token: str, n: int) -> None:
    response = httpx.post(
        f"{system.base_url}/v1/events",
        json={"type": "demo.echo", "payload": {"n": n}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    wait_for(
        lambda: mailbox(system, token)["done_seq"] == response.json()["seq"],
        30,
        f"seq {response.json()['seq']} to finish",
    )


def test_an_idle_mailbox_is_passivated_and_the_next_event_reactivates_it(
    quick_idle: System,
) -> None:
    # Given a brand-new client whose first event was processed without any manual step
    token = quick_idle.token(quick_idle.admin_client())
    assert mailbox(quick_idle, token)["state"] == "idle"
    post_and_finish(quick_idle, token, 1)

    # When it stays idle past the idle timeout, it is passivated (queue kept, no host)
    idle = wait_for(
        lambda: (m := mailbox(quick_idle, token))["state"] == "idle" and m,
        30,
        "the mailbox to be passivated",
    )
    assert idle["host"] is None
    assert idle["backlog"] == 0

    # Then the next events reactivate it, and it passivates again afterwards
    for n in range(2, 5):
        post_and_finish(quick_idle, token, n)
        wait_for(lambda: mailbox(quick_idle, token)["state"] == "idle", 30, "passivation")
    assert mailbox(quick_idle, token)["done_seq"] == 4


def test_a_busy_mailbox_reports_backlog_and_host(quick_idle: System) -> None:
    # An admin's view shows the host; a tenant's has it null (tests/security/test_grey_areas.py)
    token = quick_idle.token(quick_idle.create_client("busy-admin", admin=True))
    for _ in range(3):
        response = httpx.post(
            f"{quick_idle.base_url}/v1/events",
            json={"type": "demo.sleep", "payload": {"ms": 300}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 202
    busy = wait_for(
        lambda: (m := mailbox(quick_idle, token))["in_flight_seq"] is not None and m,
        30,
        "an event in flight",
    )
    assert busy["state"] == "active"
    assert busy["host"] is not None
    assert busy["last_seq"] == 3
    assert busy["backlog"] == busy["last_seq"] - busy["done_seq"]
    wait_for(lambda: mailbox(quick_idle, token)["done_seq"] == 3, 30, "all three to finish")
