"""The console's browser tests: a real gateway, workers, PostgreSQL and RabbitMQ, driven by
Playwright through Debian's /usr/bin/chromium (`make browser` installs it), headless."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import harness, witness

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
SIGNIN_TOKEN = re.compile(r'name="token" value="([^"]+)"')
HANDLERS = f"{witness.HANDLERS},tests.browser.console_handlers"


@pytest.fixture(scope="module")
def system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.System]:
    """A running system with the console's test handlers."""
    with harness.running_system(
        tmp_path_factory.mktemp("console"),
        env={"SERIATIM_HANDLERS": HANDLERS, "SERIATIM_MAX_ATTEMPTS": "3"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run `make browser`"
        if harness.IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    yield opened
    context.close()


def sign_in(page: Any, base_url: str, credentials: dict[str, Any]) -> None:
    page.goto(f"{base_url}/console/signin")
    page.fill("input[name=client_id]", credentials["client_id"])
    page.fill("input[name=client_secret]", credentials["client_secret"])
    page.click("button[type=submit]")
    page.wait_for_load_state()


def signin_fields(http: httpx.Client, credentials: dict[str, Any]) -> dict[str, str]:
    """The sign-in form's fields with the token of a fresh sign-in page (whose cookie `http`
    now holds), as a browser would send them."""
    page = http.get("/console/signin")
    assert page.status_code == 200
    found = SIGNIN_TOKEN.search(page.text)
    assert found, page.text
    return {
        "client_id": credentials["client_id"],
        "client_secret": credentials["client_secret"],
        "token": found.group(1),
    }


def screenshot(page: Any, name: str) -> None:
    if os.environ.get("SERIATIM_SCREENSHOTS", "on") != "off":
        page.screenshot(path=str(DOCS / f"console-{name}.png"))
