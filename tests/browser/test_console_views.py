"""The tenant view and the console's reach: a tenant signs in to its own mailbox and submits
an event through the form; pages fit a phone's width, follow a dark system theme, and can be
worked with the keyboard alone. On the starting code there is no /console: each test fails."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.harness import System

pytestmark = pytest.mark.integration


def test_a_tenant_submits_an_event_and_watches_it_finish(system: System, page: Any) -> None:
    tenant = system.create_client("tenant-view")
    sign_in(page, system.base_url, tenant)
    expect(page).to_have_url(re.compile(r"/console/me$"))
    expect(page.locator("nav")).not_to_contain_text("Clients")
    page.select_option("select[name=type]", "demo.echo")
    page.fill("textarea[name=payload]", '{"hello": "<i>world</i>"}')
    page.click("form[action='/console/me/events'] button")
    expect(page.locator(".done")).to_have_text("Event 1 accepted.")
    cell = page.locator(".cell[data-seq='1']")
    expect(cell).to_have_attribute("data-status", "succeeded", timeout=60_000)
    cell.locator("a").click()
    expect(page.locator("pre.payload").first).to_have_text('{"hello": "<i>world</i>"}')
    # A payload that is not JSON is refused with a clear message, nothing accepted.
    page.goto(f"{system.base_url}/console/me")
    page.fill("textarea[name=payload]", "{not json")
    page.click("form[action='/console/me/events'] button")
    expect(page.locator("p.error")).to_contain_text("must be a JSON object")
    [row] = system.sql("SELECT last_seq FROM clients WHERE id = $1::uuid", tenant["client_id"])
    assert row["last_seq"] == 1


def test_pages_fit_a_phone_and_follow_a_dark_theme(system: System, browser: Any) -> None:
    operator = system.create_client("ops-phone", admin=True)
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
    )
    page = context.new_page()
    try:
        sign_in(page, system.base_url, operator)
        for path in (
            "/console/clients",
            f"/console/clients/{operator['client_id']}",
            "/console/audit",
            "/console/redrive",
        ):
            page.goto(system.base_url + path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} is {overflow} px wider than the phone"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(13, 17, 23)"
        page.goto(f"{system.base_url}/console/clients")
        screenshot(page, "phone-dark")
    finally:
        context.close()


def test_the_console_can_be_worked_with_the_keyboard(system: System, page: Any) -> None:
    operator = system.create_client("ops-keys", admin=True)
    page.goto(f"{system.base_url}/console/signin")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.focus("input[name=client_id]")
    page.keyboard.type(operator["client_id"])
    page.keyboard.press("Tab")
    page.keyboard.type(operator["client_secret"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/console/clients$"))
    # Tab through the page: the nav links, the filters and the pause toggle all take focus.
    reached = set()
    for _ in range(20):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate(
                "document.activeElement.textContent.trim() || document.activeElement.name"
            )
        )
    assert {"Clients", "Audit log", "Sign out", "name", "Pause updates"} <= reached


def test_the_clients_list_filters_sorts_and_pages_by_cursor(system: System) -> None:
    """Sixty idle clients and one with a backlog: the name filter, hide-idle, both sorts and
    the cursor walk them all exactly once; a bad query parameter is a 400 page."""
    from tests.browser.test_console_safety import session

    system.execute(
        "INSERT INTO clients (name, secret_hash) "
        "SELECT 'paged-' || n, 'x' FROM generate_series(1, 60) AS n;"
        "INSERT INTO clients (name, secret_hash, last_seq, done_seq, state) "
        "VALUES ('paged-busy', 'x', 9, 2, 'active');"
    )
    http, _ = session(system, system.create_client("ops-pages", admin=True))
    try:
        names: list[str] = []
        url = "/console/clients?name=paged-&sort=backlog"
        while url:
            page = http.get(url)
            assert page.status_code == 200
            names += re.findall(
                r'<a href="/console/clients/[0-9a-f-]{36}">(paged-[^<]*)</a>', page.text
            )
            following = re.search(r'href="(/console/clients\?[^"]+)" rel="next"', page.text)
            url = following.group(1).replace("&amp;", "&") if following else ""
        assert names[0] == "paged-busy"  # the largest backlog first
        assert sorted(names) == sorted(["paged-busy", *(f"paged-{n}" for n in range(1, 61))])
        busy_only = http.get("/console/clients?name=paged-&hide_idle=1").text
        assert re.findall(r">(paged-[^<]*)</a>", busy_only) == ["paged-busy"]
        assert http.get("/console/clients?name=paged-&sort=age").status_code == 200
        assert http.get("/console/clients?state=bogus").status_code == 400
        assert http.get("/console/clients?after=not-a-cursor").status_code == 400
    finally:
        http.close()
