"""Console session cookies: a signed value verifies with its key and purpose only; a tampered,
forged or malformed one is nothing; the cookie is Secure over HTTPS and, with
SERIATIM_CONSOLE_SECURE_COOKIE=on, behind a proxy that ends TLS (the request is plain HTTP)."""

from __future__ import annotations

from starlette.requests import Request

from actors.settings import Settings
from gateway.console import sessions

KEY = b"k" * 32


def request(scheme: str) -> Request:
    scope = {"type": "http", "scheme": scheme, "server": ("gateway", 8000), "path": "/console"}
    return Request({**scope, "headers": [], "query_string": b""})


def test_a_signed_value_verifies_with_its_key_and_purpose_only() -> None:
    signed = sessions.parse(sessions.sign("kid1", KEY, "abc"))
    assert signed is not None
    assert (signed.kid, signed.value) == ("kid1", "abc")

    assert sessions.verified(signed, KEY)
    assert not sessions.verified(signed, b"x" * 32)
    assert not sessions.verified(signed, KEY, purpose="signin")  # a session is no sign-in token
    other = sessions.parse(sessions.sign("kid1", KEY, "abd"))
    assert other is not None
    assert not sessions.verified(sessions.Signed("kid1", "abc", other.mac), KEY)


def test_a_malformed_value_is_nothing() -> None:
    for text in (None, "", "garbage", "e30.AAAA", "a.b.c.d", "a..c", "a.b c.d", "k." + "v" * 99):
        assert sessions.parse(text) is None, text


def test_the_cookie_is_secure_over_https_or_when_the_setting_says_so() -> None:
    auto = sessions.Sessions(Settings())
    behind_proxy = sessions.Sessions(Settings.from_env({"SERIATIM_CONSOLE_SECURE_COOKIE": "on"}))

    assert auto.secure(request("https"))
    assert not auto.secure(request("http"))
    assert behind_proxy.secure(request("http"))
