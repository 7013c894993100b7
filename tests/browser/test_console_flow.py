"""An operator finds a stuck client and fixes it in the console, in a real browser: sign in,
set the halt policy, watch the poisoned client turn suspended and its tape show the blocking
event without a reload, read the event's attempts and error, resume, redrive the cured event,
watch the tape reach done, and find each action in the audit log. Screenshots of the main
pages go to docs/.

On the starting code there is no /console: the first step fails."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


def test_an_operator_unblocks_a_poisoned_client(system: System, page: Any, tmp_path: Path) -> None:
    operator = system.create_client("ops-console", admin=True)
    tenant = system.create_client("acme-orders")
    token = system.token(tenant)
    switch = tmp_path / "poisoned"
    switch.touch()
    base = system.base_url
    sign_in(page, base, operator)
    expect(page).to_have_url(re.compile(r"/console/clients$"))

    # The tenant's page, where the halt policy is set (an audited action).
    page.goto(f"{base}/console/clients/{tenant['client_id']}")
    page.select_option("select[name=policy]", "halt")
    page.click("text=Save policy")
    expect(page.locator(".done")).to_have_text("Policy saved.")
    loaded = page.evaluate("performance.timeOrigin")

    system.post_event(token, "demo.echo", {"n": 1})
    poison = system.post_event(token, "console.poison", {"switch": str(switch)})
    for n in (3, 4):
        system.post_event(token, "demo.echo", {"n": n})

    # Without a reload (the page's time origin stays the same), the tape turns suspended.
    expect(page.locator("#tape-state")).to_have_text("suspended", timeout=90_000)
    blocking = page.locator(".cell.blocking")
    expect(blocking).to_have_attribute("data-seq", str(poison["seq"]))
    expect(blocking).to_contain_text("poisoned <b>payload</b>")
    expect(page.locator("#tape-summary")).to_contain_text(
        f"2 events blocked behind seq {poison['seq']}"
    )
    assert page.evaluate("performance.timeOrigin") == loaded
    expect(page.locator("figure.chart")).to_contain_text("1 dead in the last hour")
    assert page.evaluate("window.__pwned") is None
    screenshot(page, "tape")

    # The event: its attempts and its error.
    blocking.locator("a").click()
    expect(page.locator("#event-status")).to_have_text("dead")
    expect(page.locator("#attempts")).to_contain_text("3 attempts")
    expect(page.locator("#event-error")).to_contain_text("RuntimeError: poisoned <b>payload</b>")
    # Each attempt on its own row: its number, start, duration, worker and error.
    rows = page.locator("#attempt-rows tr.attempt")
    expect(rows).to_have_count(3)
    for n in range(3):
        row = rows.nth(n)
        expect(row).to_have_attribute("data-attempt", str(n + 1))
        expect(row.locator("td").nth(1)).to_have_text(re.compile(r"^\d{4}-\d\d-\d\dT.*Z$"))
        expect(row.locator(".attempt-duration")).to_have_text(re.compile(r"^\d+ ms$"))
        expect(row.locator("td").nth(3)).not_to_be_empty()  # the worker
        expect(row.locator(".attempt-error")).to_have_text(
            "RuntimeError: poisoned <b>payload</b> <script>window.__pwned = 1</script>"
        )
    screenshot(page, "event")

    # Resume: the events behind it run.
    page.goto(f"{base}/console/clients/{tenant['client_id']}")
    page.click("#resume")
    expect(page.locator(".done")).to_have_text("Mailbox resumed.")
    expect(page.locator("#done-seq")).to_have_text("4", timeout=60_000)

    # Cure the poison and redrive it: a new event at the tail, linked both ways.
    switch.unlink()
    page.goto(f"{base}/console/clients/{tenant['client_id']}/events/{poison['id']}")
    page.click("#redrive")
    expect(page).to_have_url(re.compile(r"/events/(?!" + poison["id"] + r")[0-9a-f-]{36}$"))
    expect(page.locator("text=Redrive of")).to_be_visible()
    page.goto(f"{base}/console/clients/{tenant['client_id']}/events/{poison['id']}")
    expect(page.locator(".redriven-as")).to_have_count(1)

    page.goto(f"{base}/console/clients/{tenant['client_id']}")
    expect(page.locator("#done-seq")).to_have_text("5", timeout=60_000)
    expect(page.locator("#tape-summary")).to_contain_text("All done")
    expect(page.locator(".cell.dead .tag", has_text="redriven")).to_have_count(1)

    page.goto(f"{base}/console/clients")
    expect(page.locator("table.clients")).to_contain_text("acme-orders")
    screenshot(page, "clients")

    page.goto(f"{base}/console/audit")
    for action in ("mailbox.policy", "mailbox.resume", "event.redrive"):
        row = page.locator(f"tr[data-action='{action}']", has_text=tenant["client_id"])
        expect(row).to_have_count(1)
        expect(row).to_contain_text(operator["client_id"])
    screenshot(page, "audit")


def test_an_operator_redrives_by_filter_after_a_preview(
    system: System, page: Any, tmp_path: Path
) -> None:
    """A preview count, then a job whose progress the page shows, then the dead events at the
    tail in their old seq order, each audited; a second preview finds nothing left."""
    operator = system.create_client("ops-redrive", admin=True)
    tenant = system.create_client("bulk-tenant")
    token = system.token(tenant)
    switch = tmp_path / "poisoned"
    switch.touch()
    dead = [
        system.post_event(token, "console.poison", {"switch": str(switch), "n": n})
        for n in range(3)
    ]

    def all_dead() -> bool:
        rows = system.sql(
            "SELECT count(*) FROM events WHERE client_id = $1::uuid AND status = 'dead'",
            tenant["client_id"],
        )
        return rows[0][0] == 3

    wait_for(all_dead, 90, "the three poison events to end dead")
    switch.unlink()
    sign_in(page, system.base_url, operator)
    page.goto(f"{system.base_url}/console/redrive")
    page.fill("input[name=client_id]", tenant["client_id"])
    page.click("#preview")
    expect(page.locator("#preview-count")).to_contain_text("3 dead events match")
    page.click("#run-redrive")
    expect(page.locator("#redrive-finished")).to_be_visible(timeout=60_000)
    expect(page.locator("#redrive-progress")).to_have_text("3 of 3 redriven")

    rows = system.sql(
        "SELECT seq, redrive_of::text FROM events WHERE client_id = $1::uuid "
        "AND redrive_of IS NOT NULL ORDER BY seq",
        tenant["client_id"],
    )
    assert [r["redrive_of"] for r in rows] == [e["id"] for e in dead]
    assert [r["seq"] for r in rows] == [4, 5, 6]
    audited = system.sql(
        "SELECT event_id::text FROM audit_log WHERE action = 'event.redrive' "
        "AND actor = $1::uuid ORDER BY id",
        operator["client_id"],
    )
    assert [a["event_id"] for a in audited] == [e["id"] for e in dead]
    page.goto(f"{system.base_url}/console/redrive?client_id={tenant['client_id']}&preview=1")
    expect(page.locator("#preview-count")).to_contain_text("0 dead events match")
