"""Supervision policies: restart intensity and the halt policy suspend; resume resumes.

What ran, in which order and how often, is judged by the witness ledger the `witnessed.*`
handlers write from inside the workers (tests/witness.py), not by the journal's timestamps.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import witness
from tests.harness import System, assert_problem, wait_for

pytestmark = pytest.mark.integration


class Tenant:
    def __init__(self, system: System, tmp: Path) -> None:
        self.system = system
        self.tmp = tmp
        self.client = system.admin_client("policy")
        self.id = self.client["client_id"]
        self.answered: list[tuple[int, str]] = []
        self.http = httpx.Client(
            base_url=system.base_url,
            timeout=10,
            headers={"Authorization": f"Bearer {system.token(self.client)}"},
        )

    def post(self, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/v1/events", json={"type": type_, "payload": payload})
        assert response.status_code == 202, response.text
        self.answered.append((response.json()["seq"], response.json()["id"]))
        return dict(response.json())

    def event(self, event_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/events/{event_id}").json())

    def mailbox(self) -> dict[str, Any]:
        return dict(self.http.get("/v1/mailbox").json())

    def ledger(self) -> Path:
        """This tenant's part of the shared system's witness ledger."""
        return witness.only(self.system.ledger, [self.id], self.tmp / "ledger.jsonl")

    def runs(self) -> Counter[str]:
        """How many times the witness saw each of this tenant's events run."""
        return Counter(run.event for run in witness.read(self.ledger()))

    def judge(self) -> witness.Judgement:
        """The witness's judgement of everything this tenant posted (some of it fails)."""
        return witness.judge(self.ledger(), {self.id: self.answered}, may_fail=True)


@pytest.fixture
def tenant(system: System, tmp_path: Path) -> Any:
    tenant = Tenant(system, tmp_path)
    yield tenant
    tenant.http.close()


@pytest.fixture(scope="module")
def admin(system: System) -> Any:
    client = system.create_client("policy-admin", admin=True)
    with httpx.Client(
        base_url=system.base_url,
        timeout=10,
        headers={"Authorization": f"Bearer {system.token(client)}"},
    ) as http:
        yield http


def test_a_dead_event_under_the_halt_policy_suspends_the_mailbox_until_resumed(
    system: System, tenant: Tenant, admin: httpx.Client
) -> None:
    """Planted: Execution.run calling a coroutine handler a second time when it fails (an
    in-place retry the journal never hears of) → fails with `assert 10 == 5`: ten runs of
    the dead event in the ledger, five attempts in the journal."""
    # Given a client whose dead-event policy is halt
    response = admin.patch(f"/v1/admin/mailboxes/{tenant.id}", json={"policy": "halt"})
    assert response.status_code == 200, response.text
    assert response.json()["policy"] == "halt"

    # When an event dies, with two more events behind it
    dead = tenant.post("witnessed.fail", {"times": 100})
    later = [tenant.post("witnessed.echo", {"n": n}) for n in (1, 2)]

    # Then the mailbox is suspended, saying why, and the later events wait
    suspended = wait_for(
        lambda: (m := tenant.mailbox())["state"] == "suspended" and m,
        60,
        "the mailbox to be suspended",
    )
    assert "halt" in suspended["suspended_reason"]
    assert suspended["done_seq"] == 1
    assert suspended["backlog"] == 2
    assert tenant.event(dead["id"])["status"] == "dead"
    assert [tenant.event(e["id"])["status"] for e in later] == ["queued", "queued"]
    runs = tenant.runs()
    assert runs[dead["id"]] == tenant.event(dead["id"])["attempts"] == 5
    assert [runs[e["id"]] for e in later] == [0, 0]  # the witness: they did not run
    listed = admin.get("/v1/admin/mailboxes", params={"state": "suspended"}).json()["items"]
    assert tenant.id in [m["client_id"] for m in listed]

    # When the client resumes it, the later events run, in order
    resumed = tenant.http.post("/v1/mailbox/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["suspended_reason"] is None
    wait_for(lambda: tenant.mailbox()["done_seq"] == 3, 60, "the later events to finish")
    first, second = (tenant.event(e["id"]) for e in later)
    assert first["status"] == second["status"] == "succeeded"
    judgement = tenant.judge()
    assert judgement.ok, judgement
    assert judgement.executions == 5 + 2


def test_too_many_failures_within_the_period_escalate_to_a_suspension(
    system: System, tenant: Tenant, admin: httpx.Client
) -> None:
    """Planted: Execution.run calling a coroutine handler a second time when it fails →
    fails with `assert 6 == 3` at the suspension: the journal says three attempts, the
    handler ran six times."""
    # Given a client allowed 2 restarts within a minute
    response = admin.patch(
        f"/v1/admin/mailboxes/{tenant.id}",
        json={"restart_intensity": {"max_restarts": 2, "within": 60}},
    )
    assert response.json()["restart_intensity"] == {
        "max_restarts": 2,
        "within": 60.0,
        "default": False,
    }

    # When its event keeps failing
    failing = tenant.post("witnessed.fail", {"times": 100})

    # Then the third failure suspends the mailbox mid-retries: the event is not dead
    suspended = wait_for(
        lambda: (m := tenant.mailbox())["state"] == "suspended" and m,
        60,
        "the mailbox to be suspended",
    )
    assert "restart intensity" in suspended["suspended_reason"]
    assert suspended["restarts"] >= 2
    event = tenant.event(failing["id"])
    assert (event["status"], event["attempts"]) == ("retrying", 3)
    assert tenant.runs()[failing["id"]] == 3  # the witness agrees: three runs, no fourth

    # When an operator resumes it, the event uses its remaining attempts and dies (skip)
    assert admin.post(f"/v1/admin/mailboxes/{tenant.id}/resume").status_code == 200
    wait_for(lambda: tenant.event(failing["id"])["status"] == "dead", 60, "the event to die")
    assert tenant.event(failing["id"])["attempts"] == 5
    assert tenant.mailbox()["state"] in ("active", "idle")
    judgement = tenant.judge()
    assert judgement.ok, judgement
    assert judgement.executions == 5


def test_restoring_the_default_intensity_and_resuming_a_running_mailbox(
    tenant: Tenant, admin: httpx.Client
) -> None:
    response = admin.patch(
        f"/v1/admin/mailboxes/{tenant.id}",
        json={"restart_intensity": {"max_restarts": 3, "within": 5}},
    )
    assert response.json()["restart_intensity"]["default"] is False
    response = admin.patch(f"/v1/admin/mailboxes/{tenant.id}", json={"restart_intensity": None})
    assert response.json()["restart_intensity"]["default"] is True
    assert_problem(tenant.http.post("/v1/mailbox/resume"), 409)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"policy": "stop"},
        {"policy": None},
        {"colour": "red"},
        {"restart_intensity": {"max_restarts": 0, "within": 60}},
        {"restart_intensity": {"max_restarts": 2}},
        {"restart_intensity": {"max_restarts": True, "within": 60}},
        {"restart_intensity": {"max_restarts": 2, "within": 0}},
        {"restart_intensity": {"max_restarts": 2, "within": "60"}},
        [],
    ],
)
def test_a_bad_policy_change_is_a_422_and_changes_nothing(
    tenant: Tenant, admin: httpx.Client, body: Any
) -> None:
    before = admin.get(f"/v1/admin/mailboxes/{tenant.id}").json()
    assert_problem(admin.patch(f"/v1/admin/mailboxes/{tenant.id}", json=body), 422)
    assert admin.get(f"/v1/admin/mailboxes/{tenant.id}").json() == before


def test_policies_are_for_operators_only(tenant: Tenant, admin: httpx.Client) -> None:
    assert_problem(
        tenant.http.patch(f"/v1/admin/mailboxes/{tenant.id}", json={"policy": "halt"}), 403
    )
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_problem(admin.patch(f"/v1/admin/mailboxes/{unknown}", json={"policy": "halt"}), 404)
