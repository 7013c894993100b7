"""The audit log: every operator action of the admin API leaves one entry (who, what, which
client or event), written with the action; a refused action leaves none; no secret is kept.

On the starting code there is no audit_log table and no entry: every test here fails."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from actors.store import Journal
from actors.store.audit import AuditAction, AuditLog, checked_detail
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


class Operator:
    """An admin client of `system` speaking the admin API."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.credentials = system.create_client("auditor", admin=True)
        self.id = self.credentials["client_id"]
        self.http = httpx.Client(
            base_url=system.base_url,
            headers={"Authorization": f"Bearer {system.token(self.credentials)}"},
            timeout=30,
        )

    def entries(self) -> list[dict[str, Any]]:
        rows = self.system.sql(
            "SELECT actor::text, action, client_id::text, event_id::text, detail::text "
            "FROM audit_log ORDER BY id"
        )
        return [dict(row) for row in rows]


@pytest.fixture(scope="module")
def operator(system: System) -> Iterator[Operator]:
    operator = Operator(system)
    yield operator
    operator.http.close()


def _last(operator: Operator) -> dict[str, Any]:
    return operator.entries()[-1]


def test_each_admin_action_is_audited_with_its_actor_and_target(
    system: System, operator: Operator
) -> None:
    created = operator.http.post("/v1/admin/clients", json={"name": "audited"})
    assert created.status_code == 201
    target = created.json()["client_id"]
    secrets = [created.json()["client_secret"]]
    expected = [("client.create", target)]

    def act(response: httpx.Response, action: str, status: int = 200) -> None:
        assert response.status_code == status, response.text
        expected.append((action, target))

    act(
        operator.http.patch(f"/v1/admin/clients/{target}", json={"max_backlog": 7}),
        "client.settings",
    )
    act(
        operator.http.patch(f"/v1/admin/clients/{target}", json={"disabled": True}),
        "client.settings",
    )
    act(
        operator.http.patch(f"/v1/admin/clients/{target}", json={"disabled": False}),
        "client.settings",
    )
    rotated = operator.http.post(f"/v1/admin/clients/{target}/rotate-secret")
    act(rotated, "client.rotate_secret")
    secrets.append(rotated.json()["client_secret"])
    hook = operator.http.post(f"/v1/admin/clients/{target}/webhook-secrets")
    act(hook, "webhook_secret.create", 201)
    secrets.append(hook.json()["secret"])
    act(
        operator.http.post(f"/v1/admin/mailboxes/{target}/suspend", json={"reason": "by hand"}),
        "mailbox.suspend",
    )
    act(operator.http.post(f"/v1/admin/mailboxes/{target}/resume"), "mailbox.resume")
    act(
        operator.http.patch(f"/v1/admin/mailboxes/{target}", json={"policy": "halt"}),
        "mailbox.policy",
    )
    act(operator.http.delete(f"/v1/admin/clients/{target}"), "client.delete", 204)

    mine = [e for e in operator.entries() if e["client_id"] == target]
    assert [(e["action"], e["client_id"]) for e in mine] == expected
    assert {e["actor"] for e in mine} == {operator.id}
    assert json.loads(mine[1]["detail"]) == {"max_backlog": 7}
    assert json.loads(mine[2]["detail"]) == {"disabled": True}
    assert json.loads(mine[6]["detail"]) == {"reason": "by hand"}
    assert json.loads(mine[8]["detail"]) == {"policy": "halt"}
    everything = json.dumps(operator.entries())
    for secret in secrets:
        assert secret not in everything
        assert secret.removeprefix("whsec_") not in everything


def test_signing_key_rotation_and_revocation_are_audited(operator: Operator) -> None:
    rotated = operator.http.post("/v1/admin/signing-keys")
    assert rotated.status_code == 201
    assert _last(operator)["action"] == "signing_key.rotate"
    assert json.loads(_last(operator)["detail"]) == {"kid": rotated.json()["kid"]}
    # The old token is still fine (the revoked key is the new one, not the one that signed it).
    revoked = operator.http.delete(f"/v1/admin/signing-keys/{rotated.json()['kid']}")
    assert revoked.status_code == 200, revoked.text
    entry = _last(operator)
    assert entry["action"] == "signing_key.revoke"
    assert entry["actor"] == operator.id
    assert json.loads(entry["detail"])["revoked"] == rotated.json()["kid"]


def test_refused_actions_leave_no_entry(operator: Operator) -> None:
    before = operator.entries()
    nobody = uuid.uuid4()
    assert operator.http.post(f"/v1/admin/mailboxes/{nobody}/resume").status_code == 404
    assert operator.http.post(f"/v1/admin/clients/{nobody}/rotate-secret").status_code == 404
    assert (
        operator.http.patch(f"/v1/admin/clients/{nobody}", json={"disabled": True}).status_code
        == 404
    )
    assert operator.http.delete(f"/v1/admin/clients/{nobody}").status_code == 404
    assert operator.http.delete("/v1/admin/signing-keys/no-such-kid").status_code == 404
    # A mailbox that is not suspended: 409, and no entry either.
    assert operator.http.post(f"/v1/admin/mailboxes/{operator.id}/resume").status_code == 409
    bad = operator.http.post(f"/v1/admin/mailboxes/{operator.id}/suspend", json={"reason": " "})
    assert bad.status_code == 422
    assert operator.entries() == before


def test_a_redrive_is_audited_with_the_event_it_redrove(system: System) -> None:
    tenant = system.create_client("redriven")
    token = system.token(tenant)
    failing = system.post_event(token, "demo.fail", {"times": 100})

    def dead() -> bool:
        rows = system.sql("SELECT status FROM events WHERE id = $1::uuid", failing["id"])
        return rows[0]["status"] == "dead"

    wait_for(dead, 60, "the failing event to end dead")
    response = httpx.post(
        f"{system.base_url}/v1/events/{failing['id']}/redrive",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    [entry] = system.sql(
        "SELECT actor::text, client_id::text, detail FROM audit_log "
        "WHERE action = 'event.redrive' AND event_id = $1::uuid",
        failing["id"],
    )
    assert entry["actor"] == entry["client_id"] == tenant["client_id"]
    assert json.loads(entry["detail"])["new_event_id"] == response.json()["id"]


async def test_an_action_that_raises_is_rolled_back_with_its_entry(journal: Journal) -> None:
    """The entry and the action share one transaction: neither outlives an exception."""
    audit = AuditLog(journal.pool)
    actor = uuid.uuid4()

    async def failing_action() -> None:
        async with audit.record(actor, AuditAction.CLIENT_CREATE) as act:
            act.client_id = await journal.create_client("ghost", "x", False, via=act.via)
            raise RuntimeError("the action fails after its first statement")

    with pytest.raises(RuntimeError):
        await failing_action()
    assert await journal.pool.fetchval("SELECT count(*) FROM clients WHERE name = 'ghost'") == 0
    assert await audit.entries() == []
    async with audit.record(actor, AuditAction.CLIENT_CREATE) as act:
        act.client_id = await journal.create_client("kept", "x", False, via=act.via)
    [entry] = await audit.entries()
    assert entry.client_id == act.client_id
    assert entry.actor == actor


@pytest.mark.parametrize(
    "detail",
    [{"client_secret": "x"}, {"nested": {"Token": 1}}, {"list": [{"password": 2}]}],
)
def test_a_detail_naming_a_secret_is_refused(detail: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="secret"):
        checked_detail(detail)
