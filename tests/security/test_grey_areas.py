"""The grey areas of issue 18, each decided: resuming a mailbox needs `events:write`, a
tenant's mailbox view hides worker host names, webhook secrets per client are capped,
`/metrics` carries no trace ids unless asked to, and `/v1/hooks/<id>` does the same HMAC work
whoever it names.

Each test failed on the starting code: a read-only token resumed a mailbox (409, not 403), a
tenant saw its worker's host name, a fourth webhook secret was added (201), the OpenMetrics
scrape carried `trace_id` exemplars, and a delivery for an unknown client or one without
secrets computed no HMAC at all (one for a client with a secret)."""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from actors.settings import Settings
from gateway.app import create_app
from gateway.server import MAX_HEAD
from gateway.wire import guarded_protocol
from tests.harness import AMQP_URL, System, assert_problem, free_port, new_namespace, wait_for
from tests.security.conftest import Tenant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def root(system: System) -> Iterator[httpx.Client]:
    token = system.token(system.create_client("grey-root", admin=True))
    with httpx.Client(
        base_url=system.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def test_resuming_a_mailbox_needs_events_write(system: System) -> None:
    credentials = system.admin_client("read-only")
    reader = system.token(credentials, scope="events:read")
    writer = system.token(credentials, scope="events:write")

    refused = httpx.post(
        f"{system.base_url}/v1/mailbox/resume",
        headers={"Authorization": f"Bearer {reader}"},
        timeout=10,
    )
    allowed = httpx.post(
        f"{system.base_url}/v1/mailbox/resume",
        headers={"Authorization": f"Bearer {writer}"},
        timeout=10,
    )

    assert assert_problem(refused, 403)["type"].endswith("insufficient-scope")
    assert 'scope="events:write"' in refused.headers["www-authenticate"]
    assert assert_problem(allowed, 409)["type"].endswith("mailbox-not-suspended")


def test_a_tenants_mailbox_view_hides_the_worker_host_and_an_admins_shows_it(
    system: System, root: httpx.Client
) -> None:
    tenant = Tenant(system, "hosted")
    posted = tenant.http.post("/v1/events", json={"type": "demo.sleep", "payload": {"ms": 3000}})
    assert posted.status_code == 202
    host = wait_for(
        lambda: system.sql("SELECT host FROM clients WHERE id = $1::uuid", tenant.id)[0][0],
        30,
        "the mailbox to be placed",
    )

    own = tenant.http.get("/v1/mailbox").json()
    operators = root.get(f"/v1/admin/mailboxes/{tenant.id}").json()
    listed = root.get("/v1/admin/mailboxes", params={"limit": 1000}).json()["items"]

    assert "host" in own
    assert own["host"] is None
    assert operators["host"] == host
    assert [m["host"] for m in listed if m["client_id"] == tenant.id] == [host]
    tenant.http.close()


def test_a_client_has_at_most_the_capped_number_of_valid_webhook_secrets(
    system: System, root: httpx.Client
) -> None:
    tenant = Tenant(system, "many-secrets")
    path = f"/v1/admin/clients/{tenant.id}/webhook-secrets"
    added = [root.post(path).status_code for _ in range(3)]  # SERIATIM_MAX_WEBHOOK_SECRETS

    refused = root.post(path)

    assert added == [201] * 3
    assert assert_problem(refused, 409)["type"].endswith("too-many-webhook-secrets")
    assert len(root.get(path).json()["items"]) == 3
    # A rotation that retires the others at once is still possible
    rotated = root.post(path, json={"previous_valid_for": 0})
    assert rotated.status_code == 201, rotated.text
    assert len(root.get(path).json()["items"]) == 1
    tenant.http.close()


def test_metrics_carry_no_trace_ids_by_default(system: System) -> None:
    token = system.token(system.admin_client("traced"))
    answered = httpx.get(
        f"{system.base_url}/v1/mailbox", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    trace_id = answered.headers["trace-id"]

    scraped = httpx.get(
        f"{system.base_url}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10,
    )

    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    assert re.search(r'route="/v1/mailbox"', scraped.text)
    assert "trace_id" not in scraped.text
    assert trace_id not in scraped.text


# --- webhooks: the same work whoever a delivery names --------------------------------------


@pytest.fixture
def gateway(database: str) -> Iterator[tuple[httpx.Client, str]]:
    """The gateway served by uvicorn as `seriatim gateway` serves it, but on a thread of this
    process (so that its HMACs can be counted), on a database and a broker namespace of its
    own; an HTTP client for it, and the database's URL."""
    settings = Settings(database_url=database, amqp_url=AMQP_URL, namespace=new_namespace())
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        http=guarded_protocol(MAX_HEAD, settings.header_timeout, settings.body_timeout),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the in-process gateway to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, database
    finally:
        server.should_exit = True
        thread.join(30)


def _sql(database: str, query: str, *args: Any) -> Any:
    import asyncio

    import asyncpg

    async def run() -> Any:
        connection = await asyncpg.connect(database)
        try:
            return await connection.fetchval(query, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


def test_a_webhook_delivery_costs_the_same_hmacs_whoever_it_names(
    gateway: tuple[httpx.Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown client, client without secrets, client with one: each delivery computes
    SERIATIM_MAX_WEBHOOK_SECRETS (3) HMACs (counted, not timed). Before: 0, 0 and 1."""
    client, database = gateway
    insert = "INSERT INTO clients (name, secret_hash) VALUES ($1, 'x') RETURNING id"
    bare = _sql(database, insert, "bare")
    keyed = _sql(database, insert, "keyed")
    _sql(
        database,
        "INSERT INTO webhook_secrets (client_id, secret) VALUES ($1, $2) RETURNING id",
        keyed,
        secrets.token_bytes(32),
    )
    calls: list[int] = []
    real_new = hmac.new

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_new(*args, **kwargs)

    monkeypatch.setattr(hmac, "new", counting)
    counts = {}
    for name, client_id in (("unknown", uuid.uuid4()), ("bare", bare), ("keyed", keyed)):
        calls.clear()
        answer = client.post(
            f"/v1/hooks/{client_id}",
            content=b'{"type": "demo.echo"}',
            headers={
                "content-type": "application/json",
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            },
        )
        assert answer.status_code == 401, answer.text
        counts[name] = len(calls)

    assert counts == {"unknown": 3, "bare": 3, "keyed": 3}
