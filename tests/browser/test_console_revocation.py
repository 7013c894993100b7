"""Console sessions live in the journal: signing out ends one on every gateway (a copied
cookie is refused after), the console's signing key rotates by key id (older sessions keep
working, the rotation is audited), issued-at and expiry come from the database's clock, the
sign-in form needs its page's token, and the page's banner says only what the server chose.

On the starting code: a copied cookie still works after sign-out, `keys rotate-console`
does not exist (argparse exits 2), there is no console_sessions table, a sign-in without a
token is let in (303), and `?done=` text is shown on the page."""

from __future__ import annotations

import contextlib
import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import signin_fields
from tests.harness import System

pytestmark = pytest.mark.integration
COOKIE = "seriatim_console"


@contextlib.contextmanager
def signed_in(system: System, credentials: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.base_url, timeout=30) as http:
        signed = http.post("/console/signin", data=signin_fields(http, credentials))
        assert signed.status_code == 303, signed.text
        yield http


def csrf_of(http: httpx.Client, path: str) -> str:
    text = http.get(path).text
    return text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def with_cookie(system: System, value: str) -> httpx.Client:
    http = httpx.Client(base_url=system.base_url, timeout=30)
    http.cookies.set(COOKIE, value, path="/console")
    return http


def test_a_copied_cookie_is_refused_after_sign_out(system: System) -> None:
    operator = system.create_client("ops-signout", admin=True)
    with signed_in(system, operator) as http:
        copied = http.cookies[COOKIE]
        with with_cookie(system, copied) as thief:
            assert thief.get("/console/clients").status_code == 200  # the copy works...
            out = http.post("/console/signout", data={"csrf": csrf_of(http, "/console/clients")})
            assert out.status_code == 303
            # ...until its session signs out, on this gateway and any other (the row ended)
            refused = thief.get("/console/clients")
            assert refused.status_code == 303
            assert refused.headers["location"] == "/console/signin"
    [row] = system.sql(
        "SELECT ended_at FROM console_sessions WHERE client_id = $1::uuid", operator["client_id"]
    )
    assert row["ended_at"] is not None


def test_disabling_a_client_ends_its_sessions_at_once(system: System) -> None:
    tenant = system.create_client("tenant-disabled")
    with signed_in(system, tenant) as http:
        assert http.get("/console/me").status_code == 200
        system.sql("UPDATE clients SET disabled = true WHERE id = $1::uuid", tenant["client_id"])
        assert http.get("/console/me").status_code == 303


def test_a_session_s_times_are_the_database_s(system: System) -> None:
    operator = system.create_client("ops-clock", admin=True)
    [before] = system.sql("SELECT clock_timestamp() AS t")
    with signed_in(system, operator):
        pass
    [after] = system.sql("SELECT clock_timestamp() AS t")
    [row] = system.sql(
        "SELECT issued_at, expires_at FROM console_sessions WHERE client_id = $1::uuid",
        operator["client_id"],
    )
    assert before["t"] <= row["issued_at"] <= after["t"]
    ttl = int(system.env.get("SERIATIM_CONSOLE_SESSION_TTL", "28800"))
    assert row["expires_at"] - row["issued_at"] == datetime.timedelta(seconds=ttl)


def test_a_rotated_console_key_signs_new_sessions_and_old_ones_keep_working(
    system: System,
) -> None:
    operator = system.create_client("ops-rotate", admin=True)
    with signed_in(system, operator) as old:
        old_kid = old.cookies[COOKIE].split(".")[0]
        done = subprocess.run(
            [sys.executable, "-m", "seriatim", "keys", "rotate-console", "--json"],
            env=system.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        kid = json.loads(done.stdout)["kid"]
        assert kid != old_kid
        with signed_in(system, operator) as new:
            assert new.cookies[COOKIE].split(".")[0] == kid
            assert new.get("/console/clients").status_code == 200
        assert old.get("/console/clients").status_code == 200  # until it expires
    [entry] = system.sql(
        "SELECT detail FROM audit_log WHERE action = 'console_key.rotate' AND detail->>'kid' = $1",
        kid,
    )
    assert entry


def test_sign_in_needs_its_page_s_token(system: System) -> None:
    operator = system.create_client("ops-login-csrf", admin=True)
    credentials = {"client_id": operator["client_id"], "client_secret": operator["client_secret"]}
    with httpx.Client(base_url=system.base_url, timeout=30) as http:
        bare = http.post("/console/signin", data=credentials)  # a login CSRF form sends this
        assert bare.status_code == 403
        assert COOKIE not in bare.cookies
        fields = signin_fields(http, operator)
        forged = http.post("/console/signin", data={**fields, "token": fields["token"] + "x"})
        assert forged.status_code == 403
    with httpx.Client(base_url=system.base_url, timeout=30) as other_browser:
        # a token taken from another browser's page has no cookie here
        assert other_browser.post("/console/signin", data=fields).status_code == 403
        evil = {"Referer": "https://evil.example/login"}
        sent = other_browser.post(
            "/console/signin", data=signin_fields(other_browser, operator), headers=evil
        )
        assert sent.status_code == 403
        assert (
            other_browser.post(
                "/console/signin", data=signin_fields(other_browser, operator)
            ).status_code
            == 303
        )


def test_the_banner_says_only_what_the_server_chose(system: System) -> None:
    operator = system.create_client("ops-banner", admin=True)
    tenant = system.create_client("tenant-banner")
    crafted = "Your account is locked: call +1 555 0100"
    with signed_in(system, operator) as http:
        page = http.get(f"/console/clients/{tenant['client_id']}", params={"done": crafted})
        assert page.status_code == 200
        assert "call +1 555" not in page.text
        chosen = http.get(f"/console/clients/{tenant['client_id']}", params={"done": "resumed"})
        assert "Mailbox resumed." in chosen.text
    with signed_in(system, tenant) as http:
        page = http.get("/console/me", params={"done": crafted, "accepted": crafted})
        assert "call +1 555" not in page.text
        assert "Event 7 accepted." in http.get("/console/me", params={"accepted": "7"}).text
