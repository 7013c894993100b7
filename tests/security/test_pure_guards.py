"""The limiter, the webhook signature check and JSON pointers on their own (no services)."""

from __future__ import annotations

import uuid

import pytest

from gateway.limits import Rate, RateLimiter
from gateway.pointers import resolve, valid_pointer
from gateway.signatures import sign, verify

CLIENT, OTHER = uuid.uuid4(), uuid.uuid4()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gcra_allows_a_burst_then_one_request_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(per_second=2, burst=3)

    assert [limiter.wait(CLIENT, rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait(CLIENT, rate) == pytest.approx(0.5)
    assert limiter.wait(OTHER, rate) == 0.0  # another client has its own bucket
    clock.now += 0.5
    assert limiter.wait(CLIENT, rate) == 0.0
    assert limiter.wait(CLIENT, rate) == pytest.approx(0.5)


def test_a_refused_request_does_not_count() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(per_second=1, burst=1)
    limiter.wait(CLIENT, rate)

    for _ in range(100):
        assert limiter.wait(CLIENT, rate) > 0
    clock.now += 1.0
    assert limiter.wait(CLIENT, rate) == 0.0


KEY, OLD = b"k" * 32, b"o" * 32


def test_any_v1_signature_with_any_secret_verifies() -> None:
    body = b'{"type": "demo.echo"}'
    good = sign(KEY, "msg_1", "1700000000", body)

    assert verify([KEY], "msg_1", "1700000000", good, body)
    assert verify([OLD, KEY], "msg_1", "1700000000", f"v1,AAAA {good}", body)
    assert not verify([KEY], "msg_1", "1700000000", good, body + b" ")
    assert not verify([KEY], "msg_2", "1700000000", good, body)
    assert not verify([KEY], "msg_1", "1700000001", good, body)
    assert not verify([OLD], "msg_1", "1700000000", good, body)
    assert not verify([], "msg_1", "1700000000", good, body)
    assert not verify([KEY], "msg_1", "1700000000", good.replace("v1,", "v2,"), body)
    assert not verify([KEY], "msg_1", "1700000000", "v1,not-base64!", body)


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [("/type", "t"), ("", {"type": "t", "a/b": {"~x": [1, 2]}}), ("/a~1b/~0x/1", 2)],
)
def test_a_json_pointer_finds_its_value(pointer: str, expected: object) -> None:
    document = {"type": "t", "a/b": {"~x": [1, 2]}}

    assert valid_pointer(pointer)
    assert resolve(document, pointer) == expected


@pytest.mark.parametrize("pointer", ["/missing", "/a~1b/~0x/2", "/a~1b/~0x/01", "/type/x"])
def test_a_json_pointer_to_nothing_raises_lookup_error(pointer: str) -> None:
    with pytest.raises(LookupError):
        resolve({"type": "t", "a/b": {"~x": [1, 2]}}, pointer)


@pytest.mark.parametrize("pointer", ["type", "/a~2", "/" + "x" * 200, 7])
def test_a_malformed_json_pointer_is_invalid(pointer: object) -> None:
    assert not valid_pointer(pointer)


def test_a_peek_at_a_rate_counts_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(per_second=1, burst=1)

    assert [limiter.wait("peer", rate, count=False) for _ in range(5)] == [0.0] * 5
    assert limiter.wait("peer", rate) == 0.0
    assert limiter.wait("peer", rate, count=False) == pytest.approx(1.0)
