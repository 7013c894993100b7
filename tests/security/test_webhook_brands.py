"""Both Standard Webhooks header brands, signed by the official libraries: `webhook-*` (the
`standardwebhooks` package) and `svix-*` (the `svix` package, Svix's default headers), one
idempotency key space, and a delivery carrying both brands accepted only when they agree."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import standardwebhooks
import svix.webhooks

from tests.harness import System, assert_problem
from tests.security.conftest import MARKER, Tenant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shop(system: System) -> Iterator[Tenant]:
    tenant = Tenant(system, "brands")
    yield tenant
    tenant.http.close()


@pytest.fixture(scope="module")
def secret(system: System, shop: Tenant) -> str:
    admin = system.token(system.create_client("brands-admin", admin=True))
    response = httpx.post(
        f"{system.base_url}/v1/admin/clients/{shop.id}/webhook-secrets",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


def signed(secret: str, brand: str, msg_id: str, body: str) -> dict[str, str]:
    """The three headers of `brand`, signed by that brand's official library."""
    now = datetime.now(tz=UTC)
    if brand == "svix":
        signature = svix.webhooks.Webhook(secret).sign(msg_id, now, body)
    else:
        signature = standardwebhooks.Webhook(secret).sign(msg_id, now, body)
    return {
        f"{brand}-id": msg_id,
        f"{brand}-timestamp": str(int(now.timestamp())),
        f"{brand}-signature": signature,
    }


def deliver(system: System, shop: Tenant, body: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{system.base_url}/v1/hooks/{shop.id}",
        content=body.encode(),
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )


def body_of(**fields: object) -> str:
    return json.dumps({"type": "demo.echo", "marker": MARKER, **fields})


@pytest.mark.parametrize("brand", ["webhook", "svix"])
def test_a_delivery_signed_by_the_official_library_becomes_an_event(
    system: System, shop: Tenant, secret: str, brand: str
) -> None:
    """The svix case was `400 invalid-webhook` before the svix-* headers were read."""
    body = body_of(brand=brand)

    response = deliver(system, shop, body, signed(secret, brand, f"msg_{uuid.uuid4().hex}", body))

    assert response.status_code == 202, response.text
    event = shop.http.get(f"/v1/events/{response.json()['id']}").json()
    assert event["payload"] == json.loads(body)


def test_both_brands_share_one_idempotency_key_space(
    system: System, shop: Tenant, secret: str
) -> None:
    body = body_of(order="shared")
    msg_id = f"msg_{uuid.uuid4().hex}"
    first = deliver(system, shop, body, signed(secret, "svix", msg_id, body))

    # The same message again, now under the other brand: a redelivery, not a second event
    again = deliver(system, shop, body, signed(secret, "webhook", msg_id, body))

    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_a_delivery_with_both_brands_agreeing_is_accepted(
    system: System, shop: Tenant, secret: str
) -> None:
    body = body_of(order="both")
    headers = signed(secret, "svix", f"msg_{uuid.uuid4().hex}", body)
    headers.update({key.replace("svix-", "webhook-"): value for key, value in headers.items()})

    response = deliver(system, shop, body, headers)

    assert response.status_code == 202, response.text


@pytest.mark.parametrize("name", ["id", "timestamp", "signature"])
def test_a_delivery_whose_brands_disagree_is_refused_and_changes_nothing(
    system: System, shop: Tenant, secret: str, name: str
) -> None:
    """Each brand is validly signed on its own: the gateway must not pick one silently, since
    the id is the idempotency key. Without the agreement check this is a 202."""
    body = body_of(order=f"disagree-{name}")
    svix_headers = signed(secret, "svix", f"msg_{uuid.uuid4().hex}", body)
    other = signed(secret, "webhook", f"msg_{uuid.uuid4().hex}", body)
    headers = {**svix_headers, f"webhook-{name}": other[f"webhook-{name}"]}
    if name == "timestamp":  # the same second would agree: make it another valid one
        headers["webhook-timestamp"] = str(int(headers["svix-timestamp"]) - 1)
    before = shop.journal()

    response = deliver(system, shop, body, headers)

    problem = assert_problem(response, 400)
    assert problem["type"].endswith("invalid-webhook")
    assert f"svix-{name}" in problem["detail"]
    assert shop.journal() == before


def test_a_brand_missing_a_header_is_a_400_naming_both_brands(
    system: System, shop: Tenant, secret: str
) -> None:
    body = body_of(order="partial")
    headers = signed(secret, "svix", f"msg_{uuid.uuid4().hex}", body)
    del headers["svix-signature"]

    problem = assert_problem(deliver(system, shop, body, headers), 400)

    assert "svix-signature" in problem["detail"]
