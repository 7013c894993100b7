"""A console session ends when SERIATIM_CONSOLE_SESSION_TTL has passed: its pages send the
browser back to the sign-in page and its forms are refused. Without the expiry check in the
`console_session` query (by the database's clock), the session stays good and this test
times out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import harness
from tests.browser.conftest import sign_in
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with harness.running_system(
        tmp_path_factory.mktemp("expiry"), workers=1, env={"SERIATIM_CONSOLE_SESSION_TTL": "5"}
    ) as running:
        yield running


def test_a_session_expires(system: System, page: Any) -> None:
    operator = system.create_client("ops-expiry", admin=True)
    sign_in(page, system.base_url, operator)
    assert page.url.endswith("/console/clients")
    cookie = next(c for c in page.context.cookies() if c["name"] == "seriatim_console")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"

    def signed_out() -> bool:
        page.goto(f"{system.base_url}/console/audit")
        return page.url.endswith("/console/signin")

    wait_for(signed_out, 30, "the session to expire", interval=1)
    response = page.request.post(
        f"{system.base_url}/console/clients/{operator['client_id']}/suspend",
        form={"reason": "late", "csrf": "x"},
    )
    assert response.status == 401
