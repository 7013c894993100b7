"""Console session cookies: a session decodes with its key until it expires; a tampered, forged
or foreign-key cookie decodes to nothing."""

from __future__ import annotations

import uuid

from gateway.console import sessions

KEY = b"k" * 32


def test_a_session_is_good_until_it_expires() -> None:
    session = sessions.new_session(uuid.uuid4(), True, ttl=60)
    cookie = sessions.encode(session, KEY)

    assert sessions.decode(cookie, KEY, now=session.issued_at) == session
    assert sessions.decode(cookie, KEY, now=session.expires_at - 1) == session
    assert sessions.decode(cookie, KEY, now=session.expires_at) is None


def test_a_tampered_forged_or_foreign_cookie_is_no_session() -> None:
    session = sessions.new_session(uuid.uuid4(), False, ttl=60)
    cookie = sessions.encode(session, KEY)
    body, _, mac = cookie.partition(".")
    admin = sessions.encode(sessions.Session(session.client_id, True, 0, 2**40, "x"), b"other" * 8)

    assert sessions.decode(cookie, b"x" * 32) is None
    assert sessions.decode(admin.partition(".")[0] + "." + mac, KEY) is None
    assert sessions.decode(body + ".", KEY) is None
    assert sessions.decode("garbage", KEY) is None
    assert sessions.decode("e30." + mac, KEY) is None


def test_a_session_starts_no_earlier_than_its_clients_revocation() -> None:
    """A session made in the second a secret was rotated must not count as issued before it
    (the revocation check refuses `iat < tokens_valid_after`)."""
    session = sessions.new_session(uuid.uuid4(), False, ttl=60, not_before=4_000_000_000.5)

    assert session.issued_at == 4_000_000_001
    assert session.principal.issued_at >= 4_000_000_000.5


def test_the_csrf_token_must_match() -> None:
    session = sessions.new_session(uuid.uuid4(), True, ttl=60)

    assert sessions.csrf_ok(session, session.csrf)
    assert not sessions.csrf_ok(session, None)
    assert not sessions.csrf_ok(session, session.csrf[:-1])
