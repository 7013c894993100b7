"""The client's pure policy: when a token is refreshed, how long a retry waits, what retries."""

from __future__ import annotations

import time

from seriatim.client.errors import ConflictError, ProblemError, RateLimitedError
from seriatim.client.policy import Backoff, Token, batch_body, retry_after, retryable


def test_a_token_is_refreshed_a_margin_before_expiry_or_at_half_a_short_lifetime() -> None:
    now = time.monotonic()

    long = Token.from_grant({"access_token": "a", "expires_in": 3600}, margin=60)
    short = Token.from_grant({"access_token": "b", "expires_in": 10}, margin=60)

    assert 3540 - 1 <= long.expires_at - now <= 3540 + 1
    assert 5 - 1 <= short.expires_at - now <= 5 + 1
    assert long.fresh()
    assert not Token("c", time.monotonic() - 1).fresh()


def test_a_retry_never_waits_less_than_retry_after_nor_more_than_the_cap_otherwise() -> None:
    backoff = Backoff(base=0.1, cap=0.5)

    assert all(backoff.delay(n, 2.0) >= 2.0 for n in range(1, 10))
    assert all(0 <= backoff.delay(n, None) <= 0.5 for n in range(1, 10))


def test_only_overload_and_a_keyed_send_whose_key_is_in_use_are_retried() -> None:
    in_use = ConflictError(409, "urn:seriatim:problem:idempotency-key-in-use", "", "")
    not_dead = ConflictError(409, "urn:seriatim:problem:event-not-dead", "", "")

    assert retryable(429, RateLimitedError(429, "t", "", ""), key_in_flight=False)
    assert retryable(503, None, key_in_flight=False)
    assert retryable(409, in_use, key_in_flight=True)
    assert not retryable(409, in_use, key_in_flight=False)
    assert not retryable(409, not_dead, key_in_flight=True)
    assert not retryable(422, ProblemError(422, "t", "", ""), key_in_flight=True)


def test_retry_after_reads_seconds_and_ignores_what_it_cannot_read() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after({}) is None


def test_every_batch_item_gets_a_key_and_keeps_its_own() -> None:
    body = batch_body(
        [{"type": "t", "payload": {}}, {"type": "t", "payload": {}, "idempotency_key": "k"}]
    )

    first, second = body["events"]
    assert first["idempotency_key"].startswith("seriatim-client-")
    assert second["idempotency_key"] == "k"
