"""The console refuses what it must: every route without a session, a tenant's session on
every operator page and action (and other clients' events), a changing form without its
CSRF token; and it escapes whatever tenants sent (names, payloads, errors), so that nothing
of it executes in a real browser.

On the starting code there is no /console (404 everywhere): each test fails on its first
assertion. With the CSRF check of `Console.action` planted out, the CSRF test fails; with the
operator check planted out, the tenant test fails (checked by hand)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in, signin_fields
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Fixture:
    def __init__(self, system: System) -> None:
        self.operator = system.create_client("ops-safety", admin=True)
        self.tenant = system.create_client("tenant-safety")
        self.other = system.create_client(XSS)
        other_token = system.token(self.other)
        self.other_event = system.post_event(other_token, "demo.echo", {"html": XSS})
        self.poison = system.post_event(other_token, "console.poison", {"switch": "/"})
        self.tenant_event = system.post_event(system.token(self.tenant), "demo.echo", {})


@pytest.fixture(scope="module")
def world(system: System) -> Fixture:
    return Fixture(system)


def session(system: System, credentials: dict[str, Any]) -> tuple[httpx.Client, str]:
    """An HTTP client signed in to the console, and its CSRF token."""
    http = httpx.Client(base_url=system.base_url, timeout=30)
    signed = http.post("/console/signin", data=signin_fields(http, credentials))
    assert signed.status_code == 303, signed.text
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    home = http.get(signed.headers["location"])
    assert home.status_code == 200
    found = CSRF.search(home.text)
    assert found
    return http, found.group(1)


@pytest.fixture(scope="module")
def operator_http(system: System, world: Fixture) -> Iterator[tuple[httpx.Client, str]]:
    http, csrf = session(system, world.operator)
    yield http, csrf
    http.close()


@pytest.fixture(scope="module")
def tenant_http(system: System, world: Fixture) -> Iterator[tuple[httpx.Client, str]]:
    http, csrf = session(system, world.tenant)
    yield http, csrf
    http.close()


def operator_pages(world: Fixture) -> list[str]:
    other, event = world.other["client_id"], world.other_event["id"]
    return [
        "/console/clients",
        f"/console/clients/{other}",
        f"/console/clients/{other}/events/{event}",
        "/console/audit",
        "/console/redrive",
        f"/console/redrive?client_id={other}&preview=1",
    ]


def operator_actions(world: Fixture) -> list[tuple[str, dict[str, str]]]:
    other, event = world.other["client_id"], world.poison["id"]
    return [
        (f"/console/clients/{other}/resume", {}),
        (f"/console/clients/{other}/suspend", {"reason": "no"}),
        (f"/console/clients/{other}/policy", {"policy": "halt"}),
        (f"/console/clients/{other}/limits", {"per_second": "1", "burst": "1"}),
        (f"/console/clients/{other}/webhook-secret", {}),
        (f"/console/clients/{other}/events/{event}/redrive", {}),
        ("/console/redrive", {"client_id": other}),
    ]


def audit_count(system: System) -> int:
    return int(system.sql("SELECT count(*) FROM audit_log")[0][0])


def test_every_console_route_refuses_a_request_without_a_session(
    system: System, world: Fixture
) -> None:
    with httpx.Client(base_url=system.base_url, timeout=30) as http:
        for path in [
            *operator_pages(world),
            "/console/me",
            f"/console/me/events/{world.tenant_event['id']}",
        ]:
            response = http.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/console/signin"
            assert world.other["client_id"] not in response.text
        http.cookies.set("seriatim_console", "e30.AAAA", path="/console")
        assert http.get("/console/clients").status_code == 303  # a forged cookie is none
        http.cookies.clear()
        before = audit_count(system)
        for path, data in [*operator_actions(world), ("/console/me/events", {"type": "demo.echo"})]:
            response = http.post(path, data=data)
            assert response.status_code == 401, path
        assert audit_count(system) == before


def test_a_tenant_session_is_refused_every_operator_page_and_action(
    system: System, world: Fixture, tenant_http: tuple[httpx.Client, str]
) -> None:
    http, csrf = tenant_http
    for path in operator_pages(world):
        response = http.get(path)
        assert response.status_code == 403, path
        assert world.other_event["id"] not in response.text
    before = audit_count(system)
    for path, data in operator_actions(world):
        assert http.post(path, data={**data, "csrf": csrf}).status_code == 403, path
    assert audit_count(system) == before
    # Its own view shows its own events, never another client's.
    assert http.get(f"/console/me/events/{world.tenant_event['id']}").status_code == 200
    assert http.get(f"/console/me/events/{world.other_event['id']}").status_code == 404


def test_a_changing_form_without_its_csrf_token_changes_nothing(
    system: System, world: Fixture, operator_http: tuple[httpx.Client, str]
) -> None:
    http, csrf = operator_http
    target = world.tenant["client_id"]
    before = audit_count(system)
    for sent in ({}, {"csrf": "forged"}, {"csrf": csrf + "x"}):
        response = http.post(f"/console/clients/{target}/suspend", data={"reason": "x", **sent})
        assert response.status_code == 403
    assert audit_count(system) == before
    [row] = system.sql("SELECT state FROM clients WHERE id = $1::uuid", target)
    assert row["state"] != "suspended"
    # The same form with its token does it (so the refusals above were the token's).
    done = http.post(f"/console/clients/{target}/suspend", data={"reason": "x", "csrf": csrf})
    assert done.status_code == 303
    assert audit_count(system) == before + 1
    resumed = http.post(f"/console/clients/{target}/resume", data={"csrf": csrf})
    assert resumed.status_code == 303


def test_nothing_tenants_sent_executes_on_any_page(
    system: System, world: Fixture, page: Any
) -> None:
    other = world.other["client_id"]

    def dead() -> bool:
        rows = system.sql("SELECT status FROM events WHERE id = $1::uuid", world.poison["id"])
        return rows[0]["status"] == "dead"

    wait_for(dead, 60, "the poison event to end dead")
    sign_in(page, system.base_url, world.operator)
    pages = [
        (f"/console/clients?name={XSS[:10]}", XSS),
        (f"/console/clients/{other}", XSS),
        (f"/console/clients/{other}/events/{world.other_event['id']}", "window.__pwned=2"),
        (f"/console/clients/{other}/events/{world.poison['id']}", "<script>window.__pwned = 1"),
        ("/console/audit", "Audit log"),
    ]
    for path, shown in pages:
        page.goto(system.base_url + path)
        expect(page.locator("main")).to_contain_text(shown)
        assert page.locator("main img, main script").count() == 0, path
        assert page.evaluate("window.__pwned") is None, path
    assert uuid.UUID(other)


def test_a_form_sent_from_another_site_is_refused_even_with_its_token(
    system: System, world: Fixture, operator_http: tuple[httpx.Client, str]
) -> None:
    """Without the Origin check in `views.form`, the suspend below is done (303)."""
    http, csrf = operator_http
    target = world.tenant["client_id"]
    before = audit_count(system)
    evil = {"Origin": "https://evil.example"}
    response = http.post(
        f"/console/clients/{target}/suspend", data={"reason": "x", "csrf": csrf}, headers=evil
    )
    assert response.status_code == 403
    assert audit_count(system) == before
    with httpx.Client(base_url=system.base_url, timeout=30) as stranger:
        fields = signin_fields(stranger, world.operator)
        signin = stranger.post("/console/signin", data=fields, headers=evil)
        assert signin.status_code == 403
        assert "set-cookie" not in signin.headers


@pytest.mark.parametrize(
    "payload",
    ['{"a": NaN}', '{"a": "\\u0000"}', "[" * 100 + "]" * 100, '{"a": 1e400}', "{"],
)
def test_the_tenant_form_applies_the_api_s_json_rules(
    system: System, world: Fixture, tenant_http: tuple[httpx.Client, str], payload: str
) -> None:
    """The submit form parsed with bare json.loads: NaN and a NUL character reached the accept
    and gave a 500, and 100 levels of nesting (the API allows 64) were stored."""
    http, csrf = tenant_http
    before = system.sql(
        "SELECT last_seq FROM clients WHERE id = $1::uuid", world.tenant["client_id"]
    )[0]["last_seq"]
    response = http.post(
        "/console/me/events", data={"type": "demo.echo", "payload": payload, "csrf": csrf}
    )
    assert response.status_code in (400, 422), response.text
    after = system.sql(
        "SELECT last_seq FROM clients WHERE id = $1::uuid", world.tenant["client_id"]
    )[0]["last_seq"]
    assert after == before
